"""Using a trained model outside the evaluator: segment image files, export for Paddle Inference.

``tools/predict.py`` and ``tools/export.py`` parse the flags and call :func:`predict_images` and
:func:`export_model`. The model is loaded as ``danet.eval`` loads it (either checkpoint format), or is an
export run by Paddle Inference (:mod:`danet.deploy.inference`); :mod:`danet.deploy.description` writes and
reads what an export needs besides its program and weights.
"""
import logging
import os
import types

import cv2
import numpy as np

from danet.data.cityscapes import colorize
from danet.data.transforms import NormalizeToCHW, build_val_transform
from danet.deploy import description as description_module
from danet.errors import UserError
from danet.inference import MULTI_SCALES, dygraph_predict_fn, predict_label

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Of the largest logit, with the same class wherever the model's top two are further apart (as ONNX_TOLERANCE):
# Paddle Inference folds BatchNorm into the convolutions and sums in other orders; imported ResNet-50 models
# of mmseg and sssegmentation were measured 1.2e-5 off, random small models 1e-7..1e-6.
EXPORT_TOLERANCE = 1e-4


def list_images(inputs):
    """[(path, output name)] for image files and folders (searched recursively, names relative to the folder)."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found += [(os.path.join(root, f), os.path.relpath(os.path.join(root, f), item)) for f in sorted(files)
                          if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            found.append((item, os.path.basename(item)))
        else:
            raise UserError(f"input {item} does not exist: give image files or folders")
    names = [os.path.splitext(name)[0] for _, name in found]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UserError(f"two inputs would write the same output {clash[0]}.png: give them in separate runs")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}")
    return found


def overlay(rgb, color, alpha):
    """``alpha`` x colour mask + (1 - alpha) x image, uint8 [H, W, 3]."""
    return (alpha * color.astype(np.float32) + (1 - alpha) * rgb.astype(np.float32) + 0.5).astype(np.uint8)


def _write(path, image_bgr_or_gray):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not cv2.imwrite(path, image_bgr_or_gray):
        raise UserError(f"cannot write {path}: check that --output_dir is writable and the disk not full")


def segment(predict_fn, rgb, num_classes, input_norm="imagenet", base_size=None, crop_size=768, scales=(1.0,),
            flip=False, stride_rate=2 / 3, window_batch=2):
    """Class ids uint8 [H, W] of an RGB uint8 image [H, W, 3]: normalised by ``input_norm`` (a name of
    ``INPUT_NORMS`` or (mean, std) on 0..1), then :func:`danet.inference.predict_label`."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise UserError(f"expected an RGB uint8 [H, W, 3] image, got {rgb.dtype} {list(rgb.shape)}")
    image, _ = normaliser(input_norm)(rgb, np.zeros(rgb.shape[:2], np.uint8))
    return predict_label(predict_fn, image, num_classes, base_size, crop_size, tuple(scales), flip, stride_rate,
                         window_batch)


def normaliser(input_norm):
    """The evaluation transform of ``input_norm``: a name of ``INPUT_NORMS``, or (mean, std) on 0..1."""
    if isinstance(input_norm, str):
        return build_val_transform(input_norm)
    mean, std = input_norm
    return NormalizeToCHW(tuple(mean), tuple(std))


def _as_predict_fn(model, input_norm, window_batch):
    """(predict_fn, input_norm) of a dygraph model, an InferenceModel, or a predict_fn with its ``input_norm``."""
    if hasattr(model, "sublayers"):  # a paddle.nn.Layer: its config says how it was trained
        return dygraph_predict_fn(model, window_batch), input_norm or model.config.get("input_norm", "imagenet")
    if hasattr(model, "predict_fn"):  # danet.deploy.inference.InferenceModel
        return model.predict_fn, input_norm or model.input_norm
    if input_norm is None:
        raise TypeError("predict_images: a predict_fn needs its input_norm (a name of INPUT_NORMS or (mean, std))")
    return model, input_norm


def predict_images(model, num_classes, inputs, output_dir, base_size=None, crop_size=768, scales=None,
                   multi_scales=False, flip=False, stride_rate=2 / 3, window_batch=2, alpha=0.5, limit=0, palette=None,
                   input_norm=None):
    """Segment every image of ``inputs`` (the first ``limit`` if > 0); write ``color/``, ``overlay/``,
    ``trainid/`` and ``side_by_side/`` (image | colour mask | overlay) PNGs under ``output_dir``.

    ``model`` is a dygraph model, a :class:`danet.deploy.inference.InferenceModel`, or a predict_fn
    (float32 [N, 3, h, w] -> logits) with its ``input_norm``; the same windows, scales and flip run either.
    ``base_size`` is the long side at scale 1.0 (None: each image's own); ``palette`` [C, 3] colours the classes
    (default: Cityscapes'). Returns the written paths.
    """
    predict_fn, input_norm = _as_predict_fn(model, input_norm, window_batch)
    scales = tuple(scales or (MULTI_SCALES if multi_scales else (1.0,)))
    written = []
    images = list_images(inputs)
    for path, name in images[:limit] if limit > 0 else images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"cannot read image {path} (truncated or not an image)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pred = segment(predict_fn, rgb, num_classes, input_norm, base_size, crop_size, scales, flip, stride_rate,
                       window_batch)
        color = colorize(pred, palette)
        stem = os.path.splitext(name)[0] + ".png"
        blend = overlay(rgb, color, alpha)
        outputs = {"color": cv2.cvtColor(color, cv2.COLOR_RGB2BGR), "overlay": cv2.cvtColor(blend, cv2.COLOR_RGB2BGR),
                   "trainid": pred, "side_by_side": cv2.cvtColor(np.hstack([rgb, color, blend]), cv2.COLOR_RGB2BGR)}
        for kind, array in outputs.items():
            _write(os.path.join(output_dir, kind, stem), array)
            written.append(os.path.join(output_dir, kind, stem))
        log.info("%s: %d classes present", path, len(np.unique(pred)))
    return written


