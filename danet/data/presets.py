"""Data set presets: a data set chosen by name gets its classes, palette, label convention and sizes.

``--dataset NAME`` in every entry point picks one; the data set folder stays ``<data_folder>/<NAME>``.
A preset's label convention is applied once, when :class:`~danet.data.cityscapes.SegDataset` reads a
label: ``lut`` turns each raw label value into a train id (0..C-1) or 255 (ignored), and ``valid`` says
which raw values may occur at all, so a label of 151 in ADE20K or 30 in VOC is refused by file and value.

- ``cityscapes``: 19 classes, labels are train ids (``danet-prepare-dataset cityscapes`` makes them);
- ``ade20k``: ADEChallengeData2016, 150 classes; raw 0 ("other") is ignored and 1..150 become 0..149;
- ``voc``: VOC 2012 (+ SBD "aug" train set), 21 classes with background, 255 = object boundary;
- ``pascal_context``: 59 classes, background (raw 0) ignored; ``pascal_context_60``: 60, background a class;
- ``coco_stuff``: COCO-Stuff 10k / 164k, 171 classes after the official id remapping (done when preparing);
- ``custom``: your own folder, with class names (and optionally colours) in ``classes.json`` or
  ``classes.txt`` beside the lists.

Default sizes: Cityscapes keeps the seed's (short side 1024, crop 768); ADE20K, VOC and COCO-Stuff take
mmsegmentation's (short side 512, crop 512: ``configs/_base_/datasets/{ade20k,pascal_voc12_aug,
coco-stuff10k}.py``), Pascal Context its 520 / 480 (``pascal_context_59.py``, also the PyTorch-Encoding
defaults the official DANet code trained Context with). ``eval_base_size`` 0 evaluates each image at its
own size.
"""
import json
import os
from dataclasses import dataclass

import numpy as np

from danet.constants import IGNORE_INDEX
from danet.errors import UserError

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
NAMES_FILES = ("classes.json", "classes.txt")


@dataclass(frozen=True)
class Preset:
    """What a data set name means. ``lut``: uint8 [256] raw label -> train id or 255; ``valid``: bool [256]."""

    name: str
    classes: tuple
    palette: np.ndarray
    lut: np.ndarray
    valid: np.ndarray
    base_size: int = 1024
    crop_size: int = 768
    eval_base_size: int = 0
    hint: str = ""
    folder: str = ""  # another preset's folder it may read (pascal_context_60 reads pascal_context's)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def raw_max(self):
        """The largest raw label value that is not the ignore value."""
        return int(np.flatnonzero(self.valid[:IGNORE_INDEX]).max())

    @property
    def numbered(self):
        """A folder of no preset and no names file: its classes are just numbers."""
        return self.classes == tuple(str(i) for i in range(len(self.classes)))

    def to_train_ids(self, label):
        """uint8 raw label [H, W] -> train ids, 255 where ignored (one table lookup)."""
        return self.lut[label]

    def describe(self):
        return dict(name=self.name, classes=list(self.classes), palette=self.palette.tolist())


def identity_lut(num_classes):
    """Labels that are train ids already: 0..C-1 and 255 valid, kept as they are."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[:num_classes] = np.arange(num_classes)
    valid = np.zeros(256, bool)
    valid[:num_classes] = valid[IGNORE_INDEX] = True
    return lut, valid


def reduce_zero_lut(num_classes):
    """Raw 0 = "other"/background, ignored; 1..C become 0..C-1 (ADE20K, Pascal Context 59). 255 stays ignored."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[1:num_classes + 1] = np.arange(num_classes)
    valid = np.zeros(256, bool)
    valid[:num_classes + 1] = valid[IGNORE_INDEX] = True
    return lut, valid


