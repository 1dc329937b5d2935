"""Each ``mlbridge bench`` in a small version: it runs and prints its figures and ratios.

Speed is never asserted here (the machines are shared); only that every benchmark still
measures what it reports.
"""

from __future__ import annotations

import json
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


def test_bench_coupled(fortran_build: Path, tmp_path: Path) -> None:
    out = bench(
        "coupled", "--repeats", "1", "--nx", "16", "--nz", "3", "--steps", "20",
        "--closure", "laplacian", "--build-dir", str(fortran_build),
        "--timeline", str(tmp_path),
    )  # fmt: skip
    assert "lag 0" in out and "lag 1" in out
    assert "two schedules / coupled lag 0" in out
    assert "closure per call, laplacian_v_every3_lag0" in out
    assert re.search(r"lag 1 timeline .*model put [0-9.]+, model get [0-9.]+", out)
    # the timelines of real runs: both sides, every exchange, one clock
    for lag in (0, 1):
        assert (tmp_path / f"timeline_lag{lag}.png").stat().st_size > 10_000
        steps = json.loads((tmp_path / f"timing_steps_lag{lag}.json").read_text())
        model = steps["model"]["0"]
        server = steps["servers"][0]
        assert model["kt"] == server["kt"] == list(range(1, 21))
        for j in range(20):  # the model's put of a step ends after the server began waiting
            assert model["put_start_s"][j] <= model["put_end_s"][j] <= model["get_start_s"][j]
            assert model["put_end_s"][j] >= server["start_s"][j] - 1e-3
        if lag == 0:  # the outputs of step kt reach the model after the server's closure of kt
            for j in range(20):
                closure_end = server["start_s"][j] + sum(
                    server[k][j] for k in ("recv_wait_s", "unpack_s", "inference_s")
                )
                assert model["get_end_s"][j] >= closure_end - 1e-3


def test_plot_timeline_cli_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "plot", "timeline", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "timing_steps.json: not found" in proc.stderr
    (tmp_path / "timing_steps.json").write_text(
        json.dumps({"servers": [{"rank": 0, "kt": [1], "start_s": [0.0]}], "model": {"0": {}}})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "plot", "timeline", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "no model timeline (model ranks ['0'])" in proc.stderr


def test_bench_scaling(fortran_build: Path, tmp_path: Path) -> None:
    out = bench(
        "scaling", "--repeats", "1", "--sizes", "12x10x3", "--ranks", "1:1",
        "--model-ms", "1", "--steps", "10", "--closure", "laplacian",
        "--json", str(tmp_path / "s.json"), "--figure", str(tmp_path / "s.png"),
        "--build-dir", str(fortran_build),
    )  # fmt: skip
    assert re.search(r"^\s+12x10x3\s+1:1\s+1\.0\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+", out, re.M)
    table = json.loads((tmp_path / "s.json").read_text())
    (row,) = table["rows"]
    assert row["size"] == "12x10x3" and row["model_ranks"] == row["server_ranks"] == 1
    assert row["alone_s"] > 0 and row["lag0_s"] > 0 and row["lag1_s"] > 0
    assert row["extra_ranks"] == 1.0
    assert row["resources_lag1"] == pytest.approx(2 * row["lag1_s"] / row["alone_s"] - 1)
    assert (tmp_path / "s.png").stat().st_size > 10_000


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
