"""``mlbridge bench scaling``: what a closure costs a big model, by model and server ranks.

For each per-rank size and each ``N:M`` (N model ranks, M server ranks), one job per case runs
``mlb_driver`` (``mode = 'steps'``): a model whose step is a calibrated busy loop of
``--model-ms`` milliseconds (the model-cost knob: a stand-in for a big model's step on one
rank, e.g. NEMO eORCA025 at 42 x 42 x 75 points per rank), putting u and v before the loop and
getting two tendencies after it, every step. Cases, each ``--repeats`` times and interleaved:

* **alone**: the same driver without any mlbridge call (N ranks, no server);
* **lag 0** and **lag 1**: coupled to M server ranks running the analytic closure ``--closure``
  on the exchanged fields (``timing.json`` gives the servers' busy time per exchange).

Printed per case (medians): the step time alone and coupled, the time overhead
``coupled / alone - 1``, the extra ranks ``M / N``, and the resource overhead in core-time
``(N + M) x coupled / (N x alone) - 1`` (the figure Morays/Eophis report for eORCA025: +20 to 30 %
for a synchronous CPU closure, 4 to 8 % asynchronous). ``--json`` and ``--figure`` write the
table and a plot. Nothing is asserted.

With more ranks than cores (``N + M`` above ``os.cpu_count()``) the ranks time-share cores and
the figures say nothing about a real machine: such cases are marked ``oversubscribed``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge import paths
from bridge.bench.exchange import parse_sizes

EXAMPLES = (
    "  mlbridge bench scaling --sizes 42x42x75 --ranks 1:1 --model-ms 5,20 --repeats 3\n"
    "  mlbridge bench scaling --sizes 32x32x10 --ranks 1:1,2:1 --steps 40 --json s.json "
    "--figure s.png\n"
)
MARK = "mlb_driver steps:"
PREFIX = {"laplacian": "lap", "smooth3": "smooth", "identity": "id"}


@dataclass
class ScalingRow:
    """One case (medians over the repeats, seconds per step)."""

    size: tuple[int, int, int]  # per model rank
    model_ranks: int
    server_ranks: int
    model_ms: float
    alone_s: float
    lag0_s: float
    lag1_s: float
    server0_s: float  # the servers' busy time per exchange (max over server ranks)
    server1_s: float
    oversubscribed: bool
    runs: dict[str, list[float]] = field(default_factory=dict)

    @property
    def extra_ranks(self) -> float:
        """``M / N``."""
        return self.server_ranks / self.model_ranks

    def overhead(self, lag: int) -> float:
        """``coupled / alone - 1`` for ``lag``."""
        return (self.lag0_s if lag == 0 else self.lag1_s) / self.alone_s - 1.0

    def resources(self, lag: int) -> float:
        """``(N + M) x coupled / (N x alone) - 1``: extra core-time for the same simulation."""
        n, m = self.model_ranks, self.server_ranks
        return (n + m) * (1.0 + self.overhead(lag)) / n - 1.0

    def as_json(self) -> dict:
        """The row with its derived figures."""
        row = asdict(self)
        row["size"] = "x".join(map(str, self.size))
        row["extra_ranks"] = self.extra_ranks
        for lag in (0, 1):
            row[f"overhead_lag{lag}"] = self.overhead(lag)
            row[f"resources_lag{lag}"] = self.resources(lag)
        return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mlbridge bench scaling``."""
    parser.add_argument(
        "--sizes", default="42x42x75", help="per-model-rank sizes NXxNYxNZ (default 42x42x75)"
    )
    parser.add_argument(
        "--ranks",
        default="1:1",
        help="N:M pairs, model ranks : server ranks, comma-separated (default 1:1)",
    )
    parser.add_argument(
        "--model-ms",
        default="10",
        help="the model's step on one rank, ms of busy loop, comma-separated (default 10)",
    )
    parser.add_argument(
        "--closure",
        default="smooth3",
        choices=sorted(PREFIX),
        help="analytic closure on u and v in the servers (default smooth3)",
    )
    parser.add_argument("--steps", type=int, default=100, help="timed steps per job")
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON")
    parser.add_argument("--figure", type=Path, default=None, help="write a PNG of the table")
    parser.add_argument("--build-dir", type=Path, default=None, help="where bin/mlb_driver is")


