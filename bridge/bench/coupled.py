"""``mlbridge bench coupled``: the toy model coupled to a server, against its parts alone.

At a NEMO-like size per model rank (default 64 x 64 points, 30 layers, one model rank and one
server rank), each repeat measures, through :func:`bridge.launch.launcher.launch`:

* **model step**: the toy alone (no exchange), its step-loop wall time per step (``ocean.output``);
* **closure**: the closure alone, called in this process on a block of the same size with its
  halo (u and v, all layers at once), seconds per call (between the runs of each repeat);
* **coupled lag 0** and **coupled lag 1**: the same run with the closure in a server every step,
  step-loop wall time per step; and the server's busy time per exchange (``timing.json``:
  unpack, inference, pack, send);
* **two schedules**: two exchanges of the same closure in one run, on u every step with lag 1 and
  on v every 3 steps with lag 0 (the model exchanges both fields every step with lag 0, the
  server runs each closure on its own due steps and holds its outputs in between,
  ``docs/coupling.md``): step-loop wall time per step against **coupled lag 0** (one exchange,
  u and v every step), and each exchange's closure seconds per call (``timing.json``
  ``per_exchange``).

Printed, as medians over the repeats, with the targets: lag 0: ``coupled - (model + closure)``
<= 10 % of the model step (the transfer overhead); lag 1: ``coupled <= 1.1 x max(model step,
server step)`` (the closure hidden behind the model's step). The lag 0 overhead is also given
with the closure's time as measured inside the server during the run (on a busy machine the
same closure runs slower there than alone). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge import paths
from bridge.config.namelist import write_patched_cfg
from bridge.paths import default_build_dir

COARSE_CFG = ("examples", "01_coarse", "namelist_cfg")
"""The coarse toy's configuration, in a checkout of the repository (a wheel does not ship it)."""
STEP_LOOP = re.compile(r"step loop of\s+(\d+)\s+steps, wall time\s+([0-9.Ee+-]+)\s+s")
PREFIX = {"laplacian": "lap", "smooth3": "smooth", "identity": "id"}

EXAMPLES = (
    "  mlbridge bench coupled --repeats 3\n"
    "  mlbridge bench coupled --nx 42 --nz 75 --closure smooth3 --steps 200\n"
    "  mlbridge bench coupled --repeats 1 --timeline timelines/   # + per-step timeline figures\n"
)


