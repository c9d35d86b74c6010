"""Reference models: the digits networks, and torchvision's ResNet and MobileNetV2 with their
constructor arguments and state-dict keys (plus ``in_channels`` and ``small_input``), and torchvision's
VisionTransformer."""
from .digits import DigitsRNN, FinalHidden, digits_cnn, digits_mlp, digits_rnn
from .fusing import replace_relu
from .build import ARCHITECTURES, build
from .mobilenet import Conv2dNormActivation, InvertedResidual, MobileNetV2, mobilenet_v2
from .resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet20, resnet32, resnet34, resnet50,
                     resnet56)
from .vit import VisionTransformer

__all__ = ["digits_cnn", "digits_mlp", "digits_rnn", "DigitsRNN", "FinalHidden", "replace_relu", "build", "ARCHITECTURES", "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50",
           "resnet20", "resnet32", "resnet56", "Conv2dNormActivation", "InvertedResidual", "MobileNetV2",
           "mobilenet_v2", "VisionTransformer"]
