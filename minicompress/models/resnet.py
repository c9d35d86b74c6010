"""ResNets with torchvision's constructor arguments, module tree and state-dict keys.

Each block writes its forward and its backward by hand; the backward is the forward read in
reverse, and a residual's input gradient is the sum of its two paths::

    BasicBlock:   out = add_relu(bn2(conv2(relu(bn1(conv1(x))))), shortcut(x))
                  d x = d main-path(x) + d shortcut(x)

The module tree is that of torchvision's *quantizable* ResNet (``torchvision.models.quantization``),
whose float computation is the plain ResNet's: the residual sum and its ReLU are one
``FloatFunctional.add_relu`` (``add_relu`` in BasicBlock, ``skip_add_relu`` in Bottleneck, whose two
inner ReLUs are ``relu1`` / ``relu2``), the model starts with a ``QuantStub`` and ends with a
``DeQuantStub`` (identities in float), and ``fuse_model()`` fuses as torchvision's does. None of these
hold state: the keys stay torchvision's. ``flatten`` is an ``nn.Flatten`` child for torchvision's
``torch.flatten(x, 1)`` (no keys either).

Beyond torchvision: ``in_channels`` and ``small_input`` (a 3x3 stride-1 stem without max-pool, for
8x8 or 28x28 inputs), and the CIFAR-style ``resnet20/32/56`` (He et al. 2016, section 4.2: three
stages of 16, 32, 64 channels, 1x1-conv shortcuts where the shape changes).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .. import nn
from ..nn import init
from ..nn.random import get_rng
from ..quant.modules import DeQuantStub, QuantStub
from .fusing import fuse

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet20", "resnet32",
           "resnet56"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1,
            rng: Any = None) -> nn.Conv2d:
    """3x3 convolution, padding = dilation, no bias (torchvision's)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation, rng=rng)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, rng: Any = None) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False, rng=rng)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and an identity (or 1x1 conv-BN ``downsample``) shortcut; expansion 1.

    forward:  h = relu(bn1(conv1(x)));  y = add_relu(bn2(conv2(h)), shortcut(x))
    backward: the same steps in reverse; d x = d main path + d shortcut.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = None, *, rng: Any = None) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride, rng=rng)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, rng=rng)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.add_relu = nn.FloatFunctional()
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.groups, self.base_width, self.dilation = groups, base_width, dilation

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = self.relu(self.bn1(self.conv1(x)))
        main = self.bn2(self.conv2(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.add_relu.add_relu(main, shortcut)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        d_main, d_shortcut = self.add_relu.backward(grad_output)
        d_h = self.conv2.backward(self.bn2.backward(d_main))
        d_x = self.conv1.backward(self.bn1.backward(self.relu.backward(d_h)))
        return d_x + (d_shortcut if self.downsample is None else self.downsample.backward(d_shortcut))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """torchvision's: conv1-bn1-relu, conv2-bn2, and the downsample's conv-bn (in place)."""
        fuse(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], is_qat)
        if self.downsample is not None:
            fuse(self.downsample, ["0", "1"], is_qat)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride, groups, dilation), 1x1 expand (x4), each conv-BN, ReLU after the first
    two and after the residual sum; torchvision's ResNet-50 block (the stride on the 3x3, "v1.5").

    forward:  h1 = relu1(bn1(conv1(x)));  h2 = relu2(bn2(conv2(h1)));  y = skip_add_relu(bn3(conv3(h2)), shortcut(x))
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = None, *, rng: Any = None) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width, rng=rng)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, rng=rng)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion, rng=rng)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.downsample = downsample
        self.skip_add_relu = nn.FloatFunctional()
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.groups, self.base_width, self.dilation = groups, base_width, dilation

    def forward(self, x: np.ndarray) -> np.ndarray:
        h1 = self.relu1(self.bn1(self.conv1(x)))
        h2 = self.relu2(self.bn2(self.conv2(h1)))
        main = self.bn3(self.conv3(h2))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.skip_add_relu.add_relu(main, shortcut)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        d_main, d_shortcut = self.skip_add_relu.backward(grad_output)
        d_h2 = self.conv3.backward(self.bn3.backward(d_main))
        d_h1 = self.conv2.backward(self.bn2.backward(self.relu2.backward(d_h2)))
        d_x = self.conv1.backward(self.bn1.backward(self.relu1.backward(d_h1)))
        return d_x + (d_shortcut if self.downsample is None else self.downsample.backward(d_shortcut))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """torchvision's: conv1-bn1-relu1, conv2-bn2-relu2, conv3-bn3, and the downsample's conv-bn (in place)."""
        fuse(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]], is_qat)
        if self.downsample is not None:
            fuse(self.downsample, ["0", "1"], is_qat)


