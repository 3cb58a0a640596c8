"""The seed's (PaddleCV/Research/danet, Paddle 1.5.2/1.6) DANet weights -> this project's structured names.

**The naming rule** (read from Paddle 1.6 ``python/paddle/fluid/dygraph/layers.py`` and ``nn.py``):

* ``Layer.__init__(name_scope)`` sets ``full_name = unique_name.generate(name_scope + "/" + ClassName)``, i.e.
  ``<scope>/<Class>_<n>`` with ``n`` counting per ``<scope>/<Class>`` key from 0 (``unique_name`` counters are
  fresh in every ``fluid.dygraph.guard()`` / ``unique_name.guard()``).
* ``Layer.create_parameter`` turns a ``ParamAttr(name=x)`` into ``full_name + "." + x``; the Conv2D weight is
  created lazily at the first call but named from ``full_name`` fixed in ``__init__``, so ``__init__`` order counts.
* ``fluid.layers.create_parameter(attr=ParamAttr(name=x))`` keeps ``x`` as it is (no scope).
* ``Layer.state_dict()`` is keyed by ``param.name``, and ``save_dygraph`` / the ``save`` op store that name, so the
  file keys (and the per-variable file paths) are exactly these names.

**Applied to the seed's** ``danet.py`` (PaddlePaddle/models ``PaddleCV/Research/danet``, read):
``ConvBN(scope)`` passes its *own* ``scope`` (not its full name) to ``Conv2D`` and ``BatchNorm``, with
``ParamAttr(name='weight'|'bias')``, ``moving_mean_name='running_mean'``, ``moving_variance_name='running_var'``;
``BottleneckBlock('layer3.12')`` creates ConvBNs conv0 (1x1), conv1 (3x3), conv2 (1x1 x4), skip in that order;
``ResNet('resnet101')`` makes its stem ``ConvBN('resnet101', 64, 7, 2)``; ``DAHead('DA_head')`` makes ConvBN 0
(-> PAM), ConvBN 1 (-> CAM), ``PAM('pam')`` (3 Conv2D with bias: B query, C key, D value; ``pam_gamma``),
``CAM('cam')`` (``cam_gamma``), ConvBN 2, ConvBN 3, then ``_pam_last_conv``, ``_cam_last_conv``, ``_last_conv``.
Hence (seed name -> structured name)::

    resnet101/Conv2D_0.weight            -> backbone.conv1.0.weight
    resnet101/BatchNorm_0.running_var    -> backbone.conv1.1._variance      (running_mean -> _mean)
    layer3.12/Conv2D_{0,1,2,3}.weight    -> backbone.layer3.12.{conv1,conv2,conv3,downsample}.0.weight
    layer3.12/BatchNorm_k.{weight,bias}  -> backbone.layer3.12.<same order>.1.{weight,bias}
    DA_head/Conv2D_{0..3} + BatchNorm_k  -> head.{pam_in,cam_in,pam_out,cam_out}.{0,1}.*
    DA_head/Conv2D_{4,5,6}.{weight,bias} -> head.{cls_pam,cls_cam,cls_fused}.*
    pam/Conv2D_{0,1,2}.{weight,bias}     -> head.pam.{query,key,value}.*
    pam_gamma, cam_gamma                 -> head.pam.gamma, head.cam.gamma

**Certain** (source read): the rule above, the ``__init__`` orders and attribute names, and that 1.5+ names the
BN bias ``.bias`` (the bug that reused ``param_attr`` for it was fixed by Paddle PR #17465, May 2019, before 1.5.0).
**Inferred**: no real seed file was seen, and the 1.5.2 ``nn.py`` itself was not read (the 1.6 one was; the seed
runs unchanged on both). The counters assume one model built per guard, as the seed does; to tolerate an offset
anyway, numbers are used by *rank* within each ``<scope>/<Class>`` (``Conv2D_7..10`` act as ``0..3``), and the
per-scope counts are checked. Same-shape pairs (the three classifiers, pam_in/cam_in) rest on the source order.

**Config**: the tensors show depth and classes; the rest are the released models' settings (``danet.py`` defaults,
read; weights show no dilation): dilated, multi-grid 4 8 16, layer3's first block at half dilation, 7x7 stem, plain
shortcuts, ``resize_bilinear``'s ``align_corners`` True; ImageNet input normalisation (this project's, from the seed).
"""
import logging
import re
from collections import defaultdict

import numpy as np

from danet.engine.common import ARCH_KEYS, arch
from danet.errors import UserError
from danet.weights.sources.common import Imported, count_blocks, depth_of

