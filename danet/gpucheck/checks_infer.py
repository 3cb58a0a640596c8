"""The checks of the forward paths: peak memory of whole-image inference, PositionAttention's sdpa path against its
chunked path, ``danet-export --cuda`` and a Paddle Inference predictor against the dygraph model. Each takes the
device first and returns its details."""
import os
import tempfile

import numpy as np

from danet.gpucheck.common import (
    GPU_TOLERANCE,
    NUM_CLASSES,
    SAME_TOLERANCE,
    Failed,
    Skipped,
    compare,
    gib,
    memory_details,
    on_gpu,
    peak_memory,
    random_batch,
)


def check_memory_infer(device, backbone="resnet101", size=(1024, 2048)):
    """Peak memory of whole-image inference (no sliding window) at ``size``."""
    import paddle

    from danet import build_model

    model = build_model(backbone, NUM_CLASSES)
    model.eval()
    image = paddle.to_tensor(random_batch(1, size)[0])
    with peak_memory(device) as peak, paddle.no_grad():
        logits = model(image)
        path = model.head.pam.path(logits)
    if not np.isfinite(logits.numpy()).all():
        raise Failed("the logits are not finite")
    return dict(memory_details(peak, f"{backbone} whole {size[0]}x{size[1]} image"), attention_path=path)


def check_pam_sdpa(device, channels=512, side=97, batch=2):
    """PositionAttention's sdpa path (``F.scaled_dot_product_attention(scale=1.0)``) against its chunked path:
    outputs without gradients, then outputs and gradients in training, float32."""
    import paddle

    from danet.models.attention import PositionAttention, sdpa_with_scale

    if sdpa_with_scale() is None:
        raise Skipped(f"Paddle {paddle.__version__}'s scaled_dot_product_attention has no scale argument: the "
                      "chunked path runs on the GPU too")
    paddle.seed(0)
    pam = PositionAttention(channels, chunk_size=max(1, side * side // 3))  # a few chunks without gradients
    pam.gamma.set_value(np.ones([1], np.float32))
    data = np.random.default_rng(0).standard_normal((batch, channels, side, side)).astype(np.float32)
    native = pam.path(paddle.to_tensor(data[:1]))
    if on_gpu(device) and native != "sdpa":
        raise Failed(f"on the GPU PositionAttention takes the {native} path, not sdpa")
    runs = {path: _attention_run(pam, data, path, device) for path in ("sdpa", "chunked")}
    diffs = {what: compare(runs["chunked"][what], runs["sdpa"][what], SAME_TOLERANCE, f"sdpa and chunked {what}")
             for what in runs["sdpa"] if what != "peak"}
    worst = max(diffs.values())
    summary = f"native path {native}; sdpa = chunked to {worst:.2g} (outputs, gradients)"
    if on_gpu(device):
        summary += (f"; peak {gib(runs['sdpa']['peak'])} (sdpa) vs {gib(runs['chunked']['peak'])} (chunked, "
                    "training)")
    return dict(summary=summary, native_path=native, differences=diffs,
                peak={p: r["peak"] for p, r in runs.items()})


def _attention_run(pam, data, path, device):
    """{'inference', 'training', 'input_grad', 'query_grad', 'peak'} of ``pam`` forced onto ``path``."""
    import paddle

    pam.path = lambda x: path  # an instance attribute shadows the method: forward asks it
    try:
        with paddle.no_grad():
            inference = pam(paddle.to_tensor(data)).numpy()
        x = paddle.to_tensor(data, stop_gradient=False)
        with peak_memory(device) as peak:
            out = pam(x)
            (out * out).mean().backward()
        grads = dict(input_grad=x.grad.numpy(), query_grad=pam.query.weight.grad.numpy())
        pam.clear_gradients()
        return dict(inference=inference, training=out.numpy(), peak=peak["allocated"], **grads)
    finally:
        del pam.path


def check_export_cuda(device, backbone="resnet50", size=(64, 96)):
    """``danet-export --cuda``: the model on the device, exported and checked by :func:`danet.deploy.export_model`."""
    from danet import build_model
    from danet.deploy import export_model

    model = build_model(backbone, NUM_CLASSES)
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        report = export_model(model, os.path.join(folder, "danet"), (1, 3) + tuple(size))
    return dict(summary=f"logits differ by {report['jit_diff']:.3g} (paddle.jit.load), "
                        f"{report['inference_diff']:.3g} (Paddle Inference)",
                jit_diff=report["jit_diff"], inference_diff=report["inference_diff"])


def check_inference_gpu(device, backbone="resnet50", size=(256, 512)):
    """A ``paddle.jit.save`` export run by a Paddle Inference predictor on ``device`` against the dygraph model."""
    import paddle

    from danet import build_model
    from danet.deploy.description import build_description, write_description
    from danet.deploy.inference import InferenceModel
    from danet.deploy.onnx import agreement

    model = build_model(backbone, NUM_CLASSES)
    model.eval()
    image = random_batch(1, size)[0]
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image)).numpy()
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, "danet")
        spec = [paddle.static.InputSpec([None, 3, None, None], "float32", name="image")]
        paddle.jit.save(model, prefix, input_spec=spec)
        write_description(build_description(model), prefix)
        predictor = InferenceModel(prefix, device="gpu" if on_gpu(device) else "cpu", onednn=False)
        got = predictor.predict_fn(image)
        del predictor
    tolerance = GPU_TOLERANCE if on_gpu(device) else SAME_TOLERANCE
    relative = compare(expected, got, tolerance, "Paddle Inference's logits and the dygraph model's")
    clash = agreement(expected, got, tolerance)["argmax_mismatch"]
    if clash:
        raise Failed(f"Paddle Inference gives another class at {clash} clear pixels")
    return dict(summary=f"logits differ by {relative:.2g} of the largest at {size[0]}x{size[1]}", relative=relative)
