"""Speed and memory of DANet on this machine, optionally side by side with PaddleSeg's DANet.

Every measurement runs in a fresh Python process, so its peak resident memory (the kernel's high-water
mark) is its own and no measurement warms up or fragments the next one. The training measurements time
the real training step of each graph mode (``DygraphStep`` / ``StaticStep`` built from the same flags as
the trainers), the evaluation ones the real inference path (:func:`danet.inference.predict`), the data one
``SegDataset`` with the training transform on a 1024x2048 image, pinned to one core. ``eval_inference`` and
``eval_inference_onednn`` run the same model, exported (``danet-export``'s code, in a process of its own
first), through Paddle Inference with oneDNN off and on, and ``eval_onnx`` exported to ONNX and run by
onnxruntime, each on eval_whole's image and threads.

``danet-benchmark`` (``tools/benchmark.py``) is the command line; :func:`run` returns the report (a dict,
also written as JSON). The measurements themselves are in :mod:`danet.tools.benchmark_measure`.
"""
import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time

from danet.tools.benchmark_measure import (
    export_for_inference,
    measure_data,
    measure_eval,
    measure_inference,
    measure_onnx,
    measure_train,
    peak_memory,
)

log = logging.getLogger(__name__)

MEASUREMENTS = ("train_dygraph", "train_static", "eval_whole", "eval_slide", "eval_inference", "eval_inference_onednn",
                "eval_onnx", "data")
