"""Shared fixtures: one build of the Fortran side per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_fixture import slurm_cluster as slurm_cluster

REPO = Path(__file__).resolve().parents[1]


def build_dir() -> Path:
    return Path(os.environ.get("MLBRIDGE_BUILD_DIR", REPO / "build")).resolve()


@pytest.fixture(scope="session")
def fortran_build() -> Path:
    """Build (or update) the Fortran side with ``mlbridge build``; return the build dir."""
    bdir = build_dir()
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "build", "--build-dir", str(bdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"mlbridge build failed:\n{proc.stdout}\n{proc.stderr}")
    return bdir


@pytest.fixture(scope="session")
def toy_exe(fortran_build: Path) -> Path:
    exe = fortran_build / "bin" / "toy_nemo"
    assert exe.is_file(), f"{exe} was not built"
    return exe
