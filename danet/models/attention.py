"""The two attention modules of DANet (Fu et al., CVPR 2019, Sec. 3.2 and 3.3).

Both start with ``gamma = 0``, so a fresh module is the identity and attention is blended in as
training moves gamma away from zero.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def _fp32(*tensors):
    """Cast to float32: under fp16 AMP the unscaled energies overflow 65504 (they sum over C or N)."""
    return [t if t.dtype == paddle.float32 else t.astype("float32") for t in tensors]


def _gamma(layer, param_attr):
    return layer.create_parameter(
        shape=[1], dtype="float32", attr=param_attr() if param_attr else None,
        default_initializer=nn.initializer.Constant(0.0))


class PositionAttention(nn.Layer):
    """Position attention (PAM): every position attends to every other one.

    energy = Q^T K over the N = H*W positions with no 1/sqrt(d) scaling (as in the paper's code),
    softmax over keys, out = gamma * (V attn^T) + x.

    Memory: the N x N map is the whole cost (4 GiB fp32 for a 1024x2048 image at output stride 8).
    ``chunk_size`` queries are processed at a time when gradients are not needed, which gives the
    same numbers with an N x chunk_size map; ``recompute`` does the same in training by recomputing
    each chunk in the backward pass instead of keeping its softmax.
    """

    def __init__(self, in_channels, key_channels=None, chunk_size=2048, recompute=False, param_attr=None):
        super().__init__()
        key_channels = key_channels or in_channels // 8
        attr = (lambda: param_attr()) if param_attr else (lambda: None)
        self.query = nn.Conv2D(in_channels, key_channels, 1, weight_attr=attr(), bias_attr=attr())
        self.key = nn.Conv2D(in_channels, key_channels, 1, weight_attr=attr(), bias_attr=attr())
        self.value = nn.Conv2D(in_channels, in_channels, 1, weight_attr=attr(), bias_attr=attr())
        self.gamma = _gamma(self, param_attr)
        self.chunk_size = chunk_size
        self.recompute = recompute

    def forward(self, x):
        q = self.query(x).flatten(2)  # [B, Ck, N]
        k = self.key(x).flatten(2)    # [B, Ck, N]
        v = self.value(x).flatten(2)  # [B, C, N]
        q, k, v = _fp32(q, k, v)
        q = q.transpose([0, 2, 1])    # [B, N, Ck]
        if paddle.in_dynamic_mode():
            out = self._chunked(q, k, v)
        else:  # static graph: N is unknown when the Program is built
            out = attend(q, k, v)
        out = out.astype(x.dtype).reshape(paddle.shape(x))  # [B, C, H, W]
        return self.gamma * out + x

    def _chunked(self, q, k, v):
        n = q.shape[1]
        if n <= self.chunk_size:
            return attend(q, k, v)
        needs_grad = paddle.is_grad_enabled() and not (q.stop_gradient and k.stop_gradient and v.stop_gradient)
        if needs_grad and not self.recompute:
            # Chunking alone saves nothing when autograd keeps every chunk's softmax.
            return attend(q, k, v)
        parts = []
        for start in range(0, n, self.chunk_size):
            q_chunk = q[:, start:start + self.chunk_size]
            if needs_grad:
                from paddle.distributed.fleet.utils import recompute
                parts.append(recompute(attend, q_chunk, k, v))
            else:
                parts.append(attend(q_chunk, k, v))
        return paddle.concat(parts, axis=2)


def attend(q, k, v):
    """softmax(q k) applied to v: q [B, n, Ck], k [B, Ck, N], v [B, C, N] -> [B, C, n]."""
    attn = F.softmax(paddle.bmm(q, k), axis=-1)        # [B, n, N]
    return paddle.bmm(v, attn.transpose([0, 2, 1]))    # [B, C, n]


class ChannelAttention(nn.Layer):
    """Channel attention (CAM): every channel attends to every other one.

    energy = A A^T over channels; the softmax is taken of (row max - energy), which the paper's
    code uses for numerical range; out = gamma * (attn A) + x.
    """

    def __init__(self, param_attr=None):
        super().__init__()
        self.gamma = _gamma(self, param_attr)

    def forward(self, x):
        (a,) = _fp32(x.flatten(2))                                     # [B, C, N]
        energy = paddle.bmm(a, a.transpose([0, 2, 1]))                 # [B, C, C]
        energy = energy.max(axis=-1, keepdim=True) - energy
        out = paddle.bmm(F.softmax(energy, axis=-1), a)                # [B, C, N]
        out = out.astype(x.dtype).reshape(paddle.shape(x))
        return self.gamma * out + x
