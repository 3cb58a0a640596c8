"""danet.eval end to end: the known metric case, agreement with an independent computation, saved PNGs,
multi-scale + flip, Executor checkpoints (in memory and converted), and one-line errors."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest

from danet import build_model, checkpoint, weights
from danet.data.cityscapes import LABEL_ID_TO_TRAIN_ID, PALETTE, TRAIN_ID_TO_LABEL_ID, SegDataset
from danet.data.synthetic import make_synthetic_dataset
from danet.data.transforms import build_val_transform
from danet.errors import UserError
from danet.eval import main
from danet.inference import MULTI_SCALES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--backbone", "resnet18", "--base_size", "64", "--crop_size", "48", "--epoch_num", "1", "--batch_size", "2",
        "--eval_interval", "0", "--save_interval", "1", "--num_workers", "0"]


def load_tool(name):
    """The module of the console script danet-<name> (tools/<name>.py runs the same)."""
    return importlib.import_module(f"danet.tools.{name}")


def tiny_data(tmp_path_factory):
    """4 train + 2 val generated street scenes of 64x128, made once per test session."""
    folder = tmp_path_factory.getbasetemp() / "eval_data"
    make_synthetic_dataset(str(folder), 4, 2, 64, 128)
    return str(folder)


def trained_run(tmp_path_factory, mode):
    """The run directory of a 1-epoch resnet18 run of ``danet.train_<mode>`` on :func:`tiny_data` (once per session).

    The Executor run goes through a subprocess: it leaves the process in static mode, and a time
    limit turns a trainer that hangs into a failed test.
    """
    data = tiny_data(tmp_path_factory)
    run_dir = tmp_path_factory.getbasetemp() / f"run_{mode}"
    if not (run_dir / "latest").exists():
        argv = TINY + ["--data_folder", data, "--save_dir", str(run_dir)]
        if mode == "executor":
            env = dict(os.environ, PYTHONPATH=REPO)
            done = subprocess.run([sys.executable, "-m", "danet.train_executor"] + argv, env=env, timeout=90,
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
        else:
            from danet.train_dygraph import main as train

            train(argv)
    return str(run_dir)


def random_checkpoint(folder, num_classes=19, arrays=None):
    """A dygraph checkpoint directory (with state.json) of a randomly initialised resnet18 DANet, or of ``arrays``."""
    paddle.seed(3)
    model = build_model("resnet18", num_classes)
    config = dict(model.config, recompute=False)
    del config["head_lr_mult"], config["dropout"]
    arrays = arrays or {k: v.numpy() for k, v in model.state_dict().items()}
    return checkpoint.save_checkpoint(str(folder), "epoch_0000",
                                      lambda tmp: checkpoint.save_arrays(os.path.join(tmp, "model.pdparams"), arrays),
                                      dict(format="dygraph", epoch=0, config=config))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory)


@pytest.fixture(scope="module")
def dygraph_run(tmp_path_factory):
    return trained_run(tmp_path_factory, "dygraph")


@pytest.fixture(scope="module")
def executor_run(tmp_path_factory):
    return trained_run(tmp_path_factory, "executor")


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("random"))


@pytest.fixture(scope="module")
def fitted_ckpt(tmp_path_factory, data, random_ckpt):
    """The random checkpoint with its class outputs permuted so that each class it predicts lands on the true
    class it overlaps most: an untrained model whose IoUs are not all 0, so comparing them means something."""
    arrays = weights.safe_load(os.path.join(random_ckpt, "model.pdparams"))
    model = build_model("resnet18", 19)
    model.set_state_dict(arrays)
    model.eval()
    dataset = SegDataset(data, "val", "cityscapes", build_val_transform())
    overlap = np.zeros((19, 19), np.int64)  # predicted x true
    for index in range(len(dataset)):
        image, label = dataset[index]
        with paddle.no_grad():
            pred = model(paddle.to_tensor(image[None])).numpy()[0].argmax(0)
        np.add.at(overlap, (pred[label != 255], label[label != 255]), 1)
    source, taken = np.arange(19), set()  # output c of the new model is output source[c] of the old one
    for pred in [p for p in np.argsort(-overlap.sum(1)) if overlap[p].sum()]:
        true = next(t for t in np.argsort(-overlap[pred]) if t not in taken)
        taken.add(true)
        moved = int(np.flatnonzero(source == pred)[0])
        source[[moved, true]] = source[[true, moved]]
    for name in ("cls_fused", "cls_pam", "cls_cam"):
        for kind in ("weight", "bias"):
            arrays[f"head.{name}.{kind}"] = arrays[f"head.{name}.{kind}"][source]
    return random_checkpoint(tmp_path_factory.mktemp("fitted"), arrays=arrays)


def _write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _known_case(root):
    """3 classes over two images in a folder of no preset (numbered classes); (truth, prediction) pairs give the
    matrix [[5,1,0],[2,3,1],[0,0,4]], plus
    4 pixels labelled 255 (ignored) whose predictions must not count."""
    pairs = [(0, 0)] * 5 + [(0, 1)] + [(1, 0)] * 2 + [(1, 1)] * 3 + [(1, 2)] + [(2, 2)] * 4 + [(255, 1)] * 4
    rng = np.random.default_rng(0)
    pairs = np.array(pairs)[rng.permutation(len(pairs))]
    images, labels = [], []
    for rel, (h, w), chunk in (("a/b/one.png", (3, 4), pairs[:12]), ("c/two.png", (2, 4), pairs[12:])):
        _write(os.path.join(root, "known", rel), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        _write(os.path.join(root, "known", "gt", rel), chunk[:, 0].reshape(h, w).astype(np.uint8))
        _write(os.path.join(root, "pred", rel), chunk[:, 1].reshape(h, w).astype(np.uint8))
        images.append(rel)
        labels.append("gt/" + rel)
    for name, paths in (("valImages.txt", images), ("valLabels.txt", labels)):
        with open(os.path.join(root, "known", name), "w") as f:
            f.write("\n".join(paths) + "\n")
    return os.path.join(root, "pred")


def test_known_confusion_matrix_through_pred_dir(tmp_path):
    pred_dir = _known_case(str(tmp_path))
    out = tmp_path / "out"
    main(["--pred_dir", pred_dir, "--data_folder", str(tmp_path), "--dataset", "known", "--num_classes", "3",
          "--output_dir", str(out), "--epoch_num", "7", "--batch_size", "4", "--momentum", "0.9"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confusion_matrix"] == [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
    assert metrics["miou"] == pytest.approx(0.617857, abs=1e-6)
    assert list(metrics["per_class_iou"].values()) == pytest.approx([0.625, 0.428571, 0.8], abs=1e-6)
    assert metrics["pixel_accuracy"] == pytest.approx(0.75) and metrics["kappa"] == pytest.approx(0.623529, abs=1e-6)
    assert metrics["settings"]["pred_dir"] == os.path.abspath(pred_dir)
    rows = (out / "per_class_iou.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[2].startswith("1,1,0.428571")
    log = (out / "eval.log").read_text()
    assert "mIoU            0.6179" in log  # the table is in the log file, not only on the console
    assert "ignored by eval (training flags): --epoch_num 7, --batch_size 4\n" in log  # --momentum 0.9 is the default


def test_pred_dir_names_a_missing_or_wrong_sized_prediction(tmp_path):
    pred_dir = _known_case(str(tmp_path))
    argv = ["--pred_dir", pred_dir, "--data_folder", str(tmp_path), "--dataset", "known", "--num_classes", "3",
            "--output_dir", str(tmp_path / "out"), "--debug"]
    _write(os.path.join(pred_dir, "c", "two.png"), np.zeros((3, 4), np.uint8))
    with pytest.raises(UserError, match=r"two.png is 4x3 but its image .*two.png is 4x2"):
        main(argv)
    os.remove(os.path.join(pred_dir, "a", "b", "one.png"))
    with pytest.raises(UserError, match=r"prediction .*pred/a/b/one.png for image .*known/a/b/one.png is missing"):
        main(argv)


def _official_iou(pred_label_ids, gt_label_ids):
    """Per-class IoU as the official cityscapesscripts evaluation defines it, on label ids: false positives
    exclude pixels whose ground truth is a class that is ignored in evaluation."""
    evaluated = [int(i) for i in TRAIN_ID_TO_LABEL_ID[:19]]
    counted = np.isin(gt_label_ids, evaluated)
    result = []
    for label_id in evaluated:
        tp = np.sum((pred_label_ids == label_id) & (gt_label_ids == label_id))
        fp = np.sum((pred_label_ids == label_id) & (gt_label_ids != label_id) & counted)
        fn = np.sum((gt_label_ids == label_id) & (pred_label_ids != label_id))
        result.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    return np.array(result)


def test_per_class_iou_equals_an_independent_computation_and_pngs_are_right(tmp_path, data, fitted_ckpt):
    out = tmp_path / "out"
    metrics = main(["--save_model", fitted_ckpt, "--data_folder", data, "--num_workers", "0", "--base_size", "128",
                    "--crop_size", "128", "--save_predictions", "--output_dir", str(out)])
    model = build_model("resnet18", 19)
    model.set_state_dict(weights.safe_load(os.path.join(fitted_ckpt, "model.pdparams")))
    model.eval()
    root = os.path.join(data, "cityscapes")
    images = open(os.path.join(root, "valImages.txt")).read().split()
    matrix = np.zeros((19, 19), np.int64)
    pred_ids, gt_ids = [], []
    for rel in images:
        rgb = cv2.cvtColor(cv2.imread(os.path.join(root, rel)), cv2.COLOR_BGR2RGB)
        label_ids = cv2.imread(os.path.join(root, rel.replace("leftImg8bit", "gtFine", 1).replace(
            "_leftImg8bit.png", "_gtFine_labelIds.png")), cv2.IMREAD_UNCHANGED)
        train_ids = LABEL_ID_TO_TRAIN_ID[label_ids]
        with paddle.no_grad():  # the crop covers the image: eval must equal one whole-image forward pass
            pred = model(paddle.to_tensor(build_val_transform()(rgb, train_ids)[0][None])).numpy()[0].argmax(0)
        saved = {kind: cv2.imread(str(out / kind / rel), cv2.IMREAD_UNCHANGED) for kind in ("trainid", "color",
                                                                                          "labelid")}
        np.testing.assert_array_equal(saved["trainid"], pred)
        np.testing.assert_array_equal(saved["color"][..., ::-1], PALETTE[pred])
        np.testing.assert_array_equal(saved["labelid"], TRAIN_ID_TO_LABEL_ID[pred])
        keep = train_ids != 255
        np.add.at(matrix, (train_ids[keep], pred[keep]), 1)
        pred_ids.append(saved["labelid"].ravel())
        gt_ids.append(label_ids.ravel())
    assert metrics["confusion_matrix"] == matrix.tolist()
    iou = np.diag(matrix) / (matrix.sum(0) + matrix.sum(1) - np.diag(matrix)).clip(min=1e-300)
    iou[matrix.sum(0) + matrix.sum(1) == 0] = np.nan
    reported = np.array([np.nan if v is None else v for v in metrics["per_class_iou"].values()])
    np.testing.assert_allclose(reported, iou, atol=1e-6)
    np.testing.assert_allclose(reported, _official_iou(np.concatenate(pred_ids), np.concatenate(gt_ids)), atol=1e-6)
    assert metrics["miou"] == pytest.approx(np.nanmean(iou), abs=1e-6)
    assert np.sum(iou > 0) >= 3  # not a trivial all-zero comparison
    again = main(["--pred_dir", str(out / "trainid"), "--data_folder", data, "--output_dir", str(tmp_path / "again")])
    assert again["confusion_matrix"] == metrics["confusion_matrix"]  # the saved train ids are what was scored


@pytest.mark.slow
@pytest.mark.process
def test_multi_scale_flip_sliding_window_on_a_trained_checkpoint(tmp_path, data, dygraph_run):
    out = tmp_path / "out"
    metrics = main(["--save_model", dygraph_run, "--data_folder", data, "--base_size", "64", "--crop_size", "48",
                    "--multi_scales", "--flip", "--save_predictions", "--output_dir", str(out), "--limit", "1"])
    assert metrics["settings"]["scales"] == list(MULTI_SCALES) and metrics["settings"]["flip"] is True
    assert metrics["settings"]["model"]["backbone"] == "resnet18"  # taken from the checkpoint's state.json
    assert 0 <= metrics["miou"] <= 1 and sum(map(sum, metrics["confusion_matrix"])) == metrics["pixels"] > 0
    saved = sorted(os.path.join(d, f) for d, _, files in os.walk(out / "trainid") for f in files)
    assert len(saved) == 1 and all(cv2.imread(p, cv2.IMREAD_UNCHANGED).shape == (64, 128) for p in saved)


@pytest.mark.slow
@pytest.mark.process
def test_executor_checkpoint_in_memory_equals_converted(tmp_path, data, executor_run):
    common = ["--save_model", executor_run, "--data_folder", data, "--base_size", "128", "--crop_size", "64"]
    direct = main(common + ["--output_dir", str(tmp_path / "direct")])
    converted = main(common + ["--change_executor_to_dygraph", "--output_dir", str(tmp_path / "converted")])
    ckpt = checkpoint.resolve(executor_run)[1]
    assert direct["settings"]["checkpoint_format"] == "executor"
    assert converted["settings"]["checkpoint"] == os.path.join(ckpt + "-dygraph", "model.pdparams")
    assert checkpoint.read_state(ckpt + "-dygraph")["format"] == "dygraph"
    assert converted["confusion_matrix"] == direct["confusion_matrix"]
    log = (tmp_path / "converted" / "eval.log").read_text()
    assert "differ by at most 0" in log and f"loaded 134 of 134 tensors from {ckpt}-dygraph" in log


@pytest.fixture
def bare_weights(tmp_path, random_ckpt):
    """A resnet18 19-class checkpoint's weights as a lone .pdparams file (no state.json: the flags give the model)."""
    path = tmp_path / "weights.pdparams"
    shutil.copy(os.path.join(random_ckpt, "model.pdparams"), path)
    return str(path)


