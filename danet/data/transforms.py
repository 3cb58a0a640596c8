"""Joint (image, label) transforms on numpy arrays, the seed's training recipe re-done with OpenCV.

Every transform is a callable ``t(image, label, rng) -> (image, label)``:

- ``image``: uint8 ``[H, W, 3]`` RGB (float32 after :class:`Normalize`, ``[3, H, W]`` after :class:`ToCHW`);
- ``label``: integer ``[H, W]`` train ids, 255 = void (int64 after :class:`ToCHW`);
- ``rng``: a ``numpy.random.Generator``; all randomness of a sample comes from it.

:class:`Compose` makes one Generator per sample, seeded from the global ``np.random``. Paddle's DataLoader seeds
``np.random`` in each worker from the main process's ``np.random``, so ``np.random.seed(s)`` in the main process
makes the augmentation stream reproducible with any number of workers.

Labels are never interpolated: they are resized by nearest neighbour and padded with 255.
"""
import math

import cv2
import numpy as np

from danet.constants import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How a model expects its RGB/255 input normalised: ImageNet statistics (this project, the paper's code, mmseg,
# sssegmentation), or mean = std = 0.5 (PaddleSeg's configs).
INPUT_NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


class Compose:
    """Applies transforms in order, drawing all of a sample's random numbers from one Generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, label, rng=None):
        if rng is None:
            # One draw from the global stream per sample: Paddle's DataLoader seeds it in every worker.
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def __repr__(self):
        return "Compose([" + ", ".join(type(t).__name__ for t in self.transforms) + "])"


def short_side_size(height, width, short):
    """Output (height, width) of an aspect-preserving resize whose short side is ``short`` (seed's rounding)."""
    if height > width:
        return int(1.0 * height * short / width), short
    return short, int(1.0 * width * short / height)


def nearest_indices(src_len, dst_len):
    """Source index of each output pixel for a nearest-neighbour resize (pixel centres aligned, as PIL)."""
    idx = ((np.arange(dst_len) + 0.5) * (src_len / dst_len)).astype(np.int64)
    return np.minimum(idx, src_len - 1)


def resize_label(label, height, width):
    """Nearest-neighbour resize of a ``[H, W]`` label to ``[height, width]``; values are only copied."""
    h, w = label.shape
    return np.take(np.take(label, nearest_indices(h, height), axis=0), nearest_indices(w, width), axis=1)


class RandomResizeShortSide:
    """Resizes so the short side is ``randint(min_size, max_size)`` (inclusive): image bilinear, label nearest."""

    def __init__(self, min_size, max_size):
        self.min_size, self.max_size = int(min_size), int(max_size)

    def __call__(self, image, label, rng):
        short = int(rng.integers(self.min_size, self.max_size + 1))
        oh, ow = short_side_size(label.shape[0], label.shape[1], short)
        image = cv2.resize(image, (ow, oh), interpolation=cv2.INTER_LINEAR)
        return image, resize_label(label, oh, ow)


class RandomHorizontalFlip:
    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, image, label, rng):
        if rng.random() < self.prob:
            # Contiguous copies: OpenCV rejects negative-stride views.
            return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])
        return image, label


class PadToSize:
    """Pads centred to at least ``size x size``: image with ``image_fill``, label with 255. No-op when big enough."""

    def __init__(self, size, image_fill=0, label_fill=IGNORE_INDEX):
        self.size, self.image_fill, self.label_fill = size, image_fill, label_fill

    def __call__(self, image, label, rng=None):
        h, w = label.shape
        ph, pw = max(self.size - h, 0), max(self.size - w, 0)
        if ph == 0 and pw == 0:
            return image, label
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image = np.pad(image, pads + ((0, 0),), constant_values=self.image_fill)
        return image, np.pad(label, pads, constant_values=self.label_fill)


