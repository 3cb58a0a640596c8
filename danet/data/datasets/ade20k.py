"""ADE20K (the MIT Scene Parsing benchmark, ``ADEChallengeData2016.zip``): 150 classes, names, palette, lists.

Official layout, unpacked into ``root`` (the data set folder, ``<data_folder>/ade20k``), as in mmsegmentation's
``docs/en/user_guides/2_dataset_prepare.md`` (open-mmlab/mmsegmentation)::

    ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_0000NNNN.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_0000NNNN.png   uint8, 0..150

Raw label 0 is "other" (ignored by the ``ade20k`` preset) and 1..150 are the classes below, so train id
``i`` = raw ``i + 1`` (mmsegmentation's ``reduce_zero_label=True`` in ``mmseg/datasets/ade.py``). The labels
are used as they are: :func:`prepare` converts nothing, it checks every label (values 0..150) and writes the
lists ``{train,val}Images.txt`` / ``{train,val}Labels.txt`` in ``root``.

``CLASSES`` and ``PALETTE`` are mmsegmentation's (``mmseg/datasets/ade.py``, ``ADE20KDataset.METAINFO``), with
the trailing space of its ``'bed '`` dropped. They are the first name of each of the 150 entries of the
challenge's ``objectInfo150`` table.
"""
import logging
import os

import cv2
import numpy as np

from danet.data.prepare import PrepareSummary, fail, is_jpeg, run_jobs, write_lists
from danet.errors import UserError

logger = logging.getLogger(__name__)

FOLDER = "ADEChallengeData2016"
SPLITS = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}
NUM_RAW = 151  # raw values 0 ("other") .. 150

CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip

PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- preparation


def check_label(path):
    """Checks one annotation PNG (run in a worker process). Returns an error text or None."""
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        return f"cannot read {path} (truncated or not a PNG)"
    if label.ndim != 2 or label.dtype != np.uint8:
        return f"{path} is not a single-channel 8-bit label PNG (shape {label.shape}, {label.dtype})"
    top = int(label.max())
    if top >= NUM_RAW:
        bad = np.unique(label[label >= NUM_RAW])[:5].tolist()
        return f"{path} has values {', '.join(map(str, bad))} above {NUM_RAW - 1} (ADE20K labels are 0..150)"
    return None


def _scan_split(root, split, problems):
    """[(image_rel, label_rel)] of one split, sorted; missing or damaged files go to ``problems``."""
    sub, _ = SPLITS[split]
    image_dir = f"{FOLDER}/images/{sub}"
    names = sorted(n for n in os.listdir(os.path.join(root, image_dir)) if n.lower().endswith(".jpg"))
    if not names:
        problems.append(f"{image_dir} holds no .jpg images")
    pairs = []
    for name in names:
        image_rel, label_rel = f"{image_dir}/{name}", f"{FOLDER}/annotations/{sub}/{os.path.splitext(name)[0]}.png"
        if not is_jpeg(os.path.join(root, image_rel)):
            problems.append(f"{image_rel} is not a JPEG file (empty or damaged)")
        if not os.path.isfile(os.path.join(root, label_rel)):
            problems.append(f"{image_rel} has no annotation {label_rel}")
        pairs.append((image_rel, label_rel))
    return pairs


def _lists_exist(root, split):
    return all(os.path.isfile(os.path.join(root, f"{split}{kind}.txt")) for kind in ("Images", "Labels"))


def prepare(root, workers=1, force=False, progress=True):
    """Checks the download in ``root`` and writes the lists there (see the module docstring); a PrepareSummary.

    Labels are checked (read in ``workers`` processes) for the splits whose lists get written; a split whose
    lists are already there was checked when they were written and is only re-listed (``force`` rechecks).
    Raises UserError naming every missing or unreadable file and every label value above 150; no list is then
    written.
    """
    present = [s for s, (sub, _) in SPLITS.items() if os.path.isdir(os.path.join(root, FOLDER, "images", sub))]
    if not present:
        raise UserError(f"{root} has no {FOLDER}/images/training or /validation: unpack ADEChallengeData2016.zip "
                        f"into {root} (see dataset/README.md)")
    summary, problems, pairs = PrepareSummary(), [], {}
    for split in present:
        pairs[split] = _scan_split(root, split, problems)
        summary.images += len(pairs[split])
    if problems:
        fail(problems, root)
    checks = [os.path.join(root, label) for split in present if force or not _lists_exist(root, split)
              for _, label in pairs[split]]  # fmt: skip
    summary.labels_skipped = summary.images  # ADE20K's labels are read as they are: nothing to convert
    logger.info("%d ADE20K images in %s; labels need no conversion, %d to check (values 0..150)%s", summary.images,
                root, len(checks), "" if len(checks) == summary.images else "; the others were checked when their "
                "lists were written")  # fmt: skip
    errors = run_jobs(checks, workers, progress, convert=check_label, desc="checking ADE20K labels")
    if errors:
        fail(errors, root)
    for split in present:
        write_lists(root, split, pairs[split], force, summary)
    if not checks and not summary.lists_written:
        logger.info("%s is prepared already: nothing to do (--force rechecks the labels and rewrites the lists)", root)
    return summary


