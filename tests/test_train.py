"""Both trainers end to end on a tiny generated data set: checkpoints, logs, VisualDL, resume after SIGKILL, NaN stop.

Every run is ResNet-18 on 8 training images (4 iterations of 2 per epoch) for 2 epochs, so a resumed run can be
compared with an uninterrupted one weight for weight.
"""
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from danet import checkpoint, convert, weights
from danet.data.synthetic import make_synthetic_dataset
from danet.lr import lr_at
from danet.weights import read_weights

pytestmark = [pytest.mark.slow, pytest.mark.process]
HAVE_VDL = importlib.util.find_spec("visualdl") is not None  # not installed in the Paddle 2.6 test environment
VDL = ["--use_vdl"] if HAVE_VDL else []
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ["dygraph", "executor"]
WORKERS = {"dygraph": "1", "executor": "0"}
ITERATIONS = 8  # 2 epochs x 8 images / batch 2
LR = 0.002


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    make_synthetic_dataset(root, 8, 4, 48, 96, seed=0)
    return root


def argv(mode, data, save_dir, *extra):
    """The flags of every run; dygraph reads with a worker process, the executor in the training thread."""
    workers = WORKERS[mode]
    return ["--backbone", "resnet18", "--data_folder", data, "--base_size", "48", "--crop_size", "32",
            "--epoch_num", "2", "--batch_size", "2", "--lr", str(LR), "--num_workers", workers, "--eval_interval", "1",
            "--val_limit", "2", "--save_interval", "1", "--log_iters", "1", "--save_dir", str(save_dir), *extra]


def train_here(mode, args):
    """Run an entry point's ``main`` in this process (the executor one switches to static mode: switch back)."""
    try:
        return importlib.import_module(f"danet.train_{mode}").main(args)
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()


