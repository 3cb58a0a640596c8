"""Export a model to ONNX with paddle2onnx, checked by onnxruntime on the CPU against the Paddle model.

Which converter reads which program (found on this project's models, CPU builds):

- Paddle 3.x writes PIR programs (``.json``): paddle2onnx 2.0.1 and 2.1.0 convert them. paddle2onnx 1.3.1
  "converts" them to an empty model without an error, so the pair is refused here.
- Paddle 2.6 writes ``.pdmodel``: paddle2onnx 1.3.1 converts it; paddle2onnx 2.x does not import on a
  Paddle before 3.0 (2.1.0 says so, 2.0.1 fails on a missing PIR symbol).
- The old IR on Paddle 3.3 (``FLAGS_enable_pir_api=0``) is no way out: ``paddle.jit.save`` itself fails there
  on the attention's ``bmm`` ("must be Value, but got Variable").
- Opset 11 to 21 (paddle2onnx 2.x) or 11 to 19 (1.3.1): below 11 the converter refuses the bilinear upsampling.
- Batch, height and width are all dynamic in the ONNX file (the export's input is ``[None, 3, None, None]``),
  except for DRANet: paddle2onnx converts adaptive pooling (its compact position attention pools to 1, 2, 3 and
  6 bins) only at a static input size ("[OP: pd_op.pool2d] Adaptive only support static input shape"), so it
  is exported at a fixed height and width (``input_size``; the batch stays dynamic). paddle2onnx 1.3.1 (Paddle
  2.6) does not abort there but writes an AveragePool of stride 0, which onnxruntime refuses to load. Converting
  DRANet at any size would need those bins written with shape-dependent slices and means instead of
  ``adaptive_avg_pool2d``.

The conversion runs in a child process: paddle2onnx aborts its process (SIGABRT, a C++ trace) on an opset or
an operator it cannot convert, which would end the caller without a word.
"""
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from danet.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_OPSET = 11  # the lowest that converts this model: what most ONNX runtimes and converters accept
MIN_OPSET = 11
MAX_OPSET = {1: 19, 2: 21}  # by paddle2onnx major version, as each says when refusing a higher one
ONNX_TOLERANCE = 1e-4  # of the largest logit: onnxruntime and Paddle sum in other orders (measured 1.3e-5)
INSTALL = {3: "pip install 'danet-paddle[onnx]'", 2: "pip install 'danet-paddle[onnx-paddle26]'"}
CONVERT_TIMEOUT = 1800  # seconds; a ResNet-101 DANet converts in well under a minute
# Run by the child: paddle2onnx's export with save_file=None returns the model's bytes and skips its optimiser
# step (which, with polygraphy, would pip-install packages at run time).
_CONVERT = """
import sys
import paddle2onnx

program, params, opset, out = sys.argv[1:5]
data = paddle2onnx.export(program, params, save_file=None, opset_version=int(opset), auto_upgrade_opset=False,
                          verbose=False, enable_onnx_checker=True)
if not data:
    sys.exit("paddle2onnx returned an empty model")
with open(out, "wb") as f:
    f.write(data)
"""


def _paddle_major():
    import paddle

    return int(paddle.__version__.split(".")[0]) or 3  # a develop build says 0.0.0


def require_onnx():
    """(paddle2onnx version, onnxruntime module); a UserError naming the pip line when either is missing or
    the installed paddle2onnx cannot read this Paddle's programs."""
    major = 3 if _paddle_major() >= 3 else 2
    install = INSTALL[major]
    try:
        paddle2onnx = importlib.import_module("paddle2onnx")
        ort = importlib.import_module("onnxruntime")
    except ImportError as e:  # missing, or built against another Paddle (2.0.1 on 2.6: an undefined symbol)
        reason = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"ONNX export needs paddle2onnx and onnxruntime for Paddle {major}.x (import failed: "
                        f"{reason}): {install}") from e
    except ValueError as e:  # paddle2onnx 2.x on a Paddle before 3.0 refuses to import
        raise UserError(f"the installed paddle2onnx does not work with this Paddle ({str(e).splitlines()[0]}): "
                        f"{install}") from e
    version = str(getattr(paddle2onnx, "__version__", "0"))
    if (int(version.split(".")[0]) >= 2) != (major >= 3):
        raise UserError(f"paddle2onnx {version} cannot convert the programs of Paddle {major}.x "
                        f"({'PIR .json' if major >= 3 else '.pdmodel'}): {install}")
    return version, ort


