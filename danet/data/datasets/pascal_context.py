"""Pascal Context: the 59 classes (+ background), conversion of the official ``.mat`` labels, a synthetic copy.

What was read, and what follows from it:

- The official annotations (Mottaghi et al., CVPR 2014; https://cs.stanford.edu/~roozbeh/pascal-context/):
  ``trainval.tar.gz`` holds ``trainval/<id>.mat``, whose ``LabelMap`` (uint16) numbers each pixel with one of
  the 459 classes of ``labels.txt`` (``1: accordion`` .. ``459: wool``); ``59_labels.txt`` names the 59
  classes of the usual task. The 459 names below are copied from NVlabs/ODISE
  ``odise/data/datasets/openseg_labels/pascal_context_459.txt``. Its ``datasets/prepare_pascal_ctx_full_sem_seg.py``
  shows that ``LabelMap`` is uint16.
- The route followed, by class name through those two files: shelhamer/fcn.berkeleyvision.org
  ``pascalcontext_layers.py``. Pixels of the other 400 classes become 0 (background), like unlabelled ones.
  Three names differ between the files (``59_labels.txt`` says "diningtable", "bedcloth" and "clothes" where
  ``labels.txt`` says "table", "bedclothes" and "cloth"). The split is VOC2010 ``ImageSets/Main/{train,val}.txt``
  (4998 / 5105 images). The Detail API json route (mmsegmentation ``tools/dataset_converters/pascal_context.py``,
  PaddleSeg ``tools/convert_voc2010.py``) is not used: it needs an extra package and a separate download.
- The train-id order is alphabetical (0 = background), as in the converters built on the Detail API: they map the
  same 59 ids of ``labels.txt`` through a sorted table. See junfu1115/DANet ``encoding/datasets/pcontext.py``
  (DANet's own code), the mmsegmentation converter above (whose order is alphabetical, open-mmlab/mmsegmentation
  issue #3021) and PaddleSeg's. Weights trained there therefore number the classes as here. The
  VOC-classes-first order of ``59_labels.txt`` itself is not used: the table is built by name.

Layout (``root`` = ``<data_folder>/pascal_context``)::

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg             VOCtrainval_03-May-2010.tar
    VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt  (same tar) the split
    trainval/<id>.mat  labels.txt  59_labels.txt      the Context download (or inside VOCdevkit/VOC2010/)
    labels_59/<id>.png                                written: 0 = background, 1..59 = CLASSES[1:]
    {train,val}Images.txt  {train,val}Labels.txt      written

The ``pascal_context`` preset ignores 0 and trains 59 classes; ``pascal_context_60`` keeps background as a class.
"""
import logging
import os

import cv2
import numpy as np

from danet.data.prepare import LabelPlan, one_line
from danet.errors import UserError

logger = logging.getLogger(__name__)

CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)  # fmt: skip
PALETTE = None  # no official colours: the preset makes fixed ones

# 59_labels.txt in its own (official) order, with its own spelling; ALIASES gives the labels.txt spelling.
LABELS_59 = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor", "bag", "bed", "bench",
    "book", "building", "cabinet", "ceiling", "clothes", "computer", "cup", "door", "fence", "floor", "flower",
    "food", "grass", "ground", "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign", "plate",
    "road", "rock", "shelves", "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall", "water",
    "window", "wood",
)  # fmt: skip
ALIASES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}

