"""Your own data set: a folder of images and label PNGs, with the class names in a small file.

Layout (``root`` = ``<data_folder>/<name>``)::

    classes.txt                       one class name per line, optionally followed by "r g b" (or classes.json:
                                      {"classes": [...], "palette": [[r, g, b], ...]})
    images/{train,val}/.../<stem>.jpg|.png
    labels/{train,val}/.../<stem>.png single-channel, values 0..C-1 (the line order of classes.txt), 255 ignored

``prepare(root)`` pairs every image with the label of the same relative stem and writes the lists
``{train,val}Images.txt`` / ``{train,val}Labels.txt``; an image without its label (or the reverse) is
named and nothing is written. ``--dataset <name>`` then takes the names (and colours) from the file.
"""
import logging
import os

import cv2
import numpy as np

from danet.data.prepare import PrepareSummary, one_line, write_lists
from danet.data.presets import read_names_file
from danet.errors import UserError

log = logging.getLogger(__name__)
SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _files(folder, extensions):
    """{relative stem: relative path} of the files below ``folder`` with one of ``extensions``."""
    found = {}
    for base, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(extensions):
                rel = os.path.relpath(os.path.join(base, name), folder)
                found[os.path.splitext(rel)[0]] = rel
    return found


def prepare(root, workers=1, force=False, progress=True):
    """Write the lists of ``root`` (see the module docstring). ``workers``/``progress``: nothing to convert."""
    if read_names_file(root) is None:
        raise UserError(f"{root} has no classes.txt or classes.json: write the class names there, one per line "
                        "(see dataset/README.md)")
    summary, problems, pairs = PrepareSummary(), [], {}
    for split in SPLITS:
        image_dir, label_dir = os.path.join(root, "images", split), os.path.join(root, "labels", split)
        if not os.path.isdir(image_dir):
            continue
        images, labels = _files(image_dir, IMAGE_EXTENSIONS), _files(label_dir, (".png",))
        problems += [f"images/{split}/{images[s]} has no label labels/{split}/{s}.png" for s in images
                     if s not in labels]
        problems += [f"labels/{split}/{labels[s]} has no image" for s in labels if s not in images]
        pairs[split] = [(f"images/{split}/{images[s]}", f"labels/{split}/{labels[s]}") for s in sorted(images)
                        if s in labels]
        summary.images += len(images)
    if not pairs:
        raise UserError(f"{root} has no images/train or images/val folder (see dataset/README.md for the layout)")
    if problems:
        for problem in problems:
            log.error("%s", problem)
        raise UserError(one_line(problems, root))
    for split, split_pairs in pairs.items():
        write_lists(root, split, split_pairs, force, summary)
    return summary


def make_synthetic(root, num_train=4, num_val=2, height=64, width=96, seed=0,
                   classes=("background", "disc", "bar")):
    """A tiny custom data set in the layout above: discs and bars on a background, names in classes.txt."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        colours = ((0, 0, 0), (220, 60, 40), (40, 90, 220))
        f.writelines(f"{name} {r} {g} {b}\n" for name, (r, g, b) in zip(classes, colours))
    for split, count in (("train", num_train), ("val", num_val)):
        for index in range(count):
            image, label = _scene(rng, height, width)
            stem = f"scene_{index:03d}"
            for folder, array, ext in (("images", image, ".jpg"), ("labels", label, ".png")):
                path = os.path.join(root, folder, split, stem + ext)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                cv2.imwrite(path, array)
    return root


def _scene(rng, height, width):
    image = np.full((height, width, 3), 90, np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), np.uint8)
    cx, cy, r = int(rng.integers(10, width - 10)), int(rng.integers(10, height - 10)), int(rng.integers(5, 10))
    cv2.circle(label, (cx, cy), r, 1, -1)
    x = int(rng.integers(0, width - 12))
    label[:, x:x + 8] = np.where(label[:, x:x + 8] == 0, 2, label[:, x:x + 8])
    image[label == 1] = (40, 60, 220)  # BGR: the disc is red-ish, the bar blue-ish, as classes.txt says
    image[label == 2] = (220, 90, 40)
    label[0, :] = 255  # an ignored row, as real labels have
    return image, label
