"""Does a study give the same answer under another study seed? Runs one study file (default: the
quickstart) once per seed, each as its own study in a scratch folder, and says whether the three runs
name the same winner, or tie sets that all hold one candidate, or disagree.

    .venv/bin/python benchmarks/seed_repeatability.py [STUDY] [--seeds 0,1,2] [--folder DIR]

A study seed moves the data split, the initial weights and the batch order: everything but the grid.
Each run is a whole `nas scale run` (the quickstart: about 2.5 minutes on 2 cores), timed. With --folder the runs
stay there as studies <name>-seed<N> (to show, confirm or resume them); without, in a scratch folder removed after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nas.config import resolve_study_path


def run(study: dict, seed: int, folder: Path) -> dict:
    copy = dict(study, seed=seed, name=f"{study['name']}-seed{seed}")
    path = folder / f"{copy['name']}.yaml"
    path.write_text(yaml.safe_dump(copy, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "nas.cli", "scale", "run", str(path), "--phi", "0-1",
                           "--top", "1000", "--format", "json"], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"seed {seed}: nas scale run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="quickstart")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folder", type=Path, help="keep the runs here (default: a scratch folder, removed)")
    args = parser.parse_args()
    study = yaml.safe_load(resolve_study_path(args.study).read_text())
    answers = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder.resolve() if args.folder else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.monotonic()
            report = run(study, seed, folder)
            minutes, seconds = divmod(round(time.monotonic() - start), 60)
            rows = {r["trial"]: r for r in report["winners"]}
            tied = {(r["alpha"], r["beta"]) for r in report["winners"] if r["tied_best"]}
            best = (report["best"]["alpha"], report["best"]["beta"])
            answers[seed] = (best, tied | {best})
            print(f"seed {seed}: {report['verdict']}; tie set {sorted(tied | {best})} "
                  f"({len(rows)} candidates ranked; {minutes} min {seconds} s); {report['rank_stability']}")
    winners = {best for best, _ in answers.values()}
    common = set.intersection(*(tied for _, tied in answers.values()))
    if len(winners) == 1:
        print(f"same winner under every seed: alpha {next(iter(winners))[0]:g}, beta {next(iter(winners))[1]:g}")
    elif common:
        print(f"different best candidates {sorted(winners)}, but every tie set holds {sorted(common)}: "
              f"the seeds agree within the noise")
    else:
        print(f"the seeds disagree: best candidates {sorted(winners)}, and no candidate is in every tie set")


if __name__ == "__main__":
    main()
