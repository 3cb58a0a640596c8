"""The deploy description: everything an exported model needs besides its program and weights.

``danet-export`` writes ``<prefix>_deploy.json`` beside ``<prefix>.json`` (Paddle 3.x) or ``<prefix>.pdmodel``
(Paddle 2.6) and ``<prefix>.pdiparams``: the input normalisation (mean and std on 0..255, RGB, NCHW float32),
the classes and their colours, the model config, how to predict (window size, stride rate, scales, flip) and
the Paddle version that wrote it. ``danet-predict --inference_model`` and
:class:`danet.deploy.inference.InferenceModel` read it, so deploying needs no training flags.

Why ``<prefix>_deploy.json`` and not ``<prefix>.deploy.json``: ``paddle.jit.load(prefix)`` loads every
``<prefix>.<name>.json`` of the folder as the program of a method ``name`` (Paddle 3.x), and would fail on it.
One file per prefix (not a ``deploy.yaml`` per folder) lets one folder hold several exports.
"""
import json
import logging
import os

from danet.engine.loop import jsonable
from danet.errors import UserError

log = logging.getLogger(__name__)

SUFFIX = "_deploy.json"
LEGACY_SUFFIX = "_preprocess.json"  # what danet-export wrote before the description: normalisation only
FORMAT = "danet-deploy"
VERSION = 1
PROGRAM_SUFFIXES = (".json", ".pdmodel")  # Paddle 3.x (PIR), Paddle 2.6 (ProgramDesc)
PARAMS_SUFFIX = ".pdiparams"
# How to predict when neither the checkpoint nor the caller says: each image at its own size, the predict
# tool's window and stride, one scale, no flip.
DEFAULT_INFERENCE = dict(base_size=None, crop_size=768, stride_rate=2 / 3, scales=[1.0], flip=False, window_batch=2)


def build_description(model, source=None, **inference):
    """The description of ``model`` (a DANet ``paddle.nn.Layer``) loaded from ``source`` (a
    :class:`danet.weights.ours.Weights`, or None): a JSON-ready dict.

    ``inference`` overrides how to predict (keys of :data:`DEFAULT_INFERENCE`); the sliding window otherwise
    is the training crop the checkpoint was trained with, if it says.
    """
    import paddle

    from danet import __version__
    from danet.data.transforms import INPUT_NORMS

    config = model.config
    num_classes = int(config["num_classes"])
    norm = config.get("input_norm", "imagenet")
    mean, std = INPUT_NORMS[norm]
    classes, palette = classes_and_palette(source, num_classes)
    unknown = sorted(set(inference) - set(DEFAULT_INFERENCE))
    if unknown:
        raise TypeError(f"build_description: unknown inference settings {unknown}")
    return {
        "format": FORMAT, "version": VERSION,
        "written_by": {"paddle": paddle.__version__, "danet": __version__},
        "input": {"name": "image", "shape": [-1, 3, -1, -1], "layout": "NCHW", "color": "RGB", "dtype": "float32",
                  "input_norm": norm, "mean": [round(m * 255, 4) for m in mean],
                  "std": [round(s * 255, 4) for s in std], "formula": "(pixel - mean) / std, pixel in 0..255"},
        "output": "fused logits float32 [N, num_classes, H, W] at the input size; the class is the argmax over axis 1",
        "num_classes": num_classes, "classes": classes, "palette": palette,
        "model": jsonable(config),
        "inference": dict(_inference_defaults(source), **inference),
        "source": {"path": source.path, "format": source.format} if source is not None else None,
    }


def classes_and_palette(source, num_classes):
    """(class names, palette [[r, g, b]] * num_classes) of a checkpoint: its data set's (saved with it by the
    trainers, or by danet-import from a file that names them), else Cityscapes' (19 classes; its first colours
    for fewer), else numbers and fixed colours."""
    from danet.data.presets import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, palette_for

    saved = dict((getattr(source, "state", None) or {}).get("dataset") or {})
    imported = getattr(getattr(source, "imported", None), "meta", None) or {}
    names = _first_of_length(num_classes, saved.get("classes"), imported.get("classes"),
                             CITYSCAPES_CLASSES if num_classes == len(CITYSCAPES_CLASSES) else None)
    palette = _first_of_length(num_classes, saved.get("palette"), imported.get("palette"),
                               CITYSCAPES_PALETTE[:num_classes] if num_classes <= len(CITYSCAPES_PALETTE) else None)
    names = [str(n) for n in names] if names is not None else [str(i) for i in range(num_classes)]
    palette = palette if palette is not None else palette_for(num_classes)
    return names, [[int(c) for c in colour] for colour in palette]


def _first_of_length(length, *candidates):
    return next((c for c in candidates if c is not None and len(c) == length), None)


def _inference_defaults(source):
    """DEFAULT_INFERENCE with the sliding window of the run that trained ``source`` (its validation used it)."""
    settings = dict(DEFAULT_INFERENCE)
    crop = ((getattr(source, "state", None) or {}).get("args") or {}).get("crop_size")
    if isinstance(crop, int) and crop > 0:
        settings["crop_size"] = crop
    return settings


