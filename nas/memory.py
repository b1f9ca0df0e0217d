"""The memory a piece of work will take, judged from the sizes its input declares, before anything is allocated.

Inputs declare sizes that can ask for far more than the machine has: a 486 KiB .npz of compressed zeros
declares 2 GB of float images, `head: {channels: 10000000}` a 12.8-billion-weight classifier, `nas latency
--batch-size 4096 --resolution 4096` a 824 GB input batch. Each is estimated here from the declared shapes
and refused in one line that names the input, the size and the memory there is, instead of a multi-GB
allocation that ends in a traceback or the kernel's OOM killer.

The network estimates count what dominates (convolution and linear weights; the feature maps a forward pass
keeps) and leave out the small rest (batch-norm scales, biases, the optimizer's share), so they are a floor:
work they pass can still be refused later by torch itself, but nothing they refuse could have run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from nas.errors import NasError
from nas.spec import NetworkSpec

FLOAT_BYTES = 4


def available_bytes() -> int:
    """Memory this process can still take: the kernel's MemAvailable, capped by a cgroup limit when one is set."""
    free = _meminfo_available()
    limit = _cgroup_room()
    return min(free, limit) if limit is not None else free


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):       # no sysconf (Windows): nothing to judge by
        return 1 << 62


def _cgroup_room() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def shown_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"


def require_memory(need: int, what: str, fix: str) -> None:
    """Refuse work that needs more memory than is free, in one line: `what` needs `need` bytes; `fix` says what to
    change."""
    free = available_bytes()
    if need > free:
        raise NasError(f"{what} needs about {shown_bytes(need)} of memory, more than the {shown_bytes(free)} this "
                       f"machine has free: {fix}")


def image_bytes(images: int, channels: int, side: int, itemsize: int = FLOAT_BYTES) -> int:
    return images * channels * side * side * itemsize


def network_weights(spec: NetworkSpec, num_classes: int, in_channels: int = 3) -> int:
    """Convolution and linear weights of `spec`'s network, counted stage by stage (a stage's repeated blocks
    alike), so that a spec declaring a million repeats is judged without building a million blocks."""
    total = in_channels * 9 * spec.stem_channels
    in_ch = spec.stem_channels
    for stage in spec.stages:
        total += _block_weights(stage.block, in_ch, stage.channels, stage.expand, stage.kernel, stage.se)
        total += (stage.repeats - 1) * _block_weights(stage.block, stage.channels, stage.channels, stage.expand,
                                                      stage.kernel, stage.se)
        in_ch = stage.channels
    return total + in_ch * spec.head_channels + spec.head_channels * num_classes


def _block_weights(block: str, in_ch: int, out_ch: int, expand: int, kernel: int, se: float) -> int:
    mid = in_ch * expand
    if block == "fused_mbconv":
        return kernel * kernel * in_ch * out_ch if expand == 1 else kernel * kernel * in_ch * mid + mid * out_ch
    squeeze = 2 * mid * max(1, int(in_ch * se)) if se else 0
    return (in_ch * mid if expand != 1 else 0) + kernel * kernel * mid + squeeze + mid * out_ch


def activation_elements(spec: NetworkSpec, resolution: int, training: bool) -> int:
    """Feature-map elements per image: every block's expanded and output maps when training (backward keeps
    them), the largest block's input, expanded and output maps together for inference."""
    side = math.ceil(resolution / spec.stem_stride)
    kept = largest = spec.stem_channels * side * side
    in_ch = spec.stem_channels
    for stage in spec.stages:
        for repeat in range(min(stage.repeats, 2)):         # a stage's later blocks are all like its second
            stride = stage.stride if repeat == 0 else 1
            out_side = math.ceil(side / stride)
            mid = in_ch * stage.expand
            maps = in_ch * side * side + mid * (side * side + out_side * out_side) + stage.channels * out_side ** 2
            kept += maps * (1 if repeat == 0 else stage.repeats - 1)
            largest = max(largest, maps)
            side, in_ch = out_side, stage.channels
    return kept if training else largest


def require_network_memory(spec: NetworkSpec, num_classes: int, in_channels: int = 3) -> None:
    weights = network_weights(spec, num_classes, in_channels)
    require_memory(weights * FLOAT_BYTES, f"a network of {weights / 1e6:,.0f} M weights ({spec.stages[-1].channels} "
                                          f"channels in its last stage, a head of {spec.head_channels}, {num_classes} "
                                          f"classes)", "use fewer channels, repeats or classes")


def require_batch_memory(spec: NetworkSpec, resolution: int, batch: int, training: bool, in_channels: int = 3) -> None:
    """A batch of `batch` images through `spec` at `resolution`: input and feature maps, forward (inference) or
    forward and backward (training: the gradients of the maps as well)."""
    per_image = activation_elements(spec, resolution, training) * (2 if training else 1) + in_channels * resolution ** 2
    require_memory(batch * per_image * FLOAT_BYTES,
                   f"a batch of {batch} image(s) at {resolution} px through {spec.name!r}",
                   "use a smaller batch size or resolution")
