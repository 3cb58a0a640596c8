"""Code paths a small CPU test never takes on its own: the GPU's scaled_dot_product_attention, AMP, and the
strip-wise convolution of whole-image inference.

The attention tests compare against a float64 numpy reference of the paper's formulas, so a path that computed
something else (a 1/sqrt(d) scale, fp16 energies, a transposed product) fails.
"""
import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import danet.models.attention as attention
import danet.models.lowmem as lowmem
from danet import build_model
from danet.models.attention import ChannelAttention, PositionAttention


def _conv1x1(layer, x):
    """float64 [B, C, H, W] -> [B, C', N] through a 1x1 Conv2D's weights."""
    w = layer.weight.numpy().astype(np.float64)[:, :, 0, 0]
    b = layer.bias.numpy().astype(np.float64)
    return np.einsum("oc,bcn->bon", w, x.reshape(x.shape[0], x.shape[1], -1)) + b[None, :, None]


def _softmax(e):
    e = e - e.max(axis=-1, keepdims=True)
    p = np.exp(e)
    return p / p.sum(axis=-1, keepdims=True)


def reference_pam(pam, x, qkv=None):
    """gamma * (V softmax(Q^T K)^T) + x, unscaled, in float64."""
    x64 = x.astype(np.float64)
    q, k, v = qkv if qkv is not None else [_conv1x1(layer, x64) for layer in (pam.query, pam.key, pam.value)]
    attn = _softmax(np.einsum("bcn,bcm->bnm", q, k))            # [B, N(query), N(key)]
    out = np.einsum("bcm,bnm->bcn", v, attn).reshape(x.shape)
    return float(pam.gamma.numpy()[0]) * out + x64


def reference_cam(cam, x):
    a = x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1)
    energy = np.einsum("bcn,bdn->bcd", a, a)
    attn = _softmax(energy.max(axis=-1, keepdims=True) - energy)
    return float(cam.gamma.numpy()[0]) * np.einsum("bcd,bdn->bcn", attn, a).reshape(x.shape) + x


def _pam(channels=16, **kwargs):
    pam = PositionAttention(channels, **kwargs)
    pam.gamma.set_value(np.full([1], 0.7, np.float32))
    return pam


