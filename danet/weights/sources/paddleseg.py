"""PaddleSeg 2.x DANet (``paddle.save(model.state_dict())`` of ``DANet`` on a ResNet-vd) -> this project's names.

Read from PaddleSeg 2.8.0: ``paddleseg/models/danet.py`` (DANet, DAHead, PAM, CAM),
``paddleseg/models/backbones/resnet_vd.py`` (ConvBNLayer, BottleneckBlock, ResNet_vd),
``paddleseg/models/layers/layer_libs.py`` (ConvBNReLU: a conv *with* bias, SyncBatchNorm, ReLU) and the
three ``configs/danet/*.yml`` (ResNet50_vd / ResNet101_vd, ``output_stride: 8``, no multi-grid, the
``align_corners`` default False) with ``configs/_base_/cityscapes.yml``. Names (PaddleSeg -> ours)::

    backbone.conv1_{1,2,3}._conv / ._batch_norm     -> backbone.stem.{0,1,2}.0 / .1    (3x3: 32, 32, 64)
    backbone.bb_{s}_{i}.conv{0,1,2} / .short        -> backbone.layer{s+1}.{i}.conv{1,2,3} / .downsample
    head.position_conv / head.channel_conv          -> head.pam_in / head.cam_in     (conv bias folded into BN)
    head.conv2 / head.conv1                         -> head.pam_out / head.cam_out   (sic: conv2 is the PAM one)
    head.pam.{query,key,value}_conv, head.*.gamma   -> head.pam.{query,key,value}, head.{pam,cam}.gamma
    head.cls_head.1                                 -> head.cls_fused
    head.aux_head_cam.1                             -> head.cls_cam AND head.cls_pam (see below)

PaddleSeg's training scores both branches with ``aux_head_cam`` (``pam_logit = self.aux_head_cam(position_feats)``),
so ``aux_head_pam`` never gets a gradient and keeps its initial values: it is dropped, and our ``cls_pam`` gets
``aux_head_cam``'s weights, which gives exactly the PAM-branch logits PaddleSeg trained on. ``aux_head`` (dropout
and a 1x1 conv on C4, a training loss only) is dropped: eval never runs it, and our auxiliary head is another
architecture (an FCN head on layer3).

Fixed by the code: deep 32-32-64 stem, ResNet-D average-pool shortcuts (``is_vd_mode`` exactly where the block
strides, as ``avg_down``), no halving of the first dilation, upsampling ``align_mode=1``. Shown by the tensors:
depth, classes. Defaults from the configs, as weights show none of them: output stride 8, no multi-grid,
``align_corners`` False, inputs ``(x/255 - 0.5) / 0.5`` (``_base_/cityscapes.yml``: ``Normalize`` with its
defaults; ``input_norm="half"``). ``convert`` options may change these.
"""
import re

from danet.engine.common import ARCH_KEYS, arch
from danet.errors import UserError
from danet.weights.sources.common import Imported, Renamer, depth_of

NAME = "paddleseg"
DESCRIPTION = "PaddleSeg 2.x DANet on ResNet50/101/152_vd (model.pdparams of its trainer)"
BN = ("weight", "bias", "_mean", "_variance")  # Paddle's BatchNorm names
HEAD_CONV_BN = {"position_conv": "pam_in", "channel_conv": "cam_in", "conv2": "pam_out", "conv1": "cam_out"}
BLOCK = re.compile(r"^backbone\.bb_(\d)_(\d+)\.")
DEFAULTS = dict(stem="deep32", avg_down=True, halve_first_dilation=False, align_corners=False, align_mode=1,
                input_norm="half")
# Settings the code or the tensors fix: an option may repeat them but not change them.
FIXED = ("backbone", "num_classes", "stem", "avg_down", "aux_head", "aux_channels")


def detect(keys):
    """PaddleSeg's DAHead: ``head.position_conv._conv`` and ``head.cls_head.1`` (no other source has either)."""
    return {"head.position_conv._conv.weight", "head.cls_head.1.weight"} <= set(keys)


def split(obj):
    """The trainer's ``model.pdparams`` is the state dict itself and carries nothing else."""
    return (obj, {}) if isinstance(obj, dict) else (None, {})


