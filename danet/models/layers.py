"""Small building blocks shared by the backbone and the heads: conv-BN(-ReLU), the stems, the shortcuts.

The stems and shortcuts exist in the variants other DANet implementations use (see ``STEMS`` and
:func:`shortcut`), so their checkpoints can be loaded into this model exactly.
"""
import paddle.nn as nn

from danet.models.lowmem import StripConv2D


def conv_bn(in_ch, out_ch, kernel, stride=1, dilation=1, param_attr=None):
    """Conv (no bias) + BatchNorm; padding keeps the size for odd kernels at any dilation."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        StripConv2D(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation,
                    weight_attr=param_attr() if param_attr else None, bias_attr=False),
        nn.BatchNorm2D(out_ch, momentum=0.9, epsilon=1e-5,
                       weight_attr=param_attr() if param_attr else None,
                       bias_attr=param_attr() if param_attr else None),
    )


class ConvBNReLU(nn.Sequential):
    """``conv_bn`` then ReLU; parameters named ``0.weight`` (conv) and ``1.*`` (BN), as in ``conv_bn``."""

    def __init__(self, in_ch, out_ch, kernel=3, stride=1, param_attr=None):
        super().__init__(*conv_bn(in_ch, out_ch, kernel, stride, param_attr=param_attr), nn.ReLU())


# stem name -> channels of its three 3x3 convolutions (the first one strided), or None for one 7x7/2 conv.
STEMS = {
    "7x7": None,             # ResNet as published, the DANet paper's code with --no-deepstem, the seed port
    "deep32": (32, 32, 64),  # mmsegmentation ResNetV1c, PaddleSeg ResNet-vd, sssegmentation "conv3x3stem"
    "deep64": (64, 64, 128),  # the official DANet repository's default deep stem: layer1 then sees 128 channels
}


def deep_stem(channels):
    """Three 3x3 conv-BN-ReLU, the first with stride 2: [B, 3, H, W] -> [B, channels[-1], H/2, W/2]."""
    ins = (3,) + tuple(channels[:-1])
    return nn.Sequential(*[ConvBNReLU(i, o, 3, stride=2 if n == 0 else 1)
                           for n, (i, o) in enumerate(zip(ins, channels))])


def shortcut(in_ch, out_ch, stride, avg_down):
    """The projection shortcut of a residual block whose shape changes.

    Plain: a strided 1x1 conv-BN, which reads only one pixel of every 2x2. ``avg_down`` (ResNet-D, "vd"):
    where ``stride > 1``, a 2x2/2 average pool (``ceil_mode``, padding excluded from the mean, as in
    PaddleSeg's ResNet-vd and PyTorch's ``count_include_pad=False``) and then a stride-1 1x1 conv-BN, so every
    input pixel counts. At stride 1 (layer1, dilated stages) both are the same plain 1x1 conv-BN.
    The pool holds no parameters and is registered as ``pool``: the conv and BN keep the names ``0`` and
    ``1`` with or without it.
    """
    if not (avg_down and stride > 1):
        return conv_bn(in_ch, out_ch, 1, stride)
    pool = nn.AvgPool2D(kernel_size=stride, stride=stride, ceil_mode=True, exclusive=True)
    conv, bn = conv_bn(in_ch, out_ch, 1, 1)
    return nn.Sequential(("pool", pool), ("0", conv), ("1", bn))
