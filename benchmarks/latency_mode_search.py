"""Where a latency-mode coefficient search lands on this machine's CPU: the tiny latency study of
tests/test_scale_search.py (B0 at 64 px, grid alpha 1.0-1.2 x beta 1.0-1.1, latency timed on one thread,
batch 1), run in a scratch folder, one row per candidate with the measured latencies and the resolution
its phi = 1 network needed to cost 2x.

    .venv/bin/python benchmarks/latency_mode_search.py

What to read: how far each point had to raise its resolution to cost 2x in latency. The default suite
used to assert that some point needs more than 64 px (alpha = beta = 1 must; deeper points, whose depth
costs more latency per FLOP on a CPU, need less), which holds on a quiet machine but is a figure of its
CPU, threads and load, not a rule (about 25 s on a 2-core machine); the test keeps only what does not
depend on them. One reading on a 2-core AMD EPYC VM with other tests running beside it: all 5 points
raised it, to 70-128 px.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from optuna.trial import TrialState

from nas.config import load_study
from nas.search.runner import run_search
from nas.search.scale import ScaleJob
from nas.spec import load_spec

STUDY = """\
name: latency
space: {space}
seed: 0
proxy: {{dataset: digits, per_class: 30, resolution: 20, width: 0.25, depth: 0.25, stem_stride: 1,
        train: {{epochs: 2, batch_size: 32, threads: 1}}}}
search: {{sampler: grid, target: 2.0, alpha: [1.0, 1.2], beta: [1.0, 1.1], step: 0.1, tolerance: 0.3, cost: latency,
         latency: {{device: cpu, batch_size: 1, warmup: 2, repeats: {repeats}, threads: 1}},
         seeds: 1, trials: 4, family_phis: 2}}
pruner: {{type: none}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per network (the test's: 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        base = root / "small_base.yaml"
        base.write_text(load_spec("efficientnet_b0").replace(name="small_base", resolution=64).to_yaml())
        path = root / "latency.yaml"
        path.write_text(STUDY.format(space=base, repeats=args.repeats))
        os.chdir(root)                   # runs/latency/study.db lands in the scratch folder
        study = run_search(ScaleJob(load_study(str(path))), progress=lambda m: None)
        done = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    print(f"{'alpha':>5} {'beta':>4} {'gamma':>6} {'res0':>4} {'res1':>4} {'ms phi 0':>8} {'ms phi 1':>8} "
          f"{'ratio':>5} {'feasible':>8}")
    for t in done:
        a = t.user_attrs
        print(f"{a['alpha']:5.2f} {a['beta']:4.2f} {a['gamma']:6.3f} {a['resolution0']:4d} {a['resolution1']:4d} "
              f"{a['cost0']:8.2f} {a['cost1']:8.2f} {a['ratio']:5.2f} {str(a['feasible']):>8}")
    raised = [t for t in done if t.user_attrs["resolution1"] > 64]
    print(f"{len(raised)} of {len(done)} candidates raised the resolution above 64 px to reach 2x latency")


if __name__ == "__main__":
    main()
