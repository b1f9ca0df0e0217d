"""The compound constraint on measured FLOPs (or activations): exact fast counting, solved gamma, feasible grid."""

from __future__ import annotations

import math

import pytest

from nas.config import study_from_dict
from nas.cost import closest_resolution, flops_cost, solve_resolution
from nas.family import exact_cost_family, study_family
from nas.flops import activations_at, count_flops, flops_at
from nas.scaling import grid_points, paper_member, scale, target_member
from nas.search.constraint import ProxyFamily, feasible_grid
from nas.search.scale import ScaleJob
from nas.spec import load_spec


@pytest.mark.parametrize("space", ["efficientnet_b0", "efficientnetv2_s", "efficientnet_lite0"])
def test_rescaled_count_equals_a_direct_fvcore_count(space):
    spec = load_spec(space)
    for r in (17, 33, 96, 257):
        assert flops_at(spec, r) == count_flops(spec, r).flops


def test_rescaled_count_on_scaled_and_small_image_networks(b0):
    for spec in (paper_member(b0, 3), scale(b0, 0.5, 1.3, 32).replace(stem_stride=1)):
        for r in (15, 32, 45):
            assert flops_at(spec, r, 1, 10) == count_flops(spec, r, 1, 10).flops


def test_solved_resolution_is_the_best_integer(b0):
    cost = flops_cost(3, 1000)
    cand = solve_resolution(b0, 1.0, 1.2, cost, 2.0, 0.1)
    assert cand.resolution0 == 224 and cand.resolution1 > 224 and cand.gamma == cand.resolution1 / 224
    spec1 = target_member(b0, 1.0, 1.2, cand.resolution1)
    assert cand.cost1 == count_flops(spec1).flops and cand.cost0 == count_flops(b0).flops   # measured
    err = lambda r: abs(count_flops(spec1, r).flops / cand.cost0 - 2.0)  # noqa: E731
    assert err(cand.resolution1) <= min(err(cand.resolution1 - 1), err(cand.resolution1 + 1))
    assert cand.feasible and abs(cand.ratio - 2.0) <= 0.2


def test_rounding_makes_measured_and_nominal_ratios_differ(b0):
    # alpha 1.1 rounds B0's 16 blocks up to 23: depth alone already costs more than alpha says.
    cand = solve_resolution(b0, 1.1, 1.0, flops_cost(3, 1000), 2.0, 0.1)
    assert cand.gamma_nominal > cand.gamma
    assert cand.nominal_ratio < cand.ratio


def test_overshooting_depth_and_width_are_infeasible(b0):
    cand = solve_resolution(b0, 1.1, 1.3, flops_cost(3, 1000), 2.0, 0.1)
    assert cand.resolution1 == 224 and not cand.feasible and cand.violation > 0


def test_grid_has_only_feasible_distinct_networks(b0):
    msgs = []
    feasible, examined = feasible_grid(b0, (1.0, 1.6), (1.0, 1.3), 0.1, flops_cost(3, 1000), 2.0, 0.1, msgs.append)
    assert examined == len(msgs) < len(grid_points((1.0, 1.6), (1.0, 1.3), 0.1))   # overshooting points skipped
    assert feasible and all(abs(c.ratio / 2.0 - 1) <= 0.1 for c in feasible)
    networks = {(target_member(b0, c.alpha, c.beta, c.resolution1).stages, c.resolution1) for c in feasible}
    assert len(networks) == len(feasible)                                     # no network twice
    assert any("same network as" in m for m in msgs)


def test_proxy_family_folds_its_down_scaling_into_one_rounding(b0):
    fam = ProxyFamily(b0, width=0.5, depth=0.5, resolution=32)
    m = fam.member(1.2, 1.1, 1.15)
    assert m.resolution == round(32 * 1.15)
    assert m.width_mult == pytest.approx(0.55) and m.depth_mult == pytest.approx(0.6)
    assert fam.phi0.resolution == 32


