"""``python -m mlbridge_models.subgrid.make_data``: the subgrid training dataset of a fine toy run.

Resumable: rerun the same command after an interruption and the chunks already written are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlbridge_models.subgrid.dataset import (
    DatasetError,
    DatasetSettings,
    ToyRunError,
    ToyRunner,
    build_dataset,
)

from bridge.paths import default_build_dir

EXAMPLE = """example:
  python -m mlbridge_models.subgrid.make_data runs/fine/FINE_grid.nc \\
      --fine-cfg examples/02_fine/namelist_cfg --coarse-cfg examples/01_coarse/namelist_cfg \\
      --out data/subgrid --chunk 8 --ranks 2 --first-record 73
"""


def _default_exe() -> Path:
    return default_build_dir() / "bin" / "toy_nemo"


def parser() -> argparse.ArgumentParser:
    """The command line of ``make_data``."""
    p = argparse.ArgumentParser(
        prog="python -m mlbridge_models.subgrid.make_data",
        description="Coarse-grain a fine toy_nemo run and write the subgrid momentum forcing "
        "(su, sv) with the coarse state (u, v, h), chunk by chunk (resumable).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("fine_run", type=Path, help="the fine run's <cn_exp>_grid.nc")
    p.add_argument("--fine-cfg", type=Path, required=True, help="namelist_cfg of the fine run")
    p.add_argument(
        "--coarse-cfg", type=Path, required=True, help="namelist_cfg of the coarse model"
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (index + chunks)")
    p.add_argument("--chunk", type=int, default=8, help="snapshots per chunk file (default 8)")
    p.add_argument(
        "--first-record",
        type=int,
        default=0,
        help="first snapshot used, 0-based (drop the spin-up; default 0)",
    )
    p.add_argument(
        "--u-filter",
        choices=("face", "box"),
        default="face",
        help="coarse-graining of u, v along the normal direction (default face)",
    )
    p.add_argument(
        "--exe",
        type=Path,
        default=None,
        help="toy_nemo executable (default $MLBRIDGE_BUILD_DIR or build/, bin/toy_nemo)",
    )
    p.add_argument(
        "--inviscid",
        action="store_true",
        help="both tendencies without lateral viscosity: the forcing holds the eddy fluxes only",
    )
    p.add_argument(
        "--subtract-affine",
        action="store_true",
        help="subtract the part of the forcing affine in the state (the filters' commutation "
        "error of the linear terms, docs/closures.md): the forcing of the nonlinear terms only",
    )
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks of the tendency runs")
    p.add_argument(
        "--max-chunks",
        type=int,
        default=None,
        help="write at most N new chunks, then stop (rerun to continue)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on a refused input, 1 when a model run failed."""
    args = parser().parse_args(argv)
    exe = args.exe or _default_exe()
    if not exe.is_file():
        print(f"make_data: error: {exe}: no toy_nemo executable (mlbridge build)", file=sys.stderr)
        return 2
    settings = DatasetSettings(
        args.fine_run,
        args.fine_cfg,
        args.coarse_cfg,
        args.chunk,
        args.u_filter,
        args.first_record,
        args.inviscid,
        args.subtract_affine,
    )
    try:
        report = build_dataset(
            settings,
            args.out,
            ToyRunner(exe, ranks=args.ranks),
            max_chunks=args.max_chunks,
            progress=print,
        )
    except DatasetError as err:
        print(f"make_data: error: {err}", file=sys.stderr)
        return 2
    except ToyRunError as err:
        print(f"make_data: error: {err}", file=sys.stderr)
        return 1
    print(
        f"{report.index}: {len(report.written)} chunk(s) written, {len(report.skipped)} "
        f"already there, {report.records} snapshots in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
