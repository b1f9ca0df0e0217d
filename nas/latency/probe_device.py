"""The device probe: times the ONNX files of a probe folder on the machine it runs on, with nothing of effnas.

`nas latency probe export` writes a folder of ONNX files, a manifest (manifest.json: what each file is) and a
copy of this file. On the device, with only the Python standard library, numpy and onnxruntime installed:

    python3 probe_device.py FOLDER [--provider CPUExecutionProvider] [--threads T] [--out RESULTS.json]

It loads every file as an ONNX Runtime session on the execution provider named (any the installed onnxruntime
lists: CPU, CUDA, TensorRT, OpenVINO, CoreML, ...), runs each `--warmup` times untimed, then times them in
`--repeats` rounds: each round runs every file once, in an order shuffled anew each round (seeded by the round's
number), so a burst of load costs each file a run, which its median drops, and no file always runs after the
same neighbour. It writes one JSON: the device (platform, CPU model, onnxruntime version, threads), the provider,
and per file its runs, median and 10th/90th percentiles (nas latency probe import reads it).

Resuming: the round is the unit. After each finished round the results file is rewritten whole (a temporary
file renamed over it), so it always holds complete rounds only. A probe killed at any point (kill -9, power
loss) loses the round it was in; run the same command again and it keeps every recorded round, warms up again
(untimed) and times only the rounds still missing: no recorded run is timed twice, none is lost, and every file
ends with exactly `--repeats` timed runs. A results file from another manifest, device, provider, thread count
or warm-up is refused rather than mixed. Bad input (a manifest of another version or with missing fields or
files, an unknown provider) is one line on stderr and exit status 2.

Only the standard library at import (numpy and onnxruntime are imported when the probe runs), so effnas reads
manifests and results with the same checks (nas.latency.probe).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "effnas-probe-manifest/1"
RESULTS_FORMAT = "effnas-probe-results/1"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
KINDS = ("piece", "network")
_FILE_FIELDS = {"id": str, "file": str, "what": str, "key": dict, "resolution": int, "batch": int,
                "channels_last": bool, "input_shape": list}
KILL_AFTER_RUNS = "EFFNAS_PROBE_KILL_AFTER_RUNS"
"""Testing aid: the probe sends itself SIGKILL after this many timed runs (a kill -9 at a known point)."""


class ProbeInputError(Exception):
    """Bad input to the probe or to its reader: the message is one line naming the problem and the fix."""


def check_manifest(manifest: Any, where: str) -> list[dict[str, Any]]:
    """The manifest's file entries, or ProbeInputError when this probe does not understand it."""
    fix = "export it again with nas latency probe export, and run the probe copied beside it"
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ProbeInputError(f"{where}: manifest format {found!r}, this probe reads {MANIFEST_FORMAT!r}: {fix}")
    for field, kind in (("files", list), ("batch_size", int), ("warmup", int), ("repeats", int),
                        ("definition", dict)):
        if not isinstance(manifest.get(field), kind):
            raise ProbeInputError(f"{where}: manifest field {field!r} is missing or not a {kind.__name__}: {fix}")
    files, ids = manifest["files"], set()
    if not files:
        raise ProbeInputError(f"{where}: the manifest lists no files: {fix}")
    for i, f in enumerate(files):
        bad = next((k for k, kind in _FILE_FIELDS.items() if not isinstance(f, dict) or not isinstance(f.get(k), kind)),
                   None)
        if bad or f["what"] not in KINDS or f["id"] in ids or Path(f["file"]).name != f["file"]:
            why = (f"field {bad!r} missing or mistyped" if bad else f"what {f['what']!r} is not one of {KINDS}"
                   if f["what"] not in KINDS else f"id {f['id']!r} repeats" if f["id"] in ids
                   else f"file {f['file']!r} is not a plain file name")
            raise ProbeInputError(f"{where}: manifest entry {i}: {why}: {fix}")
        ids.add(f["id"])
    return files


