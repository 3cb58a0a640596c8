"""Segmentation metrics from one confusion matrix accumulated over a whole data set (numpy only).

Rows of the matrix are ground truth, columns are predictions. Pixels labelled ``ignore_index``
count nowhere: not in any row, column or total (the seed port gave them a bucket of their own and
so inflated pixel accuracy with them).

NaN policy: a class with no pixel in either the labels or the predictions has IoU (and Dice) NaN,
and a class with no ground-truth pixel has accuracy (recall) NaN; the means (mIoU, mean accuracy,
mean Dice) are ``nanmean`` over the classes, so such classes are left out instead of counted as
0 or 1. ``to_json_dict`` writes NaN as ``None`` and ``format_table`` as ``n/a``.
"""
import csv
import logging

import numpy as np

from danet.constants import IGNORE_INDEX

logger = logging.getLogger(__name__)


class ConfusionMatrix:
    """An int64 [num_classes, num_classes] matrix of pixel counts, rows = truth, cols = prediction.

    ``update`` adds one batch; ``merge`` (or ``+=``) adds another matrix, e.g. one per process
    before an all-reduce. ``matrix`` is a plain array that may be replaced by the reduced sum.
    """

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self):
        self.matrix[...] = 0

    def update(self, pred, label):
        """Count the pixels of ``pred`` against ``label`` (integer arrays of one and the same shape).

        Raises ValueError if a label value is neither a class id nor ``ignore_index``, or a
        prediction at a counted pixel is not a class id.
        """
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
        for name, arr in (("prediction", pred), ("label", label)):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
        label = label.ravel().astype(np.int64)
        pred = pred.ravel().astype(np.int64)
        keep = label != self.ignore_index
        label, pred = label[keep], pred[keep]
        _check_range("label", label, self.num_classes, f" (nor ignore_index {self.ignore_index})")
        _check_range("prediction", pred, self.num_classes)
        # One bincount over the flat index truth * n + pred gives the whole matrix at once.
        n = self.num_classes
        self.matrix += np.bincount(label * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other):
        """Add the counts of another ConfusionMatrix (same classes and ignore index); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) into a "
                f"{self.num_classes}-class one (ignore {self.ignore_index})")
        self.matrix += other.matrix
        return self

    __iadd__ = merge

    def summary(self):
        """All metrics of the counts so far; see :func:`compute`."""
        return compute(self.matrix)


def _check_range(name, values, num_classes, extra=""):
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} contains value {int(bad[0])}, which is not a class id in "
                         f"[0, {num_classes}){extra}")


def _div(num, den):
    """num / den elementwise, NaN where den == 0 (no warning)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(values):
    """Mean over the non-NaN entries; NaN (no warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    return float(values[valid].mean()) if valid.any() else float("nan")


def compute(matrix):
    """Metrics of a confusion matrix [n, n] (rows = truth, cols = prediction).

    Returns a dict of floats and float64 arrays [n]:
      ``iou`` diag / (row + col - diag), NaN for a class absent from labels and predictions;
      ``miou`` nanmean of ``iou`` (absent classes are excluded, not counted as 0 or 1);
      ``pixel_accuracy`` diag sum / total (ignored pixels were never counted);
      ``accuracy`` per class diag / row (= recall), NaN without ground-truth pixels; ``mean_accuracy``;
      ``precision`` diag / col, NaN for a class never predicted; ``recall`` = ``accuracy``;
      ``dice`` 2 diag / (row + col), NaN like IoU; ``mean_dice``;
      ``fwiou`` sum over classes of (row / total) * IoU;
      ``kappa`` Cohen's kappa (p_o - p_e) / (1 - p_e), NaN when p_e == 1 (one class only);
      ``matrix`` the int64 input; ``total`` the number of counted pixels.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    diag = np.diag(matrix).astype(np.float64)
    rows = matrix.sum(axis=1).astype(np.float64)  # ground-truth pixels per class
    cols = matrix.sum(axis=0).astype(np.float64)  # predicted pixels per class
    total = float(matrix.sum())
    iou = _div(diag, rows + cols - diag)
    accuracy = _div(diag, rows)
    dice = _div(2 * diag, rows + cols)
    freq = rows / total if total else np.zeros_like(rows)
    # A class with rows > 0 always has a defined IoU, so NaN entries carry weight 0 here.
    fwiou = float(np.nansum(freq * iou)) if total else float("nan")
    p_o = float(diag.sum() / total) if total else float("nan")
    p_e = float((rows * cols).sum() / total ** 2) if total else float("nan")
    kappa = (p_o - p_e) / (1.0 - p_e) if total and p_e < 1.0 else float("nan")
    return {
        "iou": iou, "miou": _nanmean(iou),
        "pixel_accuracy": p_o,
        "accuracy": accuracy, "mean_accuracy": _nanmean(accuracy),
        "precision": _div(diag, cols), "recall": accuracy,
        "dice": dice, "mean_dice": _nanmean(dice),
        "fwiou": fwiou, "kappa": kappa,
        "matrix": matrix, "total": int(total),
    }


