"""Pooling layers: thin Modules around ``functional.pool`` (1-D layers run the 2-D code with H = 1)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..functional import pool as F
from ..module import Module
from ._utils import batched, check_array, check_grad, ntuple


class _Pool(Module):
    """Shared plumbing: 1-D inputs become (N, C, 1, L); unbatched inputs get a batch axis."""

    _nd = 2

    def _as_2d(self, value: tuple[int, ...], fill: int) -> tuple[int, int]:
        return (fill,) + value if self._nd == 1 else value

    def _check_sizes(self, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
                     dilation: tuple[int, ...] = ()) -> None:
        if min(kernel + stride + dilation) < 1:
            raise ValueError(f"{self._name()}: kernel_size, stride and dilation must be positive")
        if any(p < 0 or p > k // 2 for p, k in zip(padding, kernel)):
            raise ValueError(f"{self._name()}: pad should be at most half of kernel size "
                             f"(padding={padding}, kernel_size={kernel})")

    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        check_array(self, x)
        x, unbatched = batched(self, x, self._nd)
        return (x[:, :, None, :] if self._nd == 1 else x), unbatched

    def _finish(self, y: np.ndarray, unbatched: bool, cache: Any) -> np.ndarray:
        y = y[:, :, 0, :] if self._nd == 1 else y
        y = y[0] if unbatched else y
        self._save_for_backward((y.shape, unbatched, cache))
        return y

    def _output_checked(self, x: np.ndarray, out: tuple[int, ...]) -> None:
        if min(out) < 1:
            raise ValueError(f"{self._name()}: input {x.shape} is too small, the output would be {out}")

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, unbatched, cache = self._saved()
        check_grad(self, grad_output, shape)
        dy = grad_output[None] if unbatched else grad_output
        dy = dy[:, :, None, :] if self._nd == 1 else dy
        dx = self._backward(dy, cache)
        dx = dx[:, :, 0, :] if self._nd == 1 else dx
        return dx[0] if unbatched else dx


class _MaxPoolNd(_Pool):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode
        if return_indices:
            raise NotImplementedError(f"{self._name()}: return_indices=True is not supported")
        self._args = tuple(ntuple(v, self._nd, what, type(self).__name__) for v, what in
                           ((kernel_size, "kernel_size"), (self.stride, "stride"), (padding, "padding"),
                            (dilation, "dilation")))
        self._check_sizes(*self._args)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, unbatched = self._prepare(x)
        kernel, stride, padding, dilation = (self._as_2d(v, f) for v, f in zip(self._args, (1, 1, 0, 1)))
        self._output_checked(x, tuple(F.pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                                         dilation[a], self.ceil_mode) for a in range(2)))
        y, cache = F.max_pool2d_forward(x, kernel, stride, padding, dilation, self.ceil_mode)
        return self._finish(y, unbatched, cache)

    def _backward(self, dy: np.ndarray, cache: Any) -> np.ndarray:
        return F.max_pool2d_backward(dy, cache)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """y[n, c, i] = max_p x_pad[n, c, i*stride + p*dilation]   (x_pad: -inf padding), as ``torch.nn.MaxPool1d``.

    Ties: the first maximum in the window gets the gradient, as PyTorch.
    """

    _nd = 1


class MaxPool2d(_MaxPoolNd):
    """y[n, c, i, j] = max_{p, q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw]   (x_pad: -inf padding),
    as ``torch.nn.MaxPool2d`` (stride defaults to kernel_size; padding, dilation, ceil_mode).

    Ties: the first maximum in window order (row by row) gets the gradient, as PyTorch.
    """

    _nd = 2


class _AvgPoolNd(_Pool):
    def forward(self, x: np.ndarray) -> np.ndarray:
        x, unbatched = self._prepare(x)
        kernel, stride, padding = (self._as_2d(v, f) for v, f in zip(self._args, (1, 1, 0)))
        self._output_checked(x, tuple(F.pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                                         1, self.ceil_mode) for a in range(2)))
        y, cache = F.avg_pool2d_forward(x, kernel, stride, padding, self.ceil_mode, self.count_include_pad,
                                        getattr(self, "divisor_override", None))
        return self._finish(y, unbatched, cache)

    def _backward(self, dy: np.ndarray, cache: Any) -> np.ndarray:
        return F.avg_pool2d_backward(dy, cache)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """y[n, c, i] = mean_p x_pad[n, c, i*stride + p], as ``torch.nn.AvgPool1d`` (zero padding counted
    if ``count_include_pad``; ceil_mode overhang never counted). Attributes are 1-tuples, as PyTorch's.
    """

    _nd = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = ntuple(kernel_size, 1, "kernel_size", "AvgPool1d")
        self.stride = ntuple(kernel_size if stride is None else stride, 1, "stride", "AvgPool1d")
        self.padding = ntuple(padding, 1, "padding", "AvgPool1d")
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self._args = (self.kernel_size, self.stride, self.padding)
        self._check_sizes(*self._args)


class AvgPool2d(_AvgPoolNd):
    """y[n, c, i, j] = (1 / D[i, j]) sum_{p, q} x_pad[n, c, i*sh + p, j*sw + q], as ``torch.nn.AvgPool2d``.

    D counts the zero padding if ``count_include_pad`` (never the ceil_mode overhang), or is
    ``divisor_override``.
    """

    _nd = 2

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        if divisor_override is not None and divisor_override == 0:
            raise ValueError(f"{self._name()}: divisor_override must be non-zero")
        self.divisor_override = divisor_override
        self._args = tuple(ntuple(v, 2, what, "AvgPool2d") for v, what in
                           ((kernel_size, "kernel_size"), (self.stride, "stride"), (padding, "padding")))
        self._check_sizes(*self._args)


class AdaptiveAvgPool2d(_Pool):
    """y[n, c, i, j] = mean of x[n, c] over rows [floor(i H / OH), ceil((i+1) H / OH)) and the columns alike,
    as ``torch.nn.AdaptiveAvgPool2d``. ``output_size`` is an int or a pair; None keeps the input size.
    """

    _nd = 2

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        if len(sizes) != 2 or any(s is not None and (not isinstance(s, (int, np.integer)) or s < 1) for s in sizes):
            raise ValueError(f"{self._name()}: output_size must be a positive int or a pair of positive ints/None, "
                             f"got {output_size!r}")
        self._sizes = sizes

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, unbatched = self._prepare(x)
        out = tuple(x.shape[2 + a] if s is None else int(s) for a, s in enumerate(self._sizes))
        if min(x.shape[2:]) < 1:
            raise ValueError(f"{self._name()}: input {x.shape} has an empty spatial axis")
        y, cache = F.adaptive_avg_pool2d_forward(x, out)
        return self._finish(y, unbatched, cache)

    def _backward(self, dy: np.ndarray, cache: Any) -> np.ndarray:
        return F.adaptive_avg_pool2d_backward(dy, cache)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    """y[n, c, i] = mean of x[n, c] over [floor(i L / OL), ceil((i+1) L / OL)), as ``torch.nn.AdaptiveAvgPool1d``
    (the 2-D code with H = 1). ``output_size`` is an int (or a 1-tuple)."""

    _nd = 1

    def __init__(self, output_size: Any) -> None:
        Module.__init__(self)
        size = output_size[0] if isinstance(output_size, (tuple, list)) and len(output_size) == 1 else output_size
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ValueError(f"AdaptiveAvgPool1d: output_size must be a positive int, got {output_size!r}")
        self.output_size = output_size
        self._sizes = (1, int(size))
