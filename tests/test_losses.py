"""The segmentation loss: ignored pixels count for nothing, the mean is over valid pixels only."""
import numpy as np
import paddle
import pytest

from danet.losses import cross_entropy, danet_loss


def _logits(b=2, c=4, h=5, w=7, seed=0):
    return np.random.default_rng(seed).normal(scale=2.0, size=(b, c, h, w)).astype(np.float32)


def _label(b=2, c=4, h=5, w=7, seed=1, void=0.3):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, c, size=(b, h, w))
    label[rng.random(label.shape) < void] = 255
    return label


def numpy_cross_entropy(logits, label):
    """Reference: per-pixel -log softmax at the true class, averaged over the non-255 pixels."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    valid = label != 255
    b, h, w = np.nonzero(valid)
    return -log_p[b, label[valid], h, w].mean()


def _ce(logits, label):
    return float(cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(label)))


def test_mean_over_valid_pixels_equals_a_numpy_reference():
    logits, label = _logits(), _label()
    assert 0 < (label == 255).mean() < 1
    np.testing.assert_allclose(_ce(logits, label), numpy_cross_entropy(logits, label), rtol=1e-5)


def test_ignored_pixels_do_not_change_the_loss_or_get_gradients():
    logits, label = _logits(), _label()
    changed = logits.copy()
    changed[np.broadcast_to((label == 255)[:, None], logits.shape)] = 50.0  # wild logits where void
    assert _ce(changed, label) == pytest.approx(_ce(logits, label), rel=1e-6)
    x = paddle.to_tensor(logits, stop_gradient=False)
    cross_entropy(x, paddle.to_tensor(label)).backward()
    grad = np.abs(x.grad.numpy()).sum(axis=1)  # [B, H, W]
    assert (grad[label == 255] == 0).all() and (grad[label != 255] > 0).all()


def test_a_batch_with_every_pixel_ignored_gives_zero_not_nan():
    logits = _logits()
    label = np.full((2, 5, 7), 255)
    x = paddle.to_tensor(logits, stop_gradient=False)
    loss = cross_entropy(x, paddle.to_tensor(label))
    loss.backward()
    assert float(loss) == 0.0
    assert np.isfinite(x.grad.numpy()).all() and not x.grad.numpy().any()


def test_danet_loss_is_the_weighted_sum_of_the_three_outputs():
    outputs = [_logits(seed=s) for s in (2, 3, 4)]
    label = _label()
    refs = [numpy_cross_entropy(o, label) for o in outputs]
    total, parts = danet_loss([paddle.to_tensor(o) for o in outputs], paddle.to_tensor(label), weights=(1.0, 0.5, 2.0))
    assert list(parts) == ["fused", "position", "channel"]
    np.testing.assert_allclose([float(p) for p in parts.values()], refs, rtol=1e-5)
    np.testing.assert_allclose(float(total), refs[0] + 0.5 * refs[1] + 2.0 * refs[2], rtol=1e-5)
    default, _ = danet_loss([paddle.to_tensor(o) for o in outputs], paddle.to_tensor(label))
    np.testing.assert_allclose(float(default), sum(refs), rtol=1e-5)


def test_danet_loss_needs_one_weight_per_output():
    outputs = [paddle.to_tensor(_logits(seed=s)) for s in (2, 3, 4)]
    with pytest.raises(ValueError, match="3 outputs but 2 loss weights"):
        danet_loss(outputs, paddle.to_tensor(_label()), weights=(1.0, 1.0))
