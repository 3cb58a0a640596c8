"""Checkpoint conversion between the two graph modes (Executor <-> dygraph), proved on a random input.

An Executor checkpoint keys tensors by program variable name (``conv2d_52.w_0``), a dygraph one by
structured name (``backbone.layer4.1.conv2.0.weight``). The map between them comes from the model
itself: tracing it into a static Program under a fresh ``unique_name.guard()`` names every variable
exactly as danet.train_executor's Programs do. A conversion

1. reads the source as ``{structured name: array}`` (through its ``names.json``, else the traced names);
2. checks that every tensor of the model is there with the model's shape and nothing else is, and
   refuses naming every missing, unexpected or mismatched tensor;
3. writes the target into a temporary directory, reads it back with the normal reader, checks the
   arrays are bit-identical to the source's, and runs the source and the target on one fixed random
   image, each in its own graph mode (static eval Program or dygraph model); the logits must agree
   to ``TOLERANCE``;
4. only then renames the result into place, so a failure leaves nothing behind.
"""
import contextlib
import json
import logging
import os
import pickle
import re
import shutil

import numpy as np

from danet import build_model, checkpoint, weights
from danet.errors import UserError

log = logging.getLogger(__name__)

ARCH_KEYS = ("backbone", "num_classes", "dilated", "multi_grid", "multi_dilation")
TOLERANCE = 1e-5
PROOF_SHAPE = (1, 3, 48, 80)  # not square: a transposed feature map would show
FORMATS = ("dygraph", "executor")
_PROGRAM_NAME = re.compile(r"^\w+_\d+\.[wb]_\d+$")  # conv2d_0.w_0, batch_norm2d_3.w_2
_VELOCITY = "_velocity_0"  # Momentum's accumulator suffix, the same in both graph modes


def arch(config):
    """The keys of a model config that decide the architecture (``recompute`` etc. do not)."""
    return {k: config[k] for k in ARCH_KEYS}


@contextlib.contextmanager
def static_mode():
    """Static graph inside the block; dygraph restored after it if it was on (enable_static is process-global)."""
    import paddle

    dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        yield
    finally:
        if dynamic:
            paddle.disable_static()


class StaticEval:
    """The eval Program of danet.train_executor, traced from a fresh model of ``config``.

    ``names`` {structured name: program variable name} and ``shapes`` {structured name: dims}, in
    model order. :meth:`run` executes it in a private scope, so a training process's scope is untouched.
    """

    def __init__(self, config):
        import paddle

        with static_mode():
            self.program, self.startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(self.program, self.startup), paddle.utils.unique_name.guard():
                image = paddle.static.data("image", [None, 3, None, None], "float32")
                model = build_model(**arch(config))
                model.eval()
                self.output = model(image)
                state = model.state_dict()
            self.names = {k: v.name for k, v in state.items()}
            self.shapes = {k: [int(d) for d in v.shape] for k, v in state.items()}

    def run(self, arrays, image):
        """Logits float32 [B, C, H, W] of ``image`` [B, 3, H, W] with ``arrays`` keyed by program name."""
        import paddle

        with static_mode():
            exe = paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(paddle.static.Scope()):
                exe.run(self.startup)
                paddle.static.set_program_state(self.program, {p: arrays[p] for p in self.names.values()})
                return np.asarray(exe.run(self.program, feed={"image": image}, fetch_list=[self.output])[0])


def dygraph_logits(config, found, image):
    """Logits of ``image`` from a dygraph model of ``config`` holding the structured weights ``found``, on the CPU."""
    import paddle

    device = paddle.get_device()
    paddle.set_device("cpu")  # the static side runs on the CPU too: compare like with like
    try:
        model = build_model(**arch(config))
        model.eval()
        model.set_state_dict({k: found[k] for k in model.state_dict()})
        with paddle.no_grad():
            return model(paddle.to_tensor(image)).numpy()
    finally:
        paddle.set_device(device)


def read_checkpoint(path, config=None):
    """``({structured name: array}, info)`` of any checkpoint, as :func:`weights.read_weights`.

    A bare Executor file without ``names.json`` (keys like ``conv2d_0.w_0``) is mapped through the
    Program traced from the checkpoint's config, else ``config``; its info['format'] is 'executor'.
    Keys that the trace does not name are kept as they are, so :func:`check_tensors` reports them.
    """
    found, info = weights.read_weights(path)
    keys = [k for k in found if k != "learning_rate_0"]
    if info["format"] == "dygraph" and keys and all(_PROGRAM_NAME.match(k) for k in keys):
        cfg = info.get("config") or config
        if cfg is None:
            raise UserError(f"{info['path']} is keyed by program variable names and has no names.json: give the "
                            "model flags (--backbone, --num_classes, ...) so the names can be traced")
        names = StaticEval(cfg).names
        program_names = set(names.values())
        mapped = {k: found[p] for k, p in names.items() if p in found}
        mapped.update({p: v for p, v in found.items() if p not in program_names and p != "learning_rate_0"})
        found = mapped
        info["format"] = "executor"
    return found, info


