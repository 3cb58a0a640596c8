"""Cityscapes label tables and the list-file segmentation data set.

Two list layouts, both with paths relative to the dataset folder ``<data_folder>/<dataset>`` (absolute paths
are used as they are):

- layout A (the seed's): ``{split}Images.txt`` and ``{split}Labels.txt``, one path per line, paired by position;
- layout B: ``{split}.txt`` (or any file given as ``list_file``), one ``image_path label_path`` pair per line.

Layout A wins when both exist. ``split="train_val"`` concatenates train and val, as the seed did.
Blank lines are skipped. Labels are PNGs of train ids (0..num_classes-1, 255 = void).
"""
import logging
import os

import cv2
import numpy as np
import paddle

from danet.errors import UserError

logger = logging.getLogger(__name__)

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

PALETTE = np.array(
    [
        [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
        [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
        [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
    ],
    dtype=np.uint8,
)  # fmt: skip

# Official labelId of each train id (cityscapesscripts/helpers/labels.py).
_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

LABEL_ID_TO_TRAIN_ID = np.full(256, 255, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID[list(_TRAIN_LABEL_IDS)] = np.arange(len(_TRAIN_LABEL_IDS))

# For benchmark-server submissions: any value that is not a train id (e.g. 255) becomes 0, "unlabeled".
TRAIN_ID_TO_LABEL_ID = np.zeros(256, dtype=np.uint8)
TRAIN_ID_TO_LABEL_ID[: len(_TRAIN_LABEL_IDS)] = _TRAIN_LABEL_IDS

_COLOR_LUT = np.zeros((256, 3), dtype=np.uint8)
_COLOR_LUT[: len(PALETTE)] = PALETTE


def colorize(train_ids, palette=None):
    """``[H, W]`` train ids -> ``[H, W, 3]`` uint8 RGB in ``palette`` ([C, 3], default Cityscapes' official colours);
    255 and ids beyond the palette are black."""
    lut = _COLOR_LUT
    if palette is not None:
        lut = np.zeros((256, 3), np.uint8)
        lut[: len(palette)] = np.asarray(palette, np.uint8)[:255]
    return lut[np.clip(train_ids, 0, 255).astype(np.uint8)]


def _read_lines(path):
    """Yields (line number, fields) of the non-blank lines of a list file."""
    if not os.path.isfile(path):
        raise UserError(f"list file {path} not found; make it, or run tools/prepare_cityscapes.py")
    with open(path, encoding="utf-8-sig") as f:
        rows = [(number, line.split()) for number, line in enumerate(f, 1)]
    rows = [(number, fields) for number, fields in rows if fields]
    if not rows:
        raise UserError(f"list file {path} is empty; it must list at least one sample")
    return rows


def _read_column(path, split):
    """Layout A: one path per line. Returns [(path, "file line N")]."""
    entries = []
    for number, fields in _read_lines(path):
        if len(fields) != 1:
            raise UserError(
                f"{path} line {number}: expected one path, found {len(fields)} fields "
                f"(for 'image label' pairs per line use {split}.txt instead)"
            )
        entries.append((fields[0], f"{path} line {number}"))
    return entries


def _read_pairs(path):
    """Layout B: ``image label`` per line. Returns [(image, label, "file line N")]."""
    entries = []
    for number, fields in _read_lines(path):
        if len(fields) != 2:
            raise UserError(f"{path} line {number}: expected 'image_path label_path', found {len(fields)} fields")
        entries.append((fields[0], fields[1], f"{path} line {number}"))
    return entries


def _read_split(root, split):
    images_txt = os.path.join(root, f"{split}Images.txt")
    labels_txt = os.path.join(root, f"{split}Labels.txt")
    pairs_txt = os.path.join(root, f"{split}.txt")
    if os.path.isfile(images_txt) or os.path.isfile(labels_txt):
        images, labels = _read_column(images_txt, split), _read_column(labels_txt, split)
        if len(images) != len(labels):
            raise UserError(
                f"{images_txt} lists {len(images)} images but {labels_txt} lists {len(labels)} labels; "
                "they are paired by position, so they must have the same length"
            )
        return [(image, label, where) for (image, where), (label, _) in zip(images, labels)]
    if os.path.isfile(pairs_txt):
        return _read_pairs(pairs_txt)
    raise UserError(
        f"no list for split '{split}' in {root}: expected {split}Images.txt + {split}Labels.txt or {split}.txt; "
        "run tools/prepare_cityscapes.py (or tools/make_synthetic_dataset.py for the demo set)"
    )


def read_list(root, split="train", list_file=None):
    """Reads and checks a split's list. Returns [(image_path, label_path, "list file line N")], paths as listed.

    Every listed file must exist (checked here, once, so a run does not fail hours later).
    """
    if list_file is not None:
        entries = _read_pairs(list_file)
    elif split == "train_val":
        entries = _read_split(root, "train") + _read_split(root, "val")
    else:
        entries = _read_split(root, split)
    for image, label, where in entries:
        for path in (image, label):
            if not os.path.isfile(os.path.join(root, path)):
                raise UserError(f"{where}: listed file {os.path.join(root, path)} does not exist; fix the list")
    return entries


class SegDataset(paddle.io.Dataset):
    """Images and train-id labels listed in list files (see the module docstring for the layouts).

    ``dataset[i]`` is ``transform(image, label)``, or the raw ``(uint8 [H, W, 3] RGB, uint8 [H, W])`` pair
    without a transform. A bad sample raises :class:`UserError`; none is skipped silently.
    """

    def __init__(
        self, data_folder, split="train", dataset="cityscapes", transform=None, num_classes=19, list_file=None,
        preset=None,
    ):
        self.root = os.path.join(data_folder, dataset)
        if preset is not None and preset.folder and not os.path.isdir(self.root):
            self.root = os.path.join(data_folder, preset.folder)  # e.g. pascal_context_60 reads pascal_context/
        if list_file is None and not os.path.isdir(self.root):
            raise UserError(
                f"dataset folder {self.root} does not exist; check --data_folder "
                "(tools/make_synthetic_dataset.py makes a small demo set)"
            )
        self.split, self.transform, self.num_classes, self.preset = split, transform, num_classes, preset
        entries = read_list(self.root, split, list_file)
        self._rel_images = [image for image, _, _ in entries]
        self.image_paths = [os.path.join(self.root, image) for image, _, _ in entries]
        self.label_paths = [os.path.join(self.root, label) for _, label, _ in entries]
        self._origins = [where for _, _, where in entries]
        logger.info("%s/%s: %d samples", self.root, split, len(entries))

    def __len__(self):
        return len(self.image_paths)

    def __getitem__(self, index):
        image, label = self.read(index)
        if self.transform is None:
            return image, label
        return self.transform(image, label)

    def rel_path(self, index):
        """The image path relative to the dataset folder (as listed), e.g. to name a prediction file."""
        path = self._rel_images[index]
        return os.path.basename(path) if os.path.isabs(path) else os.path.normpath(path)

    def read(self, index):
        """The raw sample: (uint8 ``[H, W, 3]`` RGB image, uint8 ``[H, W]`` train ids), checked."""
        image_path, label_path, where = self.image_paths[index], self.label_paths[index], self._origins[index]
        image = _read_rgb(image_path)
        if image is None:
            raise UserError(f"cannot read image {image_path} (missing, truncated or not an image; {where})")
        label = _read_label(label_path, where)
        if label.shape != image.shape[:2]:
            raise UserError(
                f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]} ({where}); they must have the same size"
            )
        return image, _check_values(label, self.num_classes, label_path, where, self.preset)


def _read_rgb(path):
    """uint8 ``[H, W, 3]`` RGB, or None if unreadable. OpenCV >= 4.11 decodes to RGB directly (saves a pass)."""
    if hasattr(cv2, "IMREAD_COLOR_RGB"):
        return cv2.imread(path, cv2.IMREAD_COLOR_RGB)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_label(path, where):
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise UserError(f"cannot read label {path} (missing, truncated or not an image; {where})")
    if label.ndim == 3:
        # OpenCV expands palette PNGs to colours; Pillow keeps their indices, which are the labels.
        from PIL import Image

        with Image.open(path) as pil:
            if pil.mode not in ("P", "L"):
                raise UserError(
                    f"label {path} is a {pil.mode} colour image ({where}); labels must be single-channel PNGs of "
                    "train ids (run tools/prepare_cityscapes.py for Cityscapes)"
                )
            label = np.asarray(pil)
    return label


def _check_values(label, num_classes, path, where, preset=None):
    """The label as uint8 train ids (255 = ignore) after checking every raw value is one the data set has.

    With a ``preset`` its label convention applies (e.g. ADE20K's raw 0 is ignored and 1..150 become
    0..149); without one, labels are train ids 0..num_classes-1 and 255.
    """
    if label.dtype != np.uint8:
        if label.min() < 0 or label.max() > 255:
            raise UserError(f"label {path} has values outside 0..255 ({where}); labels must be 8-bit train ids")
        label = label.astype(np.uint8)
    counts = cv2.calcHist([label], [0], None, [256], [0, 256]).ravel()  # 5x faster than np.bincount
    if preset is None:
        valid, raw_max = np.zeros(256, bool), num_classes - 1
        valid[:num_classes] = valid[255] = True
        hint = "raw Cityscapes labelIds instead of trainIds? run tools/prepare_cityscapes.py, or set --num_classes"
    else:
        valid, raw_max, hint = preset.valid, preset.raw_max, preset.hint
    bad = np.flatnonzero((counts > 0) & ~valid).tolist()
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        name = f" of {preset.name}" if preset is not None else ""
        raise UserError(f"label {path} has values {shown} outside 0..{raw_max} and 255{name} ({where}); {hint}")
    return label if preset is None else preset.to_train_ids(label)
