"""Workers on several GPUs, checked on any machine: which GPU each worker takes from a pretend set of GPUs,
how that device reaches a worker's training, and the one-line errors of --gpus."""

from __future__ import annotations

import pytest
import torch
from test_bad_input import one_line_exit_2, study_text

from nas.cli import build_parser
from nas.commands import parse_gpus
from nas.config import load_study
from nas.device import training_gpus, worker_device
from nas.search.runner import training_on
from nas.search.scale import ScaleJob


@pytest.fixture
def four_gpus(monkeypatch):
    """A machine that shows GPUs 0..3 (nothing here touches one: every check fails before training)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.mark.parametrize("gpus, devices", [
    ([0, 2], ["cuda:0", "cuda:2", "cuda:0", "cuda:2", "cuda:0"]),
    ([3], ["cuda:3"] * 5),
    ([1, 0, 3], ["cuda:1", "cuda:0", "cuda:3", "cuda:1", "cuda:0"]),
    ([], ["cpu"] * 5),                                   # training on the CPU: every worker keeps the device
])
def test_worker_i_takes_gpu_i_mod_n(gpus, devices):
    assert [worker_device(i, "cpu" if not gpus else "cuda", gpus) for i in range(5)] == devices


def test_gpus_default_to_every_visible_one_or_the_one_the_study_names(four_gpus):
    assert training_gpus("cuda") == training_gpus("auto") == [0, 1, 2, 3]
    assert training_gpus("cuda:2") == [2]
    assert training_gpus("cuda:2", [3, 1]) == [3, 1]      # --gpus overrides the study's GPU
    assert training_gpus("cpu") == []


def test_a_worker_trains_on_its_device_while_the_study_keeps_its_definition(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(study_text(train=", device: cuda"))
    job = ScaleJob(load_study("s.yaml"))
    moved = training_on(job, "cuda:1")
    assert moved.config.proxy.train.device == "cuda:1" and moved.config.proxy.train.epochs == 1
    assert job.config.proxy.train.device == "cuda" and moved.config.fingerprint() != job.config.fingerprint()
    assert training_on(job, "cuda") is job


def test_every_command_with_workers_takes_gpus():
    parser = build_parser()
    for command in (["scale", "run"], ["arch", "run"], ["frontier"]):
        assert parser.parse_args([*command, "s.yaml", "--workers", "2", "--gpus", "0,1"]).gpus == "0,1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the packaged arch study trains on a GPU where one is present")
@pytest.mark.parametrize("study, command, device", [
    (study_text(train=", device: cpu"), "scale", "cpu"),
    (None, "arch", "auto"),                              # the packaged arch_quickstart: auto, no GPU here
])
def test_gpus_on_the_cpu_is_one_line(run_cli, tmp_path, monkeypatch, study, command, device):
    monkeypatch.chdir(tmp_path)
    if study:
        (tmp_path / "s.yaml").write_text(study)
    code, out, err = run_cli(command, "run", "s.yaml" if study else "arch_quickstart", "--gpus", "0,1")
    one_line_exit_2(code, out, err, f"--gpus 0,1: this study trains on the CPU (proxy.train.device: {device}): drop "
                                    f"--gpus, or set proxy.train.device to cuda")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, match", [
    (["--gpus", "0,5"], "--gpus 0,5: GPU 5 is not there; this machine shows GPU(s) 0, 1, 2, 3: give ids from those"),
    (["--gpus", "a"], "--gpus 'a': give comma-separated GPU ids such as 0,2"),
    (["--gpus", "1,1"], "--gpus 1,1: give each GPU id (0 or more) once"),
    (["--gpus", "0,2", "--workers", "3"], "--workers 3: this machine trains on 2 GPU(s), and more workers than that "
                                          "only slow each other down: give --workers 2 or fewer, name more GPUs"),
    (["--workers", "5"], "--workers 5: this machine trains on 4 GPU(s)"),
])
def test_bad_gpus_are_one_line(run_cli, tmp_path, monkeypatch, four_gpus, args, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(study_text(train=", device: cuda"))
    one_line_exit_2(*run_cli("scale", "run", "s.yaml", *args), match)
    assert not (tmp_path / "runs").exists()


def test_parse_gpus():
    assert parse_gpus("0,2") == [0, 2] and parse_gpus("3") == [3]
