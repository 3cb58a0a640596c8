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

from danet.models.danet import DANet, _lr
from danet.models.dran_attention import CompactChannelAttention, CompactPositionAttention, CrossLevelGatingDecoder
from danet.models.layers import ConvBNReLU


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


class DRANet(DANet):
    """DRANet for semantic segmentation: DANet's backbone, auxiliary head, settings and config, another head.

    Input: normalised RGB [B, 3, H, W] of any size. Train mode returns ``(main,)`` or, with ``aux_head``,
    ``(main, aux)``, each [B, num_classes, H, W]; eval mode returns the main logits only (the auxiliary head
    never runs). ``chunk_size`` and ``recompute`` are accepted for a uniform interface and unused: no map here
    is N x N (the largest is N x 50). ``aux_head`` with ``aux_channels=256`` is the official ``cls_aux``
    (3x3 conv-BN-ReLU on c3, dropout, 1x1 classifier). ``align_corners`` / ``align_mode`` apply to the decoder's
    upsampling as well as to the outputs' (the official code: True for both). ``config`` rebuilds the model
    through ``build_model``.
    """

    model_name = "dranet"

    def _build_head(self, in_channels, num_classes, head_lr_mult, dropout, chunk_size, recompute):
        # c1 (layer1) has 64 x expansion channels, c4 (layer4) 512 x expansion: 256 for ResNet-50/101.
        return DRAHead(in_channels, in_channels // 8, num_classes, head_lr_mult, dropout, self.align_corners,
                       self.align_mode)

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
