"""Check on a GPU every path of this project that needs one: ``danet-gpu-check`` (or ``python tools/gpu_check.py``).

    danet-gpu-check --json gpu_check.json      # a few minutes on a V100 / A100 with paddlepaddle-gpu

One line per check, ``NAME: passed (what was measured)``, ``NAME: failed: why`` or ``NAME: skipped: why``; each
check runs on its own, so one failing does not stop the others. Then a summary line, and with ``--json PATH``
the same as JSON. Exit status 0 when nothing failed, 1 when a check failed, 2 when there is no GPU to check
on (said in one line: this tool cannot pass on a machine without one).

- ``memory_train_769`` / ``memory_infer_1024x2048``: peak GPU memory (``paddle.device.cuda.max_memory_allocated``)
  of one ResNet-101 training step on 769x769 crops (batch 2, fp32) and of whole-image inference at 1024x2048.
- ``train_dygraph_amp`` / ``train_executor_amp``: ``--cuda --amp`` training steps of both graph modes; the
  losses must be finite, the attention's kernels (bmm, softmax, the fused attention) must run in float32
  and the convolutions in float16 (else AMP did not run), counted from the kernels that ran
  (``FLAGS_low_precision_op_list``; Paddle 2.6's static executor does not count, so its Program is read).
- ``pam_sdpa``: ``PositionAttention`` takes its ``scaled_dot_product_attention`` path on the GPU (Paddle 3.x)
  and that equals the chunked path, outputs and gradients.
- ``syncbn_data_parallel``: a dygraph step of a ``SyncBatchNorm`` model under ``paddle.DataParallel`` in one
  process equals the plain BatchNorm step (one process: the batch statistics are the local ones).
- ``export_cuda`` / ``inference_gpu``: ``danet-export --cuda``'s export and its checks; the export run by a
  Paddle Inference GPU predictor (:class:`danet.deploy.inference.InferenceModel`) against the dygraph model.
- ``executor_fleet``: the Executor trainer's data-parallel (fleet collective) path, built and run in one
  process: the trainer takes it only with more than one process, so it is told there are two while it is built.

Written from Paddle's documentation on a machine without a GPU: the check functions themselves run on a CPU
(``device="cpu"``, small models, AMP off) in tests/test_gpu_check.py.
"""
import argparse
import contextlib
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from unittest import mock

import numpy as np

log = logging.getLogger(__name__)
NUM_CLASSES = 19
# Kernels that compute the attention energies and their softmax: none may run in half precision.
ATTENTION_OPS = {"bmm", "matmul", "matmul_v2", "softmax", "flash_attn", "flash_attn_unpadded",
                 "memory_efficient_attention", "variable_length_memory_efficient_attention",
                 "fused_dot_product_attention", "scaled_dot_product_attention"}
GPU_TOLERANCE = 1e-3  # of the largest logit: cuDNN picks its own algorithms, and on Ampere TF32 convolutions
SAME_TOLERANCE = 1e-4  # two computations of the same numbers in float32 (attention paths, BatchNorm kinds)
# What each check runs on a GPU: large enough to meet the real sizes, small enough for a few minutes in all.
GPU_PROFILE = {
    "memory_train_769": dict(backbone="resnet101", size=(769, 769), batch=2),
    "memory_infer_1024x2048": dict(backbone="resnet101", size=(1024, 2048)),
    "train_dygraph_amp": dict(backbone="resnet101", size=(512, 512), batch=2, steps=3, amp=True),
    "train_executor_amp": dict(backbone="resnet101", size=(512, 512), batch=2, steps=3, amp=True),
    "pam_sdpa": dict(channels=512, side=97, batch=2),
    "syncbn_data_parallel": dict(backbone="resnet50", size=(256, 256), batch=2),
    "export_cuda": dict(backbone="resnet50", size=(64, 96)),
    "inference_gpu": dict(backbone="resnet50", size=(256, 512)),
    "executor_fleet": dict(backbone="resnet50", size=(256, 256), batch=2, steps=2, amp=True),
}