# labels.txt: LABELS_459[i - 1] is class i.
LABELS_459 = (
    "accordion", "aeroplane", "air conditioner", "antenna", "artillery", "ashtray", "atrium", "baby carriage", "bag",
    "ball", "balloon", "bamboo weaving", "barrel", "baseball bat", "basket", "basketball backboard", "bathtub",
    "bed", "bedclothes", "beer", "bell", "bench", "bicycle", "binoculars", "bird", "bird cage", "bird feeder",
    "bird nest", "blackboard", "board", "boat", "bone", "book", "bottle", "bottle opener", "bowl", "box",
    "bracelet", "brick", "bridge", "broom", "brush", "bucket", "building", "bus", "cabinet", "cabinet door", "cage",
    "cake", "calculator", "calendar", "camel", "camera", "camera lens", "can", "candle", "candle holder", "cap",
    "car", "card", "cart", "case", "casette recorder", "cash register", "cat", "cd", "cd player", "ceiling",
    "cell phone", "cello", "chain", "chair", "chessboard", "chicken", "chopstick", "clip", "clippers", "clock",
    "closet", "cloth", "clothes tree", "coffee", "coffee machine", "comb", "computer", "concrete", "cone",
    "container", "control booth", "controller", "cooker", "copying machine", "coral", "cork", "corkscrew",
    "counter", "court", "cow", "crabstick", "crane", "crate", "cross", "crutch", "cup", "curtain", "cushion",
    "cutting board", "dais", "disc", "disc case", "dishwasher", "dock", "dog", "dolphin", "door", "drainer", "dray",
    "drink dispenser", "drinking machine", "drop", "drug", "drum", "drum kit", "duck", "dumbbell", "earphone",
    "earrings", "egg", "electric fan", "electric iron", "electric pot", "electric saw", "electronic keyboard",
    "engine", "envelope", "equipment", "escalator", "exhibition booth", "extinguisher", "eyeglass", "fan",
    "faucet", "fax machine", "fence", "ferris wheel", "fire extinguisher", "fire hydrant", "fire place", "fish",
    "fish tank", "fishbowl", "fishing net", "fishing pole", "flag", "flagstaff", "flame", "flashlight", "floor",
    "flower", "fly", "foam", "food", "footbridge", "forceps", "fork", "forklift", "fountain", "fox", "frame",
    "fridge", "frog", "fruit", "funnel", "furnace", "game controller", "game machine", "gas cylinder", "gas hood",
    "gas stove", "gift box", "glass", "glass marble", "globe", "glove", "goal", "grandstand", "grass", "gravestone",
    "ground", "guardrail", "guitar", "gun", "hammer", "hand cart", "handle", "handrail", "hanger",
    "hard disk drive", "hat", "hay", "headphone", "heater", "helicopter", "helmet", "holder", "hook", "horse",
    "horse-drawn carriage", "hot-air balloon", "hydrovalve", "ice", "inflator pump", "ipod", "iron",
    "ironing board", "jar", "kart", "kettle", "key", "keyboard", "kitchen range", "kite", "knife", "knife block",
    "ladder", "ladder truck", "ladle", "laptop", "leaves", "lid", "life buoy", "light", "light bulb", "lighter",
    "line", "lion", "lobster", "lock", "machine", "mailbox", "mannequin", "map", "mask", "mat", "match book",
    "mattress", "menu", "metal", "meter box", "microphone", "microwave", "mirror", "missile", "model", "money",
    "monkey", "mop", "motorbike", "mountain", "mouse", "mouse pad", "musical instrument", "napkin", "net",
    "newspaper", "oar", "ornament", "outlet", "oven", "oxygen bottle", "pack", "pan", "paper", "paper box",
    "paper cutter", "parachute", "parasol", "parterre", "patio", "pelage", "pen", "pen container", "pencil",
    "person", "photo", "piano", "picture", "pig", "pillar", "pillow", "pipe", "pitcher", "plant", "plastic",
    "plate", "platform", "player", "playground", "pliers", "plume", "poker", "poker chip", "pole", "pool table",
    "postcard", "poster", "pot", "pottedplant", "printer", "projector", "pumpkin", "rabbit", "racket", "radiator",
    "radio", "rail", "rake", "ramp", "range hood", "receiver", "recorder", "recreational machines",
    "remote control", "road", "robot", "rock", "rocket", "rocking horse", "rope", "rug", "ruler", "runway",
    "saddle", "sand", "saw", "scale", "scanner", "scissors", "scoop", "screen", "screwdriver", "sculpture",
    "scythe", "sewer", "sewing machine", "shed", "sheep", "shell", "shelves", "shoe", "shopping cart", "shovel",
    "sidecar", "sidewalk", "sign", "signal light", "sink", "skateboard", "ski", "sky", "sled", "slippers", "smoke",
    "snail", "snake", "snow", "snowmobiles", "sofa", "spanner", "spatula", "speaker", "speed bump",
    "spice container", "spoon", "sprayer", "squirrel", "stage", "stair", "stapler", "stick", "sticky note",
    "stone", "stool", "stove", "straw", "stretcher", "sun", "sunglass", "sunshade", "surveillance camera", "swan",
    "sweeper", "swim ring", "swimming pool", "swing", "switch", "table", "tableware", "tank", "tap", "tape", "tarp",
    "telephone", "telephone booth", "tent", "tire", "toaster", "toilet", "tong", "tool", "toothbrush", "towel",
    "toy", "toy car", "track", "train", "trampoline", "trash bin", "tray", "tree", "tricycle", "tripod", "trophy",
    "truck", "tube", "turtle", "tvmonitor", "tweezers", "typewriter", "umbrella", "unknown", "vacuum cleaner",
    "vending machine", "video camera", "video game console", "video player", "video tape", "violin", "wakeboard",
    "wall", "wallet", "wardrobe", "washing machine", "watch", "water", "water dispenser", "water pipe",
    "water skate board", "watermelon", "whale", "wharf", "wheel", "wheelchair", "window", "window blinds",
    "wineglass", "wire", "wood", "wool",
)  # fmt: skip

