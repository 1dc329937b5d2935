"""``mlbridge bench exchange``: bridge round trip against a raw MPI ping-pong of the same bytes.

One job per size, one model rank (``mlb_driver`` in bench mode) and one server rank. In the same
run, between the same two processes, the driver first times a raw ``MPI_Send``/``MPI_Recv``
ping-pong of the same bytes in the same pattern (u and v out, one message each, from contiguous
buffers; two tendencies back, one message each; the server echoes what it received, as the
``identity`` closure does), then the traffic through ``mlb_put``/``mlb_get`` of halo-1 arrays with
the ``identity`` closure (no compute; the server still checks for NaN). Medians over the round
trips and their ratio are printed (target: bridge <= 1.25 x raw).

``--transport mpi,oasis`` times each size with both transports in the same run (``oasis``: the
fields go through ``oasis_put``/``oasis_get`` after the same handshake, see ``docs/oasis.md``),
each job with its own raw ping-pong, and prints the OASIS round trip over the MPI one.
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

from bridge import paths

EXAMPLES = (
    "  mlbridge bench exchange --sizes 42x42x75,128x128x30 --repeats 3\n"
    "  mlbridge bench exchange --transport mpi,oasis --sizes 42x42x75 --repeats 1\n"
)
TRANSPORTS = ("mpi", "oasis")
_PHASE_LABEL = {
    "put": "model put",
    "get": "model get",
    "unpack_s": "server unpack",
    "inference_s": "server NaN read",
    "pack_s": "server pack",
    "send_s": "server send",
}
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
        help="timed round trips per phase and job (default 100)",
    )
    parser.add_argument("--build-dir", type=Path, default=None, help="where bin/mlb_driver is")
    parser.add_argument(
        "--transport",
        default="mpi",
        help="comma-separated transports to time, in the same run: mpi, oasis (default: mpi)",
    )


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"42x42x75,64x64x30"`` -> ``[(42, 42, 75), (64, 64, 30)]``.

    Raises
    ------
    ValueError
        If an item is not ``NXxNYxNZ`` with positive integers.
    """
    sizes = []
    for item in text.split(","):
        try:
            nx, ny, nz = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not NXxNYxNZ") from None
        if min(nx, ny, nz) < 1:
            raise ValueError(f"--sizes: {item!r} has a size below 1")
        sizes.append((nx, ny, nz))
    return sizes


