"""DANet: a dilated ResNet and the dual attention head (Fu et al., CVPR 2019)."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from danet.models.attention import ChannelAttention, PositionAttention
from danet.models.resnet import DEPTHS, ResNet, conv_bn


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch, out_ch, param_attr):
        super().__init__(*conv_bn(in_ch, out_ch, 3, param_attr=param_attr), nn.ReLU())


class DAHead(nn.Layer):
    """Two branches on the last backbone feature, each 3x3 conv -> attention -> 3x3 conv.

    Returns logits at feature resolution: (fused, position branch, channel branch). The fused
    classifier sees the sum of the two branch features before dropout, as in the paper's code.
    ``lr_mult`` multiplies the learning rate of every head parameter (10x in the paper's code).
    """

    def __init__(self, in_channels, num_classes, lr_mult=10.0, dropout=0.1, chunk_size=2048, recompute=False):
        super().__init__()
        inter = in_channels // 4

        def attr():
            return paddle.ParamAttr(learning_rate=lr_mult)

        self.pam_in = ConvBNReLU(in_channels, inter, attr)
        self.cam_in = ConvBNReLU(in_channels, inter, attr)
        self.pam = PositionAttention(inter, chunk_size=chunk_size, recompute=recompute, param_attr=attr)
        self.cam = ChannelAttention(param_attr=attr)
        self.pam_out = ConvBNReLU(inter, inter, attr)
        self.cam_out = ConvBNReLU(inter, inter, attr)
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


class DANet(nn.Layer):
    """DANet for semantic segmentation.

    Input: normalised RGB [B, 3, H, W] of any size. In train mode ``forward`` returns three logit
    maps (fused, position, channel), each [B, num_classes, H, W]; in eval mode only the fused one.
    """

    def __init__(self, num_classes=19, backbone="resnet101", dilated=True, multi_grid=False,
                 multi_dilation=(4, 8, 16), head_lr_mult=10.0, dropout=0.1, chunk_size=2048, recompute=False):
        super().__init__()
        self.config = dict(num_classes=num_classes, backbone=backbone, dilated=dilated, multi_grid=multi_grid,
                           multi_dilation=list(multi_dilation), head_lr_mult=head_lr_mult, dropout=dropout)
        self.backbone = ResNet(backbone, dilated, multi_grid, multi_dilation)
        self.head = DAHead(self.backbone.out_channels, num_classes, head_lr_mult, dropout, chunk_size, recompute)

    def forward(self, x):
        size = paddle.shape(x)[2:] if not paddle.in_dynamic_mode() else x.shape[2:]
        outputs = self.head(self.backbone(x)[-1])
        if not self.training:
            outputs = outputs[:1]  # only the fused logits are returned: upsample just them (3x less time and memory)
        outputs = [F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outputs]
        return tuple(outputs) if self.training else outputs[0]


def build_model(backbone="resnet101", num_classes=19, dilated=True, multi_grid=False, multi_dilation=(4, 8, 16),
                **kwargs):
    """Build DANet; e.g. ``build_model("resnet101", 19, multi_grid=True, multi_dilation=(4, 8, 16))``.

    Extra keyword arguments go to :class:`DANet` (``head_lr_mult``, ``dropout``, ``chunk_size``,
    ``recompute``).
    """
    return DANet(num_classes, backbone, dilated, multi_grid, multi_dilation, **kwargs)


BACKBONES = tuple(DEPTHS)
