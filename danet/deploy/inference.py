"""Run an exported DANet with Paddle Inference (``paddle.inference``): CPU with or without oneDNN, or a GPU.

    from danet.deploy.inference import InferenceModel
    from danet.inference import predict_label

    model = InferenceModel("output/export/danet", threads=4)   # a prefix, one of its files or its folder
    ids = model.predict(rgb)                                   # uint8 [H, W] class ids of an RGB uint8 image
    ids = predict_label(model.predict_fn, normalised, model.num_classes, None, 512, flip=True)

``model.predict_fn`` maps float32 ``[N, 3, h, w]`` to logits ``[N, C, h, w]``, as the dygraph model's does,
so the sliding window, scales and flip of :mod:`danet.inference` work unchanged. ``predict`` uses the
settings of the export's description (``<prefix>_deploy.json``; keyword arguments override them).

oneDNN (Paddle 3.x): the predictor's ``onednn_placement_pass`` hands every operator that has a oneDNN
kernel to oneDNN, and the oneDNN executor of Paddle 3.3.1 cannot run this program's bilinear resize
(``ConvertPirAttribute2RuntimeAttribute not support [pir::ArrayAttribute<pir::DoubleAttribute>]``: the
empty ``scale`` attribute). That pass is removed here; the fusion passes still put the convolutions
(with BatchNorm and ReLU folded in) on oneDNN, which is where the time goes. Paddle 2.6 runs the whole
program on oneDNN as it is.
"""
import logging
import os

import numpy as np

from danet.deploy.description import DEFAULT_INFERENCE, PROGRAM_SUFFIXES, find_export, read_description
from danet.errors import UserError

log = logging.getLogger(__name__)

# oneDNN keeps compiled kernels per input shape; whole images of many sizes would grow that cache without
# bound. 10 shapes cover the sliding windows (one shape) and a few image sizes.
ONEDNN_CACHE_SHAPES = 10
GPU_MEMORY_POOL_MB = 256  # the initial pool Paddle Inference takes on the GPU (it grows as needed)
PLACEMENT_PASS = "onednn_placement_pass"


