"""Running the job: progress, log streaming, stopping every process, and why a job failed."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bridge import paths
from bridge.config.coupling import CouplingConfig
from bridge.config.namelist import NemoNamelist
from bridge.launch.closure_checks import (
    REGISTRY_ENV,
    ClosureRecord,
)
from bridge.launch.mpiexec import (
    mpi_env,
)
from bridge.launch.rundir import LaunchError, format_timing, read_time_step, read_timing

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
    "  mlbridge run examples/oasis_pure/coupling.toml   # a model coupled through OASIS itself\n"
)



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



def job_env(
    config: CouplingConfig, run_dir: Path, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment of every rank (exported, as ``-x`` does not reach every MPMD program)."""
    python_path = os.environ.get("PYTHONPATH", "")
    extra = {
        RUN_DIR_ENV: str(run_dir),
        "OMP_NUM_THREADS": str(config.server.threads),
        # the model's waits before the handshake (joining the servers) use the same limit
        "MLBRIDGE_TIMEOUT_S": f"{config.server.timeout_s:g}",
    }
    checkout = paths.checkout_root()
    if checkout is not None:  # the servers start in the run directory: keep the checkout importable
        extra["PYTHONPATH"] = str(checkout) + (os.pathsep + python_path if python_path else "")
    if config.server.registry is not None:
        # the registry the closures were checked in, whatever the servers' default would be
        extra[REGISTRY_ENV] = str(config.server.registry)
    extra.update(extra_env or {})
    return mpi_env(extra)




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

    def __init__(
        self, total: int, *, bar: bool, quiet: bool, stream: IO[str], unit: str = "step"
    ) -> None:
        self.total = max(1, total)
        self.unit = unit
        self.quiet = quiet
        self.stream = stream
        self.done = 0
        self.start = self.last_line = time.monotonic()
        self.next_report = 0.1
        self.bar = None
        if bar and not quiet:
            from tqdm import tqdm  # only when a bar is shown

            self.bar = tqdm(
                total=self.total,
                unit=unit,
                file=stream,
                dynamic_ncols=True,
                desc="model" if unit == "step" else "servers",
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
                f"mlbridge run: {self.unit} {done}/{self.total} ({100 * done // self.total}%), "
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


_OASIS_TROUBLE = re.compile(r"abort|error|not found|mismatch", re.IGNORECASE)


def oasis_messages(run_dir: Path, limit: int = 8) -> list[str]:
    """What OASIS said about a failure: the lines of its own logs that name one.

    OASIS3-MCT writes to ``nout.000000`` and ``debug.*`` in the run directory, not to the ranks'
    output; an abort there (exit status 0) would otherwise go unexplained.
    """
    found: list[str] = []
    for path in [run_dir / "nout.000000", *sorted(run_dir.glob("debug*"))]:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            text = " ".join(line.split())
            if _OASIS_TROUBLE.search(text) and f"{path.name}: {text}" not in found:
                found.append(f"{path.name}: {text}")
    return found[-limit:]


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
    """A prepared job: run directory written, command built.

    Progress is the model's ``time.step``; for a model that couples through OASIS itself (no
    namelist mlbridge reads, no ``time.step`` it can rely on) it is the exchanges the servers
    have served (``oasis_server.step``). With ``transport = "oasis"`` a job without progress
    for ``server.timeout_s`` is stopped: ``oasis_get`` waits without a time limit.
    """

    config: CouplingConfig
    namelist: NemoNamelist | None
    run_dir: Path
    command: tuple[str, ...]
    rank_logs: tuple[RankLog, ...]
    extra_env: dict[str, str] | None = None

    @property
    def unit(self) -> str:
        """What progress counts: ``step`` (model steps) or ``exchange`` (OASIS dates served)."""
        return "exchange" if self.config.oasis_only else "step"

    def span(self) -> tuple[int, int]:
        """First and last value of the progress count."""
        if self.config.oasis is not None:
            return 1, self.config.oasis.exchanges
        assert self.namelist is not None
        return self.namelist.it000, self.namelist.itend

    def _finished(self, reached: int | None) -> bool:
        """Whether the progress count reached its end (the servers' marker too, OASIS-only)."""
        if self.config.oasis_only and not (self.run_dir / paths.DONE_MARKER).is_file():
            return False
        return reached is not None and reached >= self.span()[1]

    def reached(self) -> int | None:
        """The last step (or exchange) reported so far; None before the first."""
        if self.config.oasis_only:
            return paths.read_progress(self.run_dir)
        return read_time_step(self.run_dir)

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
        first, last = self.span()
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

        env = job_env(self.config, self.run_dir, self.extra_env)
        bar = _Progress(
            last - first + 1, bar=progress, quiet=quiet, stream=sys.stderr, unit=self.unit
        )
        # OASIS waits without a time limit: a job that shows no progress this long is stopped
        stall_s = self.config.server.timeout_s if self.config.transport == "oasis" else None
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
            seen: tuple[int | None, ...] = ()
            changed_at = start
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
                    step = self.reached()
                    if stall_s is not None:
                        now = time.monotonic()
                        signature = (step, read_time_step(self.run_dir))
                        if signature != seen:
                            seen, changed_at = signature, now
                        elif now - changed_at > stall_s:
                            stuck = (
                                f"no progress for {stall_s:.0f} s (server.timeout_s) at "
                                f"{self.unit} {step or 0} of {last}: OASIS waits without a "
                                "time limit, so the job was stopped"
                            )
                            bar.write(f"mlbridge run: {stuck}", sys.stderr)
                            reaper.watch(stop_job(proc, self.run_dir, grace_s))
                            break
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
        reached = self.reached()
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
        if self.config.transport == "oasis" and (returncode or not self._finished(reached)):
            problems += [f"OASIS: {line}" for line in oasis_messages(self.run_dir)]
        if self.config.oasis_only:
            # an oasis_abort can end every rank with status 0: the servers' markers decide
            problems += paths.check_outcome(self.run_dir, 0)
            last = self.span()[1]
            if (reached or 0) < last:
                problems.append(f"the servers served {reached or 0} of {last} exchanges")
            return (returncode or 1 if problems else returncode), problems
        assert self.namelist is not None
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
                f"mlbridge run: finished {steps} {self.unit}s in {result.elapsed:.1f} s "
                f"(run directory {result.run_dir})",
                flush=True,
            )
            source = paths.DONE_MARKER if self.config.oasis_only else "timing.json"
            timing = read_timing(result.run_dir, source)
            if timing:
                print(format_timing(timing, source), flush=True)


