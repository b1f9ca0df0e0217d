"""A network cut into the pieces a latency table times alone: the stem, every block, the head.

A piece is keyed by exactly what its latency depends on, so networks that share a block share its entry;
its layers come from the builder's own factories (nas.builder.stem, block, head), so a piece is timed as
the layers it stands for inside the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from nas.builder import STEM_KERNEL, block, head, stem
from nas.spec import BlockSpec, NetworkSpec


@dataclass(frozen=True)
class Piece:
    """One separately timed part of a network, keyed by exactly what its latency depends on.

    `kind` is "stem", "head" (1x1 conv, pooling and classifier) or a block type; `resolution` is the
    side of the input the piece sees inside the network. Stochastic depth and dropout are absent: they
    do nothing at inference.
    """

    kind: str
    in_channels: int
    out_channels: int
    resolution: int
    activation: str
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    se: float = 0.0
    num_classes: int = 0

    def module(self) -> nn.Module:
        """The piece's layers, built as the network builds them."""
        act = self.activation
        if self.kind == "stem":
            return stem(self.in_channels, self.out_channels, self.stride, act)
        if self.kind == "head":
            return head(self.in_channels, self.out_channels, self.num_classes, act).sequential()
        return block(BlockSpec(block=self.kind, in_channels=self.in_channels, out_channels=self.out_channels,
                               expand=self.expand, kernel=self.kernel, stride=self.stride, se=self.se,
                               drop_connect=0.0, stage=0), act)

    def __str__(self) -> str:
        shape = f"{self.kind} {self.in_channels}->{self.out_channels} k{self.kernel} s{self.stride}"
        if self.kind not in ("stem", "head"):
            shape += f" e{self.expand} se{self.se:g}"
        return f"{shape} at {self.resolution} px"


def pieces(spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
           num_classes: int = 1000) -> tuple[Piece, ...]:
    """The network as the builder lays it out, each piece at the input side it sees there: a stride-s
    convolution padded by k // 2 maps side n to ceil(n / s), and these compose, so every block of a
    stage outputs side ceil(r / the stage's total stride), read from `NetworkSpec.stage_strides`."""
    r, act, stage_strides = resolution or spec.resolution, spec.activation, spec.stage_strides
    out = [Piece("stem", in_channels, spec.stem_channels, r, act, kernel=STEM_KERNEL, stride=spec.stem_stride)]
    side, blocks = math.ceil(r / spec.stem_stride), spec.blocks()
    for b in blocks:
        out.append(Piece(b.block, b.in_channels, b.out_channels, side, act, b.kernel, b.stride, b.expand, b.se))
        side = math.ceil(r / stage_strides[b.stage])
    out.append(Piece("head", blocks[-1].out_channels, spec.head_channels, side, act, num_classes=num_classes))
    return tuple(out)
