"""Inference on whole images: sliding window, several scales, horizontal flip; evaluation over a data set.

Everything goes through a ``predict_fn(batch) -> logits``: float32 [B, 3, h, w] in, float32 numpy
[B, C, h, w] out at the input size. eval.py builds one from a dygraph model
(:func:`dygraph_predict_fn`); the trainers' validation may build one from either graph mode, so this
module never depends on one.

The procedure follows the DANet paper's multi-scale evaluation, minus the seed port's
inconsistencies: for each scale the image is resized so that its long side is
``int(base_size * scale + 0.5)``; an image that fits in one ``crop_size`` square is run whole, a larger
one by ``crop_size`` windows with stride ``int(crop_size * stride_rate)`` whose overlapping logits are
averaged; a flipped pass is averaged in with equal weight everywhere; each scale's logits are resized
back to the original size and the result is their mean.
"""
import logging
import time

import cv2
import numpy as np

from danet.constants import IGNORE_INDEX
from danet.errors import UserError
from danet.metrics import ConfusionMatrix

logger = logging.getLogger(__name__)

# The seed port's nine evaluation scales (the paper's list plus 1.35).
MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.35, 1.5, 1.75, 2.0, 2.2)


def dygraph_predict_fn(model, window_batch=None):
    """Wrap a ``paddle.nn.Layer`` as a predict_fn: numpy [B, 3, h, w] -> numpy float32 [B, C, h, w].

    Each call runs the model in eval mode under ``paddle.no_grad()`` and then restores every
    sublayer's train/eval state, so validation in the middle of training leaves the model training.
    If the model returns a tuple the first (fused) output is used. ``window_batch`` caps the images
    per forward pass (None: as many as given).
    """
    import paddle  # here, not at module level: metrics-only users need not load Paddle

    def predict_fn(batch):
        states = [(layer, layer.training) for layer in model.sublayers(include_self=True)]
        model.eval()
        step = window_batch or len(batch)
        try:
            with paddle.no_grad():
                outputs = [_forward(model, batch[i:i + step]) for i in range(0, len(batch), step)]
        finally:
            if states[0][1]:
                model.train()  # also puts Paddle's global tracer back in train mode
            for layer, training in states:
                layer.training = training
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    return predict_fn


def _forward(model, batch):
    import paddle

    logits = model(paddle.to_tensor(np.ascontiguousarray(batch, dtype=np.float32)))
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.numpy().astype(np.float32, copy=False)