def _image(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


@contextlib.contextmanager
def _math_backend():
    """Force SDPA's dense math backend where Paddle lets us choose (the only one on a CPU anyway)."""
    kernel = getattr(F, "sdp_kernel", None)
    with kernel(enable_math=True, enable_flash=False, enable_mem_efficient=False) if kernel else \
            contextlib.nullcontext():
        yield


def _paddle_version():
    return tuple(int(p) for p in paddle.__version__.split(".")[:2] if p.isdigit())


@pytest.fixture
def as_if_on_gpu(monkeypatch):
    """Make PositionAttention take its GPU branch on this CPU; record the calls of the SDPA function."""
    monkeypatch.setattr(attention, "_on_gpu", lambda x: True)
    calls, real = [], attention.sdpa_with_scale()
    if real is not None:
        def spy(*args, **kwargs):
            calls.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(attention, "sdpa_with_scale", lambda: spy)
    return real, calls


def test_gpu_branch_uses_sdpa_with_scale_one_when_paddle_offers_it_else_falls_back(as_if_on_gpu):
    real, calls = as_if_on_gpu
    pam = _pam(chunk_size=16)                # N = 42 > 16: the fallback is the chunked path
    x = _image((2, 16, 6, 7), seed=0)
    with paddle.no_grad(), _math_backend():
        got = pam(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(got, reference_pam(pam, x), rtol=1e-5, atol=1e-5)
    if _paddle_version() >= (3, 3):          # scale= came with Paddle 3.x (PaddlePaddle/Paddle#76446)
        assert real is not None
    if _paddle_version() < (3, 0):           # 2.6's SDPA has no scale: DANet's unscaled energy needs the fallback
        assert real is None
    sdpa = getattr(paddle.nn.functional, "scaled_dot_product_attention", None)
    if real is None and sdpa is not None:    # any version: the fallback is taken only when SDPA cannot take scale=
        q = paddle.zeros([1, 4, 1, 8])
        with pytest.raises(TypeError):
            sdpa(q, q, q, scale=1.0)
    if real is not None:
        assert pam.path(paddle.to_tensor(x)) == "sdpa" and calls == [{"scale": 1.0}]
    else:
        assert pam.path(paddle.to_tensor(x)) == "chunked" and calls == []


def test_sdpa_branch_gives_the_plain_gradients(as_if_on_gpu, monkeypatch):
    real, calls = as_if_on_gpu
    data, weight = _image((2, 16, 5, 6), seed=1), paddle.to_tensor(_image((2, 16, 5, 6), seed=2))

    def grads(module):
        x = paddle.to_tensor(data, stop_gradient=False)
        with _math_backend():
            (module(x) * weight).sum().backward()
        return [x.grad.numpy()] + [p.grad.numpy() for p in module.parameters()]

    on_gpu_branch = _pam()
    want = grads(on_gpu_branch)  # also the reference module: same weights below
    plain = _pam()
    plain.set_state_dict(on_gpu_branch.state_dict())
    monkeypatch.setattr(attention, "_on_gpu", lambda x: False)
    for got, expected in zip(grads(plain), want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert len(calls) == (1 if real is not None else 0)


def test_position_attention_energies_are_fp32_when_the_convolutions_give_fp16(monkeypatch):
    """Under AMP O1 the 1x1 convolutions return fp16; q.k here reaches ~1e5, beyond fp16's 65504.

    The CPU has no fp16 bmm/softmax kernels, so without the fp32 cast this raises; with it the result is the
    float64 reference computed from the same fp16 q, k, v.
    """
    pam = _pam(channels=16)
    x = _image((1, 16, 4, 5), seed=3)
    qkv = {}

    def fp16_conv(layer, name):
        def run(inp):
            out = paddle.nn.functional.conv2d(inp, layer.weight, layer.bias).astype("float16")
            qkv[name] = out.astype("float32").numpy().astype(np.float64).reshape(out.shape[0], out.shape[1], -1)
            return out
        return run

    for name in ("query", "key"):  # big q and k: unscaled energies beyond the fp16 range
        layer = getattr(pam, name)
        layer.weight.set_value(layer.weight.numpy() * 100)
    for name in ("query", "key", "value"):
        monkeypatch.setattr(getattr(pam, name), "forward", fp16_conv(getattr(pam, name), name))
    with paddle.no_grad():
        got = pam(paddle.to_tensor(x)).numpy()
    energy = np.einsum("bcn,bcm->bnm", qkv["query"], qkv["key"])
    assert np.abs(energy).max() > 65504  # the test really is in the overflow regime
    want = reference_pam(pam, x, (qkv["query"], qkv["key"], qkv["value"]))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_channel_attention_energies_are_fp32_for_an_fp16_input():
    cam = ChannelAttention()
    cam.gamma.set_value(np.full([1], 0.5, np.float32))
    x16 = _image((1, 8, 32, 32), seed=4, scale=10.0).astype(np.float16)  # A A^T ~ 1024 * 100 > 65504
    a = x16.astype(np.float64).reshape(1, 8, -1)
    assert np.einsum("bcn,bcn->bc", a, a).max() > 65504
    out = cam(paddle.to_tensor(x16))
    got = out.astype("float32").numpy()
    assert np.isfinite(got).all()
    # The attention output is rounded to fp16 (the input's dtype) before the residual: fp16 tolerance.
    np.testing.assert_allclose(got, reference_cam(cam, x16.astype(np.float32)), rtol=2e-3, atol=2e-2)


def test_amp_o1_leaves_the_attention_products_to_our_fp32_cast():
    """Our fp32 cast holds under auto_cast O1 only while bmm is not on the fp16 white list and softmax is on the
    black list; a Paddle that changed this would silently run the energies in fp16 again."""
    from paddle.amp import amp_lists

    assert "bmm" not in amp_lists.white_list()["float16"]["O1"]
    assert "softmax" in amp_lists.black_list()["float16"]["O1"]


def test_channel_attention_max_shift_gets_no_gradient_and_changes_no_numbers():
    cam = ChannelAttention()
    cam.gamma.set_value(np.full([1], 0.5, np.float32))
    data = _image((2, 6, 5, 4), seed=5)
    x = paddle.to_tensor(data, stop_gradient=False)
    out = cam(x)
    np.testing.assert_allclose(out.numpy(), reference_cam(cam, data), rtol=1e-5, atol=1e-5)
    weight = _image(data.shape, seed=6)
    (out * paddle.to_tensor(weight)).sum().backward()
    # d/dx of sum(weight * cam(x)) by central differences on a few entries, in float64 numpy.
    rng = np.random.default_rng(7)
    for index in [tuple(rng.integers(0, s) for s in data.shape) for _ in range(4)]:
        step = np.zeros_like(data, dtype=np.float64)
        step[index] = 1e-4
        numeric = ((weight * reference_cam(cam, data + step)).sum()
                   - (weight * reference_cam(cam, data - step)).sum()) / 2e-4
        np.testing.assert_allclose(x.grad.numpy()[index], numeric, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kernel, dilation, stride, height", [
    (3, 1, 1, 13), (3, 4, 1, 17), (7, 1, 1, 10), (5, 3, 1, 20), (7, 1, 2, 21), (7, 1, 2, 20), (1, 1, 2, 15),
    (3, 2, 1, 3)])
def test_strip_convolution_gives_the_plain_convolution_numbers(monkeypatch, kernel, dilation, stride, height):
    monkeypatch.setattr(lowmem, "BUFFER_BYTES", 8 * kernel * kernel * 9 * 4 * 3)  # about 3 output rows per strip
    padding = dilation * (kernel - 1) // 2
    conv = lowmem.StripConv2D(8, 5, kernel, stride=stride, padding=padding, dilation=dilation)
    x = paddle.to_tensor(_image((2, 8, height, 9), seed=8))
    with paddle.no_grad():
        rows = conv._strip_rows(x)
        got = conv(x).numpy()
    want = paddle.nn.functional.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding,
                                       dilation=dilation).numpy()
    assert 0 < rows < got.shape[2] or height == 3  # strips really happen (a 3-row input fits in one: plain)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    x.stop_gradient = False
    assert conv._strip_rows(x) == 0  # with gradients it is the plain convolution


def test_whole_model_inference_in_strips_gives_the_same_logits(monkeypatch):
    model = build_model("resnet18", 5)
    model.eval()
    x = paddle.to_tensor(_image((1, 3, 96, 80), seed=9))
    with paddle.no_grad():
        want = model(x).numpy()
        monkeypatch.setattr(lowmem, "BUFFER_BYTES", 64 * 1024)  # most 3x3 convolutions now run in strips
        strips = [layer for layer in model.sublayers() if isinstance(layer, lowmem.StripConv2D)]
        assert any(layer._strip_rows(paddle.zeros([1, layer._in_channels, 12, 10])) for layer in strips)
        got = model(x).numpy()
    # Strips change the GEMM blocking, so float32 rounding differs; 18 layers deep it stays within 1e-5 of the
    # logits' scale (Paddle 2.6's kernels round differently from 3.3's).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))
