"""How much a latency lookup table saves a coefficient search, and what it changes: the grid's constraint
checks (feasible_grid) of a latency study run twice, once predicting every candidate from the study's table
(built first when missing, as `nas scale run` does) and once measuring every candidate whole.

    .venv/bin/python benchmarks/latency_predictor.py [STUDY]     # default latency_quickstart

Prints the table's line (its held-out error), the time to build it, the time each way takes, and the
feasible points that only one of the two finds. Run it on an idle machine: both ways time real networks.
"""

from __future__ import annotations

import argparse
import time

from nas.config import load_study
from nas.cost import latency_cost
from nas.latency import search_table
from nas.search.constraint import feasible_grid
from nas.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="latency_quickstart")
    cfg = load_study(parser.parse_args().study)
    s, base = cfg.search, load_spec(cfg.space)
    start = time.perf_counter()
    table = search_table(cfg, lambda line: print(line, flush=True) if not line.startswith(("[", "table:")) else None)
    print(f"table ready in {time.perf_counter() - start:.1f} s", flush=True)
    if table is None:
        raise SystemExit("the table is too inaccurate to compare with: rebuild it on an idle machine")
    found = {}
    for way, cost in (("table", latency_cost(s.latency, 3, 1000, table)), ("measure", latency_cost(s.latency, 3, 1000))):
        start = time.perf_counter()
        feasible, examined = feasible_grid(base, s.alpha, s.beta, s.step, cost, s.target, s.tolerance)
        found[way] = {(c.alpha, c.beta): c for c in feasible}
        print(f"{way}: constraint checks of {examined} grid points in {time.perf_counter() - start:.1f} s, "
              f"{len(feasible)} feasible", flush=True)
    both = found["table"].keys() & found["measure"].keys()
    print(f"feasible both ways: {len(both)}; resolutions solved (table/measured): " + ", ".join(
        f"({a:g}, {b:g}) {found['table'][a, b].resolution1}/{found['measure'][a, b].resolution1}"
        for a, b in sorted(both)))
    for way, other in (("table", "measure"), ("measure", "table")):
        only = sorted(found[way].keys() - found[other].keys())
        print(f"feasible only by {way}: " + (", ".join(
            f"({a:g}, {b:g}) at {found[way][a, b].resolution1} px, ratio {found[way][a, b].ratio:.3f}"
            for a, b in only) or "none"))


if __name__ == "__main__":
    main()
