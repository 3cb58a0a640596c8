"""Pascal Context and COCO-Stuff: synthetic official downloads -> prepare -> lists and labels checked against the
official tables (copied below from the converters that define them), then read by SegDataset through the presets."""
import os

import cv2
import numpy as np
import pytest
from scipy.io import loadmat, savemat

from danet.data.cityscapes import SegDataset
from danet.data.datasets import coco_stuff, pascal_context
from danet.data.presets import get_preset
from danet.errors import UserError

LISTS = ("trainImages.txt", "trainLabels.txt", "valImages.txt", "valLabels.txt")

# The 459-class ids of the 59 classes, sorted into train ids 1..59 (0 = background): the `_mapping` of
# junfu1115/DANet encoding/datasets/pcontext.py, mmsegmentation tools/dataset_converters/pascal_context.py and
# PaddleSeg tools/convert_voc2010.py.
CONTEXT_MAPPING = sorted([
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454, 295, 296,
    427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349,
    360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
])  # fmt: skip

# mmsegmentation's clsID_to_trID, as runs of consecutive keys (the values count up from 0 in key order).
MMSEG_164K_KEYS = [*range(0, 11), *range(12, 25), 26, 27, *range(30, 44), *range(45, 65), 66, 69, *range(71, 82),
                   *range(83, 90), *range(91, 182)]  # + {255: 255}; tools/dataset_converters/coco_stuff164k.py
MMSEG_10K_KEYS = [0, *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
                  *range(84, 91), *range(92, 183)]  # tools/dataset_converters/coco_stuff10k.py, 0: 0 included


def mmseg_164k(raw):
    """What coco_stuff164k.py writes (unlisted ids stay as they are)."""
    out = raw.copy()
    for tr_id, cls_id in enumerate(MMSEG_164K_KEYS):
        out[raw == cls_id] = tr_id
    return out


def mmseg_10k(raw):
    """What coco_stuff10k.py writes, then reduce_zero_label (configs/_base_/datasets/coco-stuff10k.py)."""
    out = raw.astype(np.int64)
    for tr_id, cls_id in enumerate(MMSEG_10K_KEYS):
        out[raw == cls_id] = tr_id
    return np.where(out == 0, 255, out - 1).astype(np.uint8)


def _read_png(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _lines(root, name):
    with open(os.path.join(root, name)) as f:
        return f.read().split()


def _stamps(root):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(root) for f in fs}


def _read_all(data_folder, name, preset):
    """Every sample of both splits through SegDataset; returns the set of train ids seen."""
    seen = set()
    for split in ("train", "val"):
        dataset = SegDataset(str(data_folder), split, dataset=name, preset=get_preset(preset))
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.shape[:2] == label.shape
            seen |= set(np.unique(label).tolist())
    return seen


@pytest.fixture
def context(tmp_path):
    return pascal_context.make_synthetic(str(tmp_path / "pascal_context"))


def test_context_lut_is_the_converters_table(context):
    lut = pascal_context.build_lut(os.path.join(context, "labels.txt"), os.path.join(context, "59_labels.txt"))
    expected = np.zeros(460, np.uint8)
    expected[CONTEXT_MAPPING] = np.arange(60)
    assert np.array_equal(lut, expected)
    # mmsegmentation issue #1940: 2008_000002's labels 55 and 58 are tvmonitor and window in this order
    assert pascal_context.CLASSES[55] == "tvmonitor" and pascal_context.CLASSES[58] == "window"


def test_context_prepare_lists_labels_and_reader(context):
    summary = pascal_context.prepare(context, progress=False)
    assert (summary.images, summary.labels_written, summary.labels_skipped) == (6, 6, 0)
    assert sorted(summary.lists_written) == sorted(LISTS)
    assert _lines(context, "trainImages.txt")[0] == "VOCdevkit/VOC2010/JPEGImages/2008_000002.jpg"
    assert _lines(context, "valLabels.txt") == ["labels_59/2008_000006.png", "labels_59/2008_000007.png"]
    table = np.zeros(460, np.uint8)
    table[CONTEXT_MAPPING] = np.arange(60)
    for image_id in ("2008_000002", "2008_000007"):
        raw = loadmat(os.path.join(context, "trainval", f"{image_id}.mat"))["LabelMap"]
        label = _read_png(os.path.join(context, "labels_59", f"{image_id}.png"))
        assert np.array_equal(label, table[raw])
        name = {v: pascal_context.CLASSES[label[raw == v][0]] for v in np.unique(raw).tolist()}
        # the three names spelt differently in 59_labels.txt, and the 400 other classes -> background
        assert name == {0: "background", 1: "background", 19: "bedclothes", 80: "cloth", 189: "ground", 360: "sky",
                        397: "table", 427: "tvmonitor", 459: "background"}
    assert _read_all(os.path.dirname(context), "pascal_context", "pascal_context") == {3, 17, 29, 46, 49, 54, 255}
    assert 0 in _read_all(os.path.dirname(context), "pascal_context", "pascal_context_60")


