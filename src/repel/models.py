"""Models: CIFAR-style ResNets (He et al. 2016, depth 6n+2), MobileNetV2 for 32x32 inputs, and
a small CNN and an MLP for CPU-sized runs. Input channels and class count follow the dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
MODELS = ("cnn", "mlp", "mobilenetv2", *RESNET_DEPTHS)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks and global average pooling; works for 8x8 to 32x32 inputs."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(in_channels, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1))
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))  # global average pooling, which vmap batches


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut (option B) where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3 stages of n blocks with 16/32/64 channels, depth 6n+2."""

    def __init__(self, depth: int, in_channels: int, num_classes: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.layers(self.stem(x)).mean((2, 3)))


def mobilenet_v2_32(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's MobileNetV2 with a stride-1 stem, so 32x32 inputs keep a 2x2 final map, not 1x1."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, 1, bias=False)
    return model


def build(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if name == "cnn":
        return SmallCNN(in_channels, num_classes)
    if name == "mlp":
        return MLP(in_channels * image_size * image_size, num_classes)
    if name == "mobilenetv2":
        return mobilenet_v2_32(in_channels, num_classes)
    if name in RESNET_DEPTHS:
        return CifarResNet(RESNET_DEPTHS[name], in_channels, num_classes)
    raise ValueError(f"unknown model '{name}'; expected one of {', '.join(MODELS)}")


def from_arch(arch: dict) -> nn.Module:
    """The model a checkpoint's `arch` record describes (name, input channels, classes, image size)."""
    return build(arch["model"], arch["in_channels"], arch["num_classes"], arch["image_size"])


def trainable_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The parameters the distance is taken over (BatchNorm running statistics are buffers, not in it)."""
    return [p for p in model.parameters() if p.requires_grad]


def parameter_names(model: nn.Module) -> list[str]:
    """State-dict keys of the trainable parameters, in the order trainable_parameters gives them."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def flat_weights(source, names: Sequence[str] | None = None) -> torch.Tensor:
    """One flat tensor of trainable parameters, from a model, a list of tensors or a state dict.

    A state dict also holds buffers (BatchNorm running statistics), which are not weights: pass
    names=parameter_names(model) to pick the parameters out of it.
    """
    if isinstance(source, nn.Module):
        tensors = trainable_parameters(source)
    elif isinstance(source, Mapping):
        if names is None:
            raise ValueError("a state dict holds buffers too: pass names=parameter_names(model)")
        missing = [n for n in names if n not in source]
        if missing:
            raise ValueError(f"state dict lacks parameter(s) {missing[:5]}: a different model?")
        tensors = [source[n] for n in names]
    else:
        tensors = list(source)
    if not tensors:
        raise ValueError("no parameters to flatten")
    if not all(t.is_floating_point() for t in tensors):
        raise ValueError("weights must be floating-point tensors")
    return torch.cat([t.detach().reshape(-1) for t in tensors])