class ResNet(nn.Module):
    """torchvision's ResNet: stem, ``len(layers)`` stages of blocks, global average pool, ``fc``.

    stem: conv1 7x7/2 (pad 3) -> bn1 -> relu -> maxpool 3x3/2 (pad 1); with ``small_input`` a 3x3/1
    conv1 and no max-pool (``maxpool`` is an Identity). Stage i has ``layers[i]`` blocks of width
    ``widths[i]`` (stride 2 from the second stage on, or dilation per ``replace_stride_with_dilation``).
    Convolutions start from kaiming_normal_(fan_out, relu), BatchNorm from (1, 0);
    ``zero_init_residual`` zeroes the last BN scale of every block.
    """

    def __init__(self, block: type, layers: Sequence[int], num_classes: int = 1000, zero_init_residual: bool = False,
                 groups: int = 1, width_per_group: int = 64, replace_stride_with_dilation: Sequence[bool] | None = None,
                 norm_layer: Callable[..., nn.Module] | None = None, *, in_channels: int = 3,
                 small_input: bool = False, widths: Sequence[int] = (64, 128, 256, 512), rng: Any = None) -> None:
        super().__init__()
        rng = get_rng(rng)
        self._norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if len(widths) != len(layers):
            raise ValueError(f"ResNet: {len(layers)} stages need {len(layers)} widths, got {list(widths)}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False] * (len(layers) - 1)
        self.replace_stride_with_dilation = [bool(v) for v in replace_stride_with_dilation]
        if len(replace_stride_with_dilation) != len(layers) - 1:
            raise ValueError(f"replace_stride_with_dilation should be None or a {len(layers) - 1}-element tuple, "
                             f"got {replace_stride_with_dilation}")
        self.inplanes, self.dilation = widths[0], 1
        self.groups, self.base_width = groups, width_per_group
        self.block, self.layers_config, self.num_classes = block, tuple(layers), num_classes
        self.in_channels, self.small_input, self.widths = in_channels, small_input, tuple(widths)
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 3, stride=1, padding=1, bias=False, rng=rng)
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False, rng=rng)
        self.bn1 = self._norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (width, blocks) in enumerate(zip(widths, layers)):
            stride, dilate = (1, False) if i == 0 else (2, replace_stride_with_dilation[i - 1])
            self.add_module(f"layer{i + 1}", self._make_layer(block, width, blocks, stride, dilate, rng))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes, rng=rng)
        self.quant, self.dequant = QuantStub(), DeQuantStub()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", rng=rng)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    m.bn3.weight.data[...] = 0
                elif isinstance(m, BasicBlock):
                    m.bn2.weight.data[...] = 0

    def _config(self) -> dict:
        """Constructor arguments for model files (the block by name; the saved children replace those built)."""
        return dict(block=self.block.__name__, layers=list(self.layers_config), num_classes=self.num_classes,
                    groups=self.groups, width_per_group=self.base_width,
                    replace_stride_with_dilation=list(self.replace_stride_with_dilation),
                    in_channels=self.in_channels, small_input=self.small_input, widths=list(self.widths))

    @classmethod
    def _from_config(cls, config: dict) -> "ResNet":
        blocks = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
        if config.get("block") not in blocks:
            raise ValueError(f"ResNet: unknown block {config.get('block')!r}; expected one of {sorted(blocks)}")
        with init.skip_init():
            return cls(**{**config, "block": blocks[config["block"]]})

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int, dilate: bool, rng: Any) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride, rng=rng),
                                       self._norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation,
                        self._norm_layer, rng=rng)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, norm_layer=self._norm_layer, rng=rng))
        return nn.Sequential(*layers)

    def _stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.layers_config))]

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.quant(x)))))
        for stage in self._stages():
            x = stage(x)
        return self.dequant(self.fc(self.flatten(self.avgpool(x))))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self.quant.backward(self.conv1.backward(self._backward_to_stem(grad_output)))

    def backward_params(self, grad_output: np.ndarray) -> None:
        """The input was data: ``conv1`` computes no d input."""
        self.conv1.backward_params(self._backward_to_stem(grad_output))

    def _backward_to_stem(self, grad_output: np.ndarray) -> np.ndarray:
        """d loss / d conv1's output: every layer after the stem convolution, in reverse."""
        d = self.avgpool.backward(self.flatten.backward(self.fc.backward(self.dequant.backward(grad_output))))
        for stage in reversed(self._stages()):
            d = stage.backward(d)
        return self.bn1.backward(self.relu.backward(self.maxpool.backward(d)))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """Fuse conv-bn(-relu) everywhere, in place, as torchvision's ``QuantizableResNet.fuse_model``: for
        ``prepare`` (eval: BatchNorm folded into the conv) or, with ``is_qat`` (default: ``self.training``),
        for ``prepare_qat`` (ConvBn2d / ConvBnReLU2d that keep training their BatchNorm)."""
        fuse(self, ["conv1", "bn1", "relu"], is_qat)
        for m in list(self.modules()):
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.fuse_model(is_qat)


def resnet18(num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) as torchvision's ``resnet18(weights=None, ...)``."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


def _cifar_resnet(depth: int, num_classes: int, in_channels: int, **kwargs: Any) -> ResNet:
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n, n, n], num_classes, in_channels=in_channels, small_input=True,
                  widths=(16, 32, 64), **kwargs)


def resnet20(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR-style ResNet-20: a 3x3 stem of 16 channels, 3 stages of 3 BasicBlocks (16, 32, 64)."""
    return _cifar_resnet(20, num_classes, in_channels, **kwargs)


def resnet32(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR-style ResNet-32: 3 stages of 5 BasicBlocks."""
    return _cifar_resnet(32, num_classes, in_channels, **kwargs)


def resnet56(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR-style ResNet-56: 3 stages of 9 BasicBlocks."""
    return _cifar_resnet(56, num_classes, in_channels, **kwargs)
