"""Base-network files: every shipped space loads, round-trips, and bad files get one-line errors."""

from __future__ import annotations

import pytest

from nas.errors import NasError
from nas.spec import known_spaces, load_spec, spec_from_dict

SHIPPED = ["efficientnet_b0", "efficientnet_lite0", "efficientnetv2_s"]


def test_shipped_spaces_are_listed_and_load():
    assert set(SHIPPED) <= set(known_spaces())
    for name in SHIPPED:
        spec = load_spec(name)
        assert spec.name == name and spec.stages


def test_yaml_round_trip_keeps_the_spec(tmp_path):
    for name in SHIPPED:
        spec = load_spec(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(spec.to_yaml())
        assert load_spec(path) == spec


def test_blocks_expand_stages_with_linear_drop_connect(b0):
    blocks = b0.blocks()
    assert len(blocks) == 16 == b0.num_blocks
    assert blocks[0].drop_connect == 0.0
    assert blocks[-1].drop_connect == pytest.approx(0.2 * 15 / 16)
    # Only the first block of a stage strides and changes channels.
    stage2 = [b for b in blocks if b.stage == 1]
    assert [b.stride for b in stage2] == [2, 1]
    assert [(b.in_channels, b.out_channels) for b in stage2] == [(16, 24), (24, 24)]


def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def _b0_dict(b0):
    return b0.to_dict()


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["stages"][2].update(kernel=4), r"stages\[2\]\.kernel' is 4: must be an odd integer"),
    (lambda d: d["stages"][0].update(block="conv"), r"stages\[0\]\.block' is 'conv': must be one of mbconv"),
    (lambda d: d["stages"][1].update(stride=3), r"stages\[1\]\.stride' is 3: must be 1 or 2"),
    (lambda d: d["stages"][1].update(repeats=0), r"stages\[1\]\.repeats' is 0"),
    (lambda d: d["stages"][1].update(se=1.5), r"stages\[1\]\.se' is 1.5"),
    (lambda d: d["stages"][1].update(colour="red"), r"stages\[1\]\.colour' is not known"),
    (lambda d: d["stages"][1].pop("channels"), r"stages\[1\]\.channels' is missing"),
    (lambda d: d.update(activation="tanh"), r"'activation' is 'tanh': must be one of silu"),
    (lambda d: d.update(dropout=1.2), r"'dropout' is 1.2: must be a number in \[0, 1\)"),
    (lambda d: d.update(resolution="big"), r"'resolution' is 'big'"),
    (lambda d: d.update(widht=1), r"'widht' is not known"),
    (lambda d: d.pop("stages"), r"'stages' is missing"),
    (lambda d: d["stem"].update(stride=4), r"'stem.stride' is 4: must be 1 or 2"),
])
def test_bad_fields_name_the_file_the_field_and_what_is_allowed(tmp_path, b0, mutate, match):
    import yaml
    d = _b0_dict(b0)
    mutate(d)
    path = _write(tmp_path, yaml.safe_dump(d))
    with pytest.raises(NasError, match=match) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_fused_mbconv_with_se_is_rejected(b0):
    d = load_spec("efficientnetv2_s").to_dict()
    d["stages"][0]["se"] = 0.25
    with pytest.raises(NasError, match="0 for fused_mbconv"):
        spec_from_dict(d)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "name: x\nstages: [\n  {block: mbconv,, }\n")
    with pytest.raises(NasError, match=r"bad.yaml: not valid YAML at line \d+") as e:
        load_spec(path)
    assert "\n" not in str(e.value)


def test_non_mapping_yaml_is_rejected(tmp_path):
    with pytest.raises(NasError, match="expected a YAML mapping"):
        load_spec(_write(tmp_path, "- just\n- a list\n"))


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(NasError, match="unknown search space 'nope'.*efficientnet_b0"):
        load_spec("nope")
    with pytest.raises(NasError, match="does not exist"):
        load_spec("missing/dir/space.yaml")
