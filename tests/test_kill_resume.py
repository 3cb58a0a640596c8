"""SIGKILL at random moments, then ``--resume``, over and over: a crash costs at most the epoch in progress.

Per graph mode a 4-epoch run (3 iterations per epoch, a checkpoint after every epoch) is killed three times
(after a random iteration, while a checkpoint directory is being written, after another random iteration;
the moments come from a seeded generator) and resumed each time with ``--resume``. Every resume must start
from the newest complete checkpoint that ``latest`` names (never from the torn ``.tmp-`` one), and the
last run must end at the iteration, learning rate and weights of an uninterrupted run.
"""
import os
import random
import signal
import time

import numpy as np
import pytest
from faultlib import run_entry, start_entry, train_args

from danet import checkpoint, weights
from danet.weights import read_weights

pytestmark = [pytest.mark.slow, pytest.mark.process]
EPOCHS, STEPS = 4, 3  # 6 images, batch 2
TOTAL = EPOCHS * STEPS
MODES = ["dygraph", "executor"]


def flags(data, save_dir, *extra):
    return train_args(data, save_dir, "--keep_checkpoints", "2", *extra, epochs=EPOCHS)


def kill_plan(mode):
    """[(trigger, iteration, delay)]: 'iteration' kills ``delay`` s after iteration k is logged, 'writing' kills
    as soon as a checkpoint directory is being written."""
    rng = random.Random(f"kill-resume-{mode}")
    return [("iteration", rng.randint(2, 5), rng.uniform(0, 0.3)), ("writing", None, 0.0),
            ("iteration", rng.randint(8, 10), rng.uniform(0, 0.3))]


def _writing(save_dir):
    return os.path.isdir(save_dir) and any(n.startswith(".tmp-epoch_") for n in os.listdir(save_dir))


def _read(path):
    with open(path) as f:
        return f.read()


def run_and_kill(mode, args, log_path, save_dir, trigger, iteration, delay, timeout=60):
    """Start a run and SIGKILL it at the trigger; returns its output."""
    proc = start_entry(f"train_{mode}", args, log_path)
    try:
        deadline = time.time() + timeout
        while True:
            assert proc.poll() is None, f"finished before the kill:\n{_read(log_path)[-3000:]}"
            assert time.time() < deadline, f"no trigger after {timeout} s:\n{_read(log_path)[-3000:]}"
            if trigger == "writing" and _writing(save_dir):
                break
            if trigger == "iteration" and f" iter {iteration}/{TOTAL} " in _read(log_path):
                time.sleep(delay)
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _read(log_path)


def final_arrays(save_dir):
    ckpt = checkpoint.read_pointer(save_dir, "latest")
    opt = weights.safe_load(os.path.join(ckpt, "model.pdopt"))
    return read_weights(ckpt).tensors, {k: v for k, v in opt.items() if isinstance(v, np.ndarray)}


def complete_checkpoints(save_dir):
    """The epoch_* directories; each must be whole (read_state checks every file's size)."""
    names = sorted(n for n in os.listdir(save_dir) if n.startswith("epoch_"))
    for name in names:
        checkpoint.read_state(os.path.join(save_dir, name))
    return names


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(mode, data, tmp_path):
    reference = str(tmp_path / "uninterrupted")
    result = run_entry(f"train_{mode}", flags(data, reference))
    assert result.returncode == 0, result.stderr[-3000:]
    want = checkpoint.read_state(checkpoint.read_pointer(reference, "latest"))

    save_dir = str(tmp_path / "killed")
    extra, expected_start, torn = [], None, 0
    for number, (trigger, iteration, delay) in enumerate(kill_plan(mode)):
        out = run_and_kill(mode, flags(data, save_dir, *extra), str(tmp_path / f"run{number}.out"), save_dir,
                           trigger, iteration, delay)
        if expected_start is not None:
            assert expected_start in out
        torn += _writing(save_dir)
        complete_checkpoints(save_dir)
        latest = checkpoint.read_pointer(save_dir, "latest")  # None before the first checkpoint
        if latest is None:
            expected_start = f"no checkpoint in {save_dir} yet: starting from scratch"
        else:
            state = checkpoint.read_state(latest)
            expected_start = f"resumed from {latest}: epoch {state['epoch']}, iteration {state['iteration']}"
        extra = ["--resume"]
    assert torn >= 1, "no kill landed while a checkpoint was being written"

    result = run_entry(f"train_{mode}", flags(data, save_dir, "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected_start in result.stdout
    assert not [n for n in os.listdir(save_dir) if n.startswith((".tmp-", ".old-", ".del-"))]  # torn leftovers cleaned
    assert complete_checkpoints(save_dir)[-1] == f"epoch_{EPOCHS:04d}"
    got = checkpoint.read_state(checkpoint.read_pointer(save_dir, "latest"))
    assert (got["epoch"], got["iteration"]) == (want["epoch"], want["iteration"]) == (EPOCHS, TOTAL)
    for name in ("epoch_0003", f"epoch_{EPOCHS:04d}"):  # the poly LR is 0 at the end: compare the one before too
        ours, theirs = (checkpoint.read_state(os.path.join(d, name)) for d in (save_dir, reference))
        assert (ours["iteration"], ours["scheduler"]) == (theirs["iteration"], theirs["scheduler"]), name
    assert want["scheduler"]["last_epoch"] == TOTAL
    for ours, theirs in zip(final_arrays(save_dir), final_arrays(reference)):  # weights, momentum buffers
        assert ours.keys() == theirs.keys()
        for key in theirs:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)
