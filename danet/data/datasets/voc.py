"""PASCAL VOC 2012 segmentation (+ SBD, the "aug" train set): 21 classes, names, palette, lists.

Official layouts, unpacked into ``root`` (the data set folder, ``<data_folder>/voc``)::

    VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg                    (VOCtrainval_11-May-2012.tar)
    VOCdevkit/VOC2012/SegmentationClass/2007_000032.png             palette PNG: indices 0..20, 255 = boundary
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    benchmark_RELEASE/dataset/{img/*.jpg, cls/*.mat, train.txt, val.txt}   optional (SBD's benchmark.tgz)

SBD may also sit at ``VOCdevkit/VOCaug/dataset`` (mmsegmentation's name, ``docs/en/user_guides/
2_dataset_prepare.md``). VOC's palette PNGs are read as indices by the reader, so they are used as they are.
SBD's ``cls/<name>.mat`` hold ``GTcls.Segmentation`` (0..20, no boundary); :func:`prepare` writes each as
``root/SegmentationClassAug/<name>.png``, as mmsegmentation's ``tools/dataset_converters/voc_aug.py`` does
(``loadmat(f)['GTcls'][0]['Segmentation'][0]`` saved as a uint8 PNG; torchvision's ``datasets/sbd.py`` reads
the same field).

The train list is then the aug set of voc_aug.py: (VOC train + SBD train + SBD val) minus VOC val, 10,582
images with the official downloads. Its mmsegmentation config (``configs/_base_/datasets/pascal_voc12_aug.py``)
reads the VOC train images with ``SegmentationClass`` labels and the others (``aug.txt`` = SBD minus VOC
train and val) with ``SegmentationClassAug``: so does the list written here. Val is VOC val. Without SBD,
train is VOC train. Lists are sorted by image name.

``CLASSES``/``PALETTE``: mmsegmentation's ``mmseg/datasets/voc.py`` (``PascalVOCDataset``); the palette is VOC's
bit-interleaving colour map (the devkit's ``VOClabelcolormap.m``), which also gives 255 its (224, 224, 192).
"""
import io
import logging
import os

import cv2
import numpy as np

from danet.data.prepare import PrepareSummary, fail, run_jobs, stale, write_lists
from danet.errors import UserError

