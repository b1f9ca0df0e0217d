"""Shared fixtures: the shipped base networks, and a CLI runner that works in-process."""

from __future__ import annotations

import pytest

from nas.cli import main
from nas.spec import load_spec


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