def palette_for(num_classes, seed=0):
    """Distinct colours for data sets without an official palette (fixed, so pictures compare across runs)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num_classes, 3), dtype=np.uint8)


def _preset(name, classes, palette, convention, **sizes):
    lut, valid = convention(len(classes))
    palette = np.asarray(palette if palette is not None else palette_for(len(classes)), np.uint8)
    return Preset(name, tuple(classes), palette, lut, valid, **sizes)


def _module(name):
    import importlib

    return importlib.import_module(f"danet.data.datasets.{name}")


def _builtin(name):
    """The built-in preset ``name``, or None. Sizes: training short side (``base_size``) and crop; evaluation long
    side at scale 1.0 (``eval_base_size``, 0 = each image at its own size)."""
    if name == "cityscapes":  # the seed's defaults, unchanged
        return _preset("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, identity_lut, base_size=1024,
                       crop_size=768, eval_base_size=1024,
                       hint="raw Cityscapes labelIds instead of trainIds? run danet-prepare-dataset cityscapes "
                            "(tools/prepare_cityscapes.py), or set --num_classes")
    if name == "ade20k":
        m = _module("ade20k")
        return _preset(name, m.CLASSES, m.PALETTE, reduce_zero_lut, base_size=512, crop_size=512, eval_base_size=0,
                       hint="ADE20K labels are 0 (other) .. 150")
    if name == "voc":
        m = _module("voc")
        return _preset(name, m.CLASSES, m.PALETTE, identity_lut, base_size=512, crop_size=512, eval_base_size=0,
                       hint="VOC labels are 0 (background) .. 20 and 255 (SBD .mat: run danet-prepare-dataset voc)")
    if name in ("pascal_context", "pascal_context_60"):
        m = _module("pascal_context")
        classes, convention = (m.CLASSES[1:], reduce_zero_lut) if name == "pascal_context" else (m.CLASSES,
                                                                                                identity_lut)
        return _preset(name, classes, m.PALETTE, convention, base_size=520, crop_size=480, eval_base_size=0,
                       hint="prepared Pascal Context labels are 0 (background) .. 59: run danet-prepare-dataset "
                            "pascal_context", folder="pascal_context")
    if name == "coco_stuff":
        m = _module("coco_stuff")
        return _preset(name, m.CLASSES, m.PALETTE, identity_lut, base_size=512, crop_size=512, eval_base_size=0,
                       hint="COCO-Stuff labels must be remapped to 0..170: run danet-prepare-dataset coco_stuff")
    return None


BUILTIN = ("cityscapes", "ade20k", "voc", "pascal_context", "pascal_context_60", "coco_stuff")


def read_names_file(folder):
    """(class names, palette or None) from ``classes.json`` ({"classes": [...], "palette": [[r, g, b], ...]}) or
    ``classes.txt`` (one name per line, optionally followed by ``r g b``) in ``folder``; None if neither exists."""
    for file_name in NAMES_FILES:
        path = os.path.join(folder, file_name)
        if os.path.isfile(path):
            return _parse_names(path)
    return None


def _parse_names(path):
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"{path} is not valid JSON ({e}); see dataset/README.md for the format") from None
        classes, palette = data.get("classes") if isinstance(data, dict) else data, None
        palette = data.get("palette") if isinstance(data, dict) else None
    else:
        classes, palette = [], []
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                fields = line.rsplit(maxsplit=3) if len(line.split()) >= 4 else [line.strip()]
                if not fields[0]:
                    continue
                classes.append(fields[0] if len(fields) == 1 else fields[0].strip())
                if len(fields) == 4:
                    try:
                        palette.append([int(v) for v in fields[1:]])
                    except ValueError:
                        raise UserError(f"{path} line {number}: colour {' '.join(fields[1:])!r} is not three "
                                        "integers 0..255") from None
        palette = palette if palette and len(palette) == len(classes) else None
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise UserError(f"{path}: expected a list of class names (JSON {{\"classes\": [...]}} or one name per line)")
    if len(classes) > 255:
        raise UserError(f"{path} names {len(classes)} classes; at most 255 fit 8-bit labels with 255 = ignore")
    if palette is not None and (len(palette) != len(classes) or not all(
            len(c) == 3 and all(0 <= int(v) <= 255 for v in c) for c in palette)):
        raise UserError(f"{path}: the palette needs one [r, g, b] (0..255) per class ({len(classes)})")
    return list(classes), palette


def get_preset(name, root=None, num_classes=None):
    """The preset of ``--dataset name``; ``root`` (the data set folder) is read for a names file.

    An unknown name is a folder of your own: with a names file it is a ``custom`` data set, without one
    its classes are numbered 0..num_classes-1 (the seed's behaviour for any folder).
    """
    preset = _builtin(name)
    if preset is not None:
        return preset
    found = read_names_file(root) if root and os.path.isdir(root) else None
    if found is None:
        if name == "custom":
            raise UserError(f"--dataset custom needs {' or '.join(NAMES_FILES)} in {root}: one class name per "
                            "line (see dataset/README.md)")
        count = num_classes or 19
        return _preset(name, [str(i) for i in range(count)], None, identity_lut)
    classes, palette = found
    return _preset(name, classes, palette, identity_lut, hint=f"classes from the names file in {root}")
