"""Figures of a toy_nemo run from its ``<cn_exp>_grid.nc`` output.

Each function opens the NetCDF file with xarray and writes a PNG with matplotlib's Agg backend
(imported inside the functions, so ``import bridge.plots`` stays cheap)::

    from bridge.plots import plot_run
    plot_run("runs/coarse/COARSE_grid.nc", "docs/img/coarse.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SECONDS_PER_YEAR = 365.0 * 86400.0  # the model's noleap calendar


def relative_vorticity(u: np.ndarray, v: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Relative vorticity at F points of C-grid velocities with NEMO indices.

    Parameters
    ----------
    u, v
        Arrays ``(..., ny, nx)``: ``u[j, i]`` on the east face of T cell ``(i, j)``, ``v[j, i]``
        on its north face.
    dx, dy
        Grid spacing [m].

    Returns
    -------
    numpy.ndarray
        ``(..., ny - 1, nx - 1)``: ``zeta[j, i]`` at the north-east corner of T cell ``(i, j)``,
        in s-1.
    """
    dvdx = (v[..., :-1, 1:] - v[..., :-1, :-1]) / dx
    dudy = (u[..., 1:, :-1] - u[..., :-1, :-1]) / dy
    return dvdx - dudy


def _open(grid_nc: str | Path):  # noqa: ANN202 - returns an xarray.Dataset
    import xarray as xr

    return xr.open_dataset(grid_nc, decode_times=False)


def _agg():  # noqa: ANN202 - returns matplotlib.pyplot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_vorticity(ax, ds, time_index: int, layer: int) -> None:  # noqa: ANN001
    dx = float(ds.attrs["rn_dx"])
    dy = float(ds.attrs["rn_dy"])
    f0 = float(ds.attrs["rn_f0"])
    u = ds["u"].isel(time_counter=time_index, z=layer).values
    v = ds["v"].isel(time_counter=time_index, z=layer).values
    zeta = relative_vorticity(u, v, dx, dy) / f0
    x_km = ds["x_u"].values[:-1] / 1e3
    y_km = ds["y_v"].values[:-1] / 1e3
    years = float(ds["time_counter"].values[time_index]) / SECONDS_PER_YEAR
    image = ax.pcolormesh(x_km, y_km, zeta, cmap="RdBu_r", vmin=-0.5, vmax=0.5, shading="auto")
    ax.set_aspect("equal")
    ax.set_xlabel("x [km]")
    ax.set_ylabel("y [km]")
    ax.set_title(f"layer {layer + 1} relative vorticity / f0, year {years:.2f}")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _draw_thickness(ax, ds, time_index: int, layer: int) -> None:  # noqa: ANN001
    h = ds["h"].isel(time_counter=time_index, z=layer).values[1:-1, 1:-1]
    x_km = ds["x_t"].values[1:-1] / 1e3
    y_km = ds["y_t"].values[1:-1] / 1e3
    image = ax.pcolormesh(x_km, y_km, h, cmap="viridis", shading="auto")
    ax.set_aspect("equal")
    ax.set_xlabel("x [km]")
    ax.set_title(f"layer {layer + 1} thickness [m]")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _draw_ke(ax, ds) -> None:  # noqa: ANN001
    years = ds["time_counter"].values / SECONDS_PER_YEAR
    ke = ds["ke"].values  # (time, z) in J
    for k in range(ke.shape[1]):
        ax.plot(years, ke[:, k] / 1e15, label=f"layer {k + 1}")
    ax.plot(years, ke.sum(axis=1) / 1e15, "k", lw=1.5, label="total")
    ax.set_xlabel("model years")
    ax.set_ylabel("kinetic energy [PJ]")
    ax.set_title("basin kinetic energy")
    ax.legend()
    ax.grid(alpha=0.3)


def plot_vorticity(
    grid_nc: str | Path, png: str | Path, time_index: int = -1, layer: int = 0
) -> Path:
    """Snapshot of a layer's relative vorticity (divided by f0) saved as a PNG."""
    plt = _agg()
    with _open(grid_nc) as ds:
        fig, ax = plt.subplots(figsize=(6, 5))
        _draw_vorticity(ax, ds, time_index, layer)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
    return Path(png)


def plot_kinetic_energy(grid_nc: str | Path, png: str | Path) -> Path:
    """Time series of the basin kinetic energy of each layer saved as a PNG."""
    plt = _agg()
    with _open(grid_nc) as ds:
        fig, ax = plt.subplots(figsize=(6, 4))
        _draw_ke(ax, ds)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
    return Path(png)


def plot_run(grid_nc: str | Path, png: str | Path, time_index: int = -1, title: str = "") -> Path:
    """One figure of a run: top-layer vorticity and thickness snapshots, KE time series."""
    plt = _agg()
    with _open(grid_nc) as ds:
        fig, axes = plt.subplots(1, 3, figsize=(17, 5))
        _draw_vorticity(axes[0], ds, time_index, 0)
        _draw_thickness(axes[1], ds, time_index, 0)
        _draw_ke(axes[2], ds)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        plt.close(fig)
    return Path(png)


def plot_comparison(runs: dict[str, str | Path], png: str | Path, title: str = "") -> Path:
    """Runs side by side: top-layer vorticity at the last record of each, and their total KE.

    Parameters
    ----------
    runs
        Label -> ``<cn_exp>_grid.nc`` of each run (same grid).
    png
        The figure to write.
    title
        Figure title.
    """
    plt = _agg()
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5.6 * (len(runs) + 1), 5))
    for ax, (label, grid_nc) in zip(axes[:-1], runs.items(), strict=True):
        with _open(grid_nc) as ds:
            _draw_vorticity(ax, ds, -1, 0)
            ax.set_title(f"{label}: {ax.get_title()}")
            years = ds["time_counter"].values / SECONDS_PER_YEAR
            axes[-1].plot(years, ds["ke"].values.sum(axis=1) / 1e15, label=label)
    axes[-1].set_xlabel("model years")
    axes[-1].set_ylabel("total kinetic energy [PJ]")
    axes[-1].set_title("basin kinetic energy")
    axes[-1].legend()
    axes[-1].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return Path(png)
