"""Dilated ResNet backbones (18/34/50/101/152) with multi-grid, as in the DANet paper's code, and the variants
other DANet implementations use.

By default the stem is one 7x7/2 convolution and a 3x3/2 max-pool; Bottleneck blocks put the stride on the
3x3 convolution (ResNet v1.5) and shortcuts are strided 1x1 convolutions. The output stride is 8: layer3 and
layer4 keep stride 1 and use dilation 2 and 4 instead (the first block of each uses half of that, as in the
original DANet code), and ``multi_grid`` gives layer4's blocks the dilations in ``multi_dilation``.
The variants (deep 3x3 stems, ResNet-D average-pool shortcuts, output stride 16 or 32, no halved first
dilation) are described in :func:`danet.models.danet.build_model`.
"""
import paddle.nn as nn

from danet.errors import UserError
from danet.models.layers import STEMS, conv_bn, deep_stem, shortcut

__all__ = ["DEPTHS", "STEMS", "OUTPUT_STRIDES", "ResNet", "conv_bn", "layer_dilations", "out_channels",
           "resolve_output_stride"]

DEPTHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}



def out_channels(depth):
    """Channels of layer4's output (the head's input): 512 for ResNet-18/34, 2048 for the bottleneck depths."""
    return 512 if DEPTHS.get(depth, ("bottleneck",))[0] == "basic" else 2048


# output stride -> ((stride, dilation) of layer3, (stride, dilation) of layer4); layer1 is (1, 1), layer2 (2, 1).
OUTPUT_STRIDES = {
    8: ((1, 2), (1, 4)),
    16: ((2, 1), (1, 2)),
    32: ((2, 1), (2, 1)),
}


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.dilation = dilation
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
        self.dilation = dilation
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


def layer_dilations(num_blocks, dilation, multi_grid=None, halve_first=True):
    """Per-block dilations of one stage: the grid if given, else ``dilation`` for every block except that the
    first uses half of it (2 -> 1, 4 -> 2) when ``halve_first`` (DANet, mmseg ``contract_dilation``)."""
    if multi_grid is not None:
        return list(multi_grid)
    first = max(1, dilation // 2) if halve_first else dilation
    return [first] + [dilation] * (num_blocks - 1)


def resolve_output_stride(dilated=None, output_stride=None):
    """The output stride asked for by ``dilated`` (the older flag: True = 8, False = 32) and ``output_stride``
    (8, 16 or 32); None means not given, and both None means 8. ``dilated=True`` agrees with 8 and 16
    (both dilate), ``dilated=False`` only with 32; a contradiction is a UserError."""
    if output_stride is None:
        return 32 if dilated is False else 8
    if output_stride not in OUTPUT_STRIDES:
        raise UserError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {output_stride!r}")
    if dilated is not None and bool(dilated) != (output_stride != 32):
        raise UserError(f"dilated={dilated} contradicts output_stride={output_stride} (a dilated backbone has "
                        "output stride 8 or 16, an undilated one 32): give only output_stride")
    return output_stride


class ResNet(nn.Layer):
    """ResNet feature extractor; ``forward`` returns the four stage outputs (c1, c2, c3, c4).

    Strides: c1 4, c2 8, c3 min(output_stride, 16), c4 ``output_stride``; ``c3_channels`` and
    ``out_channels`` are the channels of c3 and c4. Options as in :func:`danet.models.danet.build_model`.
    """

    def __init__(self, depth="resnet101", dilated=None, multi_grid=False, multi_dilation=(4, 8, 16),
                 output_stride=None, stem="7x7", avg_down=False, halve_first_dilation=True):
        super().__init__()
        if depth not in DEPTHS:
            raise UserError(f"unknown backbone {depth!r}: choose one of {', '.join(DEPTHS)}")
        if stem not in STEMS:
            raise UserError(f"unknown stem {stem!r}: choose one of {', '.join(STEMS)}")
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.output_stride = resolve_output_stride(dilated, output_stride)
        grid = _grid(multi_grid, multi_dilation, self.output_stride, depth, blocks[3])
        self.out_channels = 512 * block.expansion
        self.c3_channels = 256 * block.expansion
        self.avg_down = avg_down
        self.deep_stem = STEMS[stem] is not None
        if self.deep_stem:
            self.stem = deep_stem(STEMS[stem])  # [B, 3, H, W] -> [B, 64 or 128, H/2, W/2]
            self.in_ch = STEMS[stem][-1]
        else:
            self.conv1 = conv_bn(3, 64, 7, stride=2)
            self.relu = nn.ReLU()
            self.in_ch = 64
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        (s3, d3), (s4, d4) = OUTPUT_STRIDES[self.output_stride]
        halve = halve_first_dilation
        self.layer1 = self._make_layer(block, 64, blocks[0], 1, layer_dilations(blocks[0], 1))
        self.layer2 = self._make_layer(block, 128, blocks[1], 2, layer_dilations(blocks[1], 1))
        self.layer3 = self._make_layer(block, 256, blocks[2], s3, layer_dilations(blocks[2], d3, None, halve))
        self.layer4 = self._make_layer(block, 512, blocks[3], s4, layer_dilations(blocks[3], d4, grid, halve))

    def _make_layer(self, block, planes, num_blocks, stride, dilations):
        downsample = None
        if stride != 1 or self.in_ch != planes * block.expansion:
            # (made before the blocks: static Programs number parameters in creation order, checkpoints rely on it)
            downsample = shortcut(self.in_ch, planes * block.expansion, stride, self.avg_down)
        layers = [block(self.in_ch, planes, stride, dilations[0], downsample)]
        self.in_ch = planes * block.expansion
        layers += [block(self.in_ch, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.stem(x) if self.deep_stem else self.relu(self.conv1(x))
        x = self.maxpool(x)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


def _grid(multi_grid, multi_dilation, output_stride, depth, num_blocks):
    """layer4's multi-grid dilations (absolute values, one per block), or None without multi-grid."""
    if not multi_grid:
        return None
    if output_stride == 32:
        raise UserError("--multi_grid needs a dilated backbone (output stride 8 or 16): its dilations apply to the "
                        "stride-1 layer4")
    grid = [int(d) for d in multi_dilation]
    if len(grid) != num_blocks or min(grid) < 1:
        raise UserError(f"--multi_dilation needs {num_blocks} positive values for {depth} "
                        f"(one per layer4 block), got {list(multi_dilation)}")
    return grid
