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
    """The cheap paths (the compiled ones take tens of seconds each: tests/test_compiled.py
    builds an AOTInductor package), the reference CNN and the committed trained closure."""
    paths = ("default", "eager", "channels-last", "torchscript", "export")
    out = bench(
        "closure", "--repeats", "1", "--nz", "3", "--size", "16", "--threads", "1", "2",
        "--hidden", "4", "--levels-per-call", "2", "--paths", *paths,
    )  # fmt: skip
    assert "reference CNN 3x3 x4, hidden 4" in out and "subgrid-cnn@2 (export" in out
    assert "unavailable" not in out, out
    row = re.compile(r"^ +(\d) +(\d) (\S+(?: \S+)?) +([\d.]+) +[\d.]+ +([\d.]+) +(\S+)$", re.M)
    reference, trained = out.split("subgrid-cnn@2 (")
    for section in (reference, trained):
        rows = row.findall(section)
        assert len(rows) == 2 * 6, section  # threads x paths
        for threads in ("1", "2"):
            got = {r[2] for r in rows if r[0] == threads and r[1] == "3"}
            assert got == {*paths, "eager 2/call"}, (threads, got)
        assert all(float(r[4]) == 1.0 for r in rows if r[2] == "default")
        assert all(float(r[5]) < 1e-5 for r in rows), "a path disagrees with the default one"
    assert out.count("build cost (s") == 2
