"""Helpers of the robustness tests: run an entry point as a user would, read its stderr, break files on purpose.

``run_entry`` starts ``python -m danet.<entry>`` in a fresh process (the real command line, with its real
exit code and stderr); ``message_lines`` is what a user reads on stderr once the third-party warnings
(Paddle's "No ccache found" on import, its C++ "W1121 ..." lines, libpng's "Read Error") are set aside.
"""
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")  # "file.py:712: UserWarning: ..." (its source line follows)
_GLOG_WARNING = re.compile(r"^W\d{4} [\d:.]+ +\d+ \S+:\d+\] ")  # Paddle's C++ "W1121 04:47:31.37 27699 x.cc:35] "
_LIBPNG = re.compile(r"^libpng (error|warning): ")  # OpenCV < 4.11 lets libpng print on a truncated PNG


def env():
    """This checkout first on the path; one math thread, the test machine is shared. Paddle's C++ log level is
    left to the entry points, as in a user's shell (``danet.quiet``, imported in this process, sets it)."""
    environ = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    return dict(environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def run_entry(entry, args, timeout=180, cwd=ROOT):
    """``python -m danet.<entry> args`` (or ``python tools/x.py`` for ``entry='tools/x.py'``), finished."""
    cmd = [sys.executable, entry] if entry.endswith(".py") else [sys.executable, "-m", f"danet.{entry}"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env(), cwd=cwd,
                          timeout=timeout)


def start_entry(entry, args, log_path):
    """The same, started in the background with stdout and stderr going to ``log_path``."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", f"danet.{entry}"] + [str(a) for a in args], stdout=log,
                                stderr=subprocess.STDOUT, env=env(), cwd=ROOT)


def message_lines(stderr):
    """The lines of ``stderr`` from this project: without the warnings of Python (with their source line), glog
    and libpng that libraries print on their own."""
    lines, skip = [], False
    for line in stderr.splitlines():
        if skip and line.startswith(" "):
            continue
        skip = bool(_WARNING.match(line))
        if not skip and line.strip() and not _GLOG_WARNING.match(line) and not _LIBPNG.match(line):
            lines.append(line)
    return lines


def train_args(data, save_dir, *extra, backbone="resnet18", workers=0, epochs=1):
    """Flags of a tiny run on the 64x128 data of the tests (6 training images, 3 iterations per epoch)."""
    return ["--backbone", backbone, "--data_folder", data, "--base_size", "64", "--crop_size", "32",
            "--epoch_num", str(epochs), "--batch_size", "2", "--lr", "0.002", "--num_workers", str(workers),
            "--eval_interval", "0", "--save_interval", "1", "--log_iters", "1", "--threads", "1",
            "--save_dir", save_dir, *extra]


def tree_hashes(folder):
    """{relative path: sha256} of every file under ``folder``."""
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def list_lines(data, name):
    """Lines of ``<data>/cityscapes/<name>`` (e.g. trainImages.txt)."""
    with open(os.path.join(data, "cityscapes", name)) as f:
        return f.read().splitlines()


def write_lines(data, name, lines):
    with open(os.path.join(data, "cityscapes", name), "w") as f:
        f.write("".join(line + "\n" for line in lines))


def listed(data, name, index=0):
    """Absolute path of the ``index``-th file listed in ``name``."""
    return os.path.join(data, "cityscapes", list_lines(data, name)[index])


class CodeOnLoad:
    """Unpickling this object calls ``open(marker, 'w')``: a file that ran code when loaded leaves the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def write_malicious(path, marker, like=None):
    """A weight pickle in Paddle's layout (``{name: array}``) with one entry that runs code when unpickled.

    ``like`` (a dict of arrays) gives it real tensors around the payload, as a tampered checkpoint would have.
    """
    payload = dict(like or {})
    payload["StructuredToParameterName@@"] = CodeOnLoad(marker)
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)
