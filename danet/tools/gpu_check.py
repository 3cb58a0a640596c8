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

This module is the command line and runs the checks; they are in :mod:`danet.gpucheck`. Written from Paddle's
documentation on a machine without a GPU: the check functions themselves run on a CPU (``device="cpu"``, small
models, AMP off) in tests/test_gpu_check.py.
"""
import argparse
import gc
import json
import logging
import os
import sys
import time
from dataclasses import asdict

from danet.gpucheck.checks_infer import check_export_cuda, check_inference_gpu, check_memory_infer, check_pam_sdpa
from danet.gpucheck.checks_train import (
    check_executor_fleet,
    check_memory_train,
    check_syncbn,
    check_train_dygraph,
    check_train_executor,
)
from danet.gpucheck.common import Failed, Result, Skipped, on_gpu, one_line

log = logging.getLogger(__name__)
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
        if on_gpu(device):
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

    if not on_gpu(device):
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