class RandomCrop:
    """Crops a random ``size x size`` window (the input must be at least that big: pad first)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image, label, rng):
        h, w = label.shape
        x0 = int(rng.integers(0, w - self.size + 1))
        y0 = int(rng.integers(0, h - self.size + 1))
        window = (slice(y0, y0 + self.size), slice(x0, x0 + self.size))
        return image[window], label[window]


class RandomScaleCrop:
    """Fast equivalent of ``RandomResizeShortSide -> RandomHorizontalFlip -> PadToSize -> RandomCrop``.

    It draws the same random numbers in the same order, then computes only the ``crop x crop`` output: the image
    by an affine warp of the source onto the window (bilinear, equal to the resize-then-crop result within
    OpenCV's 1/32-pixel rounding), the label by nearest-neighbour indexing (bit-identical). Resizing a 1024x2048
    image to 2x before cropping 768x768 would write 14x more pixels than the crop keeps.
    """

    def __init__(self, min_size, max_size, crop_size, flip_prob=0.5, image_fill=0, label_fill=IGNORE_INDEX):
        self.min_size, self.max_size, self.crop = int(min_size), int(max_size), int(crop_size)
        self.flip_prob, self.image_fill, self.label_fill = flip_prob, image_fill, label_fill

    def __call__(self, image, label, rng):
        h, w = label.shape
        oh, ow = short_side_size(h, w, int(rng.integers(self.min_size, self.max_size + 1)))
        flip = rng.random() < self.flip_prob
        x0 = int(rng.integers(0, max(ow, self.crop) - self.crop + 1)) - max(self.crop - ow, 0) // 2
        y0 = int(rng.integers(0, max(oh, self.crop) - self.crop + 1)) - max(self.crop - oh, 0) // 2
        # (x0, y0): window origin in the resized (and flipped) image; negative where centred padding is cut in.
        xa, xb = max(0, -x0), min(self.crop, ow - x0)
        ya, yb = max(0, -y0), min(self.crop, oh - y0)
        out_image = np.full((self.crop, self.crop, 3), self.image_fill, dtype=image.dtype)
        out_label = np.full((self.crop, self.crop), self.label_fill, dtype=label.dtype)
        cols = np.arange(x0 + xa, x0 + xb)  # columns of the flipped resized image
        if flip:
            cols = ow - 1 - cols
        rows = np.arange(y0 + ya, y0 + yb)
        # Two 1-D gathers (whole rows, then columns) are 4x faster than one 2-D fancy index.
        picked = np.take(label, nearest_indices(h, oh)[rows], axis=0)
        out_label[ya:yb, xa:xb] = np.take(picked, nearest_indices(w, ow)[cols], axis=1)
        # Bilinear resize maps output pixel u to source coordinate (u + 0.5) * scale - 0.5.
        sx, sy = w / ow, h / oh
        ax = -sx if flip else sx
        bx = (cols[0] + 0.5) * sx - 0.5
        by = (rows[0] + 0.5) * sy - 0.5
        matrix = np.array([[ax, 0.0, bx], [0.0, sy, by]])
        out_image[ya:yb, xa:xb] = cv2.warpAffine(
            np.ascontiguousarray(image),  # OpenCV rejects negative-stride views
            matrix,
            (xb - xa, yb - ya),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return out_image, out_label


class RandomGaussianBlur:
    """With probability ``prob`` blurs the image with sigma ``U[0, max_radius)`` (PIL ``GaussianBlur(radius)``)."""

    def __init__(self, prob=0.3, max_radius=1.0):
        self.prob, self.max_radius = prob, max_radius

    def __call__(self, image, label, rng):
        if rng.random() >= self.prob:
            return image, label
        sigma = rng.random() * self.max_radius
        if sigma < 0.2:
            return image, label  # neighbour weight < 4e-6: the uint8 result would be unchanged
        ksize = 2 * math.ceil(3 * sigma) + 1
        return cv2.GaussianBlur(image, (ksize, ksize), sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE), label


# OpenCV rounds to nearest where PIL truncates: shifting by just under half a level truncates (except within
# 1e-3 of a level, where the result can be 1 higher).
_TRUNCATE = -0.5 + 1e-3


def _blend(degenerate, image, factor):
    """PIL ``Image.blend(degenerate, image, factor)``: ``degenerate + factor * (image - degenerate)``, clipped to
    uint8. ``degenerate`` is a number or a uint8 array like ``image``. cv2.addWeighted is 20x faster than numpy."""
    if np.isscalar(degenerate):
        return cv2.addWeighted(image, factor, image, 0.0, degenerate * (1 - factor) + _TRUNCATE)
    return cv2.addWeighted(image, factor, degenerate, 1 - factor, _TRUNCATE)


def adjust_brightness(image, factor):
    return _blend(0.0, image, factor)


def adjust_saturation(image, factor):
    """PIL ``ImageEnhance.Color``: blend with the grey (ITU-R 601 luma) version of the image."""
    return _blend(cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB), image, factor)


def adjust_contrast(image, factor):
    """PIL ``ImageEnhance.Contrast``: blend with a flat image at the rounded mean of the grey image."""
    mean = int(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean() + 0.5)
    return _blend(float(mean), image, factor)


_SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0


def adjust_sharpness(image, factor):
    """PIL ``ImageEnhance.Sharpness``: blend with PIL's SMOOTH-filtered image (whose 1-pixel border is unfiltered)."""
    smooth = cv2.filter2D(image, -1, _SMOOTH_KERNEL)  # rounds to uint8, as PIL's filter does
    smooth[[0, -1]] = image[[0, -1]]
    smooth[:, [0, -1]] = image[:, [0, -1]]
    return _blend(smooth, image, factor)


class RandomColorJitter:
    """With probability ``prob``: brightness, saturation, contrast, sharpness, each factor ``U[low, high)``."""

    def __init__(self, prob=0.3, low=0.75, high=1.25):
        self.prob, self.low, self.high = prob, low, high

    def __call__(self, image, label, rng):
        if rng.random() >= self.prob:
            return image, label
        factors = rng.uniform(self.low, self.high, size=4)
        for adjust, factor in zip((adjust_brightness, adjust_saturation, adjust_contrast, adjust_sharpness), factors):
            image = adjust(image, float(factor))
        return image, label


def _normalize_table(mean, std):
    """``[256, 3]`` float32: the normalised value of every uint8 level, per channel."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    return (levels - np.asarray(mean, np.float32) * 255) / (np.asarray(std, np.float32) * 255)


class Normalize:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``(image / 255 - mean) / std``, still ``[H, W, 3]``."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        # A table lookup is ~20x faster than numpy broadcasting over the channel axis.
        self.table = _normalize_table(mean, std).reshape(256, 1, 3)

    def __call__(self, image, label, rng=None):
        return cv2.LUT(np.ascontiguousarray(image, dtype=np.uint8), self.table), label


class ToCHW:
    """image ``[H, W, C]`` -> contiguous float32 ``[C, H, W]``; label -> contiguous int64 ``[H, W]``."""

    def __call__(self, image, label, rng=None):
        image = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        return image, np.ascontiguousarray(label, dtype=np.int64)


class NormalizeToCHW:
    """``Normalize`` then ``ToCHW`` in one pass (each channel looked up straight into its plane): half the time."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.tables = [np.ascontiguousarray(column) for column in _normalize_table(mean, std).T]

    def __call__(self, image, label, rng=None):
        image = np.ascontiguousarray(image, dtype=np.uint8)
        out = np.empty((3,) + image.shape[:2], dtype=np.float32)
        for channel, (plane, table) in enumerate(zip(cv2.split(image), self.tables)):
            cv2.LUT(plane, table, dst=out[channel])
        return out, np.ascontiguousarray(label, dtype=np.int64)


def build_train_transform(base_size, crop_size, scale=True, blur=True, jitter=True, input_norm="imagenet"):
    """The seed's training transform: random scale (short side 0.75-2.0 x base), flip, pad, crop, blur, jitter,
    then the ``input_norm`` normalisation (a key of ``INPUT_NORMS``)."""
    if scale:
        min_size, max_size = int(0.75 * base_size), int(2.0 * base_size)
    else:
        min_size = max_size = int(base_size)
    transforms = [RandomScaleCrop(min_size, max_size, crop_size)]
    if blur:
        transforms.append(RandomGaussianBlur())
    if jitter:
        transforms.append(RandomColorJitter())
    return Compose(transforms + [NormalizeToCHW(*INPUT_NORMS[input_norm])])


def build_val_transform(input_norm="imagenet"):
    """Whole-image evaluation: only normalise (the inference code does any resizing)."""
    return Compose([NormalizeToCHW(*INPUT_NORMS[input_norm])])


def limit_cv2_threads(num_workers):
    """Call in the main process before building a DataLoader: with worker processes, OpenCV gets one thread
    (workers inherit it at fork), so the workers do not oversubscribe the cores.

    Not a ``worker_init_fn`` on purpose: with OpenCV 4.10, ``cv2.setNumThreads`` inside a forked worker deadlocks
    once the parent has used OpenCV's thread pool (e.g. ``cv2.GaussianBlur``).
    """
    if num_workers > 0:
        cv2.setNumThreads(1)