EXPORT = "export"  # the worker that exports the model for the eval_inference measurements
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser():
    p = argparse.ArgumentParser(prog="danet-benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="danet", choices=["danet", "dranet", "clusterdanet"],
                   help="the family member to measure (default: %(default)s)")
    p.add_argument("--backbone", default="resnet50", help="ResNet depth (default: %(default)s)")
    p.add_argument("--num_classes", type=int, default=19, help="classes (default: %(default)s)")
    p.add_argument("--crop_size", type=int, default=256, help="training crop and sliding window (default: 256)")
    p.add_argument("--batch_size", type=int, default=2, help="training images per step (default: %(default)s)")
    p.add_argument("--eval_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="evaluation image size (default: 2 x crop square, the PaddleSeg script's forward pass)")
    p.add_argument("--window_batch", type=int, default=2, help="sliding windows per forward pass (default: 2)")
    p.add_argument("--threads", type=int, default=0, help="CPU math threads, 0 = all cores (default: 0)")
    p.add_argument("--iters", type=int, default=3, help="timed training steps (default: %(default)s)")
    p.add_argument("--eval_iters", type=int, default=3, help="timed evaluation images (default: %(default)s)")
    p.add_argument("--data_iters", type=int, default=30, help="timed data samples (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default: %(default)s)")
    p.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS), metavar="NAME",
                   help=f"measurements to run (default: all of {' '.join(MEASUREMENTS)})")
    p.add_argument("--recompute", action="store_true", help="recompute position attention in the backward pass")
    p.add_argument("--amp", action="store_true", help="mixed precision O1 (GPU only)")
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--peer", default=None, metavar="PYTHON",
                   help="the Python of a PaddleSeg venv (`make peer-venv` makes .venv-peer): time its DANet too")
    p.add_argument("--peer_script", default=None, metavar="PATH",
                   help="the peer timing script (default: $DANET_PEER_SCRIPT or danet/tools/peer_paddleseg.py)")
    p.add_argument("--peer_steps", type=int, default=5, help="timed peer training steps (default: %(default)s)")
    p.add_argument("--peer_rounds", type=int, default=1, help="ours/theirs alternations per setting (default: 1)")
    p.add_argument("--worker", choices=MEASUREMENTS + (EXPORT,), default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_model", default=None, help=argparse.SUPPRESS)  # the export prefix of eval_inference*
    return p


def parse(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("num_classes", "crop_size", "batch_size", "window_batch", "iters", "eval_iters", "data_iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.threads < 0:
        parser.error("--warmup and --threads must be >= 0")
    if args.eval_size is None:
        args.eval_size = [2 * args.crop_size, 2 * args.crop_size]
    peer_shapes = args.model == "danet" and args.backbone == "resnet50" and args.batch_size == 2 \
        and args.eval_size == [2 * args.crop_size] * 2
    if args.peer and not peer_shapes:
        parser.error("--peer compares with the PaddleSeg script's DANet-ResNet50 at its shapes: --model danet, "
                     "--backbone resnet50, "
                     "--batch_size 2 and the default --eval_size (2 x --crop_size square)")
    return args


# ----------------------------------------------------------------------------------------------- in the worker


def run_worker(args):
    """One measurement in this process; the result (with peak memory) goes to ``--worker_out`` as JSON."""
    logging.getLogger("danet").setLevel(logging.WARNING)
    if args.worker.startswith("train_"):
        result = measure_train(args, args.worker[len("train_"):])
    elif args.worker == EXPORT:
        result = export_for_inference(args)
    elif args.worker.startswith("eval_inference"):
        result = measure_inference(args, onednn=args.worker == "eval_inference_onednn")
    elif args.worker == "eval_onnx":
        result = measure_onnx(args)
    elif args.worker.startswith("eval_"):
        result = measure_eval(args, slide=args.worker == "eval_slide")
    else:
        result = measure_data(args)
    result.update(peak_memory())
    with open(args.worker_out, "w") as f:
        json.dump(result, f)


# ----------------------------------------------------------------------------------------------- in the parent


def _forwarded(args):
    """The flags that shape a measurement, for the worker's command line."""
    argv = ["--model", args.model, "--backbone", args.backbone, "--num_classes", str(args.num_classes),
            "--crop_size", str(args.crop_size),
            "--batch_size", str(args.batch_size), "--eval_size", *map(str, args.eval_size),
            "--window_batch", str(args.window_batch), "--threads", str(args.threads), "--iters", str(args.iters),
            "--eval_iters", str(args.eval_iters), "--data_iters", str(args.data_iters), "--warmup", str(args.warmup)]
    return argv + ["--recompute"] * args.recompute + ["--amp"] * args.amp + ["--cuda"] * args.cuda


def child_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines would drown the table
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def measure(name, args, env=None, extra=()):
    """Run one measurement in a fresh process; its result dict, or {'error': last lines of its output}.
    ``extra``: more worker flags (``--worker_model``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "danet.tools.benchmark", "--worker", name, "--worker_out", out] + _forwarded(args)
        cmd += list(extra)
        start = time.time()
        proc = subprocess.run(cmd, env=child_env(env), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = [line for line in proc.stdout.splitlines() if line.strip()][-5:]
            log.error("%s failed (exit %d): %s", name, proc.returncode, " | ".join(tail))
            return {"error": " | ".join(tail), "exit_code": proc.returncode}
        with open(out) as f:
            result = json.load(f)
    result["wall_s"] = round(time.time() - start, 1)
    log.info("%s: %s", name, _summary(name, result))
    return result


def _summary(name, r):
    if "error" in r:
        return "FAILED"
    if name == EXPORT:
        return f"exported in {r['export_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
    rate = r.get("images_per_s", r.get("samples_per_s_per_core"))
    return f"{rate:.3f}/s, {r['s_per_iter']:.3f} s/iter, peak RSS {r['peak_rss_mib']:.0f} MiB"


def environment():
    import paddle

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"paddle": paddle.__version__, "python": platform.python_version(), "cpu": platform.processor() or
            platform.machine(), "cores": cores, "load_1min_at_start": load, "time": time.strftime("%Y-%m-%d %H:%M")}


def run(args):
    """All requested measurements (and the peer comparison); returns the report dict, writes --json."""
    report = {"config": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
              "environment": environment(), "results": {}}
    compared = ("train_dygraph", "train_static", "eval_whole") if args.peer else ()
    if args.peer:
        from danet.tools.benchmark_peer import compare_with_peer

        report["peer"] = compare_with_peer(args)
        # Our side of the last "default threads" round is the measurement at our defaults: not run twice.
        last = report["peer"]["default threads"]["runs"]["ours"][-1]
        report["results"].update((name, last[name]) for name in compared if name in last)
    with tempfile.TemporaryDirectory() as tmp:
        extra = _export_if_needed(args, report, tmp)
        for name in args.only:
            if name in compared:
                continue
            if name.startswith("eval_inference") and "error" in report.get("export", {}):
                report["results"][name] = {"error": "the export failed: " + report["export"]["error"]}
                continue
            report["results"][name] = measure(name, args, extra=extra if name.startswith("eval_inference") else ())
    report["environment"]["load_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def _export_if_needed(args, report, folder):
    """Export the model once (its own process) when an eval_inference measurement is asked for; the worker flags
    that point the measurements at it."""
    if not any(name.startswith("eval_inference") for name in args.only):
        return ()
    extra = ["--worker_model", os.path.join(folder, "danet")]
    report["export"] = measure(EXPORT, args, extra=extra)
    return extra


def format_report(report):
    """The report as text tables: our measurements, then ours vs PaddleSeg per thread setting."""
    cfg, env = report["config"], report["environment"]
    lines = [f"{cfg.get('model', 'danet')}-{cfg['backbone']}, crop {cfg['crop_size']}, batch {cfg['batch_size']}, eval "
             f"{cfg['eval_size'][0]}x{cfg['eval_size'][1]}, threads {cfg['threads'] or 'all'} | Paddle "
             f"{env['paddle']}, {env['cores']} cores, load {env['load_1min_at_start']:.1f}",
             f"{'measurement':<22}{'rate':>10}  {'unit':<16}{'s/iter':>9}{'peak RSS MiB':>14}{'GPU MiB':>9}"
             f"{'x eval_whole':>14}"]
    units = {"data": "samples/s/core"}
    whole = report["results"].get("eval_whole", {}).get("images_per_s")
    for name, r in report["results"].items():
        if "error" in r:
            lines.append(f"{name:<22}{'FAILED':>10}  {r['error'][:80]}")
            continue
        rate = r.get("images_per_s", r.get("samples_per_s_per_core"))
        gpu = f"{r['peak_gpu_mib']:.0f}" if "peak_gpu_mib" in r else "-"
        # The exported model's speed relative to the dygraph model's on the same image and threads.
        ratio = f"{rate / whole:.2f}" if whole and name.startswith(("eval_inference", "eval_onnx")) else ""
        lines.append(f"{name:<22}{rate:>10.3f}  {units.get(name, 'images/s'):<16}{r['s_per_iter']:>9.3f}"
                     f"{r['peak_rss_mib']:>14.0f}{gpu:>9}{ratio:>14}")
    explain = {"default threads": "ours: all cores; PaddleSeg: Paddle's default of one math thread",
               "2 threads": "both: OMP_NUM_THREADS=2, ours also --threads 2"}
    for setting, block in report.get("peer", {}).items():
        lines.append(f"ours vs PaddleSeg 2.8.0 DANet-R50_vd, {setting} ({explain.get(setting, '')}):")
        lines.append(f"  {'measurement':<16}{'ours img/s':>12}{'theirs img/s':>14}{'ratio':>8}")
        for name, row in block["rows"].items():
            lines.append(f"  {name:<16}{row['ours_images_per_s']:>12.3f}{row['peer_images_per_s']:>14.3f}"
                         f"{row['ratio']:>8.2f}")
    return "\n".join(lines)


def main(argv=None):
    """Entry point of danet-benchmark; returns the report."""
    from danet.runtime import run_main, setup_logging

    args = parse(argv)
    if args.worker:
        return run_worker(args)
    setup_logging()
    return run_main(run, args)


def console():
    """The console script: prints the report's table (``main`` returns the report)."""
    report = main()
    if report and "--worker" not in sys.argv:  # a worker process hands its numbers over in a file
        print(format_report(report))


if __name__ == "__main__":
    console()
