"""Running the job: progress, log streaming, stopping every process, and why a job failed."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bridge import paths
from bridge.config.coupling import CouplingConfig
from bridge.config.namelist import NemoNamelist
from bridge.launch.closure_checks import (
    REGISTRY_ENV,
)
from bridge.launch.diskspace import disk_full_problem
from bridge.launch.failures import (
    ERROR_CONTEXT,
    ERROR_MARK,
    REPORT_FILE,
    SERVER_ERROR_MARKS,
    RankLog,
    RunResult,
    _ocean_errors,
    _status,
    failing_ranks,
    failure_report,
    keep_report,
    mpi_aborts,
    oasis_messages,
    report_places,
    server_errors,
)
from bridge.launch.mpiexec import (
    mpi_env,
)
from bridge.launch.processes import (
    RUN_DIR_ENV,
    _alive,
    _Interrupt,
    _signal_all,
    _Subreaper,
    descendants,
    job_processes,
    stop_job,
)
from bridge.launch.rundir import LaunchError, format_timing, read_time_step, read_timing

SERVER_MODULE = "bridge.server"
LINGER_GRACE_S = 60.0  # beyond server.timeout_s, after the model's last step
GAVE_UP_GRACE_S = 10.0  # a server said it gives up: the job should end by itself within this
PLAIN_PROGRESS_EVERY_S = 60.0  # without a bar, a progress line at least this often


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


class _Progress:
    """A tqdm bar on a terminal; elsewhere a plain line every 10% (and at least every minute)."""

    def __init__(
        self, total: int | None, *, bar: bool, quiet: bool, stream: IO[str], unit: str = "step"
    ) -> None:
        self.total = max(1, total) if total is not None else None  # None: counts, no total
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
        try:
            self._update(done)
        except OSError:
            pass  # the terminal is gone (SIGHUP)

    def _update(self, done: int) -> None:
        done = max(done, 0) if self.total is None else min(max(done, 0), self.total)
        if done <= self.done:
            return
        if self.bar is not None:
            self.bar.update(done - self.done)
        elif self.total is None:
            if not self.quiet and (
                not self.done or time.monotonic() - self.last_line > PLAIN_PROGRESS_EVERY_S / 6
            ):
                self.last_line = time.monotonic()
                elapsed = self.last_line - self.start
                print(
                    f"mlbridge run: {self.unit} {done}, {elapsed:.1f} s elapsed",
                    file=self.stream,
                    flush=True,
                )
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
        try:
            if self.bar is not None:
                self.bar.write(line, file=stream)
            else:
                print(line, file=stream, flush=True)
        except OSError:
            pass  # the terminal is gone (SIGHUP): the job is still stopped and reported on disk

    def close(self) -> None:
        if self.bar is not None:
            try:
                self.bar.close()
            except OSError:
                pass


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

    Progress: a NEMO-kind model's ``time.step``, else the steps the servers have served
    (:data:`bridge.paths.PROGRESS_FILE`, rewritten by server rank 0 after each exchange); a
    generic model's servers (counted from its first exchanged step; without ``[model] steps``
    a count without a total); for a model that couples through OASIS itself, the exchanges
    served. A coupled run succeeds only with the servers' done marker
    (:data:`bridge.paths.DONE_MARKER`) besides every rank's exit status 0. With
    ``transport = "oasis"`` a job without progress for ``server.timeout_s`` is stopped:
    ``oasis_get`` waits without a time limit.
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

    def span(self) -> tuple[int, int | None]:
        """First and last value of the progress count (last None: unknown)."""
        if self.config.oasis is not None:
            return 1, self.config.oasis.exchanges
        if self.namelist is not None:
            return self.namelist.it000, self.namelist.itend
        return 1, self.config.model.steps or None

    def _servers_done(self) -> dict[str, Any] | None:
        """The servers' done marker, or None (absent or unreadable)."""
        return read_timing(self.run_dir, paths.DONE_MARKER)

    def _finished(self, reached: int | None) -> bool:
        """Whether the progress count reached its end (the servers' marker too, OASIS-only)."""
        if self.config.oasis_only and not (self.run_dir / paths.DONE_MARKER).is_file():
            return False
        last = self.span()[1]
        return reached is not None and last is not None and reached >= last

    def reached(self) -> int | None:
        """The last step (or exchange) reported so far; None before the first."""
        if self.config.oasis_only:
            return paths.read_progress(self.run_dir)
        if self.namelist is not None:
            step = read_time_step(self.run_dir)
            served = paths.read_served_steps(self.run_dir)
            return step if step is not None or served is None else served[1]
        served = paths.read_served_steps(self.run_dir)
        if served is not None:  # a generic model: steps counted from its first exchanged one
            return served[1] - served[0] + 1
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
        gave_up: list[str] = []  # a server's error line: the job must end by itself soon

        def pump(bar: _Progress, final: bool = False) -> None:
            for stream in streams:
                for line in stream.tail.lines(final=final):
                    if stream.to_stderr and any(mark in line for mark in SERVER_ERROR_MARKS):
                        gave_up.append(line)
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
        total = last - first + 1 if last is not None else None
        bar = _Progress(total, bar=progress, quiet=quiet, stream=sys.stderr, unit=self.unit)
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
            gave_up_at: float | None = None
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
                    if gave_up_at is None and (gave_up or self._error_file()):
                        gave_up_at = time.monotonic()
                    if gave_up_at is not None and time.monotonic() - gave_up_at > GAVE_UP_GRACE_S:
                        stuck = (
                            f"a server gave up and the job was still running {GAVE_UP_GRACE_S:.0f}"
                            " s later: stopped"
                        )
                        bar.write(f"mlbridge run: {stuck}", sys.stderr)
                        reaper.watch(stop_job(proc, self.run_dir, grace_s))
                        break
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
                        if last is not None and step >= last and finished_at is None:
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
        if returncode and interrupted is None:
            full = disk_full_problem(self.run_dir, self.log_files())
            if full is not None:
                problems.insert(0, full)
        result = RunResult(
            run_dir=self.run_dir,
            returncode=returncode,
            elapsed=elapsed,
            rank_logs=self.rank_logs,
            command=self.command,
            first_step=first,
            last_step=last if last is not None else 0,
            reached_step=reached,
            interrupted=interrupted is not None,
            problems=tuple(problems),
        )
        return self.report(result, quiet=quiet)

    def log_files(self) -> list[Path]:
        """Every file the job's messages went to: mpirun's log, ocean.output, the rank logs."""
        files = [self.run_dir / "mpirun.log", self.run_dir / "ocean.output"]
        for log in self.rank_logs:
            files += [log.stderr, log.stdout]
        return files

    def _error_file(self) -> bool:
        """Whether a server of an OASIS-only model wrote that it gives up."""
        return (self.run_dir / paths.ERROR_FILE).exists()

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
            self._add_server_errors(problems)
            return (returncode or 1 if problems else returncode), problems
        done = self._servers_done() if self.config.coupled else None
        if self.config.coupled and done is None and not returncode and not problems:
            problems.append(
                f"the servers did not finish ({paths.DONE_MARKER} missing in {self.run_dir}): "
                "the model ended without its mlb_finalize, or the servers were stopped"
            )
            returncode = 1
        if self.namelist is not None:
            returncode = self._nemo_steps(returncode, problems, done)
        if _ocean_errors(self.run_dir / "ocean.output"):
            problems.append("ocean.output reports an error (E R R O R)")
            returncode = returncode or 1
        if returncode:
            self._add_server_errors(problems)
        return returncode, problems

    def _nemo_steps(self, returncode: int, problems: list[str], done: Any) -> int:
        """A NEMO-kind model reached the namelist's last step (``time.step``; without it, the
        servers' done marker says the model finished)."""
        assert self.namelist is not None
        last = self.namelist.itend
        step = read_time_step(self.run_dir)
        if step is None and done is not None:
            return returncode  # no time.step: the servers saw the model through to its goodbye
        if step is None:
            problems.append(f"the model never reported a step (time.step); last step {last}")
        elif step < last:
            problems.append(f"the model stopped at step {step}, before its last step {last}")
        else:
            return returncode
        return returncode or 1

    def finished_text(self, result: RunResult) -> str:
        """What ``finished ...`` says: the model's real count (``time.step`` of a NEMO-kind
        model, else the steps the servers served), never the count that was asked for."""
        if self.config.oasis_only:
            return f"{result.last_step - result.first_step + 1} exchanges"
        done = self._servers_done() or {}
        exchanges = done.get("exchanges")
        served = (done.get("first_step"), done.get("last_step"))
        step = read_time_step(self.run_dir)
        count: int | None = None
        if self.namelist is not None and step is not None:
            count = step - self.namelist.it000 + 1
        elif all(isinstance(v, int) for v in served):
            count = served[1] - served[0] + 1
        elif step is not None:
            return f"at model step {step}"
        parts = []
        if count is not None:
            parts.append(f"{count} steps")
        if isinstance(exchanges, int):
            parts.append(f"({exchanges} exchanges)" if parts else f"{exchanges} exchanges")
        expected = self.config.model.steps
        if count is not None and expected and count != expected:
            parts.append(f"([model] steps expected {expected})")
        return " ".join(parts) or "the run"

    def _add_server_errors(self, problems: list[str]) -> None:
        """Why the servers gave up, whichever ranks' logs the report shows (once each)."""
        at = 0
        for entry in server_errors(self.rank_logs):
            said = entry.split(": ", 1)[1].splitlines()[0]
            if not any(said in p for p in problems):
                problems.insert(at, entry)  # the cause first
                at += 1

    def report(self, result: RunResult, *, quiet: bool) -> RunResult:
        """Failure report on stderr and in a file, or the success line and timing on stdout.

        The report of a run that failed or was interrupted goes to ``failure_report.txt`` in the
        run directory, else (a full disk, no permission) to the first writable of
        :func:`report_places`, and the result says where (``report``). A terminal that is gone
        (SIGHUP) does not stop the report from being kept.
        """
        if result.interrupted or not result.ok:
            text = shown = failure_report(result)
            if result.interrupted:
                shown = (
                    f"mlbridge run: interrupted after {result.elapsed:.1f} s "
                    f"(run directory {result.run_dir}, report in {REPORT_FILE})"
                )
                text = f"{shown}\n{text}"
            _say(shown)
            path, refused = keep_report(text, report_places(result.run_dir))
            if refused:
                where = f"written to {path}" if path is not None else "written nowhere"
                places = "; ".join(refused)
                _say(f"mlbridge run: the report could not be written to {places}: {where}")
            return dataclasses.replace(result, report=path)
        elif not quiet:
            print(
                f"mlbridge run: finished {self.finished_text(result)} in {result.elapsed:.1f} s "
                f"(run directory {result.run_dir})",
                flush=True,
            )
            source = paths.DONE_MARKER if self.config.oasis_only else "timing.json"
            timing = read_timing(result.run_dir, source)
            if timing:
                print(format_timing(timing, source), flush=True)
        return result


def _say(text: str) -> None:
    """Print to stderr; a terminal that is gone (SIGHUP) is no reason to fail."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass
