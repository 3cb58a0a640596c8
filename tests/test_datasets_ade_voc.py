"""ADE20K and VOC (+ SBD) data set modules: names and palettes, the synthetic copies of the official layouts,
and ``prepare`` (lists, SBD's .mat -> PNG, idempotence, one-line errors that name the file)."""
import os
import shutil
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from danet.data.cityscapes import SegDataset
from danet.data.datasets import ade20k, voc
from danet.data.presets import reduce_zero_lut
from danet.errors import UserError

LISTS = ("trainImages.txt", "trainLabels.txt", "valImages.txt", "valLabels.txt")
ADE_DRAWN = {0, 1, 2, 3, 4, 5, 13, 21}  # raw labels make_synthetic draws


def _lines(path):
    with open(path) as f:
        return f.read().split()


def _lists(root):
    return {name: _lines(os.path.join(root, name)) for name in LISTS}


def _stamps(root):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(root) for f in fs}


def _no_lists(root):
    return not any(os.path.exists(os.path.join(root, name)) for name in LISTS)


def _read_all(data_folder, name, split, num_classes):
    dataset = SegDataset(data_folder, split, dataset=name, num_classes=num_classes)
    return [dataset.read(i) for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------ names, palettes


def test_class_names_and_palettes():
    assert len(ade20k.CLASSES) == len(ade20k.PALETTE) == 150 and len(set(ade20k.CLASSES)) == 150
    # mmsegmentation mmseg/datasets/ade.py: first, "bed" (with its stray space dropped) and last entries.
    assert (ade20k.CLASSES[0], ade20k.CLASSES[7], ade20k.CLASSES[-1]) == ("wall", "bed", "flag")
    assert (ade20k.PALETTE[0], ade20k.PALETTE[-1]) == ((120, 120, 120), (92, 0, 255))
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ade20k.PALETTE)
    assert voc.CLASSES[0] == "background" and voc.CLASSES[-1] == "tvmonitor" and len(voc.CLASSES) == 21
    # mmsegmentation mmseg/datasets/voc.py PascalVOCDataset palette, a few entries; 255 is VOC's boundary colour.
    assert voc.PALETTE[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
    assert (voc.PALETTE[15], voc.PALETTE[20]) == ((192, 128, 128), (0, 64, 128))
    assert tuple(voc.color_map()[255]) == (224, 224, 192)


# ------------------------------------------------------------------------------------------------- ADE20K


@pytest.fixture
def ade(tmp_path):
    return ade20k.make_synthetic(str(tmp_path / "ade20k"))


def test_ade_synthetic_is_deterministic(tmp_path, ade):
    other = ade20k.make_synthetic(str(tmp_path / "again"))
    files = sorted(os.path.relpath(p, ade) for p in _stamps(ade))
    assert len(files) == 12 and files == sorted(os.path.relpath(p, other) for p in _stamps(other))
    for rel in files:
        with open(os.path.join(ade, rel), "rb") as a, open(os.path.join(other, rel), "rb") as b:
            assert a.read() == b.read(), rel


def test_ade_prepare_writes_paired_relative_lists(ade):
    summary = ade20k.prepare(ade, progress=False)
    assert (summary.images, summary.labels_written, sorted(summary.lists_written)) == (6, 0, sorted(LISTS))
    lists = _lists(ade)
    assert len(lists["trainImages.txt"]) == 4 and len(lists["valImages.txt"]) == 2
    assert lists["trainImages.txt"][0] == "ADEChallengeData2016/images/training/ADE_train_00000001.jpg"
    for split, sub in (("train", "training"), ("val", "validation")):
        for image, label in zip(lists[f"{split}Images.txt"], lists[f"{split}Labels.txt"]):
            assert not os.path.isabs(image) and os.path.isfile(os.path.join(ade, image))
            assert label == image.replace("/images/", "/annotations/").replace(".jpg", ".png")
            assert f"/{sub}/" in image
        assert lists[f"{split}Images.txt"] == sorted(lists[f"{split}Images.txt"])


def test_ade_samples_read_with_raw_labels(ade):
    ade20k.prepare(ade, progress=False)
    lut, valid = reduce_zero_lut(len(ade20k.CLASSES))  # the ade20k preset's convention
    seen = set()
    for split in ("train", "val"):
        for image, label in _read_all(os.path.dirname(ade), "ade20k", split, 151):
            assert image.shape == (64, 96, 3) and label.shape == (64, 96) and label.dtype == np.uint8
            seen |= set(np.unique(label).tolist())
            assert valid[label].all()
            train_ids = lut[label]
            assert ((train_ids < 150) | (train_ids == 255)).all() and (train_ids[label == 0] == 255).all()
    assert seen == ADE_DRAWN


def test_ade_second_run_does_nothing(ade, caplog):
    ade20k.prepare(ade, progress=False)
    before = _stamps(ade)
    with caplog.at_level("INFO"):
        summary = ade20k.prepare(ade, progress=False)
    assert (summary.labels_written, summary.lists_written) == (0, [])
    assert _stamps(ade) == before
    assert "nothing to do" in caplog.text
    assert sorted(ade20k.prepare(ade, force=True, progress=False).lists_written) == sorted(LISTS)


def test_ade_missing_annotation_is_named(ade):
    os.remove(os.path.join(ade, "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png"))
    with pytest.raises(UserError, match="ADE_val_00000002.png") as error:
        ade20k.prepare(ade, progress=False)
    assert "\n" not in str(error.value) and _no_lists(ade)


def test_ade_label_value_151_is_refused(ade):
    path = os.path.join(ade, "ADEChallengeData2016/annotations/training/ADE_train_00000003.png")
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    label[5, 5] = 151
    cv2.imwrite(path, label)
    with pytest.raises(UserError, match=r"ADE_train_00000003\.png has values 151 above 150"):
        ade20k.prepare(ade, progress=False)
    assert _no_lists(ade)


def test_ade_without_the_download_says_what_to_unpack(tmp_path):
    with pytest.raises(UserError, match="ADEChallengeData2016"):
        ade20k.prepare(str(tmp_path), progress=False)


# ----------------------------------------------------------------------------------------------- VOC + SBD


@pytest.fixture
def pascal(tmp_path):
    return voc.make_synthetic(str(tmp_path / "voc"))


def _split_names(root):
    """VOC train, VOC val and SBD train + val names, as the synthetic copy wrote them."""
    seg = os.path.join(root, voc.VOC, "ImageSets", "Segmentation")
    sbd = os.path.join(root, voc.SBD_FOLDERS[0])
    return (_lines(os.path.join(seg, "train.txt")), _lines(os.path.join(seg, "val.txt")),
            _lines(os.path.join(sbd, "train.txt")) + _lines(os.path.join(sbd, "val.txt")))  # fmt: skip


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def test_voc_synthetic_layout_is_official(pascal):
    label = Image.open(os.path.join(pascal, voc.VOC, "SegmentationClass", "2007_000032.png"))
    assert label.mode == "P" and label.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    assert set(np.unique(np.asarray(label)).tolist()) <= set(range(21)) | {255}
    voc_train, voc_val, sbd = _split_names(pascal)
    assert _lines(os.path.join(pascal, voc.VOC, "ImageSets", "Segmentation", "trainval.txt")) == voc_train + voc_val
    assert set(sbd) & set(voc_train) and set(sbd) & set(voc_val) and set(sbd) - set(voc_train + voc_val)
    from scipy.io import loadmat

    gt = loadmat(os.path.join(pascal, voc.SBD_FOLDERS[0], "cls", f"{sbd[0]}.mat"))["GTcls"][0]
    assert gt["Segmentation"][0].dtype == np.uint8 and gt["Boundaries"][0].shape == (20, 1)
    assert set(gt["CategoriesPresent"][0].ravel().tolist()) == set(np.unique(gt["Segmentation"][0]).tolist()) - {0}


def test_voc_aug_train_list_follows_voc_aug_rule(pascal):
    summary = voc.prepare(pascal, progress=False)
    voc_train, voc_val, sbd = _split_names(pascal)
    expected = sorted((set(voc_train) | set(sbd)) - set(voc_val))  # mmseg tools/dataset_converters/voc_aug.py
    assert (summary.images, summary.labels_written, summary.labels_skipped) == (10, len(set(sbd)), 0)
    lists = _lists(pascal)
    assert [_stem(p) for p in lists["trainImages.txt"]] == expected and len(expected) == 8
    assert [_stem(p) for p in lists["trainLabels.txt"]] == expected
    assert [_stem(p) for p in lists["valImages.txt"]] == sorted(voc_val) == [_stem(p) for p in lists["valLabels.txt"]]
    for name, label in zip(expected, lists["trainLabels.txt"]):
        folder = f"{voc.VOC}/SegmentationClass" if name in voc_train else voc.AUG  # VOC's label wins
        assert label == f"{folder}/{name}.png"
    assert all(p.startswith(f"{voc.VOC}/JPEGImages/") for p in lists["trainImages.txt"] + lists["valImages.txt"])
    assert len(os.listdir(os.path.join(pascal, voc.AUG))) == len(set(sbd))  # all of SBD, as voc_aug.py


def test_voc_samples_read_and_aug_labels_match_the_mat(pascal):
    from scipy.io import loadmat

    voc.prepare(pascal, progress=False)
    dataset = SegDataset(os.path.dirname(pascal), "train", dataset="voc", num_classes=21)
    for index in range(len(dataset)):
        image, label = dataset.read(index)
        assert image.shape == (64, 96, 3) and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= set(range(21)) | {255}
        if voc.AUG in dataset.label_paths[index]:
            mat = os.path.join(pascal, voc.SBD_FOLDERS[0], "cls", _stem(dataset.label_paths[index]) + ".mat")
            assert np.array_equal(label, loadmat(mat)["GTcls"][0]["Segmentation"][0])
        else:
            assert (label == 255).any()  # VOC's palette PNG, read as indices, with its boundary band
    assert len(_read_all(os.path.dirname(pascal), "voc", "val", 21)) == 2


def test_voc_second_run_does_nothing(pascal, caplog):
    voc.prepare(pascal, progress=False)
    before = _stamps(pascal)
    with caplog.at_level("INFO"):
        summary = voc.prepare(pascal, progress=False)
    assert (summary.labels_written, summary.labels_skipped, summary.lists_written) == (0, 8, [])
    assert _stamps(pascal) == before and "nothing to do" in caplog.text
    assert voc.prepare(pascal, force=True, progress=False).labels_written == 8


def test_voc_without_sbd_trains_on_voc_train(pascal):
    voc_train, _, _ = _split_names(pascal)
    shutil.rmtree(os.path.join(pascal, "benchmark_RELEASE"))
    summary = voc.prepare(pascal, progress=False)
    assert summary.labels_written == 0 and not os.path.exists(os.path.join(pascal, voc.AUG))
    assert [_stem(p) for p in _lists(pascal)["trainLabels.txt"]] == sorted(voc_train)


def test_voc_sbd_under_mmseg_name_and_image_fallback(pascal):
    os.makedirs(os.path.join(pascal, "VOCdevkit", "VOCaug"))
    shutil.move(os.path.join(pascal, voc.SBD_FOLDERS[0]), os.path.join(pascal, voc.SBD_FOLDERS[1]))
    os.remove(os.path.join(pascal, voc.VOC, "JPEGImages", "2008_000051.jpg"))  # SBD-only: SBD's img/ has it
    voc.prepare(pascal, progress=False)
    assert f"{voc.SBD_FOLDERS[1]}/img/2008_000051.jpg" in _lists(pascal)["trainImages.txt"]


def test_voc_truncated_mat_is_named_and_no_list_written(pascal):
    path = os.path.join(pascal, voc.SBD_FOLDERS[0], "cls", "2008_000061.mat")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(UserError, match="2008_000061.mat") as error:
        voc.prepare(pascal, progress=False)
    assert "\n" not in str(error.value) and _no_lists(pascal)


def test_voc_missing_annotation_is_named_and_nothing_written(pascal):
    os.remove(os.path.join(pascal, voc.VOC, "SegmentationClass", "2007_000042.png"))
    with pytest.raises(UserError, match="SegmentationClass/2007_000042.png"):
        voc.prepare(pascal, progress=False)
    assert _no_lists(pascal) and not os.path.exists(os.path.join(pascal, voc.AUG))


def test_voc_mat_without_scipy_says_how_to_install(pascal, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # "import scipy.io" now raises ImportError
    with pytest.raises(UserError, match=r"needs scipy: pip install scipy \(or danet-paddle\[sbd\]\)"):
        voc.prepare(pascal, progress=False)
    assert _no_lists(pascal)


@pytest.mark.process  # a pool of workers converts the .mat files
def test_voc_workers_convert_the_same(tmp_path):
    one, two = voc.make_synthetic(str(tmp_path / "one")), voc.make_synthetic(str(tmp_path / "two"))
    voc.prepare(one, workers=1, progress=False)
    assert voc.prepare(two, workers=2, progress=False).labels_written == 8
    assert _lists(one) == _lists(two)
    for name in sorted(os.listdir(os.path.join(one, voc.AUG))):
        a, b = (cv2.imread(os.path.join(r, voc.AUG, name), cv2.IMREAD_UNCHANGED) for r in (one, two))
        assert np.array_equal(a, b), name