def start(mode, args, log_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", f"danet.train_{mode}", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def arrays(ckpt_dir):
    """Model weights by structured name, and the optimizer state, of one checkpoint."""
    found = read_weights(str(ckpt_dir)).tensors
    opt = {k: v for k, v in weights.safe_load(os.path.join(ckpt_dir, "model.pdopt")).items()
           if isinstance(v, np.ndarray)}
    return found, opt


def assert_same_arrays(got, want):
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def finished_runs(data, tmp_path_factory):
    """Uninterrupted 2-epoch runs with validation and VisualDL, made once per mode: mode -> (save_dir, trainer)."""
    runs = {}

    def get(mode):
        if mode not in runs:
            save_dir = tmp_path_factory.mktemp(f"{mode}_run")
            runs[mode] = save_dir, train_here(mode, argv(mode, data, save_dir, *VDL))
        return runs[mode]

    return get


@pytest.fixture(params=MODES)
def finished(request, finished_runs):
    return (request.param,) + finished_runs(request.param)


def test_a_run_writes_checkpoints_pointers_log_and_visualdl_records(finished):
    mode, save_dir, trainer = finished
    assert (trainer.epoch, trainer.iteration) == (2, ITERATIONS)
    latest = checkpoint.read_pointer(str(save_dir), "latest")
    assert latest == str(save_dir / "epoch_0002")
    assert checkpoint.read_pointer(str(save_dir), "best") in (str(save_dir / "epoch_0001"), latest)
    state = checkpoint.read_state(latest)  # also checks every file's size
    assert state["format"] == mode and state["epoch"] == 2 and state["iteration"] == ITERATIONS
    assert state["scheduler"]["last_epoch"] == ITERATIONS
    assert state["config"]["backbone"] == "resnet18" and 0 <= state["best_miou"] <= 1
    assert {"model.pdparams", "model.pdopt"} <= set(state["files"])
    if mode == "executor":  # the Program (model.json under PIR, model.pdmodel before) and the name map
        assert "names.json" in state["files"] and {"model.json", "model.pdmodel"} & set(state["files"])
    assert not [n for n in os.listdir(save_dir) if n.startswith((".tmp-", ".old-", ".del-"))]

    log = (save_dir / "train.log").read_text()
    assert f"iter {ITERATIONS}/{ITERATIONS}" in log and "validation after epoch 2" in log
    assert "road" in log and "mIoU" in log  # the per-class IoU table
    assert "saved" in log and "done" in log

    assert os.path.isdir(save_dir / "vdl") == HAVE_VDL
    if not HAVE_VDL:
        return
    from visualdl import LogReader

    records = os.listdir(save_dir / "vdl")
    assert len(records) == 1
    reader = LogReader(file_path=str(save_dir / "vdl" / records[0]))
    tags = reader.get_tags()["scalar"]
    assert {"train/loss", "train/loss_fused", "train/loss_position", "train/loss_channel", "train/lr",
            "train/images_per_s", "val/miou", "val_iou/road"} <= set(tags)
    lrs = [(r.id, r.value) for r in reader.get_data("scalar", "train/lr")]
    assert [i for i, _ in lrs] == list(range(1, ITERATIONS + 1))
    np.testing.assert_allclose([v for _, v in lrs], [lr_at(t, LR, ITERATIONS) for t in range(ITERATIONS)],
                               rtol=1e-6)


def test_a_run_killed_with_sigkill_resumes_to_the_same_end(finished, data, tmp_path):
    mode, full_dir, _ = finished
    save_dir = tmp_path / "killed"
    proc = start(mode, argv(mode, data, save_dir, *VDL), tmp_path / "killed.out")
    try:
        deadline = time.time() + 180
        while checkpoint.read_pointer(str(save_dir), "latest") is None:
            assert proc.poll() is None, (tmp_path / "killed.out").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint after 180 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed in epoch 2, not finished
    assert sorted(n for n in os.listdir(save_dir) if n.startswith("epoch_")) == ["epoch_0001"]

    trainer = train_here(mode, argv(mode, data, save_dir, *VDL, "--resume"))
    assert (trainer.epoch, trainer.iteration) == (2, ITERATIONS)
    log = (save_dir / "train.log").read_text()
    assert f"resumed from {save_dir / 'epoch_0001'}: epoch 1, iteration 4" in log
    resumed, full = save_dir / "epoch_0002", full_dir / "epoch_0002"
    state, want = checkpoint.read_state(str(resumed)), checkpoint.read_state(str(full))
    assert (state["iteration"], state["scheduler"]) == (want["iteration"], want["scheduler"])
    for got, expected in zip(arrays(resumed), arrays(full)):  # weights, then momentum buffers
        assert_same_arrays(got, expected)


def test_a_diverging_run_stops_at_the_nan_and_leaves_a_resumable_checkpoint(finished_runs, data, tmp_path, capsys):
    """Continue the good epoch-1 checkpoint with an absurd LR: the loss overflows to NaN in epoch 2.

    Dygraph only: the check is in the loop both modes share.
    """
    mode = "dygraph"
    full_dir, _ = finished_runs(mode)
    save_dir = tmp_path / "diverged"
    shutil.copytree(full_dir / "epoch_0001", save_dir / "epoch_0001")
    checkpoint.write_pointer(str(save_dir), "latest", "epoch_0001")
    before = {n: (save_dir / "epoch_0001" / n).read_bytes() for n in os.listdir(save_dir / "epoch_0001")}
    with pytest.raises(SystemExit) as stop:
        train_here(mode, argv(mode, data, save_dir, "--resume", "--lr", "1e30"))
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert re.search(r"loss became nan at iteration [5-8] \(epoch 2; fused nan position nan channel nan", message)
    assert checkpoint.read_pointer(str(save_dir), "latest") == str(save_dir / "epoch_0001")
    assert sorted(n for n in os.listdir(save_dir) if n.startswith("epoch_")) == ["epoch_0001"]
    assert before == {n: (save_dir / "epoch_0001" / n).read_bytes() for n in before}  # untouched

    trainer = train_here(mode, argv(mode, data, save_dir, "--resume"))  # the flags of the first run: the same end
    assert trainer.iteration == ITERATIONS
    assert_same_arrays(arrays(save_dir / "epoch_0002")[0], arrays(full_dir / "epoch_0002")[0])


def test_an_executor_checkpoint_whose_program_names_differ_is_restored_by_structured_name(finished_runs, tmp_path):
    """Program names come from a per-process counter, so another process (other model code, another Paddle) may
    give two same-shaped layers each other's names; resume must follow names.json, not the names of today."""
    from danet.engine.static import StaticStep
    from danet.options import parse

    full_dir, _ = finished_runs("executor")
    ckpt = tmp_path / "epoch_0001"
    shutil.copytree(full_dir / "epoch_0001", ckpt)
    names = json.loads((ckpt / "names.json").read_text())
    a, b = "backbone.layer1.0.conv1.0.weight", "backbone.layer1.0.conv2.0.weight"
    pa, pb = names[a], names[b]
    swap = {pa: pb, pb: pa, pa + "_velocity_0": pb + "_velocity_0", pb + "_velocity_0": pa + "_velocity_0"}
    for name in ("model.pdparams", "model.pdopt"):
        stored = weights.safe_load(str(ckpt / name))
        checkpoint.save_arrays(str(ckpt / name), {swap.get(k, k): v for k, v in stored.items()})
    names[a], names[b] = pb, pa
    (ckpt / "names.json").write_text(json.dumps(names))
    state = json.loads((ckpt / "state.json").read_text())
    state["files"] = {n: os.path.getsize(ckpt / n) for n in state["files"]}
    (ckpt / "state.json").write_text(json.dumps(state))

    original = arrays(full_dir / "epoch_0001")
    args = parse("train_executor", argv("executor", "unused", tmp_path))
    paddle.enable_static()
    try:
        with paddle.static.scope_guard(paddle.static.Scope()):
            step = StaticStep(args, steps_per_epoch=4)
            step.restore(str(ckpt), checkpoint.read_state(str(ckpt)))
            scope = paddle.static.global_scope()
            restored = {k: np.array(scope.find_var(p).get_tensor()) for k, p in step.names.items()}
            velocity = np.array(scope.find_var(step.names[a] + "_velocity_0").get_tensor())
    finally:
        paddle.disable_static()
    assert_same_arrays(restored, original[0])
    np.testing.assert_array_equal(velocity, original[1][json.loads((full_dir / "epoch_0001" / "names.json")
                                                                   .read_text())[a] + "_velocity_0"])


def test_steps_per_epoch_come_from_the_loader_unless_given(data, tmp_path, monkeypatch):
    from danet.engine.loop import Trainer

    monkeypatch.setattr(Trainer, "train", lambda self: None)  # build everything, train nothing
    for extra, steps in [([], 4), (["--step_per_epoch", "10"], 10)]:  # 8 images / batch 2 = 4
        flags = argv("executor", data, tmp_path / str(steps), "--warm_up", "--warmup_epoch", "1", *extra)
        schedule = train_here("dygraph", flags).step.scheduler
        assert (schedule.kwargs["total_steps"], schedule.kwargs["warmup_steps"]) == (2 * steps, steps)


@pytest.mark.parametrize("workers", ["0"])
def test_an_unreadable_image_stops_training_with_one_line(tmp_path, workers):
    root = str(tmp_path / "data")
    make_synthetic_dataset(root, 4, 1, 48, 96, seed=0)
    images = sorted(os.listdir(os.path.join(root, "cityscapes", "leftImg8bit", "train", "alphaville")))
    bad = os.path.join(root, "cityscapes", "leftImg8bit", "train", "alphaville", images[0])
    with open(bad, "r+b") as f:
        f.truncate(100)
    flags = argv("executor", root, tmp_path / "run", "--eval_interval", "0")
    flags[flags.index("--num_workers") + 1] = workers
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "danet.train_dygraph", *flags], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)  # Paddle's DataLoader thread used to hang here
    assert result.returncode != 0
    assert f"cannot read image {bad}" in result.stderr


