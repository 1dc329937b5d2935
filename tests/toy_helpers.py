"""Helpers for the toy_nemo tests: a run directory from the coarse example, a run, its output."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bridge.config.namelist import write_patched_cfg
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command

REPO = Path(__file__).resolve().parents[1]
NAMELIST_REF = REPO / "fortran_stubs" / "toy_nemo" / "namelist_ref"
COARSE_CFG = REPO / "examples" / "01_coarse" / "namelist_cfg"

# a small basin whose sizes divide by none of the decompositions tested, with every
# physical term switched on (wind, drag, Laplacian and biharmonic viscosity, thickness
# diffusion, no slip)
SMALL_BASIN: dict[str, dict[str, Any]] = {
    "namusr_def": {
        "nn_nx": 23,
        "nn_ny": 17,
        "rn_ahm": 300.0,
        "rn_bhm": 2.0e11,
        "rn_aeiv": 500.0,
        "rn_shlat": 2.0,
        "rn_bump": 20.0,
    },
}


def merge(*patches: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge block -> entry -> value patches, later ones winning."""
    out: dict[str, dict[str, Any]] = {}
    for patch in patches:
        for block, entries in patch.items():
            out.setdefault(block, {}).update(entries)
    return out


def make_run_dir(path: Path, patch: Mapping[str, Mapping[str, Any]]) -> Path:
    """``path`` with the toy's ``namelist_ref`` and the coarse ``namelist_cfg`` patched."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(NAMELIST_REF, path / "namelist_ref")
    write_patched_cfg(COARSE_CFG, patch, path / "namelist_cfg")
    return path


def run_toy(
    exe: Path, run_dir: Path, ranks: int = 1, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``exe`` on ``ranks`` MPI ranks in ``run_dir``; stdout and stderr captured."""
    cmd = mpmd_command([Program(ranks, (str(exe),))])
    return subprocess.run(
        cmd, cwd=run_dir, env=mpi_env(), capture_output=True, text=True, timeout=timeout
    )


def check_ok(proc: subprocess.CompletedProcess[str], run_dir: Path) -> None:
    """Fail with the model's own messages if the run did not end normally."""
    log = (run_dir / "ocean.output").read_text() if (run_dir / "ocean.output").exists() else ""
    assert proc.returncode == 0, f"toy_nemo failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "normal end of the run" in log, f"no normal end in ocean.output:\n{log[-3000:]}"


def read_nc(path: Path, names: tuple[str, ...] = ("u", "v", "h", "ke")) -> dict[str, np.ndarray]:
    """Variables of a NetCDF file as numpy arrays (exact values, no masking or scaling)."""
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        return {name: np.array(ds.variables[name][...]) for name in names}
