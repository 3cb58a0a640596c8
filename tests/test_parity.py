"""The two trainers' steps agree: same initial weights, same batches, dropout off -> same losses, LRs and weights."""
import contextlib

import numpy as np
import paddle
import pytest

from danet.checkpoint import save_arrays
from danet.engine.dygraph import DygraphStep
from danet.engine.static import StaticStep
from danet.lr import lr_at
from danet.options import parse

STEPS, STEPS_PER_EPOCH, EPOCHS, LR = 3, 4, 2, 0.01


@contextlib.contextmanager
def static_mode():
    paddle.enable_static()
    try:
        with paddle.static.scope_guard(paddle.static.Scope()):
            yield
    finally:
        paddle.disable_static()


def _batches():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(STEPS):
        images = rng.normal(size=(2, 3, 32, 40)).astype(np.float32)
        labels = rng.integers(0, 19, size=(2, 32, 40)).astype(np.int64)
        labels[:, :5] = 255
        out.append((images, labels))
    return out


def _scope_array(name):
    return np.array(paddle.static.global_scope().find_var(name).get_tensor())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run both steps from the same weights on the same batches: losses, LRs and final weights of each."""
    args = parse("train_dygraph", ["--backbone", "resnet18", "--lr", str(LR), "--epoch_num", str(EPOCHS)])
    init = str(tmp_path_factory.mktemp("parity") / "init.pdparams")
    paddle.seed(0)
    dygraph = DygraphStep(args, STEPS_PER_EPOCH, model_kwargs={"dropout": 0.0})
    save_arrays(init, {k: v.numpy() for k, v in dygraph.model.state_dict().items()})
    dy = [dygraph.run(images, labels) for images, labels in _batches()]
    dy_weights = {k: v.numpy() for k, v in dygraph.model.state_dict().items()}
    with static_mode():
        static = StaticStep(args, STEPS_PER_EPOCH, model_kwargs={"dropout": 0.0})
        static.load_initial(init)
        st, lr_vars = [], []
        for images, labels in _batches():
            st.append(static.run(images, labels))
            lr_vars.append(static_lr_variable(static.main))
        st_weights = {k: _scope_array(name) for k, name in static.names.items()}
    return dict(dy=dy, st=st, lr_vars=lr_vars, dy_weights=dy_weights, st_weights=st_weights)


def static_lr_variable(program):
    """The value the Executor put into the program's LR variable for the last run (PIR and legacy names)."""
    name = getattr(program, "lr_name", None) or program.lr_scheduler._var_name
    return _scope_array(name).item()


def test_first_steps_losses_agree_between_dygraph_and_executor(runs):
    dy_losses = np.array([[loss, *parts.values()] for loss, parts, _ in runs["dy"]])
    st_losses = np.array([[loss, *parts.values()] for loss, parts, _ in runs["st"]])
    np.testing.assert_allclose(st_losses, dy_losses, rtol=1e-4)
    assert abs(dy_losses[2, 0] - dy_losses[0, 0]) > 1e-3 * dy_losses[0, 0]  # the updates in between mattered


def test_both_modes_apply_the_lr_of_the_formula_at_each_step(runs):
    want = [lr_at(t, LR, EPOCHS * STEPS_PER_EPOCH) for t in range(STEPS)]
    np.testing.assert_allclose([lr for _, _, lr in runs["dy"]], want, rtol=1e-12)
    np.testing.assert_allclose([lr for _, _, lr in runs["st"]], want, rtol=1e-12)
    np.testing.assert_allclose(runs["lr_vars"], want, rtol=1e-6)  # what the Program really read


def test_weights_after_the_steps_agree(runs):
    dy, st = runs["dy_weights"], runs["st_weights"]
    assert dy.keys() == st.keys()
    for name in dy:
        np.testing.assert_allclose(st[name], dy[name], rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.heavy
def test_the_auxiliary_head_trains_in_both_modes_with_its_loss_weight(tmp_path):
    """--aux_head adds a fourth output, named 'aux' and weighted by --aux_weight, the same in both graph modes."""
    args = parse("train_dygraph", ["--backbone", "resnet18", "--aux_head", "--aux_weight", "0.25"])
    init = str(tmp_path / "init.pdparams")
    paddle.seed(0)
    dygraph = DygraphStep(args, STEPS_PER_EPOCH, model_kwargs={"dropout": 0.0})
    save_arrays(init, {k: v.numpy() for k, v in dygraph.model.state_dict().items()})
    images, labels = _batches()[0]
    dy = dygraph.run(images, labels)
    assert list(dy.parts) == ["fused", "position", "channel", "aux"]
    np.testing.assert_allclose(dy.loss, sum(list(dy.parts.values())[:3]) + 0.25 * dy.parts["aux"], rtol=1e-5)
    with static_mode():
        static = StaticStep(args, STEPS_PER_EPOCH, model_kwargs={"dropout": 0.0})
        static.load_initial(init)
        st = static.run(images, labels)
    np.testing.assert_allclose(list(st.parts.values()), list(dy.parts.values()), rtol=1e-4)
    np.testing.assert_allclose(st.loss, dy.loss, rtol=1e-4)
