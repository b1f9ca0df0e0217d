"""Study files: the shipped ones load; every bad field gets one line naming the file and the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from nas.config import load_study
from nas.errors import NasError

STUDIES = sorted(Path(__file__).resolve().parent.parent.joinpath("studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_load(path):
    cfg = load_study(path)
    assert cfg.name == path.stem and cfg.storage_url().startswith(("sqlite:///runs/", "postgresql"))


def test_quickstart_is_a_cpu_grid_on_digits():
    cfg = load_study(Path(__file__).resolve().parent.parent / "studies" / "quickstart.yaml")
    assert cfg.search.sampler == "grid" and cfg.proxy.dataset == "digits" and cfg.proxy.train.device == "auto"


BASE = {"name": "s", "space": "efficientnet_b0", "proxy": {"train": {"epochs": 1}}, "search": {"sampler": "tpe"}}


@pytest.mark.parametrize("change, match", [
    ({"colour": 1}, "field 'colour' is not known"),
    ({"name": "a b"}, "field 'name' is 'a b'"),
    ({"space": "nope"}, "unknown search space 'nope'"),
    ({"search": {"sampler": "bohb"}}, "'search.sampler' is 'bohb': must be one of grid, tpe, gp, random"),
    ({"search": {"alpha": [0.9, 1.2]}}, "'search.alpha' is \\[0.9, 1.2\\]"),
    ({"search": {"beta": [1.3, 1.1]}}, "'search.beta'"),
    ({"search": {"tolerance": 0}}, "'search.tolerance' is 0"),
    ({"search": {"target": 1}}, "'search.target' is 1"),
    ({"search": {"cost": "energy"}}, "'search.cost' is 'energy'"),
    ({"search": {"seeds": 0}}, "'search.seeds' is 0"),
    ({"search": {"trials": -1}}, "'search.trials' is -1"),
    ({"search": {"latency": {"repeats": 1}}}, "'search.latency.repeats' is 1: must be an integer in 3.."),
    ({"search": {"stepp": 0.1}}, "'search.stepp' is not known"),
    ({"proxy": {"resolution": 4}}, "'proxy.resolution' is 4"),
    ({"proxy": {"train": {"epochs": 0}}}, "'proxy.train.epochs' is 0: must be an integer >= 1"),
    ({"proxy": {"train": {"epoch": 1}}}, "'proxy.train.epoch' is not known"),
    ({"pruner": {"type": "hyperband"}}, "'pruner.type' is 'hyperband'"),
    ({"proxy": {"train": {"validate_each_epoch": False}}}, "leaves the median pruner no epoch to judge"),
    ({"heartbeat": {"interval": 5, "grace": 5}}, "'heartbeat.grace' is 5"),
    ({"storage": "runs/x.db"}, "'storage' is 'runs/x.db'"),
    ({"seed": -1}, "'seed' is -1"),
])
def test_bad_fields_are_one_line_errors(tmp_path, change, match):
    d = {**BASE, **{k: v for k, v in change.items() if k not in ("search", "proxy")}}
    if "search" in change:
        d["search"] = {**BASE["search"], **change["search"]}
    if "proxy" in change:
        d["proxy"] = {**change["proxy"]} if "train" in change["proxy"] else {**BASE["proxy"], **change["proxy"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(NasError, match=match) as e:
        load_study(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(NasError, match="does not exist"):
        load_study(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(NasError, match="not valid YAML at line"):
        load_study(bad)


def test_cli_rejects_a_bad_study_with_exit_2(run_cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "search": {"sampler": "bohb"}}))
    code, out, err = run_cli("scale", "run", path)
    assert code == 2 and out == "" and err.count("\n") == 1 and "search.sampler" in err


def test_new_settings_keep_stored_studies_resumable():
    """Studies stored before cuda_graphs, fuse_seeds (and the latency predictor's settings) existed resume:
    at their defaults those settings are not part of the fingerprint, so the packaged examples keep the
    fingerprints that version c174cb8 stored; set away from a default, a setting counts."""
    stored = {"quickstart": "9391207c31914ab2", "cifar10_gpu": "cecb18f5029b17c8", "arch_quickstart": "8eb97bda801c8395"}
    for name, fingerprint in stored.items():
        assert load_study(name).fingerprint() == fingerprint, name
    cfg = load_study("quickstart")
    train = dataclasses.replace(cfg.proxy.train, fuse_seeds="off")
    assert dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, train=train)).fingerprint() != stored["quickstart"]
    # Validating only the last epoch changes no result (the scored epoch is validated either way).
    train = dataclasses.replace(cfg.proxy.train, validate_each_epoch=False)
    assert dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, train=train)).fingerprint() == stored["quickstart"]



def test_an_examples_name_finds_its_file_while_its_folder_holds_only_other_studies(tmp_path, monkeypatch):
    """`nas scale calibrate quickstart` keeps quickstart-calibrate in runs/quickstart/study.db before the
    quickstart itself ever ran; its resume read that file as the quickstart's storage and found no study."""
    import optuna

    from nas.search.storage import find_study_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "quickstart").mkdir(parents=True)
    url = f"sqlite:///{tmp_path}/runs/quickstart/study.db"
    optuna.create_study(study_name="quickstart-calibrate", storage=url)
    assert find_study_config("quickstart").name == "quickstart"          # the packaged example's file
    optuna.create_study(study_name="quickstart", storage=url)           # once it ran, its stored definition
    with pytest.raises(NasError, match="was not created by nas"):
        find_study_config("quickstart")