def test_model_flags_that_contradict_the_checkpoint_are_an_error(tmp_path, data, random_ckpt):
    with pytest.raises(UserError, match=r"holds a model with --backbone resnet18.* but the flags ask for --backbone "
                                        r"resnet34"):
        main(["--save_model", random_ckpt, "--backbone", "resnet34", "--data_folder", data, "--output_dir",
              str(tmp_path), "--debug"])


@pytest.mark.parametrize("flags, message", [
    (["--backbone", "resnet34"], r"holds a model with --backbone resnet18, --num_classes 19.* ask for --backbone "
                                 r"resnet34"),
    (["--dataset", "other", "--num_classes", "5"], r"holds a model with --backbone resnet18, --num_classes 19.* "
                                                     r"ask for --backbone resnet101, --num_classes 5"),
], ids=["backbone", "classes"])
def test_flags_that_contradict_what_bare_weights_show_are_refused(tmp_path, data, bare_weights, flags, message):
    """A bare .pdparams has no config, but its tensors show the depth and the classes."""
    with pytest.raises(UserError, match=message):
        main(["--save_model", bare_weights, "--data_folder", data, "--output_dir", str(tmp_path), "--debug"] + flags)


def test_bare_weights_evaluate_without_model_flags_and_gaps_are_refused(tmp_path, data, bare_weights):
    metrics = main(["--save_model", bare_weights, "--data_folder", data, "--output_dir", str(tmp_path / "ok"),
                    "--limit", "1", "--num_workers", "0", "--base_size", "128", "--crop_size", "64"])
    assert metrics["settings"]["model"]["backbone"] == "resnet18"  # found from the tensors, not from a flag
    arrays = weights.safe_load(bare_weights)
    del arrays["head.pam.gamma"]
    checkpoint.save_arrays(str(tmp_path / "gap.pdparams"), arrays)
    with pytest.raises(UserError, match=r"does not fit the model \(1 missing \(e.g. head.pam.gamma"):
        main(["--save_model", str(tmp_path / "gap.pdparams"), "--data_folder", data, "--output_dir",
              str(tmp_path / "gap"), "--debug"])


@pytest.mark.process
def test_truncated_weights_exit_2_with_one_line(tmp_path, data, bare_weights):
    with open(bare_weights, "r+b") as f:
        f.truncate(os.path.getsize(bare_weights) // 2)
    done = subprocess.run([sys.executable, "-m", "danet.eval", "--save_model", bare_weights, "--backbone", "resnet18",
                           "--data_folder", data, "--output_dir", str(tmp_path / "out")],
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated" in errors[0] and bare_weights in errors[0]
    assert "Traceback" not in done.stderr
