"""Figures of a toy_nemo run from its ``<cn_exp>_grid.nc`` output.

Each function opens the NetCDF file with xarray and writes a PNG with matplotlib's Agg backend
(imported inside the functions, so ``import bridge.plots`` stays cheap)::

    from bridge.plots import plot_run
    plot_run("runs/coarse/COARSE_grid.nc", "docs/img/coarse.png")
"""

from __future__ import annotations

import argparse
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


# --------------------------------------------------------------------------------------------
# timelines of a coupled run (``timing_steps.json``): ``mlbridge plot timeline RUN_DIR``
# --------------------------------------------------------------------------------------------

SUMMARY = "figures of a run: the per-step timeline of a coupled run (timing_steps.json)"
EXAMPLES = (
    "  mlbridge plot timeline runs/coupled-20260101-120000\n"
    "  mlbridge plot timeline RUN_DIR --first 100 --count 8 --out timeline.png\n"
)
SERVER_PHASES = (
    ("recv_wait_s", "waits for the fields", "#d9d9d9"),
    ("unpack_s", "unpack", "#80b1d3"),
    ("inference_s", "closure (NaN checks included)", "#4daf4a"),
    ("pack_s", "pack", "#984ea3"),
    ("send_s", "send", "#e41a1c"),
)
MODEL_PHASES = (
    ("put", "mlb_put", "#377eb8"),
    ("get", "mlb_get", "#ff7f00"),
)


def load_timeline(run_dir: str | Path) -> dict:
    """``RUN_DIR/timing_steps.json``, checked to hold both sides' timelines.

    Raises
    ------
    FileNotFoundError
        If the run directory has no ``timing_steps.json``.
    ValueError
        If the file has no per-step start times (a server older than the timeline) or no model
        timeline (a model rank that did not send one: transport oasis, or an older library).
    """
    import json

    path = Path(run_dir) / "timing_steps.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {run_dir} the directory of a coupled run?)")
    data = json.loads(path.read_text())
    servers = data.get("servers", [])
    if not servers or not all(len(s.get("start_s", [])) == len(s["kt"]) for s in servers):
        raise ValueError(f"{path}: the servers' entries have no start_s per exchange")
    model = data.get("model", {})
    if not model or not all("put_start_s" in m for m in model.values()):
        raise ValueError(
            f"{path}: no model timeline (model ranks {sorted(model)}); transport mpi and a "
            "library that sends it are needed"
        )
    return data


def timeline_step_table(data: dict) -> list[dict[str, float]]:
    """Per exchange (steps every model rank and server rank served), in seconds: the model's
    step interval (from one put to the next, model rank 0), the longest put and get and wait
    over the model ranks, and the longest of each server phase over the server ranks."""
    model = data["model"]
    common = set.intersection(
        *(set(m["kt"]) for m in model.values()), *(set(s["kt"]) for s in data["servers"])
    )
    rows = []
    first = model[sorted(model, key=int)[0]]
    index0 = {kt: i for i, kt in enumerate(first["kt"])}
    for kt in sorted(common):
        row: dict[str, float] = {"kt": kt}
        i = index0[kt]
        if i + 1 < len(first["kt"]):
            row["model_interval_s"] = first["put_start_s"][i + 1] - first["put_start_s"][i]
        for m in model.values():
            j = m["kt"].index(kt)
            for what in ("put", "get"):
                start, end = m[f"{what}_start_s"][j], m[f"{what}_end_s"][j]
                if start >= 0:
                    row[f"{what}_s"] = max(row.get(f"{what}_s", 0.0), end - start)
            row["model_wait_s"] = max(row.get("model_wait_s", 0.0), m["step_wait_s"][j])
        for s in data["servers"]:
            j = s["kt"].index(kt)
            for key, _, _ in SERVER_PHASES:
                row[key] = max(row.get(key, 0.0), s[key][j])
        rows.append(row)
    return rows


