"""Latency measured where the network will run: a probe folder for a device, and the device's timings read back.

`export_probe` writes one ONNX file (opset 17, fixed batch) per thing to time, a manifest saying what each file
is, and the probe (probe_device.py, which needs only onnxruntime and numpy). What a table's probe holds is what
building the table here would time (`TableNetworks.to_time`: the same pieces, calibration and held-out
networks), so `probed_table` builds the calibrated table from the device's timings with the same code as a
table timed here (`build_calibrated_table`, the device's timings standing in for this machine's). A family's
or any list of networks' probe gives each network's latency on the device (`probed_latencies`).
docs/latency.md ("Tables for another device") has the round trip.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from nas.builder import build_model
from nas.config import LatencySettings
from nas.console import counting
from nas.errors import NasError
from nas.latency import probe_device
from nas.latency.evaluate import TableAccuracy, TableNetworks, Timings, build_calibrated_table
from nas.latency.measure import Latency, Progress
from nas.latency.pieces import Piece
from nas.latency.runtimes import ONNX_OPSET, import_optional, write_onnx
from nas.latency.table import PROBED, LatencyTable
from nas.memory import require_batch_memory
from nas.spec import NetworkSpec, spec_from_dict

PROBE_SCRIPT = Path(probe_device.__file__).name
PROBE_WARMUP, PROBE_REPEATS = 10, 60
"""The probe's defaults, above a table timed here (5, 20): its rounds are cheap (169 files of a sampled B0 table,
60 rounds, 25 s on one core of a 2-core EPYC) and 20 rounds missed the held-out bar there (83 % within 10 %, p90
10.3 %) where 60 met it twice (100 % and 92 %; docs/latency.md, "Figures")."""


def piece_key(piece: Piece) -> dict[str, Any]:
    return {"piece": asdict(piece)}


def network_key(spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> dict[str, Any]:
    """A network as the manifest names it: a digest of its whole spec, at one input shape and classifier size."""
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return {"network": digest, "name": spec.name, "resolution": resolution or spec.resolution,
            "in_channels": in_channels, "num_classes": num_classes}


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


@dataclass(frozen=True)
class _Item:
    """One file of a probe folder: what it is, its key, how to build its module and its (C, H, W) input."""

    what: str
    key: dict[str, Any]
    make: Callable[[], nn.Module]
    shape: tuple[int, int, int]
    spec: NetworkSpec | None = None       # a whole network's, for the memory check before exporting


def table_definition(networks: TableNetworks) -> dict[str, Any]:
    """The manifest's definition of a table: its networks as specs, which import turns back into the table."""
    return {"kind": "table", "built_from": networks.built_from, "resolution": networks.resolution,
            **{role: [s.to_dict() for s in getattr(networks, role)] for role in ("build", "calibration", "held_out")}}


def export_table_probe(networks: TableNetworks, out: Path, batch_size: int, warmup: int, repeats: int,
                       progress: Progress | None = None) -> Path:
    """A probe folder holding exactly what building this table here would time (its pieces, its calibration and
    held-out networks whole); returns the manifest."""
    parts, _, whole = networks.to_time()
    r = networks.resolution
    items = ([_Item("piece", piece_key(p), p.module, (p.in_channels, p.resolution, p.resolution)) for p in parts]
             + [_network_item(s, r) for s in whole])
    return export_probe(items, table_definition(networks), out, batch_size, warmup, repeats, progress)


def export_networks_probe(specs: Sequence[NetworkSpec], out: Path, batch_size: int, warmup: int, repeats: int,
                          num_classes: int = 1000, progress: Progress | None = None) -> Path:
    """A probe folder of whole networks (a family, or any list), each at its own resolution; returns the manifest."""
    definition = {"kind": "networks", "networks": [s.to_dict() for s in specs]}
    return export_probe([_network_item(s, None, num_classes) for s in specs], definition, out, batch_size, warmup,
                        repeats, progress)