class Skipped(Exception):
    """A check that does not apply to this Paddle (said with the reason)."""


class Failed(Exception):
    """A check whose result is wrong (the message says how)."""


@dataclass
class Result:
    name: str
    status: str  # passed, failed or skipped
    reason: str = ""  # what was measured (passed) or why (failed, skipped)
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def line(self):
        if self.status == "passed":
            return f"{self.name}: passed" + (f" ({self.reason})" if self.reason else "")
        return f"{self.name}: {self.status}: {self.reason}"


# ------------------------------------------------------------------------------------------------- helpers


def gpu_unavailable_reason():
    """Why this process cannot check anything on a GPU, or None when it can."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return (f"this Paddle {paddle.__version__} is built without CUDA: install paddlepaddle-gpu (the build for "
                "the machine's CUDA) on a machine with an NVIDIA GPU")
    try:
        count = paddle.device.cuda.device_count()
    except Exception as e:  # a driver that does not answer
        return f"Paddle cannot count the GPUs ({one_line(e)})"
    if count < 1:
        return "Paddle has CUDA but sees no GPU: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
    return None


def one_line(error):
    """An exception as one line: its type and first non-empty line (Paddle's errors carry C++ traces)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if type(error).__name__ != "UserError":
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _train_args(entry, backbone, batch, amp=False, cuda=False, parallel=False):
    from danet.options import parse

    argv = ["--backbone", backbone, "--batch_size", str(batch), "--lr", "0.01", "--epoch_num", "1"]
    argv += ["--amp"] * amp + ["--cuda"] * cuda + ["--use_data_parallel"] * parallel
    return parse(entry, argv)


def _batch(batch, size, seed=0):
    """Random normalised images [B, 3, H, W] and labels [B, H, W] (a border of ignored pixels)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3) + tuple(size)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch,) + tuple(size)).astype(np.int64)
    labels[:, :2] = 255
    return images, labels


def _finite_losses(results):
    losses = [round(r.loss, 4) for r in results]
    bad = [i for i, r in enumerate(results) if not math.isfinite(r.loss)]
    if bad:
        raise Failed(f"the loss is not finite at step {bad[0] + 1}: {losses}")
    return losses


def _on_gpu(device):
    return device.startswith("gpu")


@contextlib.contextmanager
def peak_memory(device):
    """Yields a dict whose 'allocated' / 'reserved' become the peak GPU bytes of the block (None on a CPU).

    Paddle 2.6 cannot reset the peak: there it is the peak since the process started.
    """
    import paddle

    out = {"allocated": None, "reserved": None, "since_start": False}
    cuda = paddle.device.cuda
    if _on_gpu(device):
        if hasattr(cuda, "reset_max_memory_allocated"):
            cuda.reset_max_memory_allocated()
            cuda.reset_max_memory_reserved()
        else:
            out["since_start"] = True
    yield out
    if _on_gpu(device):
        paddle.device.synchronize()
        out["allocated"], out["reserved"] = int(cuda.max_memory_allocated()), int(cuda.max_memory_reserved())


def _gib(n):
    return f"{n / 2 ** 30:.2f} GiB"


@contextlib.contextmanager
def kernel_dtypes():
    """Yields a dict filled at exit with {op: [fp16, bf16, fp32, other] kernel calls} of the block.

    Paddle counts every kernel it runs by dtype while ``FLAGS_low_precision_op_list`` is set (dygraph and the
    PIR executor); op names lose ``pd_op.``, an in-place ``_`` and ``_grad``, so backward calls count too.
    """
    import paddle

    core = paddle.base.core
    counts = {}
    core.clear_low_precision_op_list()
    paddle.set_flags({"FLAGS_low_precision_op_list": 1})
    try:
        yield counts
    finally:
        raw = core.get_low_precision_op_list()
        paddle.set_flags({"FLAGS_low_precision_op_list": 0})
        counts.update(parse_kernel_counts(raw))


def parse_kernel_counts(raw):
    """{op: 'fp16,bf16,fp32,other'} (or lists) -> {normalised op: [4 ints]}, summing names that normalise alike."""
    counts = {}
    for name, value in (raw or {}).items():
        calls = [int(v) for v in (value.split(",") if isinstance(value, str) else value)][:4]
        op = _op_name(name)
        counts[op] = [a + b for a, b in zip(counts.get(op, [0, 0, 0, 0]), calls)]
    return counts


def _op_name(name):
    op = name.split(".", 1)[1] if name.startswith("pd_op.") else name
    op = op[:-5] if op.endswith("_grad") else op
    return op.rstrip("_")


def program_dtypes(program):
    """{op: [fp16, bf16, fp32, other]} of a legacy (Paddle 2.6) Program's ops by their inputs' dtype: one call per
    op, in the lowest precision among its floating inputs."""
    counts = {}
    block = program.global_block()
    for op in block.ops:
        kinds = set()
        for name in op.input_arg_names:
            if block.has_var(name):
                kinds.add(_dtype_kind(block.var(name).dtype))
        slot = 0 if "fp16" in kinds else 1 if "bf16" in kinds else 2 if "fp32" in kinds else 3
        calls = counts.setdefault(_op_name(op.type), [0, 0, 0, 0])
        calls[slot] += 1
    return counts


def _dtype_kind(dtype):
    text = str(dtype).lower()
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "fp16" in text or "float16" in text:
        return "fp16"
    return "fp32" if "fp32" in text or "float32" in text else "other"


def check_precision(counts, amp):
    """Raise Failed if an attention kernel ran in half precision, or (``amp``) no convolution did."""
    half = {op: c[0] + c[1] for op, c in counts.items() if op in ATTENTION_OPS and c[0] + c[1]}
    if half:
        raise Failed("attention kernels ran in half precision: " + ", ".join(f"{op} x{n}" for op, n in half.items()))
    attention = sum(sum(c) for op, c in counts.items() if op in ATTENTION_OPS)
    if not attention:
        raise Failed("no attention kernel was counted: cannot tell their precision")
    conv_half = sum(c[0] + c[1] for op, c in counts.items() if op.startswith("conv2d"))
    if amp and not conv_half:
        raise Failed("AMP did not run: no convolution kernel ran in float16")
    return f"attention kernels float32 ({attention} calls), convolutions in float16: {conv_half} calls"


def compare(expected, got, tolerance, what):
    """Largest difference relative to the largest value; Failed when over ``tolerance``."""
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    if expected.shape != got.shape:
        raise Failed(f"{what}: shape {list(got.shape)}, expected {list(expected.shape)}")
    relative = float(np.abs(got - expected).max() / max(1e-12, float(np.abs(expected).max())))
    if not relative <= tolerance:
        raise Failed(f"{what} differ by {relative:.3g} of the largest value (allowed {tolerance:g})")
    return relative


# -------------------------------------------------------------------------------------------------- checks


def check_memory_train(device, backbone="resnet101", size=(769, 769), batch=2):
    """Peak memory of one dygraph training step (fp32) of ``backbone`` on ``batch`` crops of ``size``."""
    from danet.engine.dygraph import DygraphStep

    step = DygraphStep(_train_args("train_dygraph", backbone, batch, cuda=_on_gpu(device)), 1)
    images, labels = _batch(batch, size)
    with peak_memory(device) as peak:
        result = step.run(images, labels)
    _finite_losses([result])
    return _memory_details(peak, f"{backbone} training step, batch {batch} of {size[0]}x{size[1]}")


def check_memory_infer(device, backbone="resnet101", size=(1024, 2048)):
    """Peak memory of whole-image inference (no sliding window) at ``size``."""
    import paddle

    from danet import build_model

    model = build_model(backbone, NUM_CLASSES)
    model.eval()
    image = paddle.to_tensor(_batch(1, size)[0])
    with peak_memory(device) as peak, paddle.no_grad():
        logits = model(image)
        path = model.head.pam.path(logits)
    if not np.isfinite(logits.numpy()).all():
        raise Failed("the logits are not finite")
    return dict(_memory_details(peak, f"{backbone} whole {size[0]}x{size[1]} image"), attention_path=path)


def _memory_details(peak, what):
    if peak["allocated"] is None:
        return dict(summary=f"{what}: ran; peak GPU memory is measured on a GPU only", peak_allocated=None)
    note = " since the process started (this Paddle cannot reset the peak)" if peak["since_start"] else ""
    return dict(summary=f"{what}: peak {_gib(peak['allocated'])} allocated, {_gib(peak['reserved'])} reserved{note}",
                peak_allocated=peak["allocated"], peak_reserved=peak["reserved"], since_start=peak["since_start"])


def check_train_dygraph(device, backbone="resnet101", size=(512, 512), batch=2, steps=3, amp=True):
    """``steps`` dygraph training steps (``--amp`` when ``amp``): losses finite, attention in float32."""
    from danet.engine.dygraph import DygraphStep

    step = DygraphStep(_train_args("train_dygraph", backbone, batch, amp=amp, cuda=_on_gpu(device)), steps)
    images, labels = _batch(batch, size)
    with kernel_dtypes() as counts:
        results = [step.run(images, labels) for _ in range(steps)]
    losses = _finite_losses(results)
    return dict(summary=f"losses {losses}; {check_precision(counts, amp)}", losses=losses,
                kernels={op: c for op, c in counts.items() if op in ATTENTION_OPS or op.startswith("conv2d")})


def check_train_executor(device, backbone="resnet101", size=(512, 512), batch=2, steps=3, amp=True,
                         parallel=False):
    """The same with the Executor step (a static Program); ``parallel`` builds it on its fleet path."""
    import paddle

    from danet.engine.static import StaticStep, static_mode

    args = _train_args("train_executor", backbone, batch, amp=amp, cuda=_on_gpu(device), parallel=parallel)
    images, labels = _batch(batch, size)
    with static_mode(), paddle.static.scope_guard(paddle.static.Scope()):
        with pretend_world_size(2) if parallel else contextlib.nullcontext():
            step = StaticStep(args, steps)
        if parallel and not step.parallel:
            raise Failed("the trainer did not take its data-parallel path")
        with kernel_dtypes() as counts:
            results = [step.run(images, labels) for _ in range(steps)]
        counts = counts or program_dtypes(step.main)  # Paddle 2.6's executor counts nothing
        sync_bn = sum(1 for op in step.main.global_block().ops if "sync_batch_norm" in _type(op))
    losses = _finite_losses(results)
    summary = f"losses {losses}; {check_precision(counts, amp)}"
    if parallel:
        summary += f"; {sync_bn} sync_batch_norm ops in the Program"
    return dict(summary=summary, losses=losses, sync_batch_norm_ops=sync_bn,
                kernels={op: c for op, c in counts.items() if op in ATTENTION_OPS or op.startswith("conv2d")})


def check_executor_fleet(device, backbone="resnet50", size=(256, 256), batch=2, steps=2, amp=True):
    """The Executor trainer's fleet path (``fleet.init``, ``DistributedStrategy(sync_batch_norm)``,
    ``fleet.distributed_optimizer`` over the AMP optimizer) in one process."""
    return check_train_executor(device, backbone, size, batch, steps, amp, parallel=True)


def _type(op):
    return op.name() if callable(getattr(op, "name", None)) else op.type  # PIR Operation / legacy Operator


@contextlib.contextmanager
def pretend_world_size(n):
    """``paddle.distributed.get_world_size()`` answers ``n`` once (the trainer's "more than one process?"), then
    the truth again: fleet's own set-up must see the one process there is."""
    import paddle

    real = paddle.distributed.get_world_size
    answers = iter([n])

    def world_size(*args, **kwargs):
        return next(answers, None) or real(*args, **kwargs)

    with mock.patch.object(paddle.distributed, "get_world_size", world_size):
        yield


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
    if _on_gpu(device) and native != "sdpa":
        raise Failed(f"on the GPU PositionAttention takes the {native} path, not sdpa")
    runs = {path: _attention_run(pam, data, path, device) for path in ("sdpa", "chunked")}
    diffs = {what: compare(runs["chunked"][what], runs["sdpa"][what], SAME_TOLERANCE, f"sdpa and chunked {what}")
             for what in runs["sdpa"] if what != "peak"}
    worst = max(diffs.values())
    summary = f"native path {native}; sdpa = chunked to {worst:.2g} (outputs, gradients)"
    if _on_gpu(device):
        summary += (f"; peak {_gib(runs['sdpa']['peak'])} (sdpa) vs {_gib(runs['chunked']['peak'])} (chunked, "
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


def check_syncbn(device, backbone="resnet50", size=(256, 256), batch=2, sync=True):
    """One training step of a SyncBatchNorm model under ``paddle.DataParallel`` (one process) against the same
    step with plain BatchNorm from the same weights: loss, outputs and updated weights. ``sync=False`` runs the
    harness with BatchNorm on both sides (a CPU has no SyncBatchNorm kernel)."""
    import paddle

    from danet import build_model

    paddle.seed(0)
    plain = build_model(backbone, NUM_CLASSES, dropout=0.0)
    state = {k: v.numpy() for k, v in plain.state_dict().items()}
    images, labels = _batch(batch, size)
    expected = _bn_step(plain, plain, images, labels)
    model = build_model(backbone, NUM_CLASSES, dropout=0.0)
    model.set_state_dict(state)
    if sync:
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    synced = sum(isinstance(layer, paddle.nn.SyncBatchNorm) for layer in model.sublayers())
    if sync and not synced:
        raise Failed("convert_sync_batchnorm left no SyncBatchNorm layer")
    got = _bn_step(model, paddle.DataParallel(model), images, labels)
    tolerance = GPU_TOLERANCE if _on_gpu(device) else SAME_TOLERANCE
    diffs = {k: compare(expected[k], got[k], tolerance, f"SyncBatchNorm and BatchNorm {k}") for k in expected}
    return dict(summary=f"{synced} SyncBatchNorm layers; same loss, outputs and updates as BatchNorm to "
                        f"{max(diffs.values()):.2g}", sync_layers=synced, differences=diffs)


def _bn_step(model, net, images, labels):
    """One SGD step of ``net`` (``model`` or its wrapper): loss, fused logits, then a conv weight and a BN's running
    mean afterwards."""
    import paddle
    import paddle.nn.functional as F

    model.train()
    optimizer = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    fused = net(paddle.to_tensor(images))[0]
    loss = F.cross_entropy(fused, paddle.to_tensor(labels), axis=1, ignore_index=255)
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    state = model.state_dict()
    return dict(loss=float(loss), logits=fused.numpy(), conv=state["head.pam_in.0.weight"].numpy(),
                running_mean=next(v for k, v in state.items() if k.endswith("_mean")).numpy())


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
    image = _batch(1, size)[0]
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image)).numpy()
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, "danet")
        spec = [paddle.static.InputSpec([None, 3, None, None], "float32", name="image")]
        paddle.jit.save(model, prefix, input_spec=spec)
        write_description(build_description(model), prefix)
        predictor = InferenceModel(prefix, device="gpu" if _on_gpu(device) else "cpu", onednn=False)
        got = predictor.predict_fn(image)
        del predictor
    tolerance = GPU_TOLERANCE if _on_gpu(device) else SAME_TOLERANCE
    relative = compare(expected, got, tolerance, "Paddle Inference's logits and the dygraph model's")
    clash = agreement(expected, got, tolerance)["argmax_mismatch"]
    if clash:
        raise Failed(f"Paddle Inference gives another class at {clash} clear pixels")
    return dict(summary=f"logits differ by {relative:.2g} of the largest at {size[0]}x{size[1]}", relative=relative)


