"""The DANet family in the shared machinery: every model trains the same in both graph modes, and trains, resumes,
converts and evaluates through the real entry points, with no special case in the loop."""
import json

import numpy as np
import paddle
import pytest
from test_parity import _batches, static_mode
from test_presets import _train_here

from danet import convert
from danet.checkpoint import save_arrays
from danet.engine.dygraph import DygraphStep
from danet.engine.static import StaticStep
from danet.options import parse

FAMILY = ["dranet", "clusterdanet"]


@pytest.mark.heavy
@pytest.mark.parametrize("model", FAMILY)
def test_the_first_steps_agree_between_the_graph_modes(model, tmp_path):
    """Same weights, same batches, dropout off: the same losses (ClusterDANet: and the same centroids after)."""
    args = parse("train_dygraph", ["--model", model, "--backbone", "resnet18", "--lr", "0.01", "--aux_head"])
    init = str(tmp_path / "init.pdparams")
    paddle.seed(0)
    dygraph = DygraphStep(args, 4, model_kwargs={"dropout": 0.0})
    save_arrays(init, {k: v.numpy() for k, v in dygraph.model.state_dict().items()})
    dy = [dygraph.run(images, labels) for images, labels in _batches()]
    dy_state = {k: v.numpy() for k, v in dygraph.model.state_dict().items()}
    assert list(dy[0].parts) == list(dygraph.model.output_names) and "aux" in dy[0].parts
    with static_mode():
        static = StaticStep(args, 4, model_kwargs={"dropout": 0.0})
        static.load_initial(init)
        st = [static.run(images, labels) for images, labels in _batches()]
        scope = paddle.static.global_scope()
        st_state = {k: np.array(scope.find_var(p).get_tensor()) for k, p in static.names.items()}
    np.testing.assert_allclose([s.loss for s in st], [d.loss for d in dy], rtol=2e-4)
    buffers = [k for k in dy_state if "cluster" in k]
    assert bool(buffers) == (model == "clusterdanet")
    for name in buffers:  # updated in training, by the same rule in both modes
        np.testing.assert_allclose(st_state[name], dy_state[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("model", FAMILY)
def test_a_family_model_trains_resumes_converts_and_evaluates(model, data, tmp_path):
    from danet.eval import main as eval_main

    flags = ["--model", model, "--backbone", "resnet18", "--data_folder", data, "--base_size", "64", "--crop_size",
             "48", "--batch_size", "2", "--num_workers", "0", "--eval_interval", "0", "--threads", "1"]
    for mode in ("executor", "dygraph"):
        save_dir = tmp_path / mode
        _train_here(f"train_{mode}", flags + ["--epoch_num", "1", "--save_dir", str(save_dir)])
        trainer = _train_here(f"train_{mode}", flags + ["--epoch_num", "2", "--save_dir", str(save_dir), "--resume"])
        assert trainer.epoch == 2 and trainer.iteration == 6
        state = json.loads((save_dir / "epoch_0002" / "state.json").read_text())
        assert state["config"]["model"] == model
    report = convert.convert(str(tmp_path / "executor" / "epoch_0002"), str(tmp_path / "to_dygraph"))
    assert report["format"] == "dygraph" and report["max_abs_diff"] <= convert.TOLERANCE
    metrics = eval_main(["--save_model", str(tmp_path / "to_dygraph"), "--data_folder", data, "--base_size", "64",
                         "--crop_size", "48", "--num_workers", "0", "--output_dir", str(tmp_path / "eval")])
    assert metrics["settings"]["model"]["model"] == model and 0 <= metrics["miou"] <= 1


def test_cluster_settings_belong_to_clusterdanet_configs_only():
    from danet.engine.common import arch

    assert "num_clusters" not in arch({"model": "danet", "num_clusters": 24})
    assert (arch({"model": "clusterdanet", "backbone": "resnet50"})["num_clusters"],
            arch({"model": "clusterdanet", "backbone": "resnet18"})["num_clusters"]) == (512, 128)  # the head's width
    assert arch({"model": "clusterdanet", "num_clusters": 24, "temperature": 50})["temperature"] == 50.0


@pytest.mark.parametrize("argv, message", [
    (["--num_clusters", "0"], "--num_clusters must be >= 1"),
    (["--model", "clusterdanet", "--temperature", "0"], "--temperature > 0"),
])
def test_cluster_flags_that_cannot_work_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse("train_dygraph", argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cluster_settings_are_stored_resumed_and_evaluated_without_flags(data, tmp_path, capsys):
    from danet.eval import main as eval_main

    flags = ["--backbone", "resnet18", "--data_folder", data, "--base_size", "64", "--crop_size", "48",
             "--batch_size", "2", "--num_workers", "0", "--eval_interval", "0", "--threads", "1"]
    save_dir = str(tmp_path / "run")
    cluster = ["--model", "clusterdanet", "--num_clusters", "24", "--temperature", "50"]
    _train_here("train_dygraph", flags + cluster + ["--epoch_num", "1", "--save_dir", save_dir])
    trainer = _train_here("train_dygraph", flags + ["--epoch_num", "2", "--save_dir", save_dir, "--resume"])
    assert trainer.epoch == 2 and trainer.step.model.head.pam_cluster.num_clusters == 24
    evaluate = ["--save_model", save_dir, "--data_folder", data, "--base_size", "64", "--crop_size", "48",
                "--num_workers", "0", "--output_dir", str(tmp_path / "eval")]
    model = eval_main(evaluate)["settings"]["model"]
    assert (model["model"], model["num_clusters"], model["temperature"]) == ("clusterdanet", 24, 50.0)
    for wrong, message in [(["--num_clusters", "16"], "--num_clusters 16"),
                           (["--model", "danet"], "--model danet")]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            eval_main(evaluate + wrong)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # another model from these weights: they do not fit (the settings are not adopted)
        _train_here("train_dygraph", flags + ["--model", "danet", "--pretrained", save_dir, "--save_dir",
                                              str(tmp_path / "from_cluster")])
    assert "does not fit the model" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a cluster setting for another model: one line, nothing trained
        _train_here("train_dygraph", flags + ["--num_clusters", "24", "--save_dir", str(tmp_path / "danet")])
    assert "--num_clusters is a setting of --model clusterdanet" in capsys.readouterr().err
