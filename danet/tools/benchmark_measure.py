"""The measurements of ``danet-benchmark``, each run in a worker process of its own (``run_worker`` in
:mod:`danet.tools.benchmark`): training steps of both graph modes, evaluation (whole image, sliding window), the
exported model through Paddle Inference and onnxruntime, the data pipeline, and the process's peak memory. Each
returns its numbers as a dict."""
import os
import sys
import tempfile
import time

import numpy as np


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
    from danet.deploy.onnx import export_onnx, require_onnx, session_options
    from danet.inference import predict

    model, _ = _model(args)
    _, ort = require_onnx()
    height, width = args.eval_size
    image = np.random.default_rng(0).normal(size=(3, height, width)).astype(np.float32)  # eval_whole's image
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "danet.onnx")
        export_onnx(model, path, dynamic_check=False)
        # 0 threads: onnxruntime uses every core, as our --threads 0
        session = ort.InferenceSession(path, session_options(ort, args.threads), providers=["CPUExecutionProvider"])
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