def test_state_json_records_the_run(finished):
    _, save_dir, _ = finished
    with open(save_dir / "epoch_0001" / "state.json") as f:
        state = json.load(f)
    assert state["epoch"] == 1 and state["iteration"] == 4 and state["steps_per_epoch"] == 4
    assert state["args"]["lr"] == LR and state["args"]["backbone"] == "resnet18"


def logged_losses(log_text):
    """{iteration: total loss} from the per-iteration lines of a train.log (--log_iters 1)."""
    return {int(i): float(v) for i, v in re.findall(r"iter (\d+)/\d+ loss ([0-9.]+)", log_text)}


@pytest.mark.parametrize("source", MODES)
def test_a_converted_checkpoint_resumes_in_the_other_mode_on_the_same_loss_curve(finished_runs, data, tmp_path, source):
    """Train epoch 1 in one graph mode, convert, train epoch 2 in the other: the same losses, weights and momentum
    as the uninterrupted run (a conversion that dropped the momentum would differ from iteration 6 on)."""
    target = "executor" if source == "dygraph" else "dygraph"
    full_dir, _ = finished_runs(source)
    converted = tmp_path / "converted" / "epoch_0001"
    report = convert.convert(str(full_dir / "epoch_0001"), str(converted))
    assert report["format"] == target and report["optimizer_tensors"] == 86  # every trainable tensor of ResNet-18
    save_dir = tmp_path / "continued"  # the source run's data loading: the same batches and augmentations
    trainer = train_here(target, argv(target, data, save_dir, "--resume", str(converted), "--num_workers",
                                      WORKERS[source]))
    assert trainer.iteration == ITERATIONS
    want = logged_losses((full_dir / "train.log").read_text())
    got = logged_losses((save_dir / "train.log").read_text())
    assert sorted(got) == list(range(5, ITERATIONS + 1))
    np.testing.assert_allclose([got[i] for i in sorted(got)], [want[i] for i in sorted(got)], atol=2e-4)
    for got_arrays, want_arrays in zip(by_structured_name(save_dir), by_structured_name(full_dir)):
        assert got_arrays.keys() == want_arrays.keys() and want_arrays  # weights, then every momentum tensor
        for name in want_arrays:
            np.testing.assert_allclose(got_arrays[name], want_arrays[name], rtol=1e-3, atol=1e-5, err_msg=name)


