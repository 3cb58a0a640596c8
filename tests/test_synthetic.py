"""The synthetic default set: deterministic, Cityscapes-shaped, consistent labels, readable, not a colour lookup."""
import os

import cv2
import numpy as np
import pytest

from danet.data.cityscapes import LABEL_ID_TO_TRAIN_ID, SegDataset
from danet.data.synthetic import MANIFEST, USED_TRAIN_IDS, make_synthetic_dataset
from danet.errors import UserError

SMALL = dict(num_train=4, num_val=2, height=64, width=128)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_dataset(str(tmp_path_factory.mktemp("syn")), seed=3, **SMALL)


def test_same_seed_gives_byte_identical_files(small_set, tmp_path):
    again = make_synthetic_dataset(str(tmp_path / "a"), seed=3, **SMALL)
    other = make_synthetic_dataset(str(tmp_path / "b"), seed=4, **SMALL)
    assert _files(small_set) == _files(again) == _files(other)
    for name in _files(small_set):
        with open(os.path.join(small_set, name), "rb") as f, open(os.path.join(again, name), "rb") as g:
            assert f.read() == g.read(), name
    first = "leftImg8bit/train/alphaville/alphaville_000000_000019_leftImg8bit.png"
    assert not np.array_equal(cv2.imread(os.path.join(small_set, first)), cv2.imread(os.path.join(other, first)))


def test_layout_and_lists_match_cityscapes(small_set):
    for split, count in (("train", 4), ("val", 2)):
        with open(os.path.join(small_set, f"{split}Images.txt")) as f:
            images = f.read().split()
        with open(os.path.join(small_set, f"{split}Labels.txt")) as f:
            labels = f.read().split()
        assert len(images) == len(labels) == count and images == sorted(images)
        for image, label in zip(images, labels):
            folder, city, name = image.split("/")[:2], image.split("/")[2], image.split("/")[3]
            assert folder == ["leftImg8bit", split] and name.startswith(city + "_")
            assert label == image.replace("leftImg8bit/", "gtFine/", 1).replace(
                "_leftImg8bit.png", "_gtFine_labelTrainIds.png"
            )
            assert os.path.isfile(os.path.join(small_set, label.replace("labelTrainIds", "labelIds")))
            assert cv2.imread(os.path.join(small_set, image)).shape == (64, 128, 3)


def test_labels_use_the_chosen_train_ids_and_agree_with_label_ids(small_set):
    dataset = SegDataset(os.path.dirname(small_set), "train")
    seen = set()
    for path in dataset.label_paths:
        train_ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        label_ids = cv2.imread(path.replace("labelTrainIds", "labelIds"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(LABEL_ID_TO_TRAIN_ID[label_ids], train_ids)
        seen |= set(np.unique(train_ids).tolist())
    assert seen <= set(USED_TRAIN_IDS) | {255}
    assert 255 in seen and len(seen - {255}) >= 8
    assert 8 <= len(USED_TRAIN_IDS) <= 12


def test_segdataset_reads_both_splits(small_set):
    for split, count in (("train", 4), ("val", 2)):
        dataset = SegDataset(os.path.dirname(small_set), split)
        image, label = dataset[count - 1]
        assert image.shape == (64, 128, 3) and label.shape == (64, 128) and label.dtype == np.uint8


def test_even_the_best_colour_lookup_cannot_solve_it(tmp_path):
    """Fit a colour -> class table (8 levels per channel) on the very pixels it is scored on: an upper bound for
    any per-pixel colour classifier. It must stay far from solving the set, so a model has to use structure."""
    root = make_synthetic_dataset(str(tmp_path), num_train=1, num_val=4, height=96, width=192)
    dataset = SegDataset(os.path.dirname(root), "val")
    pairs = [dataset.read(i) for i in range(len(dataset))]
    colours = np.concatenate([(image // 32).reshape(-1, 3).astype(np.int64) @ [64, 8, 1] for image, _ in pairs])
    labels = np.concatenate([label.ravel() for _, label in pairs])
    keep = labels != 255
    colours, labels = colours[keep], labels[keep]
    table = np.zeros((512, 256))
    np.add.at(table, (colours, labels), 1)
    predicted = table.argmax(1)[colours]
    ious = [((predicted == c) & (labels == c)).sum() / ((predicted == c) | (labels == c)).sum() for c in set(labels)]
    assert (predicted == labels).mean() < 0.75 and np.mean(ious) < 0.5


def test_second_run_is_a_no_op_and_foreign_folders_are_refused(small_set, tmp_path):
    stamps = {name: os.stat(os.path.join(small_set, name)).st_mtime_ns for name in _files(small_set)}
    assert make_synthetic_dataset(os.path.dirname(small_set), seed=3, **SMALL) == small_set
    assert stamps == {name: os.stat(os.path.join(small_set, name)).st_mtime_ns for name in _files(small_set)}
    foreign = tmp_path / "real" / "cityscapes"
    foreign.mkdir(parents=True)
    (foreign / "trainImages.txt").write_text("x.png\n")
    with pytest.raises(UserError, match=f"not a synthetic data set \\(no {MANIFEST}\\)"):
        make_synthetic_dataset(str(tmp_path / "real"))


def test_other_settings_replace_a_synthetic_set(tmp_path):
    make_synthetic_dataset(str(tmp_path), num_train=3, num_val=2, height=64, width=128)
    root = make_synthetic_dataset(str(tmp_path), num_train=1, num_val=1, height=64, width=128)
    assert len(SegDataset(str(tmp_path), "train")) == 1
    assert len(os.listdir(os.path.join(root, "leftImg8bit", "train", "alphaville"))) == 1