# ---------------------------------------------------------------------------------------- synthetic copy

# What the synthetic scenes draw (raw labels = train id + 1) and the base colour (RGB) of each: same class,
# same colour family, so a model can learn a little from a few images.
OTHER, WALL, BUILDING, SKY, FLOOR, TREE, PERSON, CAR = 0, 1, 2, 3, 4, 5, 13, 21
_DRAWN = {OTHER: (40, 40, 40), WALL: (200, 190, 170), BUILDING: (150, 90, 70), SKY: (110, 170, 235),
          FLOOR: (120, 100, 80), TREE: (40, 130, 40), PERSON: (230, 160, 130), CAR: (200, 30, 40)}  # fmt: skip


def _ade_scene(rng, height, width):
    """(uint8 RGB image, uint8 raw label) of one indoor-or-outdoor scene made of a few flat shapes."""
    label = np.empty((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.6))
    outdoor = rng.random() < 0.5
    label[:horizon], label[horizon:] = (SKY if outdoor else WALL), FLOOR
    if outdoor:
        x = int(rng.integers(0, width // 2))
        label[int(horizon * rng.uniform(0.2, 0.6)):horizon, x:x + width // 3] = BUILDING
        cv2.circle(label, (int(rng.integers(0, width)), horizon), int(height * 0.2), TREE, -1)
    x, y = int(rng.integers(4, width - 20)), int(rng.integers(horizon, height - 6))
    cv2.rectangle(label, (x, y - height // 8), (x + width // 5, y), CAR, -1)
    px, py = int(rng.integers(4, width - 8)), int(rng.integers(horizon, height - 2))
    cv2.ellipse(label, (px, py - height // 6), (max(2, width // 40), height // 6), 0, 0, 360, PERSON, -1)
    ox, oy = int(rng.integers(0, width - 6)), int(rng.integers(0, height - 6))
    label[oy:oy + 5, ox:ox + 6] = OTHER  # unlabelled clutter, as real annotations have
    colours = np.zeros((256, 3), np.float32)
    for raw, base in _DRAWN.items():
        colours[raw] = np.clip(np.array(base) + rng.uniform(-20, 20, 3), 0, 255)
    image = colours[label] + rng.normal(0, 6, (height, width, 3))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


def make_synthetic(root, num_train=4, num_val=2, height=64, width=96, seed=0):
    """Writes a tiny copy of the official layout (see the module docstring) under ``root``; returns ``root``.

    Deterministic: the same arguments give the same files. Uses the raw labels 0 (other), 1 wall, 2 building,
    3 sky, 4 floor, 5 tree, 13 person and 21 car. No lists are written: that is :func:`prepare`'s job.
    """
    if min(height, width) < 32 or num_train < 1 or num_val < 1:
        raise UserError(f"a synthetic ADE20K set needs >= 1 train and val image of >= 32x32 (got {num_train}, "
                        f"{num_val}, {height}x{width})")
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        sub, prefix = SPLITS[split]
        for index in range(count):
            image, label = _ade_scene(np.random.default_rng([seed, split_index, index]), height, width)
            stem = f"{prefix}_{index + 1:08d}"
            _write(os.path.join(root, FOLDER, "images", sub, stem + ".jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            _write(os.path.join(root, FOLDER, "annotations", sub, stem + ".png"), label)
    logger.info("wrote a synthetic ADE20K copy (%d train + %d val, %dx%d) to %s", num_train, num_val, height,
                width, root)
    return root


def _write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array):
        raise UserError(f"cannot write {path}; check the folder is writable and the disk not full")
