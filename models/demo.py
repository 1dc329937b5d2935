"""``make demo``: the main job of the project, end to end, held against the truth.

1. the closures registered in the demo's own registry (``runs/demo/registry``), which checks
   their hashes and runs their dry passes: the trained subgrid momentum CNN
   (``models/artifacts/subgrid_cnn``, a torch closure) and the energy-budget backscatter
   (``examples/10_backscatter``, a python closure shipped with the package; the best closure of
   the evaluation, docs/closures.md);
2. the coarse double gyre spun up alone for a few model years (a restart at the end);
3. from that restart, the same period three times: the model alone, and the model coupled over
   MPI to a Python inference server running each closure every step;
4. the three runs against the coarse-grained fine truth: its committed summary
   (``models/artifacts/truth_reference``, :mod:`mlbridge_models.evaluation.reference`) holds the
   truth's KE per layer, its KE spectra and a snapshot, so no fine run is needed here. A table
   (KE per layer, KE error, Ross et al. 2023's spectral distance per layer) and figures under
   ``runs/demo/``.

One demo year is not the evaluation (``make evaluate``: 5 members, 20 years, confidence
intervals); it shows the way there.

Usage: ``python -m mlbridge_models.demo [--years 5] [--coupled-days 365] [--out runs/demo]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bridge import paths

STEPS_PER_DAY = 60  # coarse configuration: rn_Dt = 1440 s
# files of a checkout of the repository (an installed package ships neither examples/ nor the
# trained artifacts): the demo runs from a checkout
COARSE = ("examples", "01_coarse", "coupling.toml")
CLOSURES = {
    # label: (coupling file, manifest)
    "CNN": (
        ("examples", "07_subgrid_cnn", "coupling.toml"),
        ("models", "artifacts", "subgrid_cnn", "manifest.toml"),
    ),
    "backscatter": (
        ("examples", "10_backscatter", "coupling.toml"),
        ("examples", "10_backscatter", "backscatter.toml"),
    ),
}
REFERENCE = ("models", "artifacts", "truth_reference")


def _run(
    toml: Path, out: Path, what: str, steps: int, patch: dict, registry: Path | None = None
) -> Path:
    """Run ``toml`` with its namelist_cfg patched (and its closures taken from ``registry``);
    return the run's ``*_grid.nc``."""
    from bridge.config.coupling import load_config
    from bridge.config.namelist import write_patched_cfg
    from bridge.launch.launcher import launch

    config = load_config(toml)
    cfg = write_patched_cfg(config.model.namelist_cfg, patch, out / f"namelist_cfg.{what}")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, namelist_cfg=cfg))
    if registry is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, registry=registry)
        )
    shown = toml.relative_to(toml.parents[2])  # examples/<case>/coupling.toml
    print(f"== {what}: {shown}, {steps} steps", flush=True)
    result = launch(config, steps=steps, workdir=out, progress=sys.stderr.isatty())
    if not result.ok:
        raise SystemExit(f"demo: {what} failed (exit {result.returncode}), see {result.run_dir}")
    grids = sorted(result.run_dir.glob("*_grid.nc"))
    if not grids:
        raise SystemExit(f"demo: {what} wrote no *_grid.nc in {result.run_dir}")
    return grids[0]


def against_truth(
    grids: dict[str, Path], reference_dir: Path, out: Path
) -> tuple[list[dict[str, Any]], list[Path], list[float]]:
    """Each run of ``grids`` (label -> grid file) against the committed coarse-grained truth:
    a table row per run, the figures (spectra, KE per layer, snapshots) and the truth's
    time-mean KE per layer [PJ]."""
    from mlbridge_models.evaluation import metrics as ev
    from mlbridge_models.evaluation import plots
    from mlbridge_models.evaluation import reference as ref
    from mlbridge_models.evaluation.runs import _grid_info, read_flow

    truth = ref.load(reference_dir)
    rows: list[dict[str, Any]] = []
    spectra: dict[str, ev.Spectrum] = {plots.TRUTH: truth.spectrum}
    zeta = {
        plots.TRUTH: ev.relative_vorticity(
            truth.snapshot.u[-1, 0], truth.snapshot.v[-1, 0], truth.dx, truth.dy
        )
    }
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    info: dict[str, Any] = {}
    for label, grid in grids.items():
        info = _grid_info(grid)
        if (info["dx"], info["dy"]) != (truth.dx, truth.dy):
            raise SystemExit(
                f"demo: {grid}: grid spacing {info['dx']} x {info['dy']} m, the truth reference "
                f"{reference_dir} has {truth.dx} x {truth.dy} m"
            )
        flow, years = read_flow([grid])
        c = ref.compare(flow, truth)
        spectra[label] = c["spectrum"]
        zeta[label] = ev.relative_vorticity(flow.u[-1, 0], flow.v[-1, 0], truth.dx, truth.dy)
        series[label] = (years, ev.layer_ke(flow.u, flow.v, flow.h, truth.dx, truth.dy))
        rows.append(
            {
                "run": label,
                "ke_pj": [float(x) / 1e15 for x in c["ke"]],
                "ke_error": c["ke_error"],
                "spectrum_distance": [float(x) for x in c["spectrum_distance"]],
            }
        )
    base = rows[0]["spectrum_distance"]
    for row in rows:
        row["spectrum_score"] = [
            float(ev.similarity_score(d, b))
            for d, b in zip(row["spectrum_distance"], base, strict=True)
        ]
    figures = [
        plots.plot_spectra(out / "truth_spectra.png", spectra),
        plots.plot_snapshots(
            out / "truth_snapshots.png", zeta, info["x_t"] / 1e3, info["y_t"] / 1e3
        ),
        _plot_ke(out / "truth_ke.png", series, truth),
    ]
    return rows, figures, [float(x) / 1e15 for x in truth.ke_mean]


