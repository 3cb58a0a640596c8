"""Shared test set-up: deterministic seeds, and every test leaves Paddle in dygraph mode."""
import os
import random

import numpy as np
import pytest

os.environ.setdefault("FLAGS_new_executor_serial_run", "true")

import paddle  # noqa: E402


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
