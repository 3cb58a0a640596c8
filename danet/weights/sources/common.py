"""What every foreign source shares: the result of an import, and the renaming of the parts all ResNets have.

A source module (one per implementation) has ``NAME``, ``detect(keys) -> bool`` and
``convert(raw, meta, **options) -> Imported``: ``raw`` is the file's state dict as numpy arrays,
``meta`` what else the file carries (mmseg's config text and class names, an epoch). It returns
tensors under this project's structured names for the model its config describes, and says what it
dropped and why. Nothing downstream knows where the weights came from.
"""
from dataclasses import dataclass, field

import numpy as np

from danet.errors import UserError


@dataclass
class Imported:
    """A foreign checkpoint in this project's terms.

    ``tensors``: structured name -> float32 array, complete for ``build_model(**config)``;
    ``config``: the build_model settings the tensors and the file reveal, plus ``input_norm``
    ('imagenet' or 'half': mean = std = 0.5); ``dropped``: source key -> why it was left out;
    ``meta``: provenance (source, class names and palette when the file has them, notes).
    """

    tensors: dict
    config: dict
    dropped: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


class Renamer:
    """Moves tensors from a source state dict to structured names, remembering which source keys were used.

    ``finish()`` refuses any source key that no rule used and that the source did not drop with a reason,
    so a layout the rules do not cover is an error, never a silent partial import.
    """

    def __init__(self, raw, source_name, path=""):
        self.raw, self.source_name, self.path = raw, source_name, path
        self.out, self.used, self.dropped = {}, set(), {}

    def has(self, key):
        return key in self.raw

    def get(self, key):
        if key not in self.raw:
            raise UserError(f"{self.path}: the {self.source_name} checkpoint lacks {key}: it is incomplete or of "
                            "another architecture")
        self.used.add(key)
        return np.asarray(self.raw[key])

    def put(self, dst, array):
        self.out[dst] = np.ascontiguousarray(np.asarray(array, dtype=np.float32))

    def move(self, src, dst, shape=None):
        array = self.get(src)
        self.put(dst, array.reshape(shape) if shape is not None else array)

    def conv(self, src, dst):
        """A convolution's weight (and bias, if the source has one and ``dst`` takes one)."""
        self.move(f"{src}.weight", f"{dst}.weight")
        if self.has(f"{src}.bias"):
            self.move(f"{src}.bias", f"{dst}.bias")

    def bn(self, src, dst, names=("weight", "bias", "running_mean", "running_var"), conv_bias=None):
        """A BatchNorm: weight, bias and running statistics (PyTorch or Paddle names) -> ours.

        ``conv_bias``: the source key of a bias on the convolution before this BN. BN subtracts the batch
        mean, so in eval ``BN(conv(x) + b) = BN'(conv(x))`` with running mean ``mean - b``: it folds exactly.
        """
        weight, bias, mean, var = (self.get(f"{src}.{n}") for n in names)
        if conv_bias is not None:
            mean = mean - self.get(conv_bias)
        for name, value in (("weight", weight), ("bias", bias), ("_mean", mean), ("_variance", var)):
            self.put(f"{dst}.{name}", value)
        tracked = f"{src}.num_batches_tracked"
        if self.has(tracked):
            self.drop(tracked, "BatchNorm step counter (not a weight)")

    def conv_bn(self, conv, bn, dst, bn_names=("weight", "bias", "running_mean", "running_var")):
        """A conv (no bias here) followed by its BN, into our ``conv_bn`` Sequential ``dst.0`` / ``dst.1``."""
        self.move(f"{conv}.weight", f"{dst}.0.weight")
        conv_bias = f"{conv}.bias" if self.has(f"{conv}.bias") else None
        self.bn(bn, f"{dst}.1", bn_names, conv_bias)

    def drop(self, key, reason):
        self.used.add(key)
        self.dropped[key] = reason

    def drop_prefix(self, prefix, reason):
        for key in [k for k in self.raw if k.startswith(prefix)]:
            self.drop(key, reason)

    def finish(self):
        left = [k for k in self.raw if k not in self.used]
        if left:
            raise UserError(f"{self.path}: {len(left)} tensors of the {self.source_name} checkpoint match no rule "
                            f"(e.g. {', '.join(left[:3])}): it is not a DANet of that implementation, or a variant "
                            "this project cannot express")
        return self.out, self.dropped


def count_blocks(keys, pattern):
    """Blocks per stage: ``pattern`` formats (stage 1-4) into a prefix whose next dotted part is the block index."""
    counts = []
    for stage in range(1, 5):
        prefix = pattern.format(stage)
        counts.append(len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)}))
    return counts