CHECKS = {
    "memory_train_769": check_memory_train,
    "memory_infer_1024x2048": check_memory_infer,
    "train_dygraph_amp": check_train_dygraph,
    "train_executor_amp": check_train_executor,
    "pam_sdpa": check_pam_sdpa,
    "syncbn_data_parallel": check_syncbn,
    "export_cuda": check_export_cuda,
    "inference_gpu": check_inference_gpu,
    "executor_fleet": check_executor_fleet,  # last: fleet.init leaves process-wide state behind
}


# ------------------------------------------------------------------------------------------------- running


def run_check(name, device, params=None):
    """Run one check, isolated: any exception becomes its ``failed`` result; the graph mode and the GPU's cache
    are restored afterwards. Returns a :class:`Result`."""
    import paddle

    start = time.time()
    try:
        details = CHECKS[name](device, **(params if params is not None else GPU_PROFILE[name])) or {}
        result = Result(name, "passed", details.pop("summary", ""), details=details)
    except Skipped as e:
        result = Result(name, "skipped", str(e))
    except Failed as e:
        result = Result(name, "failed", str(e))
    except Exception as e:  # each check on its own: one failure must not stop the others
        log.debug("%s", name, exc_info=True)
        result = Result(name, "failed", one_line(e))
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
        gc.collect()
        if _on_gpu(device):
            paddle.device.cuda.empty_cache()
    result.seconds = round(time.time() - start, 2)
    return result