def check_tensors(shapes, found, source):
    """Raise UserError unless ``found`` has exactly the tensors of ``shapes`` with those shapes.

    Every culprit is logged; the one-line message gives the counts and the first few names.
    """
    missing = [k for k in shapes if k not in found]
    unexpected = [k for k in found if k not in shapes]
    clashes = [f"{k} {list(np.shape(found[k]))} (model {list(shapes[k])})" for k in shapes
               if k in found and list(np.shape(found[k])) != list(shapes[k])]
    problems = [(title, names) for title, names in (("missing", missing), ("unexpected", unexpected),
                                                    ("with another shape", clashes)) if names]
    if not problems:
        return
    for title, names in problems:
        log.error("%s: %d tensors %s: %s", source, len(names), title, ", ".join(names))
    summary = "; ".join(f"{len(names)} {title} (e.g. {', '.join(names[:3])})" for title, names in problems)
    raise UserError(f"{source} does not fit the model ({summary}; all listed in the log): check --backbone, "
                    "--num_classes, --dilated and --multi_grid against the checkpoint")


def convert(src, dst, to=None, config=None, replace=False, source=None):
    """Convert checkpoint ``src`` to format ``to`` (default: the other one) at ``dst``; returns a report dict.

    ``dst``: a directory (a checkpoint with ``state.json``; 'executor' needs one) or, for 'dygraph',
    a ``.pdparams`` file. ``config`` is the model config used when ``src`` has no ``state.json``.
    ``source`` is ``read_checkpoint(src)`` if already read. ``replace`` allows overwriting ``dst``.
    """
    found, info = source or read_checkpoint(src, config)
    from_format = info["format"]
    to = to or ("dygraph" if from_format == "executor" else "executor")
    if to not in FORMATS:
        raise UserError(f"unknown target format {to!r}: choose dygraph or executor")
    full_config = dict(info.get("config") or config or {})
    if not all(k in full_config for k in ARCH_KEYS):
        raise UserError(f"{info['path']} has no state.json with the model config: give the model flags "
                        "(--backbone, --num_classes, --dilated, --multi_grid) it was trained with")
    dst = os.path.normpath(dst)
    if os.path.abspath(dst) in (os.path.abspath(info["path"]), os.path.abspath(os.path.dirname(info["path"]))):
        raise UserError(f"{dst} is the source itself: write the conversion somewhere else")
    if os.path.exists(dst) and not replace:
        raise UserError(f"{dst} already exists: choose another destination or delete it")
    if to == "executor" and dst.endswith(".pdparams"):
        raise UserError(f"an Executor checkpoint is a directory (model.pdparams + names.json + state.json), "
                        f"not the file {dst}: give a directory path")
    traced = StaticEval(full_config)
    check_tensors(traced.shapes, found, info["path"])
    found = {k: found[k] for k in traced.names}
    image = np.random.default_rng(0).standard_normal(PROOF_SHAPE).astype(np.float32)
    if from_format == "executor":
        src_logits = traced.run({traced.names[k]: v for k, v in found.items()}, image)
    else:
        src_logits = dygraph_logits(full_config, found, image)
    job = _Job(info, found, traced, to, full_config, image, src_logits)
    if dst.endswith(".pdparams"):
        _write_file(dst, job)
    else:
        _write_dir(dst, job)
    log.info("converted %s (%s, %d tensors) to %s (%s): logits on a random %s image differ by at most %.3g",
             info["path"], from_format, len(found), dst, to, "x".join(map(str, PROOF_SHAPE[2:])), job.max_diff)
    return dict(source=info["path"], source_format=from_format, destination=dst, format=to, tensors=len(found),
                max_abs_diff=job.max_diff)