@dataclass(frozen=True)
class CoupledTiming:
    """Seconds per step (medians over the repeats)."""

    model_s: float
    closure_s: float
    lag0_s: float
    lag1_s: float
    server0_s: float
    server1_s: float
    inference0_s: float  # the closure's time inside the server (lag 0 run)
    inference1_s: float
    two_s: float = 0.0  # two exchanges on their own schedules, seconds per step
    server2_s: float = 0.0
    per_exchange_s: tuple[tuple[str, float], ...] = ()  # closure seconds per call, by exchange
    # per lag, medians over the exchanges of the last repeat's run (timing_steps.json): the
    # model's put, get and wait, the server's wait for the fields and closure
    phases: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    lag1_cma_s: float = 0.0  # --cma: lag 1 with the single-copy mechanism cma
    server_cma_s: float = 0.0

    @property
    def two_ratio(self) -> float:
        """``two schedules / coupled lag 0`` (one exchange of u and v every step)."""
        return self.two_s / self.lag0_s

    @property
    def lag0_overhead(self) -> float:
        """``(coupled - (model + closure)) / model`` with lag 0."""
        return (self.lag0_s - (self.model_s + self.closure_s)) / self.model_s

    @property
    def lag0_transfer(self) -> float:
        """``(coupled - (model + closure as timed in the server)) / model`` with lag 0."""
        return (self.lag0_s - (self.model_s + self.inference0_s)) / self.model_s

    @property
    def lag1_ratio(self) -> float:
        """``coupled / max(model, server)`` with lag 1."""
        return self.lag1_s / max(self.model_s, self.server1_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mlbridge bench coupled``."""
    parser.add_argument("--nx", type=int, default=64, help="ocean points per rank in i and j")
    parser.add_argument("--nz", type=int, default=30, help="layers (default 30)")
    parser.add_argument("--steps", type=int, default=300, help="model steps per run")
    parser.add_argument(
        "--closure",
        default="smooth3",
        choices=sorted(PREFIX),
        help="analytic closure on u and v (default smooth3, halo 3)",
    )
    parser.add_argument(
        "--build-dir", type=Path, default=None, help="build directory holding bin/toy_nemo"
    )
    parser.add_argument(
        "--cma",
        action="store_true",
        help="also time lag 1 with Open MPI's cross-memory attach (single-copy mechanism cma: "
        "the receivers pull the messages, mlb_put returns at once), where the kernel allows it",
    )
    parser.add_argument(
        "--timeline",
        type=Path,
        default=None,
        help="write the last repeat's lag 0 and lag 1 timelines (PNG and timing_steps.json) here",
    )


def _case(work: Path, nx: int, nz: int, steps: int) -> Path:
    """``work/namelist_cfg``: the coarse toy on ``nx + 2`` points (rim), ``nz`` layers."""
    work.mkdir(parents=True, exist_ok=True)
    patch = {
        "namrun": {"cn_exp": "BENCH", "nn_itend": steps, "nn_write": 0, "nn_stock": 0},
        "namusr_def": {"nn_nx": nx + 2, "nn_ny": nx + 2, "nn_nz": nz},
        "nammlb": {"cn_mlb_snd": ["u", "v", ""], "cn_mlb_rcv": ["u_tend", "v_tend", ""]},
    }
    write_patched_cfg(paths.checkout_file(*COARSE_CFG), patch, work / "namelist_cfg")
    return work


CMA_ENV = {"OMPI_MCA_btl_vader_single_copy_mechanism": "cma"}
"""``--cma``: Open MPI's cross-memory attach, so that a receiver pulls a message by itself."""


def _config(
    work: Path, closure: str | None, lag: int, two: bool = False, env: dict | None = None
) -> Any:
    from bridge.config.coupling import CouplingConfig

    data: dict[str, Any] = {
        "model": {
            "executable": "toy_nemo",
            "ranks": 1,
            "namelist_cfg": "namelist_cfg",
            "env": dict(env or {}),
        },
        "server": {"ranks": 1, "timeout_s": 120.0},
        "run": {"workdir": str(work / "runs")},
    }
    if closure is not None:
        prefix = PREFIX[closure]
        data["exchange"] = [
            {
                "closure": closure,
                "inputs": {"u": "u", "v": "v"},
                "outputs": {f"{prefix}_u": "u_tend", f"{prefix}_v": "v_tend"},
                "params": {} if closure == "identity" else {"coefficient": 1.0e-7},
                "lag": lag,
            }
        ]
    if closure is not None and two:  # u every step, lag 1; v every 3 steps, lag 0
        prefix = PREFIX[closure]
        params = {} if closure == "identity" else {"coefficient": 1.0e-7}
        data["exchange"] = [
            {
                "name": f"{closure}_u_every1_lag1",
                "closure": closure,
                "inputs": {"u": "u"},
                "outputs": {f"{prefix}_u": "u_tend"},
                "params": params,
                "lag": 1,
            },
            {
                "name": f"{closure}_v_every3_lag0",
                "closure": closure,
                "inputs": {"v": "v"},
                "outputs": {f"{prefix}_v": "v_tend"},
                "params": params,
                "every": 3,
            },
        ]
    return CouplingConfig.from_dict(data, base_dir=work)


def _step_seconds(run_dir: Path) -> float:
    text = (run_dir / "ocean.output").read_text()
    match = STEP_LOOP.search(text)
    if match is None:
        raise RuntimeError(f"{run_dir / 'ocean.output'}: no step-loop time")
    return float(match.group(2)) / int(match.group(1))


def _run(
    work: Path,
    closure: str | None,
    lag: int,
    build: Path,
    two: bool = False,
    keep: dict[str, Path] | None = None,
    env: dict | None = None,
) -> tuple[float, float, float, dict[str, float]]:
    """One launch: model seconds per step, server busy and inference seconds per exchange, and
    each exchange's closure seconds per call. ``keep`` gets the run directory under
    ``f"lag{lag}"``."""
    import json

    from bridge.launch.launcher import launch

    result = launch(_config(work, closure, lag, two, env), quiet=True, build_dir=build)
    if result.returncode != 0:
        raise RuntimeError(f"run failed ({result.returncode}): see {result.run_dir}")
    if keep is not None:
        keep[f"lag{lag}" + ("_cma" if env else "")] = result.run_dir
    timing = result.timing or {}
    server = float(timing.get("server", {}).get("busy_per_exchange_median_s", 0.0))
    inference = 0.0
    steps_file = result.run_dir / "timing_steps.json"
    if steps_file.is_file():
        per_rank = json.loads(steps_file.read_text())["servers"]
        inference = max(statistics.median(r["inference_s"]) for r in per_rank if r["inference_s"])
    per = {
        name: float(row.get("inference_per_call_median_s", 0.0))
        for name, row in timing.get("per_exchange", {}).items()
    }
    return _step_seconds(result.run_dir), server, inference, per


def closure_seconds(closure: str, nx: int, nz: int, calls: int = 30) -> float:
    """Median seconds of one call of the closure on u and v blocks of ``nz x nx x nx``."""
    from bridge.closures.analytic import ANALYTIC, analytic_closure
    from bridge.server.main import keep_freed_memory

    keep_freed_memory()  # as the server does: the closure's cost, not the page faults'

    halo = ANALYTIC[closure][0]
    fn = analytic_closure(
        closure, ["u", "v"], {} if closure == "identity" else {"coefficient": 1.0}
    )
    rng = np.random.default_rng(0)
    shape = (nz, nx + 2 * halo, nx + 2 * halo)
    inputs = {"u": rng.standard_normal(shape), "v": rng.standard_normal(shape)}
    if "mask" in fn.spec.input_names:
        inputs["mask"] = np.ones(shape)
    times = []
    for _ in range(calls + 3):
        t0 = time.perf_counter()
        fn(inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])


