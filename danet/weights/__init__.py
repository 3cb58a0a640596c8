"""Reading model weights from either checkpoint format, and loading them without silent gaps.

Dygraph checkpoints key tensors by structured name (``backbone.layer4.2.conv2.0.weight``);
Executor checkpoints by program variable name (``conv2d_52.w_0``) with a ``names.json`` sidecar
mapping structured -> program names, written when the Program was built.
"""
import json
import logging
import os

import numpy as np

from danet import checkpoint
from danet.errors import UserError

log = logging.getLogger(__name__)
NAMES_FILE = "names.json"


def read_weights(path):
    """Structured-name weights from any checkpoint ``path`` (see :func:`checkpoint.resolve`).

    Returns ``(weights, info)``: ``{structured name: ndarray}`` and a dict with 'format'
    ('dygraph' or 'executor'), 'path' and, when known, 'config' (the model settings) and 'state'.
    """
    kind, where = checkpoint.resolve(path)
    state = checkpoint.read_state(where) if kind == "dir" and os.path.exists(os.path.join(where, "state.json")) else {}
    params_file = os.path.join(where, "model.pdparams") if kind == "dir" else where
    raw = {k: v for k, v in checkpoint.safe_load(params_file).items() if isinstance(v, np.ndarray)}
    names_file = os.path.join(os.path.dirname(params_file), NAMES_FILE)
    info = {"path": params_file, "config": state.get("config"), "state": state}
    if os.path.exists(names_file) and (state.get("format") == "executor" or not state):
        with open(names_file) as f:
            names = json.load(f)
        missing = sorted(k for k, prog in names.items() if prog not in raw)
        if missing:
            raise UserError(f"{params_file} lacks {len(missing)} tensors named in {names_file}, e.g. "
                            f"{names[missing[0]]} ({missing[0]}): the checkpoint is incomplete")
        info["format"] = "executor"
        return {k: raw[prog] for k, prog in names.items()}, info
    if _is_vision_resnet(raw):
        info["format"] = "paddle.vision ResNet (ImageNet backbone)"
        return vision_resnet_to_backbone(raw), info
    info["format"] = "dygraph"
    return raw, info


def _is_vision_resnet(raw):
    return "conv1.weight" in raw and "bn1.weight" in raw and "layer1.0.conv1.weight" in raw


def vision_resnet_to_backbone(raw):
    """Rename ``paddle.vision.models.resnet*`` weights (ImageNet) to this backbone's names.

    Both are ResNet v1.5 with a 7x7 stem; here each conv and its BatchNorm form one ``conv_bn``
    Sequential: ``layer1.0.conv2.weight`` -> ``backbone.layer1.0.conv2.0.weight`` and
    ``layer1.0.bn2.weight`` -> ``backbone.layer1.0.conv2.1.weight``. The classifier ``fc`` is dropped.
    """
    out = {}
    for key, value in raw.items():
        if key.startswith("fc."):
            continue
        parts = key.split(".")
        name = parts[-2]
        if name.startswith("conv") and name[4:].isdigit():
            parts[-2:-1] = [name, "0"]
        elif name.startswith("bn") and name[2:].isdigit():
            parts[-2:-1] = [f"conv{name[2:]}", "1"]
        out["backbone." + ".".join(parts)] = value
    return out


def match(model_state, weights, source):
    """Check ``weights`` against a model's ``state_dict``; a clear error for any gap or shape clash."""
    missing = [k for k in model_state if k not in weights]
    unexpected = [k for k in weights if k not in model_state]
    clashes = [(k, list(weights[k].shape), list(model_state[k].shape)) for k in model_state
               if k in weights and list(weights[k].shape) != list(model_state[k].shape)]
    if clashes:
        k, got, want = clashes[0]
        raise UserError(f"{source}: {len(clashes)} tensors have other shapes, e.g. {k} is {got} in the file but {want} "
                        "in the model: check --backbone, --num_classes and --multi_grid against the checkpoint")
    if missing or unexpected:
        raise UserError(f"{source}: {len(missing)} model tensors missing from the file (e.g. {missing[:3]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}): it is not a checkpoint of this model")


def load_into(model, path, strict=True):
    """Load ``path`` into a dygraph ``model``; ``strict=False`` (initial weights) may skip missing tensors
    but says how many and which; unexpected names or shape clashes are always errors."""
    weights, info = read_weights(path)
    state = model.state_dict()
    if strict:
        match(state, weights, info["path"])
    else:
        match({k: v for k, v in state.items() if k in weights}, weights, info["path"])
        missing = [k for k in state if k not in weights]
        if missing:
            log.warning("%s has %d of %d model tensors; %d keep their initial values (e.g. %s)",
                        info["path"], len(state) - len(missing), len(state), len(missing), missing[:3])
    model.set_state_dict({k: weights[k] for k in state if k in weights})
    log.info("loaded %d of %d tensors from %s (%s format)", sum(k in weights for k in state), len(state),
             info["path"], info["format"])
    return info