class _Job:
    """What the writers need: the checked source weights, the traced names, and the source logits to match."""

    def __init__(self, info, found, traced, to, config, image, src_logits):
        self.info, self.found, self.traced, self.to = info, found, traced, to
        self.config, self.image, self.src_logits = config, image, src_logits
        self.max_diff = None

    def write(self, folder, params_name="model.pdparams"):
        """Write the target's files into ``folder``; returns the weight file's path."""
        params = os.path.join(folder, params_name)
        if self.to == "dygraph":
            checkpoint.save_arrays(params, self.found)
        else:
            checkpoint.save_arrays(params, {self.traced.names[k]: v for k, v in self.found.items()})
            with open(os.path.join(folder, weights.NAMES_FILE), "w") as f:
                json.dump(self.traced.names, f, indent=0)
        optimizer = self._optimizer()
        if optimizer is not None and params_name == "model.pdparams":
            with open(os.path.join(folder, "model.pdopt"), "wb") as f:
                pickle.dump(optimizer, f, protocol=4)
        return params

    def _optimizer(self):
        """Momentum velocities keyed for the target, or None when the source has no optimizer state.

        Both modes key them ``<parameter name>_velocity_0``; the dygraph trainer's parameter names are
        the traced ones when the model is the first one built in its process (as in danet.train_dygraph).
        """
        path = os.path.join(os.path.dirname(self.info["path"]), "model.pdopt")
        if not self.info.get("state") or not os.path.exists(path):
            return None
        state = checkpoint.safe_load(path)
        shapes = {p: self.traced.shapes[k] for k, p in self.traced.names.items()}
        velocities = {k: v for k, v in state.items() if k.endswith(_VELOCITY) and isinstance(v, np.ndarray)}
        if any(list(v.shape) != shapes.get(k[:-len(_VELOCITY)]) for k, v in velocities.items()):
            log.warning("%s: the optimizer state does not name this model's parameters; it is not converted, so "
                        "--resume from the result restarts momentum from zero", path)
            velocities = {}
        if self.to == "dygraph" and "scheduler" in self.info["state"]:
            velocities["LR_Scheduler"] = self.info["state"]["scheduler"]
        return velocities

    def prove(self, params_path):
        """Read the written weights back and check them against the source: bit-exact arrays, equal logits."""
        back, back_info = weights.read_weights(params_path)
        differ = [k for k in self.found if k not in back or back[k].dtype != self.found[k].dtype
                  or not np.array_equal(back[k], self.found[k])]
        if back_info["format"] != self.to or differ or len(back) != len(self.found):
            raise UserError(f"the written {self.to} checkpoint reads back differently ({back_info['format']}, "
                            f"{len(differ)} tensors differ, e.g. {differ[:3]}); nothing was written")
        if self.to == "executor":
            raw = checkpoint.safe_load(params_path)
            logits = self.traced.run(raw, self.image)
        else:
            logits = dygraph_logits(self.config, back, self.image)
        self.max_diff = float(np.abs(logits - self.src_logits).max())
        if not self.max_diff <= TOLERANCE:
            raise UserError(f"converted model's logits differ from the source's by {self.max_diff:.3g} "
                            f"(> {TOLERANCE}); nothing was written: report this with both Paddle versions")

    def state(self):
        state = {k: v for k, v in (self.info.get("state") or {}).items() if k not in ("files", "format")}
        state.update(format=self.to, config=self.config, converted_from=os.path.abspath(self.info["path"]),
                     source_format=self.info["format"])
        return state


def _write_dir(dst, job):
    parent, name = os.path.dirname(dst) or ".", os.path.basename(dst)
    os.makedirs(parent, exist_ok=True)
    state = job.state()

    def write_files(tmp):
        job.prove(job.write(tmp))
        state["conversion_max_abs_diff"] = job.max_diff  # save_checkpoint copies the state after this call

    try:
        checkpoint.save_checkpoint(parent, name, write_files, state, pointers=())
    except BaseException:
        shutil.rmtree(os.path.join(parent, f".tmp-{name}"), ignore_errors=True)
        raise


def _write_file(dst, job):
    """A lone dygraph ``.pdparams`` (the seed's converted format): written in a temp folder, proved, renamed."""
    parent = os.path.dirname(dst) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{os.path.basename(dst)}.d")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        path = job.write(tmp, params_name=os.path.basename(dst))
        job.prove(path)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_beside(path, config, source=None):
    """Convert the Executor checkpoint at ``path`` to dygraph next to it (eval's ``--change_executor_to_dygraph``).

    A checkpoint directory D (with state.json) becomes ``D-dygraph/``; a bare directory D (the seed's
    layout) becomes ``D.pdparams``; a file F.pdparams becomes ``F-dygraph.pdparams``. An earlier
    conversion there is replaced. Returns the destination.
    """
    kind, where = checkpoint.resolve(path)
    if kind == "file" and os.path.exists(os.path.join(os.path.dirname(where), weights.NAMES_FILE)):
        kind, where = "dir", os.path.dirname(where)  # model.pdparams inside a checkpoint: convert the checkpoint
        source = None  # read again as a directory, with its state and optimizer
    where = os.path.normpath(where)
    if kind == "dir" and os.path.exists(os.path.join(where, checkpoint.STATE_FILE)):
        dst = where + "-dygraph"
    elif kind == "dir":
        dst = where + ".pdparams"
    else:
        dst = os.path.splitext(where)[0] + "-dygraph.pdparams"
    convert(where, dst, to="dygraph", config=config, replace=True, source=source)
    return dst
