"""The DANet authors' PyTorch checkpoints (junfu1115/DANet, e.g. the released ``DANet101.pth.tar``).

Read from junfu1115/DANet: ``encoding/models/sseg/danet.py`` (``DANetHead``: ``conv5a`` / ``conv5c`` conv-BN-ReLU
into the position / channel branch, ``sa`` = PAM, ``sc`` = CAM, ``conv51`` / ``conv52`` after them, classifiers
``conv6`` (position), ``conv7`` (channel), ``conv8`` (fused) after a dropout ``.0``), ``encoding/nn/da_att.py``
(``PAM_Module``: biased 1x1 ``query_conv`` / ``key_conv`` / ``value_conv``, ``gamma`` of shape [1]; ``CAM_Module``:
``gamma``), ``encoding/models/sseg/base.py`` (backbone under ``pretrained.``, its ``fc`` removed; upsampling
``align_corners=True``; ImageNet mean/std), ``encoding/models/backbone/resnet.py`` (7x7 ``conv1`` + ``bn1``, or the
deep stem ``conv1.{0,3,6}`` 64-64-128 with BNs ``conv1.{1,4}`` and ``bn1``; halved first dilation; multi-grid
dilations absolute, only at output stride 8), ``danet/train.py`` (``{'epoch', 'state_dict', 'optimizer',
'best_pred'}`` of ``model.module``), ``experiments/segmentation/model_mapping.py`` (released files may carry an
``auxlayer`` the test code deletes) and the README's test command of DANet101 (``--multi-grid --multi-dilation 4 8
16 --os 8 --aux --no-deepstem``).

No tensor shows the dilations: by default the settings are the released DANet101's (multi-grid 4 8 16 at output
stride 8); the options override them, and the notes say which were assumed.
"""
from danet.engine.common import arch
from danet.weights.sources.common import Imported, Renamer, strip_prefix, torch_resnet, unwrap

NAME = "official"
DESCRIPTION = "the DANet authors' PyTorch code (junfu1115/DANet), e.g. DANet101.pth.tar"
RELEASED_GRID = (4, 8, 16)
_CONV_BN = (("conv5a", "pam_in"), ("conv5c", "cam_in"), ("conv51", "pam_out"), ("conv52", "cam_out"))
_CLASSIFIERS = (("conv8", "cls_fused"), ("conv6", "cls_pam"), ("conv7", "cls_cam"))


def split(obj):
    """(state dict, rest of the file) of a loaded official checkpoint (``{'epoch', 'state_dict', 'optimizer',
    'best_pred'}``, or a bare state dict), without a DataParallel ``module.`` prefix."""
    raw, meta = unwrap(obj, "state_dict")
    return strip_prefix(raw), meta


def detect(keys):
    keys = set(strip_prefix(dict.fromkeys(keys or ())))
    return "head.sa.query_conv.weight" in keys and "head.conv5a.0.weight" in keys


def convert(raw, meta, path="", multi_grid=None, multi_dilation=None, output_stride=None):
    """``output_stride``: None = 8; ``multi_grid``: None = True at output stride 8 (the released DANet101; the
    official code has no multi-grid at 16); ``multi_dilation``: None = 4 8 16."""
    raw = strip_prefix(raw)
    r = Renamer(raw, NAME, path)
    backbone, stem = torch_resnet(r, "pretrained.")
    r.drop_prefix("pretrained.fc.", "the backbone's ImageNet classifier: no part of the segmentation model")
    _head(r)
    r.drop_prefix("auxlayer.", "auxiliary head (--aux): a training loss only; the test code deletes it")
    tensors, dropped = r.finish()
    if "optimizer" in meta:
        dropped["optimizer"] = "optimizer state: for resuming the official training only"
    settings, notes = released_settings(multi_grid, multi_dilation, output_stride)
    num_classes = int(raw["head.conv8.1.weight"].shape[0])
    config = arch(dict(settings, backbone=backbone, stem=stem, num_classes=num_classes, halve_first_dilation=True,
                       align_corners=True))
    config["input_norm"] = "imagenet"
    if "epoch" in meta:
        notes.append(f"saved after epoch {meta['epoch']}, best_pred {meta.get('best_pred')}")
    return Imported(tensors, config, dropped, dict(source=NAME, notes=notes))


def _head(r):
    for src, dst in _CONV_BN:
        r.conv_bn(f"head.{src}.0", f"head.{src}.1", f"head.{dst}")
    for name in ("query", "key", "value"):
        biased(r, f"head.sa.{name}_conv", f"head.pam.{name}")
    r.move("head.sa.gamma", "head.pam.gamma", shape=(1,))
    r.move("head.sc.gamma", "head.cam.gamma", shape=(1,))
    for src, dst in _CLASSIFIERS:
        biased(r, f"head.{src}.1", f"head.{dst}")


def biased(r, src, dst):
    """A layer that always has a bias here: a missing one is a truncated file, named by ``get``."""
    for param in ("weight", "bias"):
        r.move(f"{src}.{param}", f"{dst}.{param}")


def released_settings(multi_grid, multi_dilation, output_stride, release="DANet101"):
    """The dilations of the official repository's releases (--os 8 --multi-grid --multi-dilation 4 8 16, in its
    test scripts) where the options do not say; each default is noted, since no tensor shows it."""
    notes = []
    if output_stride is None:
        output_stride = 8
        notes.append(f"output_stride=8: the released {release}'s --os 8, not in the file")
    if multi_grid is None:
        multi_grid = output_stride == 8
        notes.append(f"multi_grid={multi_grid}: the released {release}'s --multi-grid at output stride 8, not in "
                     "the file")
    if multi_dilation is None:
        multi_dilation = RELEASED_GRID
        if multi_grid:
            notes.append(f"multi_dilation=4 8 16: the released {release}'s, not in the file")
    settings = dict(output_stride=int(output_stride), multi_grid=bool(multi_grid),
                    multi_dilation=[int(d) for d in multi_dilation])
    return settings, notes
