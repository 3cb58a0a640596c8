"""What every GPU check shares: its outcome (:class:`Result`, :class:`Skipped`, :class:`Failed`), the tolerances,
random inputs, finite losses, GPU peak memory and the comparison of two arrays."""
import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

NUM_CLASSES = 19
GPU_TOLERANCE = 1e-3  # of the largest logit: cuDNN picks its own algorithms, and on Ampere TF32 convolutions
SAME_TOLERANCE = 1e-4  # two computations of the same numbers in float32 (attention paths, BatchNorm kinds)


class Skipped(Exception):
    """A check that does not apply to this Paddle (said with the reason)."""


class Failed(Exception):
    """A check whose result is wrong (the message says how)."""


@dataclass
class Result:
    name: str
    status: str  # passed, failed or skipped
    reason: str = ""  # what was measured (passed) or why (failed, skipped)
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def line(self):
        if self.status == "passed":
            return f"{self.name}: passed" + (f" ({self.reason})" if self.reason else "")
        return f"{self.name}: {self.status}: {self.reason}"


def one_line(error):
    """An exception as one line: its type and first non-empty line (Paddle's errors carry C++ traces)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if type(error).__name__ != "UserError":
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def train_args(entry, backbone, batch, amp=False, cuda=False, parallel=False):
    """The trainer ``entry``'s parsed flags for these settings."""
    from danet.options import parse

    argv = ["--backbone", backbone, "--batch_size", str(batch), "--lr", "0.01", "--epoch_num", "1"]
    argv += ["--amp"] * amp + ["--cuda"] * cuda + ["--use_data_parallel"] * parallel
    return parse(entry, argv)


def random_batch(batch, size, seed=0):
    """Random normalised images [B, 3, H, W] and labels [B, H, W] (a border of ignored pixels)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3) + tuple(size)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch,) + tuple(size)).astype(np.int64)
    labels[:, :2] = 255
    return images, labels


def finite_losses(results):
    """The steps' losses (rounded); Failed when one is not finite."""
    losses = [round(r.loss, 4) for r in results]
    bad = [i for i, r in enumerate(results) if not math.isfinite(r.loss)]
    if bad:
        raise Failed(f"the loss is not finite at step {bad[0] + 1}: {losses}")
    return losses


def on_gpu(device):
    """Whether ``device`` (``"gpu:0"``, ``"cpu"``) is a GPU."""
    return device.startswith("gpu")


@contextlib.contextmanager
def peak_memory(device):
    """Yields a dict whose 'allocated' / 'reserved' become the peak GPU bytes of the block (None on a CPU).

    Paddle 2.6 cannot reset the peak: there it is the peak since the process started.
    """
    import paddle

    out = {"allocated": None, "reserved": None, "since_start": False}
    cuda = paddle.device.cuda
    if on_gpu(device):
        if hasattr(cuda, "reset_max_memory_allocated"):
            cuda.reset_max_memory_allocated()
            cuda.reset_max_memory_reserved()
        else:
            out["since_start"] = True
    yield out
    if on_gpu(device):
        paddle.device.synchronize()
        out["allocated"], out["reserved"] = int(cuda.max_memory_allocated()), int(cuda.max_memory_reserved())


def gib(n):
    """Bytes as GiB, for a summary."""
    return f"{n / 2 ** 30:.2f} GiB"


def compare(expected, got, tolerance, what):
    """Largest difference relative to the largest value; Failed when over ``tolerance``."""
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    if expected.shape != got.shape:
        raise Failed(f"{what}: shape {list(got.shape)}, expected {list(expected.shape)}")
    relative = float(np.abs(got - expected).max() / max(1e-12, float(np.abs(expected).max())))
    if not relative <= tolerance:
        raise Failed(f"{what} differ by {relative:.3g} of the largest value (allowed {tolerance:g})")
    return relative


def memory_details(peak, what):
    """A memory check's details from :func:`peak_memory`'s dict: its summary line and the peaks."""
    if peak["allocated"] is None:
        return dict(summary=f"{what}: ran; peak GPU memory is measured on a GPU only", peak_allocated=None)
    note = " since the process started (this Paddle cannot reset the peak)" if peak["since_start"] else ""
    return dict(summary=f"{what}: peak {gib(peak['allocated'])} allocated, {gib(peak['reserved'])} reserved{note}",
                peak_allocated=peak["allocated"], peak_reserved=peak["reserved"], since_start=peak["since_start"])
