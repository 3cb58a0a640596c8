"""Turn an official Cityscapes download into what :class:`~danet.data.cityscapes.SegDataset` reads.

Input (``root``)::

    leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<stem>_gtFine_labelIds.png

Output, next to the input: ``<stem>_gtFine_labelTrainIds.png`` (official labelId -> trainId mapping, everything
else 255) and the seed's lists ``{split}Images.txt`` / ``{split}Labels.txt`` (paths relative to ``root``, sorted).
A copy that already holds ``labelTrainIds`` files (e.g. AI Studio's) needs no conversion; lists already present
are kept and checked, missing ones are written. Up-to-date outputs are skipped unless ``force``.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import List

import cv2

from danet.data.cityscapes import LABEL_ID_TO_TRAIN_ID, read_list
from danet.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


@dataclass
class PrepareSummary:
    images: int = 0
    labels_written: int = 0
    labels_skipped: int = 0
    lists_written: List[str] = field(default_factory=list)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == _PNG_SIGNATURE


def _scan_split(root, split, force, summary, jobs, problems):
    """Plans one split. Returns [(image_rel, label_rel or None)], sorted by image path."""
    image_dir = os.path.join(root, "leftImg8bit", split)
    has_labels = os.path.isdir(os.path.join(root, "gtFine", split))
    pairs = []
    cities = [c for c in sorted(os.listdir(image_dir)) if os.path.isdir(os.path.join(image_dir, c))]
    for city in cities:
        for name in sorted(os.listdir(os.path.join(image_dir, city))):
            if not name.endswith("_leftImg8bit.png"):
                continue
            image_rel = f"leftImg8bit/{split}/{city}/{name}"
            summary.images += 1
            if not _is_png(os.path.join(root, image_rel)):
                problems.append(f"{image_rel} is not a PNG file (empty or damaged)")
            if not has_labels:  # the test labels may be absent: the image list is still useful
                pairs.append((image_rel, None))
                continue
            stem = f"gtFine/{split}/{city}/{name[: -len('_leftImg8bit.png')]}_gtFine_"
            ids, train_ids = os.path.join(root, stem + "labelIds.png"), os.path.join(root, stem + "labelTrainIds.png")
            if os.path.isfile(ids):
                if force or stale(ids, train_ids):
                    jobs.append((ids, train_ids))
                else:
                    summary.labels_skipped += 1
            elif os.path.isfile(train_ids):
                summary.labels_skipped += 1  # already converted copy (AI Studio)
            else:
                problems.append(f"{image_rel} has no label {stem}labelIds.png")
            pairs.append((image_rel, stem + "labelTrainIds.png"))
    return pairs


def convert_label(job):
    """Writes trainIds for one ``(labelIds_path, labelTrainIds_path)``. Returns an error text or None."""
    src, dst = job
    ids = cv2.imread(src, cv2.IMREAD_UNCHANGED)
    if ids is None:
        return f"cannot read {src} (truncated or not a PNG)"
    if ids.ndim != 2 or ids.dtype != "uint8":
        return f"{src} is not a single-channel 8-bit labelIds PNG (shape {ids.shape}, {ids.dtype})"
    ok, png = cv2.imencode(".png", LABEL_ID_TO_TRAIN_ID[ids])
    if not ok:
        return f"cannot encode {dst}"
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png.tobytes())
    os.replace(tmp, dst)  # a crash never leaves a half-written label behind
    return None


def run_jobs(jobs, workers, progress, convert=convert_label, desc="labelIds -> trainIds"):
    """Runs ``convert(job)`` for every job (in ``workers`` processes; ``convert`` must be a module-level function),
    showing progress. ``convert`` returns an error text or None; returns the error texts."""
    if not jobs:
        return []
    pool = None
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        pool = multiprocessing.Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(convert, jobs, chunksize=8)
    else:
        results = map(convert, jobs)
    try:
        results = _with_progress(results, len(jobs), progress, desc)
        return [error for error in results if error]
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _with_progress(results, total, progress, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if progress and tqdm is not None:
        yield from tqdm(results, total=total, desc=desc, unit="label")
        return
    step = -(-total // 10)  # about ten log lines
    for done, result in enumerate(results, 1):
        if progress and (done % step == 0 or done == total):
            logger.info("converted %d/%d labels", done, total)
        yield result


def write_lists(root, split, pairs, force, summary):
    """Writes the split's lists if missing (or ``force``); keeps and checks lists that are already there."""
    wanted = {f"{split}Images.txt": [image for image, _ in pairs]}
    if all(label is not None for _, label in pairs):
        wanted[f"{split}Labels.txt"] = [label for _, label in pairs]
    for name, paths in wanted.items():
        path, text = os.path.join(root, name), "".join(p + "\n" for p in paths)
        if os.path.isfile(path) and not force:
            with open(path, encoding="utf-8-sig") as f:
                if f.read() != text:
                    logger.warning("kept the existing %s (it differs from the folder scan; --force rewrites it)", path)
            continue
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        summary.lists_written.append(name)
    if f"{split}Labels.txt" in wanted:
        read_list(root, split)  # every listed file exists and the lists pair up


