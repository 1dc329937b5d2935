"""``mlbridge run``: run a coupled Fortran + Python job described by a ``coupling.toml``.

Everything that can be checked is checked before anything starts (:mod:`bridge.launch.checks`).
Each run gets its own directory ``<workdir>/<cn_exp>_<YYYYmmdd-HHMMSS>[_n]``, never reused::

    coupling.toml         copy of the file the run was started from (when there is one)
    run_config.json       the resolved configuration (absolute paths, overrides applied);
                          the servers read it (``python -m bridge.server --config ...``)
    namelist_ref          kind = "nemo": copy of the reference namelist
    namelist_cfg          kind = "nemo": the configuration namelist, patched for this run:
                          nn_itend (--steps), jpni = jpnj = 0 (--model-ranks), ln_mlb (whether
                          there are exchanges), cn_ocerst_in made absolute
    (staged files)        [model] stage (copies) and link (symbolic links), under their names
    command.txt           the mpirun command line, to re-run by hand
    mpirun.log            everything mpirun printed: all ranks' output, interleaved, and
                          mpirun's own messages (which rank failed, with what status)
    logs/1/rank.<R>/stdout, logs/1/rank.<R>/stderr
                          each world rank's own output (Open MPI 4.1 ``--output-filename``);
                          ranks 0..N-1 are the model, N..N+M-1 the servers
    closures.json         the closure of every exchange: name, version, sha256 of the
                          registered artifact, registry (also printed when the run starts)
    ocean.output, time.step, <cn_exp>_grid.nc, ...   what the model writes (its cwd is here)
    server.step, server_done.json                    the servers' progress and done marker
    timing.json, diagnostics.nc                      what the servers write at the end
    failure_report.txt    the report of a run that failed or was interrupted (also on stderr);
                          when the run directory cannot take it (a full disk), in $TMPDIR or
                          the work directory's parent

Registry closures are checked before launch (:mod:`bridge.launch.closure_checks`: registered,
hashes intact, loadable, inputs and outputs matching the exchange, halo within the server
blocks); ``run_config.json`` pins each one to the ``name@version`` and sha256 that were checked,
every rank gets ``MLBRIDGE_HOME`` set to the run's registry, and after the run the global
attributes of ``*_grid.nc`` and ``diagnostics.nc`` name the closures (``mlbridge_closures``,
``mlbridge_closure_<exchange>_name``, ``_version``, ``_sha256``).

Inside a Slurm allocation (``$SLURM_JOB_ID`` set) the job is one ``srun --mpi=pmix
--multi-prog mpmd.conf`` step instead (a heterogeneous step with ``[slurm] server_nodes``), each
rank's output in ``logs/rank.<R>.out`` and ``.err``, srun's own messages in ``mpirun.log``;
``--launcher mpirun|srun`` overrides the choice (:mod:`bridge.launch.command`), and
``--dry-run`` prints the command, the run directory, the files and the environment and starts
nothing (``docs/slurm.md``).

The job is ``mpirun -np N model`` when there is no ``[[exchange]]``, and otherwise
``mpirun -np N model : -np M python -m bridge.server --config RUN/run_config.json --run-dir RUN``.
While it runs the terminal shows model rank 0's and server rank 0's output, every rank's
stderr, and ``E R R O R`` lines of ``ocean.output``; progress (a NEMO-kind model's
``time.step``, else the servers' ``server.step``) is a tqdm bar on a terminal and a plain line
every 10% otherwise. The exit status is the worst of all ranks; a run that exits 0 but whose
servers wrote no done marker (coupled runs), whose NEMO-kind model did not reach its last step,
or whose ``ocean.output`` reports an error, counts as failed (status 1); the failure report
(the servers' error lines first; a full disk named first, :mod:`bridge.launch.diskspace`) also
goes to ``failure_report.txt``. On SIGINT, SIGTERM or SIGHUP (a dropped terminal or ssh
connection) every rank is stopped (mpirun first, then every process of the job after a grace
period) and the status is 128 + the signal; a SIGHUP ignored at start (``nohup``) stays
ignored. A job still running 10 s after a server said it gives up is stopped too.

``transport = "oasis"`` (``docs/oasis.md``): with an ``[oasis]`` table the model couples through
OASIS itself, and the job (the same path, prepared by :func:`_prepare`) is ``mpirun -np N model :
-np M python -m bridge.server ...`` (its namelists are copied under their own names, ``namcouple``
and ``oasis.json`` are written, progress counts the exchanges the servers served, and success also
needs the servers' done marker, since an OASIS abort can end every rank with status 0). OASIS waits
without a time limit, so such a job that makes no progress for ``server.timeout_s`` is stopped, and
the lines of OASIS's own logs (``nout.000000``, ``debug.*``) that name an error are added to a
failure report.

Exit statuses of the command: 0 success; 2 nothing was started (configuration or environment
problem, every problem listed); 130/143 interrupted; otherwise the job's worst status.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.config.coupling import ConfigError, CouplingConfig, load_config
from bridge.config.namcouple import (
    write_namcouple,
)
from bridge.config.namelist import NamelistError, NemoNamelist
from bridge.launch.checks import (
    DEFAULT_CHECKS,
    load_run_namelist,
    validate_before_launch,
)
from bridge.launch.closure_checks import (
    ClosureCheck,
    RegistryClosureCheck,
    pin_closures,
)
from bridge.launch.command import (
    LAUNCHERS,
    JobCommand,
    LauncherError,
    choose_launcher,
    job_command,
)
from bridge.launch.mpiexec import (
    MpiNotFoundError,
    Program,
    python_program,
)
from bridge.launch.oasis import (
    OasisBackendChoice,
    OasisTransportCheck,
    check_oasis_only,
    library_run_namcouple,
    prepare_oasis_run_dir,
)
from bridge.launch.oasis import check_oasis_transport as check_oasis_transport
from bridge.launch.rundir import (
    LaunchError,
    make_run_dir,
    next_run_dir,
    prepare_generic_run_dir,
    prepare_run_dir,
    record_closures,
    stage_model_files,
    stamp_outputs,
)
from bridge.launch.slurm import SlurmError
from bridge.launch.slurm import job_id as slurm_job_id
from bridge.launch.supervise import SERVER_MODULE, RankLog, RunResult, _Job, job_env
from bridge.paths import BUILD_DIR_ENV, default_build_dir

EXAMPLES = (
    "  mlbridge run examples/01_coarse/coupling.toml\n"
    "  mlbridge run examples/01_coarse/coupling.toml --model-ranks 2 --steps 100 --workdir /tmp/r\n"
    "  mlbridge run examples/05_oasis_pure/coupling.toml   # a model coupled through OASIS itself\n"
    "  mlbridge run examples/03_coupled_laplacian/coupling.toml --dry-run  # print, start nothing\n"
    "  salloc -n 3 mlbridge run examples/03_coupled_laplacian/coupling.toml  # srun --multi-prog\n"
    '  mlbridge run my_model/coupling.toml   # [model] kind = "generic": no namelist needed\n'
)


# --- command ----------------------------------------------------------------------------------


def programs_for(config: CouplingConfig, run_dir: Path) -> list[Program]:
    """The MPMD programs: the model, then the servers when there is an exchange.

    ``config.model.executable`` must already be resolved to a path.
    """
    programs = [Program(config.model.ranks, (config.model.executable, *config.model.args))]
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


def rank_logs_for(
    config: CouplingConfig, run_dir: Path, job: JobCommand | None = None
) -> tuple[RankLog, ...]:
    """Where each world rank's stdout/stderr go (model ranks first, then servers).

    ``job``: the command whose launcher names the files (default: mpirun's layout).
    """
    if job is None:
        job = JobCommand("mpirun", (), (), run_dir / "logs")
    logs = []
    groups = [("model", config.model.ranks)]
    if config.coupled:
        groups.append(("server", config.server.ranks))
    rank = 0
    for program, count in groups:
        for local in range(count):
            out, err = job.rank_log_files(rank)
            logs.append(RankLog(rank, program, local, out, err))
            rank += 1
    return tuple(logs)


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
    launcher: str | None = None,
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
    launcher
        ``mpirun`` or ``srun``; None: srun inside a Slurm allocation, else mpirun
        (:func:`bridge.launch.command.choose_launcher`).

    Returns
    -------
    RunResult
        The run directory, exit status, elapsed time and per-rank logs.

    Raises
    ------
    ConfigError
        If the configuration, the namelists or the environment (launcher, executable) are not
        fit to run; every problem is listed. Nothing has been started.
    LaunchError
        If the run directory cannot be prepared or mpirun cannot be executed.
    """
    chosen = _choose(launcher, config)
    prepared, config, bdir, exe = _ready(
        config, model_ranks, server_ranks, steps, workdir, build_dir
    )
    run_dir = make_run_dir(config.run.workdir, prepared.experiment or exe.name)
    print(f"mlbridge run: run directory {run_dir}", flush=True)
    prepared.write(config, run_dir)
    closures = prepared.closures
    if closures is not None:
        record_closures(closures, run_dir, quiet=quiet)
    elif not quiet and config.oasis is not None:
        oasis = config.oasis
        print(
            f"mlbridge run: OASIS component {oasis.model_component!r} ({config.model.ranks} "
            f"ranks) served by {oasis.server_component!r} ({config.server.ranks} ranks): "
            f"closure {oasis.closure!r}, {len(oasis.inputs)} fields in, {len(oasis.outputs)} "
            f"out, {oasis.exchanges} exchanges every {oasis.period_s} s",
            flush=True,
        )
    extra_env = _extra_env(config, prepared, bdir)
    command = _command(chosen, config, run_dir)
    command.write_files()
    (run_dir / "command.txt").write_text(" ".join(command.argv) + "\n")
    job = _Job(
        config=config,
        namelist=prepared.namelist,
        run_dir=run_dir,
        command=command.argv,
        rank_logs=rank_logs_for(config, run_dir, command),
        extra_env=extra_env,
    )
    result = job.run(progress=progress, quiet=quiet, grace_s=grace_s)
    if closures is None:
        return result
    for problem in stamp_outputs(run_dir, closures.closures):
        print(f"mlbridge run: warning: {problem}", file=sys.stderr, flush=True)
    return dataclasses.replace(result, closures=closures.closures)


def dry_run(
    config: CouplingConfig | Path | str,
    *,
    model_ranks: int | None = None,
    server_ranks: int | None = None,
    steps: int | None = None,
    workdir: Path | str | None = None,
    build_dir: Path | str | None = None,
    launcher: str | None = None,
) -> str:
    """What :func:`launch` would do, as text: the launcher, the run directory it would create,
    the files it would write there (the ``--multi-prog`` file in full), the environment it
    exports and the exact command. Every check runs; nothing is created or started.

    Raises
    ------
    ConfigError
        As :func:`launch`.
    LaunchError
        If no run directory name is free.
    """
    chosen = _choose(launcher, config)
    prepared, config, bdir, exe = _ready(
        config, model_ranks, server_ranks, steps, workdir, build_dir
    )
    run_dir = next_run_dir(config.run.workdir, prepared.experiment or exe.name)
    command = _command(chosen, config, run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        prepared.write(config, Path(scratch))  # the names of what the run directory would get
        written = sorted(p.name for p in Path(scratch).iterdir())
    written += [path.name for path, _ in command.files] + ["command.txt", "mpirun.log"]
    env = job_env(config, run_dir, _extra_env(config, prepared, bdir))
    exported = {k: v for k, v in env.items() if os.environ.get(k) != v}
    job = slurm_job_id()
    where = f" (inside Slurm job {job})" if job and chosen == "srun" else ""
    logs = rank_logs_for(config, run_dir, command)
    lines = [
        "mlbridge run --dry-run: nothing is created or started",
        f"launcher: {chosen}{where}",
        f"run directory (would be created): {run_dir}",
        f"model executable: {exe}",
        "files written there: " + ", ".join(sorted(dict.fromkeys(written))),
        f"rank logs: {logs[0].stdout} .. {logs[-1].stderr}" if logs else "rank logs: none",
    ]
    for path, text in command.files:
        lines += [f"--- {path}", text.rstrip("\n"), "---"]
    lines.append("environment exported to every rank:")
    lines += [f"  {key}={shlex.quote(value)}" for key, value in sorted(exported.items())]
    lines += ["command:", "  " + shlex.join(command.argv)]
    return "\n".join(lines) + "\n"


def check_ready(
    config: CouplingConfig | Path | str,
    *,
    model_ranks: int | None = None,
    server_ranks: int | None = None,
    steps: int | None = None,
    workdir: Path | str | None = None,
    build_dir: Path | str | None = None,
) -> CouplingConfig:
    """Every check of :func:`launch`, nothing created: the configuration as it would run.

    Raises
    ------
    ConfigError
        As :func:`launch`.
    """
    return _ready(config, model_ranks, server_ranks, steps, workdir, build_dir)[1]


def _choose(launcher: str | None, config: CouplingConfig | Path | str) -> str:
    try:
        return choose_launcher(launcher)
    except LauncherError as err:
        source = config if not isinstance(config, CouplingConfig) else config.source
        raise ConfigError(str(err), source) from None


def _ready(
    config: CouplingConfig | Path | str,
    model_ranks: int | None,
    server_ranks: int | None,
    steps: int | None,
    workdir: Path | str | None,
    build_dir: Path | str | None,
) -> tuple[_Prepared, CouplingConfig, Path, Path]:
    """Overrides applied, every check passed, the executable resolved: ready to launch."""
    base = _resolve(config)
    config = base.with_overrides(
        model_ranks=model_ranks, server_ranks=server_ranks, steps=steps, workdir=workdir
    )
    bdir = Path(build_dir).resolve() if build_dir is not None else default_build_dir()
    prepared = _prepare(config, bdir, model_ranks_changed=model_ranks is not None)
    config = prepared.config
    exe = config.model.resolve_executable(bdir)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, executable=str(exe))
    )
    return prepared, config, bdir, exe


