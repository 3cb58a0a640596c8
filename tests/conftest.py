"""Shared test set-up: deterministic seeds, every test leaves Paddle in dygraph mode, and a test that starts a
process (an entry point, a data loader worker) must say so with ``@pytest.mark.process``: ``make test-fast``
leaves those out and starts none."""
import os
import random
import subprocess

import numpy as np
import numpy.testing  # noqa: F401  (numpy 1.x runs lscpu when this is first imported: not a test's process)
import pytest

os.environ.setdefault("FLAGS_new_executor_serial_run", "true")

import paddle  # noqa: E402

_started = [0]  # processes started by this pytest process (subprocess or fork)


def _counting(start):
    def wrapper(*args, **kwargs):
        _started[0] += 1
        return start(*args, **kwargs)

    return wrapper


def pytest_configure(config):
    subprocess.Popen.__init__ = _counting(subprocess.Popen.__init__)
    os.fork = _counting(os.fork)  # multiprocessing, Paddle's DataLoader workers and process pools fork


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.processes_before = _started[0]  # before the fixtures: a module fixture's training run counts too


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    started = _started[0] - item.processes_before
    if started and item.get_closest_marker("process") is None:
        pytest.fail(f"{item.nodeid} started {started} process(es) but is not marked @pytest.mark.process", False)


@pytest.fixture(autouse=True)
def _seed_and_restore_mode():
    random.seed(0)
    np.random.seed(0)
    paddle.seed(0)
    yield
    if not paddle.in_dynamic_mode():
        paddle.disable_static()


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """A tiny synthetic set (6 train + 2 val images, 64x128) in the Cityscapes layout, shared by the end-to-end
    tests: copy it (faultlib.copy_dataset) before breaking anything in it."""
    from danet.data.synthetic import make_synthetic_dataset

    root = str(tmp_path_factory.mktemp("tiny_data"))
    make_synthetic_dataset(root, 6, 2, 64, 128, seed=0)
    return root
