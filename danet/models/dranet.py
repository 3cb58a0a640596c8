"""DRANet: DANet's successor with compact attention and a gating decoder (Fu et al., "Scene Segmentation with
Dual Relation-aware Attention Network", TNNLS 2020; 81.63 mIoU on Cityscapes val as released).

Ported from junfu1115/DANet (commit 766c34e): ``encoding/models/sseg/dran.py`` (``Dran``, ``DranHead``),
``encoding/nn/dran_att.py`` (the modules, see :mod:`danet.models.dran_attention`) and
``encoding/models/sseg/base.py`` (``BaseNet.base_forward``: the backbone's c1 and c4 feed the head, c3 the
auxiliary classifier; bilinear upsampling with ``align_corners=True``). The released ``dran101.pth.tar`` is a
ResNet-101 with the deep 64-64-128 stem, multi-grid 4 8 16 at output stride 8 and the auxiliary classifier.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from danet.data.transforms import INPUT_NORMS
from danet.errors import UserError
from danet.models.danet import AuxHead, _check_upsampling, _lr
from danet.models.dran_attention import CompactChannelAttention, CompactPositionAttention, CrossLevelGatingDecoder
from danet.models.layers import ConvBNReLU
from danet.models.resnet import ResNet


class DRAHead(nn.Layer):
    """The official ``DranHead`` plus ``cls_seg``: (c1 [B, C1, h1, w1], c4 [B, C4, h, w]) -> logits at c1's size.

    Two branches on c4, each 3x3 conv-BN-ReLU to C4/4 -> compact attention -> 3x3 conv-BN-ReLU; their
    concatenation (position branch first) -> 3x3 conv-BN-ReLU to C4/8 (``fuse``); the gating decoder with c1
    (-> C4/8 channels at stride 4); dropout; 1x1 biased classifier. ``lr_mult`` multiplies the learning rate
    of every parameter here, the classifier's included.
    """

    def __init__(self, in_channels, low_channels, num_classes, lr_mult=10.0, dropout=0.1, align_corners=True,
                 align_mode=0):
        super().__init__()
        inter = in_channels // 4  # 512 for ResNet-50/101
        attr = _lr(lr_mult)
        # (creation order: the official DranHead's, CPAM branch first)
        self.cpam_in = ConvBNReLU(in_channels, inter, param_attr=attr)
        self.cpam = CompactPositionAttention(inter, param_attr=attr)
        self.cpam_out = ConvBNReLU(inter, inter, param_attr=attr)
        self.ccam_in = ConvBNReLU(in_channels, inter, param_attr=attr)
        self.ccam = CompactChannelAttention(inter, param_attr=attr)
        self.ccam_out = ConvBNReLU(inter, inter, param_attr=attr)
        self.fuse = ConvBNReLU(2 * inter, inter // 2, param_attr=attr)
        self.decoder = CrossLevelGatingDecoder(low_channels, inter // 2, inter // 2, align_corners, align_mode,
                                               param_attr=attr)
        # Dropout2D draws its mask per call and per sample, so any batch size works.
        self.dropout = nn.Dropout2D(dropout)
        self.cls = nn.Conv2D(inter // 2, num_classes, 1, weight_attr=attr(), bias_attr=attr())

    def forward(self, c1, c4):
        cpam = self.cpam_out(self.cpam(self.cpam_in(c4)))                  # [B, C4/4, h, w]
        ccam = self.ccam_out(self.ccam(self.ccam_in(c4)))                  # [B, C4/4, h, w]
        fused = self.fuse(paddle.concat([cpam, ccam], axis=1))             # [B, C4/8, h, w]
        return self.cls(self.dropout(self.decoder(c1, fused)))            # [B, classes, h1, w1]


class DRANet(nn.Layer):
    """DRANet for semantic segmentation, with the keyword arguments of :class:`danet.models.danet.DANet`.

    Input: normalised RGB [B, 3, H, W] of any size. Train mode returns ``(main,)`` or, with ``aux_head``,
    ``(main, aux)``, each [B, num_classes, H, W]; eval mode returns the main logits only (the auxiliary head
    never runs). ``chunk_size`` and ``recompute`` are accepted for a uniform interface and unused: no map here
    is N x N (the largest is N x 50). ``aux_head`` with ``aux_channels=256`` is the official ``cls_aux``
    (3x3 conv-BN-ReLU on c3, dropout, 1x1 classifier). ``align_corners`` / ``align_mode`` apply to the decoder's
    upsampling as well as to the outputs' (the official code: True for both). ``config`` rebuilds the model
    through ``build_model``.
    """

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
        c4 = self.backbone.out_channels
        # c1 (layer1) has 64 x expansion channels, c4 (layer4) 512 x expansion: 256 for ResNet-50/101.
        self.head = DRAHead(c4, c4 // 8, num_classes, head_lr_mult, dropout, self.align_corners, self.align_mode)
        self.aux_head = None
        if aux_head:
            self.aux_head = AuxHead(self.backbone.c3_channels, num_classes, aux_channels, head_lr_mult, dropout)
        stride = self.backbone.output_stride
        self.config = dict(num_classes=num_classes, backbone=backbone, dilated=stride != 32, multi_grid=multi_grid,
                           multi_dilation=list(multi_dilation), head_lr_mult=head_lr_mult, dropout=dropout,
                           output_stride=stride, stem=stem, avg_down=bool(avg_down),
                           halve_first_dilation=bool(halve_first_dilation), align_corners=self.align_corners,
                           align_mode=self.align_mode, aux_head=bool(aux_head), aux_channels=int(aux_channels),
                           input_norm=input_norm, model="dranet")

    @property
    def output_names(self):
        """The names of the train-mode outputs, in order (the loss and the logs use them)."""
        return ("main", "aux") if self.aux_head is not None else ("main",)

    def loss_weights(self, aux_weight=0.4):
        """The loss weight of each train-mode output: 1 for the main logits, ``aux_weight`` for the aux head
        (the official ``SegmentationLosses``: CE(main) + aux_weight * CE(aux); its train.py default is 0.2)."""
        return (1.0, float(aux_weight)) if self.aux_head is not None else (1.0,)

    def forward(self, x):
        size = x.shape[2:] if paddle.in_dynamic_mode() else paddle.shape(x)[2:]
        c1, _, c3, c4 = self.backbone(x)
        outputs = [self.head(c1, c4)]                                      # [B, classes, H/4, W/4]
        if self.training and self.aux_head is not None:
            outputs.append(self.aux_head(c3))  # a training signal only: never run in eval mode
        outputs = [F.interpolate(o, size=size, mode="bilinear", align_corners=self.align_corners,
                                 align_mode=self.align_mode) for o in outputs]
        return tuple(outputs) if self.training else outputs[0]
