"""The nudging files of the twin: the truth a nudged run of one model year relaxes toward.

The nudging file of year ``y`` is the truth's grid file of year ``y`` preceded by the truth
state at the start of the year (the last record of year ``y - 1``, the state at rest for year
1), so that every step of the year lies between two records (``&namnudge cn_nudge_in``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def rest_state(grid: Path, h_layer: float) -> dict[str, np.ndarray]:
    """The ocean at rest on the grid of ``grid``: u = v = 0, every layer ``h_layer`` thick on
    the ocean, ``kt = 0``."""
    import netCDF4

    with netCDF4.Dataset(grid) as nc:
        tmask = np.asarray(nc["tmask"][:], dtype=float)  # (y, x)
        nz = len(nc.dimensions["z"])
    h = np.broadcast_to(h_layer * tmask, (nz, *tmask.shape)).copy()
    return {"u": np.zeros_like(h), "v": np.zeros_like(h), "h": h, "kt": np.array(0)}


def write_nudge_file(target: Path, grid: Path, start: dict[str, np.ndarray]) -> None:
    """``target``: the state ``start`` (its kt) then every record of ``grid`` (u, v, h, kt)."""
    import netCDF4

    tmp = target.with_name(target.name + ".tmp")
    with netCDF4.Dataset(grid) as src, netCDF4.Dataset(tmp, "w") as dst:
        for name in ("x", "y", "z"):
            dst.createDimension(name, len(src.dimensions[name]))
        dst.createDimension("time_counter", None)
        kt = dst.createVariable("kt", "i4", ("time_counter",))
        kt[0] = int(start["kt"])
        kt[1:] = np.asarray(src["kt"][:])
        for name in ("u", "v", "h"):
            var = dst.createVariable(name, "f8", ("time_counter", "z", "y", "x"))
            var[0] = start[name]
            var[1:] = np.asarray(src[name][:])
        dst.source = f"truth state at kt = {int(start['kt'])}, then {grid}"
    os.replace(tmp, target)


def last_record(grid: Path) -> dict[str, np.ndarray]:
    """The last record of ``grid``: u, v, h and its kt."""
    import netCDF4

    with netCDF4.Dataset(grid) as nc:
        out = {n: np.asarray(nc[n][-1]) for n in ("u", "v", "h")}
        out["kt"] = np.array(int(nc["kt"][-1]))
    return out
