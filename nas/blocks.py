"""The building blocks: MBConv, Fused-MBConv, squeeze-and-excite and stochastic depth.

Layer layout and parameter counts follow the reference implementations (TensorFlow's
efficientnet_builder, torchvision, timm): batch norm after every convolution, no conv bias, SE
squeeze channels from the block's *input* channels, residual only when shape is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nas.spec import BlockSpec

# TensorFlow's defaults (decay 0.99, epsilon 1e-3), which the reference models were trained with.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3

_ACTIVATIONS = {"silu": nn.SiLU, "relu6": nn.ReLU6, "relu": nn.ReLU, "hardswish": nn.Hardswish}


def activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name](inplace=True)


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                act: str | None = "silu") -> nn.Sequential:
    """Convolution with 'same'-style padding (k // 2), batch norm, and an optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if act is not None:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: global mean, a bottleneck of `squeeze` channels, a sigmoid gate."""

    def __init__(self, channels: int, squeeze: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class StochasticDepth(nn.Module):
    """Drops the residual branch per sample in training, scaling survivors by 1/(1-p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # Shaped like a slice of x, so that under vmap (fused seeds, nas.steps) each seed draws its own mask.
        mask = torch.empty_like(x[:, :1, :1, :1]).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class ResidualBlock(nn.Module):
    """A block body with an identity shortcut (and stochastic depth) whenever the shape is kept."""

    def __init__(self, body: nn.Sequential, b: BlockSpec) -> None:
        super().__init__()
        self.body = body
        self.residual = b.stride == 1 and b.in_channels == b.out_channels
        self.drop = StochasticDepth(b.drop_connect) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + self.drop(y) if self.residual else y


class MBConv(ResidualBlock):
    """Inverted residual: 1x1 expand (skipped when expand == 1), kxk depthwise, SE, 1x1 project."""

    def __init__(self, b: BlockSpec, act: str) -> None:
        mid = b.in_channels * b.expand
        layers: list[nn.Module] = []
        if b.expand != 1:
            layers.append(conv_bn_act(b.in_channels, mid, 1, act=act))
        layers.append(conv_bn_act(mid, mid, b.kernel, b.stride, groups=mid, act=act))
        if b.se > 0:
            layers.append(SqueezeExcite(mid, max(1, int(b.in_channels * b.se)), act))
        layers.append(conv_bn_act(mid, b.out_channels, 1, act=None))
        super().__init__(nn.Sequential(*layers), b)


class FusedMBConv(ResidualBlock):
    """EfficientNetV2's block: one kxk convolution replaces expand + depthwise, then a 1x1 project;
    with expand == 1 the kxk convolution maps straight to the output channels."""

    def __init__(self, b: BlockSpec, act: str) -> None:
        if b.expand == 1:
            layers = [conv_bn_act(b.in_channels, b.out_channels, b.kernel, b.stride, act=act)]
        else:
            mid = b.in_channels * b.expand
            layers = [conv_bn_act(b.in_channels, mid, b.kernel, b.stride, act=act),
                      conv_bn_act(mid, b.out_channels, 1, act=None)]
        super().__init__(nn.Sequential(*layers), b)


# Each block class takes (spec, activation), unlike the ResidualBlock base it derives from.
BLOCKS: dict[str, Callable[[BlockSpec, str], ResidualBlock]] = {"mbconv": MBConv, "fused_mbconv": FusedMBConv}
