"""``mlbridge run``: run a coupled Fortran + Python job described by a ``coupling.toml``.

Everything that can be checked is checked before anything starts (:mod:`bridge.validate`).
Each run gets its own directory ``<workdir>/<cn_exp>_<YYYYmmdd-HHMMSS>[_n]``, never reused::

    coupling.toml         copy of the file the run was started from (when there is one)
    run_config.json       the resolved configuration (absolute paths, overrides applied);
                          the servers read it (``python -m bridge.server --config ...``)
    namelist_ref          copy of the reference namelist
    namelist_cfg          the configuration namelist, patched for this run: nn_itend (--steps),
                          jpni = jpnj = 0 (--model-ranks), ln_mlb (whether there are
                          exchanges), cn_ocerst_in made absolute
    command.txt           the mpirun command line, to re-run by hand
    mpirun.log            everything mpirun printed: all ranks' output, interleaved, and
                          mpirun's own messages (which rank failed, with what status)
    logs/1/rank.<R>/stdout, logs/1/rank.<R>/stderr
                          each world rank's own output (Open MPI 4.1 ``--output-filename``);
                          ranks 0..N-1 are the model, N..N+M-1 the servers
    closures.json         the closure of every exchange: name, version, sha256 of the
                          registered artifact, registry (also printed when the run starts)
    ocean.output, time.step, <cn_exp>_grid.nc, ...   what the model writes (its cwd is here)
    timing.json, diagnostics.nc                      what the servers write at the end

Registry closures are checked before launch (:mod:`bridge.validate_registry`: registered,
hashes intact, loadable, inputs and outputs matching the exchange, halo within the server
blocks); ``run_config.json`` pins each one to the ``name@version`` and sha256 that were checked,
every rank gets ``MLBRIDGE_HOME`` set to the run's registry, and after the run the global
attributes of ``*_grid.nc`` and ``diagnostics.nc`` name the closures (``mlbridge_closures``,
``mlbridge_closure_<exchange>_name``, ``_version``, ``_sha256``).

The job is ``mpirun -np N model`` when there is no ``[[exchange]]``, and otherwise
``mpirun -np N model : -np M python -m bridge.server --config RUN/run_config.json --run-dir RUN``.
While it runs the terminal shows model rank 0's and server rank 0's output, every rank's
stderr, and ``E R R O R`` lines of ``ocean.output``; progress (read from ``time.step``) is a
tqdm bar on a terminal and a plain line every 10% otherwise. The exit status is the worst of
all ranks; a run that exits 0 but whose model did not reach its last step, or whose
``ocean.output`` reports an error, counts as failed (status 1). On SIGINT/SIGTERM every rank is
stopped (mpirun first, then every process of the job after a grace period).

Exit statuses of the command: 0 success; 2 nothing was started (configuration or environment
problem, every problem listed); 130/143 interrupted; otherwise the job's worst status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from bridge.build import default_build_dir
from bridge.config import ConfigError, CouplingConfig, load_config, write_config_json
from bridge.mpiexec import (
    MpiNotFoundError,
    Program,
    mpi_env,
    mpmd_command,
    python_program,
    rank_log_files,
)
from bridge.namelist import NamelistError, NemoNamelist, write_patched_cfg
from bridge.validate import DEFAULT_CHECKS, load_run_namelist, validate_before_launch
from bridge.validate_registry import (
    REGISTRY_ENV,
    ClosureCheck,
    ClosureRecord,
    RegistryClosureCheck,
    netcdf_attributes,
    pin_closures,
    write_closures_json,
)

REPO = Path(__file__).resolve().parents[1]
SERVER_MODULE = "bridge.server"
RUN_DIR_ENV = "MLBRIDGE_RUN_DIR"  # exported to every rank: also marks the job's processes
ERROR_MARK = "E R R O R"
TAIL_LINES = 20
LINGER_GRACE_S = 60.0  # beyond server.timeout_s, after the model's last step
PLAIN_PROGRESS_EVERY_S = 60.0  # without a bar, a progress line at least this often
ERROR_CONTEXT = 3  # lines of ocean.output shown after each E R R O R line

EXAMPLES = (
    "  mlbridge run examples/coarse/coupling.toml\n"
    "  mlbridge run examples/coarse/coupling.toml --model-ranks 2 --steps 100 --workdir /tmp/runs\n"
)


class LaunchError(RuntimeError):
    """The job could not be started (mpirun failed to execute, run directory not writable)."""


@dataclass(frozen=True)
class RankLog:
    """Where one MPI rank's output went.

    Attributes
    ----------
    rank : int
        Rank in ``MPI_COMM_WORLD``.
    program : str
        ``model`` or ``server``.
    local_rank : int
        Rank within its program (model rank, server rank).
    stdout, stderr : Path
        Its log files (absent when it printed nothing or never started).
    """

    rank: int
    program: str
    local_rank: int
    stdout: Path
    stderr: Path

    @property
    def label(self) -> str:
        return f"{self.program} {self.local_rank}"


@dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`launch`.

    Attributes
    ----------
    run_dir : Path
        The run directory.
    returncode : int
        0 on success, else the worst status of all ranks (130/143 when interrupted).
    elapsed : float
        Wall-clock seconds from mpirun's start to its end.
    rank_logs : tuple of RankLog
        Per-rank log files, model ranks first.
    command : tuple of str
        The mpirun command line.
    first_step, last_step : int
        ``nn_it000`` and ``nn_itend`` of the run.
    reached_step : int or None
        The last step the model reported in ``time.step`` (None: never written).
    interrupted : bool
        True when the run was stopped by SIGINT/SIGTERM.
    problems : tuple of str
        Why the run counts as failed (empty on success).
    closures : tuple of ClosureRecord
        The closure of each exchange as checked and pinned (also in ``closures.json``).
    """

    run_dir: Path
    returncode: int
    elapsed: float
    rank_logs: tuple[RankLog, ...]
    command: tuple[str, ...]
    first_step: int
    last_step: int
    reached_step: int | None
    interrupted: bool = False
    problems: tuple[str, ...] = ()
    closures: tuple[ClosureRecord, ...] = ()

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timing(self) -> dict[str, Any] | None:
        """The servers' ``timing.json``, when they wrote one."""
        return read_timing(self.run_dir)