def check_opset(opset, converter_version):
    """Refuse an opset the converter would abort on (it takes the process down with it)."""
    top = MAX_OPSET.get(int(converter_version.split(".")[0]), MAX_OPSET[2])
    if not MIN_OPSET <= opset <= top:
        raise UserError(f"--opset {opset}: paddle2onnx {converter_version} converts this model at opset "
                        f"{MIN_OPSET} to {top} (below {MIN_OPSET} its bilinear upsampling has no ONNX form)")


def export_onnx(model, path, opset=DEFAULT_OPSET, check_shape=(1, 3, 64, 96), dynamic_check=True, input_size=None,
                description=None):
    """Write ``model`` (eval mode) as the ONNX file ``path`` and its deploy description
    ``<path without .onnx>_deploy.json`` (``description``, by default that of the model alone; see
    :mod:`danet.deploy.description`), with an ``onnx`` entry (file, opset, input and output names).

    The ONNX input is ``image`` float32 ``[batch, 3, height, width]`` (all three dynamic, or height and width
    fixed to ``input_size``), the output the fused logits ``[batch, num_classes, height, width]``. onnxruntime
    (CPU) runs the file on a random ``check_shape`` image (``input_size`` replaces its height and width) and,
    with ``dynamic_check``, on a second one of another batch (and size, when dynamic); each must give the Paddle
    model's logits to ``ONNX_TOLERANCE`` of their largest magnitude and the same class wherever the model's
    two best classes are further apart than that (at a near-tie either answer is right). Otherwise a UserError
    says why, and nothing is written (an earlier file at ``path`` stays as it was).

    Returns {'files', 'opset', 'paddle2onnx', 'onnxruntime', 'input_shape', 'checks': [{'shape', 'max_diff',
    'relative', 'argmax_mismatch', 'near_ties'}]}.
    """
    from danet.deploy import description as description_module

    version, ort = require_onnx()
    check_opset(opset, version)
    model.eval()
    input_shape = [None, 3] + (list(input_size) if input_size else [None, None])
    check_shape = tuple(check_shape[:2]) + (tuple(input_size) if input_size else tuple(check_shape[2:]))
    shapes = [check_shape] + ([second_shape(check_shape, resize=not input_size)] if dynamic_check else [])
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".danet-onnx-", dir=folder)  # same file system: the final move is atomic
    try:
        onnx_file = _convert(model, work, input_shape, opset, version)
        session = _session(ort, onnx_file, version)
        checks = [compare_logits(model, session, shape, path) for shape in shapes]
        names = [session.get_inputs()[0].name, session.get_outputs()[0].name]
        del session
        os.replace(onnx_file, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    description = dict(description or description_module.build_description(model))
    description["onnx"] = dict(file=os.path.basename(path), opset=opset, paddle2onnx=version, input=names[0],
                               output=names[1], input_shape=[-1 if d is None else d for d in input_shape])
    written = description_module.write_description(description, os.path.splitext(path)[0])
    report = dict(files=[path, written], opset=opset, paddle2onnx=version, onnxruntime=ort.__version__,
                  input_shape=input_shape, checks=checks)
    log.info("exported %s (opset %d, paddle2onnx %s); onnxruntime's logits differ from the model's by at most "
             "%.3g of the largest on %s", path, opset, version, max(c["relative"] for c in checks),
             ", ".join("x".join(map(str, c["shape"])) for c in checks))
    return report


def session_options(ort, threads=0):
    """onnxruntime session options: ``threads`` math threads (0 = every core), errors only on the console (its
    warnings about initializers paddle2onnx leaves unused are noise to a user)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def _session(ort, onnx_file, version):
    """An onnxruntime CPU session of the converted file; a UserError when onnxruntime refuses it (paddle2onnx 1.3.1
    writes DRANet's adaptive pooling at a dynamic size as an AveragePool with stride 0, without an error)."""
    try:
        return ort.InferenceSession(onnx_file, session_options(ort), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types differ between its versions
        raise UserError(f"onnxruntime {ort.__version__} cannot load the model paddle2onnx {version} made: "
                        f"{_runtime_reason(e)}; nothing was written") from e


def _runtime_reason(error):
    reason = " ".join(str(error).split())
    if "AveragePool" in reason or "Adaptive" in reason:
        reason += " (adaptive pooling at a dynamic size: export at a fixed input size, danet-export --input_size H W)"
    return reason


def second_shape(shape, resize=True):
    """Another batch and (with ``resize``) odd height and width: the ONNX file must not have kept the first
    check's sizes."""
    batch, channels, height, width = shape
    if not resize:
        return batch + 1, channels, height, width
    return batch + 1, channels, max(16, height * 3 // 4 + 1), max(16, width * 3 // 4 + 1)


def _convert(model, work, input_shape, opset, version):
    """``paddle.jit.save`` into ``work``, then paddle2onnx in a child process; returns the ONNX file."""
    import paddle

    prefix = os.path.join(work, "model")
    spec = [paddle.static.InputSpec(list(input_shape), "float32", name="image")]  # (it turns None into -1 in place)
    paddle.jit.save(model, prefix, input_spec=spec)
    program = next(prefix + ext for ext in (".json", ".pdmodel") if os.path.exists(prefix + ext))
    out = prefix + ".onnx"
    env = dict(os.environ, POLYGRAPHY_AUTOINSTALL_DEPS="0")  # never let the converter install packages
    try:
        done = subprocess.run([sys.executable, "-c", _CONVERT, program, prefix + ".pdiparams", str(opset), out],
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT, env=env)
    except subprocess.TimeoutExpired as e:
        raise UserError(f"paddle2onnx {version} did not finish in {CONVERT_TIMEOUT} s: nothing was written") from e
    if done.returncode != 0 or not os.path.exists(out) or os.path.getsize(out) == 0:
        raise UserError(f"paddle2onnx {version} could not convert the model at opset {opset}: "
                        f"{_converter_reason(done.stdout + done.stderr, done.returncode)}; nothing was written")
    return out


def _converter_reason(output, returncode):
    """The converter's own error line (the one naming an operator first), else the last line it printed, else
    how the child ended."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "[ERROR]" in line or "Error:" in line or "Failed" in line]
    errors = [line for line in errors if "[OP:" in line] or errors
    if errors:
        reason = re.sub(r"\[ERROR\] ?\[Paddle2ONNX\] ?|\[Paddle2ONNX\] ?\[ERROR\] ?", "", errors[0]).strip()
        if "Adaptive only support static input shape" in reason:
            reason += " (export at a fixed input size: danet-export --input_size H W)"
        return reason
    if returncode < 0:
        return f"the converter was killed by signal {-returncode}"
    return lines[-1] if lines else f"exit status {returncode}"


def compare_logits(model, session, shape, path, tolerance=ONNX_TOLERANCE):
    """Run ``session`` and ``model`` on one random image of ``shape``; raise a UserError unless they agree."""
    import paddle

    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image)).numpy()
    try:
        got = session.run(None, {session.get_inputs()[0].name: image})[0]
    except Exception as e:  # e.g. a shape the converted graph cannot take
        raise UserError(f"onnxruntime cannot run the ONNX model on a {'x'.join(map(str, shape))} input: "
                        f"{_runtime_reason(e)}; nothing was written to {path}") from e
    name = "x".join(map(str, shape))
    if got.shape != expected.shape:
        raise UserError(f"the ONNX model returns shape {list(got.shape)} for a {name} input, the model "
                        f"{list(expected.shape)}: nothing was written to {path}")
    result = agreement(expected, got, tolerance)
    result["shape"] = list(shape)
    if result["relative"] > tolerance or result["argmax_mismatch"]:
        raise UserError(f"onnxruntime's logits for a {name} input differ from the model's by {result['relative']:.3g}"
                        f" of the largest (allowed {tolerance:g}) and give another class at "
                        f"{result['argmax_mismatch']} clear pixel(s): nothing was written to {path}")
    return result


def agreement(expected, got, tolerance):
    """How far logits ``got`` are from ``expected`` [N, C, H, W]: the largest difference, absolute and relative
    to the largest logit, pixels whose argmax differs though the expected top two classes are further apart than
    twice the allowed difference (``argmax_mismatch``), and those within that margin (``near_ties``)."""
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max())
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tolerance * scale
    other = expected.argmax(1) != got.argmax(1)
    return dict(max_diff=diff, relative=diff / scale, argmax_mismatch=int((other & clear).sum()),
                near_ties=int((~clear).sum()))
