"""The three modules of DRANet's head (Fu et al., "Scene Segmentation with Dual Relation-aware Attention Network",
TNNLS 2020), ported from junfu1115/DANet ``encoding/nn/dran_att.py`` (commit 766c34e).

- :class:`CompactPositionAttention` (official ``CPAMEnc`` + ``CPAMDec``): every position attends to 50 pooled
  "gathering centers" instead of to every other position (N x 50 instead of N x N).
- :class:`CompactChannelAttention` (official ``ccam_enc`` of ``DranHead`` + ``CCAMDec``): every channel attends
  to 32 reduced channels instead of to every other channel.
- :class:`CrossLevelGatingDecoder` (official ``CLGD``): a stride-4 decoder whose low-level features are gated
  by a sigmoid map computed from both levels.

Both attentions start with ``scale = 0`` (the identity, as DANet's gammas); the decoder's ``gamma`` starts at 1.
Energies and softmaxes run in float32 (see ``danet.models.attention._fp32``) so fp16 AMP cannot overflow them.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from danet.models.attention import _cast, _fp32, _shape
from danet.models.layers import ConvBNReLU

# Output sizes of CPAMEnc's four AdaptiveAvgPool2d: 1 + 4 + 9 + 36 = 50 gathering centers.
CENTER_BINS = (1, 2, 3, 6)
# CLGD's low-level width (``inter_channels = 32`` in dran_att.py, whatever the backbone).
LOW_CHANNELS = 32


def scalar(layer, value, param_attr=None):
    """A learnable [1] parameter starting at ``value`` (the official ``nn.Parameter(torch.zeros(1))`` / ``ones``)."""
    return layer.create_parameter(shape=[1], dtype="float32", attr=param_attr() if param_attr else None,
                                  default_initializer=nn.initializer.Constant(value))


def _attrs(param_attr):
    return (lambda: param_attr()) if param_attr else (lambda: None)


class CompactPositionAttention(nn.Layer):
    """CPAM: x [B, C, H, W] -> x + scale * (values of the centers, weighted by softmax(query . key)).

    Centers: x average-pooled to 1x1, 2x2, 3x3 and 6x6 bins (PyTorch's bins: start floor(i*H/n), end
    ceil((i+1)*H/n), which Paddle's ``adaptive_avg_pool2d`` shares), each bin size through its own 1x1
    conv-BN-ReLU, concatenated in that order -> [B, 50, C]. ``query`` is a biased 1x1 conv on x (C -> C/4);
    ``key`` (C -> C/4) and ``value`` (C -> C) are ``nn.Linear`` on the centers, as the official ``CPAMDec``
    (their weights are the transpose of PyTorch's). The energy has no 1/sqrt(d) scaling.
    """

    def __init__(self, channels, param_attr=None):
        super().__init__()
        attr = _attrs(param_attr)
        self.centers = nn.LayerList([ConvBNReLU(channels, channels, 1, param_attr=param_attr) for _ in CENTER_BINS])
        self.scale = scalar(self, 0.0, param_attr)
        self.query = nn.Conv2D(channels, channels // 4, 1, weight_attr=attr(), bias_attr=attr())
        self.key = nn.Linear(channels, channels // 4, weight_attr=attr(), bias_attr=attr())
        self.value = nn.Linear(channels, channels, weight_attr=attr(), bias_attr=attr())

    def gather(self, x):
        """The gathering centers of x [B, C, H, W]: [B, 50, C] (official ``CPAMEnc`` then ``permute(0, 2, 1)``)."""
        pooled = [conv(F.adaptive_avg_pool2d(x, bins)).flatten(2) for bins, conv in zip(CENTER_BINS, self.centers)]
        return paddle.concat(pooled, axis=2).transpose([0, 2, 1])          # [B, C, 50] -> [B, 50, C]

    def forward(self, x):
        centers = self.gather(x)
        q = self.query(x).flatten(2).transpose([0, 2, 1])                 # [B, N, C/4]
        k, v = self.key(centers), self.value(centers)                      # [B, 50, C/4], [B, 50, C]
        q, k, v = _fp32(q, k, v)
        attn = F.softmax(paddle.bmm(q, k.transpose([0, 2, 1])), axis=-1)  # [B, N, 50], over the centers
        out = paddle.bmm(attn, v).transpose([0, 2, 1])                     # [B, C, N] (official: V^T attn^T)
        out = _cast(out, x.dtype).reshape(_shape(x))                       # [B, C, H, W]
        return self.scale * out + x


class CompactChannelAttention(nn.Layer):
    """CCAM: x [B, C, H, W] -> x + scale * (attn y), attn = softmax(rowmax(E) - E), E = x y^T [B, C, C/16].

    ``reduce`` is the official head's ``ccam_enc`` (1x1 conv-BN-ReLU, C -> C/16); the softmax of the row max
    minus the energy is the official ``CCAMDec``'s (as DANet's CAM).
    """

    def __init__(self, channels, param_attr=None):
        super().__init__()
        self.reduce = ConvBNReLU(channels, channels // 16, 1, param_attr=param_attr)
        self.scale = scalar(self, 0.0, param_attr)

    def forward(self, x):
        a, y = _fp32(x.flatten(2), self.reduce(x).flatten(2))             # [B, C, N], [B, C/16, N]
        energy = paddle.bmm(a, y.transpose([0, 2, 1]))                     # [B, C, C/16]
        # The row max only shifts each softmax row, so its gradient is zero: detached, as in attention.py's CAM.
        energy = energy.max(axis=-1, keepdim=True).detach() - energy
        out = paddle.bmm(F.softmax(energy, axis=-1), y)                    # [B, C, N]
        out = _cast(out, x.dtype).reshape(_shape(x))
        return x + self.scale * out


class CrossLevelGatingDecoder(nn.Layer):
    """CLGD: (low [B, Cl, h, w] at stride 4, high [B, Ch, h', w']) -> [B, out_channels, h, w].

    low' = conv_low(low) (32 channels); high is upsampled to (h, w); g = sigmoid(1x1 biased conv of
    cat[low', high]); then conv(cat[gamma * g * low', high]) -> Ch and a last conv -> ``out_channels``, all
    3x3 conv-BN-ReLU. The official code has Cl = Ch = 256 (ResNet-50/101); here they may differ (ResNet-18/34).
    """

    def __init__(self, low_channels, high_channels, out_channels, align_corners=True, align_mode=0,
                 param_attr=None):
        super().__init__()
        attr = _attrs(param_attr)
        both = LOW_CHANNELS + high_channels
        self.low = ConvBNReLU(low_channels, LOW_CHANNELS, param_attr=param_attr)
        self.fuse = ConvBNReLU(both, high_channels, param_attr=param_attr)
        self.gate = nn.Conv2D(both, 1, 1, weight_attr=attr(), bias_attr=attr())
        self.out = ConvBNReLU(high_channels, out_channels, param_attr=param_attr)
        self.gamma = scalar(self, 1.0, param_attr)
        self.align_corners, self.align_mode = align_corners, align_mode

    def forward(self, low, high):
        low = self.low(low)                                                # [B, 32, h, w]
        size = low.shape[2:] if paddle.in_dynamic_mode() else paddle.shape(low)[2:]
        high = F.interpolate(high, size=size, mode="bilinear", align_corners=self.align_corners,
                             align_mode=self.align_mode)                   # [B, Ch, h, w]
        gate = F.sigmoid(self.gate(paddle.concat([low, high], axis=1)))    # [B, 1, h, w]
        fused = self.fuse(paddle.concat([self.gamma * gate * low, high], axis=1))
        return self.out(fused)