# --- run directory ----------------------------------------------------------------------------


def run_dir_name(experiment: str, now: datetime) -> str:
    """``<experiment>_<YYYYmmdd-HHMMSS>``, the experiment name made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment.strip()).strip("._") or "run"
    return f"{safe}_{now:%Y%m%d-%H%M%S}"


def make_run_dir(workdir: Path, experiment: str, now: datetime | None = None) -> Path:
    """Create and return a new run directory below ``workdir`` (``_2``, ``_3``... if taken).

    Raises
    ------
    LaunchError
        If the directory cannot be created.
    """
    base = run_dir_name(experiment, now or datetime.now())
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LaunchError(f"run.workdir {workdir}: cannot create: {err.strerror}") from None
    for n in range(1, 10_000):
        candidate = workdir / (base if n == 1 else f"{base}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise LaunchError(
                f"{candidate}: cannot create the run directory: {err.strerror}"
            ) from None
        return candidate
    raise LaunchError(f"{workdir}: no free run directory name for {base}")


def prepare_run_dir(config: CouplingConfig, namelist: NemoNamelist, run_dir: Path) -> None:
    """Copy the namelists (cfg with ``namelist.patch``), the coupling file, ``run_config.json``.

    Raises
    ------
    LaunchError
        If a file cannot be copied or written.
    """
    try:
        shutil.copyfile(namelist.ref_path, run_dir / "namelist_ref")
        write_patched_cfg(namelist.cfg_path, namelist.patch, run_dir / "namelist_cfg")
        if config.source is not None and config.source.suffix == ".toml":
            shutil.copyfile(config.source, run_dir / "coupling.toml")
        write_config_json(config, run_dir / "run_config.json")
    except (OSError, NamelistError) as err:
        raise LaunchError(f"{run_dir}: cannot prepare the run directory: {err}") from None


# --- command ----------------------------------------------------------------------------------


def programs_for(config: CouplingConfig, run_dir: Path) -> list[Program]:
    """The MPMD programs: the model, then the servers when there is an exchange.

    ``config.model.executable`` must already be resolved to a path.
    """
    programs = [Program(config.model.ranks, (config.model.executable,))]
    if config.coupled:
        programs.append(
            python_program(
                config.server.ranks,
                SERVER_MODULE,
                "--config",
                str(run_dir / "run_config.json"),
                "--run-dir",
                str(run_dir),
            )
        )
    return programs


def rank_logs_for(config: CouplingConfig, run_dir: Path) -> tuple[RankLog, ...]:
    """Where each world rank's stdout/stderr go (model ranks first, then servers)."""
    logs = []
    groups = [("model", config.model.ranks)]
    if config.coupled:
        groups.append(("server", config.server.ranks))
    rank = 0
    for program, count in groups:
        for local in range(count):
            out, err = rank_log_files(run_dir / "logs", rank)
            logs.append(RankLog(rank, program, local, out, err))
            rank += 1
    return tuple(logs)


