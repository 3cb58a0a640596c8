"""The LR schedule: the formula, the scheduler object, and the LR Paddle really applies in both graph modes."""
import contextlib
import math

import numpy as np
import paddle
import pytest

from danet.engine.common import build_optimizer, build_scheduler
from danet.errors import UserError
from danet.lr import DANetLR, lr_at
from danet.options import parse


def test_poly_falls_from_the_base_lr_to_zero_at_the_last_step():
    assert lr_at(0, 0.01, 100) == 0.01
    assert lr_at(50, 0.01, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert lr_at(90, 0.01, 100, power=2.0) == pytest.approx(0.01 * 0.1 ** 2)
    assert lr_at(100, 0.01, 100) == 0.0
    assert lr_at(130, 0.01, 100) == 0.0  # never negative, never complex


def test_warm_up_ramps_linearly_from_zero_to_the_poly_value_at_its_end():
    base, total, warm = 0.01, 100, 20
    end = base * (1 - warm / total) ** 0.9
    assert lr_at(0, base, total, warmup_steps=warm) == 0.0
    assert lr_at(5, base, total, warmup_steps=warm) == pytest.approx(end * 5 / 20)
    assert lr_at(10, base, total, warmup_steps=warm) == pytest.approx(end / 2)
    assert lr_at(20, base, total, warmup_steps=warm) == pytest.approx(end)
    assert lr_at(21, base, total, warmup_steps=warm) == pytest.approx(base * (1 - 21 / total) ** 0.9)
    curve = [lr_at(t, base, total, warmup_steps=warm) for t in range(total + 1)]
    assert curve.index(max(curve)) == warm  # rises until the end of the warm-up, falls after it
    assert all(a < b for a, b in zip(curve[:warm], curve[1:warm + 1]))
    assert all(a > b for a, b in zip(curve[warm:-1], curve[warm + 1:]))


def test_cosine_and_piecewise_change_once_per_epoch():
    kw = dict(base_lr=0.1, total_steps=40, steps_per_epoch=4)
    cosine = [lr_at(t, scheduler="cosine", **kw) for t in range(40)]
    assert cosine[:4] == [0.1] * 4
    assert cosine[4] == pytest.approx(0.1 * (1 + math.cos(math.pi / 10)) / 2) == cosine[7]
    piecewise = [lr_at(t, scheduler="piecewise", boundaries=(2, 5), **kw) for t in range(40)]
    assert piecewise[7] == 0.1 and piecewise[8] == pytest.approx(0.01) and piecewise[20] == pytest.approx(0.001)


@pytest.mark.parametrize("name", ["ploy", "Poly", "step"])
def test_an_unknown_scheduler_is_an_error(name):
    with pytest.raises(UserError, match=f"unknown --lr_scheduler '{name}'"):
        lr_at(3, 0.01, 100, scheduler=name)
    with pytest.raises(UserError, match=f"unknown --lr_scheduler '{name}'"):
        DANetLR(0.01, 100, scheduler=name)


def test_an_empty_schedule_is_an_error():
    with pytest.raises(UserError, match="0 steps"):
        DANetLR(0.01, 0)


def _args(*extra):
    return parse("train_dygraph", ["--backbone", "resnet18", *extra])


def test_the_scheduler_follows_the_formula_step_by_step():
    args = _args("--lr", "0.02", "--epoch_num", "6", "--warm_up", "--warmup_epoch", "2")
    scheduler = build_scheduler(args, steps_per_epoch=5)
    got = []
    for _ in range(32):
        got.append(scheduler())
        scheduler.step()
    want = [lr_at(t, 0.02, 30, warmup_steps=10) for t in range(32)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_restored_scheduler_continues_the_curve_even_with_a_new_base_lr():
    old = DANetLR(0.01, 100, warmup_steps=10)
    for _ in range(37):
        old.step()
    same = DANetLR(0.01, 100, warmup_steps=10)
    same.set_state_dict(old.state_dict())
    assert same() == old() == pytest.approx(lr_at(37, 0.01, 100, warmup_steps=10))
    changed = DANetLR(0.5, 100, warmup_steps=10)
    changed.set_state_dict(old.state_dict())
    assert changed() == pytest.approx(lr_at(37, 0.5, 100, warmup_steps=10))  # not the saved 0.01 curve


# -- what the optimizer really applies ----------------------------------------------------------------------------
# A backbone-like and a head-like (10x) parameter under loss = c * (w + h): the update of each step must be the
# Momentum-with-L2 update at lr_at(t) (times 10 for the head), in both graph modes.

STEPS_PER_EPOCH, EPOCHS, C = 3, 4, 2.0


def _schedule_args():
    return _args("--lr", "0.05", "--epoch_num", str(EPOCHS), "--warm_up", "--warmup_epoch", "1")


def _reference_trajectory(args, steps):
    lrs = [lr_at(t, args.lr, EPOCHS * STEPS_PER_EPOCH, warmup_steps=STEPS_PER_EPOCH) for t in range(steps)]
    out = []
    for mult in (1.0, 10.0):
        p, v, path = 1.0, 0.0, []
        for lr in lrs:
            v = args.momentum * v + (C + args.weight_decay * p)
            p -= lr * mult * v
            path.append(p)
        out.append(path)
    return np.array(out).T, lrs


def _attrs():
    return [paddle.ParamAttr(initializer=paddle.nn.initializer.Constant(1.0), learning_rate=m) for m in (1.0, 10.0)]


def test_dygraph_optimizer_applies_the_scheduled_lr_and_the_head_multiplier():
    args = _schedule_args()
    steps = EPOCHS * STEPS_PER_EPOCH
    scheduler = build_scheduler(args, STEPS_PER_EPOCH)
    params = [paddle.create_parameter([1], "float32", attr=a) for a in _attrs()]
    optimizer = build_optimizer(args, scheduler, params)
    path, used = [], []
    for _ in range(steps):
        used.append(optimizer.get_lr())
        (C * (params[0] + params[1])).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        path.append([p.numpy().item() for p in params])
    want_path, want_lrs = _reference_trajectory(args, steps)
    np.testing.assert_allclose(used, want_lrs, rtol=1e-12)
    np.testing.assert_allclose(path, want_path, rtol=1e-5, atol=1e-7)


@contextlib.contextmanager
def _static_mode():
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()


def static_lr_variable(program):
    """The scope variable the Executor fills with ``scheduler()`` before each run (PIR and legacy names)."""
    name = getattr(program, "lr_name", None) or program.lr_scheduler._var_name
    return np.array(paddle.static.global_scope().find_var(name).get_tensor()).item()


def test_static_program_applies_the_scheduled_lr_and_the_head_multiplier():
    args = _schedule_args()
    steps = EPOCHS * STEPS_PER_EPOCH
    with _static_mode(), paddle.static.scope_guard(paddle.static.Scope()):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [1], "float32")
            params = [paddle.static.create_parameter([1], "float32", attr=a) for a in _attrs()]
            loss = (x * (params[0] + params[1])).sum()
            scheduler = build_scheduler(args, STEPS_PER_EPOCH)
            build_optimizer(args, scheduler).minimize(loss)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        path, used = [], []
        for _ in range(steps):
            exe.run(main, feed={"x": np.array([C], np.float32)})
            used.append(static_lr_variable(main))
            scheduler.step()
            path.append([np.array(paddle.static.global_scope().find_var(p.name).get_tensor()).item()
                         for p in params])
    want_path, want_lrs = _reference_trajectory(args, steps)
    np.testing.assert_allclose(used, want_lrs, rtol=1e-6)
    np.testing.assert_allclose(path, want_path, rtol=1e-5, atol=1e-7)
