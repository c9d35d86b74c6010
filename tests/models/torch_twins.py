"""PyTorch twins of torchvision's ResNet and MobileNetV2, written for the tests.

torchvision's wheel on the package index is built against the CUDA torch: next to the CPU torch 2.13.0
that CI installs, ``import torchvision`` fails (its C++ operators do not register). These twins follow
torchvision's model code (``torchvision/models/resnet.py``, ``mobilenetv2.py``) module for module, so
their state-dict keys are torchvision's; ``tests/models/test_reference_models.py`` also checks the keys
against names taken from torchvision's published checkpoints. Initialisation is not copied: the
tests load our weights into the twin.
"""
from __future__ import annotations


def resnet_twin(torch, block: str, layers, num_classes=1000, in_channels=3, small_input=False,
                widths=(64, 128, 256, 512), quantizable=False):
    """``quantizable``: torchvision's ``models.quantization`` ResNet (FloatFunctional add_relu, relu1/relu2,
    QuantStub/DeQuantStub, ``fuse_model``), same float function and keys."""
    nn = torch.nn
    def fuse(model, modules, inplace=True, is_qat=None):
        """torchvision's ``_fuse_modules``: the QAT fuser when ``is_qat`` (default: the model is training)."""
        qat = model.training if is_qat is None else is_qat
        fuser = torch.ao.quantization.fuse_modules_qat if qat else torch.ao.quantization.fuse_modules
        return fuser(model, modules, inplace=inplace)

    def conv3x3(i, o, stride=1):
        return nn.Conv2d(i, o, 3, stride, 1, bias=False)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
            self.downsample = downsample

            if quantizable:
                self.add_relu = torch.ao.nn.quantized.FloatFunctional()

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.add_relu.add_relu(out, identity) if quantizable else self.relu(out + identity)

        def fuse_model(self, is_qat=None):
            fuse(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], inplace=True, is_qat=is_qat)
            if self.downsample is not None:
                fuse(self.downsample, ["0", "1"], inplace=True, is_qat=is_qat)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            if quantizable:
                self.skip_add_relu = torch.ao.nn.quantized.FloatFunctional()
                self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

        def forward(self, x):
            if quantizable:
                out = self.relu1(self.bn1(self.conv1(x)))
                out = self.relu2(self.bn2(self.conv2(out)))
            else:
                out = self.relu(self.bn1(self.conv1(x)))
                out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.skip_add_relu.add_relu(out, identity) if quantizable else self.relu(out + identity)

        def fuse_model(self, is_qat=None):
            fuse(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]], inplace=True, is_qat=is_qat)
            if self.downsample is not None:
                fuse(self.downsample, ["0", "1"], inplace=True, is_qat=is_qat)

    cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = widths[0]
            if small_input:
                self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            else:
                self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.bn1, self.relu = nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
            self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
            for i, (w, n) in enumerate(zip(widths, layers)):
                setattr(self, f"layer{i + 1}", self._make_layer(w, n, 1 if i == 0 else 2))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[-1] * cls.expansion, num_classes)
            self.stages = len(layers)
            if quantizable:
                self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()

        def _make_layer(self, planes, blocks, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes * cls.expansion:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * cls.expansion, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes * cls.expansion))
            out = [cls(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * cls.expansion
            out += [cls(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*out)

        def forward(self, x):
            x = self.quant(x) if quantizable else x
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(self.stages):
                x = getattr(self, f"layer{i + 1}")(x)
            x = self.fc(torch.flatten(self.avgpool(x), 1))
            return self.dequant(x) if quantizable else x

        def fuse_model(self, is_qat=None):
            fuse(self, ["conv1", "bn1", "relu"], inplace=True, is_qat=is_qat)
            for m in self.modules():
                if type(m) in (BasicBlock, Bottleneck):
                    m.fuse_model(is_qat)

    return ResNet()


def mobilenet_v2_twin(torch, num_classes=1000, width_mult=1.0, in_channels=3, small_input=False,
                      quantizable=False):
    """``quantizable``: torchvision's ``models.quantization.mobilenet_v2`` (FloatFunctional skip_add,
    QuantStub/DeQuantStub, ReLU6 replaced by ReLU as its ``_replace_relu`` does, ``fuse_model``)."""
    nn = torch.nn
    def fuse(model, modules, inplace=True, is_qat=None):
        """torchvision's ``_fuse_modules``: the QAT fuser when ``is_qat`` (default: the model is training)."""
        qat = model.training if is_qat is None else is_qat
        fuser = torch.ao.quantization.fuse_modules_qat if qat else torch.ao.quantization.fuse_modules
        return fuser(model, modules, inplace=inplace)
    activation = (lambda: nn.ReLU()) if quantizable else (lambda: nn.ReLU6(inplace=True))

    def make_divisible(v, divisor=8):
        new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
        return new_v + divisor if new_v < 0.9 * v else new_v

    def cna(i, o, k=3, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(i, o, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(o), activation())

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, t):
            super().__init__()
            hidden = int(round(inp * t))
            self.use_res_connect = stride == 1 and inp == oup
            layers = [cna(inp, hidden, 1)] if t != 1 else []
            layers += [cna(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                       nn.BatchNorm2d(oup)]
            self.conv = nn.Sequential(*layers)
            if quantizable:
                self.skip_add = torch.ao.nn.quantized.FloatFunctional()

        def forward(self, x):
            if not self.use_res_connect:
                return self.conv(x)
            return self.skip_add.add(x, self.conv(x)) if quantizable else x + self.conv(x)

        def fuse_model(self, is_qat=None):
            for idx in range(len(self.conv)):
                if type(self.conv[idx]) is nn.Conv2d:
                    fuse(self.conv, [str(idx), str(idx + 1)], inplace=True, is_qat=is_qat)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                       [6, 320, 1, 1]]
            c_in = make_divisible(32 * width_mult)
            last = make_divisible(1280 * max(1.0, width_mult))
            features = [cna(in_channels, c_in, stride=1 if small_input else 2)]
            for t, c, n, s in setting:
                c_out = make_divisible(c * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                    c_in = c_out
            features.append(cna(c_in, last, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
            if quantizable:
                self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x) if quantizable else x
            x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            x = self.classifier(torch.flatten(x, 1))
            return self.dequant(x) if quantizable else x

        def fuse_model(self, is_qat=None):
            for m in self.modules():
                if type(m) is nn.Sequential and len(m) == 3 and type(m[0]) is nn.Conv2d:
                    fuse(m, ["0", "1", "2"], inplace=True, is_qat=is_qat)
                if type(m) is InvertedResidual:
                    m.fuse_model(is_qat)

    return MobileNetV2()


def vit_twin(torch, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes, in_channels=3):
    """torchvision's VisionTransformer (dropout 0, no representation layer), module for module."""
    from collections import OrderedDict
    nn = torch.nn

    class EncoderBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
            self.dropout = nn.Dropout(0.0)
            self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(0.0),
                                     nn.Linear(mlp_dim, hidden_dim), nn.Dropout(0.0))

        def forward(self, inp):
            x = self.ln_1(inp)
            x, _ = self.self_attention(x, x, x, need_weights=False)
            x = self.dropout(x) + inp
            return x + self.mlp(self.ln_2(x))

    class Encoder(nn.Module):
        def __init__(self, seq_length):
            super().__init__()
            self.pos_embedding = nn.Parameter(torch.zeros(1, seq_length, hidden_dim))
            self.dropout = nn.Dropout(0.0)
            self.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", EncoderBlock()) for i in range(num_layers)))
            self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

        def forward(self, x):
            return self.ln(self.layers(self.dropout(x + self.pos_embedding)))

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size)
            self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
            self.encoder = Encoder((image_size // patch_size) ** 2 + 1)
            self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

        def forward(self, x):
            n = x.shape[0]
            x = self.conv_proj(x).reshape(n, hidden_dim, -1).permute(0, 2, 1)
            x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
            return self.heads(self.encoder(x)[:, 0])

    return VisionTransformer()
