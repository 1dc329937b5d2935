"""``make demo`` (``python -m mlbridge_models.demo``) in a small version: the runs alone and coupled
to each closure, the figures, and the comparison with the committed coarse-grained truth."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_alone_and_coupled_against_the_truth(fortran_build: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlbridge_models.demo",
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
    for name in (
        "coarse_alone.png",
        "coupled.png",
        "truth_spectra.png",
        "truth_snapshots.png",
        "truth_ke.png",
    ):
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timing summary (CNN)" in proc.stdout and "timing summary (backscatter)" in proc.stdout
    assert "against the coarse-grained truth" in proc.stdout
    result = json.loads((tmp_path / "against_truth.json").read_text())
    rows = {r["run"]: r for r in result["runs"]}
    assert list(rows) == ["alone", "CNN", "backscatter"]
    assert result["truth_ke_pj"][0] > 10.0  # the committed truth's top layer holds tens of PJ
    for row in rows.values():  # a 2-day run from rest holds almost none of it
        assert 0.9 < row["ke_error"] <= 1.0
        assert all(d > 0 and math.isfinite(d) for d in row["spectrum_distance"])
    assert rows["alone"]["spectrum_score"] == [0.0, 0.0]
    for closure in ("CNN", "backscatter"):  # each closure changed the flow
        assert rows[closure]["spectrum_distance"] != rows["alone"]["spectrum_distance"]


def test_subgrid_examples_run_coupled(fortran_build: Path, tmp_path: Path) -> None:
    """``examples/06_subgrid_zb`` and ``examples/07_subgrid_cnn``: the committed closures,
    registered as their READMEs say, run coupled for a few steps and change the flow."""
    import shutil

    import xarray as xr

    from bridge.config.coupling import load_config
    from bridge.config.namelist import write_patched_cfg
    from bridge.launch.launcher import launch
    from bridge.registry.store import Registry

    art = REPO / "models" / "artifacts" / "subgrid_cnn"
    last = {}
    for name, manifest in (
        ("06_subgrid_zb", "zanna_bolton.toml"),
        ("07_subgrid_cnn", "manifest.toml"),
    ):
        folder = tmp_path / name
        shutil.copytree(
            REPO / "examples" / name, folder, ignore=shutil.ignore_patterns("registry", "runs")
        )
        write_patched_cfg(
            REPO / "examples" / name / "namelist_cfg",
            {"namrun": {"nn_write": 60}},
            folder / "namelist_cfg",
        )
        Registry(folder / "registry").register(None, art / manifest)
        result = launch(
            load_config(folder / "coupling.toml"),
            steps=120,
            workdir=tmp_path / "r",
            build_dir=fortran_build,
            quiet=True,
        )
        assert result.ok, result.run_dir
        with xr.open_dataset(next(result.run_dir.glob("*_grid.nc")), decode_times=False) as ds:
            last[name] = ds.u.values[-1].copy()
    assert not (last["06_subgrid_zb"] == last["07_subgrid_cnn"]).all()
