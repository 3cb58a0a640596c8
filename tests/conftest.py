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