def job_env(config: CouplingConfig, run_dir: Path) -> dict[str, str]:
    """Environment of every rank (exported, as ``-x`` does not reach every MPMD program)."""
    python_path = os.environ.get("PYTHONPATH", "")
    extra = {
        RUN_DIR_ENV: str(run_dir),
        "OMP_NUM_THREADS": str(config.server.threads),
        # the servers start in the run directory: keep this checkout importable
        "PYTHONPATH": str(REPO) + (os.pathsep + python_path if python_path else ""),
    }
    if config.server.registry is not None:
        # the registry the closures were checked in, whatever the servers' default would be
        extra[REGISTRY_ENV] = str(config.server.registry)
    return mpi_env(extra)


# --- closures: the run log and the outputs ----------------------------------------------------


def record_closures(check: ClosureCheck, run_dir: Path, *, quiet: bool = False) -> None:
    """Print the closures of the run (unless ``quiet``) and write ``<run_dir>/closures.json``.

    Raises
    ------
    LaunchError
        If ``closures.json`` cannot be written.
    """
    if not check.closures:
        return
    if not quiet:
        for closure in check.closures:
            print(f"mlbridge run: {closure.describe()}", flush=True)
    try:
        write_closures_json(check, run_dir / "closures.json")
    except OSError as err:
        raise LaunchError(f"{run_dir / 'closures.json'}: cannot write: {err.strerror}") from None


def stamp_netcdf(path: Path, closures: tuple[ClosureRecord, ...] | list[ClosureRecord]) -> None:
    """Add the closures' global attributes (:func:`netcdf_attributes`) to a NetCDF file in place.

    Raises
    ------
    OSError
        If the file cannot be opened for writing or is not NetCDF.
    """
    import netCDF4  # only when there is something to stamp

    with netCDF4.Dataset(path, "a") as dataset:
        for key, value in netcdf_attributes(closures).items():
            dataset.setncattr(key, value)


def stamp_outputs(run_dir: Path, closures: tuple[ClosureRecord, ...]) -> list[str]:
    """Stamp ``*_grid.nc`` and ``diagnostics.nc`` of the run directory; return the problems."""
    if not closures:
        return []
    problems = []
    targets = sorted(run_dir.glob("*_grid.nc")) + sorted(run_dir.glob("diagnostics*.nc"))
    for path in targets:
        try:
            stamp_netcdf(path, closures)
        except (OSError, ImportError) as err:  # the run's result stands; say what is missing
            problems.append(f"{path}: closure attributes not written: {err}")
    return problems


# --- monitoring -------------------------------------------------------------------------------