VOC = "VOCdevkit/VOC2010"
SPLITS = ("train", "val")
OUT_DIR = "labels_59"


def _key(name):
    """Names compare without spaces, as FCN's loader does."""
    return name.replace(" ", "").strip()


def read_names(path):
    """``{index: name}`` of an ``index: name`` file (labels.txt, 59_labels.txt)."""
    names = {}
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            index, _, name = line.partition(":")
            if not index.strip().isdigit() or not name.strip():
                raise UserError(f"{path} line {number}: expected 'index: name', found {line.strip()!r}")
            names[int(index)] = name.strip()
    return names


def build_lut(labels_txt, labels_59_txt):
    """uint8 ``[max id + 1]``: a ``labels.txt`` id -> its index in CLASSES (1..59), 0 for every other class.

    The 59 classes are found by name (``59_labels.txt`` spelling through ALIASES), so the file's order does not matter.
    """
    by_name = {_key(name): index for index, name in read_names(labels_txt).items()}
    task = [ALIASES.get(_key(n), _key(n)) for n in read_names(labels_59_txt).values()]
    if sorted(task) != sorted(CLASSES[1:]):
        odd = sorted(set(task) ^ set(CLASSES[1:]))
        raise UserError(f"{labels_59_txt} does not name the 59 Pascal Context classes (differs in {odd}); use the "
                        "official file")
    missing = [name for name in task if name not in by_name]
    if missing:
        raise UserError(f"{labels_txt} has no class {', '.join(missing)}; use the official 459-class labels.txt")
    lut = np.zeros(max(by_name.values()) + 1, np.uint8)  # 0: unlabelled and the other 400 classes -> background
    for name in task:
        lut[by_name[name]] = CLASSES.index(name)
    return lut


def convert_mat(job):
    """Writes the 60-class PNG of one ``(mat, image, png, lut)``. Returns an error text or None."""
    src, image, dst, lut = job
    try:
        from scipy.io import loadmat

        ids = loadmat(src, variable_names=["LabelMap"]).get("LabelMap")
    except Exception as e:  # truncated or not a .mat: any reader error is this file's problem
        return f"cannot read {src} ({type(e).__name__}: {e})"
    if ids is None or ids.ndim != 2:
        return f"{src} has no 2-D LabelMap"
    if ids.dtype.kind == "f" and np.array_equal(ids, np.round(ids)):  # the official files are uint16; accept doubles
        ids = ids.astype(np.int64)
    if ids.dtype.kind not in "iu":
        return f"{src}: LabelMap holds {ids.dtype} values, not class ids"
    bad = np.unique(ids[(ids < 0) | (ids >= len(lut))]).tolist()
    if bad:
        return f"{src} has class ids {bad[:8]} outside 0..{len(lut) - 1} of labels.txt"
    return write_label(dst, lut[ids], image)


