"""``make demo`` (``python -m bridge.demo``) in a small version: both runs and both figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_alone_and_coupled_and_writes_figures(
    fortran_build: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.demo",
            "--years",
            "0.05",
            "--coupled-days",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MLBRIDGE_BUILD_DIR": str(fortran_build)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("coarse_alone.png", "coupled.png"):
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timing summary" in proc.stdout
