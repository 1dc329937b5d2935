"""Every ``mlbridge`` command answers ``--help`` with an example, without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.bench import BENCHES
from bridge.cli import COMMANDS


def _help(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_has_an_example(command: str) -> None:
    proc = _help(command)
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout and f"mlbridge {command}" in proc.stdout


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_bench_help_has_an_example(bench: str) -> None:
    proc = _help("bench", bench)
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout and "mlbridge bench" in proc.stdout


def test_top_level_help_lists_every_command() -> None:
    proc = _help()
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from bridge.cli import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, "mlbridge run --help imported torch"


def test_no_command_prints_help_and_fails() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "usage: mlbridge" in proc.stdout
