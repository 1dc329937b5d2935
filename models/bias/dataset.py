"""(state, time-mean nudging tendency) pairs from the nudged runs' grid files.

Each record of a nudged ``*_grid.nc`` gives one pair: the state ``u, v, h`` written at the end of
an output interval and ``nudge_u, nudge_v, nudge_h``, the nudging tendency averaged over that
interval (written by the toy with ``&namnudge ln_nudge``). Arrays keep the whole grid, land rim
included, as the closure sees it in the bridge (cells outside the grid are zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUTS = ("u", "v", "h")
TARGETS = ("nudge_u", "nudge_v", "nudge_h")
GRID_POINTS = ("U", "V", "T")


class DatasetError(ValueError):
    """A grid file without the nudging tendencies, or files on other grids."""


@dataclass
class BiasDataset:
    """``x``: (sample, 3, z, y, x) u, v, h; ``y``: the same shape, the mean nudging tendencies;
    ``mask``: (3, y, x) umask, vmask, tmask."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    files: list[str]


def load(files: Sequence[Path]) -> BiasDataset:
    """Every record of ``files`` (in order).

    Raises
    ------
    DatasetError
        If a file has no ``nudge_*`` variable or another grid than the first one.
    """
    import netCDF4

    xs, ys, mask = [], [], None
    for path in files:
        with netCDF4.Dataset(path) as nc:
            missing = [n for n in INPUTS + TARGETS if n not in nc.variables]
            if missing:
                raise DatasetError(f"{path}: no variable {missing} (a run with ln_nudge?)")
            m = np.stack([np.asarray(nc[k][:], float) for k in ("umask", "vmask", "tmask")])
            if mask is None:
                mask = m
            elif m.shape != mask.shape:
                raise DatasetError(
                    f"{path}: grid {m.shape[1:]} where {files[0]} has {mask.shape[1:]}"
                )
            xs.append(np.stack([np.asarray(nc[n][:], float) for n in INPUTS], axis=1))
            ys.append(np.stack([np.asarray(nc[n][:], float) for n in TARGETS], axis=1))
    if mask is None:
        raise DatasetError("no grid file given")
    return BiasDataset(np.concatenate(xs), np.concatenate(ys), mask, [str(f) for f in files])