def _resize_plane(plane, size):
    """Bilinear resize of one [h, w] float32 plane to size (H, W); the plane itself if already that size."""
    if plane.shape == tuple(size):
        return plane
    return cv2.resize(np.ascontiguousarray(plane), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def _resize(chw, size):
    """[C, h, w] -> [C, H, W], channel by channel (no HWC copy of a large logit map)."""
    if chw.shape[1:] == tuple(size):
        return chw
    return np.stack([_resize_plane(plane, size) for plane in chw])


def _scaled_size(height, width, long_side):
    """(h, w) with the long side set to ``long_side`` and the short side proportional, rounded."""
    if height >= width:
        return long_side, max(1, int(width * long_side / height + 0.5))
    return max(1, int(height * long_side / width + 0.5)), long_side


def _window_starts(side, crop, stride):
    """Offsets of length-``crop`` windows covering [0, side): ceil((side - crop) / stride) + 1 of them,
    the last one ending exactly at ``side`` so no window needs padding."""
    if side <= crop:
        return [0]
    count = -(-(side - crop) // stride) + 1
    return [min(i * stride, side - crop) for i in range(count)]


def _predict_windows(predict_fn, windows, num_classes, flip):
    """Logits [n, C, h, w] of windows [n, 3, h, w]; with ``flip`` the mean of the plain and mirrored passes."""
    n = len(windows)
    # The mirrored windows ride in the same call; their logits are mirrored back before averaging.
    batch = np.concatenate([windows, windows[..., ::-1]]) if flip else windows
    logits = np.asarray(predict_fn(np.ascontiguousarray(batch, dtype=np.float32)))
    expected = (len(batch), num_classes) + windows.shape[2:]
    if logits.shape != expected:
        raise UserError(f"the model returned logits of shape {list(logits.shape)} for input {list(batch.shape)}, "
                        f"expected {list(expected)}: does num_classes={num_classes} match the checkpoint?")
    if flip:
        return (logits[:n] + logits[n:, :, :, ::-1]) * 0.5
    return logits


def _average_windows(predict_fn, image, positions, window, num_classes, flip, images_per_call):
    """Mean logits [C, H, W] over windows of size ``window`` = (h, w) at ``positions`` (y, x) of image [3, H, W]."""
    height, width = image.shape[1:]
    wh, ww = window
    total = np.zeros((num_classes, height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    per_call = max(1, images_per_call // 2) if flip else images_per_call
    for first in range(0, len(positions), per_call):
        chunk = positions[first:first + per_call]
        windows = np.stack([image[:, y:y + wh, x:x + ww] for y, x in chunk])
        for (y, x), logits in zip(chunk, _predict_windows(predict_fn, windows, num_classes, flip)):
            total[:, y:y + wh, x:x + ww] += logits
            count[y:y + wh, x:x + ww] += 1
    total /= count  # every pixel is covered by at least one window
    return total


def _logits_one_scale(predict_fn, image, num_classes, crop_size, stride, flip, window_batch):
    """Logits [C, h, w] of an image [3, h, w] already resized to one scale."""
    _, height, width = image.shape
    if height <= crop_size and width <= crop_size:
        # Fits in one crop: run it whole; the model takes any size, so no padding is needed.
        return _average_windows(predict_fn, image, [(0, 0)], (height, width), num_classes, flip, window_batch)
    # Pad a short side up to the crop with 0 (the mean colour after normalisation); the long
    # side is covered by windows whose last one is aligned to its far edge.
    padded_h, padded_w = max(height, crop_size), max(width, crop_size)
    if (padded_h, padded_w) != (height, width):
        padded = np.zeros((image.shape[0], padded_h, padded_w), dtype=np.float32)
        padded[:, :height, :width] = image
        image = padded
    positions = [(y, x) for y in _window_starts(padded_h, crop_size, stride)
                 for x in _window_starts(padded_w, crop_size, stride)]
    logits = _average_windows(predict_fn, image, positions, (crop_size, crop_size), num_classes, flip,
                              window_batch)
    return logits[:, :height, :width]


def _check_args(image, num_classes, base_size, crop_size, scales, stride_rate, window_batch):
    """Validate the options; return (float32 image [3, H, W], scales as a tuple, window stride in pixels)."""
    image = np.asarray(image, dtype=np.float32)
    scales = tuple(scales)
    if image.ndim != 3:
        raise UserError(f"expected a [channels, height, width] image, got shape {list(image.shape)}")
    for name, value in (("num_classes", num_classes), ("base_size", base_size or 1), ("crop_size", crop_size),
                        ("window_batch", window_batch)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if not scales or min(scales) <= 0:
        raise UserError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
    if not 0 < stride_rate <= 1:
        raise UserError(f"stride_rate must be in (0, 1], got {stride_rate}")
    return image, scales, max(1, int(crop_size * stride_rate))


def predict(predict_fn, image, num_classes, base_size, crop_size, scales=(1.0,), flip=False, stride_rate=2 / 3,
            window_batch=4):
    """Logits float32 [C, H, W] for one normalised image float32 [3, H, W] at its original size.

    For each scale the image is resized (bilinear) so its long side is ``int(base_size * scale + 0.5)``
    (``base_size=None``: the image's own long side, as in validation during training),
    run whole if it fits in ``crop_size`` x ``crop_size``, else by overlapping windows (stride
    ``int(crop_size * stride_rate)``) whose logits are averaged per pixel; ``flip`` averages in the
    mirrored pass. Each scale's logits are resized back to (H, W) and the result is their MEAN: the
    argmax equals the seed's sum of raw logits, and the values stay on the scale of a single pass.
    ``window_batch`` is the number of images per predict_fn call (a window and its mirror count as
    two; at least one window per call). Memory: one scale's accumulators plus the result.
    """
    image, scales, stride = _check_args(image, num_classes, base_size, crop_size, scales, stride_rate, window_batch)
    height, width = image.shape[1:]
    result = np.zeros((num_classes, height, width), dtype=np.float32)
    for scale in scales:
        size = _scaled_size(height, width, int((base_size or max(height, width)) * scale + 0.5))
        logits = _logits_one_scale(predict_fn, _resize(image, size), num_classes, crop_size, stride, flip,
                                   window_batch)
        for c in range(num_classes):  # plane by plane: no second full-size copy of the logits
            result[c] += _resize_plane(logits[c], (height, width))
        del logits
    result /= len(scales)
    return result


def predict_label(predict_fn, image, num_classes, base_size, crop_size, scales=(1.0,), flip=False,
                  stride_rate=2 / 3, window_batch=4):
    """Class ids uint8 [H, W] (argmax of :func:`predict`); needs num_classes <= 256."""
    if num_classes > 256:
        raise UserError(f"predict_label returns uint8 ids and supports at most 256 classes, got {num_classes}")
    logits = predict(predict_fn, image, num_classes, base_size, crop_size, scales, flip, stride_rate, window_batch)
    return logits.argmax(axis=0).astype(np.uint8)


def evaluate(predict_fn, dataset, num_classes, *, base_size, crop_size, scales=(1.0,), flip=False,
             stride_rate=2 / 3, window_batch=4, ignore_index=IGNORE_INDEX, on_prediction=None, progress=True,
             limit=None, num_workers=0):
    """Predict every image of ``dataset`` and return the ConfusionMatrix over all of them.

    ``dataset[i]`` gives (image float32 [3, H, W] normalised, label int [H, W]), one whole image at a
    time (sizes may differ). ``on_prediction(index, pred_uint8 [H, W], label)`` is called per image
    (e.g. to save PNGs). Only the matrix is kept, so memory stays flat over the set. ``limit``
    evaluates the first images only; ``num_workers`` processes read the images ahead of the model.
    """
    from tqdm import tqdm

    from danet.data.loader import prefetch

    count = len(dataset) if limit is None else min(len(dataset), limit)
    matrix = ConfusionMatrix(num_classes, ignore_index)
    logger.info("evaluating %d images: base %s, crop %d, scales %s, flip %s", count, base_size, crop_size,
                list(scales), flip)
    start = time.time()
    samples = prefetch(dataset, count, num_workers)
    try:
        bar = tqdm(samples, total=count, desc="eval", unit="img", disable=not progress)
        for index, (image, label) in enumerate(bar):
            label = np.asarray(label)
            if label.shape != np.shape(image)[1:]:
                raise UserError(f"image {index}: label shape {list(label.shape)} does not match image shape "
                                f"{list(np.shape(image))}")
            pred = predict_label(predict_fn, image, num_classes, base_size, crop_size, scales, flip, stride_rate,
                                 window_batch)
            try:
                matrix.update(pred, label)
            except ValueError as err:
                raise UserError(f"image {index}: {err}") from err
            if on_prediction is not None:
                on_prediction(index, pred, label)
    finally:
        samples.close()  # stops the reading processes at once, also after an error
    seconds = max(time.time() - start, 1e-9)
    summary = matrix.summary()
    logger.info("evaluated %d images in %.1f s (%.2f img/s): mIoU %.4f, pixel accuracy %.4f", count, seconds,
                count / seconds, summary["miou"], summary["pixel_accuracy"])
    return matrix
