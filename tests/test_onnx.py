"""ONNX export (danet.deploy.onnx, ``danet-export --format onnx``): onnxruntime gives the dygraph model's logits at
any batch and size; a missing or mismatched converter, an opset or an operator it cannot take is one clear error
that leaves nothing behind.

The export tests need paddle2onnx and onnxruntime (``pip install 'danet-paddle[onnx]'``; Paddle 2.6:
``[onnx-paddle26]``; ``make test`` installs them) and fail without them, naming the install line; the error tests
need neither.
"""
import json
import os
import sys
import types

import numpy as np
import paddle
import pytest
from test_eval import load_tool, random_checkpoint

from danet import build_model
from danet.deploy import onnx as deploy_onnx
from danet.errors import UserError

PADDLE3 = int(paddle.__version__.split(".")[0]) in (0, 3)


def _converter_missing():
    try:
        deploy_onnx.require_onnx()
    except UserError as e:
        return str(e)
    return ""


def _require_converter():
    missing = _converter_missing()
    if missing:  # a missing package fails the test: a skipped proof is no proof
        pytest.fail(missing, pytrace=False)


needs_onnx = pytest.mark.usefixtures("_onnx_installed")


@pytest.fixture
def _onnx_installed():
    _require_converter()


def _model(model="danet", gamma=0.1):
    """A random resnet18 model with the attention blended in (gamma 0 would make both modules the identity)."""
    paddle.seed(0)
    net = build_model("resnet18", 5, model=model)
    for name, param in net.named_parameters():
        if name.endswith("gamma"):
            param.set_value(np.full(param.shape, gamma, np.float32))
    net.eval()
    return net


def _onnx_logits(path, image):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})[0]


@needs_onnx
@pytest.mark.heavy
@pytest.mark.process  # the conversion runs in a child process
def test_onnx_logits_match_dygraph_at_any_batch_and_size(tmp_path):
    model, path = _model(), str(tmp_path / "out" / "danet.onnx")
    report = deploy_onnx.export_onnx(model, path, check_shape=(1, 3, 64, 96))
    assert report["files"] == [path, str(tmp_path / "out" / "danet_deploy.json")]
    assert [c["shape"] for c in report["checks"]] == [[1, 3, 64, 96], [2, 3, 49, 73]]
    assert all(c["relative"] <= 1e-4 and c["argmax_mismatch"] == 0 for c in report["checks"])
    assert sorted(os.listdir(tmp_path / "out")) == ["danet.onnx", "danet_deploy.json"]  # no work folder left
    # A third size, checked here rather than by the export: H and W are not baked into the file.
    image = np.random.default_rng(5).standard_normal((1, 3, 40, 56)).astype(np.float32)
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image)).numpy()
    got = _onnx_logits(path, image)
    assert got.shape == (1, 5, 40, 56)
    agreement = deploy_onnx.agreement(expected, got, 1e-4)
    assert agreement["relative"] <= 1e-4 and agreement["argmax_mismatch"] == 0
    with open(report["files"][1]) as f:
        description = json.load(f)
    assert description["onnx"]["opset"] == 11 and description["onnx"]["input"] == "image"
    assert description["onnx"]["input_shape"] == [-1, 3, -1, -1] and description["num_classes"] == 5


@needs_onnx
@pytest.mark.heavy
@pytest.mark.process
def test_export_tool_writes_onnx(tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "ckpt", num_classes=5)
    prefix = str(tmp_path / "export" / "danet")
    report = load_tool("export").main(["--save_model", ckpt, "--output", prefix, "--format", "onnx", "--opset", "13",
                                       "--check_size", "40", "56"])
    assert report["files"][0] == prefix + ".onnx" and report["opset"] == 13
    assert not os.path.exists(prefix + ".json") and not os.path.exists(prefix + ".pdmodel")  # ONNX only
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("exported ") and "ONNX opset 13" in line


