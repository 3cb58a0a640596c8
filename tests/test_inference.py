"""Inference: windows, flip and scales agree with whole-image inference; evaluate() counts the right pixels."""
import numpy as np
import pytest

from danet.errors import UserError
from danet.inference import MULTI_SCALES, dygraph_predict_fn, evaluate, predict, predict_label

C = 4  # classes of the fake models


class FakeModel:
    """A fixed random per-pixel map of the 3 input channels to C logits (a 1x1 conv plus a tanh term).

    Position independent, so sliding windows must reproduce whole-image logits; with ``ramp`` a
    term growing along the width is added, which makes it NOT flip-equivariant. Records batch shapes.
    """

    def __init__(self, ramp=False, seed=0):
        rng = np.random.default_rng(seed)
        self.w, self.v = rng.normal(size=(2, C, 3)).astype(np.float32)
        self.b, self.a = rng.normal(size=(2, C)).astype(np.float32)
        self.ramp = ramp
        self.shapes = []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        out = np.einsum("kc,bchw->bkhw", self.w, batch) + 0.5 * np.tanh(np.einsum("kc,bchw->bkhw", self.v, batch))
        out += self.b[:, None, None]
        if self.ramp:
            out += self.a[:, None, None] * np.linspace(-1, 1, batch.shape[3], dtype=np.float32)
        return out.astype(np.float32)


def _image(h, w, seed=1):
    return np.random.default_rng(seed).normal(size=(3, h, w)).astype(np.float32)


def _whole(fn, image):
    return fn(image[None])[0]


@pytest.mark.parametrize("crop", [53, 80])
def test_a_crop_that_covers_the_image_is_whole_image_inference(crop):
    fn, image = FakeModel(ramp=True), _image(37, 53)
    out = predict(fn, image, C, base_size=53, crop_size=crop)
    np.testing.assert_array_equal(out, _whole(fn, image))
    assert fn.shapes[-1] == (1, 3, 37, 53)  # run whole, never padded to the crop


@pytest.mark.parametrize("size", [(37, 53), (10, 53), (53, 12)])
def test_overlapping_windows_reproduce_whole_image_logits(size):
    fn, image = FakeModel(), _image(*size)
    out = predict(fn, image, C, base_size=max(size), crop_size=16, stride_rate=2 / 3)
    assert {s[2:] for s in fn.shapes} == {(16, 16)}  # windows only (a short side is padded to the crop)
    np.testing.assert_allclose(out, _whole(fn, image), rtol=1e-6, atol=1e-6)
    assert out.shape == (C,) + size


def test_flip_changes_nothing_for_a_symmetric_image_and_an_equivariant_model():
    image = _image(24, 40)
    image = image + image[..., ::-1]
    plain = predict(FakeModel(), image, C, base_size=40, crop_size=16)
    flipped = predict(FakeModel(), image, C, base_size=40, crop_size=16, flip=True)
    np.testing.assert_allclose(flipped, plain, rtol=1e-6, atol=1e-6)


def test_flip_is_the_mean_of_the_plain_and_mirrored_passes():
    fn, image = FakeModel(ramp=True), _image(24, 40)
    out = predict(fn, image, C, base_size=40, crop_size=40, flip=True)
    expected = (_whole(fn, image) + _whole(fn, image[..., ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("crop", [40, 16])
def test_flip_has_the_same_weight_whole_and_windowed(crop):
    # flip=True with a model must equal flip=False with that model symmetrised, in both branches.
    fn, image = FakeModel(ramp=True), _image(24, 40)

    def symmetrised(batch):
        return (fn(batch) + fn(batch[..., ::-1].copy())[..., ::-1]) / 2

    out = predict(fn, image, C, base_size=40, crop_size=crop, flip=True)
    np.testing.assert_allclose(out, predict(symmetrised, image, C, base_size=40, crop_size=crop),
                               rtol=1e-6, atol=1e-6)


def test_multi_scale_flip_returns_finite_logits_at_the_original_size():
    fn, image = FakeModel(), _image(30, 45)
    out = predict(fn, image, C, base_size=40, crop_size=24, scales=MULTI_SCALES, flip=True)
    assert out.shape == (C, 30, 45) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # Scale 0.5: long side int(40 * 0.5 + 0.5) = 20, short side 30 * 20 / 45 -> 13, run whole with its mirror.
    assert fn.shapes[0] == (2, 3, 13, 20)


def test_window_batch_does_not_change_the_result():
    image = _image(37, 53)
    ref = predict(FakeModel(ramp=True), image, C, base_size=60, crop_size=16, window_batch=1, flip=True)
    for batch in (3, 8):
        fn = FakeModel(ramp=True)
        out = predict(fn, image, C, base_size=60, crop_size=16, window_batch=batch, flip=True)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
        assert max(s[0] for s in fn.shapes) <= batch


def test_wrong_number_of_classes_is_a_user_error():
    with pytest.raises(UserError, match="num_classes=5"):
        predict(FakeModel(), _image(8, 8), 5, base_size=8, crop_size=8)


def _dataset():
    rng = np.random.default_rng(2)
    items = []
    for h, w in [(20, 30), (30, 17), (30, 30)]:  # long side 30 = base_size: no resizing
        label = rng.integers(0, C, size=(h, w))
        label[rng.random((h, w)) < 0.2] = 255
        items.append((_image(h, w, seed=h + w), label))
    return items


def test_evaluate_counts_every_labelled_pixel_once():
    fn, data = FakeModel(), _dataset()
    seen = []
    matrix = evaluate(fn, data, C, base_size=30, crop_size=30, progress=False,
                      on_prediction=lambda i, pred, label: seen.append((i, pred.dtype, pred.shape)))
    expected = np.zeros((C, C), dtype=np.int64)
    for image, label in data:
        pred = _whole(fn, image).argmax(axis=0)
        keep = label != 255
        np.add.at(expected, (label[keep], pred[keep]), 1)
    np.testing.assert_array_equal(matrix.matrix, expected)
    assert seen == [(i, np.uint8, data[i][1].shape) for i in range(3)]
    assert evaluate(fn, data, C, base_size=30, crop_size=30, progress=False, limit=1).matrix.sum() == \
        (data[0][1] != 255).sum()


def test_evaluate_names_the_image_with_a_bad_label():
    data = _dataset()
    data[1][1][0, 0] = 40
    with pytest.raises(UserError, match="image 1: label contains value 40"):
        evaluate(FakeModel(), data, C, base_size=30, crop_size=30, progress=False)


def test_real_danet_sliding_window_and_training_state_restored():
    from danet import build_model

    model = build_model("resnet18", num_classes=5)
    model.train()
    fn = dygraph_predict_fn(model, window_batch=2)
    image = _image(45, 61)
    out = predict(fn, image, 5, base_size=61, crop_size=32, flip=True)
    assert out.shape == (5, 45, 61) and np.isfinite(out).all()
    assert model.training and all(layer.training for layer in model.sublayers())
    label = predict_label(fn, image, 5, base_size=61, crop_size=32, flip=True)
    np.testing.assert_array_equal(label, out.argmax(axis=0))  # eval mode: no dropout, same answer twice