log = logging.getLogger(__name__)

NAME = "seed"
DESCRIPTION = "the seed port PaddleCV/Research/danet (Paddle 1.5.2/1.6 save_dygraph .pdparams or per-variable folder)"
PARAM = re.compile(r"^(?P<scope>[^/]+)/(?P<cls>Conv2D|BatchNorm)_(?P<n>\d+)\.(?P<attr>\w+)$")
ATTRS = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
BLOCK = re.compile(r"^layer([1-4])\.(\d+)$")
STEM = re.compile(r"^resnet(\d+)$")
BLOCK_PARTS = ("conv1", "conv2", "conv3", "downsample")
HEAD_CONVS = ("pam_in.0", "cam_in.0", "pam_out.0", "cam_out.0", "cls_pam", "cls_cam", "cls_fused")
HEAD_BNS = ("pam_in.1", "cam_in.1", "pam_out.1", "cam_out.1")
PAM_CONVS = ("pam.query", "pam.key", "pam.value")
GAMMAS = {"pam_gamma": "head.pam.gamma", "cam_gamma": "head.cam.gamma"}
# Optimizer state (Momentum velocity, 1.6 dygraph .pdopt 'global_step', static LR variables): never weights.
DROPS = (
    (re.compile(r"_(velocity|moment[12]?|beta[12]_pow_acc|mean_square|mean_grad)_\d+$"), "optimizer accumulator"),
    (re.compile(r"^@LR_DECAY_COUNTER@$"), "learning-rate step counter"),
    (re.compile(r"^learning_rate(_warmup)?(_\d+)?$"), "learning-rate variable"),
    (re.compile(r"^global_step$"), "learning-rate step counter (1.6 .pdopt)"),
)
# multi_grid cannot be seen in weights (dilation has no parameters): the released models used these flags.
RELEASED_FLAGS = {"dilated": True, "multi_grid": True, "multi_dilation": (4, 8, 16)}
# What the seed's code or the tensors fix: an option may repeat these but not change them.
FIXED = ("backbone", "num_classes", "stem", "avg_down", "aux_head", "aux_channels")


def _group(names):
    """{(scope, class): {counter: [(attr, seed name)]}} for the Conv2D/BatchNorm parameters; the rest apart."""
    groups, others = defaultdict(lambda: defaultdict(list)), []
    for name in names:
        m = PARAM.match(name)
        if m and m["attr"] in ATTRS:
            groups[(m["scope"], m["cls"])][int(m["n"])].append((m["attr"], name))
        else:
            others.append(name)
    return groups, others


def _slots(scope, cls, count):
    """Structured prefixes for the ``count`` Conv2D/BatchNorm layers of one seed scope, in counter order."""
    block = BLOCK.match(scope)
    if block and count in (3, 4):
        prefix = f"backbone.layer{block[1]}.{block[2]}"
        return [f"{prefix}.{part}.{0 if cls == 'Conv2D' else 1}" for part in BLOCK_PARTS[:count]]
    if STEM.match(scope) and count == 1:
        return ["backbone.conv1.0" if cls == "Conv2D" else "backbone.conv1.1"]
    if scope == "DA_head" and count == (7 if cls == "Conv2D" else 4):
        return ["head." + s for s in (HEAD_CONVS if cls == "Conv2D" else HEAD_BNS)]
    if scope == "pam" and cls == "Conv2D" and count == 3:
        return ["head." + s for s in PAM_CONVS]
    return None


def _map_params(groups):
    """Map the grouped Conv2D/BatchNorm parameters; returns (mapped, unmapped names)."""
    mapped, unmapped = {}, []
    for (scope, cls), layers in sorted(groups.items()):
        slots = _slots(scope, cls, len(layers))
        if slots is None:
            unmapped += [name for entries in layers.values() for _, name in entries]
            continue
        if sorted(layers) != list(range(len(layers))):
            log.warning("seed scope %s/%s has counters %s, not 0..%d: mapping them by rank",
                        scope, cls, sorted(layers), len(layers) - 1)
        for slot, counter in zip(slots, sorted(layers)):
            # BN: all four; a ConvBN's conv ('.0'): no bias (bias_attr=False); the PAM and classifier convs: a bias.
            need = set(ATTRS) if slot.endswith(".1") else {"weight"} if slot.endswith(".0") else {"weight", "bias"}
            if {attr for attr, _ in layers[counter]} != need:
                raise UserError(f"seed layer {scope}/{cls}_{counter} has {sorted(a for a, _ in layers[counter])}, "
                                f"expected {sorted(need)}: the checkpoint is incomplete or not the seed's DANet")
            for attr, name in layers[counter]:
                mapped[f"{slot}.{ATTRS[attr]}"] = name
    return mapped, unmapped