@needs_onnx
@pytest.mark.heavy
@pytest.mark.process
def test_an_operator_paddle2onnx_cannot_convert_is_one_line_and_leaves_nothing(tmp_path):
    """DRANet's adaptive pooling converts only at a fixed size: the converter's abort becomes our one-line error,
    an earlier export at the same path stays, and --input_size is the way out."""
    model, folder = _model("dranet"), tmp_path / "out"
    folder.mkdir()
    (folder / "dranet.onnx").write_bytes(b"an earlier export")
    with pytest.raises(UserError) as error:
        deploy_onnx.export_onnx(model, str(folder / "dranet.onnx"))
    message = str(error.value)
    assert "\n" not in message and "nothing was written" in message
    assert "pool2d" in message or "--input_size" in message or "paddle2onnx" in message
    assert sorted(os.listdir(folder)) == ["dranet.onnx"] and (folder / "dranet.onnx").read_bytes() == b"an earlier " \
                                                                                                      b"export"
    report = deploy_onnx.export_onnx(model, str(folder / "dranet.onnx"), input_size=(64, 96))
    assert [c["shape"] for c in report["checks"]] == [[1, 3, 64, 96], [2, 3, 64, 96]]
    assert report["input_shape"] == [None, 3, 64, 96]


@pytest.mark.parametrize("missing", ["paddle2onnx", "onnxruntime"])
def test_a_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(UserError) as error:
        deploy_onnx.export_onnx(_model(), str(tmp_path / "out" / "m.onnx"))
    message = str(error.value)
    extra = "[onnx]" if PADDLE3 else "[onnx-paddle26]"
    assert "\n" not in message and missing in message and f"pip install 'danet-paddle{extra}'" in message
    assert not os.path.exists(tmp_path / "out")


def test_a_paddle2onnx_for_the_other_paddle_is_refused(monkeypatch):
    """paddle2onnx 1.x turns a Paddle 3 (PIR) program into an empty model without an error: refuse the pair."""
    other = "1.3.1" if PADDLE3 else "2.1.0"
    monkeypatch.setitem(sys.modules, "paddle2onnx", types.SimpleNamespace(__version__=other))
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__="1.20.0"))
    with pytest.raises(UserError, match=f"paddle2onnx {other} cannot convert the programs of Paddle"):
        deploy_onnx.require_onnx()


@pytest.mark.parametrize("opset, version, ok", [(11, "2.1.0", True), (21, "2.1.0", True), (10, "2.1.0", False),
                                                (22, "2.1.0", False), (19, "1.3.1", True), (20, "1.3.1", False)])
def test_opsets_the_converter_would_abort_on_are_refused(opset, version, ok):
    if ok:
        deploy_onnx.check_opset(opset, version)
    else:
        with pytest.raises(UserError, match=f"--opset {opset}"):
            deploy_onnx.check_opset(opset, version)


@pytest.mark.parametrize("argv, message", [(["--format", "onnx", "--opset", "9"], "--opset must be 11 to 21"),
                                           (["--opset", "13"], "apply to --format onnx only"),
                                           (["--format", "onnx", "--input_size", "8", "64"], "--input_size")])
def test_export_flag_mistakes_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        load_tool("export").main(["--save_model", "nowhere"] + argv)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_agreement_forgives_only_near_ties():
    expected = np.zeros((1, 3, 1, 4), np.float32)
    expected[0, :, 0, 0] = [10, 0, 0]        # a clear winner
    expected[0, :, 0, 1] = [5, 5.0001, 0]    # a near-tie: either class is right
    expected[0, :, 0, 2:] = [[0, 0], [9, 9], [1, 1]]
    got = expected.copy()
    got[0, 0, 0, 1] += 0.0002                # flips the near-tie
    result = deploy_onnx.agreement(expected, got, 1e-4)
    assert result["argmax_mismatch"] == 0 and result["near_ties"] == 1 and result["relative"] < 1e-4
    got[0, 1, 0, 0] = 11                     # flips the clear one
    assert deploy_onnx.agreement(expected, got, 1e-4)["argmax_mismatch"] == 1


def test_the_converter_reason_is_its_own_error_line():
    aborted = ("[Paddle2ONNX] Start parsing the Paddle model file...\n"
               "[ERROR][Paddle2ONNX] [OP: pd_op.pool2d] Adaptive only support static input shape.\n"
               "[ERROR][Paddle2ONNX] There are unsupported features.\n\n--------\nC++ Traceback\n"
               "FatalError: `Process abort signal` is detected by the operating system.\n")
    reason = deploy_onnx._converter_reason(aborted, -6)
    assert reason.startswith("[OP: pd_op.pool2d] Adaptive only support static input shape.")
    assert "--input_size" in reason
    assert deploy_onnx._converter_reason("", -9) == "the converter was killed by signal 9"
    assert deploy_onnx._converter_reason("paddle2onnx returned an empty model\n", 1) == \
        "paddle2onnx returned an empty model"
