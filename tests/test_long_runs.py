"""Long runs stay flat: evaluation memory does not grow with the number of images, and a data loader worker
that dies ends training with a clear line instead of a hang."""
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest
from faultlib import ROOT, env, message_lines, train_args

from danet import build_model
from danet.inference import dygraph_predict_fn, evaluate

NUM_CLASSES = 19


def rss_mb():
    """Resident memory of this process in MB (Linux /proc; no psutil)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class GeneratedImages:
    """``count`` images made on demand, as ``evaluate`` reads a data set: (float32 [3, H, W], uint8 [H, W])."""

    def __init__(self, count, height, width):
        self.count, self.height, self.width = count, height, width

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        image = rng.standard_normal((3, self.height, self.width)).astype(np.float32)
        label = rng.integers(0, NUM_CLASSES, (self.height, self.width)).astype(np.uint8)
        label[:4] = 255
        return image, label


class RssProbe:
    """``on_prediction`` callback noting the resident memory after chosen images."""

    def __init__(self, at):
        self.at, self.mb = set(at), {}

    def __call__(self, index, pred, label):
        if index in self.at:
            self.mb[index] = rss_mb()


def cheap_predict(batch):
    """Logits [N, C, H, W] from a fixed per-class mix of the channels: fresh arrays, as a model returns."""
    mix = np.linspace(-1, 1, NUM_CLASSES * 3, dtype=np.float32).reshape(NUM_CLASSES, 3)
    return np.einsum("kc,nchw->nkhw", mix, batch)


def test_evaluation_memory_is_flat_over_hundreds_of_images():
    """300 images of 128x256: keeping anything per image the size of its logits (2.5 MB) or its input (0.4 MB)
    would grow the process by 100-600 MB between image 50 and image 300."""
    dataset = GeneratedImages(300, 128, 256)
    probe = RssProbe([50, 299])
    matrix = evaluate(cheap_predict, dataset, NUM_CLASSES, base_size=None, crop_size=256, on_prediction=probe,
                      progress=False)
    assert matrix.summary()["pixel_accuracy"] > 0  # the images were really scored
    assert probe.mb[299] - probe.mb[50] < 16, probe.mb


@pytest.mark.slow
def test_evaluation_with_a_real_model_is_flat_too():
    """ResNet-18 DANet over 100 images of 32x64 (3 sliding windows each, in two forward passes)."""
    model = build_model("resnet18", num_classes=NUM_CLASSES)
    model.eval()
    probe = RssProbe([20, 99])
    with paddle.no_grad():
        evaluate(dygraph_predict_fn(model, 2), GeneratedImages(100, 32, 64), NUM_CLASSES, base_size=None,
                 crop_size=32, window_batch=2, on_prediction=probe, progress=False)
    assert probe.mb[99] - probe.mb[20] < 16, probe.mb


# A training run whose data set kills its own worker process at the fourth image, started through the
# real entry code (danet.train.main) with the data set class swapped in.
DYING_RUN = textwrap.dedent("""
    import os, signal, sys
    from danet import train
    from danet.data.cityscapes import SegDataset

    PARENT, HOW = os.getpid(), sys.argv[1]

    class DyingDataset(SegDataset):
        def __getitem__(self, index):
            if os.getpid() != PARENT and index == 3:
                os._exit(1) if HOW == "exit" else os.kill(os.getpid(), signal.SIGKILL)
            return super().__getitem__(index)

    train.SegDataset = DyingDataset
    train.main("train_dygraph", sys.argv[2:])
""")


@pytest.mark.process
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_worker_that_dies_ends_training_with_one_clear_line(how, data, tmp_path):
    # A hang (the failure this guards against) ends the test by subprocess.TimeoutExpired.
    result = subprocess.run([sys.executable, "-c", DYING_RUN, how, *train_args(data, str(tmp_path / "run"), workers=2)],
                            capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = message_lines(result.stderr)[-1]
    assert last.startswith("error: a data loader worker process died") and "--num_workers" in last
