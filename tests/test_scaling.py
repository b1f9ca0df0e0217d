"""Rounding and compound scaling: the reference rules, checked on many values."""

from __future__ import annotations

import math
import random

import pytest

from nas.errors import NasError
from nas.scaling import (
    PAPER_TABLE,
    compound,
    compound_dropout,
    compound_multipliers,
    paper_member,
    round_filters,
    round_repeats,
    round_resolution,
    scale,
)
from nas.spec import load_spec


def test_round_filters_reference_cases():
    assert round_filters(32, 1.0) == 32
    assert round_filters(16, 1.2) == 24   # 19.2 -> 16 would drop > 10 %, so +8
    assert round_filters(1280, 1.1) == 1408
    assert round_filters(320, 2.0) == 640
    assert round_filters(3, 1.0) == 8     # never below the divisor


def test_round_filters_properties():
    rng = random.Random(0)
    for _ in range(2000):
        c, w = rng.randint(1, 2048), rng.uniform(0.25, 4.0)
        r = round_filters(c, w)
        assert r % 8 == 0 and r >= 8
        assert r >= 0.9 * c * w                     # never loses more than 10 %
        assert abs(r - c * w) <= 8 or r == 8        # and stays within one step of the exact value


def test_round_repeats_rounds_up():
    assert [round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert round_repeats(4, 3.1) == 13
    assert round_repeats(3, 1.0) == 3


def test_round_resolution():
    assert round_resolution(257.6) == 258
    assert round_resolution(257.6, 8) == 256
    assert round_resolution(3, 8) == 8


def test_compound_at_phi_zero_is_the_base(b0):
    m = compound(b0, 1.2, 1.1, 1.15, 0)
    assert m.stages == b0.stages and m.resolution == b0.resolution and m.head_channels == 1280


def test_compound_multipliers_follow_the_rule():
    m = compound_multipliers(1.2, 1.1, 1.15, 2.5)
    assert m.depth == pytest.approx(1.2 ** 2.5)
    assert m.width == pytest.approx(1.1 ** 2.5)
    assert m.resolution == pytest.approx(1.15 ** 2.5)
    assert m.nominal_flops_ratio == pytest.approx((1.2 * 1.1 ** 2 * 1.15 ** 2) ** 2.5)


def test_compound_scales_every_part(b0):
    m = compound(b0, 1.2, 1.1, 1.15, 3)
    w, d = 1.1 ** 3, 1.2 ** 3
    assert m.stem_channels == round_filters(32, w) and m.head_channels == round_filters(1280, w)
    assert [s.channels for s in m.stages] == [round_filters(s.channels, w) for s in b0.stages]
    assert [s.repeats for s in m.stages] == [math.ceil(s.repeats * d) for s in b0.stages]
    assert m.resolution == round(224 * 1.15 ** 3)
    assert m.dropout == pytest.approx(0.35)


def test_lite_keeps_stem_head_and_first_last_repeats():
    lite = load_spec("efficientnet_lite0")
    m = scale(lite, width=1.4, depth=1.8, resolution=300)
    assert (m.stem_channels, m.head_channels) == (32, 1280)
    assert m.stages[0].repeats == 1 and m.stages[-1].repeats == 1
    assert m.stages[1].repeats == math.ceil(2 * 1.8)
    assert m.stages[1].channels == round_filters(24, 1.4)


def test_paper_table_members(b0):
    for k, (w, d, r, p) in enumerate(PAPER_TABLE.values()):
        m = paper_member(b0, k)
        assert (m.width_mult, m.depth_mult, m.resolution, m.dropout) == (w, d, r, p)
    assert paper_member(b0, 3).stages[0].channels == 24   # the 16 x 1.2 case


def test_dropout_schedule():
    assert [compound_dropout(0.2, p) for p in (0, 2, 4, 6, 8)] == [0.2, 0.3, 0.4, 0.5, 0.5]


@pytest.mark.parametrize("coeffs, match", [((0.9, 1.1, 1.1), "alpha is 0.9"), ((1.2, 0.5, 1.1), "beta is 0.5"),
                                           ((1.2, 1.1, float("nan")), "gamma is nan")])
def test_coefficients_below_one_are_rejected(b0, coeffs, match):
    with pytest.raises(NasError, match=match):
        compound(b0, *coeffs, phi=1)


def test_negative_phi_and_rescaling_are_rejected(b0):
    with pytest.raises(NasError, match="phi is -1"):
        compound(b0, 1.2, 1.1, 1.15, -1)
    with pytest.raises(NasError, match="already scaled"):
        compound(compound(b0, 1.2, 1.1, 1.15, 1), 1.2, 1.1, 1.15, 1)
    with pytest.raises(NasError, match="B0..B7, not B8"):
        paper_member(b0, 8)