class InferenceModel:
    """An exported model (``danet-export``) run by a Paddle Inference predictor.

    ``path``: the export prefix, one of its files or its folder; ``device``: 'cpu' or 'gpu'; ``onednn``:
    oneDNN kernels on the CPU; ``threads``: CPU math threads (0: every core this process may use);
    ``gpu_id``: the GPU; ``tensorrt``: TensorRT subgraphs on the GPU (float32, dynamic shapes up to
    ``max_input`` = (batch, height, width), by default the description's window). A model or settings this
    Paddle cannot run is a :class:`~danet.errors.UserError` of one line. ``_placement`` (for the tests) keeps
    Paddle 3.x's oneDNN placement pass, which this program fails on.
    """

    def __init__(self, path, device="cpu", onednn=True, threads=0, gpu_id=0, tensorrt=False, max_input=None,
                 _placement=False):
        _check_device(device, tensorrt)  # first: a setting that cannot work is refused before any file is read
        self.prefix, self.program, self.params = find_export(path)
        self.description = read_description(self.prefix)
        self.device, self.tensorrt = device, bool(tensorrt)
        self.onednn = bool(onednn) and device == "cpu" and _has_onednn()
        if onednn and device == "cpu" and not self.onednn:
            log.info("this Paddle is built without oneDNN: running %s on its plain CPU kernels", self.prefix)
        self.threads = threads or _cores()
        _check_program(self.program)
        config = self._config(gpu_id, max_input, _placement)
        self.predictor = _create_predictor(config, self.program)
        self._input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self._output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    # ------------------------------------------------------------------------------------------- what it is

    @property
    def num_classes(self):
        """Classes of the output (from the description; None without one)."""
        return self.description["num_classes"] if self.description else None

    @property
    def settings(self):
        """How to predict: base_size, crop_size, stride_rate, scales, flip, window_batch."""
        return dict((self.description or {}).get("inference") or DEFAULT_INFERENCE)

    @property
    def input_norm(self):
        """The normalisation, as :func:`danet.deploy.segment` takes it: a name of ``INPUT_NORMS`` when the
        description's mean and std are that one's (bit for bit the dygraph path's), else (mean, std) on 0..1."""
        from danet.data.transforms import INPUT_NORMS

        spec = self._described("input")
        mean, std = [m / 255 for m in spec["mean"]], [s / 255 for s in spec["std"]]
        name = spec.get("input_norm")
        if name in INPUT_NORMS and np.allclose(INPUT_NORMS[name], (mean, std), atol=1e-6):
            return name
        return mean, std

    @property
    def palette(self):
        return self._described("palette")

    @property
    def classes(self):
        return self._described("classes")

    def _described(self, key):
        if not self.description:
            raise UserError(f"{self.prefix} has no description ({self.prefix}_deploy.json): export it again with "
                            "danet-export, or give the normalisation and settings yourself")
        return self.description[key]

    def __repr__(self):
        how = "oneDNN" if self.onednn else "GPU" if self.device == "gpu" else "plain CPU"
        return f"InferenceModel({self.prefix!r}, {how}{', TensorRT' if self.tensorrt else ''})"

    # ------------------------------------------------------------------------------------------- predicting

    def predict_fn(self, batch):
        """float32 [N, 3, h, w] (normalised) -> float32 logits [N, C, h, w], for :func:`danet.inference.predict`."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise UserError(f"expected a float32 [N, 3, H, W] batch, got shape {list(batch.shape)}")
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(batch)
        try:
            self.predictor.run()
        except Exception as e:  # Paddle raises several types, each with a C++ trace: one line is enough
            hint = ": try onednn=False (danet-predict --no-onednn)" if self.onednn else ""
            raise UserError(f"Paddle Inference could not run {self.prefix} on a {list(batch.shape)} input "
                            f"({self._how()}): {paddle_message(e)}{hint}") from e
        return self._output.copy_to_cpu()

    def predict(self, image_rgb_uint8, **settings):
        """Class ids uint8 [H, W] of an RGB uint8 image [H, W, 3], predicted as the description says
        (``settings`` override base_size, crop_size, stride_rate, scales, flip, window_batch)."""
        from danet.deploy import segment

        unknown = sorted(set(settings) - set(DEFAULT_INFERENCE))
        if unknown:
            raise TypeError(f"predict: unknown settings {unknown}; known: {sorted(DEFAULT_INFERENCE)}")
        chosen = dict(self.settings, **settings)
        return segment(self.predict_fn, image_rgb_uint8, self._described("num_classes"), self.input_norm, **chosen)

    # ------------------------------------------------------------------------------------------- set-up

    def _how(self):
        if self.device == "gpu":
            return "GPU" + (" + TensorRT" if self.tensorrt else "")
        return f"CPU, {self.threads} threads, oneDNN {'on' if self.onednn else 'off'}"

    def _config(self, gpu_id, max_input, placement):
        import paddle.inference as inference

        config = inference.Config(self.program, self.params)
        config.disable_glog_info()
        if self.device == "gpu":
            self._gpu(config, gpu_id, max_input)
            return config
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(int(self.threads))
        if self.onednn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(ONEDNN_CACHE_SHAPES)
            if _paddle_major() != 2 and not placement:
                config.delete_pass(PLACEMENT_PASS)  # see the module docstring: bilinear resize on oneDNN fails
        else:
            config.disable_mkldnn()
        return config

    def _gpu(self, config, gpu_id, max_input):
        """GPU (and TensorRT) settings, as the Paddle Inference documentation gives them (not run here: no GPU)."""
        import paddle.inference as inference

        config.enable_use_gpu(GPU_MEMORY_POOL_MB, int(gpu_id))
        if not self.tensorrt:
            return
        settings = self.settings
        batch, height, width = max_input or (max(2, settings["window_batch"]), settings["crop_size"],
                                             settings["crop_size"])
        name = ((self.description or {}).get("input") or {}).get("name", "image")
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=int(batch), min_subgraph_size=3,
                                      precision_mode=inference.PrecisionType.Float32, use_static=False,
                                      use_calib_mode=False)
        # Any size up to the window: smaller whole images run at their own size.
        config.set_trt_dynamic_shape_info({name: [1, 3, 8, 8]}, {name: [int(batch), 3, int(height), int(width)]},
                                          {name: [1, 3, int(height), int(width)]})


def _check_device(device, tensorrt):
    """Refuse, in one line, a device or TensorRT this Paddle was not built for."""
    import paddle
    import paddle.inference as inference

    if device not in ("cpu", "gpu"):
        raise UserError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if tensorrt and device != "gpu":
        raise UserError("TensorRT runs on the GPU only: give device='gpu' (danet-predict --cuda) with it")
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise UserError("device='gpu' needs a Paddle built with CUDA (paddlepaddle-gpu); this one is CPU-only: "
                        "use device='cpu'")
    if tensorrt and tuple(inference.get_trt_compile_version()) == (0, 0, 0):
        raise UserError("tensorrt=True needs a Paddle built with TensorRT (see the Paddle Inference install guide); "
                        "this one is not: drop TensorRT")


def _create_predictor(config, program):
    import paddle.inference as inference

    try:
        return inference.create_predictor(config)
    except Exception as e:
        raise UserError(f"Paddle Inference cannot load {program}: {paddle_message(e)} (a damaged or partial "
                        "export? export it again)") from e


def _check_program(program):
    """Refuse a damaged ``.pdmodel`` before Paddle reads it: Paddle 2.6 crashes (SIGSEGV) on one."""
    if not program.endswith(PROGRAM_SUFFIXES[1]):
        return  # a PIR .json program: Paddle itself reports a damaged one as an error
    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc()
    try:
        with open(program, "rb") as f:
            desc.ParseFromString(f.read())
    except Exception as e:  # protobuf's DecodeError; OSError
        raise UserError(f"{program} is not a Paddle program ({type(e).__name__}): export the model again") from e
    if not desc.blocks or not desc.blocks[0].ops:
        raise UserError(f"{program} is an empty Paddle program: export the model again")


def paddle_message(error):
    """The one line that says what went wrong in a Paddle error (its message holds a C++ trace and hints)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.strip().startswith("-")]
    for i, line in enumerate(lines):
        if line.startswith("Error Message Summary") and i + 1 < len(lines):
            lines = lines[i + 1:]
            break
    text = lines[0] if lines else type(error).__name__
    text = text.split(" (at /paddle/")[0].split("  [Hint")[0].strip()
    return text[:300]


def _has_onednn():
    import paddle

    return paddle.base.core.is_compiled_with_mkldnn()


def _paddle_major():
    import paddle

    return int(paddle.__version__.split(".")[0])


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