def test_context_second_run_writes_nothing(context):
    pascal_context.prepare(context, progress=False)
    before = _stamps(context)
    summary = pascal_context.prepare(context, progress=False)
    assert (summary.labels_written, summary.labels_skipped, summary.lists_written) == (0, 6, [])
    assert _stamps(context) == before
    assert pascal_context.prepare(context, force=True, progress=False).labels_written == 6


@pytest.mark.parametrize("damage, named", [
    ("missing", "trainval/2008_000003.mat is missing"),
    ("truncated", "cannot read"),
    ("outside", "[500]"),
])  # fmt: skip
def test_context_bad_label_is_named_and_no_list_written(context, damage, named):
    mat = os.path.join(context, "trainval", "2008_000003.mat")
    if damage == "missing":
        os.remove(mat)
    elif damage == "truncated":
        with open(mat, "r+b") as f:
            f.truncate(100)
    else:
        label_map = loadmat(mat)["LabelMap"]
        label_map[3, 3] = 500
        savemat(mat, {"LabelMap": label_map})
    with pytest.raises(UserError, match="problem") as error:
        pascal_context.prepare(context, progress=False)
    assert named in str(error.value) and ("2008_000003" in str(error.value))
    assert not any(os.path.exists(os.path.join(context, name)) for name in LISTS)
    if damage == "missing":  # found before converting: nothing written at all
        assert not os.path.exists(os.path.join(context, "labels_59"))


def test_context_missing_download_part_is_named(context):
    os.remove(os.path.join(context, "labels.txt"))
    with pytest.raises(UserError, match="labels.txt is missing"):
        pascal_context.prepare(context, progress=False)
    assert not os.path.exists(os.path.join(context, "labels_59"))


def test_context_renamed_class_file_is_refused(context):
    path = os.path.join(context, "59_labels.txt")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("11: diningtable", "11: desk"))
    with pytest.raises(UserError, match="59_labels.txt does not name the 59"):
        pascal_context.prepare(context, progress=False)


