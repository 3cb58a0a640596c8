"""The Executor <-> dygraph converter: bit-exact round trips, proved logits, refusals that leave nothing behind."""
import json
import logging
import os
import shutil

import numpy as np
import paddle
import pytest
from test_eval import load_tool, random_checkpoint, trained_run

from danet import build_model, checkpoint, convert, weights
from danet.engine.static import StaticEval
from danet.errors import UserError

RESNET18 = dict(backbone="resnet18", num_classes=19, dilated=True, multi_grid=False, multi_dilation=[4, 8, 16])


@pytest.fixture(scope="module")
def executor_ckpt(tmp_path_factory):
    return checkpoint.resolve(trained_run(tmp_path_factory, "executor"))[1]


@pytest.fixture(scope="module")
def dygraph_ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("random"))


def _raw(folder, name="model.pdparams"):
    return weights.safe_load(os.path.join(folder, name))


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.process
def test_executor_dygraph_executor_round_trip_is_bit_exact(tmp_path, executor_ckpt):
    to_dygraph = convert.convert(executor_ckpt, str(tmp_path / "dygraph"))
    back = convert.convert(str(tmp_path / "dygraph"), str(tmp_path / "executor"))
    assert (to_dygraph["format"], back["format"]) == ("dygraph", "executor")
    assert to_dygraph["max_abs_diff"] <= convert.TOLERANCE and back["max_abs_diff"] <= convert.TOLERANCE
    names = json.loads(open(os.path.join(executor_ckpt, weights.NAMES_FILE)).read())
    assert json.loads(open(tmp_path / "executor" / weights.NAMES_FILE).read()) == names
    source = _raw(executor_ckpt)
    _assert_same({p: source[p] for p in names.values()}, _raw(tmp_path / "executor"))
    velocities = {k: v for k, v in _raw(executor_ckpt, "model.pdopt").items() if k.endswith("_velocity_0")}
    assert len(velocities) == 86  # momentum survives too (the LR comes from the scheduler state on resume)
    _assert_same(velocities, _raw(tmp_path / "executor", "model.pdopt"))
    dygraph = _raw(tmp_path / "dygraph")
    _assert_same(dygraph, {k: source[p] for k, p in names.items()})  # structured names, same arrays
    state = checkpoint.read_state(str(tmp_path / "executor"))
    assert state["format"] == "executor" and state["epoch"] == 1 and state["config"]["backbone"] == "resnet18"
    assert checkpoint.read_state(str(tmp_path / "dygraph"))["conversion_max_abs_diff"] == to_dygraph["max_abs_diff"]


@pytest.mark.heavy
def test_dygraph_executor_dygraph_round_trip_is_bit_exact(tmp_path, dygraph_ckpt, capsys):
    main = load_tool("convert").main
    report = main([dygraph_ckpt, str(tmp_path / "executor")])
    assert report["format"] == "executor" and report["max_abs_diff"] <= convert.TOLERANCE
    assert "-> " + str(tmp_path / "executor") + " (executor): 134 tensors" in capsys.readouterr().out
    names = json.loads(open(tmp_path / "executor" / weights.NAMES_FILE).read())
    assert sorted(_raw(tmp_path / "executor")) == sorted(names.values()) and len(names) == 134
    main([str(tmp_path / "executor"), str(tmp_path / "back.pdparams"), "--to", "dygraph"])
    _assert_same(_raw(dygraph_ckpt), weights.safe_load(str(tmp_path / "back.pdparams")))


def test_bare_executor_weights_are_mapped_through_the_traced_program(tmp_path, dygraph_ckpt):
    names = StaticEval(RESNET18).names
    structured = _raw(dygraph_ckpt)
    bare = str(tmp_path / "bare.pdparams")  # paddle.static.save's keys, no names.json, no state.json
    checkpoint.save_arrays(bare, {p: structured[k] for k, p in names.items()})
    with pytest.raises(UserError, match="give the model flags"):
        weights.read_weights(bare)
    found = weights.read_weights(bare, RESNET18)
    assert found.format == "executor"
    _assert_same(found.tensors, structured)


@pytest.fixture
def broken(tmp_path, dygraph_ckpt):
    """A copy of the checkpoint's weights with one tensor dropped, one renamed and one reshaped."""
    arrays = _raw(dygraph_ckpt)
    del arrays["head.pam.gamma"]
    arrays["head.extra.weight"] = arrays.pop("head.cam.gamma")
    arrays["head.cls_fused.bias"] = np.zeros(5, np.float32)
    path = str(tmp_path / "broken.pdparams")
    checkpoint.save_arrays(path, arrays)
    return path


def test_a_partial_checkpoint_is_refused_naming_every_tensor_and_nothing_is_written(tmp_path, broken):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("danet.weights").addHandler(handler)
    try:
        with pytest.raises(UserError, match=r"2 missing .*1 unexpected .*1 with another shape"):
            convert.convert(broken, str(tmp_path / "out"), to="executor", config=RESNET18)
    finally:
        logging.getLogger("danet.weights").removeHandler(handler)
    logged = "\n".join(r.getMessage() for r in records)
    for name in ("head.pam.gamma", "head.cam.gamma", "head.extra.weight", "head.cls_fused.bias [5]"):
        assert name in logged
    assert sorted(os.listdir(tmp_path)) == ["broken.pdparams"]


