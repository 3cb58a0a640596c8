"""tools/export.py and tools/predict.py on a small checkpoint."""
import json
import os

import cv2
import numpy as np
import paddle
import pytest
from test_eval import load_tool, random_checkpoint

from danet import build_model, weights
from danet.data.cityscapes import PALETTE


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("random"), num_classes=5)


def _model(ckpt):
    model = build_model("resnet18", 5)
    model.set_state_dict(weights.safe_load(os.path.join(ckpt, "model.pdparams")))
    model.eval()
    return model


@pytest.mark.heavy
def test_export_round_trip(tmp_path, ckpt):
    prefix = str(tmp_path / "export" / "danet")
    report = load_tool("export").main(["--save_model", ckpt, "--output", prefix, "--check_size", "40", "56"])
    program = prefix + (".json" if paddle.__version__.startswith("3") else ".pdmodel")
    assert program in report["files"] and prefix + ".pdiparams" in report["files"]
    assert report["jit_diff"] <= 1e-5 and report["inference_diff"] <= 1e-3  # logits of order 100 here
    assert prefix + "_deploy.json" in report["files"]
    with open(prefix + "_deploy.json") as f:  # how to feed it: the normalisation the weights were trained with
        description = json.load(f)
    assert description["input"]["mean"] == [123.675, 116.28, 103.53] and description["num_classes"] == 5
    # Any batch and size: the InputSpec is [None, 3, None, None].
    loaded = paddle.jit.load(prefix)
    image = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 33, 47)).astype(np.float32))
    with paddle.no_grad():
        expected = _model(ckpt)(image).numpy()
        got = loaded(image)
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    assert got.shape == (2, 5, 33, 47)
    np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_predict_writes_colour_masks_overlays_and_train_ids(tmp_path, ckpt, capsys):
    rng = np.random.default_rng(0)
    images = {"folder/a.png": (40, 64), "folder/sub/b.jpg": (50, 30), "c.png": (20, 20)}
    for rel, (h, w) in images.items():
        os.makedirs(os.path.dirname(tmp_path / "in" / rel), exist_ok=True)
        cv2.imwrite(str(tmp_path / "in" / rel), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "out"
    written = load_tool("predict").main(["--save_model", ckpt, str(tmp_path / "in" / "folder"),
                                         str(tmp_path / "in" / "c.png"), "--output_dir", str(out),
                                         "--crop_size", "32", "--flip", "--alpha", "0.25"])
    assert len(written) == 12 and "wrote 12 files" in capsys.readouterr().out
    for name, rel in (("a.png", "folder/a.png"), ("sub/b.png", "folder/sub/b.jpg"), ("c.png", "c.png")):
        image = cv2.imread(str(tmp_path / "in" / rel))
        train_ids = cv2.imread(str(out / "trainid" / name), cv2.IMREAD_UNCHANGED)
        color = cv2.imread(str(out / "color" / name))
        overlay = cv2.imread(str(out / "overlay" / name)).astype(int)
        assert train_ids.shape == image.shape[:2] and train_ids.max() < 5  # at the input's own size
        np.testing.assert_array_equal(color[..., ::-1], PALETTE[train_ids])
        np.testing.assert_allclose(overlay, 0.25 * color + 0.75 * image, atol=1)
        side_by_side = cv2.imread(str(out / "side_by_side" / name))  # image | mask | overlay, left to right
        np.testing.assert_array_equal(side_by_side, np.hstack([image, color, overlay.astype(np.uint8)]))