def test_activations_cost_solves_the_resolution_on_measured_activations(b0):
    """`search.cost: activations` reaches the constraint: the phi = 1 network doubles B0's activations."""
    config = study_from_dict({"name": "acts", "space": "efficientnet_b0", "search": {"cost": "activations"}}, "t")
    cand = solve_resolution(b0, 1.2, 1.1, ScaleJob(config).cost(), 2.0, 0.1)
    spec1 = target_member(b0, 1.2, 1.1, cand.resolution1)
    assert (cand.cost0, cand.cost1) == (activations_at(b0, 224), activations_at(spec1, cand.resolution1))
    assert cand.feasible
    by_flops = solve_resolution(b0, 1.2, 1.1, flops_cost(3, 1000), 2.0, 0.1)
    assert cand.resolution1 != by_flops.resolution1      # another cost, another network


@pytest.mark.parametrize("exponent, overhead", [(2.0, 0.0), (1.3, 0.0), (1.0, 1.0), (3.0, 5.0)])
def test_closest_resolution_finds_the_best_integer_in_few_measurements(exponent, overhead):
    """A timed cost grows slower than the area (per-call overhead): the secant steps fit its exponent, so a
    measured latency is solved in a handful of timings rather than a pixel-by-pixel walk."""
    calls: list[int] = []

    def cost(r: int) -> float:
        calls.append(r)
        return overhead + (r / 100) ** exponent

    wanted = 2 * cost(224)
    calls.clear()
    r = closest_resolution(cost, wanted, 224, 224, 2000)
    timed = set(calls)
    error = lambda x: abs(math.log(cost(x) / wanted))  # noqa: E731
    assert all(error(r) <= error(x) for x in range(224, 2000))
    assert len(timed) <= 9, sorted(timed)


def test_closest_resolution_on_a_staircase_does_not_depend_on_where_it_starts(b0):
    spec = target_member(b0, 1.1, 1.1, 224)
    wanted = 2 * flops_at(b0, 224)
    answers = {closest_resolution(lambda r: flops_at(spec, r), wanted, start, 224, 448) for start in range(224, 448, 7)}
    assert len(answers) == 1


def test_a_family_solved_on_another_cost_doubles_that_cost(b0):
    """exact_cost_family on a latency-like cost (overhead plus FLOPs to the 0.7th power): each member costs
    2^phi times the base on that cost, where a FLOPs-solved family's cost grows far slower."""
    def timed(spec, r):
        return 3.0 + (flops_at(spec, r) / 1e6) ** 0.7

    members, _ = exact_cost_family(b0, 1.1, 1.1, 1.15, [0, 1, 2, 3], cost=timed)
    by_flops, _ = exact_cost_family(b0, 1.1, 1.1, 1.15, [0, 1, 2, 3])
    base = timed(b0, 224)
    for (phi, spec), (_, flops_spec) in zip(members[1:], by_flops[1:]):
        assert abs(timed(spec, spec.resolution) / (base * 2 ** phi) - 1) <= 0.1
        assert timed(flops_spec, flops_spec.resolution) / base < 0.85 * 2 ** phi    # FLOPs doubled, cost did not
        assert spec.resolution > flops_spec.resolution


def test_an_activations_study_materializes_a_family_on_activations():
    config = study_from_dict({"name": "acts", "space": "efficientnet_b0", "search": {"cost": "activations"}}, "t")
    lines: list[str] = []
    built = study_family(config, (1.2, 1.1, 1.15), [0, 1, 2], lines.append)
    family, drift = built.table, built.drift
    assert "solved on its activations" in lines[-1] and "latency_ms" not in family
    ratios = family["activations"] / family["activations"][0]
    assert all(abs(ratios[phi] / 2 ** phi - 1) <= 0.1 for phi in (1, 2))
    assert drift.startswith("the family's activations stray from 2^phi by at most")