def run_checks(names=None, device="gpu:0", profile=None, echo=print):
    """Run ``names`` (all by default) in order, ``echo`` each result's line as it comes; returns the results."""
    import paddle

    paddle.set_device(device)
    results = []
    for name in names or list(CHECKS):
        result = run_check(name, device, (profile or GPU_PROFILE).get(name))
        echo(result.line())
        results.append(result)
    return results


def summary(results, device, refused=None):
    """The JSON summary: versions, device, and every check's result."""
    import paddle

    counts = {s: sum(r.status == s for r in results) for s in ("passed", "failed", "skipped")}
    return {"tool": "danet-gpu-check", "ok": refused is None and counts["failed"] == 0, "refused": refused,
            "paddle": paddle.__version__, "cuda": _cuda_version(), "device": device, "gpu": _gpu_name(device),
            **counts, "checks": [asdict(r) for r in results]}


def _cuda_version():
    import paddle

    try:
        version = paddle.version.cuda()
    except Exception:  # an old build without the function
        return None
    return None if str(version) == "False" else str(version)  # a CPU build says "False"


def _gpu_name(device):
    import paddle

    if not _on_gpu(device):
        return None
    try:
        return paddle.device.cuda.get_device_name()
    except Exception:  # informational only
        return None


def write_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def build_parser():
    parser = argparse.ArgumentParser(prog="danet-gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), metavar="CHECK",
                        help=f"run these checks only (of: {', '.join(CHECKS)})")
    parser.add_argument("--debug", action="store_true", help="log each failed check's traceback")
    return parser