def one_line(problems, root):
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more (see the log)" if len(problems) > 3 else "")
    return f"{len(problems)} problem(s) under {root}: {shown}; fix or remove these files and rerun"


def fail(problems, root):
    """Log every problem, then raise one UserError naming the first few."""
    for problem in problems:
        logger.error("%s", problem)
    raise UserError(one_line(problems, root))


def stale(src, dst):
    """True when ``dst`` (a converted label) is missing or older than its source ``src``."""
    return not os.path.isfile(dst) or os.path.getmtime(dst) < os.path.getmtime(src)


def is_jpeg(path):
    """The file starts like a JPEG (an empty or foreign file is caught before any conversion)."""
    with open(path, "rb") as f:
        return f.read(3) == _JPEG_SIGNATURE


class LabelPlan:
    """A preparation that converts one label file per JPEG image: the (image, label) pairs of each split, the
    conversions to run and every problem found, then :meth:`run` (Pascal Context, COCO-Stuff)."""

    def __init__(self, root, force):
        self.root, self.force = root, force
        self.summary, self.pairs, self.jobs, self.problems = PrepareSummary(), {}, [], []

    def add(self, split, image_rel, source_rel, label_rel, extra, missing):
        """One sample: the image must be a JPEG; the label ``label_rel`` is made from ``source_rel`` by the job
        ``(source, image, label, *extra)`` unless it is newer; ``missing`` is the problem when the source is not
        there."""
        image, source, label = (os.path.join(self.root, p) for p in (image_rel, source_rel, label_rel))
        self.summary.images += 1
        if not os.path.isfile(image) or not is_jpeg(image):
            self.problems.append(f"{image_rel} is missing or not a JPEG file")
        if not os.path.isfile(source):
            self.problems.append(missing)
        elif self.force or stale(source, label):
            self.jobs.append((source, image, label, *extra))
        else:
            self.summary.labels_skipped += 1
        self.pairs.setdefault(split, []).append((image_rel, label_rel))

    def run(self, workers, progress, convert, desc, what=""):
        """Convert the labels (when no file is missing), then write the lists; every problem (missing files first,
        then unreadable labels) ends in one UserError and no list is written. Returns the summary."""
        problems = self.problems
        if not problems:
            logger.info("%s%d images in %s; %d labels to convert", what, self.summary.images, self.root,
                        len(self.jobs))
            problems = run_jobs(self.jobs, workers, progress, convert=convert, desc=desc)
            self.summary.labels_written = len(self.jobs) - len(problems)
        if problems:
            fail(problems, self.root)
        for split, pairs in self.pairs.items():
            write_lists(self.root, split, pairs, self.force, self.summary)
        return self.summary


def prepare_cityscapes(root, workers=1, force=False, progress=True):
    """Converts labels and writes lists under ``root`` (see the module docstring). Returns a PrepareSummary.

    Raises UserError naming every missing or unreadable file; lists are then not written.
    """
    if not os.path.isdir(root):
        raise UserError(f"Cityscapes folder {root} does not exist; pass the folder holding leftImg8bit/ and gtFine/")
    splits = [s for s in SPLITS if os.path.isdir(os.path.join(root, "leftImg8bit", s))]
    summary = PrepareSummary()
    if not splits:
        if not any(os.path.isfile(os.path.join(root, f"{s}Images.txt")) for s in SPLITS):
            raise UserError(f"{root} has no leftImg8bit/{{train,val,test}} folders and no list files; pass the "
                            "folder of the official Cityscapes download (leftImg8bit/, gtFine/)")  # fmt: skip
        for split in SPLITS:  # a list-only copy: just check it
            if os.path.isfile(os.path.join(root, f"{split}Images.txt")):
                read_list(root, split)
        return summary
    jobs, problems, pairs = [], [], {}
    for split in splits:
        pairs[split] = _scan_split(root, split, force, summary, jobs, problems)
    logger.info("%d images in %s; %d labels to convert", summary.images, root, len(jobs))
    errors = run_jobs(jobs, workers, progress)
    summary.labels_written = len(jobs) - len(errors)
    if problems + errors:
        fail(problems + errors, root)
    for split in splits:
        write_lists(root, split, pairs[split], force, summary)
    return summary