def test_a_failed_proof_writes_nothing(tmp_path, dygraph_ckpt, monkeypatch):
    monkeypatch.setattr(convert, "TOLERANCE", -1.0)  # no difference can pass: the proof must stop the write
    with pytest.raises(UserError, match="logits differ from the source's by 0 .*nothing was written"):
        convert.convert(dygraph_ckpt, str(tmp_path / "executor"))
    assert os.listdir(tmp_path) == []


def test_an_existing_destination_is_kept_and_the_tool_exits_2(tmp_path, dygraph_ckpt, capsys):
    main = load_tool("convert").main
    shutil.copytree(dygraph_ckpt, tmp_path / "taken")
    before = sorted(os.listdir(tmp_path / "taken"))
    with pytest.raises(SystemExit) as exit_info:
        main([dygraph_ckpt, str(tmp_path / "taken")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'taken'} already exists: choose another " \
                                              "destination or delete it"
    assert sorted(os.listdir(tmp_path / "taken")) == before


def _checkpoint_with_momentum(folder):
    """A dygraph checkpoint as the trainer writes it: weights and a velocity per trainable tensor (structured names)."""
    paddle.seed(3)
    model = build_model("resnet18", 19)
    rng = np.random.default_rng(0)
    velocities = {k + weights.VELOCITY: rng.standard_normal(p.shape).astype(np.float32)
                  for k, p in model.named_parameters() if not p.stop_gradient}

    def write(tmp):
        arrays = {k: v.numpy() for k, v in model.state_dict().items()}
        checkpoint.save_arrays(os.path.join(tmp, "model.pdparams"), arrays)
        checkpoint.save_arrays(os.path.join(tmp, weights.OPTIMIZER_FILE), velocities)

    scheduler = {"last_epoch": 4, "last_lr": 0.001}
    state = dict(format="dygraph", epoch=1, iteration=4, config=RESNET18, scheduler=scheduler)
    path = checkpoint.save_checkpoint(str(folder), "epoch_0001", write, state)
    return path, velocities


@pytest.mark.heavy
def test_momentum_goes_along_both_ways_under_the_names_each_mode_uses(tmp_path):
    source, velocities = _checkpoint_with_momentum(tmp_path / "run")
    assert len(velocities) == 86
    report = convert.convert(source, str(tmp_path / "executor"))
    assert report["optimizer_tensors"] == 86
    names = json.loads((tmp_path / "executor" / weights.NAMES_FILE).read_text())
    _assert_same(_raw(tmp_path / "executor", weights.OPTIMIZER_FILE),
                 {names[k[:-len(weights.VELOCITY)]] + weights.VELOCITY: v for k, v in velocities.items()})
    convert.convert(str(tmp_path / "executor"), str(tmp_path / "back"))
    back = _raw(tmp_path / "back", weights.OPTIMIZER_FILE)
    assert back.pop("LR_Scheduler") == {"last_epoch": 4, "last_lr": 0.001}  # what dygraph's optimizer restores
    _assert_same(back, velocities)


@pytest.mark.heavy
def test_an_optimizer_state_of_another_model_is_refused_and_nothing_is_written(tmp_path):
    source, velocities = _checkpoint_with_momentum(tmp_path / "run")
    stray = dict(velocities, **{"head.extra.weight" + weights.VELOCITY: np.zeros(3, np.float32)})
    checkpoint.save_arrays(os.path.join(source, weights.OPTIMIZER_FILE), stray)
    state = json.loads(open(os.path.join(source, "state.json")).read())
    state["files"][weights.OPTIMIZER_FILE] = os.path.getsize(os.path.join(source, weights.OPTIMIZER_FILE))
    with open(os.path.join(source, "state.json"), "w") as f:
        json.dump(state, f)
    with pytest.raises(UserError, match=r"1 momentum tensors do not belong .*head.extra.weight_velocity_0"):
        convert.convert(source, str(tmp_path / "executor"))
    assert not os.path.exists(tmp_path / "executor")


@pytest.mark.heavy
def test_load_model_gives_the_same_eval_model_from_either_format(tmp_path, dygraph_ckpt):
    import danet

    convert.convert(dygraph_ckpt, str(tmp_path / "executor"))
    image = paddle.to_tensor(np.random.default_rng(1).standard_normal((1, 3, 40, 56)).astype(np.float32))
    outputs = []
    for path in (dygraph_ckpt, str(tmp_path / "executor"), os.path.join(dygraph_ckpt, "model.pdparams")):
        model = danet.load_model(path)  # the config from state.json, or from the tensors of a bare file
        assert not model.training
        with paddle.no_grad():
            outputs.append(model(image).numpy())
    assert outputs[0].shape == (1, 19, 40, 56)
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])
    with pytest.raises(UserError, match="holds a model with backbone='resnet18', not 'resnet50'"):
        danet.load_model(dygraph_ckpt, backbone="resnet50")


@pytest.mark.process
def test_the_console_script_exits_0_and_prints_only_its_summary(tmp_path, dygraph_ckpt):
    import subprocess
    import sys

    from faultlib import ROOT, env

    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert.py"), dygraph_ckpt,
                           str(tmp_path / "executor")], capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("converted ")  # no result object dumped on exit