def quiet(debug=False):
    """One line per check: keep Paddle's C++ log, its Python notices and our progress logs off the console."""
    import warnings

    os.environ.setdefault("GLOG_minloglevel", "2")  # read when Paddle's C++ core loads (it is not loaded yet)
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    logging.getLogger("danet").setLevel(level)
    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"paddle(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv=None):
    """Run the checks on GPU 0 (``CUDA_VISIBLE_DEVICES`` picks it); returns the exit status."""
    args = build_parser().parse_args(argv)
    quiet(args.debug)
    reason = gpu_unavailable_reason()
    if reason:
        sys.stderr.write(f"danet-gpu-check: nothing can be checked here: {reason}\n")
        if args.json:
            write_json(args.json, summary([], "none", refused=reason))
        return 2
    start = time.time()
    results = run_checks(args.only, "gpu:0", echo=lambda line: print(line, flush=True))
    data = summary(results, "gpu:0")
    print(f"{data['passed']} passed, {data['failed']} failed, {data['skipped']} skipped in {time.time() - start:.0f} s"
          f" (Paddle {data['paddle']}, CUDA {data['cuda']}, {data['gpu']})")
    if args.json:
        write_json(args.json, data)
    return 0 if data["ok"] else 1


def console():
    sys.exit(main())


if __name__ == "__main__":
    console()
