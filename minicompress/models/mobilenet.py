"""MobileNetV2 with torchvision's constructor arguments, module tree and state-dict keys
(``features.N.conv.M...``, ``classifier.1``).

The inverted residual, written out (Sandler et al. 2018)::

    h = relu6(bn(conv1x1(x)))            expand by t (skipped when t = 1)
    h = relu6(bn(depthwise3x3(h)))       stride s
    y = bn(conv1x1(h))                   linear bottleneck (no activation)
    y = skip_add(x, y)  when s = 1 and the widths match (the residual; its backward: d x = d y + d main(x))

``Conv2dNormActivation`` is torchvision's conv-norm-activation Sequential (children 0, 1, 2). The
global pooling and the flatten that torchvision calls as functions are children here
(``avgpool``, ``flatten``: no keys), so that every tool sees them. ``small_input`` makes the stem
stride 1 (for 8x8 or 28x28 inputs); ``in_channels`` the stem's input channels.

As torchvision's *quantizable* MobileNetV2 (same float computation): the residual is a
``FloatFunctional`` (``skip_add``), the model starts with a ``QuantStub`` and ends with a ``DeQuantStub``,
and ``fuse_model()`` fuses each Conv2dNormActivation and the linear bottleneck's conv-bn. torchvision's
quantizable builder also swaps ReLU6 for ReLU (``replace_relu``) so that conv-bn-relu fuses; here
``fuse_model`` keeps a ReLU6 as its own op (conv-bn fused, the clamp quantized on its own) unless
``replace_relu(model)`` was called first, which reproduces torchvision's model.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .. import nn
from ..nn import init
from ..nn.random import get_rng
from ..quant.modules import DeQuantStub, QuantStub
from .fusing import fuse

__all__ = ["make_divisible", "Conv2dNormActivation", "InvertedResidual", "MobileNetV2", "mobilenet_v2"]


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """The nearest multiple of ``divisor`` to ``v`` (at least ``min_value``), never more than 10 % below
    ``v`` (torchvision's ``_make_divisible``, from the original TensorFlow repository)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    """conv (padding (k - 1) / 2 * dilation; bias only without a norm) -> norm -> activation, as
    ``torchvision.ops.Conv2dNormActivation`` (children '0', '1', '2')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU, dilation: int = 1,
                 inplace: bool | None = True, bias: bool | None = None, *, rng: Any = None) -> None:
        padding = (kernel_size - 1) // 2 * dilation if padding is None else padding
        bias = norm_layer is None if bias is None else bias
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=bias, rng=rng)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer() if inplace is None else activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.kernel_size, self.stride = in_channels, out_channels, kernel_size, stride
        self.padding, self.groups, self.dilation, self.inplace = padding, groups, dilation, inplace

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """conv-norm-ReLU fused (conv-norm when the activation is not a ReLU), in place."""
        names = [str(i) for i in range(len(self))]
        if len(names) == 3 and type(self[2]) is not nn.ReLU:
            names = names[:2]
        if len(names) >= 2:
            fuse(self, names, is_qat)


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block (module docstring): ``conv`` is the Sequential of its layers."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 norm_layer: Callable[..., nn.Module] | None = None, *, rng: Any = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride should be 1 or 2, got {stride}")
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=nn.ReLU6, rng=rng))
        layers += [Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim,
                                        norm_layer=norm_layer, activation_layer=nn.ReLU6, rng=rng),
                   nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False, rng=rng),
                   norm_layer(oup)]
        self.conv = nn.Sequential(*layers)
        self.skip_add = nn.FloatFunctional()
        self.inp, self.oup, self.expand_ratio, self.out_channels = inp, oup, expand_ratio, oup

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.skip_add.add(x, self.conv(x)) if self.use_res_connect else self.conv(x)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if not self.use_res_connect:
            return self.conv.backward(grad_output)
        d_x, d_main = self.skip_add.backward(grad_output)
        return d_x + self.conv.backward(d_main)

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """The linear bottleneck's conv-bn (torchvision's ``QuantizableInvertedResidual.fuse_model``)."""
        for idx in range(len(self.conv)):
            if type(self.conv[idx]) is nn.Conv2d:
                fuse(self.conv, [str(idx), str(idx + 1)], is_qat)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2: ``features`` (stem, inverted residuals, 1x1 conv to ``last_channel``),
    global average pool, ``classifier`` = Dropout(``dropout``) -> Linear. Convolutions start from
    kaiming_normal_(fan_out), BatchNorm from (1, 0), the Linear from N(0, 0.01) with zero bias."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 inverted_residual_setting: Sequence[Sequence[int]] | None = None, round_nearest: int = 8,
                 block: Callable[..., nn.Module] | None = None, norm_layer: Callable[..., nn.Module] | None = None,
                 dropout: float = 0.2, *, in_channels: int = 3, small_input: bool = False, rng: Any = None) -> None:
        super().__init__()
        rng = get_rng(rng)
        block = InvertedResidual if block is None else block
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if inverted_residual_setting is None:
            inverted_residual_setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                                         [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]   # t, c, n, s
        if len(inverted_residual_setting) == 0 or any(len(row) != 4 for row in inverted_residual_setting):
            raise ValueError(f"inverted_residual_setting should be non-empty and 4-element rows (t, c, n, s), "
                             f"got {inverted_residual_setting}")
        self.num_classes, self.width_mult, self.round_nearest, self.dropout = num_classes, width_mult, round_nearest, dropout
        self.inverted_residual_setting = [list(row) for row in inverted_residual_setting]
        self.in_channels, self.small_input = in_channels, small_input
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [Conv2dNormActivation(in_channels, input_channel, stride=1 if small_input else 2,
                                                          norm_layer=norm_layer, activation_layer=nn.ReLU6, rng=rng)]
        for t, c, n, s in inverted_residual_setting:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(block(input_channel, output_channel, s if i == 0 else 1, expand_ratio=t,
                                      norm_layer=norm_layer, rng=rng))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, norm_layer=norm_layer,
                                             activation_layer=nn.ReLU6, rng=rng))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, rng=rng), nn.Linear(self.last_channel, num_classes))
        self.quant, self.dequant = QuantStub(), DeQuantStub()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", rng=rng)
                if m.bias is not None:
                    m.bias.data[...] = 0
            elif isinstance(m, nn.Linear):
                init.normal_(m.weight, 0.0, 0.01, rng=rng)
                m.bias.data[...] = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.dequant(self.classifier(self.flatten(self.avgpool(self.features(self.quant(x))))))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        d = self.classifier.backward(self.dequant.backward(grad_output))
        return self.quant.backward(self.features.backward(self.avgpool.backward(self.flatten.backward(d))))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """Fuse in place as torchvision's ``QuantizableMobileNetV2.fuse_model`` (module docstring on ReLU6);
        ``is_qat`` (default: ``self.training``) fuses for ``prepare_qat``."""
        for m in list(self.modules()):
            if isinstance(m, (Conv2dNormActivation, InvertedResidual)):
                m.fuse_model(is_qat)

    def backward_params(self, grad_output: np.ndarray) -> None:
        """The input was data: the stem convolution (``features[0][0]``) computes no d input."""
        d = self.avgpool.backward(self.flatten.backward(self.classifier.backward(self.dequant.backward(grad_output))))
        self.features.backward_params(d)


def mobilenet_v2(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 as torchvision's ``mobilenet_v2(weights=None, ...)``."""
    return MobileNetV2(num_classes, **kwargs)
