"""Budget racing (successive halving) on simulated studies: how often its answer holds the flat grid's best,
and what share of the flat grid's training it spends. Every tie is decided by the study's own paired test
(nas.search.results.tie_set) on runs simulated image by image (nas.search.racing.simulate_halving).

    .venv/bin/python benchmarks/budget_racing.py [--studies 200] [--images 2000]

Scenarios: 12 candidates whose true accuracies spread over 20 points (0.80 for the best, then 0.79, 0.78,
..., 0.60), 1 or 2 seeds each, 3 rungs (1/9, 1/3 and all of the budget, eta 3), and how differently a short
training ranks candidates (rung noise, in logits of ability, at 1/9 and 1/3 of the budget). Training is
counted both ways a rung can train (search.rung_training): anew on its share (restart), or continuing the
lower rung's run (continue: a rung costs only the share it adds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nas.search.racing import simulate_halving
from nas.search.results import tie_set

MEANS = [0.80, 0.79, 0.78, 0.77, 0.76, 0.75, 0.74, 0.72, 0.70, 0.68, 0.65, 0.60]
RUNG_NOISE = [(0.0, 0.0, 0.0), (0.1, 0.05, 0.0), (0.2, 0.1, 0.0), (0.3, 0.15, 0.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples of each paired test")
    args = parser.parse_args()
    print("| seeds | rung noise (1/9, 1/3) | answer holds the flat best | training vs the flat grid (restart) | "
          "(continue) | candidates at the full budget |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seeds in (1, 2):
        for noise in RUNG_NOISE:
            rng, start = np.random.default_rng(0), time.monotonic()
            sims = [simulate_halving(MEANS, noise, seed_sd=0.05, affinity_sd=1.0, images=args.images, seeds=seeds,
                                     eta=3, tied=lambda res: tie_set(res, args.images, args.resamples)[0], rng=rng)
                    for _ in range(args.studies)]
            kept = sum(s.kept_verdict for s in sims) / len(sims)
            cost = statistics.fmean(s.budget / s.flat_budget for s in sims)
            continued = statistics.fmean(s.continued_budget / s.flat_budget for s in sims)
            print(f"| {seeds} | {noise[0]:g}, {noise[1]:g} | {kept:.1%} | {cost:.1%} | {continued:.1%} | "
                  f"{statistics.fmean(len(s.survivors) for s in sims):.1f} | "
                  f"<!-- {time.monotonic() - start:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
