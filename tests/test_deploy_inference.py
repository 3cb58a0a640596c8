"""An export run by Paddle Inference (danet.deploy.inference) against the dygraph model it came from, its deploy
description, and danet-predict --inference_model."""
import json
import os
import shutil

import cv2
import numpy as np
import paddle
import pytest
from test_eval import load_tool, random_checkpoint

from danet import build_model, weights
from danet.deploy import export_model
from danet.deploy.description import SUFFIX, build_description, find_export, read_description, write_description
from danet.deploy.inference import InferenceModel
from danet.errors import UserError
from danet.inference import dygraph_predict_fn, predict_label

NUM_CLASSES = 5
CLASSES = ["road", "car", "sky", "tree", "person"]
COLOURS = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150]]
PIR = int(paddle.__version__.split(".")[0]) >= 3


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random resnet18 checkpoint that names its data set's classes and colours, as the trainers save it."""
    folder = random_checkpoint(tmp_path_factory.mktemp("random"), num_classes=NUM_CLASSES)
    with open(os.path.join(folder, "state.json")) as f:
        state = json.load(f)
    state["dataset"] = dict(name="toy", classes=CLASSES, palette=COLOURS)
    with open(os.path.join(folder, "state.json"), "w") as f:
        json.dump(state, f)
    return folder


@pytest.fixture(scope="module")
def model(ckpt):
    net = build_model("resnet18", NUM_CLASSES)
    net.set_state_dict(weights.safe_load(os.path.join(ckpt, "model.pdparams")))
    net.eval()
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ckpt, model):
    """The prefix of the checkpoint's export (once per module), predicting by 32 windows."""
    prefix = str(tmp_path_factory.mktemp("export") / "danet")
    export_model(model, prefix, (1, 3, 40, 56), description=build_description(model, weights.read_weights(ckpt),
                                                                               crop_size=32))
    return prefix


def _relative(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def _one_line(error):
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text and len(text) < 400, text
    return text


@pytest.mark.heavy
@pytest.mark.parametrize("onednn", [False, True], ids=["onednn_off", "onednn_on"])
def test_logits_equal_the_dygraph_models(exported, model, onednn):
    batch = np.random.default_rng(1).standard_normal((2, 3, 33, 47)).astype(np.float32)  # any batch and odd sizes
    expected = dygraph_predict_fn(model)(batch)
    inferred = InferenceModel(exported, onednn=onednn, threads=2)
    got = inferred.predict_fn(batch)
    assert inferred.onednn == onednn and got.shape == expected.shape == (2, NUM_CLASSES, 33, 47)
    assert _relative(got, expected) <= 1e-4
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    # The exported model is itself again (Paddle 2.6's jit.save leaves slow dy2static forwards on the sublayers).
    assert not [type(layer).__name__ for layer in model.sublayers(include_self=True) if "forward" in layer.__dict__]


@pytest.mark.heavy
@pytest.mark.parametrize("onednn", [False, True], ids=["onednn_off", "onednn_on"])
def test_sliding_windows_scales_and_flip_give_the_dygraph_labels(exported, model, onednn):
    image = np.random.default_rng(2).standard_normal((3, 61, 83)).astype(np.float32)
    settings = dict(num_classes=NUM_CLASSES, base_size=None, crop_size=32, scales=(0.75, 1.0), flip=True,
                    stride_rate=2 / 3, window_batch=3)  # windows, two scales, mirrored windows in the same calls
    inferred = InferenceModel(exported, onednn=onednn)
    got = predict_label(inferred.predict_fn, image, **settings)
    np.testing.assert_array_equal(got, predict_label(dygraph_predict_fn(model, 3), image, **settings))
    rgb = np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8)  # the convenience: an RGB image
    ids = inferred.predict(rgb, flip=True)
    assert ids.shape == (45, 70) and ids.dtype == np.uint8 and ids.max() < NUM_CLASSES