def _extra_env(config: CouplingConfig, prepared: _Prepared, bdir: Path) -> dict[str, str]:
    """What the job's ranks get on top of the launcher's environment: ``[model] env``, and where
    the servers find OASIS."""
    env = dict(config.model.env)
    if config.transport == "oasis" and config.coupled:
        assert prepared.oasis_backend is not None  # checked by _prepare
        env.update({BUILD_DIR_ENV: str(bdir), **prepared.oasis_backend.env})
    return env


def _command(launcher: str, config: CouplingConfig, run_dir: Path) -> JobCommand:
    try:
        return job_command(launcher, programs_for(config, run_dir), run_dir, config.slurm)
    except (MpiNotFoundError, SlurmError) as err:
        raise ConfigError(str(err), config.source) from None


@dataclass(frozen=True)
class _Prepared:
    """What the checks established before launch, and how to fill the run directory.

    A model linking the mlbridge library is described by its NEMO-style namelists (``namelist``)
    and its closures are checked in the registry (``closures``); a model that couples through
    OASIS itself by the ``[oasis]`` table (both None). ``oasis_backend``: the OASIS binding the
    servers will use, whose OASIS version the names were checked against (None without OASIS).
    """

    config: CouplingConfig
    namelist: NemoNamelist | None
    closures: ClosureCheck | None
    oasis_backend: OasisBackendChoice | None = None

    @property
    def experiment(self) -> str:
        """The run directory's name stem (the namelist's ``cn_exp``; else the executable's)."""
        return self.namelist.experiment if self.namelist is not None else ""

    def write(self, config: CouplingConfig, run_dir: Path) -> None:
        """Everything the job reads from the run directory."""
        self._write(config, run_dir)
        stage_model_files(config, run_dir)

    def _write(self, config: CouplingConfig, run_dir: Path) -> None:
        if config.oasis_only:
            assert self.oasis_backend is not None  # checked by _prepare
            prepare_oasis_run_dir(config, run_dir, self.oasis_backend.limits)
            return
        if self.namelist is None:  # a generic model
            prepare_generic_run_dir(config, run_dir)
            return
        prepare_run_dir(config, self.namelist, run_dir)
        if config.transport == "oasis" and config.coupled:
            assert self.oasis_backend is not None  # checked by _prepare
            limits = self.oasis_backend.limits
            try:
                write_namcouple(library_run_namcouple(config, self.namelist, limits), run_dir)
            except OSError as err:
                raise LaunchError(f"{run_dir}: cannot write the namcouple: {err}") from None