def to_structured(raw):
    """Seed names -> ``({structured name: array}, {dropped seed name: reason})``; the optimizer state is dropped,
    any other name that does not fit the rule is a UserError naming up to three of them."""
    groups, others = _group(raw)
    names, unmapped = _map_params(groups)
    dropped = {}
    for name in others:
        if name in GAMMAS:
            names[GAMMAS[name]] = name
        elif reason := next((why for pattern, why in DROPS if pattern.search(name)), None):
            dropped[name] = reason
        else:
            unmapped.append(name)
    if set(GAMMAS) - set(raw):
        raise UserError(f"the seed checkpoint lacks {sorted(set(GAMMAS) - set(raw))}: it is incomplete")
    if unmapped:
        raise UserError(f"{len(unmapped)} tensors do not fit the seed's naming rule, e.g. {sorted(unmapped)[:3]}: "
                        "this is not a PaddleCV/Research/danet (Paddle 1.5/1.6) checkpoint of DANet")
    return {key: raw[name] for key, name in names.items()}, dropped


def infer_config(raw):
    """Model settings from seed weights: backbone (blocks per stage), num_classes (fused classifier rows), and the
    released models' ``dilated``/``multi_grid``/``multi_dilation`` (not visible in weights) as documented defaults."""
    scoped = [name.replace("/", ".") for name in raw if PARAM.match(name)]  # 'layer3.12/x' -> 'layer3.12.x'
    backbone = depth_of(count_blocks(scoped, "layer{}."))  # bottlenecks only: the seed's ResNet-18/34 scope apart
    stems = {STEM.match(m["scope"])[0] for m in map(PARAM.match, raw) if m and STEM.match(m["scope"])}
    if stems and stems != {backbone}:
        raise UserError(f"seed weights have a {sorted(stems)} stem but {backbone} blocks: the checkpoint is mixed up")
    convs = sorted((int(m["n"]), name) for name in raw if (m := PARAM.match(name))
                   and m["scope"] == "DA_head" and m["cls"] == "Conv2D" and m["attr"] == "weight")
    if len(convs) != len(HEAD_CONVS):
        raise UserError(f"seed weights have {len(convs)} DA_head convolutions, expected {len(HEAD_CONVS)}: "
                        "the checkpoint is incomplete or not the seed's DANet")
    num_classes = int(raw[convs[-1][1]].shape[0])
    return {"backbone": backbone, "num_classes": num_classes, **RELEASED_FLAGS}


def detect(keys):
    """The seed's unscoped gammas and its ``DA_head/Conv2D_<n>`` scope: no other source has either."""
    return {"pam_gamma", "cam_gamma"} <= set(keys) and any(k.startswith("DA_head/Conv2D_") for k in keys)


def split(obj):
    """Both 1.x layouts are read (danet.weights.paddle1) into a flat name -> array dict with nothing beside it."""
    return (obj, {}) if isinstance(obj, dict) else (None, {})


def _config(inferred, options, path):
    fixed = arch(inferred)
    bad = sorted(set(options) - set(ARCH_KEYS)) + [k for k in FIXED if k in options and options[k] != fixed[k]]
    if bad:
        raise UserError(f"{path}: option {bad[0]}={options[bad[0]]!r} does not apply to a {NAME} checkpoint: its "
                        f"code or tensors fix {', '.join(FIXED)}; options are {', '.join(ARCH_KEYS)}")
    return arch({**inferred, "input_norm": "imagenet", **options})


def convert(raw, meta, path="", **options):
    """:class:`Imported` from a seed state dict (``read_tnum``/``read_var_folder`` output); ``options`` replace the
    released models' unseen settings (e.g. ``multi_grid=False``, ``align_corners=False``)."""
    try:
        mapped, dropped = to_structured(raw)
        inferred = infer_config(raw)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in mapped.items()}
    config = _config(inferred, options, path)
    unseen = [k for k in ("dilated", "multi_grid", "multi_dilation", "align_corners", "input_norm") if k not in options]
    notes = [f"{', '.join(unseen)}: the seed's released settings (weights do not show them)"] if unseen else []
    return Imported(tensors, config, dropped, {"source": NAME, "notes": notes})
