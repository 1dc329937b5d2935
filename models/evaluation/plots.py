"""Figures of ``mlbridge evaluate``: experiments against the coarse-grained truth.

Same style as :mod:`bridge.plots` (matplotlib's Agg backend imported inside the functions, one
PNG per function, returns its path); the truth is drawn in black, the experiments in the colour
cycle in the order given::

    from mlbridge_models.evaluation.plots import plot_time_mean_ke
    plot_time_mean_ke("ke.png", {"baseline": ke_b, "zb": ke_zb}, ke_truth)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bridge.plots import _agg

TRUTH = "truth"


def _colours(names: list[str]) -> dict[str, str]:
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


def plot_time_mean_ke(png: str | Path, ke: Mapping[str, np.ndarray], truth: np.ndarray) -> Path:
    """Time-mean KE per layer [PJ]: grouped bars per experiment, the truth as a black line."""
    plt = _agg()
    names = list(ke)
    nz = len(truth)
    width = 0.8 / max(len(names), 1)
    colours = _colours(names)
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * nz * max(len(names), 1) ** 0.5, 4))
    for i, name in enumerate(names):
        x = np.arange(nz) - 0.4 + width * (i + 0.5)
        ax.bar(x, np.asarray(ke[name]) / 1e15, width, color=colours[name], label=name)
    for k in range(nz):
        ax.hlines(
            truth[k] / 1e15, k - 0.45, k + 0.45, colors="k", lw=2, label=TRUTH if k == 0 else None
        )
    ax.set_xticks(np.arange(nz), [f"layer {k + 1}" for k in range(nz)])
    ax.set_ylabel("time-mean kinetic energy [PJ]")
    ax.set_title("time-mean KE per layer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


def plot_spectra(png: str | Path, spectra: Mapping) -> Path:  # noqa: ANN001
    """KE spectra (log-log), one panel per layer, up to the grid's Nyquist wavenumber.

    ``spectra``: name -> :class:`mlbridge_models.evaluation.metrics.Spectrum` with ``e`` of shape
    ``(z, nk)``;
    the entry ``"truth"`` is drawn in black.
    """
    plt = _agg()
    names = [n for n in spectra if n != TRUTH]
    colours = _colours(names)
    any_spec = next(iter(spectra.values()))
    nz = any_spec.e.shape[0]
    fig, axes = plt.subplots(1, nz, figsize=(5 * nz, 4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        for name, spec in spectra.items():
            sel = (spec.k > 0) & (spec.k <= spec.k_nyquist)
            style = {"color": "k", "lw": 2} if name == TRUTH else {"color": colours[name]}
            if name == "fine truth":
                style = {"color": "k", "lw": 1, "ls": "--"}
            ax.loglog(spec.k[sel] * 1e3, np.maximum(spec.e[k, sel], 1e-30), label=name, **style)
        kcut = (2.0 / 3.0) * min(s.k_nyquist for s in spectra.values())
        ax.axvline(kcut * 1e3, color="0.5", ls=":", lw=1)
        ax.set_xlabel("wavenumber [rad km-1]")
        ax.set_ylabel("E(k) [m3 s-2]")
        ax.set_title(f"layer {k + 1} KE spectrum (scored left of the dotted line)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


def _pdf(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.ravel(values), bins=edges, density=True)
    return counts


def plot_pdfs(
    png: str | Path,
    ke: Mapping[str, np.ndarray],
    vorticity: Mapping[str, np.ndarray],
    f0: float | None = None,
    bins: int = 60,
) -> Path:
    """PDFs of KE per unit mass (log10 bins) and of relative vorticity (divided by ``f0`` when
    given), bins from the truth's range; the entry ``"truth"`` in black."""
    plt = _agg()
    names = [n for n in ke if n != TRUTH]
    colours = _colours(names)
    fig, (ax_k, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    # KE: pdf of log10 KE
    logs = {n: np.log10(np.maximum(np.ravel(v), 1e-30)) for n, v in ke.items()}
    lo, hi = np.percentile(logs[TRUTH], [0.1, 100.0])
    lo = min(lo, hi - 1.0)
    edges = np.linspace(lo, hi + 0.5, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    scale = f0 if f0 else 1.0
    vmax = 1.2 * float(np.max(np.abs(vorticity[TRUTH]))) / scale or 1.0
    vedges = np.linspace(-vmax, vmax, bins + 1)
    vcentres = 0.5 * (vedges[1:] + vedges[:-1])
    for name in [TRUTH, *names]:
        style = {"color": "k", "lw": 2} if name == TRUTH else {"color": colours[name]}
        ax_k.semilogy(centres, np.maximum(_pdf(logs[name], edges), 1e-12), label=name, **style)
        ax_v.semilogy(
            vcentres,
            np.maximum(_pdf(np.ravel(vorticity[name]) / scale, vedges), 1e-12),
            label=name,
            **style,
        )
    ax_k.set_xlabel("log10 KE per unit mass [m2 s-2]")
    ax_k.set_ylabel("probability density")
    ax_k.set_title("KE distribution (T points, layers pooled)")
    ax_v.set_xlabel("relative vorticity / f0" if f0 else "relative vorticity [s-1]")
    ax_v.set_title("vorticity distribution (F points, layers pooled)")
    for ax in (ax_k, ax_v):
        ax.set_ylim(bottom=1e-6 * max(ax.get_ylim()[1], 1e-12))
        ax.grid(alpha=0.3)
    ax_k.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


def plot_ke_series(
    png: str | Path,
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    truth_mean: float | None = None,
) -> Path:
    """Total KE [PJ] of every run against model years (stability), one colour per experiment
    (the label's first word), the truth's time mean as a dashed black line."""
    plt = _agg()
    experiments = list(dict.fromkeys(label.split()[0] for label in series))
    colours = _colours(experiments)
    fig, ax = plt.subplots(figsize=(8, 4))
    seen: set[str] = set()
    for label, (years, ke) in series.items():
        exp = label.split()[0]
        ax.plot(
            years,
            np.asarray(ke) / 1e15,
            color=colours[exp],
            lw=1,
            label=exp if exp not in seen else None,
        )
        seen.add(exp)
    if truth_mean is not None:
        ax.axhline(truth_mean / 1e15, color="k", ls="--", lw=1.5, label="truth (time mean)")
    ax.set_xlabel("model years")
    ax.set_ylabel("total kinetic energy [PJ]")
    ax.set_title("basin KE of every run")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


def plot_interface_maps(
    png: str | Path, depth: Mapping[str, np.ndarray], x_km: np.ndarray, y_km: np.ndarray
) -> Path:
    """Maps of the time-mean top-layer interface depth [m] (ocean interior), truth first, one
    colour scale for all."""
    plt = _agg()
    names = [TRUTH, *[n for n in depth if n != TRUTH]]
    maps = {n: np.asarray(depth[n])[1:-1, 1:-1] for n in names}
    lo = min(float(m.min()) for m in maps.values())
    hi = max(float(m.max()) for m in maps.values())
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        image = ax.pcolormesh(
            x_km[1:-1],
            y_km[1:-1],
            maps[name],
            cmap="viridis_r",
            vmin=lo,
            vmax=hi,
            shading="auto",
        )
        ax.set_aspect("equal")
        ax.set_xlabel("x [km]")
        ax.set_title(f"{name}: top interface depth [m]")
    axes[0][0].set_ylabel("y [km]")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(png)


def plot_snapshots(
    png: str | Path, zeta: Mapping[str, np.ndarray], x_km: np.ndarray, y_km: np.ndarray
) -> Path:
    """Maps of the top-layer relative vorticity [s-1] of the last record of each flow (truth
    first, coarse-grained), one symmetric colour scale from the truth's 99th percentile."""
    plt = _agg()
    names = [TRUTH, *[n for n in zeta if n != TRUTH]]
    vmax = float(np.percentile(np.abs(zeta[TRUTH]), 99)) or 1e-6
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        z = np.asarray(zeta[name])
        image = ax.pcolormesh(
            x_km[2 : 2 + z.shape[1]],
            y_km[2 : 2 + z.shape[0]],
            z,
            cmap="RdBu_r",
            vmin=-vmax,
            vmax=vmax,
            shading="auto",
        )
        ax.set_aspect("equal")
        ax.set_xlabel("x [km]")
        ax.set_title(f"{name}: top-layer vorticity")
    axes[0][0].set_ylabel("y [km]")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="s-1")
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(png)