def write_label(dst, label, image):
    """Writes a uint8 label PNG atomically after checking its size against the image (header only)."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            width, height = im.size
    except Exception as e:
        return f"cannot read {image} ({type(e).__name__}: {e})"
    if label.shape != (height, width):
        return f"label of {image} is {label.shape[1]}x{label.shape[0]} but the image is {width}x{height}"
    ok, png = cv2.imencode(".png", np.ascontiguousarray(label))
    if not ok:
        return f"cannot encode {dst}"
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst + ".tmp", "wb") as f:
        f.write(png.tobytes())
    os.replace(dst + ".tmp", dst)  # a crash never leaves a half-written label behind
    return None


def need_scipy():
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        raise UserError("reading .mat labels needs scipy: pip install scipy") from None


def _find(root, name):
    """``name`` or ``VOCdevkit/VOC2010/<name>`` (where ODISE's instructions unpack it), whichever exists; else None."""
    return next((rel for rel in (name, f"{VOC}/{name}") if os.path.exists(os.path.join(root, rel))), None)


def _scan(root, mat_dir, lut, force):
    """Plans the conversion: a :class:`~danet.data.prepare.LabelPlan` of the listed images."""
    plan = LabelPlan(root, force)
    for split in SPLITS:
        list_rel = f"{VOC}/ImageSets/Main/{split}.txt"
        if not os.path.isfile(os.path.join(root, list_rel)):
            plan.problems.append(f"{list_rel} is missing (from VOCtrainval_03-May-2010.tar)")
            continue
        with open(os.path.join(root, list_rel), encoding="utf-8-sig") as f:
            ids = sorted({line.split()[0] for line in f if line.strip()})
        plan.pairs[split] = []
        for image_id in ids:
            mat_rel = f"{mat_dir}/{image_id}.mat"
            plan.add(split, f"{VOC}/JPEGImages/{image_id}.jpg", mat_rel, f"{OUT_DIR}/{image_id}.png", (lut,),
                     f"{mat_rel} is missing ({list_rel} lists {image_id})")
    return plan


def prepare(root, workers=1, force=False, progress=True):
    """Converts ``trainval/*.mat`` to ``labels_59/*.png`` and writes the lists (see the module docstring).

    Raises one UserError naming every missing or unreadable file; lists are then not written (and, when a file
    is missing, nothing is converted). Up-to-date labels are skipped unless ``force``.
    """
    need_scipy()
    found = {name: _find(root, name) for name in ("trainval", "labels.txt", "59_labels.txt")}
    missing = [f"{name} is missing (from https://cs.stanford.edu/~roozbeh/pascal-context/)"
               for name, rel in found.items() if rel is None]
    if not os.path.isdir(os.path.join(root, VOC, "JPEGImages")):
        missing.append(f"{VOC}/JPEGImages is missing (from VOCtrainval_03-May-2010.tar)")
    if missing:
        raise UserError(one_line(missing, root))
    lut = build_lut(os.path.join(root, found["labels.txt"]), os.path.join(root, found["59_labels.txt"]))
    return _scan(root, found["trainval"], lut, force).run(workers, progress, convert_mat, "LabelMap -> 59 classes")


def _scene(rng, height, width):
    """uint8 BGR image and uint16 LabelMap: sky over ground, a table, a tv monitor, cloth, bedclothes, an
    accordion and wool (two of the 400 other classes), an unlabelled strip. One colour per class, plus noise."""
    ids = np.full((height, width), 360, np.uint16)  # sky
    ids[height // 2:] = 189  # ground
    ids[: height // 6, -width // 5:] = 1  # accordion
    ids[height // 6: height // 3, -width // 5:] = 459  # wool
    x, y = int(rng.integers(0, width // 2)), int(rng.integers(height // 4, height // 2))
    ids[y:y + height // 4, x:x + width // 3] = 397  # table
    ids[-height // 6:, : width // 4] = 80  # cloth
    ids[-height // 6:, width // 4: width // 2] = 19  # bedclothes
    cv2.circle(ids, (int(rng.integers(10, width - 10)), int(rng.integers(8, height // 2))), 6, 427, -1)
    ids[:, :2] = 0  # unlabelled
    colours = np.random.default_rng(459).integers(0, 256, (460, 3), dtype=np.uint8)
    noise = rng.integers(0, 12, (height, width, 3), dtype=np.uint8)
    return cv2.add(colours[ids], noise), ids


def make_synthetic(root, num_train=4, num_val=2, height=64, width=96, seed=0):
    """A tiny copy of the official download under ``root`` (the data set folder), returned.

    Ids ``2008_000002``...; ``labels.txt`` and ``59_labels.txt`` in full; ``LabelMap`` in 459-class ids.
    Same arguments -> the same labels and images.
    """
    from scipy.io import savemat

    ids = [f"2008_{2 + i:06d}" for i in range(num_train + num_val)]
    split_dir = os.path.join(root, VOC, "ImageSets", "Main")
    for folder in (os.path.join(root, VOC, "JPEGImages"), os.path.join(root, "trainval"), split_dir):
        os.makedirs(folder, exist_ok=True)
    for index, image_id in enumerate(ids):
        image, label_map = _scene(np.random.default_rng([seed, index]), height, width)
        cv2.imwrite(os.path.join(root, VOC, "JPEGImages", f"{image_id}.jpg"), image)
        savemat(os.path.join(root, "trainval", f"{image_id}.mat"), {"LabelMap": label_map})
    for split, split_ids in (("train", ids[:num_train]), ("val", ids[num_train:])):
        with open(os.path.join(split_dir, f"{split}.txt"), "w") as f:
            f.writelines(i + "\n" for i in split_ids)
    for name, names in (("labels.txt", LABELS_459), ("59_labels.txt", LABELS_59)):
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{i}: {n}\n" for i, n in enumerate(names, 1))
    return root