def _prepare(config: CouplingConfig, build_dir: Path, *, model_ranks_changed: bool) -> _Prepared:
    """Every check before launch (all problems listed at once), for either kind of model.

    Raises
    ------
    ConfigError
        If anything is wrong; nothing has been started.
    """
    if config.oasis_only:
        backend, problems = check_oasis_only(config, build_dir)
        if problems:
            raise ConfigError(problems, config.source)
        return _Prepared(config, None, None, backend)
    namelist = None
    if config.model.nemo:
        try:
            namelist = load_run_namelist(config, model_ranks_changed=model_ranks_changed)
        except NamelistError:
            pass  # reported, with every other problem, by the validation
    elif config.transport == "oasis":
        raise ConfigError(
            f'transport = "oasis" with model.kind = "{config.model.kind}": the launcher writes '
            'the namcouple from the model\'s namelists (kind = "nemo"); use transport = "mpi"',
            config.source,
        )
    registry_check = RegistryClosureCheck()
    oasis_check = OasisTransportCheck()
    validate_before_launch(
        config,
        namelist,
        build_dir=build_dir,
        checks=(*DEFAULT_CHECKS, registry_check, oasis_check),
    )
    if namelist is None and config.model.nemo:  # a caller's checks skipped the namelist problem
        raise ConfigError("the namelists could not be read", config.source)
    closures = registry_check.result
    assert closures is not None
    return _Prepared(pin_closures(config, closures), namelist, closures, oasis_check.choice)


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
        "--steps",
        type=int,
        metavar="K",
        help=(
            'run K model steps (kind = "nemo": overrides the namelist\'s nn_itend; refused for '
            "a generic model, whose own input files set its length)"
        ),
    )
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR", help="create the run directory below DIR"
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        metavar="DIR",
        help=(
            "where a bare executable name is looked up (default: $MLBRIDGE_BUILD_DIR, build/ "
            "of a checkout, else ~/.local/share/mlbridge/build)"
        ),
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no log streaming, no progress")
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="start the job with mpirun or srun (default: srun inside a Slurm allocation, "
        "i.e. with $SLURM_JOB_ID set, else mpirun)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything, print the command, the run directory, the files and the "
        "environment it would use, and start nothing",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``mlbridge run``; return the job's exit status (2: nothing was started)."""
    overrides = {
        "model_ranks": args.model_ranks,
        "server_ranks": args.server_ranks,
        "steps": args.steps,
        "workdir": args.workdir,
        "build_dir": args.build_dir,
        "launcher": args.launcher,
    }
    if args.dry_run:
        try:
            print(dry_run(args.config, **overrides), end="", flush=True)
        except (ConfigError, LaunchError) as err:
            print(f"mlbridge run: error: {err}", file=sys.stderr)
            return 2
        return 0
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
            launcher=args.launcher,
        )
    except (ConfigError, LaunchError) as err:
        print(f"mlbridge run: error: {err}", file=sys.stderr)
        return 2
    return result.returncode
