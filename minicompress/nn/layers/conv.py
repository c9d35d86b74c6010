"""Conv1d and Conv2d: thin Modules around ``functional.conv`` (im2col + one matmul per group)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import init
from ..functional import conv as F
from ..module import Module, Parameter
from ._utils import backward_without_input_grad, batched, check_array, check_grad, ntuple

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """Shared by Conv1d (nd = 1) and Conv2d (nd = 2): arguments, checks, padding, init."""

    _nd = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, dtype=None, rng=None) -> None:
        super().__init__()
        nd, owner = self._nd, f"{type(self).__name__}({in_channels}, {out_channels})"
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"{owner}: groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"{owner}: in_channels must be divisible by groups (groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"{owner}: out_channels must be divisible by groups (groups={groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ntuple(kernel_size, nd, "kernel_size", owner)
        self.stride = ntuple(stride, nd, "stride", owner)
        self.dilation = ntuple(dilation, nd, "dilation", owner)
        for what in ("kernel_size", "stride", "dilation"):
            if min(getattr(self, what)) < 1:
                raise ValueError(f"{owner}: {what} must be positive, got {getattr(self, what)}")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{owner}: invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{owner}: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding: Any = padding
        else:
            self.padding = ntuple(padding, nd, "padding", owner)
            if min(self.padding) < 0:
                raise ValueError(f"{owner}: padding must be non-negative, got {self.padding}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{owner}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        if padding_mode != "zeros":
            raise NotImplementedError(f"{owner}: padding_mode={padding_mode!r} is not implemented; "
                                      f"minicompress supports padding_mode='zeros' only")
        self.padding_mode = padding_mode
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        self.weight = Parameter(np.empty((out_channels, in_channels // groups) + self.kernel_size, dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.needs_input_grad = True
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        init.default_weight_and_bias_(self.weight, self.bias, rng=rng)

    def _pads(self) -> tuple[tuple[int, int], ...]:
        """(before, after) zero padding per spatial axis; 'same' puts the odd extra after, as PyTorch."""
        if self.padding == "valid":
            return ((0, 0),) * self._nd
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return tuple((t // 2, t - t // 2) for t in totals)
        return tuple((p, p) for p in self.padding)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._conv_forward(x, self.array("weight"), self.array("bias"))

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        dx, dW, db = self._conv_backward(grad_output)
        self.accumulate_grad("weight", dW, fresh=True)
        if db is not None:
            self.accumulate_grad("bias", db, fresh=True)
        return dx

    def backward_params(self, grad_output: np.ndarray) -> None:
        """dW and db of ``backward``, without d input (W^T dy and col2im): the input was data."""
        backward_without_input_grad(self, grad_output)

    def _conv_forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """conv(x, weight, bias) with this layer's hyper-parameters and input checks; keeps the cache.

        The weight and bias are arguments (as PyTorch's ``_conv_forward``) so that QAT's Conv-BN can
        convolve with its folded, fake-quantized weight through the same checks and arithmetic.
        """
        check_array(self, x, weight.dtype)
        x, unbatched = batched(self, x, self._nd, self.in_channels)
        pads = self._pads()
        padded = tuple(n + a + b for n, (a, b) in zip(x.shape[2:], pads))
        reach = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))
        if any(n < r for n, r in zip(padded, reach)):
            raise ValueError(f"{self._name()}: input {x.shape} is too small: padded spatial size {padded} "
                             f"is smaller than the (dilated) kernel {reach}")
        if self._nd == 1:
            y, cache = F.conv1d_forward(x, weight, bias, self.stride[0], pads[0], self.dilation[0], self.groups)
        else:
            y, cache = F.conv2d_forward(x, weight, bias, self.stride, pads, self.dilation, self.groups)
        y = y[0] if unbatched else y
        self._save_for_backward((y.shape, unbatched, bias is not None, cache))
        return y

    def _conv_backward(self, grad_output: np.ndarray) -> tuple:
        """(dx, dW, db) of the latest ``_conv_forward`` (db None without a bias; dx None if not needed)."""
        shape, unbatched, has_bias, cache = self._saved()
        check_grad(self, grad_output, shape)
        dy = grad_output[None] if unbatched else grad_output
        conv_backward = F.conv1d_backward if self._nd == 1 else F.conv2d_backward
        dx, dW, db = conv_backward(dy, cache, self.needs_input_grad)
        return (dx[0] if unbatched and dx is not None else dx), dW, (db if has_bias else None)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """y[n, o, i] = b[o] + sum_{c, p} W[o, c, p] x_pad[n, g*C/G + c, i*stride + p*dilation],  as ``torch.nn.Conv1d``.

    Input (N, C_in, L) or (C_in, L); weight (out_channels, in_channels/groups, K); PyTorch's default init.
    Computed as Conv2d with H = 1. ``padding`` may be an int, a 1-tuple, 'valid' or 'same'.
    """

    _nd = 1


class Conv2d(_ConvNd):
    """y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] x_pad[n, g*C/G + c, i*sh + p*dh, j*sw + q*dw],
    as ``torch.nn.Conv2d`` (stride, padding incl. 'same'/'valid', dilation, groups; padding_mode 'zeros').

    Input (N, C_in, H, W) or (C_in, H, W); weight (out_channels, in_channels/groups, KH, KW);
    PyTorch's default init. ``backward_params`` skips d loss / d input for one call (the input was data);
    ``needs_input_grad = False`` for every call (backward then returns None).
    """

    _nd = 2
