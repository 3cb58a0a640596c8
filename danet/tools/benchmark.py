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
also written as JSON).
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

import numpy as np

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


def peak_memory():
    """Peak resident memory of this process in MiB (VmHWM; ru_maxrss where /proc is missing), and GPU peak."""
    peak = None
    try:
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        scale = 1 / 2 ** 20 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    out = {"peak_rss_mib": round(peak, 1)}
    import paddle

    if paddle.is_compiled_with_cuda() and paddle.device.get_device().startswith("gpu"):
        out["peak_gpu_mib"] = round(paddle.device.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def _timed(fn, warmup, iters):
    """Median and all wall times of ``iters`` calls of fn after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), [round(t, 4) for t in times]


def _train_args(args, entry):
    from danet.options import parse as parse_flags

    flags = ["--model", args.model, "--backbone", args.backbone, "--num_classes", str(args.num_classes),
             "--crop_size", str(args.crop_size), "--batch_size", str(args.batch_size), "--threads", str(args.threads),
             "--num_workers", "0"]
    flags += ["--recompute"] * args.recompute + ["--amp"] * args.amp + ["--cuda"] * args.cuda
    return parse_flags(entry, flags)


def _batch(args, rng):
    images = rng.normal(size=(args.batch_size, 3, args.crop_size, args.crop_size)).astype(np.float32)
    labels = rng.integers(0, args.num_classes, size=(args.batch_size, args.crop_size, args.crop_size))
    labels[:, :8] = 255  # a void band, as real labels have
    return images, labels.astype(np.int64)


def measure_train(args, mode):
    """Images/s of the trainers' own step (forward, loss, backward, Momentum, LR step) on random data."""
    import paddle

    from danet.runtime import seed_everything, setup_device

    flags = _train_args(args, "train_dygraph" if mode == "dygraph" else "train_executor")
    device = setup_device(flags.cuda, flags.threads)
    seed_everything(flags.seed)
    if mode == "dygraph":
        from danet.engine.dygraph import DygraphStep

        step = DygraphStep(flags, steps_per_epoch=1000)
    else:
        from danet.engine.static import StaticStep

        paddle.enable_static()  # this worker process is an entry point of its own
        step = StaticStep(flags, steps_per_epoch=1000)
    images, labels = _batch(args, np.random.default_rng(0))
    losses = []
    median, times = _timed(lambda: losses.append(step.run(images, labels)[0]), args.warmup, args.iters)
    if not np.isfinite(losses).all():
        raise RuntimeError(f"the {mode} training step gave non-finite losses {losses}")
    return {"images_per_s": args.batch_size / median, "s_per_iter": median, "times": times, "device": device}


def measure_eval(args, slide):
    """Images/s of danet.inference.predict: the whole image in one pass, or crop_size windows (stride 2/3)."""
    from danet.inference import dygraph_predict_fn, predict

    model, device = _model(args)
    height, width = args.eval_size
    image = np.random.default_rng(0).normal(size=(3, height, width)).astype(np.float32)
    crop = args.crop_size if slide else max(height, width)
    predict_fn = dygraph_predict_fn(model, args.window_batch)

    def one():
        predict(predict_fn, image, args.num_classes, base_size=None, crop_size=crop, window_batch=args.window_batch)

    median, times = _timed(one, min(args.warmup, 1), args.eval_iters)
    return {"images_per_s": 1 / median, "s_per_iter": median, "times": times, "device": device,
            "size": [height, width], "window": crop}


def _model(args):
    """The measured model (eval mode), the same weights in every worker; returns (model, device)."""
    from danet import build_model
    from danet.engine.common import model_config
    from danet.runtime import seed_everything, setup_device

    flags = _train_args(args, "train_dygraph")
    device = setup_device(flags.cuda, flags.threads)
    seed_everything(flags.seed)
    model = build_model(**model_config(flags))
    model.eval()
    return model, device


def export_for_inference(args):
    """Export the measured model to ``--worker_model`` as danet-export does (checked against dygraph)."""
    from danet.deploy import export_model
    from danet.deploy.description import build_description

    model, _ = _model(args)
    start = time.perf_counter()
    report = export_model(model, args.worker_model, description=build_description(model, crop_size=args.crop_size))
    return {"export_s": time.perf_counter() - start, "inference_diff": report["inference_diff"]}


def measure_inference(args, onednn):
    """Images/s of danet.inference.predict on the whole image (as eval_whole) through Paddle Inference."""
    from danet.deploy.inference import InferenceModel
    from danet.inference import predict

    model = InferenceModel(args.worker_model, device="gpu" if args.cuda else "cpu", onednn=onednn,
                           threads=args.threads)
    height, width = args.eval_size
    image = np.random.default_rng(0).normal(size=(3, height, width)).astype(np.float32)  # eval_whole's image

    def one():
        predict(model.predict_fn, image, args.num_classes, base_size=None, crop_size=max(height, width),
                window_batch=args.window_batch)

    median, times = _timed(one, min(args.warmup, 1), args.eval_iters)
    return {"images_per_s": 1 / median, "s_per_iter": median, "times": times, "device": model.device,
            "onednn": model.onednn, "threads": model.threads, "size": [height, width]}


def measure_onnx(args):
    """Images/s of the model exported to ONNX (danet-export --format onnx) and run by onnxruntime on the CPU, on
    eval_whole's image and threads; the export is checked against the model and not timed."""
    from danet.deploy.onnx import export_onnx, require_onnx
    from danet.inference import predict

    model, _ = _model(args)
    _, ort = require_onnx()
    height, width = args.eval_size
    image = np.random.default_rng(0).normal(size=(3, height, width)).astype(np.float32)  # eval_whole's image
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "danet.onnx")
        export_onnx(model, path, dynamic_check=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads  # 0: onnxruntime uses every core, as our --threads 0
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def one():
            predict(lambda batch: session.run(None, {name: np.ascontiguousarray(batch, np.float32)})[0], image,
                    args.num_classes, base_size=None, crop_size=max(height, width), window_batch=args.window_batch)

        median, times = _timed(one, min(args.warmup, 1), args.eval_iters)
    return {"images_per_s": 1 / median, "s_per_iter": median, "times": times, "device": "cpu",
            "onnxruntime": ort.__version__, "size": [height, width]}


def measure_data(args):
    """Samples/s of SegDataset + the training transform (random scale, 768 crop) on a 1024x2048 image, one core."""
    import cv2

    from danet.data.cityscapes import SegDataset
    from danet.data.synthetic import make_synthetic_dataset
    from danet.data.transforms import build_train_transform

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as one loader worker has
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(tmp, num_train=1, num_val=1, height=1024, width=2048)
        dataset = SegDataset(os.path.dirname(root), "train", os.path.basename(root),
                             build_train_transform(1024, 768, scale=True), num_classes=args.num_classes)
        png_mib = os.path.getsize(dataset.image_paths[0]) / 2 ** 20
        np.random.seed(0)
        shapes = set()
        median, times = _timed(lambda: shapes.add(dataset[0][0].shape), args.warmup, args.data_iters)
        read_s, _ = _timed(lambda: dataset.read(0), 1, max(3, args.data_iters // 3))
    if shapes != {(3, 768, 768)}:
        raise RuntimeError(f"the training transform gave images of shapes {shapes}, expected (3, 768, 768)")
    # How the time splits: decoding the two PNGs (and checking the label) vs the transform.
    return {"samples_per_s_per_core": 1 / median, "s_per_iter": median, "mean_s": float(np.mean(times)),
            "read_s": read_s, "transform_s": max(median - read_s, 0.0), "times": times, "source": [1024, 2048],
            "crop": 768, "png_mib": round(png_mib, 2)}


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
