"""Data parallel on two CPU processes (gloo): gradients are synchronised, only rank 0 logs and saves.

``paddle.distributed.launch`` runs a script file, not ``-m module``; the trainer's file
``danet/train_dygraph.py`` works as that script. Here a small wrapper script around the same ``main``
records each rank's losses and final weights so the two ranks can be compared.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from danet import checkpoint
from danet.data.synthetic import make_synthetic_dataset
from danet.weights import read_weights

HAVE_VDL = importlib.util.find_spec("visualdl") is not None  # not installed in the Paddle 2.6 test environment
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RANK_SCRIPT = textwrap.dedent("""
    import sys

    import numpy as np
    import paddle

    from danet.engine.dygraph import DygraphStep
    from danet.train_dygraph import main

    losses, run = [], DygraphStep.run

    def recording_run(self, images, labels):
        result = run(self, images, labels)
        losses.append(result[0])
        return result

    DygraphStep.run = recording_run
    trainer = main(sys.argv[2:])
    weights = {k: p.numpy() for k, p in trainer.step.model.named_parameters() if not p.stop_gradient}
    np.savez(f"{sys.argv[1]}/rank{paddle.distributed.get_rank()}.npz", losses=np.array(losses), **weights)
""")

pytestmark = pytest.mark.process  # every test here runs the entry points as processes


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Two ranks x 2 epochs of 8 images at batch 2 per rank: 2 iterations per epoch and rank."""
    tmp = tmp_path_factory.mktemp("dp")
    data = str(tmp / "data")
    make_synthetic_dataset(data, 8, 4, 48, 96, seed=0)
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT)
    save_dir = tmp / "run"
    args = ["--use_data_parallel", "--backbone", "resnet18", "--data_folder", data, "--base_size", "48",
            "--crop_size", "32", "--epoch_num", "2", "--batch_size", "2", "--lr", "0.01", "--num_workers", "0",
            "--eval_interval", "1", "--val_limit", "1", "--save_interval", "1", "--log_iters", "1",
            "--threads", "1", "--save_dir", str(save_dir)] + (["--use_vdl"] if HAVE_VDL else [])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                             "--log_dir", str(tmp / "launch"), str(script), str(tmp), *args],
                            capture_output=True, text=True, env=env, cwd=str(tmp), timeout=300)
    logs = [(tmp / "launch" / f"workerlog.{r}").read_text() for r in (0, 1)]
    assert result.returncode == 0, logs[0][-3000:] + logs[1][-3000:] + result.stdout[-2000:]
    ranks = [dict(np.load(tmp / f"rank{r}.npz")) for r in (0, 1)]
    return dict(save_dir=save_dir, logs=logs, ranks=ranks)


def test_ranks_train_on_different_data_but_keep_identical_weights(launched):
    rank0, rank1 = launched["ranks"]
    losses0, losses1 = rank0.pop("losses"), rank1.pop("losses")
    assert len(losses0) == len(losses1) == 4  # the sampler splits the 4 batches of an epoch between the ranks
    assert np.abs(losses0 - losses1).min() > 1e-4  # each rank saw its own images at every step
    assert rank0.keys() == rank1.keys() and len(rank0) == 86
    for name in rank0:
        np.testing.assert_allclose(rank1[name], rank0[name], rtol=1e-5, atol=1e-7, err_msg=name)
    saved = read_weights(str(launched["save_dir"] / "epoch_0002")).tensors
    assert all(np.array_equal(saved[name], rank0[name]) for name in rank0)  # what rank 0 checkpointed


def test_the_schedule_counts_the_iterations_of_one_rank(launched):
    state = checkpoint.read_state(checkpoint.read_pointer(str(launched["save_dir"]), "latest"))
    assert (state["epoch"], state["iteration"], state["steps_per_epoch"]) == (2, 4, 2)
    assert state["scheduler"]["last_epoch"] == 4 and state["scheduler"]["last_lr"] == 0.0  # poly ends at 0


def test_only_rank_0_logs_validates_and_saves(launched):
    log0, log1 = launched["logs"]
    assert "saved" in log0 and "validation after epoch 2" in log0
    assert " INFO " not in log1 and "saved" not in log1
    train_log = (launched["save_dir"] / "train.log").read_text()
    assert [train_log.count(f"iter {i}/4 ") for i in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert train_log.count("2 process(es)") == 1
    names = sorted(os.listdir(launched["save_dir"]))
    assert names == ["best", "epoch_0001", "epoch_0002", "latest", "train.log"] + (["vdl"] if HAVE_VDL else [])
    assert not HAVE_VDL or len(os.listdir(launched["save_dir"] / "vdl")) == 1  # one writer: rank 0