def _network_item(spec: NetworkSpec, resolution: int | None, num_classes: int = 1000) -> _Item:
    side = resolution or spec.resolution
    return _Item("network", network_key(spec, side, 3, num_classes),
                 lambda: build_model(spec, num_classes=num_classes, in_channels=3), (3, side, side), spec)


def export_probe(items: Sequence[_Item], definition: dict[str, Any], out: Path, batch_size: int, warmup: int,
                 repeats: int, progress: Progress | None = None) -> Path:
    """Write the ONNX files (weights from seed 0: they do not change timing), the manifest and the probe into
    `out`, a new or empty folder. A network repeated in `items` gets one file."""
    import_optional("onnx", "exporting ONNX files needs the onnx package: pip install onnx")
    LatencySettings(batch_size=batch_size, warmup=warmup, repeats=repeats)      # checks the three, as for a table
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NasError(f"--out {out} exists and is not an empty folder: give a new folder for the probe")
    unique = list({_canonical(i.key): i for i in items}.values())
    for i in unique:
        if i.spec is not None:
            require_batch_memory(i.spec, i.shape[1], batch_size, False, i.shape[0])
    entries = []
    path = out / probe_device.MANIFEST_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        with counting(progress, len(unique), "files", prefix="exporting ONNX: ") as done, torch.no_grad():
            for n, item in enumerate(unique, 1):
                torch.manual_seed(0)
                x = torch.randn(batch_size, *item.shape)
                name = f"{item.what[0]}{n:04d}"
                write_onnx(item.make().eval(), x, out / f"{name}.onnx")
                entries.append({"id": name, "file": f"{name}.onnx", "what": item.what, "key": item.key,
                                "resolution": item.shape[1], "batch": batch_size, "channels_last": False,
                                "input_shape": [batch_size, *item.shape]})
                done.advance()
        manifest = {"format": probe_device.MANIFEST_FORMAT, "opset": ONNX_OPSET, "torch": torch.__version__,
                    "batch_size": batch_size, "warmup": warmup, "repeats": repeats, "layout": "NCHW",
                    "definition": definition, "files": entries}
        shutil.copyfile(probe_device.__file__, out / PROBE_SCRIPT)
        path.write_text(json.dumps(manifest, indent=1) + "\n")      # last: a folder without it is unfinished
    except OSError as e:
        raise NasError(f"--out {out}: cannot write the probe there ({e.strerror}): give a writable folder with room "
                       f"for it (delete the unfinished one)") from None
    return path


