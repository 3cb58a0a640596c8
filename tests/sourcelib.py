"""Helpers of the tests of the torch checkpoint sources (danet.weights.sources): random weights on which every
tensor's place shows, the official names and state dict of our model's weights, and the check that an import is
exact."""
import re

import numpy as np
import paddle

from danet.engine.common import ARCH_KEYS

BN = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}  # ours -> torch's
_STEM_BN = {"0": "pretrained.conv1.1", "1": "pretrained.conv1.4", "2": "pretrained.bn1"}
# Our backbone's structured names -> the official ResNet's (7x7 or deep stem) under BaseNet's ``pretrained``
# (junfu1115/DANet encoding/models/backbone/resnet.py): the inverse of the sources' torch ResNet map.
BACKBONE_TO_OFFICIAL = [
    (r"backbone\.conv1\.0\.weight", lambda m: "pretrained.conv1.weight"),
    (r"backbone\.conv1\.1\.(\w+)", lambda m: f"pretrained.bn1.{BN[m[1]]}"),
    (r"backbone\.stem\.(\d)\.0\.weight", lambda m: f"pretrained.conv1.{3 * int(m[1])}.weight"),
    (r"backbone\.stem\.(\d)\.1\.(\w+)", lambda m: f"{_STEM_BN[m[1]]}.{BN[m[2]]}"),
    (r"backbone\.(layer\d\.\d+)\.conv(\d)\.0\.weight", lambda m: f"pretrained.{m[1]}.conv{m[2]}.weight"),
    (r"backbone\.(layer\d\.\d+)\.conv(\d)\.1\.(\w+)", lambda m: f"pretrained.{m[1]}.bn{m[2]}.{BN[m[3]]}"),
    (r"backbone\.(layer\d\.\d+)\.downsample\.0\.weight", lambda m: f"pretrained.{m[1]}.downsample.0.weight"),
    (r"backbone\.(layer\d\.\d+)\.downsample\.1\.(\w+)", lambda m: f"pretrained.{m[1]}.downsample.1.{BN[m[2]]}"),
]


def official_key(name, patterns):
    """The official key of our structured ``name`` by the first of ``patterns`` (regex, key of its match) that
    matches it whole; KeyError if none does."""
    for pattern, name_of in patterns:
        match = re.fullmatch(pattern, name)
        if match:
            return name_of(match)
    raise KeyError(name)


def randomise(model, seed):
    """Random BN statistics and affine, attention scales and gammas away from 0 and 1: every tensor's place in a
    name map changes the logits."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, tensor in model.state_dict().items():
        shape = tensor.shape
        if name.endswith(("scale", "gamma")):
            values[name] = rng.uniform(0.3, 0.8, shape)
        elif name.endswith("_variance"):
            values[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("_mean", "bias")) or (len(shape) == 1 and name.endswith("weight")):
            values[name] = (1.0 if len(shape) == 1 and name.endswith("weight") else 0.0) + rng.normal(0, 0.1, shape)
        else:
            values[name] = tensor.numpy()  # conv and linear weights: the model's own initialisation
    model.set_state_dict({k: v.astype("float32") for k, v in values.items()})


def official_checkpoint(model, official_key, transposed=()):
    """Randomise ``model``, put it in eval mode and run it on a fixed 41x35 image: (the image, its logits, the
    official state dict of the same weights: keys from ``official_key(name)``, the ``transposed`` ones in torch's
    Linear layout [out, in], and the step counter every torch BN carries)."""
    randomise(model, seed=1)
    model.eval()
    x = np.random.default_rng(2).normal(size=(1, 3, 41, 35)).astype("float32")
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()
    raw = {}
    for name, tensor in model.state_dict().items():
        key = official_key(name)
        raw[key] = tensor.numpy().T if key in transposed else tensor.numpy()
        if key.endswith("running_var"):
            raw[key.replace("running_var", "num_batches_tracked")] = np.array(1000, dtype=np.int64)
    return x, logits, raw


def import_wrapped(source, raw, path, best_pred):
    """``raw`` saved as the official training does from a DataParallel model (epoch, optimizer, best_pred and the
    state dict under ``module.``), imported by ``source`` as the file ``path``: a config of our architecture keys
    and the ImageNet input norm is checked."""
    wrapped = {"epoch": 240, "optimizer": {"state": {}}, "best_pred": best_pred,
               "state_dict": {"module." + k: v for k, v in raw.items()}}
    imported = source.convert(*source.split(wrapped), path=path)
    assert set(ARCH_KEYS) <= set(imported.config) and imported.config["input_norm"] == "imagenet"
    return imported


def load_imported(model, imported):
    """``model`` in eval mode with the tensors of ``imported`` (a sources.common.Imported), once they are
    checked to be the model's own names and shapes."""
    state = model.state_dict()
    assert set(imported.tensors) == set(state)
    assert {k: list(v.shape) for k, v in imported.tensors.items()} == {k: list(v.shape) for k, v in state.items()}
    model.set_state_dict(imported.tensors)
    model.eval()
    return model


def assert_imports_exactly(model, imported, x, logits, source):
    """``imported`` in ``model`` gives ``logits`` on ``x`` bit for bit; of the wrapped torch checkpoint it dropped
    the optimizer and the BN step counters only, and its meta names ``source``."""
    load_imported(model, imported)
    with paddle.no_grad():
        np.testing.assert_array_equal(model(paddle.to_tensor(x)).numpy(), logits)
    assert "optimizer" in imported.dropped and imported.meta["source"] == source
    assert all(k.endswith("num_batches_tracked") for k in imported.dropped if k != "optimizer")
