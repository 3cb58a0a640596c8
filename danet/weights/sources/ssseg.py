"""sssegmentation's DANet checkpoints in this project's names and config.

Read from SegmentationBLWX/sssegmentation v1.7.0 (the package in ``.venv-partners``): ``ssseg/modules/models/
segmentors/danet/danet.py`` (``{pam,cam}_{in,out}_conv`` = conv ``.0`` + BN ``.1``; classifiers ``decoder_pamcam.1``
(fused), ``decoder_pam.1``, ``decoder_cam.1`` after a dropout ``.0``; ``auxiliary_decoder`` on layer3),
``.../danet/pam.py`` and ``cam.py`` (bias-free 1x1 ``{query,key,value}_project``, ``Scale`` gammas with a 0-d
``scale``), ``ssseg/modules/models/backbones/resnet.py`` (``backbone_net.``: deep stem ``stem.{0,3,6}`` convs +
``stem.{1,4,7}`` BNs or a 7x7 ``conv1``/``bn1``, torchvision blocks, ``contract_dilation`` halving a stage's first
dilation) and, in the GitHub repository, ``ssseg/configs/danet/base_cfg.py`` (``align_corners=False``) and
``danet_resnet{50,101}os{8,16}_{ade20k,cityscapes,voc}.py``. The file is what ``train.py`` saves:
``{'cur_epoch', 'cur_iter', 'optimizer', 'model'}``.

Output stride 8 and 16 checkpoints have the same tensors. It is taken from the ``output_stride`` option, else
from the file's path when it carries the config name (released files and training folders are named like
``danet_resnet50os16_cityscapes``), else 8 (the paper's; ssseg releases os8 and os16 models of every
dataset), and a note says which.
"""
import re

import numpy as np

from danet.engine.common import arch
from danet.weights.sources.common import Imported, Renamer, strip_prefix, torch_resnet, unwrap

NAME = "ssseg"
DESCRIPTION = "sssegmentation DANet, e.g. danet_resnet50os8_cityscapes.pth"
_CONV_BN = (("pam_in_conv", "pam_in"), ("cam_in_conv", "cam_in"), ("pam_out_conv", "pam_out"),
            ("cam_out_conv", "cam_out"))
_CLASSIFIERS = (("decoder_pamcam.1", "cls_fused"), ("decoder_pam.1", "cls_pam"), ("decoder_cam.1", "cls_cam"))
_STRIDE_IN_NAME = re.compile(r"resnet\d+os(8|16|32)(?!\d)")


def split(obj):
    """(state dict, rest of the file) of a loaded ssseg checkpoint: ``{'cur_epoch', 'cur_iter', 'optimizer',
    'model'}``."""
    return unwrap(obj, "model")


def detect(keys):
    keys = set(keys or ())
    return "pam_in_conv.0.weight" in keys and "pam_net.gamma.scale" in keys


def stride_from_name(path):
    """The output stride in an ssseg config name within ``path`` (``danet_resnet101os16_ade20k``), or None."""
    found = _STRIDE_IN_NAME.findall(path or "")
    return int(found[-1]) if found else None


def convert(raw, meta, path="", output_stride=None, align_corners=None):
    """``output_stride``: None takes it from the path's config name, else 8; ``align_corners``: None = False
    (every ssseg config)."""
    raw = strip_prefix(raw)
    r = Renamer(raw, NAME, path)
    backbone, stem = torch_resnet(r, "backbone_net.")
    notes = _head(r)
    r.drop_prefix("auxiliary_decoder.", "auxiliary FCN head on layer3: a training loss only, never used to predict")
    tensors, dropped = r.finish()
    if "optimizer" in meta:
        dropped["optimizer"] = "optimizer state: for resuming ssseg's training only"
    stride, note = _stride(output_stride, path)
    notes.append(note)
    if align_corners is None:
        align_corners = False
        notes.append("align_corners=False: every sssegmentation config, not stated in the file")
    num_classes = int(raw["decoder_pamcam.1.weight"].shape[0])
    config = arch(dict(backbone=backbone, stem=stem, num_classes=num_classes, output_stride=stride,
                       halve_first_dilation=True, multi_grid=False, align_corners=bool(align_corners)))
    config["input_norm"] = "imagenet"
    if "cur_epoch" in meta:
        notes.append(f"saved at epoch {meta['cur_epoch']}, iteration {meta.get('cur_iter')}")
    return Imported(tensors, config, dropped, dict(source=NAME, notes=notes))


def _head(r):
    notes = []
    for src, dst in _CONV_BN:
        r.conv_bn(f"{src}.0", f"{src}.1", f"head.{dst}")
    for name in ("query", "key", "value"):
        src = f"pam_net.{name}_project"
        r.conv(src, f"head.pam.{name}")
        if not r.has(f"{src}.bias"):  # ssseg's projections have no bias; ours do: zero is the same function
            r.put(f"head.pam.{name}.bias", np.zeros(r.get(f"{src}.weight").shape[0]))
            notes.append(f"head.pam.{name}.bias: zeros (ssseg's projection has no bias)")
    for src, dst in (("pam_net", "pam"), ("cam_net", "cam")):
        r.move(f"{src}.gamma.scale", f"head.{dst}.gamma", shape=(1,))  # a 0-d Scale parameter
    for src, dst in _CLASSIFIERS:
        for param in ("weight", "bias"):  # nn.Conv2d with its default bias: a missing one is a truncated file
            r.move(f"{src}.{param}", f"head.{dst}.{param}")
    return notes


def _stride(output_stride, path):
    if output_stride is not None:
        return int(output_stride), f"output_stride={int(output_stride)} given by the caller"
    named = stride_from_name(path)
    if named is not None:
        return named, f"output_stride={named} read from the file's name"
    return 8, "output_stride=8: the default, not in the file (pass output_stride=16 for an os16 model)"
