"""A latency-searched family beside the paper's B0..Bk and Dollar et al.'s fast scaling, all timed in one
interleaved measurement on this machine (so the three share whatever the machine's speed does meanwhile).

    .venv/bin/python benchmarks/latency_families.py --alpha 1 --beta 1.2 --resolutions 224,288,409,523,635

The searched family is given by its coefficients and the resolutions its run solved (the `resolution`
column of `nas scale run`'s family table: member phi has depth alpha^phi, width beta^phi and that
resolution); the paper's members are its table (B0..B{k}); fast scaling takes a FLOPs factor s = 2^phi as
depth s^0.1, width s^0.4, resolution s^0.05 (nominal: rounding moves its cost). Prints one row per member
with FLOPs, the median and its 10-90 % band, and latency / B0 against 2^phi.
"""

from __future__ import annotations

import argparse

from nas.config import LatencySettings
from nas.flops import flops_at
from nas.latency import measure_specs
from nas.scaling import compound, fast_multipliers, paper_member, scale
from nas.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--beta", type=float, required=True)
    parser.add_argument("--resolutions", required=True, help="the searched members' resolutions, phi = 0, 1, ...")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    b0 = load_spec("efficientnet_b0")
    resolutions = [int(r) for r in args.resolutions.split(",")]
    members = []
    for phi, r in enumerate(resolutions):
        members.append(("searched", phi, compound(b0, args.alpha, args.beta, 1.0, phi).replace(resolution=r)))
        members.append(("paper", phi, paper_member(b0, phi)))
        if phi:
            m = fast_multipliers(2.0 ** phi)
            members.append(("fast", phi, scale(b0, m.width, m.depth, round(224 * m.resolution), name=f"fast-phi{phi}")))
    settings = LatencySettings(batch_size=args.batch_size, threads=args.threads)
    print(f"timing {len(members)} networks interleaved, {settings.repeats} rounds ({args.threads} threads, "
          f"batch {args.batch_size})", flush=True)
    timed = measure_specs([spec for _, _, spec in members], settings)
    base_ms = next(t.median_ms for (family, phi, _), t in zip(members, timed) if family == "paper" and phi == 0)
    base_flops = flops_at(b0, 224)
    print(f"{'family':9} {'phi':>3} {'px':>4} {'GFLOPs':>7} {'FLOPs/B0':>8} {'ms':>8} {'10-90 %':>15} "
          f"{'ms/B0':>6} {'2^phi':>5}")
    for (family, phi, spec), t in sorted(zip(members, timed), key=lambda m: (m[0][0], m[0][1])):
        flops = flops_at(spec, spec.resolution)
        print(f"{family:9} {phi:3d} {spec.resolution:4d} {flops / 1e9:7.3f} {flops / base_flops:8.2f} "
              f"{t.median_ms:8.1f} {f'{t.p10_ms:.1f}-{t.p90_ms:.1f}':>15} {t.median_ms / base_ms:6.2f} "
              f"{2 ** phi:5d}")


if __name__ == "__main__":
    main()
