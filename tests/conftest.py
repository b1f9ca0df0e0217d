"""Shared fixtures: the shipped base networks, and a CLI runner that works in-process."""

from __future__ import annotations

import pytest

from nas import sharing
from nas.cli import main
from nas.spec import load_spec


@pytest.fixture(scope="session", autouse=True)
def _sharing_among_the_tests(tmp_path_factory):
    """The suite's nas processes share cores and the latency lock among themselves only (NAS_SHARING_DIR,
    inherited by every child): a nas study running elsewhere on the machine neither holds their latency
    timings back until its epochs end nor counts as one of their trainers. Its load still counts, as any
    other program's does (nas.sharing.BusyElsewhere)."""
    patch = pytest.MonkeyPatch()
    patch.setenv(sharing.DIR_VARIABLE, str(tmp_path_factory.mktemp("sharing")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def b0():
    return load_spec("efficientnet_b0")


@pytest.fixture
def run_cli(capsys):
    """Run `nas ARGS...` in this process; return (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse exits on bad arguments
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


# One torch thread per trial: these networks are too small to gain from a second one, and with CPU-heavy
# work beside the tests a run on all cores slows several-fold (threads wait for each other).
TINY_STUDY = """\
name: {name}
space: efficientnet_b0
seed: 0
proxy: {{dataset: digits, per_class: 30, resolution: 20, width: 0.25, depth: 0.25, stem_stride: 1,
        train: {{epochs: {epochs}, batch_size: 32, threads: 1}}}}
search: {{sampler: {sampler}, target: 2.0, tolerance: 0.15, alpha: [1.0, 1.3], beta: [1.0, 1.1], step: 0.1,
         seeds: {seeds}, trials: {trials}, family_phis: 2}}
pruner: {{type: none}}
heartbeat: {{interval: 1, grace: 4}}
"""


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    """Write a study file whose trials take about a second; runs/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def write(name: str = "tiny", sampler: str = "grid", epochs: int = 2, seeds: int = 1, trials: int = 4,
              **replace: str) -> str:
        text = TINY_STUDY.format(name=name, sampler=sampler, epochs=epochs, seeds=seeds, trials=trials)
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return str(path)
    return write