PHASES = (
    ("put_s", "model put"),
    ("get_s", "model get"),
    ("model_wait_s", "model waits in them"),
    ("recv_wait_s", "server waits for fields"),
    ("inference_s", "server closure"),
)


def phase_medians(run_dir: Path) -> tuple[tuple[str, float], ...]:
    """Medians over the exchanges of a run's timeline (:data:`PHASES`), seconds."""
    from bridge.plots import load_timeline, timeline_step_table

    table = timeline_step_table(load_timeline(run_dir))
    return tuple(
        (label, statistics.median(r[key] for r in table if key in r))
        for key, label in PHASES
        if any(key in r for r in table)
    )


def measure(
    args: argparse.Namespace, work: Path, build: Path, keep: dict[str, Path] | None = None
) -> CoupledTiming:
    """The four measurements, interleaved ``args.repeats`` times (a shared machine drifts);
    ``keep`` gets the last repeat's lag 0 and lag 1 run directories."""
    keep = {} if keep is None else keep
    _case(work, args.nx, args.nz, args.steps)
    keys = ("model", "closure", "lag0", "lag1", "srv0", "srv1", "inf0", "inf1", "two", "srv2")
    keys += ("cma", "srvc")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    per: dict[str, list[float]] = {}
    for _ in range(max(1, args.repeats)):
        rows["model"].append(_run(work, None, 0, build)[0])
        rows["closure"].append(closure_seconds(args.closure, args.nx, args.nz))
        for lag in (0, 1):
            step, server, inference, _ = _run(work, args.closure, lag, build, keep=keep)
            rows[f"lag{lag}"].append(step)
            rows[f"srv{lag}"].append(server)
            rows[f"inf{lag}"].append(inference)
        if getattr(args, "cma", False):
            step, server, _, _ = _run(work, args.closure, 1, build, keep=keep, env=CMA_ENV)
            rows["cma"].append(step)
            rows["srvc"].append(server)
        step, server, _, calls = _run(work, args.closure, 0, build, two=True)
        rows["two"].append(step)
        rows["srv2"].append(server)
        for name, seconds in calls.items():
            per.setdefault(name, []).append(seconds)
    med = {k: statistics.median(v) if v else 0.0 for k, v in rows.items()}
    return CoupledTiming(
        model_s=med["model"],
        closure_s=med["closure"],
        lag0_s=med["lag0"],
        lag1_s=med["lag1"],
        server0_s=med["srv0"],
        server1_s=med["srv1"],
        inference0_s=med["inf0"],
        inference1_s=med["inf1"],
        two_s=med["two"],
        server2_s=med["srv2"],
        per_exchange_s=tuple((n, statistics.median(v)) for n, v in per.items()),
        phases=tuple((name, phase_medians(run)) for name, run in sorted(keep.items())),
        lag1_cma_s=med["cma"],
        server_cma_s=med["srvc"],
    )


