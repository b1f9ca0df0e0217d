"""spec -> torch.nn.Module. The one place a NetworkSpec becomes layers.

`stem`, `block` and `head` build each part of a network; `EfficientNet` is made of them, and so are the
pieces a latency table times alone (nas.latency.pieces), so a piece is exactly the layers it stands for.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

from nas.blocks import BLOCKS, ResidualBlock, conv_bn_act
from nas.memory import require_network_memory
from nas.spec import BlockSpec, NetworkSpec

STEM_KERNEL = 3


def stem(in_channels: int, channels: int, stride: int, act: str) -> nn.Module:
    """The stem: a 3x3 convolution (STEM_KERNEL) with batch norm and the activation."""
    return conv_bn_act(in_channels, channels, STEM_KERNEL, stride, act=act)


def block(spec: BlockSpec, act: str) -> nn.Module:
    """One block of the type `spec.block` names (nas.blocks.BLOCKS)."""
    return BLOCKS[spec.block](spec, act)


class Head(NamedTuple):
    """The layers after the last stage, in forward order. `EfficientNet` holds them as its own attributes
    (their names are the state_dict's keys); `sequential` runs them alone."""

    conv: nn.Module             # 1x1 convolution to the head's channels, batch norm, activation
    pool: nn.Module
    dropout: nn.Module
    classifier: nn.Linear

    def sequential(self) -> nn.Sequential:
        return nn.Sequential(self.conv, self.pool, nn.Flatten(), self.dropout, self.classifier)


def head(in_channels: int, channels: int, num_classes: int, act: str, dropout: float = 0.0) -> Head:
    return Head(conv_bn_act(in_channels, channels, 1, act=act), nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout),
                nn.Linear(channels, num_classes))


class EfficientNet(nn.Module):
    """Stem, the spec's stages, a 1x1 head, global pooling, dropout and a linear classifier.

    `stages[i]` is one `nn.Sequential` holding stage i's blocks (as in timm and torchvision), so the
    layout reads off the module names: `stages[1][0]` is the first block of the second stage.
    """

    def __init__(self, spec: NetworkSpec, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.spec = spec
        act = spec.activation
        self.stem = stem(in_channels, spec.stem_channels, spec.stem_stride, act)
        self.stages = nn.Sequential(*(
            nn.Sequential(*(block(b, act) for b in stage_blocks))
            for _, stage_blocks in itertools.groupby(spec.blocks(), key=lambda b: b.stage)))
        self.head, self.pool, self.dropout, self.classifier = head(spec.stages[-1].channels, spec.head_channels,
                                                                   num_classes, act, spec.dropout)
        _init_weights(self)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Total stride at the output of each of `stages` (the spec's, which built them): an input of
        side r leaves `stages[i]` with side ceil(r / stage_strides[i]), e.g. to pick feature maps."""
        return self.spec.stage_strides

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

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
    """The network of `spec`; one whose weights alone would not fit in memory is refused before any is made."""
    require_network_memory(spec, num_classes, in_channels)
    return EfficientNet(spec, num_classes=num_classes, in_channels=in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
