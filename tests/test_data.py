"""SegDataset: both list layouts load, every bad input is a one-line UserError naming the file, DataLoader batches."""
import os

import cv2
import numpy as np
import paddle
import pytest
from PIL import Image

from danet.data import transforms as T
from danet.data.cityscapes import PALETTE, SegDataset, colorize
from danet.errors import UserError

H, W = 24, 32


def _write_sample(root, name, rng, size=(H, W)):
    image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    label = rng.choice(np.array([0, 5, 18, 255], np.uint8), size)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, "gt"), exist_ok=True)
    cv2.imwrite(os.path.join(root, "img", name + ".png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(os.path.join(root, "gt", name + ".png"), label)
    return image, label


@pytest.fixture
def data_folder(tmp_path):
    """``<tmp>/cityscapes`` with 4 train samples listed in layout A, and the same pairs in layout B."""
    root = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    samples = [_write_sample(str(root), f"s{i}", rng) for i in range(4)]
    (root / "trainImages.txt").write_text("".join(f"img/s{i}.png\n" for i in range(4)))
    (root / "trainLabels.txt").write_text("".join(f"gt/s{i}.png\n" for i in range(4)))
    (root / "val.txt").write_text("".join(f"img/s{i}.png  gt/s{i}.png\n\n" for i in range(4)))
    return tmp_path, samples


def test_seed_layout_loads_rgb_images_and_labels(data_folder):
    folder, samples = data_folder
    dataset = SegDataset(str(folder), "train")
    assert len(dataset) == 4
    image, label = dataset[2]
    assert np.array_equal(image, samples[2][0]) and np.array_equal(label, samples[2][1])
    assert dataset.rel_path(2) == os.path.join("img", "s2.png")
    assert dataset.label_paths[2] == os.path.join(str(folder), "cityscapes", "gt/s2.png")


def test_pair_layout_loads_by_split_and_by_explicit_list(data_folder):
    folder, samples = data_folder
    by_split = SegDataset(str(folder), "val")
    explicit = SegDataset(str(folder), "anything", list_file=str(folder / "cityscapes" / "val.txt"))
    for dataset in (by_split, explicit):
        assert len(dataset) == 4
        assert np.array_equal(dataset[3][1], samples[3][1])


def test_palette_label_png_is_read_as_indices(data_folder):
    folder, samples = data_folder
    path = str(folder / "cityscapes" / "gt" / "s1.png")
    palette_png = Image.fromarray(samples[1][1], mode="P")
    palette_png.putpalette(PALETTE.ravel().tolist())
    palette_png.save(path)
    assert np.array_equal(SegDataset(str(folder), "train")[1][1], samples[1][1])


def _expect_error(match, folder, split="train", index=None):
    with pytest.raises(UserError, match=match) as info:
        dataset = SegDataset(str(folder), split)
        if index is not None:
            dataset.read(index)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_listed_file_missing(data_folder):
    folder, _ = data_folder
    os.remove(folder / "cityscapes" / "img" / "s2.png")
    message = _expect_error("s2.png does not exist", folder)
    assert "trainImages.txt line 3" in message


def test_truncated_image(data_folder):
    folder, _ = data_folder
    path = folder / "cityscapes" / "img" / "s1.png"
    path.write_bytes(path.read_bytes()[:60])
    _expect_error(r"cannot read image .*s1\.png \(missing, truncated or not an image; .*line 2\)", folder, index=1)


def test_non_image_file(data_folder):
    folder, _ = data_folder
    (folder / "cityscapes" / "gt" / "s0.png").write_text("not a png")
    _expect_error(r"cannot read label .*gt/s0\.png", folder, index=0)


def test_label_of_another_size(data_folder):
    folder, _ = data_folder
    cv2.imwrite(str(folder / "cityscapes" / "gt" / "s3.png"), np.zeros((H + 1, W), np.uint8))
    _expect_error(rf"label .*gt/s3\.png is {W}x{H + 1} but image .*img/s3\.png is {W}x{H}", folder, index=3)


def test_label_values_out_of_range_hint_at_label_ids(data_folder):
    folder, _ = data_folder
    cv2.imwrite(str(folder / "cityscapes" / "gt" / "s0.png"), np.full((H, W), 26, np.uint8))
    message = _expect_error(r"label .*gt/s0\.png has values 26 outside 0\.\.18 and 255", folder, index=0)
    assert "prepare_cityscapes" in message


def test_lists_of_different_lengths(data_folder):
    folder, _ = data_folder
    (folder / "cityscapes" / "trainLabels.txt").write_text("gt/s0.png\ngt/s1.png\n")
    _expect_error(r"trainImages\.txt lists 4 images but .*trainLabels\.txt lists 2 labels", folder)


def test_empty_list(data_folder):
    folder, _ = data_folder
    (folder / "cityscapes" / "trainLabels.txt").write_text("\n  \n")
    _expect_error(r"list file .*trainLabels\.txt is empty", folder)


@pytest.mark.parametrize(
    "name, text, split, match",
    [
        ("trainImages.txt", "img/s0.png\nimg/s1.png gt/s1.png\n", "train", r"trainImages\.txt line 2: expected one"),
        ("val.txt", "img/s0.png gt/s0.png\nimg/s1.png\n", "val", r"val\.txt line 2: expected 'image_path label_path'"),
    ],
)
def test_malformed_line(data_folder, name, text, split, match):
    folder, _ = data_folder
    (folder / "cityscapes" / name).write_text(text)
    _expect_error(match, folder, split)


def test_missing_list_and_missing_folder(data_folder):
    folder, _ = data_folder
    _expect_error(r"no list for split 'test' .*testImages\.txt \+ testLabels\.txt or test\.txt", folder, "test")
    _expect_error(r"dataset folder .*nowhere.*cityscapes does not exist", folder / "nowhere")


def test_colorize_uses_palette_and_black_for_void():
    rgb = colorize(np.array([[0, 13, 255]], np.uint8))
    assert rgb.tolist() == [[[128, 64, 128], [0, 0, 142], [0, 0, 0]]]


def _batches(dataset, seed):
    np.random.seed(seed)
    paddle.seed(seed)
    loader = paddle.io.DataLoader(dataset, batch_size=2, num_workers=2, shuffle=True)
    return [(image.numpy(), label.numpy()) for image, label in loader]


@pytest.mark.process
def test_dataloader_with_workers_yields_crop_batches_reproducibly(data_folder):
    folder, _ = data_folder
    dataset = SegDataset(str(folder), "train", transform=T.build_train_transform(base_size=24, crop_size=20))
    dataset[0]  # the parent has used OpenCV (and its thread pool) before the workers fork
    threads = cv2.getNumThreads()
    T.limit_cv2_threads(num_workers=2)
    try:
        first, again, other = _batches(dataset, 1), _batches(dataset, 1), _batches(dataset, 2)
    finally:
        cv2.setNumThreads(threads)
    assert len(first) == 2
    for image, label in first:
        assert image.shape == (2, 3, 20, 20) and image.dtype == np.float32
        assert label.shape == (2, 20, 20) and label.dtype == np.int64
    for (a_image, a_label), (b_image, b_label) in zip(first, again):
        assert np.array_equal(a_image, b_image) and np.array_equal(a_label, b_label)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