def parse_ranks(text: str) -> list[tuple[int, int]]:
    """``"1:1,2:1"`` -> ``[(1, 1), (2, 1)]``.

    Raises
    ------
    ValueError
        If an item is not ``N:M`` with N, M >= 1.
    """
    pairs = []
    for item in text.split(","):
        try:
            n, m = (int(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(f"--ranks: {item!r} is not N:M (model ranks : server ranks)") from None
        if n < 1 or m < 1:
            raise ValueError(f"--ranks: {item!r}: both counts must be at least 1")
        pairs.append((n, m))
    return pairs


def parse_floats(text: str, option: str) -> list[float]:
    """``"5,20"`` -> ``[5.0, 20.0]`` (each >= 0).

    Raises
    ------
    ValueError
        If an item is not a number >= 0.
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a comma-separated list of numbers") from None
    if any(v < 0 for v in values):
        raise ValueError(f"{option}: {text!r}: values must be >= 0")
    return values


def _job(
    driver: Path,
    work: Path,
    size: tuple[int, int, int],
    ranks: tuple[int, int],
    model_ms: float,
    steps: int,
    closure: str,
    lag: int | None,
) -> tuple[float, float]:
    """One job: the driver's seconds per step (slowest rank) and the servers' busy seconds per
    exchange (0 alone). ``lag`` None: the model alone.

    Raises
    ------
    RuntimeError
        If the job fails or the driver prints no figure.
    """
    from bridge.config.coupling import CouplingConfig, write_config_json
    from bridge.launch.mpiexec import Program, mpi_env, mpmd_command, python_program

    n, m = ranks
    nx, ny, nz = size
    work.mkdir(parents=True, exist_ok=True)
    warm = 5
    # each model rank owns nx x ny: the global grid is n_i nx x n_j ny with the driver's split
    pj = max(d for d in range(1, int(n**0.5) + 1) if n % d == 0)
    pi = n // pj
    (work / "driver.nml").write_text(
        "&driver\n"
        f"  nx = {nx * pi}, ny = {ny * pj}, nz = {nz}, jpni = {pi}, jpnj = {pj}\n"
        f"  mode = 'steps', nit000 = 1, nitend = {steps + warm}, nwarm = {warm}\n"
        f"  busy_ms = {model_ms}\n"
        "  send = 'u', 'v'\n  recv = 'u_tend', 'v_tend'\n/\n"
    )
    if lag is None:
        cmd = mpmd_command([Program(n, (str(driver), "driver.nml", "alone"))])
    else:
        prefix = PREFIX[closure]
        config = CouplingConfig.from_dict(
            {
                "model": {"executable": str(driver), "ranks": n},
                "server": {"ranks": m, "timeout_s": 120.0},
                "exchange": [
                    {
                        "closure": closure,
                        "inputs": {"u": "u", "v": "v"},
                        "outputs": {f"{prefix}_u": "u_tend", f"{prefix}_v": "v_tend"},
                        "params": {} if closure == "identity" else {"coefficient": 1.0e-7},
                        "lag": lag,
                    }
                ],
            },
            base_dir=work,
        )
        write_config_json(config, work / "run_config.json")
        cmd = mpmd_command(
            [
                Program(n, (str(driver), "driver.nml")),
                python_program(m, "bridge.server", "--config", "run_config.json", "--run-dir", "."),
            ]
        )
    checkout = paths.checkout_root()
    env = {"PYTHONPATH": str(checkout)} if checkout is not None else {}
    proc = subprocess.run(cmd, cwd=work, env=mpi_env(env), capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        what = "alone" if lag is None else f"lag {lag}"
        raise RuntimeError(
            f"scaling job {'x'.join(map(str, size))} {n}:{m} {what} failed (rc "
            f"{proc.returncode}) in {work}:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
        )
    step = float(json.loads(line[len(MARK) :])["step_s"])
    busy = 0.0
    timing = work / "timing.json"
    if lag is not None and timing.is_file():
        busy = float(json.loads(timing.read_text())["server"]["busy_per_exchange_median_s"])
    return step, busy


def measure(args: argparse.Namespace, driver: Path, work: Path) -> list[ScalingRow]:
    """Every case, ``args.repeats`` times, interleaved (a shared machine drifts)."""
    sizes = parse_sizes(args.sizes)
    pairs = parse_ranks(args.ranks)
    costs = parse_floats(args.model_ms, "--model-ms")
    cores = os.cpu_count() or 1
    cases = [(s, p, c) for s in sizes for p in pairs for c in costs]
    runs: dict[tuple, dict[str, list[float]]] = {
        case: {k: [] for k in ("alone", "lag0", "lag1", "srv0", "srv1")} for case in cases
    }
    for rep in range(max(1, args.repeats)):
        for case in cases:
            size, pair, cost = case
            tag = f"{'x'.join(map(str, size))}-{pair[0]}-{pair[1]}-{cost:g}-{rep}"
            for lag in (None, 0, 1):
                name = "alone" if lag is None else f"lag{lag}"
                step, busy = _job(
                    driver, work / f"{tag}-{name}", size, pair, cost, args.steps, args.closure, lag
                )
                runs[case][name].append(step)
                if lag is not None:
                    runs[case][f"srv{lag}"].append(busy)
    rows = []
    for case, r in runs.items():
        size, (n, m), cost = case
        med = {k: statistics.median(v) for k, v in r.items()}
        rows.append(
            ScalingRow(
                size=size, model_ranks=n, server_ranks=m, model_ms=cost,
                alone_s=med["alone"], lag0_s=med["lag0"], lag1_s=med["lag1"],
                server0_s=med["srv0"], server1_s=med["srv1"],
                oversubscribed=n + m > cores, runs=r,
            )
        )  # fmt: skip
    return rows


def report(rows: list[ScalingRow], args: argparse.Namespace) -> str:
    """The table, one line per case."""
    cores = os.cpu_count() or 1
    lines = [
        f"closure {args.closure} on u and v, {args.steps} timed steps per job, medians over "
        f"{max(1, args.repeats)} repeat(s), ms per step; {cores} cores on this machine",
        "time: coupled / alone - 1; resources: (N + M) x coupled / (N x alone) - 1 "
        "(extra core-time for the same run)",
        f"{'per rank':>10} {'N:M':>5} {'model':>7} {'alone':>8} {'lag 0':>8} {'lag 1':>8} "
        f"{'server':>7} {'+ranks':>7} {'time 0':>7} {'time 1':>7} {'res 0':>7} {'res 1':>7}",
    ]
    for r in rows:
        note = "  oversubscribed: not meaningful" if r.oversubscribed else ""
        lines.append(
            f"{'x'.join(map(str, r.size)):>10} {f'{r.model_ranks}:{r.server_ranks}':>5} "
            f"{r.model_ms:7.1f} {r.alone_s * 1e3:8.2f} {r.lag0_s * 1e3:8.2f} "
            f"{r.lag1_s * 1e3:8.2f} {r.server1_s * 1e3:7.2f} {r.extra_ranks * 100:6.0f}% "
            f"{r.overhead(0) * 100:6.1f}% {r.overhead(1) * 100:6.1f}% "
            f"{r.resources(0) * 100:6.1f}% {r.resources(1) * 100:6.1f}%{note}"
        )
    lines.append(
        "(model: the busy loop per step; server: the servers' busy time per exchange, lag 1. "
        "Morays/Eophis, eORCA025: +20 to 30 % resources synchronous, 4 to 8 % asynchronous)"
    )
    return "\n".join(lines)


def plot(rows: list[ScalingRow], png: Path) -> Path:
    """Resource overhead (lag 0 and lag 1) against the model's step, one line per size and N:M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[tuple, list[ScalingRow]] = {}
    for r in rows:
        groups.setdefault((r.size, r.model_ranks, r.server_ranks), []).append(r)
    for (size, n, m), group in groups.items():
        group = sorted(group, key=lambda r: r.model_ms)
        label = f"{'x'.join(map(str, size))}, {n}:{m}" + (
            " (oversubscribed)" if n + m > (os.cpu_count() or 1) else ""
        )
        x = [r.model_ms for r in group]
        for lag, style in ((0, "--o"), (1, "-s")):
            axes[0].plot(
                x, [r.overhead(lag) * 100 for r in group], style, label=f"{label}, lag {lag}"
            )
            axes[1].plot(
                x, [r.resources(lag) * 100 for r in group], style, label=f"{label}, lag {lag}"
            )
    axes[0].set_ylabel("coupled / alone - 1 [%]")
    axes[1].set_ylabel("(N + M) coupled / (N alone) - 1 [%]")
    axes[1].axhspan(20, 30, color="tab:red", alpha=0.1, label="Morays, synchronous")
    axes[1].axhspan(4, 8, color="tab:green", alpha=0.15, label="Morays, asynchronous")
    for ax, title in zip(
        axes, ("step time overhead", "resource overhead (core-time)"), strict=True
    ):
        ax.set_xlabel("model step on one rank [ms]")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON and figure asked for."""
    build = Path(args.build_dir or paths.default_build_dir())
    driver = build / "bin" / "mlb_driver"
    if not driver.is_file():
        print(f"bench scaling: {driver} not found: run `mlbridge build`", file=sys.stderr)
        return 2
    try:
        parse_sizes(args.sizes), parse_ranks(args.ranks), parse_floats(args.model_ms, "--model-ms")
    except ValueError as err:
        print(f"bench scaling: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlb-bench-scaling-") as tmp:
        try:
            rows = measure(args, driver.resolve(), Path(tmp))
        except RuntimeError as err:
            print(f"bench scaling: {err}", file=sys.stderr)
            return 1
    print(report(rows, args))
    if args.json is not None:
        table = {
            "cores": os.cpu_count(),
            "closure": args.closure,
            "steps": args.steps,
            "repeats": max(1, args.repeats),
            "rows": [r.as_json() for r in rows],
        }
        args.json.write_text(json.dumps(table, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.figure is not None:
        print(f"wrote {plot(rows, args.figure)}")
    return 0
