"""Convolution with a bounded work buffer, for whole-image inference on large inputs.

Paddle's CPU convolution unfolds its input (im2col) into a [C * k * k, H * W] matrix before one GEMM. For
DANet's head at 1024x2048 (2048 channels, 3x3, 128x256 positions) that buffer is 2.25 GiB, more than all
the activations alive at the time. Without gradients, :class:`StripConv2D` computes the same outputs in
horizontal strips whose buffer stays under :data:`BUFFER_BYTES`; everything else (training, static graphs,
small inputs, strided or grouped convolutions) is plain ``nn.Conv2D``, with the same parameters.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

BUFFER_BYTES = 256 * 2 ** 20


class StripConv2D(nn.Conv2D):
    """``nn.Conv2D`` that convolves row strips of a large input when no gradient is recorded (same numbers)."""

    def _strip_rows(self, x):
        """Output rows per strip, or 0 when the plain convolution is used."""
        if not paddle.in_dynamic_mode() or paddle.is_grad_enabled() or x.ndim != 4:
            return 0
        if (self._data_format != "NCHW" or self._groups != 1 or list(self._stride) != [1, 1]
                or self._padding_mode != "zeros" or self._padding_algorithm != "EXPLICIT"
                or len(self._updated_padding) != 2 or self._kernel_size[0] == 1):
            return 0
        _, channels, height, width = x.shape
        row_bytes = channels * self._kernel_size[0] * self._kernel_size[1] * width * x.element_size()
        if row_bytes * height <= BUFFER_BYTES:
            return 0
        strips = -(-height // max(1, BUFFER_BYTES // row_bytes))
        return -(-height // strips)  # as many strips as needed, of equal height

    def forward(self, x):
        rows = self._strip_rows(x)
        if not rows:
            return super().forward(x)
        pad_h, pad_w = self._updated_padding
        reach = self._dilation[0] * (self._kernel_size[0] - 1)  # input rows an output row needs, beyond one
        height = x.shape[2]
        out_height = height + 2 * pad_h - reach
        parts = []
        for start in range(0, out_height, rows):
            stop = min(start + rows, out_height)
            # Output row r reads input rows r - pad_h ... r - pad_h + reach; rows outside the image are the padding.
            first, last = start - pad_h, stop - 1 - pad_h + reach
            top, bottom = max(0, -first), max(0, last - (height - 1))
            strip = x[:, :, max(0, first):min(height, last + 1)]
            parts.append(F.conv2d(strip, self.weight, self.bias, stride=1, padding=[top, bottom, pad_w, pad_w],
                                  dilation=self._dilation, groups=1, data_format="NCHW"))
        return paddle.concat(parts, axis=2)