def _blocks(raw, path):
    counts = [set() for _ in range(4)]
    for key in raw:
        m = BLOCK.match(key)
        if m and int(m[1]) < 4:
            counts[int(m[1])].add(int(m[2]))
    if "backbone.conv1_1._conv.weight" not in raw or not all(counts):
        raise UserError(f"{path}: this PaddleSeg DANet has no ResNet-vd backbone (backbone.conv1_1, backbone.bb_*): "
                        "only ResNet50/101/152_vd backbones are supported")
    if "backbone.bb_0_0.conv2._conv.weight" not in raw:
        raise UserError(f"{path}: a PaddleSeg ResNet18/34_vd (basic blocks) has a 1x1 shortcut on its first block "
                        "that this project's ResNet-18/34 lacks: only ResNet50/101/152_vd are supported")
    try:
        depth_of([len(c) for c in counts])
    except UserError as e:  # name the file: depth_of does not know it (ResNet200_vd has no counterpart here)
        raise UserError(f"{path}: {e}") from None
    return [len(c) for c in counts]


def _backbone(r, blocks):
    for n in range(3):
        r.conv_bn(f"backbone.conv1_{n + 1}._conv", f"backbone.conv1_{n + 1}._batch_norm", f"backbone.stem.{n}", BN)
    for stage, count in enumerate(blocks):
        for i in range(count):
            src, dst = f"backbone.bb_{stage}_{i}", f"backbone.layer{stage + 1}.{i}"
            parts = [(f"conv{k}", f"conv{k + 1}") for k in range(3)] + [("short", "downsample")]
            for theirs, ours in parts:
                if theirs != "short" or r.has(f"{src}.short._conv.weight"):
                    r.conv_bn(f"{src}.{theirs}._conv", f"{src}.{theirs}._batch_norm", f"{dst}.{ours}", BN)


def _head(r):
    for theirs, ours in HEAD_CONV_BN.items():
        r.conv_bn(f"head.{theirs}._conv", f"head.{theirs}._batch_norm", f"head.{ours}", BN)
    for part in ("query", "key", "value"):
        r.conv(f"head.pam.{part}_conv", f"head.pam.{part}")
    r.move("head.pam.gamma", "head.pam.gamma")
    r.move("head.cam.gamma", "head.cam.gamma")
    r.conv("head.cls_head.1", "head.cls_fused")
    r.conv("head.aux_head_cam.1", "head.cls_cam")
    r.conv("head.aux_head_cam.1", "head.cls_pam")  # PaddleSeg's own PAM-branch classifier (its bug, kept)
    r.drop_prefix("head.aux_head_pam.", "PaddleSeg builds it but never calls it (its training scores the PAM "
                  "branch with aux_head_cam): untrained initial values")
    r.drop_prefix("head.aux_head.", "auxiliary 1x1 classifier on C4 for a training loss only; no counterpart here")


def _config(inferred, options, path):
    unknown = sorted(set(options) - set(ARCH_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown option(s) {unknown} for a {NAME} import: use {', '.join(ARCH_KEYS)}")
    fixed = dict(DEFAULTS, **inferred, aux_head=False, aux_channels=256)
    clash = [k for k in FIXED if k in options and options[k] != fixed[k]]
    if clash:
        raise UserError(f"{path}: a {NAME} checkpoint has {clash[0]}={fixed[clash[0]]!r} (its code or tensors fix "
                        f"it), not {options[clash[0]]!r}: drop that option")
    settings = {**DEFAULTS, **options, **{k: fixed[k] for k in FIXED}}
    if settings["align_corners"] and "align_mode" not in options:
        settings["align_mode"] = 0  # Paddle ignores align_mode=1 when corners are aligned
    return arch(settings)


def convert(raw, meta, path="", **options):
    """:class:`Imported` from a PaddleSeg DANet state dict; ``options``: build_model settings the weights cannot
    show (``output_stride=16``, ``multi_grid``/``multi_dilation`` as absolute values, ``align_corners``)."""
    blocks = _blocks(raw, path)
    r = Renamer(raw, "PaddleSeg", path)
    _backbone(r, blocks)
    _head(r)
    tensors, dropped = r.finish()
    inferred = dict(backbone=depth_of(blocks), num_classes=int(tensors["head.cls_fused.weight"].shape[0]))
    config = _config(inferred, options, path)
    unseen = [k for k in ("output_stride", "multi_grid", "align_corners", "input_norm") if k not in options]
    notes = ["cls_pam holds aux_head_cam's weights: PaddleSeg scores the PAM branch with aux_head_cam"]
    notes += [f"{', '.join(unseen)}: PaddleSeg's config defaults (weights do not show them)"] if unseen else []
    return Imported(tensors, config, dropped, {"source": NAME, "notes": notes})
