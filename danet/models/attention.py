"""The two attention modules of DANet (Fu et al., CVPR 2019, Sec. 3.2 and 3.3).

Both start with ``gamma = 0``, so a fresh module is the identity and attention is blended in as
training moves gamma away from zero.
"""
import functools
import inspect

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def _fp32(*tensors):
    """Cast to float32: under fp16 AMP the unscaled energies overflow 65504 (they sum over C or N)."""
    return [t if t.dtype == paddle.float32 else t.astype("float32") for t in tensors]


def _cast(tensor, dtype):
    """``astype`` that is free when nothing changes (Paddle 2.6's astype copies even to the same dtype)."""
    return tensor if tensor.dtype == dtype else tensor.astype(dtype)


def _contiguous(tensor):
    """A dense copy of a strided view, made once (else every chunk's bmm would make its own)."""
    is_contiguous = getattr(tensor, "is_contiguous", None)
    return tensor if is_contiguous is None or is_contiguous() else tensor.contiguous()


def _shape(x):
    """The shape to reshape back to: a list in dygraph, a tensor in a Program (sizes unknown when it is built)."""
    return x.shape if paddle.in_dynamic_mode() else paddle.shape(x)


def _gamma(layer, param_attr):
    return layer.create_parameter(
        shape=[1], dtype="float32", attr=param_attr() if param_attr else None,
        default_initializer=nn.initializer.Constant(0.0))


@functools.lru_cache(maxsize=None)
def sdpa_with_scale():
    """``F.scaled_dot_product_attention`` if it takes ``scale`` (Paddle 3.x), else None (Paddle 2.6 has no scale,
    and DANet's energy is unscaled: 1/sqrt(d) would change the model)."""
    fn = getattr(F, "scaled_dot_product_attention", None)
    try:
        return fn if fn is not None and "scale" in inspect.signature(fn).parameters else None
    except (TypeError, ValueError):
        return None


def _on_gpu(x):
    return x.place.is_gpu_place()


class PositionAttention(nn.Layer):
    """Position attention (PAM): every position attends to every other one.

    energy = Q^T K over the N = H*W positions with no 1/sqrt(d) scaling (as in the paper's code),
    softmax over keys, out = gamma * (V attn^T) + x.

    Memory: the N x N map is the whole cost (4 GiB fp32 for a 1024x2048 image at output stride 8).
    On a GPU with Paddle 3.x, ``F.scaled_dot_product_attention(scale=1.0)`` computes it without the
    map (memory-efficient kernel). Elsewhere ``chunk_size`` queries are processed at a time when
    gradients are not needed, which gives the same numbers with an N x chunk_size map; ``recompute``
    does the same in training by recomputing each chunk in the backward pass instead of keeping its
    softmax.
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

    def path(self, x):
        """How ``forward(x)`` computes the attention: 'sdpa' (dygraph on a GPU with Paddle 3.x), 'chunked' (other
        dygraph) or 'plain' (static graph: one N x N map, as the Program is built before N is known)."""
        if not paddle.in_dynamic_mode():
            return "plain"
        return "sdpa" if _on_gpu(x) and sdpa_with_scale() is not None else "chunked"

    def forward(self, x):
        q = self.query(x).flatten(2)  # [B, Ck, N]
        k = self.key(x).flatten(2)    # [B, Ck, N]
        v = self.value(x).flatten(2)  # [B, C, N]
        q, k, v = _fp32(q, k, v)
        # Positions first: attn @ v^T needs no transposed copy of any N x n map.
        q = q.transpose([0, 2, 1])    # [B, N, Ck]
        v = v.transpose([0, 2, 1])    # [B, N, C]
        path = self.path(x)
        if path == "sdpa":
            out = _sdpa(q, k, v)
        elif path == "chunked":
            out = self._chunked(_contiguous(q), k, _contiguous(v))
        else:
            out = attend(q, k, v)
        out = _cast(out.transpose([0, 2, 1]), x.dtype).reshape(_shape(x))  # [B, C, H, W]
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
        return paddle.concat(parts, axis=1)


def attend(q, k, v):
    """softmax(q k) v: q [B, n, Ck], k [B, Ck, N], v [B, N, C] -> [B, n, C]."""
    energy = paddle.bmm(q, k)                          # [B, n, N]
    if paddle.in_dynamic_mode() and not paddle.is_grad_enabled():
        attn = F.softmax_(energy, axis=-1)             # no graph to keep: overwrite the energy, one map not two
    else:
        attn = F.softmax(energy, axis=-1)
    return paddle.bmm(attn, v)


def _sdpa(q, k, v):
    """softmax(q k) v by F.scaled_dot_product_attention; layout [B, L, heads, D] with one head."""
    sdpa = sdpa_with_scale()
    k = k.transpose([0, 2, 1])                         # [B, N, Ck]
    # The energies stay fp32 under AMP: the kernel must not get fp16 casts of q and k (O1 white-lists attention).
    with paddle.amp.auto_cast(enable=False):
        out = sdpa(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), scale=1.0)
    return out.squeeze(2)                              # [B, N, C]


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
        # The row max only shifts each softmax row, so its gradient is exactly zero: detaching it gives the same
        # numbers and skips Paddle's slow max backward (measured: 1/6 of a ResNet-50 training step on the CPU).
        energy = energy.max(axis=-1, keepdim=True).detach() - energy
        out = paddle.bmm(F.softmax(energy, axis=-1), a)                # [B, C, N]
        out = _cast(out, x.dtype).reshape(_shape(x))
        return self.gamma * out + x
