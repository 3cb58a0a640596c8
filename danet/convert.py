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

The optimizer state (Momentum's velocities) goes along both ways, keyed as the target format keys
it, so training resumes in the other graph mode on the same loss curve.
"""
import json
import logging
import os
import pickle
import shutil

import numpy as np

from danet import build_model, checkpoint, weights
from danet.engine.common import arch
from danet.errors import UserError

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
PROOF_SHAPE = (1, 3, 48, 80)  # not square: a transposed feature map would show
FORMATS = ("dygraph", "executor")


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


def convert(src, dst, to=None, config=None, replace=False, source=None):
    """Convert checkpoint ``src`` to format ``to`` (default: the other one) at ``dst``; returns a report dict.

    ``dst``: a directory (a checkpoint with ``state.json``; 'executor' needs one) or, for 'dygraph',
    a ``.pdparams`` file. ``config`` is the model config used when ``src`` has no ``state.json``.
    ``source`` is ``weights.read_weights(src)`` if already read. ``replace`` allows overwriting ``dst``.
    """
    from danet.engine.static import StaticEval

    source = source or weights.read_weights(src, config)
    from_format = source.format
    to = to or ("dygraph" if from_format == "executor" else "executor")
    if to not in FORMATS:
        raise UserError(f"unknown target format {to!r}: choose dygraph or executor")
    if not (source.config or config):
        raise UserError(f"{source.path} has no state.json with the model config: give the model flags "
                        "(--backbone, --num_classes, --dilated, --multi_grid) it was trained with")
    full_config = dict(source.config or config)
    full_config.update(arch(full_config))  # settings added since the checkpoint was written take their defaults
    dst = os.path.normpath(dst)
    if os.path.abspath(dst) in (os.path.abspath(source.path), os.path.abspath(source.folder)):
        raise UserError(f"{dst} is the source itself: write the conversion somewhere else")
    if os.path.exists(dst) and not replace:
        raise UserError(f"{dst} already exists: choose another destination or delete it")
    if to == "executor" and dst.endswith(".pdparams"):
        raise UserError(f"an Executor checkpoint is a directory (model.pdparams + names.json + state.json), "
                        f"not the file {dst}: give a directory path")
    traced = StaticEval(full_config)
    weights.fit(traced.shapes, source.tensors, source.path)
    found = {k: source.tensors[k] for k in traced.names}
    image = np.random.default_rng(0).standard_normal(PROOF_SHAPE).astype(np.float32)
    if from_format == "executor":
        src_logits = traced.run({traced.names[k]: v for k, v in found.items()}, image)
    else:
        src_logits = dygraph_logits(full_config, found, image)
    job = _Job(source, found, traced, to, full_config, image, src_logits)
    if dst.endswith(".pdparams"):
        _write_file(dst, job)
    else:
        _write_dir(dst, job)
    log.info("converted %s (%s, %d tensors%s) to %s (%s): logits on a random %s image differ by at most %.3g",
             source.path, from_format, len(found), f", {job.optimizer_tensors} optimizer tensors" if
             job.optimizer_tensors else "", dst, to, "x".join(map(str, PROOF_SHAPE[2:])), job.max_diff)
    return dict(source=source.path, source_format=from_format, destination=dst, format=to, tensors=len(found),
                optimizer_tensors=job.optimizer_tensors, max_abs_diff=job.max_diff)


class _Job:
    """What the writers need: the checked source weights, the traced names, and the source logits to match."""

    def __init__(self, source, found, traced, to, config, image, src_logits):
        self.source, self.found, self.traced, self.to = source, found, traced, to
        self.config, self.image, self.src_logits = config, image, src_logits
        self.max_diff, self.optimizer_tensors = None, 0

    def write(self, folder, params_name="model.pdparams"):
        """Write the target's files into ``folder``; returns the weight file's path."""
        params = os.path.join(folder, params_name)
        if self.to == "dygraph":
            checkpoint.save_arrays(params, self.found)
        else:
            checkpoint.save_arrays(params, {self.traced.names[k]: v for k, v in self.found.items()})
            with open(os.path.join(folder, weights.NAMES_FILE), "w") as f:
                json.dump(self.traced.names, f, indent=0)
        optimizer = self._optimizer() if params_name == "model.pdparams" else None
        if optimizer is not None:
            with open(os.path.join(folder, weights.OPTIMIZER_FILE), "wb") as f:
                pickle.dump(optimizer, f, protocol=4)
        return params

    def _optimizer(self):
        """The source's optimizer state keyed as the target keys it, or None when the source has none.

        Every velocity must belong to a parameter of the model with its shape: a conversion never drops
        part of the optimizer state (a resumed run would restart that momentum from zero).
        """
        state = self.source.optimizer_state()
        if state is None:
            return None
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        velocities = {k: v for k, v in arrays.items() if k.endswith(weights.VELOCITY)}
        owners = {k: k[:-len(weights.VELOCITY)] for k in velocities}
        strays = [k for k, owner in owners.items()
                  if owner not in self.traced.shapes or list(velocities[k].shape) != self.traced.shapes[owner]]
        if strays or not velocities:
            raise UserError(f"{self.source.folder}/{weights.OPTIMIZER_FILE}: {len(strays)} momentum tensors do not "
                            f"belong to this model's parameters (e.g. {', '.join(strays[:3]) or 'none found'}); "
                            "nothing was written: convert the model only with a .pdparams destination")
        self.optimizer_tensors = len(velocities)
        if self.to == "executor":  # program names; the LR comes from state.json's scheduler state on resume
            return weights.rename_state(velocities, self.traced.names)
        if "scheduler" in self.source.state:
            velocities["LR_Scheduler"] = self.source.state["scheduler"]
        return velocities

    def prove(self, params_path):
        """Read the written weights back and check them against the source: bit-exact arrays, equal logits."""
        back = weights.read_weights(params_path)
        differ = [k for k in self.found if k not in back.tensors or back.tensors[k].dtype != self.found[k].dtype
                  or not np.array_equal(back.tensors[k], self.found[k])]
        if back.format != self.to or differ or len(back.tensors) != len(self.found):
            raise UserError(f"the written {self.to} checkpoint reads back differently ({back.format}, "
                            f"{len(differ)} tensors differ, e.g. {differ[:3]}); nothing was written")
        if self.to == "executor":
            logits = self.traced.run(weights.safe_load(params_path), self.image)
        else:
            logits = dygraph_logits(self.config, back.tensors, self.image)
        self.max_diff = float(np.abs(logits - self.src_logits).max())
        if not self.max_diff <= TOLERANCE:
            raise UserError(f"converted model's logits differ from the source's by {self.max_diff:.3g} "
                            f"(> {TOLERANCE}); nothing was written: report this with both Paddle versions")

    def state(self):
        state = {k: v for k, v in self.source.state.items() if k not in ("files", "format")}
        state.update(format=self.to, config=self.config, converted_from=os.path.abspath(self.source.path),
                     source_format=self.source.format)
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
