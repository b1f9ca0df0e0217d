"""Proxy fidelity: does a study's ranking of its candidates at its own training budget hold at a larger one?

    .venv/bin/python benchmarks/proxy_fidelity.py [STUDY ...] [--candidates 8] [--seeds 2] [--budgets 1,10]
                                                  [--workers N] [--folder fidelity-runs]

For each study (default: cluttered and quickstart), `nas scale calibrate STUDY --candidates 8 --budgets BUDGETS
--seeds 2` in FOLDER: 8 distinct proxy networks spread over the study's grid, each trained 2 seeds at every
budget (times the study's training; the largest is the reference), as stored trials (run the script again to
resume an interrupted run). Prints one markdown row per study and budget: Kendall's tau-b between that budget's
ranking and the largest one's, with its 95 % interval over the candidates, the best candidate at each, and the
wall time; the figures are FOLDER/<study>/calibration.png. Budgets below 1 (such as 1/9,1/3,1,10) also say how
far a budget-racing study's rungs can be trusted. The runs take the study file's `workers` unless --workers says
otherwise (cluttered: 2, one thread each, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def calibrate(study: str, folder: Path, candidates: int, seeds: int, budgets: str,
              workers: int | None) -> tuple[list[dict], float]:
    start = time.monotonic()
    command = [sys.executable, "-m", "nas.cli", "scale", "calibrate", study, "--candidates", str(candidates),
               "--budgets", budgets, "--seeds", str(seeds), "--out", str(folder / study), "--format", "json"]
    done = subprocess.run(command + ([] if workers is None else ["--workers", str(workers)]), cwd=folder,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{study}: nas scale calibrate failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=["cluttered", "quickstart"])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budgets", default="1,10", help="times the study's training; the largest is the reference")
    parser.add_argument("--workers", type=int, help="worker processes (default: the study file's workers)")
    parser.add_argument("--folder", type=Path, default=Path("fidelity-runs"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    print("| study | candidates x seeds | budget | tau-b against the largest (95 % interval) | best there | "
          "best at the largest | wall time (study) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for study in args.studies:
        rows, wall = calibrate(study, args.folder.resolve(), args.candidates, args.seeds, args.budgets,
                                args.workers)
        top = rows[-1]
        for row in rows[:-1]:
            tau = "undefined" if row["tau_b"] is None else \
                f"{row['tau_b']:.2f} ({row['tau_low']:.2f} to {row['tau_high']:.2f})"
            print(f"| {study} | {args.candidates} x {args.seeds} | {row['budget']:.3g}x vs {top['budget']:.3g}x | "
                  f"{tau} | alpha {row['best_alpha']:g}, beta {row['best_beta']:g} | alpha {top['best_alpha']:g}, "
                  f"beta {top['best_beta']:g} | {wall / 60:.0f} min |", flush=True)


if __name__ == "__main__":
    main()
