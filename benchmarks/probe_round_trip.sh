#!/usr/bin/env bash
# One full round trip of a latency table timed on "another device" by the probe (docs/latency.md, "Tables for
# another device"): export on the search machine, time in a separate virtual environment that has only
# onnxruntime and numpy (standing in for the device), import, and print the table's held-out figures against
# the issue's bar (>= 90 % of held-out networks within 10 %, Spearman rho >= 0.95). Run it on a quiet machine.
#
#   benchmarks/probe_round_trip.sh [WORK_DIR]
#
# Sizes come from the environment (defaults: a table as `nas latency table build` draws it at B0's 224 px):
#   SAMPLES=8 CALIBRATION=12 HELD_OUT=24 RESOLUTION=224 THREADS=1 WARMUP=10 REPEATS=60
#   PROBE_VENV=WORK_DIR/probe-venv   (created with python3 -m venv and pip install onnxruntime numpy if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/probe-round-trip.XXXXXX)}
SAMPLES=${SAMPLES:-8} CALIBRATION=${CALIBRATION:-12} HELD_OUT=${HELD_OUT:-24} RESOLUTION=${RESOLUTION:-224}
THREADS=${THREADS:-1} WARMUP=${WARMUP:-10} REPEATS=${REPEATS:-60}
venv=${PROBE_VENV:-$work/probe-venv}
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime numpy
fi
if "$venv/bin/python" -I -c "import torch" 2>/dev/null || "$venv/bin/python" -I -c "import nas" 2>/dev/null; then
    echo "probe_round_trip: $venv can import torch or nas: give a PROBE_VENV with only onnxruntime and numpy" >&2
    exit 2
fi
now() { date +%s.%N; }
t0=$(now)
.venv/bin/nas latency probe export --out "$work/probe" --samples "$SAMPLES" --calibration "$CALIBRATION" \
    --held-out "$HELD_OUT" --resolution "$RESOLUTION" --warmup "$WARMUP" --repeats "$REPEATS" --quiet
t1=$(now)
"$venv/bin/python" -I "$work/probe/probe_device.py" "$work/probe" --threads "$THREADS"
t2=$(now)
.venv/bin/nas latency probe import "$work/probe/results.json" --out "$work/table.json" --format json --quiet \
    > "$work/import.json"
t3=$(now)
.venv/bin/python - "$work" "$t0" "$t1" "$t2" "$t3" <<'EOF'
import json, sys
from pathlib import Path
work, (t0, t1, t2, t3) = Path(sys.argv[1]), map(float, sys.argv[2:])
summary = json.loads((work / "import.json").read_text())["summary"]
table = json.loads((work / "table.json").read_text())
results = json.loads((work / "probe" / "results.json").read_text())
c = table["conditions"]
files = results["manifest"]["files"]
print(f"device: {c['hardware']}, {c['provider']}, onnxruntime {c['onnxruntime']}, {c['threads']} threads, "
      f"batch {c['batch_size']}")
print(f"files: {sum(f['what'] == 'piece' for f in files)} pieces, {sum(f['what'] == 'network' for f in files)} "
      f"networks; {results['warmup']} warm-up runs, {results['repeats']} rounds")
print(f"wall: export {t1 - t0:.0f} s, probe {t2 - t1:.0f} s, import {t3 - t2:.0f} s")
cal = table["calibration"]
print(f"calibration: {cal['scale']:.3f} x the sum + {cal['per_piece_ms']:.3f} ms a piece, on {cal['networks']} "
      f"networks (uncalibrated sums on the held-out: mean abs error {summary['raw_mean_abs_error_pct']:.1f} %, "
      f"bias {summary['raw_bias_pct']:+.1f} %)")
ok = summary["within_10_pct"] >= 90 and summary["spearman"] >= 0.95
print(f"held-out ({summary['networks']} networks): {summary['within_10_pct']:.0f} % within 10 %, p90 "
      f"{summary['p90_abs_error_pct']:.1f} %, mean abs error {summary['mean_abs_error_pct']:.1f} %, bias "
      f"{summary['bias_pct']:+.1f} %, Spearman rho {summary['spearman']:.3f}: "
      f"{'meets' if ok else 'misses'} the bar (>= 90 % within 10 %, rho >= 0.95)")
EOF
