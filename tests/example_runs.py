"""Running a copied example for a few steps with its ``u_tend`` written as a diagnostic: what
the closure examples' coupled tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def run_with_u_tend(
    folder: Path, fortran_build: Path, workdir: Path, steps: int = 120
) -> tuple[Any, np.ndarray]:
    """Run ``folder/coupling.toml`` for ``steps`` with the received ``u_tend`` written every 60
    steps; assert the run succeeded and return its result and the ``u_tend`` records."""
    import xarray as xr

    from bridge.config.coupling import load_config
    from bridge.launch.launcher import launch

    toml = (folder / "coupling.toml").read_text()
    (folder / "coupling.toml").write_text(
        toml + '\n[diagnostics]\nnetcdf = true\nevery = 60\nfields = ["u_tend"]\n'
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
        return result, diag["u_tend"].values
