"""One home for reading weights: formats in, structured names out, one matcher, one report.

- :func:`read_weights` reads any file this project understands into :class:`Weights` keyed by
  structured names (``backbone.layer4.2.conv2.0.weight``): this project's dygraph and Executor
  checkpoints (:mod:`danet.weights.ours`), ``paddle.vision`` ImageNet ResNets
  (:mod:`danet.weights.imagenet`), and the released DANets of other implementations
  (:mod:`danet.weights.sources`: official, mmseg, sssegmentation, PaddleSeg, the seed's Paddle 1.x
  files). Nothing in a file runs code: pickles are read by restricted unpicklers.
- :func:`~danet.weights.match.fit` checks them against a model and reports what was loaded.
- :func:`load_into` fills a dygraph model; :func:`load_model` builds the model a checkpoint describes.

Nothing downstream knows which format the weights came from.
"""
import logging
import os

from danet import checkpoint
from danet.weights.imagenet import is_vision_resnet, vision_resnet_to_backbone
from danet.weights.match import LoadReport, fit
from danet.weights.ours import NAMES_FILE, OPTIMIZER_FILE, VELOCITY, Weights, infer_config, read, rename_state
from danet.weights.pdparams import safe_load

log = logging.getLogger(__name__)

__all__ = ["read_weights", "load_into", "load_model", "fit", "LoadReport", "Weights", "safe_load", "rename_state",
           "NAMES_FILE", "OPTIMIZER_FILE", "VELOCITY"]


def read_weights(path, config=None, source=None, **options):
    """:class:`Weights` (structured names) of the checkpoint or weight file at ``path``.

    ``config`` (model settings) is used only where the file cannot name its tensors itself (a bare
    Executor ``.pdparams`` without ``names.json``). A foreign file's source is detected from its keys
    (``source`` forces one); ``options`` go to that source (e.g. ``align_corners`` where the file does
    not say it). A foreign file's :class:`Weights` carry the model config it reveals and the import report.
    """
    from danet.weights import sources

    foreign = None if source else _foreign_container(path)
    if source or foreign:
        file = foreign or checkpoint.resolve(path)[1]
        return _imported(file, sources.read_foreign(file, source, **options))
    weights = read(path, config)
    if weights.format == "dygraph" and is_vision_resnet(weights.tensors):
        weights.tensors = vision_resnet_to_backbone(weights.tensors)
        weights.format = "paddle.vision ResNet (ImageNet backbone)"
    elif weights.format == "dygraph" and not weights.state:
        if sources.detect_source(weights.tensors):
            return _imported(weights.path, sources.read_foreign(weights.path, obj=weights.tensors, **options))
        if not any(k.startswith(("backbone.", "head.", "aux_head.")) for k in weights.tensors):
            sources.unknown_layout(weights.path, weights.tensors)
    return weights


def _foreign_container(path):
    """The file or folder at ``path`` when its container is no format of this project's own (a PyTorch file,
    a Paddle 1.x binary or per-variable folder), else None."""
    from danet.weights import paddle1

    if os.path.isdir(path):
        ours = any(os.path.exists(os.path.join(path, n)) for n in ("state.json", "model.pdparams", "best", "latest"))
        return path if not ours and paddle1.is_var_folder(path) else None
    file = path if os.path.isfile(path) else path + ".pdparams" if os.path.isfile(path + ".pdparams") else None
    if file is None:
        return None
    from danet.weights import sources

    return file if sources.container(file) in ("pth", "paddle1-tnum") else None


def _imported(path, imported):
    weights = Weights(imported.tensors, imported.meta.get("source", "foreign"), path, imported.config)
    weights.imported = imported
    return weights


def load_into(model, path, strict=True, weights=None, how=None):
    """Load ``path`` (or the already read ``weights``) into a dygraph ``model``; returns the :class:`LoadReport`.

    ``strict=False`` (initial weights) lets model tensors keep their initial values when the file lacks
    them, and says how many; a tensor the model does not have or a shape clash is always an error.
    """
    weights = weights or read_weights(path)
    state = model.state_dict()
    report = fit({k: v.shape for k, v in state.items()}, weights.tensors, weights.path, partial=not strict)
    for name in report.loaded:  # one by one: set_state_dict would warn about every tensor the file lacks
        state[name].set_value(weights.tensors[name])
    return report.log(how or f"{weights.format} format")


def load_model(path, **config):
    """The eval-mode DANet of the checkpoint at ``path``, with its weights, ready to predict.

    The model settings come from the checkpoint (its state.json), else from what the tensors show
    (depth, classes); keyword arguments fill in the rest (e.g. ``multi_grid=True`` for a bare
    ``.pdparams``) and must agree with the checkpoint's where it has them::

        model = danet.load_model("checkpoint/dygraph_resnet101")   # a run folder, checkpoint or .pdparams
        logits = model(images)                                       # [B, num_classes, H, W]
    """
    from danet import build_model
    from danet.engine.common import ARCH_KEYS, MEMBER_KEYS, arch

    weights = read_weights(path, arch(config) if config else None)
    saved = arch(weights.config) if weights.config else infer_config(weights.tensors)
    keys = ARCH_KEYS + MEMBER_KEYS
    clash = {k: (v, saved[k]) for k, v in config.items() if k in saved and k in keys and saved[k] != v}
    if clash:
        from danet.errors import UserError

        key, (given, held) = next(iter(clash.items()))
        raise UserError(f"{weights.path} holds a model with {key}={held!r}, not {given!r}: drop that argument")
    model = build_model(**arch(dict(config, **saved)))
    load_into(model, path, strict=True, weights=weights)
    model.eval()
    return model