def plot_timeline(
    run_dir: str | Path, png: str | Path | None = None, first: int | None = None, count: int = 6
) -> Path:
    """The timeline of a coupled run, saved as a PNG (default ``RUN_DIR/timeline.png``).

    Top: ``count`` exchanges from the exchange of step ``first`` (default: the middle of the run)
    on a common clock, one row per model rank (its puts and gets; the gaps are its own step) and
    one per server rank (waiting for the fields, unpack, closure, pack, send). Bottom: every
    exchange's figures in milliseconds (the model's step interval, its puts, gets and waits, the
    servers' closure and waits), to see whether the window is typical.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_timeline`.
    """
    data = load_timeline(run_dir)
    plt = _agg()
    model, servers = data["model"], data["servers"]
    kts = sorted(set(servers[0]["kt"]))
    if first is None:
        first = kts[len(kts) // 2]
    window = [kt for kt in kts if kt >= first][: max(1, count)]
    if not window:
        raise ValueError(
            f"{run_dir}: no exchange at or after step {first} (steps {kts[0]}..{kts[-1]})"
        )
    lo_kt, hi_kt = window[0], window[-1]

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 7), gridspec_kw={"height_ratios": [1, 1]})
    rows: list[str] = []
    starts: list[float] = []
    for name in sorted(model, key=int):
        m = model[name]
        for j, kt in enumerate(m["kt"]):
            if lo_kt <= kt <= hi_kt and m["put_start_s"][j] >= 0:
                starts.append(m["put_start_s"][j])
    for s in servers:
        starts += [t for kt, t in zip(s["kt"], s["start_s"], strict=True) if lo_kt <= kt <= hi_kt]
    origin = min(starts)
    ms = 1e3
    seen: set[str] = set()

    def bar(y: int, t0: float, width: float, colour: str, label: str) -> None:
        ax.barh(
            y, width * ms, left=(t0 - origin) * ms, height=0.6, color=colour, edgecolor="none",
            label=None if label in seen else label,
        )  # fmt: skip
        seen.add(label)

    for name in sorted(model, key=int):
        m = model[name]
        y = len(rows)
        rows.append(f"model rank {name}")
        for j, kt in enumerate(m["kt"]):
            if not lo_kt <= kt <= hi_kt:
                continue
            for key, label, colour in MODEL_PHASES:
                start, end = m[f"{key}_start_s"][j], m[f"{key}_end_s"][j]
                if start >= 0:
                    bar(y, start, end - start, colour, label)
            ax.text((m["put_start_s"][j] - origin) * ms, y + 0.38, f"{kt}", fontsize=7, va="bottom")
    for s in servers:
        y = len(rows)
        rows.append(f"server rank {s['rank']}")
        for j, kt in enumerate(s["kt"]):
            if not lo_kt <= kt <= hi_kt:
                continue
            t = s["start_s"][j]
            for key, label, colour in SERVER_PHASES:
                bar(y, t, s[key][j], colour, label)
                t += s[key][j]
            ax.text((s["start_s"][j] - origin) * ms, y + 0.38, f"{kt}", fontsize=7, va="bottom")
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlabel("ms (one clock for both sides; numbers: the step of each exchange)")
    ax.set_title(
        f"exchanges of steps {lo_kt} to {hi_kt} (lag {_lag_of(run_dir)}); "
        "gaps in a model row: the model's own work"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=4, fontsize=8, frameon=False)

    table = timeline_step_table(data)
    steps = [r["kt"] for r in table]
    for key, label in (
        ("model_interval_s", "model step interval (put to put)"),
        ("put_s", "mlb_put"),
        ("get_s", "mlb_get"),
        ("model_wait_s", "model waits (in put and get)"),
        ("inference_s", "server closure"),
        ("recv_wait_s", "server waits for the fields"),
    ):
        ax2.plot(steps, [r.get(key, np.nan) * ms for r in table], lw=0.8, label=label)
    ax2.axvspan(lo_kt, hi_kt, color="k", alpha=0.08)
    ax2.set_xlabel("model step of the exchange")
    ax2.set_ylabel("ms")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    out = Path(png) if png is not None else Path(run_dir) / "timeline.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _lag_of(run_dir: str | Path) -> str:
    import json

    path = Path(run_dir) / "timing.json"
    try:
        return str(json.loads(path.read_text())["lag"])
    except (OSError, KeyError, ValueError):
        return "?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mlbridge plot``."""
    sub = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    p = sub.add_parser(
        "timeline",
        help="per-step timeline of a coupled run (model puts and gets, server phases)",
        description=plot_timeline.__doc__.split("\n\n")[0] if plot_timeline.__doc__ else None,
        epilog="example:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="the run directory (holds timing_steps.json)")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (RUN_DIR/timeline.png)")
    p.add_argument("--first", type=int, default=None, help="first step shown (the middle)")
    p.add_argument("--count", type=int, default=6, help="exchanges shown (default 6)")


def run(args: argparse.Namespace) -> int:
    """``mlbridge plot timeline``: write the figure, print its path and per-step medians."""
    import statistics
    import sys

    try:
        out = plot_timeline(args.run_dir, args.out, args.first, args.count)
        table = timeline_step_table(load_timeline(args.run_dir))
    except (FileNotFoundError, ValueError) as err:
        print(f"mlbridge plot timeline: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    print("medians over the exchanges (ms):")
    for key in (
        "model_interval_s",
        "put_s",
        "get_s",
        "model_wait_s",
        *(k for k, _, _ in SERVER_PHASES),
    ):
        values = [r[key] for r in table if key in r]
        if values:
            print(f"  {key[:-2]:<18} {statistics.median(values) * 1e3:9.3f}")
    return 0
