"""Dilated ResNet backbones (18/34/50/101/152) with multi-grid, as in the DANet paper's code.

The stem is one 7x7/2 convolution and a 3x3/2 max-pool; Bottleneck blocks put the stride on the
3x3 convolution (ResNet v1.5). With ``dilated=True`` the output stride is 8: layer3 and layer4 keep
stride 1 and use dilation 2 and 4 instead (the first block of each uses half of that, as in the
original DANet code), and ``multi_grid`` gives layer4's blocks the dilations in ``multi_dilation``.
"""
import paddle.nn as nn

from danet.errors import UserError
from danet.models.lowmem import StripConv2D

DEPTHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}


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


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = conv_bn(in_ch, planes, 3, stride, dilation)
        self.conv2 = conv_bn(planes, planes, 3, 1, dilation)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv1(x))
        return self.relu(self.conv2(out) + identity)


class Bottleneck(nn.Layer):
    expansion = 4

    def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = conv_bn(in_ch, planes, 1)
        self.conv2 = conv_bn(planes, planes, 3, stride, dilation)
        self.conv3 = conv_bn(planes, planes * 4, 1)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.relu(self.conv3(out) + identity)


def layer_dilations(num_blocks, dilation, multi_grid=None):
    """Per-block dilations of one stage: the first block uses half (2 -> 1, 4 -> 2), or the grid."""
    if multi_grid is not None:
        return list(multi_grid)
    first = {1: 1, 2: 1, 4: 2}.get(dilation, dilation)
    return [first] + [dilation] * (num_blocks - 1)


class ResNet(nn.Layer):
    """ResNet feature extractor; ``forward`` returns the four stage outputs (c1, c2, c3, c4)."""

    def __init__(self, depth="resnet101", dilated=True, multi_grid=False, multi_dilation=(4, 8, 16)):
        super().__init__()
        if depth not in DEPTHS:
            raise UserError(f"unknown backbone {depth!r}: choose one of {', '.join(DEPTHS)}")
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        grid = None
        if multi_grid:
            if not dilated:
                raise UserError("--multi_grid needs --dilated (multi-grid dilations apply to the stride-1 layer4)")
            grid = [int(d) for d in multi_dilation]
            if len(grid) != blocks[3] or min(grid) < 1:
                raise UserError(f"--multi_dilation needs {blocks[3]} positive values for {depth} "
                                f"(one per layer4 block), got {list(multi_dilation)}")
        self.out_channels = 512 * block.expansion
        self.in_ch = 64
        self.conv1 = conv_bn(3, 64, 7, stride=2)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        s3, d3, s4, d4 = (1, 2, 1, 4) if dilated else (2, 1, 2, 1)
        self.layer1 = self._make_layer(block, 64, blocks[0], 1, layer_dilations(blocks[0], 1))
        self.layer2 = self._make_layer(block, 128, blocks[1], 2, layer_dilations(blocks[1], 1))
        self.layer3 = self._make_layer(block, 256, blocks[2], s3, layer_dilations(blocks[2], d3))
        self.layer4 = self._make_layer(block, 512, blocks[3], s4, layer_dilations(blocks[3], d4, grid))

    def _make_layer(self, block, planes, num_blocks, stride, dilations):
        downsample = None
        if stride != 1 or self.in_ch != planes * block.expansion:
            downsample = conv_bn(self.in_ch, planes * block.expansion, 1, stride)
        layers = [block(self.in_ch, planes, stride, dilations[0], downsample)]
        self.in_ch = planes * block.expansion
        layers += [block(self.in_ch, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.conv1(x)))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4