@dataclass(frozen=True)
class ProbeResults:
    """What the probe wrote on the device, checked (probe_device.check_results) and complete."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> ProbeResults:
        path = Path(path)
        try:
            data = probe_device.check_results(probe_device.read_json(path, "probe results file"), str(path))
        except probe_device.ProbeInputError as e:
            raise NasError(str(e)) from None
        if len(data["rounds"]) < data["repeats"]:
            raise NasError(f"{path}: the probe timed {len(data['rounds'])} of {data['repeats']} rounds: run it again "
                           f"on the device with the same command to finish them, then read the results")
        return cls(path, data)

    @property
    def settings(self) -> LatencySettings:
        """The protocol the device ran: ONNX Runtime, its batch, warm-up, rounds and threads."""
        d = self.data
        return LatencySettings(batch_size=d["manifest"]["batch_size"], warmup=d["warmup"], repeats=d["repeats"],
                               threads=d["threads"], channels_last=False, runtime="onnxruntime")

    @property
    def conditions(self) -> dict[str, Any]:
        """The measurement conditions a table timed by the probe records: the device and its provider."""
        d, device = self.data, self.data["device"]
        return {"device": PROBED, "hardware": device.get("gpu") or device.get("cpu"), "runtime": "onnxruntime",
                "provider": d["provider"], "onnxruntime": device.get("onnxruntime"),
                "platform": device.get("platform"), "batch_size": d["manifest"]["batch_size"],
                "channels_last": False, "threads": d["threads"]}

    def describe(self) -> str:
        c = self.conditions
        return (f"timed by the probe on {c['hardware']} ({c['provider']}, onnxruntime {c['onnxruntime']}, "
                f"{c['threads']} threads, batch {c['batch_size']})")

    def _latencies(self) -> dict[str, Latency]:
        batch = self.data["manifest"]["batch_size"]
        files = probe_device.summaries(self.data["rounds"])        # from the recorded runs themselves
        return {_canonical(f["key"]): Latency(files[f["id"]]["median_ms"], files[f["id"]]["p10_ms"],
                                              files[f["id"]]["p90_ms"], batch, PROBED)
                for f in self.data["manifest"]["files"]}

    def latency(self, key: dict[str, Any], what: str) -> Latency:
        """The device's latency of the file with this key; a one-line error naming `what` when none has it."""
        found = self._latencies().get(_canonical(key))
        if found is None:
            raise NasError(f"{self.path} has no timing of {what}: these are the timings of another export; export "
                           f"a probe for it (nas latency probe export), time it on the device and read those results")
        return found

    def timings(self, resolution: int | None) -> Timings:
        """The device's timings of pieces and networks, as a table build asks for them (nas.latency.evaluate)."""
        def lookup(parts: Sequence[Piece], specs: Sequence[NetworkSpec]) -> tuple[list[Latency], list[Latency]]:
            return ([self.latency(piece_key(p), str(p)) for p in parts],
                    [self.latency(network_key(s, resolution), f"{s.name} at {resolution or s.resolution} px")
                     for s in specs])
        return lookup


def probed_table(results: ProbeResults, progress: Progress | None = None) -> tuple[LatencyTable, TableAccuracy]:
    """The calibrated table of a table's probe, from the device's timings: the table the manifest defines, built,
    calibrated and judged on its held-out networks by the same code as a table timed here."""
    d = results.data["manifest"]["definition"]
    if d.get("kind") != "table":
        raise NasError(f"{results.path}: these are timings of a list of networks, not of a table's pieces: read "
                       f"them with nas materialize --latency-from, or export a table's probe (nas latency probe "
                       f"export without --networks, --preset or --alpha)")
    try:
        build, calibration, held_out = ([spec_from_dict(s, f"{results.path}: {role}") for s in d[role]]
                                        for role in ("build", "calibration", "held_out"))
        built_from, resolution = dict(d["built_from"]), d["resolution"]
    except (KeyError, TypeError) as e:
        raise NasError(f"{results.path}: the manifest's table definition is incomplete ({type(e).__name__}: {e}): "
                       f"export the probe again") from None
    return build_calibrated_table(build, calibration, held_out, results.settings, built_from, resolution, progress,
                                  timings=results.timings(resolution), conditions=results.conditions)


def probed_latencies(results: ProbeResults, specs: Sequence[NetworkSpec], num_classes: int = 1000) -> list[Latency]:
    """Each network's latency on the device, at its own resolution, from a probe that timed it whole."""
    return [results.latency(network_key(s, None, 3, num_classes), f"{s.name} at {s.resolution} px "
                            f"({num_classes} classes)") for s in specs]


def with_probed_latency(table: pd.DataFrame, members: Sequence[tuple[float, NetworkSpec]], results: ProbeResults,
                        num_classes: int = 1000) -> pd.DataFrame:
    """A family's table (nas.family.family_table) with each member's latency on the device, as the probe timed it;
    `latency_ratio` is to the member with the smallest phi, to read against target_ratio."""
    ms = pd.Series([lat.median_ms for lat in probed_latencies(results, [s for _, s in members], num_classes)],
                   index=table.index)
    return table.assign(latency_ms=ms.round(3).values, latency_ratio=(ms / ms[table["phi"].idxmin()]).round(3).values)
