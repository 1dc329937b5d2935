"""The processes of a job: finding every one (also re-parented ones), stopping them, reaping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_DIR_ENV = "MLBRIDGE_RUN_DIR"  # exported to every rank: also marks the job's processes

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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the whole job: Ctrl-C, ``kill`` or a batch system's end of time, and a
terminal or ssh connection that drops (SIGHUP; the job runs in its own session, so without this
it would run on headless, with no report)."""


class _Interrupt:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag while the job runs (main thread only).

    A signal the launcher was started with ignored stays ignored: under ``nohup`` (SIGHUP ignored)
    the job survives a dropped terminal.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # nohup
                self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
