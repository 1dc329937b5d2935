"""Why a job failed: what mpirun, the ranks, OASIS and ``ocean.output`` said; where it is kept."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.launch.closure_checks import (
    ClosureRecord,
)
from bridge.launch.rundir import read_timing
from bridge.launch.slurm import failed_tasks

ERROR_MARK = "E R R O R"
ERROR_CONTEXT = 3  # lines of ocean.output shown after each E R R O R line


TAIL_LINES = 20
REPORT_FILE = "failure_report.txt"

SERVER_ERROR_MARKS = ("mlbridge server: error: ", "mlbridge oasis server: error: ")
"""How a server rank's line that says why it gives up begins (``bridge/server/main.py``)."""


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


def _tail_lines(path: Path, n: int, keep: str | None = None) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    if keep is not None:
        lines = [line for line in lines if keep in line]
    return lines[-n:]


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
    report : Path or None
        Where the failure report was written (:func:`keep_report`); None on success, or when
        it could be written nowhere.
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
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timing(self) -> dict[str, Any] | None:
        """The servers' ``timing.json``, when they wrote one."""
        return read_timing(self.run_dir)


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
    """World rank -> exit status, for the ranks mpirun (or srun) reported as failed in its log."""
    found: dict[int, int] = {}
    for rank, code in _MPI_PROCESS.findall(mpirun_log):
        found[int(rank)] = max(found.get(int(rank), 0), int(code))
    for rank, sig in _MPI_SIGNAL.findall(mpirun_log):
        found[int(rank)] = max(found.get(int(rank), 0), 128 + int(sig))
    for rank, comm, code in mpi_aborts(mpirun_log):
        if comm == "MPI_COMM_WORLD":
            found[rank] = max(found.get(rank, 0), abs(code) % 256 or 1)
    for rank, code in failed_tasks(mpirun_log).items():  # the same log under srun
        found[rank] = max(found.get(rank, 0), code)
    return found


# "variable not in namcouple": a name the model defines that the namcouple lacks; the job then
# dies in the first oasis_put with exit status 0 and no other word (debug.* of the model)
_OASIS_TROUBLE = re.compile(r"abort|error|not found|mismatch|not in namcouple", re.IGNORECASE)


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


def server_errors(rank_logs: tuple[RankLog, ...] | list[RankLog], limit: int = 4) -> list[str]:
    """Why the server ranks gave up: each one's error line (and the indented lines after it).

    The failure report shows the logs of a few failing ranks only, and mpirun may count the model
    ranks it killed among them: the servers' own words go into the problems.
    """
    found: list[str] = []
    for log in rank_logs:
        if log.program != "server":
            continue
        try:
            lines = log.stderr.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for index, line in enumerate(lines):
            mark = next((m for m in SERVER_ERROR_MARKS if m in line), None)
            if mark is None:
                continue
            text = re.sub(r"^mlbridge server rank \d+: ", "", line.split(mark, 1)[1])
            for more in lines[index + 1 : index + 1 + TAIL_LINES]:
                if not more.startswith("  "):
                    break
                text += "\n   " + more.strip()
            if not any(text in f for f in found):
                found.append(f"{log.label}: {text}")
    return found[:limit]


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


def report_places(run_dir: Path) -> list[Path]:
    """Where a failure report goes: the run directory, else ``$TMPDIR``, the work directory's
    parent, the system's temporary directory (the first that takes it)."""
    name = f"mlbridge_{run_dir.name}_{REPORT_FILE}"
    places = [run_dir / REPORT_FILE]
    for directory in (os.environ.get("TMPDIR"), run_dir.parent.parent, tempfile.gettempdir()):
        if directory and Path(directory) / name not in places:
            places.append(Path(directory) / name)
    return places


def keep_report(text: str, places: Sequence[Path]) -> tuple[Path | None, list[str]]:
    """Write ``text`` to the first of ``places`` that takes it whole.

    Returns
    -------
    Path or None
        The file written (None: none could be).
    list of str
        ``PATH: reason`` of each place that could not be written (a full disk, no permission).
    """
    refused = []
    for path in places:
        try:
            path.write_text(text + "\n", encoding="utf-8")
            return path, refused
        except OSError as err:
            refused.append(f"{path}: {err.strerror or err}")
            try:  # a full disk leaves an empty or cut file behind
                path.unlink(missing_ok=True)
            except OSError:
                pass
    return None, refused
