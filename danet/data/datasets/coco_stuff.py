"""COCO-Stuff 10k and 164k: the 171 classes, the official id remapping, label conversion, a synthetic copy.

What was read, and what follows from it:

- nightrome/cocostuff ``labels.txt`` and ``README.md``: ids 1..182 name 91 thing and 91 stuff classes, and 0 is
  "unlabeled". Eleven thing ids have no annotations (street sign 12, hat 26, shoe 29, eye glasses 30, plate 45,
  mirror 66, window 68, desk 69, door 71, blender 83, hair brush 91), which leaves 171 classes.
  The 164k ``stuffthingmaps_trainval2017.zip`` PNGs store ``id - 1`` (0..181) and 255 for unlabeled.
  The setup there unpacks the images to ``images/{train2017,val2017}/`` and the maps to ``annotations/``.
- nightrome/cocostuff10k: ``cocostuff-10k-v1.1.zip`` holds ``images/*.jpg``, ``annotations/*.mat`` and
  ``imageLists/{train,test,all}.txt`` (9k / 1k). The ``S`` of a ``.mat`` uses the ids of ``labels.txt``
  ("label indices start from 1", 0 = unlabeled).
- open-mmlab/mmsegmentation ``tools/dataset_converters/coco_stuff10k.py`` / ``coco_stuff164k.py``
  (``clsID_to_trID``), ``configs/_base_/datasets/coco-stuff10k.py`` (``reduce_zero_label=True``) and
  ``mmseg/datasets/coco_stuff.py`` (CLASSES):
  - 10k: the 1-based ids of the 171 classes become 1..171; mmseg then drops 0 and shifts the rest down.
  - 164k: the 0-based ids become 0..170, and 255 stays.
  Both end as train ids 0..170 in the official order, with 255 ignored.
  TEN_K_LUT and ONE_SIXTY_FOUR_K_LUT do this in one step; the tests check them entry by entry against those tables.
  The 11 unannotated ids map to 255 (mmseg would leave them unmapped). Ids beyond the table are reported as errors.

Layouts (``root`` = ``<data_folder>/coco_stuff``); the variant is told by ``imageLists/``::

    10k:  images/<stem>.jpg  annotations/<stem>.mat  imageLists/{train,test}.txt   (test is our val)
    164k: images/{train2017,val2017}/<stem>.jpg  annotations/{train2017,val2017}/<stem>.png
          (also found: train2017/, val2017/ and stuffthingmaps_trainval2017/{train2017,val2017}/ in root)
    written: labels_171/[<split dir>/]<stem>.png (0..170, 255) and {train,val}Images.txt / {train,val}Labels.txt
"""
import logging
import os

import cv2
import numpy as np

from danet.data.datasets.pascal_context import need_scipy, write_label
from danet.data.prepare import LabelPlan
from danet.errors import UserError

logger = logging.getLogger(__name__)

