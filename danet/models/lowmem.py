"""Convolution with a bounded work buffer, for inference on large inputs.

Paddle's CPU convolution unfolds its input (im2col) into a [C * k * k, H' * W'] matrix before one GEMM. For
DANet's head at 1024x2048 (2048 channels, 3x3, 128x256 positions) that buffer is 2.25 GiB, more than all
the activations alive at the time, and a fresh one is faulted in on every call. Without gradients,
:class:`StripConv2D` computes the same outputs in horizontal strips whose buffer stays under
:data:`BUFFER_BYTES`; everything else (training, static graphs, GPUs, small inputs, 1x1 stride-1 or grouped
convolutions) is plain ``nn.Conv2D``, with the same parameters.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

# Small enough for glibc to keep for reuse (see danet.runtime.keep_freed_memory), big enough for fast GEMMs.
BUFFER_BYTES = 32 * 2 ** 20


class StripConv2D(nn.Conv2D):
    """``nn.Conv2D`` that convolves row strips of a large input when no gradient is recorded (same numbers)."""

    def _out_size(self, size, axis):
        reach = self._dilation[axis] * (self._kernel_size[axis] - 1)
        return (size + 2 * self._updated_padding[axis] - reach - 1) // self._stride[axis] + 1

    def _strip_rows(self, x):
        """Output rows per strip, or 0 when the plain convolution is used."""
        if not paddle.in_dynamic_mode() or paddle.is_grad_enabled() or x.ndim != 4 or not x.place.is_cpu_place():
            return 0  # (a GPU convolution does not unfold its input)
        if (self._data_format != "NCHW" or self._groups != 1 or self._padding_mode != "zeros"
                or self._padding_algorithm != "EXPLICIT" or len(self._updated_padding) != 2
                or list(self._kernel_size) == [1, 1] and list(self._stride) == [1, 1]):  # 1x1: no unfolding
            return 0
        _, channels, height, width = x.shape
        out_height = self._out_size(height, 0)
        row_bytes = channels * self._kernel_size[0] * self._kernel_size[1] * self._out_size(width, 1)
        row_bytes *= x.element_size()
        if row_bytes * out_height <= BUFFER_BYTES:
            return 0
        strips = -(-out_height // max(1, BUFFER_BYTES // row_bytes))
        return -(-out_height // strips)  # as many strips as needed, of equal height

    def forward(self, x):
        rows = self._strip_rows(x)
        if not rows:
            return nn.Conv2D.forward(self, x)  # not super(): Paddle 2.6 to_static cannot convert it
        pad_h, pad_w = self._updated_padding
        stride = self._stride[0]
        reach = self._dilation[0] * (self._kernel_size[0] - 1)  # input rows an output row needs, beyond one
        height = x.shape[2]
        parts = []
        for start in range(0, self._out_size(height, 0), rows):
            stop = min(start + rows, self._out_size(height, 0))
            # Output row r reads input rows r * stride - pad_h + (0 ... reach); rows outside the image are padding.
            first, last = start * stride - pad_h, (stop - 1) * stride - pad_h + reach
            top, bottom = max(0, -first), max(0, last - (height - 1))
            strip = x[:, :, max(0, first):min(height, last + 1)]
            parts.append(F.conv2d(strip, self.weight, self.bias, stride=self._stride,
                                  padding=[top, bottom, pad_w, pad_w], dilation=self._dilation, groups=1,
                                  data_format="NCHW"))
        return paddle.concat(parts, axis=2)
