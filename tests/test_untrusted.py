"""Untrusted checkpoints: loading a ``.pdparams``/``.pdopt`` never runs code from the file.

A pickle can call any function while it is read (``paddle.load`` would). Each file here would create a
marker file if its pickle ran; every way a checkpoint enters the project (``--pretrained``, ``--resume``,
``eval --save_model``, ``tools/convert.py``, and :func:`danet.weights.safe_load` itself) must refuse it
with one clear line, and the marker must not exist afterwards.
"""
import os
import pickle

import numpy as np
import paddle
import pytest
from faultlib import CodeOnLoad, message_lines, run_entry, train_args, write_malicious

from danet import build_model, checkpoint, weights
from danet.errors import UserError

CONFIG = dict(backbone="resnet18", num_classes=19, dilated=True, multi_grid=False, multi_dilation=[4, 8, 16],
              recompute=False)


# -- safe_load itself --------------------------------------------------------------------------------------------
def _payloads(marker):
    """Ways to hide the call in a file that otherwise looks like weights."""
    code = CodeOnLoad(marker)
    weight = np.ones((2, 3), np.float32)
    return {
        "a_value": {"conv.weight": weight, "conv.bias": code},
        "inside_a_list": {"conv.weight": weight, "meta": [1, 2, {"x": code}]},
        "as_paddle_tensor_pair": {"conv.weight": ("conv2d_0.w_0", weight), "conv.bias": ("conv2d_0.b_0", code)},
        "in_an_object_array": {"conv.weight": np.array([code, 1], dtype=object)},
        "the_whole_file": code,
    }


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


@pytest.mark.parametrize("where", list(_payloads("unused")))
def test_the_payloads_do_run_code_when_unpickled_plainly(where, tmp_path):
    """The control: without the guard, reading these files creates the marker."""
    marker = tmp_path / "ran"
    _dump(tmp_path / "evil.pdparams", _payloads(str(marker))[where])
    with open(tmp_path / "evil.pdparams", "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("where", list(_payloads("unused")))
def test_safe_load_refuses_code_and_runs_none_of_it(where, tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pdparams")
    _dump(path, _payloads(str(marker))[where])
    with pytest.raises(UserError) as refused:
        weights.safe_load(path)
    message = str(refused.value)
    assert f"refusing to load {path}" in message and "io.open" in message and "never code" in message
    assert "\n" not in message
    assert not marker.exists()


def test_safe_load_reads_what_paddle_save_writes(tmp_path):
    """Weights and an optimizer state (tensors, nested dicts, the LR scheduler's numbers) come back as arrays."""
    layer = paddle.nn.Linear(3, 2)
    scheduler = paddle.optimizer.lr.PolynomialDecay(0.01, decay_steps=10)
    opt = paddle.optimizer.Momentum(scheduler, parameters=layer.parameters())
    layer(paddle.ones([1, 3])).sum().backward()
    opt.step()
    scheduler.step()
    paddle.save(layer.state_dict(), str(tmp_path / "m.pdparams"))
    paddle.save(opt.state_dict(), str(tmp_path / "m.pdopt"))
    params = weights.safe_load(str(tmp_path / "m.pdparams"))
    assert params.keys() == layer.state_dict().keys()
    for name, tensor in layer.state_dict().items():
        np.testing.assert_array_equal(params[name], tensor.numpy())
    state = weights.safe_load(str(tmp_path / "m.pdopt"))
    velocities = [k for k, v in state.items() if k.endswith("_velocity_0") and isinstance(v, np.ndarray)]
    assert len(velocities) == 2
    assert state["LR_Scheduler"]["last_epoch"] == 1


@pytest.mark.parametrize("cut", [0, 20, 0.5])
def test_a_truncated_weight_file_is_called_truncated(cut, tmp_path):
    path = str(tmp_path / "w.pdparams")
    checkpoint.save_arrays(path, {"a": np.zeros((64, 64), np.float32), "b": np.ones(3, np.float32)})
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(UserError, match=f"{path} is truncated or not a Paddle weight file"):
        weights.safe_load(path)


# -- every entry point -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """Tampered files around real resnet18 weights: a lone .pdparams, and checkpoint directories whose
    model.pdparams or model.pdopt is the tampered one (dygraph and executor format). All share one marker."""
    root = tmp_path_factory.mktemp("evil")
    marker = str(root / "code_ran")
    weights = {k: v.numpy() for k, v in build_model(**CONFIG).state_dict().items()}
    good = str(root / "good.pdparams")
    checkpoint.save_arrays(good, weights)
    out = {"marker": marker, "file": str(root / "evil.pdparams")}
    write_malicious(out["file"], marker, like=weights)
    tampered_opt = str(root / "evil.pdopt")
    write_malicious(tampered_opt, marker, like={"conv2d_0.w_0_velocity_0": np.zeros(3, np.float32)})
    for name, fmt, params, opt in [("params_dygraph", "dygraph", out["file"], good),
                                   ("opt_dygraph", "dygraph", good, tampered_opt),
                                   ("opt_executor", "executor", good, tampered_opt)]:
        def write_files(folder, params=params, opt=opt):
            os.link(params, os.path.join(folder, "model.pdparams"))
            os.link(opt, os.path.join(folder, "model.pdopt"))

        state = dict(format=fmt, epoch=1, iteration=3, best_miou=-1.0, miou=None, config=CONFIG,
                     scheduler={"last_epoch": 3, "last_lr": 0.001})
        out[name] = checkpoint.save_checkpoint(str(root / name), "epoch_0001", write_files, state)
    return out


def _entry_cases():
    train = [("train_dygraph", "--pretrained", "file"), ("train_executor", "--pretrained", "file"),
             ("train_dygraph", "--resume", "params_dygraph"), ("train_dygraph", "--resume", "opt_dygraph"),
             ("train_executor", "--resume", "opt_executor")]
    return ([pytest.param(e, f, k, id=f"{e}{f}={k}") for e, f, k in train]
            + [pytest.param("eval", "--save_model", k, id=f"eval--save_model={k}") for k in ("file", "params_dygraph")]
            + [pytest.param("tools/convert.py", "src", k, id=f"convert={k}") for k in ("file", "opt_dygraph")])


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("entry, flag, key", _entry_cases())
def test_every_entry_point_refuses_a_checkpoint_that_would_run_code(entry, flag, key, evil, data, tmp_path):
    path = evil[key]
    culprit = path if key == "file" else os.path.join(path, "model.pdopt" if key.startswith("opt") else
                                                      "model.pdparams")
    if entry.startswith("train_"):
        args = train_args(data, tmp_path / "run", flag, path)
    elif entry == "eval":
        args = [flag, path, "--backbone", "resnet18", "--data_folder", data, "--base_size", "64", "--crop_size", "32",
                "--output_dir", tmp_path / "eval"]
    else:
        args = [path, tmp_path / "converted", "--backbone", "resnet18"]
    assert not os.path.exists(evil["marker"])
    result = run_entry(entry, args)
    assert not os.path.exists(evil["marker"]), "the checkpoint's pickle ran"
    lines = message_lines(result.stderr)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(lines) == 1 and f"refusing to load {culprit}" in lines[0], lines
    assert "io.open" in lines[0]
    assert not os.path.exists(tmp_path / "converted")