@pytest.mark.heavy
def test_predict_with_the_inference_model_writes_the_checkpoints_pictures(tmp_path, ckpt, exported, capsys):
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "in")
    for name, (h, w) in {"a.png": (40, 64), "b.jpg": (50, 30)}.items():
        cv2.imwrite(str(tmp_path / "in" / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    predict = load_tool("predict").main
    # The description says crop 32 and no flip; --flip on the command line overrides it.
    predict(["--save_model", ckpt, str(tmp_path / "in"), "--output_dir", str(tmp_path / "ckpt"), "--crop_size", "32",
             "--flip"])
    written = predict(["--inference_model", os.path.dirname(exported), str(tmp_path / "in"), "--output_dir",
                       str(tmp_path / "exported"), "--flip", "--threads", "2"])
    assert len(written) == 8 and "wrote 8 files" in capsys.readouterr().out
    for kind in ("trainid", "color", "overlay", "side_by_side"):
        for name in ("a.png", "b.png"):
            ours = cv2.imread(str(tmp_path / "exported" / kind / name), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(ours, cv2.imread(str(tmp_path / "ckpt" / kind / name), cv2.IMREAD_UNCHANGED))
    color = cv2.imread(str(tmp_path / "exported" / "color" / "a.png"))[..., ::-1]
    train_ids = cv2.imread(str(tmp_path / "exported" / "trainid" / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(color, np.asarray(COLOURS, np.uint8)[train_ids])  # the checkpoint's colours


def test_the_description_says_how_to_feed_the_model_and_round_trips(tmp_path, ckpt, model):
    description = build_description(model, weights.read_weights(ckpt), crop_size=32)
    path = write_description(description, str(tmp_path / "danet"))
    assert path == str(tmp_path / "danet") + SUFFIX and read_description(str(tmp_path / "danet")) == description
    assert description["input"]["mean"] == [123.675, 116.28, 103.53] and description["input"]["std"] == [
        58.395, 57.12, 57.375]
    assert (description["input"]["layout"], description["input"]["color"], description["input"]["dtype"]) == (
        "NCHW", "RGB", "float32")
    assert description["classes"] == CLASSES and description["palette"] == COLOURS  # from the checkpoint
    assert description["num_classes"] == NUM_CLASSES and description["model"]["backbone"] == "resnet18"
    assert description["inference"]["crop_size"] == 32 and description["inference"]["scales"] == [1.0]
    assert description["written_by"]["paddle"] == paddle.__version__
    assert description["source"]["path"] == weights.read_weights(ckpt).path
    # Without a checkpoint: numbered classes, Cityscapes' first colours, the default window.
    bare = build_description(model)
    assert bare["classes"] == ["0", "1", "2", "3", "4"] and bare["palette"][0] == [128, 64, 128]
    assert bare["inference"]["crop_size"] == 768


def test_an_export_is_found_from_its_prefix_folder_or_files(tmp_path):
    prefix = str(tmp_path / "danet")
    program = prefix + (".json" if PIR else ".pdmodel")
    for suffix in (os.path.splitext(program)[1], ".pdiparams", SUFFIX):
        open(prefix + suffix, "w").close()
    for given in (prefix, str(tmp_path), program, prefix + ".pdiparams", prefix + SUFFIX):
        assert find_export(given) == (prefix, program, prefix + ".pdiparams")
    open(tmp_path / "other.pdiparams", "w").close()
    open(tmp_path / os.path.basename(program).replace("danet", "other"), "w").close()
    assert find_export(str(tmp_path))[0] == prefix  # the one with a description
    os.remove(prefix + SUFFIX)
    with pytest.raises(UserError, match="holds 2 exported models"):
        find_export(str(tmp_path))


@pytest.mark.heavy
def test_the_description_beside_the_export_leaves_paddle_jit_load_alone(exported):
    # <prefix>_deploy.json is not <prefix>.<name>.json, which paddle.jit.load would read as a second program.
    assert os.path.isfile(exported + SUFFIX) and read_description(exported)["classes"] == CLASSES
    loaded = paddle.jit.load(exported)
    with paddle.no_grad():
        out = loaded(paddle.to_tensor(np.zeros((1, 3, 16, 16), np.float32)))
    assert tuple((out[0] if isinstance(out, (list, tuple)) else out).shape) == (1, NUM_CLASSES, 16, 16)


def _copy(exported, folder):
    os.makedirs(folder)
    base = os.path.basename(exported)
    for name in os.listdir(os.path.dirname(exported)):
        if name.startswith(base):
            shutil.copy(os.path.join(os.path.dirname(exported), name), folder)
    return os.path.join(folder, base)


def test_a_missing_export_is_one_clear_line(tmp_path):
    with pytest.raises(UserError) as error:
        InferenceModel(str(tmp_path / "nowhere"))
    assert "no exported model at" in _one_line(error)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError) as error:
        InferenceModel(str(tmp_path / "empty"))
    assert "no exported model in" in _one_line(error)
    open(tmp_path / "empty" / ("danet.json" if PIR else "danet.pdmodel"), "w").close()
    with pytest.raises(UserError) as error:
        InferenceModel(str(tmp_path / "empty" / "danet"))
    assert "has no weights beside it" in _one_line(error)


@pytest.mark.heavy
def test_a_broken_export_is_one_clear_line(tmp_path, exported):
    program_suffix = ".json" if PIR else ".pdmodel"  # Paddle 2.6 would crash on a damaged .pdmodel: refused first
    cases = {"damaged program": lambda p: open(p + program_suffix, "wb").write(b"not a model {"),
             "empty program": lambda p: open(p + program_suffix, "wb").close(),
             "truncated weights": lambda p: _truncate(p + ".pdiparams"),
             "damaged description": lambda p: open(p + SUFFIX, "w").write('{"format": "danet-deploy", "inp'),
             "foreign description": lambda p: open(p + SUFFIX, "w").write('{"input": {}}')}
    for i, (case, damage) in enumerate(cases.items()):
        prefix = _copy(exported, str(tmp_path / f"case{i}"))
        damage(prefix)
        with pytest.raises(UserError) as error:
            InferenceModel(prefix).predict_fn(np.zeros((1, 3, 16, 16), np.float32))
        assert prefix in _one_line(error), case


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_predict_refuses_a_missing_export_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        load_tool("predict").main(["--inference_model", str(tmp_path / "nowhere"), str(tmp_path)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert done.value.code == 2 and len(errors) == 1 and "no exported model at" in errors[0]
    with pytest.raises(SystemExit) as done:  # a flag mistake: argparse's one line
        load_tool("predict").main(["--tensorrt", "--save_model", str(tmp_path), str(tmp_path)])
    assert done.value.code == 2 and "--tensorrt" in capsys.readouterr().err


@pytest.mark.heavy
def test_onednn_with_every_operator_placed_on_it_fails_in_one_line_on_paddle3(exported):
    """Paddle 3.3.1's oneDNN executor cannot run the bilinear resize (InferenceModel leaves it to plain kernels):
    should it ever fail, the message is one line pointing at --no-onednn. Paddle 2.6 runs it."""
    inferred = InferenceModel(exported, onednn=True, _placement=True)
    batch = np.zeros((1, 3, 16, 16), np.float32)
    if not PIR:
        assert inferred.predict_fn(batch).shape == (1, NUM_CLASSES, 16, 16)
        return
    if paddle.__version__ != "3.3.1":  # a later Paddle may have fixed it: then there is nothing to refuse
        pytest.skip(f"the failure was seen on Paddle 3.3.1, this is {paddle.__version__}")
    with pytest.raises(UserError) as error:
        inferred.predict_fn(batch)
    assert "--no-onednn" in _one_line(error) and "oneDNN on" in str(error.value)
    assert "ConvertPirAttribute2RuntimeAttribute" in str(error.value)


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="a CUDA build runs on the GPU")
def test_gpu_and_tensorrt_are_refused_in_one_line_without_cuda(tmp_path):
    with pytest.raises(UserError) as error:  # refused before any file is read
        InferenceModel(str(tmp_path), device="gpu")
    assert "CUDA" in _one_line(error)
    with pytest.raises(UserError) as error:
        InferenceModel(str(tmp_path), tensorrt=True)
    assert "GPU" in _one_line(error)
    with pytest.raises(UserError) as error:
        InferenceModel(str(tmp_path), device="gpu", tensorrt=True)
    assert "CUDA" in _one_line(error)


@pytest.mark.heavy
def test_an_export_with_only_the_old_preprocess_file_still_predicts(tmp_path, exported):
    prefix = _copy(exported, str(tmp_path / "old"))
    os.remove(prefix + SUFFIX)
    with open(prefix + "_preprocess.json", "w") as f:
        json.dump({"input_norm": "imagenet", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                   "num_classes": NUM_CLASSES}, f)
    inferred = InferenceModel(prefix)
    assert inferred.num_classes == NUM_CLASSES and inferred.input_norm == "imagenet"
    assert inferred.settings["crop_size"] == 768