def report(t: CoupledTiming, args: argparse.Namespace) -> str:
    """The table and the targets."""
    ms = 1e3
    lines = [
        f"per model rank {args.nx} x {args.nx} x {args.nz}, closure {args.closure} on u and v, "
        f"{args.steps} steps, medians over {args.repeats} repeats (ms per step)",
        f"  model step alone          {t.model_s * ms:9.3f}",
        f"  closure alone             {t.closure_s * ms:9.3f}",
        f"  coupled lag 0             {t.lag0_s * ms:9.3f}   (server busy {t.server0_s * ms:.3f}, "
        f"of which closure {t.inference0_s * ms:.3f})",
        f"  coupled lag 1             {t.lag1_s * ms:9.3f}   (server busy {t.server1_s * ms:.3f}, "
        f"of which closure {t.inference1_s * ms:.3f})",
        f"  lag 0: coupled - (model + closure) = {t.lag0_overhead * 100:6.1f} % of the model step"
        f"   (target <= 10 %: {'met' if t.lag0_overhead <= 0.10 else 'NOT met'})",
        f"  lag 0, with the closure as timed in the server: {t.lag0_transfer * 100:6.1f} %",
        f"  lag 1: coupled / max(model, server) = {t.lag1_ratio:6.3f}"
        f"   (target <= 1.1: {'met' if t.lag1_ratio <= 1.1 else 'NOT met'})",
        f"  two schedules             {t.two_s * ms:9.3f}   (server busy {t.server2_s * ms:.3f}; "
        "u every 1 lag 1 + v every 3 lag 0, both fields sent every step)",
        f"  two schedules / coupled lag 0 (one exchange, u and v every step) = {t.two_ratio:6.3f}",
        *(f"    closure per call, {n}: {v * ms:.3f}" for n, v in t.per_exchange_s),
        *(
            f"  {name.replace('lag', 'lag ').replace('_', ', ')} timeline (last repeat, medians "
            "per exchange): " + ", ".join(f"{label} {v * ms:.3f}" for label, v in phases)
            for name, phases in t.phases
        ),
    ]
    if t.lag1_cma_s > 0:
        ratio = t.lag1_cma_s / max(t.model_s, t.server_cma_s)
        lines += [
            f"  coupled lag 1, cma        {t.lag1_cma_s * ms:9.3f}   (server busy "
            f"{t.server_cma_s * ms:.3f}; the receivers pull, mlb_put returns at once)",
            f"  lag 1, cma: coupled / max(model, server) = {ratio:6.3f}"
            f"   (target <= 1.1: {'met' if ratio <= 1.1 else 'NOT met'}); against lag 1 without: "
            f"{t.lag1_cma_s / t.lag1_s:6.3f}",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the figures."""
    build = Path(args.build_dir or default_build_dir()).resolve()
    if not (build / "bin" / "toy_nemo").is_file():
        print(f"bench coupled: {build / 'bin' / 'toy_nemo'} not found: run `mlbridge build`")
        return 2
    with tempfile.TemporaryDirectory(prefix="mlb-bench-coupled-") as tmp:
        keep: dict[str, Path] = {}
        try:
            timing = measure(args, Path(tmp), build, keep)
        except Exception as err:  # a failed run: say why, exit non-zero
            print(f"bench coupled: {err}", file=sys.stderr)
            return 1
        print(report(timing, args))
        if args.timeline is not None:
            for line in write_timelines(keep, args.timeline):
                print(line)
    return 0


def write_timelines(runs: dict[str, Path], out: Path) -> list[str]:
    """``out/timeline_<lag>.png`` and ``out/timing_steps_<lag>.json`` of each kept run."""
    import shutil

    from bridge.plots import plot_timeline

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, run_dir in sorted(runs.items()):
        png = plot_timeline(run_dir, out / f"timeline_{name}.png")
        shutil.copy(run_dir / "timing_steps.json", out / f"timing_steps_{name}.json")
        written.append(f"wrote {png} and {out / f'timing_steps_{name}.json'}")
    return written
