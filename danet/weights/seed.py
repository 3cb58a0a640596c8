"""The seed's (PaddleCV/Research/danet, Paddle 1.5.2/1.6) parameter names -> this project's structured names.

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
"""
import logging
import re
from collections import defaultdict

from danet.errors import UserError

log = logging.getLogger(__name__)

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
DEPTHS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}
# multi_grid cannot be seen in weights (dilation has no parameters): the released models used these flags.
RELEASED_FLAGS = {"dilated": True, "multi_grid": True, "multi_dilation": (4, 8, 16)}


def _drop_reason(name):
    for pattern, reason in DROPS:
        if pattern.search(name):
            return reason
    return None


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
            for attr, name in layers[counter]:
                mapped[f"{slot}.{ATTRS[attr]}"] = name
    return mapped, unmapped


def to_structured(raw):
    """Rename a seed state dict (``read_tnum``/``read_var_folder`` output) to this project's names.

    Returns ``(mapped, dropped)``: ``{structured name: array}`` and ``{seed name: reason}`` for optimizer state.
    Any other name that does not fit the rule is a UserError naming up to three of them.
    """
    groups, others = _group(raw)
    names, unmapped = _map_params(groups)
    dropped = {}
    for name in others:
        if name in GAMMAS:
            names[GAMMAS[name]] = name
        elif _drop_reason(name):
            dropped[name] = _drop_reason(name)
        else:
            unmapped.append(name)
    if unmapped:
        raise UserError(f"{len(unmapped)} tensors do not fit the seed's naming rule, e.g. {sorted(unmapped)[:3]}: "
                        "this is not a PaddleCV/Research/danet (Paddle 1.5/1.6) checkpoint of DANet")
    if dropped:
        log.info("dropped %d optimizer tensors (e.g. %s)", len(dropped), sorted(dropped)[0])
    return {key: raw[name] for key, name in names.items()}, dropped


def _blocks_per_stage(names):
    counts = [set() for _ in range(4)]
    for name in names:
        m = PARAM.match(name)
        block = BLOCK.match(m["scope"]) if m else None
        if block:
            counts[int(block[1]) - 1].add(int(block[2]))
    return tuple(len(c) for c in counts)


def infer_config(raw):
    """Model settings from seed weights: backbone (blocks per stage), num_classes (fused classifier rows), and the
    released models' ``dilated``/``multi_grid``/``multi_dilation`` (not visible in weights) as documented defaults."""
    stages = _blocks_per_stage(raw)
    backbone = DEPTHS.get(stages)
    if backbone is None:
        raise UserError(f"seed weights have {stages} blocks per stage, which is no ResNet-50/101/152 "
                        "(3,4,6,3 / 3,4,23,3 / 3,8,36,3): the checkpoint is incomplete or not the seed's DANet")
    stems = {STEM.match(m["scope"])[0] for m in map(PARAM.match, raw) if m and STEM.match(m["scope"])}
    if stems and stems != {backbone}:
        raise UserError(f"seed weights have a {sorted(stems)} stem but {backbone} blocks: the checkpoint is mixed up")
    convs = sorted((int(m["n"]), name) for name in raw if (m := PARAM.match(name))
                   and m["scope"] == "DA_head" and m["cls"] == "Conv2D" and m["attr"] == "weight")
    if len(convs) != len(HEAD_CONVS):
        raise UserError(f"seed weights have {len(convs)} DA_head convolutions, expected {len(HEAD_CONVS)}: "
                        "the checkpoint is incomplete or not the seed's DANet")
    num_classes = int(raw[convs[-1][1]].shape[0])
    log.info("seed checkpoint: %s, %d classes; dilated multi-grid (4, 8, 16) assumed as in the released models",
             backbone, num_classes)
    return {"backbone": backbone, "num_classes": num_classes, **RELEASED_FLAGS}
