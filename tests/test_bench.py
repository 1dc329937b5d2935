"""Each ``mlbridge bench`` in a small version: it runs and prints its figures and ratios.

Speed is never asserted here (the machines are shared); only that every benchmark still
measures what it reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_bench_model(fortran_build: Path) -> None:
    out = bench(
        "model", "--repeats", "1", "--coarse-steps", "60", "--fine-steps", "4",
        "--build-dir", str(fortran_build),
    )  # fmt: skip
    assert re.search(r"^coarse\s+1\s", out, re.MULTILINE)
    assert re.search(r"^fine\s+2\s", out, re.MULTILINE)
    assert "target" in out


@pytest.mark.parametrize("transport", ["mpi", "mpi,oasis"])
def test_bench_exchange(fortran_build: Path, transport: str) -> None:
    out = bench(
        "exchange", "--repeats", "1", "--sizes", "12x10x3", "--round-trips", "5",
        "--transport", transport, "--build-dir", str(fortran_build),
    )  # fmt: skip
    assert "raw" in out and "12x10x3" in out.replace(" ", "")
    if "oasis" in transport:
        assert "oasis" in out


def test_bench_coupled(fortran_build: Path) -> None:
    out = bench(
        "coupled", "--repeats", "1", "--nx", "16", "--nz", "3", "--steps", "20",
        "--closure", "laplacian", "--build-dir", str(fortran_build),
    )  # fmt: skip
    assert "lag 0" in out and "lag 1" in out
    assert "two schedules / coupled lag 0" in out
    assert "closure per call, laplacian_v_every3_lag0" in out


def test_bench_closure() -> None:
    out = bench(
        "closure", "--repeats", "1", "--nz", "1", "3", "--size", "16", "--threads", "1",
        "--hidden", "4", "--levels-per-call", "2",
    )  # fmt: skip
    assert "batched" in out and "per-level" in out