def manifest_digest(manifest: dict[str, Any]) -> str:
    """Identifies a manifest: results carry it, so that runs of two different folders are never mixed."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ProbeInputError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeInputError(f"{path}: not a readable JSON {what} ({e})") from None


def check_results(results: Any, where: str) -> dict[str, Any]:
    """Results the probe wrote, checked: its format, its manifest, and every recorded round a finite positive
    time for each file of the manifest and no other. Raises ProbeInputError."""
    fix = "run the probe again into a new --out file"
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        found = results.get("format") if isinstance(results, dict) else None
        raise ProbeInputError(f"{where}: results format {found!r}, expected {RESULTS_FORMAT!r}: {fix}")
    for field, kind in (("manifest", dict), ("manifest_digest", str), ("provider", str), ("device", dict),
                        ("threads", int), ("warmup", int), ("repeats", int), ("rounds", list)):
        if not isinstance(results.get(field), kind):
            raise ProbeInputError(f"{where}: results field {field!r} is missing or not a {kind.__name__}: {fix}")
    ids = {f["id"] for f in check_manifest(results["manifest"], where)}
    if manifest_digest(results["manifest"]) != results["manifest_digest"]:
        raise ProbeInputError(f"{where}: the manifest inside the results was changed after timing: {fix}")
    for k, one in enumerate(results["rounds"]):
        if not isinstance(one, dict):
            raise ProbeInputError(f"{where}: round {k + 1} is not a mapping of file ids to times: {fix}")
        unknown = sorted(set(one) - ids)
        if unknown:
            raise ProbeInputError(f"{where}: round {k + 1} has timings for {unknown[0]!r}, which the manifest does "
                                  f"not hold: {fix}")
        missing = sorted(ids - set(one))
        if missing:
            raise ProbeInputError(f"{where}: round {k + 1} lacks a timing of {missing[0]!r}: {fix}")
        bad = next((i for i, ms in one.items() if not isinstance(ms, (int, float)) or isinstance(ms, bool)
                    or not math.isfinite(ms) or ms <= 0), None)
        if bad is not None:
            raise ProbeInputError(f"{where}: round {k + 1} times {bad!r} at {one[bad]!r} ms, not a positive number: "
                                  f"{fix}")
    return results


def quantile(sorted_ms: list[float], q: float) -> float:
    """The nearest-rank quantile effnas uses for its own timings (nas.latency.measure)."""
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))]


def summaries(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per file: its timed runs' median and 10th/90th percentiles in ms."""
    out = {}
    for i in rounds[0] if rounds else ():
        ms = sorted(r[i] for r in rounds)
        out[i] = {"median_ms": statistics.median(ms), "p10_ms": quantile(ms, 0.1), "p90_ms": quantile(ms, 0.9),
                  "runs": len(ms)}
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _gpu_model() -> str | None:
    """The NVIDIA GPU's name, where nvidia-smi answers (CUDA and TensorRT providers); None elsewhere."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_description(ort: Any, provider: str, threads: int) -> dict[str, Any]:
    gpu = _gpu_model() if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else None
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
            "cores": os.cpu_count(), "gpu": gpu, "onnxruntime": ort.__version__, "provider": provider,
            "threads": threads, "python": platform.python_version()}


def _save(results: dict[str, Any], path: Path) -> None:
    """The whole results file written to a temporary file and renamed over `path`: a reader, or a rerun after a
    kill, sees the previous round's file or this one, never half of one."""
    results["files"] = summaries(results["rounds"])
    results["complete"] = len(results["rounds"]) >= results["repeats"]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ProbeInputError(f"--out {path}: cannot write there ({e.strerror}): give a writable --out") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


_SAME_DEVICE = ("cpu", "gpu", "machine", "onnxruntime")


def _resume(path: Path, manifest: dict[str, Any], device: dict[str, Any], provider: str, threads: int, warmup: int,
            repeats: int) -> list[dict[str, float]]:
    """The rounds already recorded in `path` for this very measurement; refused when they are another's (another
    manifest, device, provider, thread count or warm-up)."""
    if not path.exists():
        return []
    old = check_results(read_json(path, "results file"), str(path))
    theirs = {"manifest": old["manifest_digest"], "provider": old["provider"], "threads": old["threads"],
              "warmup": old["warmup"], **{k: old["device"].get(k) for k in _SAME_DEVICE}}
    ours = {"manifest": manifest_digest(manifest), "provider": provider, "threads": threads, "warmup": warmup,
            **{k: device.get(k) for k in _SAME_DEVICE}}
    changed = next((k for k in ours if ours[k] != theirs[k]), None)
    if changed:
        raise ProbeInputError(f"{path} holds timings with {changed} {theirs[changed]}, not {ours[changed]}: give "
                              f"another --out, or the same settings to resume it")
    if len(old["rounds"]) > repeats:
        raise ProbeInputError(f"{path} already holds {len(old['rounds'])} rounds, more than --repeats {repeats}: "
                              f"give --repeats {len(old['rounds'])} or more")
    return list(old["rounds"])