def by_structured_name(run_dir):
    """Weights and momentum of a run's epoch-2 checkpoint, both keyed by structured name whatever the mode."""
    found, opt = arrays(run_dir / "epoch_0002")
    names_file = run_dir / "epoch_0002" / "names.json"
    if names_file.exists():
        opt = weights.rename_state(opt, {p: k for k, p in json.loads(names_file.read_text()).items()})
    return found, {k: v for k, v in opt.items() if k.endswith(weights.VELOCITY)}


def test_a_run_resumes_with_recompute_switched_on(finished_runs, data, tmp_path):
    """--recompute changes how the backward pass keeps memory, not the model: a run that ran out of memory
    continues with it, to the same numbers."""
    full_dir, _ = finished_runs("dygraph")
    save_dir = tmp_path / "out_of_memory"
    shutil.copytree(full_dir / "epoch_0001", save_dir / "epoch_0001")
    checkpoint.write_pointer(str(save_dir), "latest", "epoch_0001")
    trainer = train_here("dygraph", argv("dygraph", data, save_dir, "--resume", "--recompute"))
    assert trainer.iteration == ITERATIONS
    assert checkpoint.read_state(str(save_dir / "epoch_0002"))["config"]["recompute"] is True
    for got, want in zip(arrays(save_dir / "epoch_0002"), arrays(full_dir / "epoch_0002")):
        assert_same_arrays(got, want)


def test_a_change_of_model_flags_is_still_refused_on_resume(finished_runs, data, tmp_path, capsys):
    full_dir, _ = finished_runs("dygraph")
    with pytest.raises(SystemExit) as stop:
        train_here("dygraph", argv("dygraph", data, tmp_path, "--resume", str(full_dir / "epoch_0001"),
                                   "--multi_grid", "--multi_dilation", "2", "4"))
    assert stop.value.code == 2
    assert "other model flags (multi_grid False -> True" in capsys.readouterr().err


# The seed's README training command lines, verbatim but for the size of the job: ResNet-18 (its layer4 has two
# blocks: two multi-grid dilations), tiny images, one epoch; --cuda dropped (no GPU here), --save_model pointing
# at a checkpoint made for the test. --multi_scales and --flip choose how the validation after training predicts.
SEED_TRAINING = {
    "executor": "--backbone resnet18 --base_size 48 --crop_size 32 --epoch_num 1 --batch_size 2 --lr 0.003 "
                "--lr_scheduler poly --warm_up --warmup_epoch 2 --use_data_parallel --load_pretrained_model "
                "--save_model {ckpt} --multi_scales --flip --dilated --multi_grid --scale --multi_dilation 4 8",
    "dygraph": "--backbone resnet18 --base_size 48 --crop_size 32 --epoch_num 1 --batch_size 2 --lr 0.003 "
               "--lr_scheduler poly --use_data_parallel --load_pretrained_model --save_model {ckpt} --multi_scales "
               "--flip --dilated --multi_grid --scale --multi_dilation 4 8",
}


@pytest.mark.parametrize("mode", MODES)
def test_the_seed_training_command_lines_run_and_validate_as_the_seed_evaluates(mode, finished_runs, data, tmp_path,
                                                                                monkeypatch):
    from danet.inference import MULTI_SCALES

    full_dir, _ = finished_runs(mode)
    ckpt = tmp_path / "DANet18_better_model"  # the seed's --save_model is a prefix: <prefix>.pdparams is read
    shutil.copy(full_dir / "epoch_0002" / "model.pdparams", str(ckpt) + ".pdparams")
    if mode == "executor":
        shutil.copy(full_dir / "epoch_0002" / "names.json", tmp_path / "names.json")
    monkeypatch.chdir(tmp_path)  # the seed's runs write under ./checkpoint
    trainer = train_here(mode, SEED_TRAINING[mode].format(ckpt=ckpt).split() + ["--data_folder", data])
    assert trainer.iteration == 4
    log = (tmp_path / "checkpoint" / f"{mode}_resnet18" / "train.log").read_text()
    assert re.search(rf"loaded \d+ of \d+ tensors from {re.escape(str(ckpt))}", log)
    assert f"scales {list(MULTI_SCALES)}, flip True" in log  # the validation used the seed's scales and flip
    assert "validation after epoch 1" in log
