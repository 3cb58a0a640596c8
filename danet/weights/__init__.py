"""One home for reading weights: formats in, structured names out, one matcher, one report.

- :func:`read_weights` reads any file this project understands into :class:`Weights` keyed by
  structured names (``backbone.layer4.2.conv2.0.weight``): this project's dygraph and Executor
  checkpoints (:mod:`danet.weights.ours`) and ``paddle.vision`` ImageNet ResNets
  (:mod:`danet.weights.imagenet`). Pickles are read without running code (:mod:`.pdparams`).
- :func:`~danet.weights.match.fit` checks them against a model and reports what was loaded.
- :func:`load_into` fills a dygraph model; :func:`load_model` builds the model a checkpoint describes.

Nothing downstream knows which format the weights came from.
"""
import logging

from danet.weights.imagenet import is_vision_resnet, vision_resnet_to_backbone
from danet.weights.match import LoadReport, fit
from danet.weights.ours import NAMES_FILE, OPTIMIZER_FILE, VELOCITY, Weights, infer_config, read, rename_state
from danet.weights.pdparams import safe_load

log = logging.getLogger(__name__)

__all__ = ["read_weights", "load_into", "load_model", "fit", "LoadReport", "Weights", "safe_load", "rename_state",
           "NAMES_FILE", "OPTIMIZER_FILE", "VELOCITY"]


def read_weights(path, config=None):
    """:class:`Weights` (structured names) of the checkpoint or weight file at ``path``.

    ``config`` (model settings) is used only where the file cannot name its tensors itself
    (a bare Executor ``.pdparams`` without ``names.json``).
    """
    weights = read(path, config)
    if weights.format == "dygraph" and is_vision_resnet(weights.tensors):
        weights.tensors = vision_resnet_to_backbone(weights.tensors)
        weights.format = "paddle.vision ResNet (ImageNet backbone)"
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
    from danet.engine.common import ARCH_KEYS, arch

    weights = read_weights(path, arch(config) if config else None)
    saved = arch(weights.config) if weights.config else infer_config(weights.tensors)
    clash = {k: (v, saved[k]) for k, v in config.items() if k in saved and k in ARCH_KEYS and saved[k] != v}
    if clash:
        from danet.errors import UserError

        key, (given, held) = next(iter(clash.items()))
        raise UserError(f"{weights.path} holds a model with {key}={held!r}, not {given!r}: drop that argument")
    model = build_model(**arch(dict(config, **saved)))
    load_into(model, path, strict=True, weights=weights)
    model.eval()
    return model
