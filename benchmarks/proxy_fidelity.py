"""Proxy fidelity: does a study's ranking of its candidates at its own training budget hold at 10x the budget?

    .venv/bin/python benchmarks/proxy_fidelity.py [STUDY ...] [--candidates 8] [--seeds 2] [--factor 10]
                                                  [--folder fidelity-runs]

For each study (default: cluttered and quickstart), `nas scale calibrate STUDY --candidates 8 --budgets
1,FACTOR --seeds 2` in FOLDER: 8 distinct proxy networks spread over the study's grid, each trained 2 seeds
at the study's budget and at FACTOR times it, as stored trials (run the script again to resume an interrupted
run). Prints one markdown row a study: Kendall's tau-b between the two rankings with its 95 % interval over
the candidates, the best candidate at each budget, and the wall time; the figures are FOLDER/<study>/calibration.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def calibrate(study: str, folder: Path, candidates: int, seeds: int, factor: float) -> tuple[list[dict], float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nas.cli", "scale", "calibrate", study, "--candidates",
                           str(candidates), "--budgets", f"1,{factor:g}", "--seeds", str(seeds), "--out",
                           str(folder / study), "--format", "json"], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{study}: nas scale calibrate failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=["cluttered", "quickstart"])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--folder", type=Path, default=Path("fidelity-runs"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"| study | candidates x seeds | tau-b, 1x against {args.factor:g}x (95 % interval) | best at 1x | "
          f"best at {args.factor:g}x | wall time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for study in args.studies:
        rows, wall = calibrate(study, args.folder.resolve(), args.candidates, args.seeds, args.factor)
        low, high = rows[0], rows[-1]
        print(f"| {study} | {args.candidates} x {args.seeds} | {low['tau_b']:.2f} ({low['tau_low']:.2f} to "
              f"{low['tau_high']:.2f}) | alpha {low['best_alpha']:g}, beta {low['best_beta']:g} | alpha "
              f"{high['best_alpha']:g}, beta {high['best_beta']:g} | {wall / 60:.0f} min |", flush=True)


if __name__ == "__main__":
    main()