def run_one(
    driver: Path, size: tuple[int, int, int], round_trips: int, work: Path, transport: str = "mpi"
) -> dict:
    """One job: return the driver's figures (seconds per round trip, raw and bridge).

    Raises
    ------
    RuntimeError
        If the job fails or prints no figures.
    """
    from bridge.config.coupling import CouplingConfig, write_config_json
    from bridge.launch.mpiexec import Program, mpi_env, mpmd_command, python_program

    nx, ny, nz = size
    work.mkdir(parents=True, exist_ok=True)
    (work / "driver.nml").write_text(
        "&driver\n"
        f"  nx = {nx}, ny = {ny}, nz = {nz}, mode = 'bench', nrepeat = {round_trips}, nwarm = 5\n"
        "  send = 'u', 'v'\n  recv = 'u_tend', 'v_tend'\n/\n"
    )
    config = CouplingConfig.from_dict(
        {
            "transport": transport,
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
    checkout = paths.checkout_root()  # the server starts in `work`: keep a checkout importable
    env = {"PYTHONPATH": str(checkout)} if checkout is not None else {}
    if transport == "oasis":
        from bridge.config.namcouple import write_namcouple
        from bridge.config.oasis import library_namcouple
        from bridge.launch.oasis import choose_oasis_backend

        backend = choose_oasis_backend(driver.parent.parent)
        # the driver exchanges at every step, warm-up (5) included: that many OASIS dates
        sent, back = {"u": nz, "v": nz}, {"u_tend": nz, "v_tend": nz}
        namcouple = library_namcouple(nx, ny, sent, back, 1, round_trips + 5, oasis=backend.limits)
        write_namcouple(namcouple, work)
        env.update(backend.env)
    count = nx * ny * nz  # values per field and message
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
    proc = subprocess.run(cmd, cwd=work, env=mpi_env(env), capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"exchange bench failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    fig = json.loads(line[len(MARK) :])
    fig["server_busy_s"] = float("nan")
    timing = work / "timing.json"
    if timing.is_file():
        server = json.loads(timing.read_text())["server"]
        fig["server_busy_s"] = server["busy_per_exchange_median_s"]
    fig["phases"] = round_trip_phases(work / "timing_steps.json")
    return fig


PHASES = ("put", "get", "unpack_s", "inference_s", "pack_s", "send_s")
"""Where a round trip goes (``--phases``): the model's ``mlb_put`` and ``mlb_get`` and the
server's phases (``inference_s`` of the ``identity`` closure is the NaN read of the inputs)."""


def round_trip_phases(steps_file: Path) -> dict[str, float]:
    """Medians over the round trips of each of :data:`PHASES`, seconds (empty without a model
    timeline: transport oasis)."""
    if not steps_file.is_file():
        return {}
    data = json.loads(steps_file.read_text())
    model = data.get("model", {}).get("0", {})
    server = data["servers"][0]
    if "put_start_s" not in model:
        return {}
    phases = {
        what: statistics.median(
            e - s
            for s, e in zip(model[f"{what}_start_s"], model[f"{what}_end_s"], strict=True)
            if s >= 0
        )
        for what in ("put", "get")
    }
    phases.update({k: statistics.median(server[k]) for k in PHASES[2:]})
    return phases


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print medians and ratios."""
    build = args.build_dir or paths.default_build_dir()
    driver = Path(build) / "bin" / "mlb_driver"
    if not driver.is_file():
        print(f"bench exchange: {driver} not found: run `mlbridge build`", file=sys.stderr)
        return 2
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as err:
        print(f"bench exchange: {err}", file=sys.stderr)
        return 2
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    if not transports or set(transports) - set(TRANSPORTS):
        print(
            f"bench exchange: --transport {args.transport!r}: expected {TRANSPORTS}",
            file=sys.stderr,
        )
        return 2
    repeats = max(1, args.repeats)
    round_trips = args.round_trips or 100
    Key = tuple[tuple[int, int, int], str]
    figures: dict[Key, list[dict]] = {(s, t): [] for s in sizes for t in transports}
    with tempfile.TemporaryDirectory(prefix="mlb-bench-") as tmp:
        for rep in range(repeats):  # sizes and transports alternate: a shared machine drifts
            for size, transport in figures:
                work = Path(tmp) / f"{'x'.join(map(str, size))}-{transport}-{rep}"
                try:
                    figures[(size, transport)].append(
                        run_one(driver, size, round_trips, work, transport)
                    )
                except RuntimeError as err:
                    print(f"bench exchange: {err}", file=sys.stderr)
                    return 1
    print(
        f"{repeats} job(s) per size, {round_trips} timed round trips per phase and job; "
        "medians over the jobs of each job's median (ratio: range over the jobs)"
    )
    print(
        f"{'per rank':>14} {'MB/trip':>8} {'transport':>9} {'raw ms':>8} {'bridge ms':>10} "
        f"{'ratio':>6} {'ratio range':>13} {'server busy ms':>15}"
    )
    bridge_ms: dict[Key, float] = {}
    for (size, transport), figs in figures.items():
        raws = [statistics.median(f["raw_s"]) for f in figs]
        brgs = [statistics.median(f["bridge_s"]) for f in figs]
        ratios = [b / r for b, r in zip(brgs, raws, strict=True)]
        busy = statistics.median(f["server_busy_s"] for f in figs)
        raw, brg = statistics.median(raws), statistics.median(brgs)
        mb = 4 * size[0] * size[1] * size[2] * 8 / 1e6
        label = "x".join(map(str, size))
        bridge_ms[(size, transport)] = brg * 1e3
        print(
            f"{label:>14} {mb:8.2f} {transport:>9} {raw * 1e3:8.3f} {brg * 1e3:10.3f} "
            f"{statistics.median(ratios):6.2f} {min(ratios):6.2f}-{max(ratios):<6.2f} "
            f"{busy * 1e3:15.3f}"
        )
        phases = [f["phases"] for f in figs if f.get("phases")]
        if phases:
            print(
                f"{'':>14} {'':8} {'':>9} where a bridge round trip goes (ms, medians): "
                + ", ".join(
                    f"{_PHASE_LABEL[k]} {statistics.median(p[k] for p in phases) * 1e3:.3f}"
                    for k in PHASES
                )
            )
        if transport == "oasis" and (size, "mpi") in bridge_ms:
            ratio = bridge_ms[(size, "oasis")] / bridge_ms[(size, "mpi")]
            print(f"{label:>14} {'':8} {'oasis/mpi':>9} {'':8} {'':10} {ratio:6.2f}")
    return 0


def serve(argv: Sequence[str]) -> int:
    """Server side of one bench job: the raw ping-pong, then the ordinary server."""
    import numpy as np
    from mpi4py import MPI

    from bridge.config.coupling import load_config
    from bridge.server.main import serve as bridge_serve
    from bridge.transport import mpi as wire
    from bridge.wire import COLOUR_SERVER

    config_path, count, trips = Path(argv[0]), int(argv[1]), int(argv[2])
    layout = wire.split_world(MPI.COMM_WORLD, COLOUR_SERVER)
    # one message per field each way (u, v out; two tendencies back), as the bridge's exchange
    bufs = [np.zeros(count), np.zeros(count)]
    world = MPI.COMM_WORLD
    for _ in range(trips):
        for buf in bufs:
            world.Recv([buf, MPI.DOUBLE_PRECISION], source=0, tag=1)
        for buf in bufs:
            world.Send([buf, MPI.DOUBLE_PRECISION], dest=0, tag=2)
    return bridge_serve(layout, load_config(config_path), config_path.parent)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2:]))
    sys.exit("usage: mlbridge bench exchange (this module is not run directly)")