def _plot_ke(png: Path, series: dict[str, tuple[np.ndarray, np.ndarray]], truth: Any) -> Path:
    """Basin KE per layer of each run over time, with the truth's mean and +-1 standard
    deviation of its records as a band."""
    from mlbridge_models.evaluation.plots import _agg, _colours

    plt = _agg()
    nz = truth.ke_series.shape[1]
    colours = _colours(list(series))
    fig, axes = plt.subplots(1, nz, figsize=(5.2 * nz, 4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        mean, std = truth.ke_series[:, k].mean() / 1e15, truth.ke_series[:, k].std() / 1e15
        ax.axhspan(mean - std, mean + std, color="0.85", label="truth: mean +- 1 std")
        ax.axhline(mean, color="k", lw=2)
        for label, (years, ke) in series.items():
            ax.plot(years, ke[:, k] / 1e15, color=colours[label], label=label)
        ax.set_xlabel("model years")
        ax.set_ylabel("KE [PJ]")
        ax.set_title(f"layer {k + 1} kinetic energy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def table(rows: list[dict[str, Any]], truth_ke_pj: list[float]) -> str:
    """The rows of :func:`against_truth` as a text table (layer values separated by ``/``)."""
    lines = [
        "run                 KE per layer [PJ]   KE error   spectral distance [m3 s-2]   "
        "spectral score",
        f"{'truth (coarse)':<19} {' / '.join(f'{x:.1f}' for x in truth_ke_pj):<19} {'':<10} "
        f"{'0':<28} 1",
    ]
    for r in rows:
        lines.append(
            f"{r['run']:<19} {' / '.join(f'{x:.1f}' for x in r['ke_pj']):<19} "
            f"{100 * r['ke_error']:>6.1f} %   "
            f"{' / '.join(f'{x:.3g}' for x in r['spectrum_distance']):<28} "
            f"{' / '.join(f'{x:+.2f}' for x in r['spectrum_score'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlbridge_models.demo",
        description="Register the closures, spin up the coarse double gyre, continue it alone "
        "and coupled to each closure, and hold the runs against the coarse-grained truth.",
        epilog="example:\n  python -m mlbridge_models.demo --years 5 --coupled-days 365\n"
        "  python -m mlbridge_models.demo --closures backscatter --coupled-days 30\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--years", type=float, default=5.0, help="model years of spin-up (5)")
    parser.add_argument(
        "--coupled-days", type=int, default=365, help="model days run alone and coupled (365)"
    )
    parser.add_argument(
        "--closures",
        default=",".join(CLOSURES),
        help=f"comma-separated, of {', '.join(CLOSURES)} (all)",
    )
    checkout = paths.checkout_root()
    default_out = (checkout or Path.cwd()) / "runs" / "demo"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.closures.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CLOSURES]
    if unknown or not chosen:
        parser.error(f"--closures {args.closures!r}: choose from {', '.join(CLOSURES)}")
    try:
        coarse = paths.checkout_file(*COARSE)
        reference_dir = paths.checkout_file(*REFERENCE)
        closures = {
            c: (paths.checkout_file(*CLOSURES[c][0]), paths.checkout_file(*CLOSURES[c][1]))
            for c in chosen
        }
    except paths.CheckoutRequiredError as err:
        raise SystemExit(f"demo: {err}") from None

    from bridge.plots import plot_comparison, plot_run
    from bridge.registry.store import Registry

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    registry = out / "registry"
    refs = {}
    for label, (_, manifest) in closures.items():
        refs[label] = Registry(registry).register(None, manifest, force=True)  # the demo's own
        print(f"== registered {refs[label]} in {registry}", flush=True)
    spin = max(1, round(args.years * 365 * STEPS_PER_DAY))
    grid = _run(coarse, out, "spin-up", spin, {"namrun": {"nn_stock": spin}})
    png = plot_run(grid, out / "coarse_alone.png", title=f"coarse, {args.years:g} years alone")
    print(f"figure: {png}")
    restart = sorted(grid.parent.glob(f"*_{spin:08d}_restart.nc"))
    if args.coupled_days <= 0 or not restart:
        return 0

    steps = args.coupled_days * STEPS_PER_DAY
    cont = {
        "nn_it000": spin + 1,
        "ln_rstart": True,
        "cn_ocerst_in": str(restart[0].with_suffix("")),
        "nn_write": min(600, steps),
        "nn_stock": 0,
    }
    grids = {"alone": _run(coarse, out, "alone", steps, {"namrun": {**cont, "cn_exp": "ALONE"}})}
    for label, (toml, _) in closures.items():
        grids[label] = _run(toml, out, label, steps, {"namrun": cont}, registry=registry)
        timing = grids[label].parent / "timing.json"
        if timing.is_file():
            print(f"timing summary ({label}): {timing}")
    png = plot_comparison(
        {k if k == "alone" else f"coupled to {refs[k]}": g for k, g in grids.items()},
        out / "coupled.png",
        title=f"{args.coupled_days} days from year {args.years:g}: alone, and coupled to each "
        "closure in a Python server",
    )
    print(f"figure: {png}")

    rows, figures, truth_pj = against_truth(grids, reference_dir, out)
    text = table(rows, truth_pj)
    print(
        f"\nagainst the coarse-grained truth ({reference_dir.relative_to(reference_dir.parents[2])}"
        f"; spectral distance and score as Ross et al. 2023, per layer, score against 'alone'; "
        f"{args.coupled_days} days, not the evaluation):\n{text}\n"
    )
    (out / "against_truth.json").write_text(
        json.dumps({"truth_ke_pj": truth_pj, "runs": rows}, indent=1) + "\n"
    )
    for png in figures:
        print(f"figure: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