def depth_of(blocks, bottleneck=True):
    from danet.models.resnet import DEPTHS

    kind = "bottleneck" if bottleneck else "basic"
    for name, (k, b) in DEPTHS.items():
        if k == kind and list(b) == list(blocks):
            return name
    raise UserError(f"the checkpoint's ResNet has {blocks} blocks per stage: not ResNet-18/34/50/101/152")


def torch_resnet_blocks(r, src_prefix, blocks, dst_prefix="backbone"):
    """ResNet stages in torchvision's naming (``layerL.i.convN`` + ``bnN``, ``downsample.0/1``): official DANet,
    mmseg ResNetV1c and sssegmentation share it."""
    for stage, count in enumerate(blocks, start=1):
        for i in range(count):
            src, dst = f"{src_prefix}layer{stage}.{i}", f"{dst_prefix}.layer{stage}.{i}"
            for n in (1, 2, 3):
                if r.has(f"{src}.conv{n}.weight"):
                    r.conv_bn(f"{src}.conv{n}", f"{src}.bn{n}", f"{dst}.conv{n}")
            if r.has(f"{src}.downsample.0.weight"):
                r.conv_bn(f"{src}.downsample.0", f"{src}.downsample.1", f"{dst}.downsample")


def unwrap(obj, key):
    """(state dict, rest of the file) of a loaded checkpoint that keeps its tensors under ``key``.

    A bare state dict (every value an array: ``torch.save(model.state_dict())``) is its own state dict; anything
    else (another source's wrapper) gives (None, {}): not this layout, as ``read_foreign`` expects.
    """
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
        return obj[key], {k: v for k, v in obj.items() if k != key}
    if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return obj, {}
    return None, {}


def strip_prefix(raw, prefix="module."):
    """The keys without the ``module.`` that ``torch.nn.DataParallel`` puts on every key of a wrapped model
    (``raw`` itself when not every key has it, or None)."""
    if raw and all(k.startswith(prefix) for k in raw):
        return {k[len(prefix):]: v for k, v in raw.items()}
    return raw


def torch_stem(r, src_prefix, dst_prefix="backbone"):
    """A torch ResNet's stem -> ours; returns its name in ``STEMS`` ("7x7", "deep32", "deep64").

    7x7: ``conv1`` + ``bn1``. Deep, mmseg ResNetV1c and sssegmentation: convs ``stem.{0,3,6}``, BNs
    ``stem.{1,4,7}``. Deep, official DANet: convs ``conv1.{0,3,6}``, BNs ``conv1.{1,4}`` and ``bn1`` (its last BN
    sits where the 7x7 stem has its BN). The widths of the three convs tell which deep stem it is.
    """
    from danet.models.layers import STEMS

    p = src_prefix
    if r.has(f"{p}conv1.weight"):
        r.conv_bn(f"{p}conv1", f"{p}bn1", f"{dst_prefix}.conv1")
        return "7x7"
    if r.has(f"{p}stem.0.weight"):
        pairs = [(f"{p}stem.{i}", f"{p}stem.{i + 1}") for i in (0, 3, 6)]
    else:
        pairs = [(f"{p}conv1.0", f"{p}conv1.1"), (f"{p}conv1.3", f"{p}conv1.4"), (f"{p}conv1.6", f"{p}bn1")]
    widths = tuple(int(r.get(f"{conv}.weight").shape[0]) for conv, _ in pairs)
    names = {v: k for k, v in STEMS.items() if v}
    if widths not in names:
        raise UserError(f"{r.path}: the {r.source_name} checkpoint's deep stem has {widths} channels; this project "
                        f"builds {' or '.join(map(str, names))}")
    for n, (conv, bn) in enumerate(pairs):
        r.conv_bn(conv, bn, f"{dst_prefix}.stem.{n}")
    return names[widths]


def torch_resnet(r, src_prefix, dst_prefix="backbone"):
    """Stem and stages of a torchvision-style ResNet under ``src_prefix`` -> ours; returns (backbone, stem),
    e.g. ("resnet101", "7x7"): the depth from the blocks per stage, bottleneck if ``layer1.0`` has a conv3."""
    blocks = count_blocks(r.raw, src_prefix + "layer{}.")
    if not any(blocks):  # e.g. a source forced on another one's file
        raise UserError(f"{r.path}: no {src_prefix}layer1-4 tensors: not a DANet checkpoint of the "
                        f"{r.source_name} source (its keys are e.g. {', '.join(list(r.raw)[:3])})")
    try:
        backbone = depth_of(blocks, bottleneck=r.has(f"{src_prefix}layer1.0.conv3.weight"))
    except UserError as e:  # name the file: depth_of does not know it
        raise UserError(f"{r.path}: {e}") from None
    stem = torch_stem(r, src_prefix, dst_prefix)
    torch_resnet_blocks(r, src_prefix, blocks, dst_prefix)
    return backbone, stem
