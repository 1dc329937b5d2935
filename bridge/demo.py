"""``make demo``: the main job of the project, end to end.

1. the coarse double gyre run alone for a few model years (the baseline);
2. the same configuration coupled, over MPI, to a Python inference server running a closure
   (the example ``examples/coupled_laplacian``), for a shorter period;
3. a figure of each run and a comparison, written under ``runs/demo/``.

Usage: ``python -m bridge.demo [--years 3] [--coupled-days 60] [--out runs/demo]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_DAY = 60  # coarse configuration: rn_Dt = 1440 s


def _run(toml: Path, steps: int, workdir: Path, what: str) -> Path:
    from bridge.launcher import launch

    print(f"== {what}: {toml.relative_to(REPO)}, {steps} steps", flush=True)
    result = launch(toml, steps=steps, workdir=workdir, progress=sys.stderr.isatty())
    if not result.ok:
        raise SystemExit(f"demo: {what} failed (exit {result.returncode}), see {result.run_dir}")
    grids = sorted(result.run_dir.glob("*_grid.nc"))
    if not grids:
        raise SystemExit(f"demo: {what} wrote no *_grid.nc in {result.run_dir}")
    return grids[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.demo",
        description="Run the coarse double gyre alone and coupled, and plot both.",
        epilog="example:\n  python -m bridge.demo --years 3 --coupled-days 60\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--years", type=float, default=3.0, help="model years run alone")
    parser.add_argument(
        "--coupled-days", type=int, default=60, help="model days of the coupled run (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="output folder")
    args = parser.parse_args(argv)

    from bridge.plots import plot_run

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = max(1, round(args.years * 365 * STEPS_PER_DAY))
    alone = _run(REPO / "examples" / "coarse" / "coupling.toml", steps, out, "coarse run alone")
    png = plot_run(alone, out / "coarse_alone.png", title=f"coarse, alone, {args.years:g} years")
    print(f"figure: {png}")

    coupled_toml = REPO / "examples" / "coupled_laplacian" / "coupling.toml"
    if args.coupled_days > 0 and coupled_toml.is_file():
        coupled = _run(coupled_toml, args.coupled_days * STEPS_PER_DAY, out, "coupled run")
        png = plot_run(coupled, out / "coupled.png", title="coarse, coupled to a Python closure")
        print(f"figure: {png}")
        timing = coupled.parent / "timing.json"
        if timing.is_file():
            print(f"timing summary: {timing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
