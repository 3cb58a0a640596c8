"""The DANet model: shapes at odd sizes, parameter counts, gradients, attention identities, static = dygraph."""

import numpy as np
import paddle
import pytest
from tracelib import trace_and_run

import danet.models.attention as attention
from danet import build_model
from danet.errors import UserError
from danet.losses import danet_loss
from danet.models.attention import ChannelAttention, PositionAttention

C = 5  # classes of the small test models


def _image(b, h, w, seed=0):
    return np.random.default_rng(seed).normal(size=(b, 3, h, w)).astype(np.float32)


def _set_gammas(model, value):
    """Give both attention modules weight (a fresh model has gamma = 0: attention is then skipped)."""
    for name, param in model.named_parameters():
        if name.endswith("gamma"):
            param.set_value(np.full(param.shape, value, np.float32))


@pytest.fixture(scope="module")
def small():
    return build_model("resnet18", C)


@pytest.mark.parametrize("training", [True, False])
def test_outputs_have_the_input_size_at_odd_sizes(small, training):
    small.train() if training else small.eval()
    with paddle.no_grad():
        out = small(paddle.to_tensor(_image(2, 45, 61)))
    outputs = out if training else [out]
    assert isinstance(out, tuple) == training  # train: (fused, position, channel); eval: fused only
    assert [list(o.shape) for o in outputs] == [[2, C, 45, 61]] * len(outputs)
    assert len(outputs) == (3 if training else 1)


@pytest.mark.parametrize("backbone, count", [("resnet50", 47_462_651), ("resnet101", 66_454_779)])
def test_trainable_parameter_count_matches_the_paper_model(backbone, count):
    with paddle.LazyGuard():  # shapes only: no initialisation of 66M values
        model = build_model(backbone, 19)
    assert sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient) == count


def test_every_trainable_parameter_receives_a_gradient():
    model = build_model("resnet18", C)
    model.train()
    label = np.random.default_rng(1).integers(0, C, size=(2, 32, 40))
    label[:, :4] = 255

    def backward():
        model.clear_gradients()
        loss, _ = danet_loss(model(paddle.to_tensor(_image(2, 32, 40))), paddle.to_tensor(label))
        loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if not p.stop_gradient}

    # At gamma = 0 the attention convolutions get no gradient yet, but gamma does, so it moves off 0.
    grads = backward()
    assert all(float(grads[n].abs().max()) > 0 for n in grads if n.endswith("gamma"))
    _set_gammas(model, 0.5)
    grads = backward()
    dead = [n for n, g in grads.items() if g is None or float(g.abs().max()) == 0.0]
    assert not dead, f"no gradient for {dead}"
    assert len(grads) == 86  # ResNet-18 DANet: all but the 48 BatchNorm running statistics


def test_gamma_zero_makes_both_attention_modules_the_identity():
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2, 16, 5, 7)).astype(np.float32))
    pam, cam = PositionAttention(16), ChannelAttention()
    np.testing.assert_array_equal(pam(x).numpy(), x.numpy())
    np.testing.assert_array_equal(cam(x).numpy(), x.numpy())
    for module in (pam, cam):  # and they do act once gamma moves
        module.gamma.set_value(np.ones([1], np.float32))
        assert np.abs(module(x).numpy() - x.numpy()).max() > 1e-3


def _pam_pair(chunk_size, recompute=False):
    plain = PositionAttention(16)
    chunked = PositionAttention(16, chunk_size=chunk_size, recompute=recompute)
    chunked.set_state_dict(plain.state_dict())
    for module in (plain, chunked):
        module.gamma.set_value(np.full([1], 0.7, np.float32))
    return plain, chunked


@pytest.fixture
def attend_calls(monkeypatch):
    """Record the number of queries of every attention product (to see that chunking really happens)."""
    calls, original = [], attention.attend

    def spy(q, k, v):
        calls.append(q.shape[1])
        return original(q, k, v)

    monkeypatch.setattr(attention, "attend", spy)
    return calls


def test_chunked_position_attention_equals_plain_attention_without_gradients(attend_calls):
    plain, chunked = _pam_pair(chunk_size=7)
    x = paddle.to_tensor(np.random.default_rng(3).normal(size=(2, 16, 5, 6)).astype(np.float32))
    plain.eval(), chunked.eval()
    with paddle.no_grad():
        want = plain(x).numpy()
        attend_calls.clear()
        got = chunked(x).numpy()
    assert attend_calls == [7, 7, 7, 7, 2]  # N = 30 positions in chunks of 7
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_recomputed_chunks_give_the_same_values_and_gradients_in_training(attend_calls):
    plain, chunked = _pam_pair(chunk_size=8, recompute=True)
    data = np.random.default_rng(4).normal(size=(2, 16, 5, 6)).astype(np.float32)
    weight = paddle.to_tensor(np.random.default_rng(5).normal(size=data.shape).astype(np.float32))

    def run(module):
        x = paddle.to_tensor(data, stop_gradient=False)
        out = module(x)
        (out * weight).sum().backward()
        return out.numpy(), x.grad.numpy(), {n: p.grad.numpy() for n, p in module.named_parameters()}

    want_out, want_dx, want_dp = run(plain)
    attend_calls.clear()
    got_out, got_dx, got_dp = run(chunked)
    assert attend_calls[:4] == [8, 8, 8, 6]  # chunked forward (the backward recomputes them again)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-4, atol=1e-5)
    for name in want_dp:
        np.testing.assert_allclose(got_dp[name], want_dp[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_static_program_gives_the_dygraph_output_at_unknown_sizes():
    model = build_model("resnet18", C)
    _set_gammas(model, 0.3)
    model.eval()
    images = [_image(1, 45, 61, seed=6), _image(2, 33, 40, seed=7)]
    with paddle.no_grad():
        want = [model(paddle.to_tensor(x)).numpy() for x in images]
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    got = [outs[0] for outs in trace_and_run(lambda: build_model("resnet18", C), state, images)]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_dropout_does_not_fix_the_batch_size(small, batch):
    small.train()
    with paddle.no_grad():
        outputs = small(paddle.to_tensor(_image(batch, 24, 32)))
    assert [list(o.shape) for o in outputs] == [[batch, C, 24, 32]] * 3


def test_build_model_rejects_an_unknown_backbone():
    with pytest.raises(UserError, match="unknown backbone 'resnet77'.*resnet101"):
        build_model("resnet77", C)


def test_build_model_rejects_a_multi_dilation_of_the_wrong_length():
    with pytest.raises(UserError, match=r"needs 3 positive values for resnet101.*\[4, 8\]"):
        with paddle.LazyGuard():
            build_model("resnet101", C, multi_grid=True, multi_dilation=(4, 8))


def test_head_parameters_learn_ten_times_faster_than_the_backbone():
    with paddle.LazyGuard():
        model = build_model("resnet50", 19)
    rates = {n: p.optimize_attr["learning_rate"] for n, p in model.named_parameters() if not p.stop_gradient}
    assert {r for n, r in rates.items() if n.startswith("head.")} == {10.0}
    assert {r for n, r in rates.items() if n.startswith("backbone.")} == {1.0}
    assert all(n.startswith(("head.", "backbone.")) for n in rates)
    assert "head.pam.gamma" in rates and "head.cam.gamma" in rates