def test_mat_labels_need_scipy(context, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import scipy.io now fails
    with pytest.raises(UserError, match="reading .mat labels needs scipy: pip install scipy"):
        pascal_context.prepare(context, progress=False)


def test_coco_tables_are_mmsegmentations():
    assert len(coco_stuff.CLASSES) == 171 and coco_stuff.PALETTE is None
    assert [coco_stuff.CLASSES[i] for i in (0, 11, 62, 79, 80, 170)] == [
        "person", "stop sign", "tv", "toothbrush", "banner", "wood"]
    raw = np.arange(256, dtype=np.uint8)
    expected_164k = np.where(np.isin(raw, MMSEG_164K_KEYS + [255]), mmseg_164k(raw), 255)
    assert np.array_equal(coco_stuff.ONE_SIXTY_FOUR_K_LUT, expected_164k)
    expected_10k = np.where(np.isin(raw, MMSEG_10K_KEYS), mmseg_10k(raw), 255)
    assert np.array_equal(coco_stuff.TEN_K_LUT, expected_10k)


@pytest.mark.parametrize("variant", ["10k", "164k"])
def test_coco_prepare_lists_labels_and_reader(tmp_path, variant):
    root = coco_stuff.make_synthetic(str(tmp_path / "coco_stuff"), variant=variant)
    assert coco_stuff.detect_variant(root) == variant
    summary = coco_stuff.prepare(root, progress=False)
    assert (summary.images, summary.labels_written, summary.lists_written) == (6, 6, list(LISTS))
    images, labels = _lines(root, "valImages.txt"), _lines(root, "valLabels.txt")
    assert len(images) == 2 and len(_lines(root, "trainLabels.txt")) == 4
    for image_rel, label_rel in zip(images + _lines(root, "trainImages.txt"), labels + _lines(root, "trainLabels.txt")):
        stem = os.path.splitext(os.path.basename(image_rel))[0]
        label = _read_png(os.path.join(root, label_rel))
        if variant == "10k":
            raw = loadmat(os.path.join(root, "annotations", f"{stem}.mat"))["S"]
            listed = np.isin(raw, MMSEG_10K_KEYS)  # not the street sign, which mmseg leaves as it is
            assert np.array_equal(label[listed], mmseg_10k(raw)[listed])
            official_id = raw.astype(np.int64)
        else:
            raw = _read_png(os.path.join(root, image_rel.replace("images/", "annotations/")[:-4] + ".png"))
            listed = np.isin(raw, MMSEG_164K_KEYS + [255])
            assert np.array_equal(label[listed], mmseg_164k(raw)[listed])
            official_id = np.where(raw == 255, 0, raw.astype(np.int64) + 1)
        name = {v: (coco_stuff.CLASSES[label[official_id == v][0]] if label[official_id == v][0] != 255 else None)
                for v in np.unique(official_id).tolist()}  # labels.txt id -> name after preparing
        assert name == {0: None, 1: "person", 3: "car", 12: None, 13: "stop sign", 124: "grass", 157: "sky-other",
                        182: "wood"}
    seen = _read_all(str(tmp_path), "coco_stuff", "coco_stuff")
    assert seen == {0, 2, 11, 112, 145, 170, 255}


def test_coco_second_run_writes_nothing(tmp_path):
    root = coco_stuff.make_synthetic(str(tmp_path / "coco_stuff"), variant="164k")
    coco_stuff.prepare(root, progress=False)
    before = _stamps(root)
    summary = coco_stuff.prepare(root, progress=False)
    assert (summary.labels_written, summary.labels_skipped, summary.lists_written) == (0, 6, [])
    assert _stamps(root) == before


@pytest.mark.parametrize("variant, damage, named", [
    ("10k", "missing", "annotations/COCO_train2014_000000000002.mat is missing"),
    ("10k", "outside", "ids [200] outside 0..182"),
    ("164k", "truncated", "cannot read"),
    ("164k", "outside", "ids [182] outside 0..181 and 255"),
])  # fmt: skip
def test_coco_bad_label_is_named_and_no_list_written(tmp_path, variant, damage, named):
    root = coco_stuff.make_synthetic(str(tmp_path / "coco_stuff"), variant=variant)
    if variant == "10k":
        path = os.path.join(root, "annotations", "COCO_train2014_000000000002.mat")
    else:
        path = os.path.join(root, "annotations", "train2017", "000000000109.png")
    if damage == "missing":
        os.remove(path)
    elif damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(60)
    elif variant == "10k":
        s = loadmat(path)["S"]
        s[0, 0] = 200
        savemat(path, {"S": s})
    else:
        label = _read_png(path)
        label[0, 0] = 182
        cv2.imwrite(path, label)
    with pytest.raises(UserError, match="problem") as error:
        coco_stuff.prepare(root, progress=False)
    assert named in str(error.value) and os.path.basename(path) in str(error.value)
    assert not any(os.path.exists(os.path.join(root, name)) for name in LISTS)


def test_coco_unknown_layout_is_refused(tmp_path):
    with pytest.raises(UserError, match="neither COCO-Stuff 10k"):
        coco_stuff.prepare(str(tmp_path), progress=False)


@pytest.mark.process  # a pool of workers converts the labels
def test_prepare_with_worker_processes(tmp_path):
    context = pascal_context.make_synthetic(str(tmp_path / "pascal_context"))
    assert pascal_context.prepare(context, workers=2, progress=False).labels_written == 6
    coco = coco_stuff.make_synthetic(str(tmp_path / "coco_stuff"), variant="10k")
    assert coco_stuff.prepare(coco, workers=2, progress=False).labels_written == 6
    assert _read_all(str(tmp_path), "coco_stuff", "coco_stuff") == {0, 2, 11, 112, 145, 170, 255}
