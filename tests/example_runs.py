"""Running a copied example for a few steps with the tendencies it receives written as
diagnostics: what the closure examples' coupled tests share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def run_with_tendencies(
    folder: Path,
    fortran_build: Path,
    workdir: Path,
    fields: Sequence[str],
    steps: int = 120,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Run ``folder/coupling.toml`` for ``steps`` with the received ``fields`` (e.g.
    ``u_tend``) written every 60 steps; assert the run succeeded and return its result and the
    records of each field."""
    import xarray as xr

    from bridge.config.coupling import load_config
    from bridge.launch.launcher import launch

    toml = (folder / "coupling.toml").read_text()
    names = ", ".join(f'"{f}"' for f in fields)
    (folder / "coupling.toml").write_text(
        toml + f"\n[diagnostics]\nnetcdf = true\nevery = 60\nfields = [{names}]\n"
    )
    result = launch(
        load_config(folder / "coupling.toml"),
        steps=steps,
        workdir=workdir,
        build_dir=fortran_build,
        quiet=True,
    )
    assert result.ok, result.run_dir
    with xr.open_dataset(result.run_dir / "diagnostics.nc") as diag:
        return result, {f: diag[f].values for f in fields}


def run_with_u_tend(
    folder: Path, fortran_build: Path, workdir: Path, steps: int = 120
) -> tuple[Any, np.ndarray]:
    """Run ``folder/coupling.toml`` for ``steps`` with the received ``u_tend`` written every 60
    steps; assert the run succeeded and return its result and the ``u_tend`` records."""
    result, tend = run_with_tendencies(folder, fortran_build, workdir, ("u_tend",), steps)
    return result, tend["u_tend"]