# nightrome/cocostuff labels.txt: LABELS_182[i] is official id i (0 = unlabeled).
LABELS_182 = (
    "unlabeled", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe",
    "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass",
    "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table",
    "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", "hair brush", "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass",
    "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other", "table",
    "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other",
    "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)  # fmt: skip
UNANNOTATED = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
_KEPT = np.array([i for i in range(1, len(LABELS_182)) if i not in UNANNOTATED])  # official ids, train-id order

CLASSES = tuple(LABELS_182[i] for i in _KEPT)  # the 171 names, as mmseg's COCOStuffDataset.CLASSES
PALETTE = None  # no official colours: the preset makes fixed ones


def _tables(ids, valid_ids):
    """(uint8 [256] raw -> train id or 255, bool [256] raw values the files may hold)."""
    lut, valid = np.full(256, 255, np.uint8), np.zeros(256, bool)
    lut[ids] = np.arange(len(ids))
    valid[list(valid_ids)] = True
    return lut, valid


# 10k .mat: 0 unlabeled, 1..182 official ids. 164k PNG: official id - 1 (0..181), 255 unlabeled.
TEN_K_LUT, TEN_K_VALID = _tables(_KEPT, range(183))
ONE_SIXTY_FOUR_K_LUT, ONE_SIXTY_FOUR_K_VALID = _tables(_KEPT - 1, [*range(182), 255])
TABLES = {"10k": (TEN_K_LUT, TEN_K_VALID), "164k": (ONE_SIXTY_FOUR_K_LUT, ONE_SIXTY_FOUR_K_VALID)}
OUT_DIR = "labels_171"
SPLITS_164K = {"train": "train2017", "val": "val2017"}


def _read_raw(src):
    """(raw label [H, W], None) from a 10k ``.mat`` (``S``) or a 164k PNG, or (None, error text)."""
    try:
        if src.endswith(".mat"):
            from scipy.io import loadmat

            raw = loadmat(src, variable_names=["S"]).get("S")
        else:
            from PIL import Image

            with Image.open(src) as im:
                if im.mode not in ("L", "P"):
                    return None, f"{src} is a {im.mode} image, not an 8-bit stuffthingmap"
                raw = np.asarray(im)
    except Exception as e:  # truncated or of another format: any reader error is this file's problem
        return None, f"cannot read {src} ({type(e).__name__}: {e})"
    if raw is None or raw.ndim != 2:
        return None, f"{src} has no 2-D label map S"
    return raw, None


def convert_label(job):
    """Writes the 0..170 / 255 PNG of one ``(raw label, image, png, variant)``. Returns an error text or None."""
    src, image, dst, variant = job
    raw, error = _read_raw(src)
    if error:
        return error
    lut, valid = TABLES[variant]
    if raw.dtype.kind == "f" and np.array_equal(raw, np.round(raw)):
        raw = raw.astype(np.int64)
    if raw.dtype.kind not in "iu":
        return f"{src} holds {raw.dtype} values, not class ids"
    values = np.unique(raw)
    bad = [int(v) for v in values if not 0 <= v < 256 or not valid[v]]
    if bad:
        allowed = "0..182" if variant == "10k" else "0..181 and 255"
        return f"{src} has ids {bad[:8]} outside {allowed} of COCO-Stuff {variant}"
    return write_label(dst, lut[raw.astype(np.uint8)], image)


def _find_dir(root, *candidates):
    return next((c for c in candidates if os.path.isdir(os.path.join(root, c))), None)


def _plan_10k(root):
    """{split: [(image_rel, raw_rel, label_rel)]} of the 10k layout, and the problems found."""
    plan, problems = {}, []
    for split, list_name in (("train", "train"), ("val", "test")):
        list_rel = f"imageLists/{list_name}.txt"
        if not os.path.isfile(os.path.join(root, list_rel)):
            problems.append(f"{list_rel} is missing (from cocostuff-10k-v1.1.zip)")
            continue
        with open(os.path.join(root, list_rel), encoding="utf-8-sig") as f:
            stems = sorted({os.path.splitext(line.split()[0])[0] for line in f if line.strip()})
        plan[split] = [(f"images/{s}.jpg", f"annotations/{s}.mat", f"{OUT_DIR}/{s}.png") for s in stems]
    return plan, problems


def _plan_164k(root):
    """The same for the 164k layout: every image of train2017/val2017 needs its stuffthingmap."""
    plan, problems = {}, []
    for split, folder in SPLITS_164K.items():
        images = _find_dir(root, f"images/{folder}", folder)
        labels = _find_dir(root, f"annotations/{folder}", f"stuffthingmaps_trainval2017/{folder}")
        if images is None or labels is None:
            problems.append(f"no {folder} {'images' if images is None else 'stuffthingmaps'} folder")
            continue
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(root, images)) if n.endswith(".jpg"))
        plan[split] = [(f"{images}/{s}.jpg", f"{labels}/{s}.png", f"{OUT_DIR}/{folder}/{s}.png") for s in stems]
    return plan, problems


def detect_variant(root):
    """"10k" (``imageLists/`` is there) or "164k" (a ``train2017``/``val2017`` label folder is); else UserError."""
    if os.path.isdir(os.path.join(root, "imageLists")):
        return "10k"
    if _find_dir(root, *(f"{a}/{s}" for a in ("annotations", "stuffthingmaps_trainval2017") for s in
                         SPLITS_164K.values())):
        return "164k"
    raise UserError(f"{root} holds neither COCO-Stuff 10k (images/, annotations/*.mat, imageLists/) nor 164k "
                    "(images/{train2017,val2017}/, annotations/{train2017,val2017}/*.png); see dataset/README.md")