def write_description(description, prefix):
    """Write ``<prefix>_deploy.json`` (atomically: a reader never sees half a file); returns its path."""
    path = prefix + SUFFIX
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(description, f, indent=1)
    os.replace(tmp, path)
    return path


def read_description(prefix):
    """The description of the export at ``prefix`` (checked), or None when there is none.

    An export of an earlier version with only ``<prefix>_preprocess.json`` gives its normalisation and the
    defaults for the rest.
    """
    path = prefix + SUFFIX
    if not os.path.isfile(path):
        return _legacy(prefix)
    description = _load_json(path)
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise UserError(f"{path} is not a DANet deploy description (no \"format\": \"{FORMAT}\"): export again")
    if description.get("version", 0) > VERSION:
        raise UserError(f"{path} is of description version {description['version']}, this code reads up to "
                        f"{VERSION}: update danet-paddle")
    return _checked(description, path)


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}): export the model again") from e


def _legacy(prefix):
    path = prefix + LEGACY_SUFFIX
    if not os.path.isfile(path):
        return None
    old = _load_json(path)
    num_classes = int(old.get("num_classes", 0))
    classes, palette = classes_and_palette(None, num_classes)
    description = {"format": FORMAT, "version": 0, "written_by": {},
                   "input": {k: old.get(k) for k in ("input_norm", "mean", "std")},
                   "num_classes": num_classes, "classes": classes, "palette": palette, "model": {},
                   "inference": dict(DEFAULT_INFERENCE)}
    log.info("%s has no %s: using the normalisation of %s and default settings", prefix, SUFFIX, path)
    return _checked(description, path)


def _checked(description, path):
    """Refuse a description whose entries the inference code would trip on later, naming the entry."""
    try:
        num_classes = int(description["num_classes"])
        norm = description["input"]
        if len(norm["mean"]) != 3 or len(norm["std"]) != 3 or min(norm["std"]) <= 0 or num_classes < 1:
            raise ValueError("input mean/std need 3 values each (std > 0), num_classes at least 1")
        if len(description.get("palette") or []) not in (0, num_classes):
            raise ValueError(f"{len(description['palette'])} palette colours for {num_classes} classes")
        settings = dict(DEFAULT_INFERENCE, **(description.get("inference") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is incomplete or damaged ({type(e).__name__}: {e}): export the model again") from e
    description["inference"] = settings
    return description


# ----------------------------------------------------------------------------------------------- finding exports


def find_export(path):
    """(prefix, program file, params file) of the export at ``path``: a prefix as given to danet-export, one of
    its files, or the folder holding it. Paddle 3.x reads either program format, Paddle 2.6 only ``.pdmodel``."""
    path = os.path.normpath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        prefix = _the_one_in(path)
    else:
        prefix = path
        for suffix in (SUFFIX, LEGACY_SUFFIX, PARAMS_SUFFIX) + PROGRAM_SUFFIXES:
            if path.endswith(suffix) and os.path.isfile(path):
                prefix = path[: -len(suffix)]
                break
    programs = [prefix + s for s in _readable_suffixes() if os.path.isfile(prefix + s)]
    if not programs:
        other = [prefix + s for s in PROGRAM_SUFFIXES if os.path.isfile(prefix + s)]
        if other:
            raise UserError(f"{other[0]} is a Paddle 3.x (PIR) program, which Paddle {_paddle_version()} cannot "
                            "read: run it with Paddle 3.x, or export again with this Paddle")
        raise UserError(f"no exported model at {path}: give the prefix danet-export wrote (PREFIX.json or "
                        f"PREFIX.pdmodel, with PREFIX.pdiparams) or its folder")
    if not os.path.isfile(prefix + PARAMS_SUFFIX):
        raise UserError(f"{programs[0]} has no weights beside it ({os.path.basename(prefix)}{PARAMS_SUFFIX} is "
                        "missing): copy the whole export")
    return prefix, programs[0], prefix + PARAMS_SUFFIX


def _the_one_in(folder):
    """The prefix of the one export in ``folder`` (preferring those with a description)."""
    names = sorted(os.listdir(folder))
    prefixes = [os.path.join(folder, n[: -len(PARAMS_SUFFIX)]) for n in names if n.endswith(PARAMS_SUFFIX)]
    prefixes = [p for p in prefixes if any(os.path.isfile(p + s) for s in PROGRAM_SUFFIXES)]
    described = [p for p in prefixes if os.path.isfile(p + SUFFIX)]
    found = described if len(described) == 1 else prefixes
    if not found:
        raise UserError(f"no exported model in {folder}: danet-export writes PREFIX.json (Paddle 3.x) or "
                        "PREFIX.pdmodel (2.6), PREFIX.pdiparams and PREFIX_deploy.json")
    if len(found) > 1:
        raise UserError(f"{folder} holds {len(found)} exported models ({', '.join(map(os.path.basename, found))}): "
                        "give the prefix of one")
    return found[0]


def _paddle_version():
    import paddle

    return paddle.__version__


def _readable_suffixes():
    """Program formats this Paddle reads, preferred first: 2.6 cannot read PIR ``.json`` programs."""
    major = int(_paddle_version().split(".")[0])
    return PROGRAM_SUFFIXES if major >= 3 or major == 0 else (".pdmodel",)  # 0: a develop build