def _names(class_names, n):
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"got {len(names)} class names for {n} classes")
    return names


def _num(value):
    """A JSON-ready float: None for NaN."""
    value = float(value)
    return None if np.isnan(value) else value


def to_json_dict(result, class_names=None):
    """A dict of plain Python values (``json.dumps``-able); per-class values keyed by class name, NaN -> None."""
    names = _names(class_names, len(result["iou"]))

    def per_class(key):
        return {name: _num(v) for name, v in zip(names, result[key])}

    return {
        "miou": _num(result["miou"]),
        "pixel_accuracy": _num(result["pixel_accuracy"]),
        "mean_accuracy": _num(result["mean_accuracy"]),
        "fwiou": _num(result["fwiou"]),
        "kappa": _num(result["kappa"]),
        "mean_dice": _num(result["mean_dice"]),
        "per_class_iou": per_class("iou"),
        "per_class_accuracy": per_class("accuracy"),
        "per_class_dice": per_class("dice"),
        "per_class_precision": per_class("precision"),
        "pixels": int(result["total"]),
        "class_names": names,
        "confusion_matrix": np.asarray(result["matrix"]).tolist(),
    }


def _fmt(value):
    return "n/a" if np.isnan(value) else f"{value:.4f}"


def format_table(result, class_names=None):
    """An aligned text table: one line per class (IoU, accuracy, Dice), then the summary lines.

    Values are fractions in [0, 1]; NaN (class absent, see the module docstring) shows as ``n/a``.
    """
    names = _names(class_names, len(result["iou"]))
    width = max([len("class")] + [len(n) for n in names])
    header = f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}  {'Dice':>7}"
    lines = [header, "-" * len(header)]
    for name, iou, acc, dice in zip(names, result["iou"], result["accuracy"], result["dice"]):
        lines.append(f"{name:<{width}}  {_fmt(iou):>7}  {_fmt(acc):>7}  {_fmt(dice):>7}")
    lines.append("-" * len(header))
    for label, key in (("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"), ("mean accuracy", "mean_accuracy"),
                       ("FWIoU", "fwiou"), ("kappa", "kappa"), ("mean Dice", "mean_dice")):
        lines.append(f"{label:<15} {_fmt(result[key])}")
    return "\n".join(lines)


def write_csv(path, result, class_names=None):
    """Write one row per class: id, name, IoU, accuracy, Dice, precision (NaN as an empty cell)."""
    names = _names(class_names, len(result["iou"]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class_id", "class", "iou", "accuracy", "dice", "precision"])
        for i, name in enumerate(names):
            values = (result[k][i] for k in ("iou", "accuracy", "dice", "precision"))
            writer.writerow([i, name] + ["" if np.isnan(v) else f"{v:.6f}" for v in values])
    logger.info("wrote per-class metrics to %s", path)
