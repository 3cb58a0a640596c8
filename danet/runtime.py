"""Process set-up shared by the entry points: logging, device, threads, seeds, error reporting."""
import logging
import os
import random
import sys

import numpy as np

from danet.errors import UserError

log = logging.getLogger("danet")


def setup_logging(log_file=None, rank=0):
    """Console (rank 0 only) and, if given, a log file; messages as 'time level message'."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger("danet")
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(fmt)
        root.addHandler(handler)


def setup_device(cuda, threads=0):
    """Pick the place and use this machine's cores for CPU math (Paddle's default is one thread)."""
    import paddle

    if cuda:
        if not paddle.is_compiled_with_cuda():
            raise UserError("--cuda was given but this Paddle has no CUDA: install paddlepaddle-gpu, or drop --cuda")
        device = f"gpu:{os.environ.get('FLAGS_selected_gpus', '0').split(',')[0]}"
    else:
        device = "cpu"
        if not threads:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        paddle.base.core.set_num_threads(int(threads))
        # The static executor's own worker threads fight the math threads on a CPU (measured: 10-25% slower).
        # serial_run is enough for Paddle 2.6's executor; PIR (3.x) keeps a worker thread under it, and only its
        # trace mode runs the ops in the calling thread.
        _set_known_flags({"FLAGS_new_executor_serial_run": True, "FLAGS_enable_pir_in_executor_trace_run": True})
        keep_freed_memory()
    paddle.set_device(device)
    return device


def keep_freed_memory():
    """Make glibc serve allocations up to 32 MiB from its heap and keep them when freed; True if it could.

    By default glibc maps every allocation above a threshold (128 KiB, rising with use) freshly and unmaps it
    on free, so each step faults Paddle's large CPU tensors in again: measured 470k page faults (1.8 GiB) and
    20% of the CPU time of a ResNet-50 DANet forward pass at 512x512. 32 MiB is the largest threshold glibc
    accepts on 64-bit; danet.models.lowmem keeps convolution buffers under it. Larger tensors are still
    returned at once, so the peak stays that of the live tensors (the heap keeps only pieces up to 32 MiB).
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 * 2 ** 20)) and bool(mallopt(m_trim_threshold, 2 ** 30))


def _set_known_flags(flags):
    """paddle.set_flags for the flags this Paddle version has (an unknown one raises ValueError)."""
    import paddle

    for name, value in flags.items():
        try:
            paddle.get_flags([name])
        except ValueError:
            continue
        paddle.set_flags({name: value})


def seed_everything(seed):
    """Seed Python, numpy and Paddle; the data loader's workers derive their seeds from numpy's."""
    import paddle

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


# Paddle's notices that say nothing to a user of this project (the console keeps our log lines, progress and
# errors): BatchNorm in a training Program always tracks running statistics, which is what DANet wants.
# Paddle 3.x's gradient code asks a PIR value for its place while it builds a training Program.
_LIBRARY_NOTICES = ("When training, we now always track global mean and variance",
                    "Tensor do not have 'place' interface for pir graph mode")


def run_main(fn, args):
    """Run ``fn(args)``; a UserError becomes one line on stderr and exit 2 unless ``--debug``."""
    import warnings

    for message in _LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    try:
        return fn(args)
    except UserError as e:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
