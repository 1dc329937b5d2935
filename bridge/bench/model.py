"""``mlbridge bench model``: the toy model alone, coarse on 1 rank and fine on 2 ranks.

For each configuration a short run (``examples/<config>/namelist_cfg`` with only the run length
changed, no output, no restart) is repeated ``--repeats`` times. Two times are taken per run:
the model's own step-loop wall time (rank 0 logs it in ``ocean.output``, MPI start-up and
initialisation excluded) and the wall time of the whole ``mpirun``. Reported, as medians:
cell-updates per second (nx * ny * nz * steps / s), seconds per model year extrapolated from
the step loop, and the comparison with the targets (coarse: 1 model year <= 10 s on 1 core;
fine: 10 model years <= 60 min on 2 ranks).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bridge import paths
from bridge.config.namelist import read_namelists, write_patched_cfg
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command
from bridge.paths import default_build_dir

SECONDS_PER_YEAR = 365.0 * 86400.0
STEP_LOOP = re.compile(r"step loop of\s+(\d+)\s+steps, wall time\s+([0-9.Ee+-]+)\s+s")

EXAMPLES = "  mlbridge bench model --repeats 3\n  mlbridge bench model --fine-steps 0\n"


@dataclass(frozen=True)
class Target:
    """A performance target: ``years`` model years in at most ``seconds`` on ``ranks`` ranks."""

    config: str
    ranks: int
    years: float
    seconds: float


TARGETS = (Target("coarse", 1, 1.0, 10.0), Target("fine", 2, 10.0, 3600.0))
EXAMPLE_DIRS = {"coarse": "01_coarse", "fine": "02_fine"}  # the examples of each configuration


@dataclass(frozen=True)
class ModelTiming:
    """Medians over the repeats of one configuration."""

    config: str
    ranks: int
    cells: int
    steps: int
    dt: float
    loop_s: float
    mpirun_s: float

    @property
    def cell_updates_per_s(self) -> float:
        return self.cells * self.steps / self.loop_s

    @property
    def seconds_per_model_year(self) -> float:
        return self.loop_s / self.steps * SECONDS_PER_YEAR / self.dt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coarse-steps", type=int, default=2190, help="coarse steps per run (0: skip)"
    )
    parser.add_argument("--fine-steps", type=int, default=600, help="fine steps per run (0: skip)")
    parser.add_argument(
        "--build-dir", type=Path, default=None, help="build directory holding bin/toy_nemo"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the run directories under this path"
    )


def step_loop_seconds(ocean_output: Path) -> tuple[int, float]:
    """``(steps, seconds)`` of the step loop logged by rank 0 in ``ocean.output``.

    Raises
    ------
    RuntimeError
        If the log has no step-loop line (the run did not end normally).
    """
    text = ocean_output.read_text(errors="replace") if ocean_output.exists() else ""
    match = STEP_LOOP.search(text)
    if match is None:
        raise RuntimeError(f"{ocean_output}: no step-loop timing line; tail:\n{text[-1500:]}")
    return int(match.group(1)), float(match.group(2))


def time_config(
    exe: Path, config: str, ranks: int, steps: int, repeats: int, workdir: Path
) -> ModelTiming:
    """Run the example of ``config`` (:data:`EXAMPLE_DIRS`) ``steps`` steps, ``repeats`` times;
    medians of the times.

    Raises
    ------
    RuntimeError
        If a run fails; the message holds the tail of its stderr.
    """
    cfg = paths.checkout_file("examples", EXAMPLE_DIRS[config], "namelist_cfg")
    run_dir = workdir / config
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths.toy_namelist_ref(), run_dir / "namelist_ref")
    patch = {"namrun": {"nn_it000": 1, "nn_itend": steps, "nn_write": 0, "nn_stock": 0}}
    write_patched_cfg(cfg, patch, run_dir / "namelist_cfg")
    nml = read_namelists(run_dir / "namelist_ref", run_dir / "namelist_cfg")
    grid = nml.grid
    cmd = mpmd_command([Program(ranks, (str(exe),))])
    loops, walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=run_dir, env=mpi_env(), capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{config} run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        done, seconds = step_loop_seconds(run_dir / "ocean.output")
        loops.append(seconds)
    return ModelTiming(
        config=config,
        ranks=ranks,
        cells=grid.nx * grid.ny * grid.nz,
        steps=done,
        dt=nml.dt,
        loop_s=statistics.median(loops),
        mpirun_s=statistics.median(walls),
    )


def report(timings: list[ModelTiming]) -> str:
    """The figures and the target comparison as text."""
    lines = [
        f"{'config':8} {'ranks':>5} {'cells':>8} {'steps':>6} {'loop s':>8} {'mpirun s':>9} "
        f"{'Mcell-upd/s':>12} {'s/model yr':>11}   target",
    ]
    for t in timings:
        target = next(x for x in TARGETS if x.config == t.config)
        needed = t.seconds_per_model_year * target.years
        verdict = "met" if needed <= target.seconds and t.ranks == target.ranks else "MISSED"
        if t.ranks != target.ranks:
            verdict = f"not comparable (target is on {target.ranks} ranks)"
        lines.append(
            f"{t.config:8} {t.ranks:5d} {t.cells:8d} {t.steps:6d} {t.loop_s:8.3f} "
            f"{t.mpirun_s:9.3f} {t.cell_updates_per_s / 1e6:12.1f} "
            f"{t.seconds_per_model_year:11.2f}   {target.years:g} yr in {needed:.1f} s "
            f"(target <= {target.seconds:g} s): {verdict}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    exe = (args.build_dir or default_build_dir()) / "bin" / "toy_nemo"
    if not exe.is_file():
        print(f"mlbridge bench model: {exe} not found: run `mlbridge build` first", file=sys.stderr)
        return 1
    plan = [("coarse", 1, args.coarse_steps), ("fine", 2, args.fine_steps)]
    timings = []
    with tempfile.TemporaryDirectory(prefix="mlb-bench-model-") as tmp:
        workdir = args.keep or Path(tmp)
        for config, ranks, steps in plan:
            if steps <= 0:
                continue
            print(f"running {config}: {steps} steps on {ranks} rank(s), {args.repeats} repeats")
            try:
                timings.append(time_config(exe, config, ranks, steps, args.repeats, workdir))
            except (RuntimeError, paths.CheckoutRequiredError) as err:
                print(f"mlbridge bench model: {err}", file=sys.stderr)
                return 1
    print(report(timings))
    return 0