def _scan(root, variant, force):
    samples, problems = (_plan_10k if variant == "10k" else _plan_164k)(root)
    plan = LabelPlan(root, force)
    plan.problems += problems
    for split, split_samples in samples.items():
        plan.pairs[split] = []
        for image_rel, raw_rel, label_rel in split_samples:
            missing = f"{raw_rel} is missing (the label of {image_rel})"
            plan.add(split, image_rel, raw_rel, label_rel, (variant,), missing)
    return plan


def prepare(root, workers=1, force=False, progress=True):
    """Remaps the labels of a 10k or 164k download to ``labels_171/`` and writes the lists (module docstring).

    Raises one UserError naming every missing or unreadable file; lists are then not written (and, when a file
    is missing, nothing is converted). Up-to-date labels are skipped unless ``force``.
    """
    variant = detect_variant(root)
    if variant == "10k":
        need_scipy()
    return _scan(root, variant, force).run(workers, progress, convert_label, f"COCO-Stuff {variant} -> 171",
                                           f"COCO-Stuff {variant}: ")


def _scene(rng, height, width):
    """uint8 BGR image and official 1-based ids: sky-other over grass, a person, a car, a stop sign, a wooden
    board, a street sign (unannotated id) and an unlabeled strip. One colour per class, plus noise."""
    ids = np.full((height, width), 157, np.uint8)  # sky-other
    ids[height // 2:] = 124  # grass
    x = int(rng.integers(0, width - width // 6))
    ids[height // 4: height - 4, x: x + width // 6] = 1  # person
    ids[height // 2 + 4: height - 6, : width // 3] = 3  # car
    cv2.circle(ids, (int(rng.integers(8, width - 8)), height // 5), 5, 13, -1)  # stop sign
    ids[-4:, width // 2:] = 182  # wood
    ids[: height // 8, : width // 8] = 12  # street sign
    ids[:, -2:] = 0  # unlabeled
    colours = np.random.default_rng(182).integers(0, 256, (256, 3), dtype=np.uint8)
    noise = rng.integers(0, 12, (height, width, 3), dtype=np.uint8)
    return cv2.add(colours[ids], noise), ids


def make_synthetic(root, num_train=4, num_val=2, height=64, width=96, seed=0, variant="10k"):
    """A tiny copy of the official 10k or 164k download under ``root`` (the data set folder), returned.

    10k: ``.mat`` files with ``S`` in official ids and ``imageLists/``; 164k: 2017-style stems and stuffthingmap
    PNGs (``id - 1``, 255 unlabeled). Same arguments -> the same labels and images.
    """
    if variant not in TABLES:
        raise UserError(f"COCO-Stuff variant {variant!r}: choose 10k or 164k")
    stems = {"train": [], "val": []}
    for index, split in enumerate(["train"] * num_train + ["val"] * num_val):
        image, ids = _scene(np.random.default_rng([seed, index]), height, width)
        if variant == "10k":
            stem = f"COCO_train2014_{index + 1:012d}"
            _write(root, f"images/{stem}.jpg", image)
            os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
            from scipy.io import savemat

            savemat(os.path.join(root, "annotations", f"{stem}.mat"), {"S": ids})
        else:
            stem, folder = f"{100 * index + 9:012d}", SPLITS_164K[split]
            _write(root, f"images/{folder}/{stem}.jpg", image)
            _write(root, f"annotations/{folder}/{stem}.png", (ids.astype(np.int16) - 1).astype(np.uint8))  # 0->255
        stems[split].append(stem)
    if variant == "10k":
        os.makedirs(os.path.join(root, "imageLists"), exist_ok=True)
        for name, listed in (("train", stems["train"]), ("test", stems["val"]), ("all", stems["train"] + stems["val"])):
            with open(os.path.join(root, "imageLists", f"{name}.txt"), "w") as f:
                f.writelines(s + "\n" for s in listed)
    return root


def _write(root, rel, array):
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    if not cv2.imwrite(os.path.join(root, rel), array):
        raise UserError(f"cannot write {os.path.join(root, rel)}; check the folder is writable and the disk not full")
