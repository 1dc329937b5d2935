"""``make demo``: the main job of the project, end to end.

1. the trained subgrid momentum CNN (``models/artifacts/subgrid_cnn``) registered in the
   demo's own registry (``runs/demo/registry``), which checks its hash and runs its dry pass;
2. the coarse double gyre spun up alone for a few model years (a restart at the end);
3. from that restart, the same period twice: the model alone, and the model coupled over MPI to
   a Python inference server running the CNN every step (``examples/07_subgrid_cnn``);
4. figures under ``runs/demo/``: the spin-up, and the two continuations side by side.

Usage: ``python -m bridge.demo [--years 5] [--coupled-days 365] [--out runs/demo]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from bridge import paths

STEPS_PER_DAY = 60  # coarse configuration: rn_Dt = 1440 s
# files of a checkout of the repository (an installed package ships neither examples/ nor
# the trained artifacts): the demo runs from a checkout
COARSE = ("examples", "01_coarse", "coupling.toml")
COUPLED = ("examples", "07_subgrid_cnn", "coupling.toml")
CLOSURE_MANIFEST = ("models", "artifacts", "subgrid_cnn", "manifest.toml")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.demo",
        description="Register the trained subgrid CNN, spin up the coarse double gyre, then "
        "continue it alone and coupled to the CNN.",
        epilog="example:\n  python -m bridge.demo --years 5 --coupled-days 365\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--years", type=float, default=5.0, help="model years of spin-up (5)")
    parser.add_argument(
        "--coupled-days", type=int, default=365, help="model days run alone and coupled (365)"
    )
    checkout = paths.checkout_root()
    default_out = (checkout or Path.cwd()) / "runs" / "demo"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    args = parser.parse_args(argv)
    try:
        coarse, coupled, closure_manifest = (
            paths.checkout_file(*parts) for parts in (COARSE, COUPLED, CLOSURE_MANIFEST)
        )
    except paths.CheckoutRequiredError as err:
        raise SystemExit(f"demo: {err}") from None

    from bridge.plots import plot_comparison, plot_run

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from bridge.registry.store import Registry

    registry = out / "registry"
    ref = Registry(registry).register(None, closure_manifest, force=True)  # the demo's own
    print(f"== registered {ref} in {registry}", flush=True)
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
    alone = _run(coarse, out, "alone", steps, {"namrun": {**cont, "cn_exp": "ALONE"}})
    grid_coupled = _run(coupled, out, "coupled", steps, {"namrun": cont}, registry=registry)
    png = plot_comparison(
        {"alone": alone, f"coupled to {ref}": grid_coupled},
        out / "coupled.png",
        title=f"{args.coupled_days} days from year {args.years:g}: alone, and coupled to the "
        "trained subgrid CNN in a Python server",
    )
    print(f"figure: {png}")
    timing = grid_coupled.parent / "timing.json"
    if timing.is_file():
        print(f"timing summary: {timing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