def read_time_step(run_dir: Path) -> int | None:
    """The model's current step from ``<run_dir>/time.step`` (None: absent or being rewritten)."""
    try:
        text = (run_dir / "time.step").read_text(errors="replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def read_timing(run_dir: Path) -> dict[str, Any] | None:
    """``<run_dir>/timing.json`` as a dict, or None when absent or unreadable."""
    try:
        data = json.loads((run_dir / "timing.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def format_timing(data: dict[str, Any]) -> str:
    """A small two-column table of ``timing.json``: floats as seconds, integers as counts."""
    rows = []
    for name, value in _flatten(data):
        if isinstance(value, bool) or not isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, int):
            text = f"{value:d}"
        else:
            text = f"{value:.4f} s" if math.isfinite(value) else str(value)
        rows.append((name, text))
    if not rows:
        return ""
    width = max(len(name) for name, _ in rows)
    vwidth = max(len(text) for _, text in rows)
    lines = ["timing summary (timing.json)", "-" * (width + vwidth + 3)]
    lines += [f"{name:<{width}}   {text:>{vwidth}}" for name, text in rows]
    return "\n".join(lines)


class _Tail:
    """Follows a growing text file, yielding whole new lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""

    def lines(self, final: bool = False) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        parts = text.split("\n")
        self.partial = "" if final else parts.pop()
        return [p.rstrip("\r") for p in parts if p or not final]


def _tail_lines(path: Path, n: int, keep: str | None = None) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    if keep is not None:
        lines = [line for line in lines if keep in line]
    return lines[-n:]


class _Progress:
    """A tqdm bar on a terminal; elsewhere a plain line every 10% (and at least every minute)."""

    def __init__(self, total: int, *, bar: bool, quiet: bool, stream: IO[str]) -> None:
        self.total = max(1, total)
        self.quiet = quiet
        self.stream = stream
        self.done = 0
        self.start = self.last_line = time.monotonic()
        self.next_report = 0.1
        self.bar = None
        if bar and not quiet:
            from tqdm import tqdm  # only when a bar is shown

            self.bar = tqdm(
                total=self.total, unit="step", file=stream, dynamic_ncols=True, desc="model"
            )

    def update(self, done: int) -> None:
        done = min(max(done, 0), self.total)
        if done <= self.done:
            return
        if self.bar is not None:
            self.bar.update(done - self.done)
        elif not self.quiet and (
            done / self.total >= self.next_report
            or time.monotonic() - self.last_line > PLAIN_PROGRESS_EVERY_S
        ):
            self.last_line = time.monotonic()
            elapsed = self.last_line - self.start
            eta = elapsed * (self.total - done) / done
            print(
                f"mlbridge run: step {done}/{self.total} ({100 * done // self.total}%), "
                f"{elapsed:.1f} s elapsed, eta {eta:.1f} s",
                file=self.stream,
                flush=True,
            )
            self.next_report = math.floor(done / self.total * 10 + 1) / 10
        self.done = done

    def write(self, line: str, stream: IO[str]) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- processes --------------------------------------------------------------------------------


def _process_table() -> dict[int, int]:
    """pid -> parent pid of every visible process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            table[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return table


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Open MPI puts each rank in its own process group)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, parent in table.items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def job_processes(run_dir: Path) -> set[int]:
    """Processes whose environment marks them as ranks of the run in ``run_dir``."""
    marker = f"{RUN_DIR_ENV}={run_dir}".encode() + b"\0"
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read() + b"\0"
        except OSError:
            continue
        if b"\0" + marker in b"\0" + environ:
            found.add(int(entry))
    return found


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                state = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def stop_job(proc: subprocess.Popen, run_dir: Path, grace_s: float = 5.0) -> set[int]:
    """End every rank of the job, leaving neither running processes nor zombies.

    The ranks (every process below mpirun, and every process marked with this run directory)
    get SIGTERM first, so that mpirun sees them end, reaps them and exits; then mpirun itself
    gets SIGTERM; whatever is still alive after ``grace_s`` seconds is killed. Returns the
    processes found (to reap those that mpirun leaves behind).
    """
    ranks = (descendants(proc.pid) | job_processes(run_dir)) - {proc.pid}
    _signal_all(ranks, signal.SIGTERM)
    if not _wait_until(lambda: proc.poll() is not None, min(grace_s, 2.0)):
        try:
            proc.send_signal(signal.SIGTERM)  # mpirun forwards it to the ranks
        except ProcessLookupError:
            pass

    def ended() -> bool:
        return proc.poll() is not None and not _alive(ranks | job_processes(run_dir))

    if not _wait_until(ended, grace_s):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        late = descendants(proc.pid) | job_processes(run_dir)
        ranks |= late
        _signal_all(_alive(ranks), signal.SIGKILL)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    return ranks


# --- failure analysis -------------------------------------------------------------------------

_MPI_PROCESS = re.compile(r"Process name:\s*\[\[\d+,\d+\],(\d+)\]\s*\n\s*Exit code:\s*(\d+)")
_MPI_SIGNAL = re.compile(r"process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+)")
_MPI_ABORT = re.compile(
    r"MPI_ABORT was invoked on rank (\d+) in communicator ([^\n]*?)\s*with errorcode (-?\d+)"
)


def mpi_aborts(mpirun_log: str) -> list[tuple[int, str, int]]:
    """``(rank, communicator, errorcode)`` of each MPI_ABORT reported in mpirun's log.

    The rank is in the communicator named, which is the world only for ``MPI_COMM_WORLD``.
    """
    return [(int(r), comm, int(code)) for r, comm, code in _MPI_ABORT.findall(mpirun_log)]


def failing_ranks(mpirun_log: str) -> dict[int, int]:
    """World rank -> exit status, for the ranks mpirun reported as failed in its log."""
    found: dict[int, int] = {}
    for rank, code in _MPI_PROCESS.findall(mpirun_log):
        found[int(rank)] = max(found.get(int(rank), 0), int(code))
    for rank, sig in _MPI_SIGNAL.findall(mpirun_log):
        found[int(rank)] = max(found.get(int(rank), 0), 128 + int(sig))
    for rank, comm, code in mpi_aborts(mpirun_log):
        if comm == "MPI_COMM_WORLD":
            found[rank] = max(found.get(rank, 0), abs(code) % 256 or 1)
    return found


def _status(returncode: int) -> int:
    # a negative Popen status is a signal
    return 128 - returncode if returncode < 0 else returncode


def failure_report(result: RunResult) -> str:
    """The last lines of the failing ranks' logs and the errors of ``ocean.output``."""
    run_dir = result.run_dir
    mpirun_log = run_dir / "mpirun.log"
    try:
        log_text = mpirun_log.read_text(errors="replace")
    except OSError:
        log_text = ""
    failed = failing_ranks(log_text)
    by_rank = {log.rank: log for log in result.rank_logs}
    chosen = [by_rank[r] for r in sorted(failed) if r in by_rank]
    if not chosen:
        chosen = [log for log in result.rank_logs if _size(log.stderr) > 0]
    if not chosen:
        chosen = [log for log in result.rank_logs if log.local_rank == 0]
    parts = [f"mlbridge run: FAILED with status {result.returncode} (run directory {run_dir})"]
    parts += [f"  - {p}" for p in result.problems]
    for log in chosen[:4]:
        status = f", exit status {failed[log.rank]}" if log.rank in failed else ""
        for path in (log.stderr, log.stdout):
            lines = _tail_lines(path, TAIL_LINES)
            if lines:
                parts.append(
                    f"--- {log.label} (world rank {log.rank}{status}): last lines of {path}"
                )
                parts += lines
    errors = _ocean_errors(run_dir / "ocean.output")
    if errors:
        parts.append(f"--- {run_dir / 'ocean.output'}: errors")
        parts += errors
    block = _mpirun_messages(log_text)
    if block:
        parts.append(f"--- {mpirun_log}: mpirun's report")
        parts += block
    return "\n".join(parts)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _ocean_errors(path: Path, after: int = ERROR_CONTEXT) -> list[str]:
    """``E R R O R`` lines of ``ocean.output`` and the few lines after each."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    keep: list[str] = []
    for index, line in enumerate(lines):
        if ERROR_MARK in line:
            keep += [ln for ln in lines[index : index + 1 + after] if ln not in keep[-after:]]
    return keep[-TAIL_LINES:]


def _mpirun_messages(log_text: str) -> list[str]:
    """mpirun's own framed messages (between its ``-----`` rules), last one first kept."""
    blocks = re.findall(r"-{20,}\n(.*?)\n-{20,}", log_text, flags=re.DOTALL)
    lines: list[str] = []
    for block in blocks[-2:]:
        lines += block.splitlines()
    return lines[-TAIL_LINES:]


# --- launch -----------------------------------------------------------------------------------


class _Subreaper:
    """Makes the launcher adopt the job's orphans while it runs, and reaps them.

    mpirun that is stopped may exit before it has waited for all its ranks; their zombies would
    then go to PID 1, which in a container often never reaps them. As a child subreaper
    (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``), the launcher adopts them and reaps them at the end.
    """

    PR_SET_CHILD_SUBREAPER = 36

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.enabled = False

    def _prctl(self, value: int) -> bool:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            return libc.prctl(self.PR_SET_CHILD_SUBREAPER, value, 0, 0, 0) == 0
        except (OSError, AttributeError):
            return False

    def __enter__(self) -> _Subreaper:
        self.enabled = sys.platform.startswith("linux") and self._prctl(1)
        return self

    def watch(self, pids: set[int]) -> None:
        """Remember processes of the job (to reap them if they are orphaned)."""
        self.pids |= pids

    def reap(self, timeout: float = 1.0) -> None:
        """Reap the watched processes that were adopted (up to ``timeout`` seconds)."""
        pending = set(self.pids)
        deadline = time.monotonic() + timeout
        while pending:
            for pid in list(pending):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (or no longer) our child
                    pending.discard(pid)
                    continue
                if done:
                    pending.discard(pid)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.reap()
            self._prctl(0)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag while the job runs (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class _Stream:
    """A log file followed to the terminal while the job runs."""

    tail: _Tail
    label: str
    to_stderr: bool
    only_errors: bool = False


@dataclass(frozen=True)
class _Job:
    """A prepared job: run directory written, command built."""

    config: CouplingConfig
    namelist: NemoNamelist
    run_dir: Path
    command: tuple[str, ...]
    rank_logs: tuple[RankLog, ...]

    def streams(self) -> list[_Stream]:
        """Rank 0 of each program in full, every other rank's stderr, ocean.output's errors."""
        streams = []
        for log in self.rank_logs:
            label = f"[{log.label}] "
            if log.local_rank == 0:
                streams.append(_Stream(_Tail(log.stdout), label, to_stderr=False))
            streams.append(_Stream(_Tail(log.stderr), label, to_stderr=True))
        ocean = _Tail(self.run_dir / "ocean.output")
        streams.append(_Stream(ocean, "[ocean.output] ", to_stderr=True, only_errors=True))
        return streams

    def run(self, *, progress: bool, quiet: bool, grace_s: float) -> RunResult:
        first, last = self.namelist.it000, self.namelist.itend
        streams = self.streams()
        shown_errors: set[str] = set()
        context = {id(stream): 0 for stream in streams}  # lines still to show after an error

        def pump(bar: _Progress, final: bool = False) -> None:
            for stream in streams:
                for line in stream.tail.lines(final=final):
                    if stream.only_errors:
                        # NEMO's ctl_stop: the mark, then the message on the next lines
                        if ERROR_MARK in line:
                            context[id(stream)] = ERROR_CONTEXT + 1
                        if not context[id(stream)] or line.strip() in shown_errors:
                            context[id(stream)] = max(0, context[id(stream)] - 1)
                            continue
                        context[id(stream)] -= 1
                    elif ERROR_MARK in line:
                        shown_errors.add(line.strip())
                    bar.write(stream.label + line, sys.stderr if stream.to_stderr else sys.stdout)

        env = job_env(self.config, self.run_dir)
        bar = _Progress(last - first + 1, bar=progress, quiet=quiet, stream=sys.stderr)
        interrupted: int | None = None
        stuck: str | None = None
        reaper = _Subreaper()
        with (
            open(self.run_dir / "mpirun.log", "wb") as log,
            _Interrupt() as interrupt,
            reaper,
        ):
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.command,
                    cwd=self.run_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # signals from the terminal reach the launcher only
                )
            except OSError as err:
                bar.close()
                raise LaunchError(f"cannot execute {self.command[0]}: {err.strerror}") from None
            # a job still running this long after the model's last step is stuck
            linger_s = self.config.server.timeout_s + LINGER_GRACE_S
            finished_at: float | None = None
            try:
                while proc.poll() is None:
                    if interrupt.signum is not None:
                        interrupted = interrupt.signum
                        name = signal.Signals(interrupted).name
                        bar.write(f"mlbridge run: {name}: stopping every rank", sys.stderr)
                        reaper.watch(stop_job(proc, self.run_dir, grace_s))
                        break
                    pump(bar)
                    reaper.watch(descendants(proc.pid))
                    step = read_time_step(self.run_dir)
                    if step is not None:
                        bar.update(step - first + 1)
                        if step >= last and finished_at is None:
                            finished_at = time.monotonic()
                    if finished_at is not None and time.monotonic() - finished_at > linger_s:
                        stuck = (
                            f"the job was still running {linger_s:.0f} s after the model's "
                            "last step (server.timeout_s + 60 s): stopped"
                        )
                        bar.write(f"mlbridge run: {stuck}", sys.stderr)
                        reaper.watch(stop_job(proc, self.run_dir, grace_s))
                        break
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:  # an exception in the loop: leave nothing behind
                    reaper.watch(stop_job(proc, self.run_dir, grace_s))
                elapsed = time.monotonic() - start
        # no rank may outlive mpirun
        _signal_all(_alive(job_processes(self.run_dir)), signal.SIGKILL)
        pump(bar, final=True)
        reached = read_time_step(self.run_dir)
        if reached is not None:
            bar.update(reached - first + 1)
        bar.close()

        returncode, problems = self.outcome(_status(proc.returncode), reached, interrupted)
        if stuck is not None:
            problems.insert(0, stuck)
            returncode = returncode or 1
        result = RunResult(
            run_dir=self.run_dir,
            returncode=returncode,
            elapsed=elapsed,
            rank_logs=self.rank_logs,
            command=self.command,
            first_step=first,
            last_step=last,
            reached_step=reached,
            interrupted=interrupted is not None,
            problems=tuple(problems),
        )
        self.report(result, quiet=quiet)
        return result

    def outcome(
        self, returncode: int, reached: int | None, interrupted: int | None
    ) -> tuple[int, list[str]]:
        """The job's exit status (worst of all ranks) and why it failed."""
        if interrupted is not None:
            name = signal.Signals(interrupted).name
            return 128 + interrupted, [f"interrupted by {name}: every rank was stopped"]
        problems = []
        try:
            log_text = (self.run_dir / "mpirun.log").read_text(errors="replace")
        except OSError:
            log_text = ""
        labels = {log.rank: log.label for log in self.rank_logs}
        for rank, status in sorted(failing_ranks(log_text).items()):
            problems.append(f"{labels.get(rank, 'rank')} (world rank {rank}): exit status {status}")
            returncode = max(returncode, status)
        for rank, comm, code in mpi_aborts(log_text):
            if comm != "MPI_COMM_WORLD":
                problems.append(f"MPI_Abort({code}) by rank {rank} of {comm}")
                returncode = max(returncode, abs(code) % 256 or 1)
        if returncode and not problems:
            problems.append(f"mpirun exited with status {returncode}")
        last = self.namelist.itend
        if reached is None or reached < last:
            if reached is None:
                problems.append(f"the model never reported a step (time.step); last step {last}")
            else:
                problems.append(f"the model stopped at step {reached}, before its last step {last}")
            returncode = returncode or 1
        if _ocean_errors(self.run_dir / "ocean.output"):
            problems.append("ocean.output reports an error (E R R O R)")
            returncode = returncode or 1
        return returncode, problems

    def report(self, result: RunResult, *, quiet: bool) -> None:
        """Failure report on stderr, or the success line and timing table on stdout."""
        if result.interrupted:
            print(
                f"mlbridge run: interrupted after {result.elapsed:.1f} s "
                f"(run directory {result.run_dir})",
                file=sys.stderr,
                flush=True,
            )
        elif not result.ok:
            print(failure_report(result), file=sys.stderr, flush=True)
        elif not quiet:
            steps = result.last_step - result.first_step + 1
            print(
                f"mlbridge run: finished {steps} steps in {result.elapsed:.1f} s "
                f"(run directory {result.run_dir})",
                flush=True,
            )
            timing = result.timing
            if timing:
                print(format_timing(timing), flush=True)


def _resolve(config: CouplingConfig | Path | str) -> CouplingConfig:
    return config if isinstance(config, CouplingConfig) else load_config(config)


def launch(
    config: CouplingConfig | Path | str,
    *,
    model_ranks: int | None = None,
    server_ranks: int | None = None,
    steps: int | None = None,
    workdir: Path | str | None = None,
    build_dir: Path | str | None = None,
    progress: bool = False,
    quiet: bool = False,
    grace_s: float = 5.0,
) -> RunResult:
    """Validate, prepare a run directory, run the job, and report how it went.

    Parameters
    ----------
    config
        A loaded configuration, or the path of a ``coupling.toml``.
    model_ranks, server_ranks, steps, workdir
        Overrides of ``model.ranks``, ``server.ranks``, ``run.steps``, ``run.workdir``.
    build_dir
        Where a bare ``model.executable`` name is looked up (``<build_dir>/bin``); default
        ``build/`` or ``$MLBRIDGE_BUILD_DIR``.
    progress
        Show a tqdm progress bar (else a plain line every 10%).
    quiet
        Print nothing but the run directory and, on failure, the failure report.
    grace_s
        Seconds between asking the ranks to stop (SIGTERM) and killing them, on interrupt.

    Returns
    -------
    RunResult
        The run directory, exit status, elapsed time and per-rank logs.

    Raises
    ------
    ConfigError
        If the configuration, the namelists or the environment (mpirun, executable) are not
        fit to run; every problem is listed. Nothing has been started.
    LaunchError
        If the run directory cannot be prepared or mpirun cannot be executed.
    """
    base = _resolve(config)
    config = base.with_overrides(
        model_ranks=model_ranks, server_ranks=server_ranks, steps=steps, workdir=workdir
    )
    bdir = Path(build_dir).resolve() if build_dir is not None else default_build_dir()
    try:
        namelist = load_run_namelist(config, model_ranks_changed=model_ranks is not None)
    except NamelistError:
        namelist = None  # reported, with every other problem, by the validation
    registry_check = RegistryClosureCheck()
    validate_before_launch(
        config, namelist, build_dir=bdir, checks=(*DEFAULT_CHECKS, registry_check)
    )
    if namelist is None:  # only when a caller's checks skip the namelist problem
        raise ConfigError("the namelists could not be read", config.source)
    closures = registry_check.result
    assert closures is not None
    config = pin_closures(config, closures)

    exe = config.model.resolve_executable(bdir)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, executable=str(exe))
    )
    run_dir = make_run_dir(config.run.workdir, namelist.experiment)
    print(f"mlbridge run: run directory {run_dir}", flush=True)
    prepare_run_dir(config, namelist, run_dir)
    record_closures(closures, run_dir, quiet=quiet)
    try:
        command = mpmd_command(programs_for(config, run_dir), log_dir=run_dir / "logs")
    except MpiNotFoundError as err:
        raise ConfigError(str(err), config.source) from None
    (run_dir / "command.txt").write_text(" ".join(command) + "\n")
    job = _Job(
        config=config,
        namelist=namelist,
        run_dir=run_dir,
        command=tuple(command),
        rank_logs=rank_logs_for(config, run_dir),
    )
    result = job.run(progress=progress, quiet=quiet, grace_s=grace_s)
    for problem in stamp_outputs(run_dir, closures.closures):
        print(f"mlbridge run: warning: {problem}", file=sys.stderr, flush=True)
    return dataclasses.replace(result, closures=closures.closures)


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mlbridge run``."""
    parser.add_argument("config", type=Path, metavar="CONFIG.toml", help="the coupling file")
    parser.add_argument(
        "--model-ranks", type=int, metavar="N", help="model MPI ranks (overrides model.ranks)"
    )
    parser.add_argument(
        "--server-ranks", type=int, metavar="M", help="server MPI ranks (overrides server.ranks)"
    )
    parser.add_argument(
        "--steps", type=int, metavar="K", help="run K model steps (overrides the namelist)"
    )
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR", help="create the run directory below DIR"
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        metavar="DIR",
        help="where a bare executable name is looked up (default build/ or $MLBRIDGE_BUILD_DIR)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no log streaming, no progress")


def run(args: argparse.Namespace) -> int:
    """Run ``mlbridge run``; return the job's exit status (2: nothing was started)."""
    try:
        result = launch(
            args.config,
            model_ranks=args.model_ranks,
            server_ranks=args.server_ranks,
            steps=args.steps,
            workdir=args.workdir,
            build_dir=args.build_dir,
            progress=args.progress or sys.stderr.isatty(),
            quiet=args.quiet,
        )
    except (ConfigError, LaunchError) as err:
        print(f"mlbridge run: error: {err}", file=sys.stderr)
        return 2
    return result.returncode
