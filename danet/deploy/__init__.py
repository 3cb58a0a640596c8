"""Using a trained model outside the evaluator: segment image files, export for Paddle Inference.

``tools/predict.py`` and ``tools/export.py`` parse the flags and call :func:`predict_images` and
:func:`export_model`. The model is loaded as ``danet.eval`` loads it (either checkpoint format).
"""
import logging
import os

import cv2
import numpy as np

from danet.data.cityscapes import colorize
from danet.data.transforms import build_val_transform
from danet.errors import UserError
from danet.inference import MULTI_SCALES, dygraph_predict_fn, predict_label

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
EXPORT_TOLERANCE = 1e-5  # relative to the largest logit


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


def predict_images(model, num_classes, inputs, output_dir, base_size=None, crop_size=768, scales=None,
                   multi_scales=False, flip=False, stride_rate=2 / 3, window_batch=2, alpha=0.5, limit=0, palette=None):
    """Segment every image of ``inputs`` (the first ``limit`` if > 0); write ``color/``, ``overlay/``,
    ``trainid/`` and ``side_by_side/`` (image | colour mask | overlay) PNGs under ``output_dir``.

    ``base_size`` is the long side at scale 1.0 (None: each image's own); ``palette`` [C, 3] colours the classes
    (default: Cityscapes'). Returns the written paths.
    """
    predict_fn = dygraph_predict_fn(model, window_batch)
    normalise = build_val_transform(model.config.get("input_norm", "imagenet"))
    scales = tuple(scales or (MULTI_SCALES if multi_scales else (1.0,)))
    written = []
    images = list_images(inputs)
    for path, name in images[:limit] if limit > 0 else images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"cannot read image {path} (truncated or not an image)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        image, _ = normalise(rgb, np.zeros(rgb.shape[:2], np.uint8))
        pred = predict_label(predict_fn, image, num_classes, base_size, crop_size, scales, flip, stride_rate,
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


def export_model(model, prefix, check_shape=(1, 3, 64, 96)):
    """``paddle.jit.save`` an eval-mode model for Paddle Inference, input ``[None, 3, None, None]`` float32.

    The export is loaded back with ``paddle.jit.load`` and run by a Paddle Inference predictor on a
    random image of ``check_shape``; both must give the dygraph model's logits to ``EXPORT_TOLERANCE``
    times their largest magnitude (Paddle Inference folds BatchNorm into the convolutions, which
    reorders float sums). Returns {'files', 'jit_diff', 'inference_diff'} (max abs differences).
    """
    import paddle

    model.eval()
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", name="image")]
    paddle.jit.save(model, prefix, input_spec=spec)
    folder, base = os.path.dirname(prefix) or ".", os.path.basename(prefix)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(base + "."))
    image = np.random.default_rng(0).standard_normal(check_shape).astype(np.float32)
    loaded = paddle.jit.load(prefix)
    loaded.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image)).numpy()
        got = loaded(paddle.to_tensor(image))
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    inferred = _run_inference(files, image)
    for name, out in (("paddle.jit.load", got), ("Paddle Inference", inferred)):
        if out.shape != expected.shape:
            raise UserError(f"the exported model run by {name} returns shape {list(out.shape)}, the model "
                            f"{list(expected.shape)}: do not deploy {prefix}")
    report = dict(files=files, jit_diff=float(np.abs(got - expected).max()),
                  inference_diff=float(np.abs(inferred - expected).max()))
    limit = EXPORT_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not max(report["jit_diff"], report["inference_diff"]) <= limit:
        raise UserError(f"the exported model's logits differ from the dygraph model's by {report['jit_diff']:.3g} "
                        f"(paddle.jit.load) / {report['inference_diff']:.3g} (Paddle Inference), more than {limit:.3g}:"
                        f" do not deploy {prefix}")
    report["files"].append(write_preprocess(model, prefix))
    log.info("exported %s; on a random %s input its logits differ from the model's by %.3g (paddle.jit.load) and "
             "%.3g (Paddle Inference)", ", ".join(report["files"]), "x".join(map(str, check_shape)), report["jit_diff"],
             report["inference_diff"])
    return report


def write_preprocess(model, prefix):
    """``<prefix>_preprocess.json``: how to turn an image into the exported model's input, and its output.

    The normalisation belongs to the weights (an imported PaddleSeg model expects mean = std = 0.5), so
    it travels with the export rather than living in the deploying code.
    """
    import json

    from danet.data.transforms import INPUT_NORMS

    name = model.config.get("input_norm", "imagenet")
    mean, std = INPUT_NORMS[name]
    info = {"input": "image", "layout": "NCHW", "color": "RGB", "dtype": "float32", "input_norm": name,
            "mean": [round(m * 255, 4) for m in mean], "std": [round(s * 255, 4) for s in std],
            "formula": "(pixel - mean) / std, pixel in 0..255",
            "output": "fused logits [N, num_classes, H, W]; the class is the argmax over axis 1",
            "num_classes": model.config["num_classes"]}
    path = prefix + "_preprocess.json"  # not <prefix>.<name>.json: paddle.jit.load takes those for programs
    with open(path, "w") as f:
        json.dump(info, f, indent=1)
    return path


def _run_inference(files, image):
    """Logits of ``image`` from a Paddle Inference predictor over the exported files (CPU).

    oneDNN is switched off: Paddle 3.3's oneDNN executor rejects this program's bilinear resize
    (ConvertPirAttribute2RuntimeAttribute on an array-of-double attribute); plain CPU kernels run it.
    """
    import paddle.inference as inference

    program = next(f for f in files if f.endswith((".json", ".pdmodel")))
    config = inference.Config(program, next(f for f in files if f.endswith(".pdiparams")))
    config.disable_gpu()
    config.disable_mkldnn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    feed = predictor.get_input_handle(predictor.get_input_names()[0])
    feed.reshape(image.shape)
    feed.copy_from_cpu(np.ascontiguousarray(image))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
