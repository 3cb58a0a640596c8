"""The DRANet authors' PyTorch checkpoints (junfu1115/DANet, the released ``dran101.pth.tar``), for
:class:`danet.models.dranet.DRANet`.

Read from junfu1115/DANet (commit 766c34e): ``encoding/models/sseg/dran.py`` (``Dran``: ``head`` = ``DranHead``,
``cls_seg`` = [Dropout2d, biased 1x1], ``cls_aux`` = [3x3 conv, BN, ReLU, Dropout2d, biased 1x1] with ``--aux``;
``DranHead``: conv-BN-ReLU ``conv_cpam_b``, ``conv_cpam_e``, ``conv_ccam_b``, ``ccam_enc``, ``conv_ccam_e``,
``conv_cat``), ``encoding/nn/dran_att.py`` (``CPAMEnc``: ``conv1``..``conv4`` for the 1, 2, 3, 6 bins;
``CPAMDec``: ``scale``, biased 1x1 ``conv_query``, ``nn.Linear`` ``conv_key`` / ``conv_value``; ``CCAMDec``:
``scale``; ``CLGD``: ``conv_low``, ``conv_cat``, ``conv_att.0`` (biased 1x1), ``conv_out``, ``gamma``),
``encoding/models/sseg/base.py`` (backbone under ``pretrained.``, ``fc`` set to None; ``align_corners=True``),
``encoding/models/backbone/resnet.py`` (deep stem by default: ``conv1.{0,3,6}`` 64-64-128, BNs ``conv1.{1,4}``
and ``bn1``), ``experiments/segmentation/test.sh`` (``--multi-grid --multi-dilation 4 8 16 --os 8 --aux``) and
``test.py`` (a strict load of ``checkpoint['state_dict']``).

No tensor shows the dilations: by default the settings are test.sh's; the options override them, and the notes
say which were assumed.
"""
from danet.engine.common import arch
from danet.weights.sources.common import Imported, Renamer, strip_prefix, torch_resnet, unwrap
from danet.weights.sources.official import biased, released_settings

NAME = "dran"
DESCRIPTION = "the DRANet authors' PyTorch code (junfu1115/DANet, Dran), e.g. dran101.pth.tar"
# official conv-BN-ReLU (``.0`` conv, ``.1`` BN) -> our ConvBNReLU, under ``head.``
_CONV_BN = (("conv_cpam_b", "cpam_in"), ("cpam_enc.conv1", "cpam.centers.0"), ("cpam_enc.conv2", "cpam.centers.1"),
            ("cpam_enc.conv3", "cpam.centers.2"), ("cpam_enc.conv4", "cpam.centers.3"), ("conv_cpam_e", "cpam_out"),
            ("conv_ccam_b", "ccam_in"), ("ccam_enc", "ccam.reduce"), ("conv_ccam_e", "ccam_out"),
            ("conv_cat", "fuse"), ("clgd.conv_low", "decoder.low"), ("clgd.conv_cat", "decoder.fuse"),
            ("clgd.conv_out", "decoder.out"))
_SCALARS = (("cpam_dec.scale", "cpam.scale"), ("ccam_dec.scale", "ccam.scale"), ("clgd.gamma", "decoder.gamma"))


def split(obj):
    """(state dict, rest of the file) of a loaded DRANet checkpoint (``{'epoch', 'state_dict', ...}`` as test.py
    reads it, or a bare state dict), without a DataParallel ``module.`` prefix."""
    raw, meta = unwrap(obj, "state_dict")
    return strip_prefix(raw), meta


def detect(keys):
    """The CPAM decoder's query and the top-level ``cls_seg``: no DANet layout has either."""
    keys = set(strip_prefix(dict.fromkeys(keys or ())))
    return "head.cpam_dec.conv_query.weight" in keys and "cls_seg.1.weight" in keys


def convert(raw, meta, path="", multi_grid=None, multi_dilation=None, output_stride=None):
    """``output_stride``: None = 8; ``multi_grid``: None = True at output stride 8 (test.sh; the official ResNet has
    no multi-grid at 16); ``multi_dilation``: None = 4 8 16. The auxiliary head is built when ``cls_aux`` is there."""
    raw = strip_prefix(raw)
    r = Renamer(raw, NAME, path)
    backbone, stem = torch_resnet(r, "pretrained.")
    r.drop_prefix("pretrained.fc.", "the backbone's ImageNet classifier: no part of the segmentation model")
    _head(r)
    aux_channels = _aux(r)
    r.drop_prefix("auxlayer.", "a legacy FCN auxiliary head (model_mapping.py deletes it): a training loss only")
    tensors, dropped = r.finish()
    if "optimizer" in meta:
        dropped["optimizer"] = "optimizer state: for resuming the official training only"
    settings, notes = released_settings(multi_grid, multi_dilation, output_stride, release="dran101")
    num_classes = int(raw["cls_seg.1.weight"].shape[0])
    config = arch(dict(settings, backbone=backbone, stem=stem, num_classes=num_classes, halve_first_dilation=True,
                       align_corners=True, aux_head=aux_channels is not None, aux_channels=aux_channels or 256))
    config.update(input_norm="imagenet", model="dranet")
    if "epoch" in meta:
        notes.append(f"saved after epoch {meta['epoch']}, best_pred {meta.get('best_pred')}")
    return Imported(tensors, config, dropped, dict(source=NAME, notes=notes))


def _head(r):
    for src, dst in _CONV_BN:
        r.conv_bn(f"head.{src}.0", f"head.{src}.1", f"head.{dst}")
    biased(r, "head.cpam_dec.conv_query", "head.cpam.query")
    for name in ("key", "value"):
        # torch Linear weights are [out, in], Paddle's [in, out]
        r.put(f"head.cpam.{name}.weight", r.get(f"head.cpam_dec.conv_{name}.weight").T)
        r.move(f"head.cpam_dec.conv_{name}.bias", f"head.cpam.{name}.bias")
    biased(r, "head.clgd.conv_att.0", "head.decoder.gate")
    for src, dst in _SCALARS:
        r.move(f"head.{src}", f"head.{dst}", shape=(1,))
    biased(r, "cls_seg.1", "head.cls")


def _aux(r):
    """``cls_aux`` -> ``aux_head``; returns its width (the official 256), or None without one."""
    if not r.has("cls_aux.0.weight"):
        return None
    r.conv_bn("cls_aux.0", "cls_aux.1", "aux_head.conv")
    biased(r, "cls_aux.4", "aux_head.cls")
    return int(r.get("cls_aux.0.weight").shape[0])