logger = logging.getLogger(__name__)

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def color_map(n=256):
    """VOC's colour map: bits 0, 1, 2 of the index go to the top bits of r, g, b, then bits 3, 4, 5, ..."""
    ids, cmap = np.arange(n), np.zeros((n, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            cmap[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return cmap.astype(np.uint8)


PALETTE = tuple(tuple(int(v) for v in colour) for colour in color_map(len(CLASSES)))

VOC = "VOCdevkit/VOC2012"
SBD_FOLDERS = ("benchmark_RELEASE/dataset", "VOCdevkit/VOCaug/dataset")
AUG = "SegmentationClassAug"
AUG_TRAIN_SIZE = 10582  # voc_aug.py's AUG_LEN: the aug train set of the official downloads
_SIGNATURES = {".jpg": b"\xff\xd8\xff", ".png": b"\x89PNG\r\n\x1a\n", ".mat": b"MATLAB"}
SCIPY_HINT = "reading SBD's .mat labels needs scipy: pip install scipy (or danet-paddle[sbd])"


# ----------------------------------------------------------------------------------------------- preparation


def convert_mat(job):
    """Writes SBD's ``GTcls.Segmentation`` of ``(mat_path, png_path)`` as a uint8 PNG (in a worker process).

    Returns an error text or None."""
    src, dst = job
    from scipy.io import loadmat

    try:
        seg = loadmat(src)["GTcls"][0]["Segmentation"][0]
    except Exception as e:  # a damaged .mat raises anything (OSError, zlib.error, ValueError, ...): name the file
        detail = (str(e).splitlines() or [""])[0][:80]
        return f"cannot read {src} (truncated or damaged: {type(e).__name__} {detail})"
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or (seg.max() > 20 and seg.max() != 255):
        return f"{src}: GTcls.Segmentation is not a 2-D map of 0..20 (shape {seg.shape}, {seg.dtype})"
    ok, png = cv2.imencode(".png", seg.astype(np.uint8))
    if not ok:
        return f"cannot encode {dst}"
    with open(dst + ".tmp", "wb") as f:
        f.write(png.tobytes())
    os.replace(dst + ".tmp", dst)  # a crash never leaves a half-written label behind
    return None


def _names(path, problems):
    """The image names of a split file (one per line), or [] with a problem if it is missing."""
    if not os.path.isfile(path):
        problems.append(f"{path} is missing")
        return []
    with open(path, encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip()]


def _need(root, rel, problems, what):
    """``rel`` if it exists and starts like its type, else None with a problem naming it."""
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        problems.append(f"{what}: {rel} is missing")
        return None
    with open(path, "rb") as f:
        if not f.read(8).startswith(_SIGNATURES[os.path.splitext(rel)[1]]):
            problems.append(f"{what}: {rel} is damaged (empty or not a {os.path.splitext(rel)[1]} file)")
    return rel


def _sbd_folder(root):
    return next((rel for rel in SBD_FOLDERS if os.path.isdir(os.path.join(root, rel))), None)


def _plan(root, force, summary, problems):
    """(train pairs, val pairs, .mat jobs, SBD folder or None): every file checked, problems collected."""
    split_dir = os.path.join(root, VOC, "ImageSets", "Segmentation")
    voc_train, voc_val = (_names(os.path.join(split_dir, f"{s}.txt"), problems) for s in ("train", "val"))
    pairs = {name: (_need(root, f"{VOC}/JPEGImages/{name}.jpg", problems, f"VOC {name}"),
                    _need(root, f"{VOC}/SegmentationClass/{name}.png", problems, f"VOC {name}"))
             for name in sorted(set(voc_train) | set(voc_val))}  # fmt: skip
    jobs, sbd = [], _sbd_folder(root)
    if sbd is not None:
        jobs = _plan_sbd(root, sbd, force, pairs, summary, problems)
    # The aug rule of voc_aug.py: (VOC train + SBD train + SBD val) - VOC val; pairs holds VOC's and SBD's names.
    train = sorted(set(pairs) - set(voc_val))
    summary.images = len(train) + len(voc_val)
    return [pairs[n] for n in train], [pairs[n] for n in sorted(voc_val)], jobs, sbd


def _plan_sbd(root, sbd, force, pairs, summary, problems):
    """Adds SBD's images that VOC does not label to ``pairs``; returns the .mat -> PNG jobs (all of SBD's, as
    voc_aug.py converts every ``cls/*.mat``; those already converted and newer than their .mat are skipped)."""
    listed = {name for split in ("train", "val") for name in _names(os.path.join(root, sbd, f"{split}.txt"), problems)}
    jobs, voc = [], set(pairs)
    for name in sorted(listed):
        mat = _need(root, f"{sbd}/cls/{name}.mat", problems, f"SBD {name}")
        job = (os.path.join(root, str(mat)), os.path.join(root, AUG, f"{name}.png"))
        if mat and (force or stale(*job)):
            jobs.append(job)
        elif mat:
            summary.labels_skipped += 1
        if name not in voc:  # VOC's own label wins where VOC has one (voc_aug.py's aug.txt leaves those out)
            image = f"{VOC}/JPEGImages/{name}.jpg"  # VOC2012's JPEGImages holds SBD's images too
            if not os.path.isfile(os.path.join(root, image)):
                image = f"{sbd}/img/{name}.jpg"
            pairs[name] = (_need(root, image, problems, f"SBD {name}"), f"{AUG}/{name}.png")
    return jobs


def prepare(root, workers=1, force=False, progress=True):
    """Converts SBD's labels (if SBD is there) and writes the lists in ``root`` (see the module docstring).

    Idempotent: up-to-date PNGs are skipped (``summary.labels_skipped``) unless ``force``. Raises UserError
    naming every missing or damaged file (before converting anything) or unreadable ``.mat``; no list is then
    written.
    """
    if not os.path.isdir(os.path.join(root, VOC)):
        raise UserError(f"{root} has no {VOC}: unpack VOCtrainval_11-May-2012.tar into {root} (and SBD's "
                        "benchmark.tgz for the aug train set; see dataset/README.md)")
    summary, problems = PrepareSummary(), []
    train, val, jobs, sbd = _plan(root, force, summary, problems)
    if problems:
        fail(problems, root)
    if jobs:
        try:
            import scipy.io  # noqa: F401
        except ImportError:
            raise UserError(SCIPY_HINT) from None
        os.makedirs(os.path.join(root, AUG), exist_ok=True)
    logger.info("VOC 2012 in %s%s: %d train, %d val images; %d SBD labels to convert, %d up to date", root,
                f" with SBD ({sbd})" if sbd else " (no SBD: train = VOC train)", len(train), len(val), len(jobs),
                summary.labels_skipped)  # fmt: skip
    if sbd and len(train) != AUG_TRAIN_SIZE:
        logger.info("the aug train set has %d images (%d with the official VOC 2012 and SBD downloads)", len(train),
                    AUG_TRAIN_SIZE)
    errors = run_jobs(jobs, workers, progress, convert=convert_mat, desc="SBD .mat -> PNG")
    summary.labels_written = len(jobs) - len(errors)
    if errors:
        fail(errors, root)
    write_lists(root, "train", train, force, summary)
    write_lists(root, "val", val, force, summary)
    if not jobs and not summary.lists_written:
        logger.info("%s is prepared already: nothing to do (--force converts and writes again)", root)
    return summary


# ---------------------------------------------------------------------------------------- synthetic copy

# What the synthetic images show (VOC indices) and the base colour (RGB) of each: same class, same colour family.
_DRAWN = {0: (90, 110, 80), 1: (210, 210, 225), 3: (190, 150, 40), 7: (200, 30, 40), 8: (150, 110, 70),
          15: (230, 170, 140)}  # fmt: skip
_KERNEL = np.ones((3, 3), np.uint8)


def _voc_scene(rng, height, width):
    """(uint8 RGB image, SBD label 0..20, VOC label: the same with a 255 band along object outlines)."""
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.choice(list(_DRAWN)[1:]))
        cx, cy = int(rng.integers(width // 5, width - width // 5)), int(rng.integers(height // 5, height - height // 5))
        ax, ay = int(rng.integers(width // 10, width // 4)), int(rng.integers(height // 10, height // 4))
        if rng.random() < 0.5:
            cv2.ellipse(label, (cx, cy), (ax, ay), 0, 0, 360, cls, -1)
        else:
            cv2.rectangle(label, (cx - ax, cy - ay), (cx + ax, cy + ay), cls, -1)
    colours = np.zeros((256, 3), np.float32)
    for cls, base in _DRAWN.items():
        colours[cls] = np.clip(np.array(base) + rng.uniform(-20, 20, 3), 0, 255)
    image = np.clip(colours[label] + rng.normal(0, 6, (height, width, 3)) + 0.5, 0, 255).astype(np.uint8)
    outline = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, _KERNEL) > 0  # VOC marks object outlines "void"
    return image, label, np.where(outline, np.uint8(255), label)


def _mat_bytes(seg):
    """An SBD-style ``cls/*.mat``: struct GTcls with Segmentation (uint8), Boundaries (20x1 cell of sparse
    logical edge maps, one per class) and CategoriesPresent (column of the 1-based classes shown)."""
    from scipy.io import savemat
    from scipy.sparse import csc_matrix

    boundaries = np.empty((20, 1), dtype=object)
    for cls in range(1, 21):
        edge = cv2.morphologyEx((seg == cls).astype(np.uint8), cv2.MORPH_GRADIENT, _KERNEL)
        boundaries[cls - 1, 0] = csc_matrix(edge.astype(bool))
    present = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    buffer = io.BytesIO()
    savemat(buffer, {"GTcls": {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}},
            do_compression=True)  # fmt: skip
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, synthetic SBD label (danet-paddle)".ljust(116)  # no date: same bytes
    return bytes(data)


def _synthetic_names(num_train, num_val):
    """VOC train, VOC val and SBD-only names, and SBD's train and val lists, which overlap VOC's on purpose."""
    voc = [f"2007_{32 + 10 * i:06d}" for i in range(num_train + num_val)]
    voc_train, voc_val = voc[:num_train], voc[num_train:]
    sbd_only = [f"2008_{51 + 10 * i:06d}" for i in range(num_train)]
    half = (num_train + 1) // 2
    sbd_train = voc_train[:half] + voc_val[:1] + sbd_only[:half]  # a VOC val image in SBD train: left out
    sbd_val = voc_train[-1:] + sbd_only[half:]
    return voc_train, voc_val, sbd_only, sbd_train, sbd_val


def make_synthetic(root, num_train=4, num_val=2, height=64, width=96, seed=0):
    """Writes a tiny copy of the VOC 2012 and SBD downloads (see the module docstring) under ``root``; returns it.

    Deterministic. VOC: ``num_train`` + ``num_val`` images with palette PNG labels; SBD: ``num_train`` images of
    its own plus some of VOC's (one of them a VOC val image), so the aug train set has ``2 * num_train``.
    """
    if min(height, width) < 32 or num_train < 1 or num_val < 1:
        raise UserError(f"a synthetic VOC set needs >= 1 train and val image of >= 32x32 (got {num_train}, "
                        f"{num_val}, {height}x{width})")
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        raise UserError(SCIPY_HINT) from None
    from PIL import Image

    voc_train, voc_val, sbd_only, sbd_train, sbd_val = _synthetic_names(num_train, num_val)
    sbd_dir, palette = os.path.join(root, SBD_FOLDERS[0]), color_map().ravel().tolist()
    for index, name in enumerate(voc_train + voc_val + sbd_only):
        image, sbd_label, voc_label = _voc_scene(np.random.default_rng([seed, index]), height, width)
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        _write(os.path.join(root, VOC, "JPEGImages", f"{name}.jpg"), jpeg.tobytes())
        if name not in sbd_only:
            png = Image.fromarray(voc_label)
            png.putpalette(palette)  # a palette PNG, as VOC's: the reader takes its indices
            os.makedirs(os.path.join(root, VOC, "SegmentationClass"), exist_ok=True)
            png.save(os.path.join(root, VOC, "SegmentationClass", f"{name}.png"))
        if name in sbd_train or name in sbd_val:
            _write(os.path.join(sbd_dir, "img", f"{name}.jpg"), jpeg.tobytes())
            _write(os.path.join(sbd_dir, "cls", f"{name}.mat"), _mat_bytes(sbd_label))
    sets = {"train": voc_train, "val": voc_val, "trainval": voc_train + voc_val}
    for split, names in sets.items():
        _write(os.path.join(root, VOC, "ImageSets", "Segmentation", f"{split}.txt"), _lines(names))
    _write(os.path.join(sbd_dir, "train.txt"), _lines(sbd_train))
    _write(os.path.join(sbd_dir, "val.txt"), _lines(sbd_val))
    logger.info("wrote a synthetic VOC 2012 + SBD copy (%d + %d VOC, %d SBD-only images, %dx%d) to %s", num_train,
                num_val, len(sbd_only), height, width, root)
    return root


def _lines(names):
    return "".join(f"{name}\n" for name in names).encode()


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