def probe(folder: Path, provider: str, threads: int | None, out: Path | None, warmup: int | None,
          repeats: int | None) -> Path:
    """Time every file of the probe folder (see the module's docstring); returns the results file."""
    manifest_path = folder / MANIFEST_FILE if folder.is_dir() else folder
    folder = manifest_path.parent
    manifest = read_json(manifest_path, "manifest")
    files = check_manifest(manifest, str(manifest_path))
    missing = [f["file"] for f in files if not (folder / f["file"]).is_file()]
    if missing:
        raise ProbeInputError(f"{folder}: {len(missing)} files of the manifest are missing (first: {missing[0]}): copy "
                              f"the whole folder that nas latency probe export wrote")
    warmup = manifest["warmup"] if warmup is None else warmup
    repeats = manifest["repeats"] if repeats is None else repeats
    if warmup < 0 or repeats < 3:
        raise ProbeInputError(f"--warmup {warmup} --repeats {repeats}: give warm-up runs >= 0 and repeats >= 3")
    threads = threads or default_threads()
    if threads < 1:
        raise ProbeInputError(f"--threads {threads}: give 1 or more")
    out = out or folder / RESULTS_FILE
    import numpy as np
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise ProbeInputError(f"--provider {provider}: this onnxruntime {ort.__version__} offers "
                              f"{', '.join(ort.get_available_providers())}: name one of them, or install the "
                              f"onnxruntime build that has it")
    device = device_description(ort, provider, threads)
    rounds = _resume(out, manifest, device, provider, threads, warmup, repeats)
    results = {"format": RESULTS_FORMAT, "manifest": manifest, "manifest_digest": manifest_digest(manifest),
               "provider": provider, "device": device, "threads": threads, "warmup": warmup, "repeats": repeats,
               "rounds": rounds}
    if rounds:
        _say(f"{out}: {len(rounds)} of {repeats} rounds already timed: resuming")
    if len(rounds) >= repeats:
        _save(results, out)
        return out
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
    runs = {}
    rng = np.random.default_rng(0)
    for n, f in enumerate(files, 1):
        try:
            session = ort.InferenceSession(str(folder / f["file"]), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise ProbeInputError(f"{folder / f['file']}: onnxruntime cannot load it ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}): export the folder again") from None
        feed = {session.get_inputs()[0].name: rng.standard_normal(f["input_shape"]).astype(np.float32)}
        runs[f["id"]] = (lambda s=session, x=feed: s.run(None, x))
        if n % 50 == 0 or n == len(files):
            _say(f"loaded {n}/{len(files)} files on {provider}")
    _say(f"warming up: {warmup} untimed runs of each of {len(files)} files")
    for run in runs.values():
        for _ in range(warmup):
            run()
    _say(f"timing {len(files)} files in rounds {len(rounds) + 1}-{repeats} on {provider}, {threads} threads "
         f"({device['cpu']}{', ' + device['gpu'] if device['gpu'] else ''}); results after each round in {out}")
    kill_after = int(os.environ.get(KILL_AFTER_RUNS, "0"))
    ids, timed, started = list(runs), 0, time.monotonic()
    first = len(rounds)
    for k in range(first, repeats):
        order = list(ids)
        random.Random(k).shuffle(order)
        this: dict[str, float] = {}
        for i in order:
            t0 = time.perf_counter()
            runs[i]()
            this[i] = (time.perf_counter() - t0) * 1e3
            timed += 1
            if kill_after and timed >= kill_after:
                os.kill(os.getpid(), 9)
        results["rounds"].append(this)
        _save(results, out)
        done = k + 1 - first
        left = (time.monotonic() - started) / done * (repeats - k - 1)
        _say(f"round {k + 1}/{repeats} timed ({len(ids)} files){f', about {_duration(left)} left' if left else ''}")
    _say(f"wrote {out}: {len(ids)} files, {repeats} timed runs each, on {provider}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="probe_device.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parent),
                   help="the folder nas latency probe export wrote, or its manifest.json (default: this file's folder)")
    p.add_argument("--provider", default="CPUExecutionProvider",
                   help="ONNX Runtime execution provider (default CPUExecutionProvider; --providers lists them)")
    p.add_argument("--providers", action="store_true", help="list the execution providers this onnxruntime offers")
    p.add_argument("--threads", type=int, help="intra-op threads (default: every core this process may use)")
    p.add_argument("--warmup", type=int, help="untimed runs of each file first (default: the manifest's)")
    p.add_argument("--repeats", type=int, help="timed rounds (default: the manifest's)")
    p.add_argument("--out", help=f"results JSON (default: FOLDER/{RESULTS_FILE}); an unfinished one is resumed")
    args = p.parse_args(argv)
    try:
        if args.providers:
            import onnxruntime as ort
            print("\n".join(ort.get_available_providers()))
            return 0
        probe(Path(args.folder), args.provider, args.threads, Path(args.out) if args.out else None, args.warmup,
              args.repeats)
    except ProbeInputError as e:
        print(f"probe_device.py: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"probe_device.py: {e.name or e} is not installed: pip install onnxruntime numpy", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("probe_device.py: interrupted; finished rounds are kept: run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
