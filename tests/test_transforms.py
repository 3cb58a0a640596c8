"""Training/validation transforms: image and label stay aligned, labels keep their values, shapes, seeds, PIL parity."""
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from danet.data import transforms as T

H, W = 60, 90  # small enough that 2 * coordinate fits in uint8


def coordinate_sample():
    """Image whose R/G channels are 2*x / 2*y; labels holding x and y (no 255), for alignment checks."""
    ys, xs = np.mgrid[0:H, 0:W]
    image = np.stack([2 * xs, 2 * ys, np.full_like(xs, 100)], axis=-1).astype(np.uint8)
    return image, xs.astype(np.uint8), ys.astype(np.uint8)


def chain(min_size, max_size, crop):
    """The seed's geometric steps one by one (what RandomScaleCrop fuses)."""
    resize, flip = T.RandomResizeShortSide(min_size, max_size), T.RandomHorizontalFlip()
    return [resize, flip, T.PadToSize(crop), T.RandomCrop(crop)]


GEOMETRIC = {
    "resize": lambda: [T.RandomResizeShortSide(30, 120)],
    "flip": lambda: [T.RandomHorizontalFlip(prob=1.0)],
    "pad": lambda: [T.PadToSize(100)],
    "crop": lambda: [T.RandomCrop(40)],
    "chain": lambda: chain(30, 120, 64),
    "fused": lambda: [T.RandomScaleCrop(30, 120, 64)],
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
@pytest.mark.parametrize("seed", range(6))
def test_geometric_transforms_keep_image_and_label_aligned(name, seed):
    image, label_x, label_y = coordinate_sample()
    outputs = []
    for label in (label_x, label_y):  # same seed -> same geometry for both coordinate labels
        transform = T.Compose(GEOMETRIC[name]())
        outputs.append(transform(image, label, np.random.default_rng(seed)))
    (out_image, out_x), (_, out_y) = outputs
    valid = out_x != 255
    assert valid.any() and ((out_y != 255) == valid).all()
    # Bilinear interpolation of a coordinate ramp gives the sampled coordinate; nearest picks the closest pixel.
    decoded_x = out_image[..., 0].astype(float) / 2
    decoded_y = out_image[..., 1].astype(float) / 2
    assert np.abs(decoded_x - out_x)[valid].max() <= 0.75
    assert np.abs(decoded_y - out_y)[valid].max() <= 0.75
    assert (out_image[~valid] == 0).all(), "padding must be 0 in the image where the label is 255"


@pytest.mark.parametrize("seed", range(8))
def test_fused_scale_crop_equals_the_plain_chain(seed):
    rng = np.random.default_rng(100 + seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (H, W), dtype=np.uint8)
    plain = T.Compose(chain(30, 120, 64))(image, label, np.random.default_rng(seed))
    fused = T.Compose([T.RandomScaleCrop(30, 120, 64)])(image, label, np.random.default_rng(seed))
    assert (plain[1] == fused[1]).all(), "labels must be bit-identical"
    diff = np.abs(plain[0].astype(int) - fused[0].astype(int))
    assert diff.max() <= 8 and diff.mean() < 1.0, "images equal within OpenCV's warp rounding"


def test_labels_only_keep_their_values_and_padding_adds_255():
    rng = np.random.default_rng(0)
    values = np.array([0, 3, 7, 18, 255], dtype=np.uint8)
    label = values[rng.integers(0, len(values), (H, W))]
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    transform = T.build_train_transform(base_size=40, crop_size=64)
    seen = set()
    for _ in range(20):
        _, out = transform(image, label)
        seen |= set(np.unique(out).tolist())
    assert seen <= set(values.tolist())


@pytest.mark.parametrize("size", [(20, 30), (64, 40), (200, 300)])
def test_train_output_has_crop_size_even_for_small_images(size):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    label = rng.integers(0, 19, size, dtype=np.uint8)
    out_image, out_label = T.build_train_transform(base_size=16, crop_size=48)(image, label)
    assert out_image.shape == (3, 48, 48) and out_image.dtype == np.float32
    assert out_label.shape == (48, 48) and out_label.dtype == np.int64


def test_same_global_seed_gives_identical_samples():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (H, W), dtype=np.uint8)
    transform = T.build_train_transform(base_size=40, crop_size=48)
    runs = []
    for seed in (5, 5, 6):
        np.random.seed(seed)
        runs.append([transform(image, label) for _ in range(5)])
    for (a_img, a_lab), (b_img, b_lab) in zip(runs[0], runs[1]):
        assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(runs[0], runs[2]))


@pytest.mark.parametrize("transform", [T.build_val_transform(), T.Compose([T.Normalize(), T.ToCHW()])])
def test_normalize_uses_imagenet_mean_and_std_on_rgb_over_255(transform):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out, label = transform(image, np.zeros((7, 9), np.uint8))
    expected = (image / 255.0 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD)
    assert out.shape == (3, 7, 9) and out.dtype == np.float32 and label.dtype == np.int64
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def _photo():
    """A smooth image with a hard-edged patch, like a small crop of a street photo."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(2)))
    image = image.copy()
    image[10:25, 12:40] = (250, 10, 30)
    return image


@pytest.mark.parametrize(
    "adjust, enhancer",
    [
        (T.adjust_brightness, ImageEnhance.Brightness),
        (T.adjust_saturation, ImageEnhance.Color),
        (T.adjust_contrast, ImageEnhance.Contrast),
        (T.adjust_sharpness, ImageEnhance.Sharpness),
    ],
)
@pytest.mark.parametrize("factor", [0.75, 0.9, 1.1, 1.25])
def test_colour_jitter_matches_pil_image_enhance(adjust, enhancer, factor):
    image = _photo()
    expected = np.asarray(enhancer(Image.fromarray(image)).enhance(factor)).astype(int)
    assert np.abs(adjust(image, factor).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("radius", [0.5, 0.8, 0.99])
def test_blur_is_close_to_pil_gaussian_blur(radius):
    image = _photo()
    expected = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius))).astype(float)

    class FixedRadius:  # stands in for the rng: first draw applies the blur, second gives the radius
        draws = iter([0.0, radius])

        def random(self):
            return next(self.draws)

    blurred, _ = T.RandomGaussianBlur()(image, None, FixedRadius())
    assert np.abs(blurred - expected).mean() < 1.0


def test_photometric_transforms_leave_the_label_alone():
    image = _photo()
    label = np.random.default_rng(5).integers(0, 19, image.shape[:2], dtype=np.uint8)
    for transform in (T.RandomGaussianBlur(prob=1.0), T.RandomColorJitter(prob=1.0)):
        out_image, out_label = transform(image, label, np.random.default_rng(0))
        assert out_label is label and out_image.shape == image.shape and out_image.dtype == np.uint8


def test_padding_is_centred_like_the_seed():
    image = np.full((21, 30, 3), 7, np.uint8)
    out_image, out_label = T.PadToSize(48)(image, np.zeros((21, 30), np.uint8))
    rows, cols = np.nonzero(out_label != 255)
    # pad 27 rows -> 13 above, 14 below; pad 18 columns -> 9 each side
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (13, 33, 9, 38)
    assert (out_image[out_label == 255] == 0).all() and (out_image[out_label != 255] == 7).all()
