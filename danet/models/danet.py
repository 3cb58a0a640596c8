"""DANet: a dilated ResNet and the dual attention head (Fu et al., CVPR 2019)."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from danet.data.transforms import INPUT_NORMS
from danet.errors import UserError
from danet.models.attention import ChannelAttention, PositionAttention
from danet.models.layers import ConvBNReLU
from danet.models.resnet import DEPTHS, ResNet

# The architecture options of build_model beyond backbone / classes / dilation, with their defaults (the
# model of the DANet paper's code); a config without one of them (older checkpoints) means the default.
VARIANT_DEFAULTS = dict(output_stride=None, stem="7x7", avg_down=False, halve_first_dilation=True,
                        align_corners=True, align_mode=0, aux_head=False, aux_channels=256, input_norm="imagenet")


def _lr(lr_mult):
    def attr():
        return paddle.ParamAttr(learning_rate=lr_mult)

    return attr


class DAHead(nn.Layer):
    """Two branches on the last backbone feature, each 3x3 conv -> attention -> 3x3 conv.

    Returns logits at feature resolution: (fused, position branch, channel branch). The fused
    classifier sees the sum of the two branch features before dropout, as in the paper's code.
    ``lr_mult`` multiplies the learning rate of every head parameter (10x in the paper's code).
    """

    def __init__(self, in_channels, num_classes, lr_mult=10.0, dropout=0.1, chunk_size=2048, recompute=False):
        super().__init__()
        inter = in_channels // 4
        attr = _lr(lr_mult)
        self.pam_in = ConvBNReLU(in_channels, inter, param_attr=attr)
        self.cam_in = ConvBNReLU(in_channels, inter, param_attr=attr)
        self.pam = PositionAttention(inter, chunk_size=chunk_size, recompute=recompute, param_attr=attr)
        self.cam = ChannelAttention(param_attr=attr)
        self.pam_out = ConvBNReLU(inter, inter, param_attr=attr)
        self.cam_out = ConvBNReLU(inter, inter, param_attr=attr)
        # Dropout2D draws its mask per call and per sample, so any batch size works.
        self.dropout = nn.Dropout2D(dropout)
        self.cls_fused = nn.Conv2D(inter, num_classes, 1, weight_attr=attr(), bias_attr=attr())
        self.cls_pam = nn.Conv2D(inter, num_classes, 1, weight_attr=attr(), bias_attr=attr())
        self.cls_cam = nn.Conv2D(inter, num_classes, 1, weight_attr=attr(), bias_attr=attr())

    def forward(self, x):
        pam_feat = self.pam_out(self.pam(self.pam_in(x)))
        cam_feat = self.cam_out(self.cam(self.cam_in(x)))
        fused = self.cls_fused(self.dropout(pam_feat + cam_feat))
        return fused, self.cls_pam(self.dropout(pam_feat)), self.cls_cam(self.dropout(cam_feat))


class AuxHead(nn.Layer):
    """The auxiliary FCN head of mmsegmentation / sssegmentation on layer3's output, for a training loss only:
    3x3 conv-BN-ReLU to ``channels``, dropout, 1x1 classifier. [B, C3, h, w] -> [B, num_classes, h, w]."""

    def __init__(self, in_channels, num_classes, channels=256, lr_mult=10.0, dropout=0.1):
        super().__init__()
        attr = _lr(lr_mult)
        self.conv = ConvBNReLU(in_channels, channels, param_attr=attr)
        self.dropout = nn.Dropout2D(dropout)
        self.cls = nn.Conv2D(channels, num_classes, 1, weight_attr=attr(), bias_attr=attr())

    def forward(self, x):
        return self.cls(self.dropout(self.conv(x)))


class DANet(nn.Layer):
    """DANet for semantic segmentation.

    Input: normalised RGB [B, 3, H, W] of any size. In train mode ``forward`` returns three logit
    maps (fused, position, channel), and a fourth (auxiliary) with ``aux_head``, each
    [B, num_classes, H, W]; in eval mode only the fused one. ``config`` holds every architecture
    option, resolved (``build_model(**model.config)`` builds the same model).
    """

    model_name = "danet"  # build_model(model=...) and the checkpoint config

    def __init__(self, num_classes=19, backbone="resnet101", dilated=None, multi_grid=False,
                 multi_dilation=(4, 8, 16), head_lr_mult=10.0, dropout=0.1, chunk_size=2048, recompute=False,
                 output_stride=None, stem="7x7", avg_down=False, halve_first_dilation=True, align_corners=True,
                 align_mode=0, aux_head=False, aux_channels=256, input_norm="imagenet"):
        super().__init__()
        _check_upsampling(align_corners, align_mode)
        if input_norm not in INPUT_NORMS:
            raise UserError(f"unknown input_norm {input_norm!r}: choose {' or '.join(INPUT_NORMS)}")
        self.backbone = ResNet(backbone, dilated, multi_grid, multi_dilation, output_stride=output_stride, stem=stem,
                               avg_down=avg_down, halve_first_dilation=halve_first_dilation)
        self.align_corners, self.align_mode = bool(align_corners), int(align_mode)
        self.head = self._build_head(self.backbone.out_channels, num_classes, head_lr_mult, dropout, chunk_size,
                                     recompute)
        self.aux_head = None
        if aux_head:
            self.aux_head = AuxHead(self.backbone.c3_channels, num_classes, aux_channels, head_lr_mult, dropout)
        stride = self.backbone.output_stride
        self.config = dict(num_classes=num_classes, backbone=backbone, dilated=stride != 32, multi_grid=multi_grid,
                           multi_dilation=list(multi_dilation), head_lr_mult=head_lr_mult, dropout=dropout,
                           output_stride=stride, stem=stem, avg_down=bool(avg_down),
                           halve_first_dilation=bool(halve_first_dilation), align_corners=self.align_corners,
                           align_mode=self.align_mode, aux_head=bool(aux_head), aux_channels=int(aux_channels),
                           input_norm=input_norm, model=self.model_name)

    def _build_head(self, in_channels, num_classes, head_lr_mult, dropout, chunk_size, recompute):
        """The attention head; a family member with another head overrides this (ClusterDANet, DRANet)."""
        return DAHead(in_channels, num_classes, head_lr_mult, dropout, chunk_size, recompute)

    @property
    def output_names(self):
        """The names of the train-mode outputs, in order (the loss and the logs use them)."""
        return ("fused", "position", "channel") + (("aux",) if self.aux_head is not None else ())

    def loss_weights(self, aux_weight=0.4):
        """The loss weight of each train-mode output: the paper's 1:1:1, and ``aux_weight`` for the aux head."""
        return (1.0, 1.0, 1.0) + ((float(aux_weight),) if self.aux_head is not None else ())

    def forward(self, x):
        size = paddle.shape(x)[2:] if not paddle.in_dynamic_mode() else x.shape[2:]
        _, _, c3, c4 = self.backbone(x)
        outputs = self.head(c4)
        if not self.training:
            outputs = outputs[:1]  # only the fused logits are returned: upsample just them (3x less time and memory)
        elif self.aux_head is not None:
            outputs = outputs + (self.aux_head(c3),)  # a training signal only: never run in eval mode
        outputs = [F.interpolate(o, size=size, mode="bilinear", align_corners=self.align_corners,
                                 align_mode=self.align_mode) for o in outputs]
        return tuple(outputs) if self.training else outputs[0]


def _check_upsampling(align_corners, align_mode):
    if align_mode not in (0, 1):
        raise UserError(f"align_mode must be 0 (half-pixel) or 1 (asymmetric), got {align_mode!r}")
    if align_corners and align_mode != 0:
        raise UserError("align_mode=1 applies only with align_corners=False (Paddle ignores it otherwise): "
                        "drop align_mode or set align_corners=False")


MODELS = ("danet", "dranet", "clusterdanet")


def build_model(backbone="resnet101", num_classes=19, dilated=None, multi_grid=False, multi_dilation=(4, 8, 16), *,
                output_stride=None, stem="7x7", avg_down=False, halve_first_dilation=True, align_corners=True,
                align_mode=0, aux_head=False, aux_channels=256, input_norm="imagenet", model="danet", **kwargs):
    """Build DANet; e.g. ``build_model("resnet101", 19, multi_grid=True, multi_dilation=(4, 8, 16))``.

    The defaults are the DANet paper's model. Architecture options, each matching a released model of
    another implementation:

    - ``dilated`` / ``output_stride``: 8 (default; layer3 and layer4 dilated 2 and 4), 16 (layer3
      strided, layer4 dilated 2) or 32 (no dilation). ``dilated=True`` means 8 unless ``output_stride``
      says 16; ``dilated=False`` means 32; a contradiction (``dilated=False, output_stride=8``) is an error.
    - ``multi_grid`` / ``multi_dilation``: layer4's per-block dilations, absolute values (the paper's
      4 8 16; PaddleSeg's relative ``multi_grid`` (1, 2, 4) at output stride 16 is 2 4 8). Needs
      output stride 8 or 16; it replaces ``halve_first_dilation`` for layer4.
    - ``halve_first_dilation`` (True): a dilated stage's first block uses half its dilation (layer3
      1,2,2..; layer4 2,4,4 at stride 8, 1,2,2 at 16), as the paper's code, mmseg and sssegmentation;
      False: every block the full dilation (PaddleSeg).
    - ``stem``: "7x7" (one 7x7/2 conv-BN-ReLU, ``backbone.conv1``), "deep32" (three 3x3 conv-BN-ReLU
      32, 32, 64, the first strided; mmseg ResNetV1c, PaddleSeg ResNet-vd, sssegmentation) or
      "deep64" (64, 64, 128: the official DANet repository's deep stem); deep stems are ``backbone.stem.{0,1,2}``.
    - ``avg_down`` (False): ResNet-D shortcuts: where a block has stride 2, 2x2 average pool then a
      stride-1 1x1 conv-BN (PaddleSeg ResNet-vd); same parameter names as the plain shortcut.
    - ``align_corners`` (True) / ``align_mode`` (0): the final bilinear upsampling of every output, as
      Paddle's ``F.interpolate``: True = corner-aligned (paper, seed port, mmseg 769x769 configs);
      False with mode 0 = half-pixel (PyTorch's ``align_corners=False``: mmseg 512x1024 / ADE / VOC,
      sssegmentation); False with mode 1 = asymmetric, source = destination x scale (PaddleSeg's DANet).
    - ``aux_head`` (False) / ``aux_channels`` (256; sssegmentation 512): an FCN head on layer3
      (``aux_head.conv``, ``aux_head.cls``, head learning rate) whose logits are a fourth train-mode output.
    - ``input_norm`` ("imagenet"): how the model's input is normalised from RGB/255, ImageNet mean/std or
      "half" (mean = std = 0.5, PaddleSeg's). Not a layer: the data pipeline, predict and export read it here.

    ``model`` picks the family member: "danet" (default), "dranet" (compact position and channel attention
    and a cross-level gating decoder, Fu et al., TNNLS 2020) or "clusterdanet" (DANet with a soft k-means
    clustering layer before each attention module; experimental, no published weights). Each declares its
    train-mode outputs (``output_names``) and their loss weights (``loss_weights``).

    Other keyword arguments: ``head_lr_mult``, ``dropout`` (head and auxiliary head), ``chunk_size``,
    ``recompute`` (memory only, no change of the numbers).
    """
    if model not in MODELS:
        raise UserError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    cls = DANet
    if model == "dranet":
        from danet.models.dranet import DRANet as cls
    elif model == "clusterdanet":
        from danet.models.cluster import ClusterDANet as cls
    return cls(num_classes, backbone, dilated, multi_grid, multi_dilation, output_stride=output_stride, stem=stem,
                 avg_down=avg_down, halve_first_dilation=halve_first_dilation, align_corners=align_corners,
                 align_mode=align_mode, aux_head=aux_head, aux_channels=aux_channels, input_norm=input_norm, **kwargs)


BACKBONES = tuple(DEPTHS)
