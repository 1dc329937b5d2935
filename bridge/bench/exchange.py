"""``mlbridge bench exchange``: bridge round trip against a raw MPI ping-pong of the same bytes.

One job per size, one model rank (``mlb_driver`` in bench mode) and one server rank. In the same
run, between the same two processes, the driver first times a raw ``MPI_Send``/``MPI_Recv``
ping-pong of the bytes of u and v out and two tendencies back, then the same traffic through
``mlb_put``/``mlb_get`` with the ``identity`` closure (no compute). Medians over the repeats and
their ratio are printed (target: bridge <= 1.25 x raw).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

EXAMPLES = "  mlbridge bench exchange --sizes 42x42x75,128x128x30 --repeats 3\n"
REPO = Path(__file__).resolve().parents[2]
MARK = "mlb_driver bench:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mlbridge bench exchange``."""
    parser.add_argument(
        "--sizes",
        default="42x42x75,128x128x30",
        help="per-rank sizes NXxNYxNZ, comma-separated (default: 42x42x75,128x128x30)",
    )
    parser.add_argument(
        "--round-trips",
        type=int,
        default=0,
        help="timed round trips per phase (default 20 x repeats)",
    )
    parser.add_argument("--build-dir", type=Path, default=None, help="where bin/mlb_driver is")


def _parse_sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            nx, ny, nz = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not NXxNYxNZ") from None
        sizes.append((nx, ny, nz))
    return sizes


def run_one(driver: Path, size: tuple[int, int, int], round_trips: int, work: Path) -> dict:
    """One job: return the driver's figures (seconds per round trip, raw and bridge).

    Raises
    ------
    RuntimeError
        If the job fails or prints no figures.
    """
    from bridge.config import CouplingConfig, write_config_json
    from bridge.mpiexec import Program, mpi_env, mpmd_command, python_program

    nx, ny, nz = size
    work.mkdir(parents=True, exist_ok=True)
    (work / "driver.nml").write_text(
        "&driver\n"
        f"  nx = {nx}, ny = {ny}, nz = {nz}, mode = 'bench', nrepeat = {round_trips}, nwarm = 5\n"
        "  send = 'u', 'v'\n  recv = 'u_tend', 'v_tend'\n/\n"
    )
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": str(driver), "ranks": 1},
            "server": {"ranks": 1, "timeout_s": 120.0},
            "exchange": [
                {
                    "closure": "identity",
                    "inputs": {"u": "u", "v": "v"},
                    "outputs": {"id_u": "u_tend", "id_v": "v_tend"},
                }
            ],
        },
        base_dir=work,
    )
    write_config_json(config, work / "run_config.json")
    count = 2 * nx * ny * nz
    cmd = mpmd_command(
        [
            Program(1, (str(driver), "driver.nml")),
            python_program(
                1,
                "bridge.bench.exchange",
                "--serve",
                str(work / "run_config.json"),
                str(count),
                str(round_trips + 5),
            ),
        ]
    )
    proc = subprocess.run(
        cmd, cwd=work, env=mpi_env({"PYTHONPATH": str(REPO)}), capture_output=True, text=True
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"exchange bench failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(line[len(MARK) :])


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print medians and ratios."""
    from bridge.build import default_build_dir

    build = args.build_dir or default_build_dir()
    driver = Path(build) / "bin" / "mlb_driver"
    if not driver.is_file():
        print(f"bench exchange: {driver} not found: run `mlbridge build`", file=sys.stderr)
        return 2
    try:
        sizes = _parse_sizes(args.sizes)
    except ValueError as err:
        print(f"bench exchange: {err}", file=sys.stderr)
        return 2
    round_trips = args.round_trips or 20 * max(1, args.repeats)
    print(f"{'per rank':>14} {'MB/trip':>8} {'raw ms':>8} {'bridge ms':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="mlb-bench-") as tmp:
        for size in sizes:
            try:
                fig = run_one(driver, size, round_trips, Path(tmp) / "x".join(map(str, size)))
            except RuntimeError as err:
                print(f"bench exchange: {err}", file=sys.stderr)
                return 1
            raw = statistics.median(fig["raw_s"])
            brg = statistics.median(fig["bridge_s"])
            mb = 4 * size[0] * size[1] * size[2] * 8 / 1e6
            label = "x".join(map(str, size))
            print(f"{label:>14} {mb:8.2f} {raw * 1e3:8.3f} {brg * 1e3:10.3f} {brg / raw:6.2f}")
    return 0


def serve(argv: Sequence[str]) -> int:
    """Server side of one bench job: the raw ping-pong, then the ordinary server."""
    import numpy as np
    from mpi4py import MPI

    from bridge.config import load_config
    from bridge.server import serve as bridge_serve
    from bridge.transport import mpi as wire

    config_path, count, trips = Path(argv[0]), int(argv[1]), int(argv[2])
    layout = wire.split_world(MPI.COMM_WORLD, wire.COLOUR_SERVER)
    buf = np.empty(count)
    world = MPI.COMM_WORLD
    for _ in range(trips):
        world.Recv([buf, MPI.DOUBLE_PRECISION], source=0, tag=1)
        world.Send([buf, MPI.DOUBLE_PRECISION], dest=0, tag=2)
    return bridge_serve(layout, load_config(config_path), config_path.parent)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2:]))
    sys.exit("usage: mlbridge bench exchange (this module is not run directly)")