def export_model(model, prefix, check_shape=(1, 3, 64, 96), description=None):
    """``paddle.jit.save`` an eval-mode model for Paddle Inference, input ``[None, 3, None, None]`` float32, and
    write its deploy description ``<prefix>_deploy.json`` (``description``, by default
    :func:`~danet.deploy.description.build_description` of the model alone: give one built with the checkpoint
    for its class names and colours).

    The export is loaded back with ``paddle.jit.load`` and run by Paddle Inference predictors (CPU, oneDNN off
    and on) on a random image of ``check_shape``; each must give the dygraph model's logits to
    ``EXPORT_TOLERANCE`` times their largest magnitude and the same class wherever the model's top two classes
    are further apart than that (:func:`danet.deploy.onnx.agreement`). Returns {'files', 'jit_diff',
    'inference_diff' (the largest of the predictors'), 'inference_diffs' {'onednn off', 'onednn on'}} (max abs
    differences).
    """
    import paddle

    from danet.deploy.onnx import agreement

    model.eval()
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    for stale in (prefix + description_module.SUFFIX, prefix + description_module.LEGACY_SUFFIX):
        if os.path.isfile(stale):  # an earlier export's: it would describe another model until the new one is written
            os.remove(stale)
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", name="image")]
    paddle.jit.save(model, prefix, input_spec=spec)
    _restore_dygraph_forwards(model)
    folder, base = os.path.dirname(prefix) or ".", os.path.basename(prefix)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(base + "."))
    image = np.random.default_rng(0).standard_normal(check_shape).astype(np.float32)
    loaded = paddle.jit.load(prefix)
    loaded.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image)).numpy()
        got = loaded(paddle.to_tensor(image))
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    outputs = {"paddle.jit.load": got, **_run_inference(prefix, image)}
    for name, out in outputs.items():
        if out.shape != expected.shape:
            raise UserError(f"the exported model run by {name} returns shape {list(out.shape)}, the model "
                            f"{list(expected.shape)}: do not deploy {prefix}")
    checks = {name: agreement(expected, out, EXPORT_TOLERANCE) for name, out in outputs.items()}
    diffs = {name: check["max_diff"] for name, check in checks.items()}
    report = dict(files=files, jit_diff=diffs.pop("paddle.jit.load"), inference_diffs=diffs)
    report["inference_diff"] = max(diffs.values())
    limit = EXPORT_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not max(report["jit_diff"], report["inference_diff"]) <= limit:
        raise UserError(f"the exported model's logits differ from the dygraph model's by {report['jit_diff']:.3g} "
                        f"(paddle.jit.load) / {report['inference_diff']:.3g} (Paddle Inference), more than {limit:.3g}:"
                        f" do not deploy {prefix}")
    clash = {name: check["argmax_mismatch"] for name, check in checks.items() if check["argmax_mismatch"]}
    if clash:
        name, pixels = next(iter(clash.items()))
        raise UserError(f"the exported model run by {name} gives another class than the dygraph model at {pixels} "
                        f"pixels where the model is clear: do not deploy {prefix}")
    if description is None:
        description = description_module.build_description(model)
    report["files"].append(description_module.write_description(description, prefix))
    log.info("exported %s; on a random %s input its logits differ from the model's by %.3g (paddle.jit.load), %s",
             ", ".join(report["files"]), "x".join(map(str, check_shape)), report["jit_diff"],
             ", ".join(f"{v:.3g} ({k})" for k, v in diffs.items()))
    return report


def _restore_dygraph_forwards(model):
    """Give every sublayer its own ``forward`` back after ``paddle.jit.save``.

    Paddle 2.6 leaves the sublayers' ``forward`` replaced by their dy2static conversions, which re-convert
    themselves on every dygraph call: measured 20x slower (0.93 s instead of 0.045 s for a resnet18 DANet
    on 2x32x32) until the process ends. Paddle 3.x restores them itself (nothing to do then).
    """
    for layer in model.sublayers(include_self=True):
        original = (getattr(layer, "_original_funcs", None) or {}).get("forward")
        if original is not None and "forward" in layer.__dict__:
            if original is getattr(type(layer), "forward", None):
                del layer.__dict__["forward"]  # the class's method again
            else:
                layer.forward = types.MethodType(original, layer)


def _run_inference(prefix, image):
    """{'Paddle Inference, oneDNN off/on': logits of ``image``} from CPU predictors over the exported files.

    A oneDNN predictor that fails is left out with a warning (the export itself is sound; predicting with
    oneDNN off works), so an export never fails on a CPU's oneDNN.
    """
    from danet.deploy.inference import InferenceModel

    outputs = {}
    for onednn in (False, True):
        name = f"Paddle Inference, oneDNN {'on' if onednn else 'off'}"
        try:
            outputs[name] = InferenceModel(prefix, onednn=onednn).predict_fn(image)
        except UserError as e:
            if not onednn:
                raise
            log.warning("%s: %s", name, e)
    return outputs
