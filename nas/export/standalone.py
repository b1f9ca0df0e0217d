"""A family of EfficientNet-style networks in plain PyTorch: this file needs torch and nothing else.

Every member is listed by name in MEMBERS at the end of this file, with its whole configuration: the
stages (block type, expansion, kernel, stride, output channels, repeats, squeeze-excite ratio), stem and
head channels, activation, dropout, drop-connect, the input resolution it was scaled for, and how it was
derived (phi, width and depth multipliers). Build one by name:

    from family import MEMBERS, build          # "family": this file's name, without .py
    print(list(MEMBERS))                         # the members' names, e.g. efficientnet_b0-B3
    model = build("efficientnet_b0-B3", num_classes=10)
    size = MEMBERS["efficientnet_b0-B3"]["resolution"]    # feed it size x size images

`build` returns an ordinary `torch.nn.Module`, initialised as the reference EfficientNet is: train it
with any loop (a plain PyTorch loop, Lightning, timm's train.py with the model passed in). In train mode
it applies dropout before the classifier and drop-connect (stochastic depth) on residual branches; call
`model.eval()` for inference. It takes N x in_channels x H x W float images; any H and W work (global
pooling), the member's `resolution` is the size its cost was measured at.

Parameter names are those of effnas's builder, so a state dict saved from either loads into the other:
`model.load_state_dict(torch.load("weights.pt"))`. Running this file lists the members.

Written by effnas (`nas materialize --export pytorch`): the members at the end are data, the code above
them is the same for every family.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MEMBERS", "NUM_CLASSES", "EfficientNet", "build"]

# TensorFlow's batch-norm defaults (decay 0.99, epsilon 1e-3), which the reference models were trained with.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3
ACTIVATIONS = {"silu": nn.SiLU, "relu6": nn.ReLU6, "relu": nn.ReLU, "hardswish": nn.Hardswish}


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                act: str | None = None) -> nn.Sequential:
    """Convolution with 'same'-style padding (kernel // 2) and no bias, batch norm, optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act](inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: global mean, a bottleneck of `squeeze` channels, a sigmoid gate."""

    def __init__(self, channels: int, squeeze: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = ACTIVATIONS[act](inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class StochasticDepth(nn.Module):
    """In training, drops a residual branch per sample with probability p, scaling survivors by 1/(1-p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x[:, :1, :1, :1]).bernoulli_(keep)
        return x * mask.div_(keep)


class Block(nn.Module):
    """MBConv (1x1 expand unless expand is 1, kxk depthwise, squeeze-excite, 1x1 project) or Fused-MBConv
    (one kxk convolution, then a 1x1 project unless expand is 1; no squeeze-excite). The squeeze width
    comes from the block's input channels. Residual with stochastic depth when the shape is kept."""

    def __init__(self, block: str, c_in: int, c_out: int, expand: int, kernel: int, stride: int, se: float,
                 drop_connect: float, act: str) -> None:
        super().__init__()
        mid = c_in * expand
        layers: list[nn.Module] = []
        if block == "mbconv":
            if expand != 1:
                layers.append(conv_bn_act(c_in, mid, 1, act=act))
            layers.append(conv_bn_act(mid, mid, kernel, stride, groups=mid, act=act))
            if se > 0:
                layers.append(SqueezeExcite(mid, max(1, int(c_in * se)), act))
            layers.append(conv_bn_act(mid, c_out, 1))
        elif block == "fused_mbconv":
            if expand == 1:
                layers.append(conv_bn_act(c_in, c_out, kernel, stride, act=act))
            else:
                layers += [conv_bn_act(c_in, mid, kernel, stride, act=act), conv_bn_act(mid, c_out, 1)]
        else:
            raise ValueError(f"unknown block type {block!r}: mbconv or fused_mbconv")
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out
        self.drop = StochasticDepth(drop_connect) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + self.drop(y) if self.residual else y


class EfficientNet(nn.Module):
    """Stem (3x3 convolution), stages of blocks, a 1x1 head, global pooling, dropout and a linear classifier.

    `config` is one entry of MEMBERS. `stages[i]` holds stage i's blocks: only the first strides and
    changes the channels. Drop-connect grows linearly from 0 at the first block to `drop_connect` (excluded)."""

    def __init__(self, config: dict[str, Any], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        act, stages = config["activation"], config["stages"]
        self.stem = conv_bn_act(in_channels, config["stem"], 3, config["stem_stride"], act=act)
        total, index, c_in = sum(s["repeats"] for s in stages), 0, config["stem"]
        blocks = []
        for s in stages:
            stage = []
            for r in range(s["repeats"]):
                stage.append(Block(s["block"], c_in, s["channels"], s["expand"], s["kernel"],
                                   s["stride"] if r == 0 else 1, s["se"], config["drop_connect"] * index / total,
                                   act))
                c_in, index = s["channels"], index + 1
            blocks.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*blocks)
        self.head = conv_bn_act(c_in, config["head"], 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config["dropout"])
        self.classifier = nn.Linear(config["head"], num_classes)
        for m in self.modules():      # the reference initialisation
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's feature map, before pooling."""
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build(name: str, num_classes: int | None = None, in_channels: int = 3) -> EfficientNet:
    """The member `name` of MEMBERS, with `num_classes` outputs (default NUM_CLASSES) and `in_channels`
    input channels (3 for RGB)."""
    if name not in MEMBERS:
        raise KeyError(f"no member {name!r} in this family: choose one of {', '.join(MEMBERS)}")
    return EfficientNet(MEMBERS[name], NUM_CLASSES if num_classes is None else num_classes, in_channels)


# ------------------------------------------------------------------------------------------ the family
# Each member's configuration under its name, as effnas exported it (effnas's template has none).
NUM_CLASSES = 1000
MEMBERS: dict[str, dict[str, Any]] = {}


if __name__ == "__main__":
    for member in MEMBERS:
        print(f"{member}: {sum(p.numel() for p in build(member).parameters()):,} parameters, "
              f"{MEMBERS[member]['resolution']} px")
