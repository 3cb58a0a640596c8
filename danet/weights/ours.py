"""This project's two checkpoint formats, read into structured names.

- dygraph: ``model.pdparams`` keyed by structured name (``backbone.layer4.2.conv2.0.weight``);
- executor: ``model.pdparams`` keyed by program variable name (``conv2d_52.w_0``) with ``names.json``
  (structured -> program name) beside it, written when the Program was built. A bare Executor file
  without it (the seed's converted files) is mapped through the Program traced from the model config.

Both may sit in a checkpoint directory with ``state.json`` (config, epoch, scheduler) and ``model.pdopt``
(Momentum's velocities). The optimizer state is read into structured names too
(``<structured name>_velocity_0``), whichever format wrote it, so it survives a conversion either way.
"""
import json
import logging
import os
import re
from dataclasses import dataclass, field

import numpy as np

from danet import checkpoint
from danet.errors import UserError
from danet.weights.pdparams import safe_load

log = logging.getLogger(__name__)
NAMES_FILE = "names.json"
OPTIMIZER_FILE = "model.pdopt"
PROGRAM_NAME = re.compile(r"^\w+_\d+\.[wb]_\d+$")  # conv2d_0.w_0, batch_norm2d_3.w_2
VELOCITY = "_velocity_0"  # Momentum's accumulator suffix, the same in both graph modes


@dataclass
class Weights:
    """Tensors by structured name, and where they came from.

    ``format``: 'dygraph', 'executor' or a foreign source's name; ``path``: the weight file;
    ``config``: the model settings when the checkpoint has them; ``state``: its state.json;
    ``program_names``: {structured name: program name} of an Executor checkpoint; ``imported``: the
    import report of a foreign file.
    """

    tensors: dict
    format: str
    path: str
    config: dict = None
    state: dict = field(default_factory=dict)
    program_names: dict = None
    imported: object = None  # a foreign file's danet.weights.sources.common.Imported (what was dropped, provenance)

    @property
    def folder(self):
        return os.path.dirname(self.path)

    def optimizer_state(self):
        """The checkpoint's optimizer state keyed by structured names, or None when it has none.

        Velocities come back as ``<structured name>_velocity_0``; other entries (the LR) as they are.
        """
        path = os.path.join(self.folder, OPTIMIZER_FILE)
        if not self.state or not os.path.exists(path):
            return None
        state = safe_load(path)
        if self.program_names:
            return rename_state(state, {p: k for k, p in self.program_names.items()})
        return state


def rename_state(state, names):
    """Re-key parameters and their optimizer state (``<param>_velocity_0``) by ``names`` {old name: new}.

    Other keys (the LR, a scheduler's state) are kept as they are.
    """
    out = {}
    for key, value in state.items():
        owner = max((n for n in names if key == n or key.startswith(n + "_")), key=len, default=None)
        out[names[owner] + key[len(owner):] if owner else key] = value
    return out


def read(path, config=None):
    """:class:`Weights` of any checkpoint of this project at ``path`` (see :func:`checkpoint.resolve`).

    ``config`` (model settings) is needed only for a bare Executor file without ``names.json``.
    """
    kind, where = checkpoint.resolve(path)
    has_state = kind == "dir" and os.path.exists(os.path.join(where, checkpoint.STATE_FILE))
    state = checkpoint.read_state(where) if has_state else {}
    params_file = os.path.join(where, "model.pdparams") if kind == "dir" else where
    raw = {k: v for k, v in safe_load(params_file).items() if isinstance(v, np.ndarray)}
    weights = Weights(raw, "dygraph", params_file, state.get("config"), state)
    names_file = os.path.join(os.path.dirname(params_file), NAMES_FILE)
    if os.path.exists(names_file) and (state.get("format") == "executor" or not state):
        with open(names_file) as f:
            return _executor(weights, json.load(f), names_file)
    keys = [k for k in raw if k != "learning_rate_0"]
    if keys and all(PROGRAM_NAME.match(k) for k in keys):
        cfg = weights.config or config
        if cfg is None:
            raise UserError(f"{params_file} is keyed by program variable names and has no {NAMES_FILE}: give the "
                            "model flags (--backbone, --num_classes, ...) so the names can be traced")
        from danet.engine.static import StaticEval

        return _executor(weights, StaticEval(cfg).names, "the Program traced from the model flags", partial=True)
    return weights


def _executor(weights, names, source, partial=False):
    """Re-key an Executor checkpoint's tensors by structured name through ``names`` {structured: program}.

    Program names the map does not know are kept as they are (``partial``), so the matcher reports them.
    """
    raw = weights.tensors
    missing = sorted(k for k, prog in names.items() if prog not in raw)
    if missing and not partial:
        raise UserError(f"{weights.path} lacks {len(missing)} tensors named in {source}, e.g. "
                        f"{names[missing[0]]} ({missing[0]}): the checkpoint is incomplete")
    known = set(names.values())
    tensors = {k: raw[p] for k, p in names.items() if p in raw}
    tensors.update({p: v for p, v in raw.items() if p not in known and p != "learning_rate_0"})
    weights.tensors, weights.format, weights.program_names = tensors, "executor", names
    return weights


def infer_config(tensors):
    """The model settings that structured-name ``tensors`` of this project's DANet reveal.

    Depth and block kind from the backbone's blocks, classes from the fused classifier. What the
    shapes cannot show (dilations, multi-grid) is left out: the caller's defaults hold.
    """
    from danet.models.resnet import DEPTHS

    if "head.cls_fused.weight" not in tensors:
        return {}
    blocks = [len({k.split(".")[2] for k in tensors if k.startswith(f"backbone.layer{i}.")}) for i in range(1, 5)]
    kind = "bottleneck" if any(".conv3." in k for k in tensors if k.startswith("backbone.layer1.")) else "basic"
    depth = next((name for name, (k, b) in DEPTHS.items() if k == kind and b == blocks), None)
    config = {"num_classes": int(tensors["head.cls_fused.weight"].shape[0])}
    if depth:
        config["backbone"] = depth
    return config
