"""Checks run before a job starts, so that nothing is launched that is bound to fail.

Each check is a small function of a :class:`LaunchContext` that yields one line per problem
found (naming the file, field or value it is about). :func:`validate_before_launch` runs them all
and raises one :class:`ConfigError` listing every problem. To add a check, write such a function
and pass ``checks=(*DEFAULT_CHECKS, my_check)``, or add it to ``DEFAULT_CHECKS`` here.

Checks that need the namelists are skipped when those could not be read: that failure is
reported once, by :func:`check_namelists`. A ``kind = "generic"`` model has no namelist: the
namelist checks (and their messages, which name NEMO's blocks and entries) are skipped, and
what ``[model]`` says is checked instead (executable, staged files, ranks against ``nx, ny``,
exchanges against ``steps``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.config.coupling import ConfigError, CouplingConfig, model_schedule, schedules_differ
from bridge.config.namelist import (
    NamelistError,
    NemoNamelist,
    read_namelists,
    restart_file,
    run_patch,
)
from bridge.launch.diskspace import estimate_outputs, space_problems
from bridge.launch.mpiexec import MpiNotFoundError, find_mpirun
from bridge.paths import default_build_dir


@dataclass(frozen=True)
class LaunchContext:
    """What the checks look at.

    Attributes
    ----------
    config : CouplingConfig
        The configuration, overrides applied.
    namelist : NemoNamelist or None
        The merged namelists as the model will read them (run patch applied), or None when they
        could not be read.
    namelist_error : str or None
        Why the namelists could not be read.
    build_dir : Path
        Where bare executable names are looked up (``<build_dir>/bin``).
    """

    config: CouplingConfig
    namelist: NemoNamelist | None
    namelist_error: str | None
    build_dir: Path

    @property
    def executable(self) -> Path:
        """The model executable as it will be started."""
        return self.config.model.resolve_executable(self.build_dir)

    @property
    def steps(self) -> int | None:
        """Number of model steps of the run, None when unknown."""
        if not self.config.model.nemo:
            return self.config.model.steps or None
        if self.namelist is None:
            return None
        try:
            return self.namelist.steps
        except NamelistError:
            return None


Check = Callable[[LaunchContext], Iterable[str]]


def check_mpirun(ctx: LaunchContext) -> Iterator[str]:
    """``mpirun`` (or ``$MLBRIDGE_MPIRUN``) can be found."""
    try:
        find_mpirun()
    except MpiNotFoundError as err:
        yield str(err)


def check_executable(ctx: LaunchContext) -> Iterator[str]:
    """The model executable exists and is executable."""
    exe = ctx.executable
    hint = f" (run `mlbridge build --build-dir {ctx.build_dir}` to build it)"
    where = f'model.executable = "{ctx.config.model.executable}"'
    if not exe.exists():
        yield f"{where}: {exe} does not exist{hint}"
    elif not exe.is_file():
        yield f"{where}: {exe} is not a file"
    elif not os.access(exe, os.X_OK):
        yield f"{where}: {exe} is not executable (chmod +x, or rebuild{hint})"


def check_staged(ctx: LaunchContext) -> Iterator[str]:
    """Every file or folder of ``[model] stage`` and ``link`` exists (and can be read)."""
    model = ctx.config.model
    for key, items in (("stage", model.stage), ("link", model.link)):
        for index, item in enumerate(items):
            where = f"model.{key}[{index}] = {str(item)!r}"
            if not item.exists():
                yield f"{where}: not found"
            elif not os.access(item, os.R_OK):
                yield f"{where}: not readable"


def check_generic_grid(ctx: LaunchContext) -> Iterator[str]:
    """A generic model: not more ranks than the grid columns ``[model] nx, ny`` give."""
    model = ctx.config.model
    if model.nemo or model.grid is None:
        return
    if model.ranks > model.nx * model.ny:
        yield (
            f"model.ranks = {model.ranks}: more ranks than the {model.nx} x {model.ny} = "
            f"{model.nx * model.ny} grid columns of [model] nx, ny"
        )


def check_namelists(ctx: LaunchContext) -> Iterator[str]:
    """The namelists exist, are readable and typed as the reference (reported once, here)."""
    if ctx.namelist_error:
        yield from ctx.namelist_error.splitlines()


def check_time(ctx: LaunchContext) -> Iterator[str]:
    """The time step is positive and the run has at least one step."""
    nml = ctx.namelist
    if nml is None:
        return
    try:
        if nml.dt <= 0:
            yield f"{nml.where('namdom', 'rn_Dt')} = {nml.dt}: the time step must be > 0"
    except NamelistError as err:
        yield str(err)
    try:
        if nml.itend < nml.it000:
            yield (
                f"{nml.where('namrun', 'nn_itend')} = {nml.itend} is before "
                f"&namrun nn_it000 = {nml.it000}: the run has no step"
            )
    except NamelistError as err:
        yield str(err)


def check_decomposition(ctx: LaunchContext) -> Iterator[str]:
    """``jpni * jpnj`` matches the model ranks, and there are not more ranks than columns."""
    nml = ctx.namelist
    if nml is None:
        return
    ranks = ctx.config.model.ranks
    try:
        decomposition = nml.decomposition
    except NamelistError as err:
        yield str(err)
        decomposition = None
    if decomposition is not None and decomposition[0] * decomposition[1] != ranks:
        jpni, jpnj = decomposition
        yield (
            f"{nml.where('nammpp', 'jpni')} = {jpni}, jpnj = {jpnj}: {jpni * jpnj} subdomains "
            f"but model.ranks = {ranks} (set jpni = jpnj = 0, or use --model-ranks)"
        )
    try:
        grid = nml.grid
    except NamelistError as err:
        yield str(err)
        return
    if ranks > grid.columns:
        yield (
            f"model.ranks = {ranks}: more ranks than the {grid.nx} x {grid.ny} = {grid.columns} "
            f"grid columns of {nml.where('namusr_def')}"
        )
    if decomposition is not None and (decomposition[0] > grid.nx or decomposition[1] > grid.ny):
        yield (
            f"{nml.where('nammpp', 'jpni')} = {decomposition[0]}, jpnj = {decomposition[1]}: "
            f"more subdomains than grid points ({grid.nx} x {grid.ny})"
        )


def check_exchange_frequency(ctx: LaunchContext) -> Iterator[str]:
    """No exchange is less frequent than the whole run (it would never happen)."""
    steps = ctx.steps
    if steps is None or steps < 1:
        return
    for index, exchange in enumerate(ctx.config.exchanges):
        if exchange.every > steps:
            yield (
                f"exchange[{index}].every = {exchange.every}: longer than the run "
                f"({steps} steps): the closure {exchange.closure!r} would never be called"
            )


def check_restart(ctx: LaunchContext) -> Iterator[str]:
    """With ``ln_rstart``, the restart file exists."""
    nml = ctx.namelist
    if nml is None:
        return
    try:
        restart = restart_file(nml)
    except NamelistError as err:
        yield str(err)
        return
    if restart is not None and not restart.is_file():
        yield f"{nml.where('namrun', 'cn_ocerst_in')}: restart file {restart} not found"


def check_workdir(ctx: LaunchContext) -> Iterator[str]:
    """The work directory exists and is writable, or can be created."""
    workdir = ctx.config.run.workdir
    existing = next((p for p in (workdir, *workdir.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        yield f'run.workdir = "{workdir}": {existing} is not a directory'
    elif not os.access(existing, os.W_OK | os.X_OK):
        yield f'run.workdir = "{workdir}": {existing} is not writable'


def check_disk_space(ctx: LaunchContext) -> Iterator[str]:
    """The file systems of the run (and of its restarts) can hold what it will write.

    A rough estimate of the toy-like model's outputs (:mod:`bridge.launch.diskspace`) against
    the free space now: a disk that fills during the run leaves empty logs behind.
    """
    if ctx.namelist is None:
        return
    workdir = ctx.config.run.workdir
    for problem in space_problems(estimate_outputs(ctx.config, ctx.namelist, workdir)):
        yield f"run.workdir: {problem}"


def _names(value: object) -> list[str]:
    """A namelist list of names (f90nml gives a str, a list, with None for empty slots)."""
    items = value if isinstance(value, list) else [value]
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def check_exchange_fields(ctx: LaunchContext) -> Iterator[str]:
    """Every model field an exchange maps is one the model defines (its ``&nammlb``).

    Models with a toy-style ``&nammlb`` list the fields they send (``cn_mlb_snd``) and receive
    (``cn_mlb_rcv``) and how often (``nn_mlb_every``); a model without those entries is checked
    at the handshake only.
    """
    nml = ctx.namelist
    if nml is None or not ctx.config.coupled:
        return
    lists = (("input", "send", "cn_mlb_snd"), ("output", "receive", "cn_mlb_rcv"))
    for role, verb, entry in lists:
        if not nml.has("nammlb", entry):
            continue
        defined = _names(nml.get("nammlb", entry))
        for index, exchange in enumerate(ctx.config.exchanges):
            mapping = dict(exchange.inputs if role == "input" else exchange.outputs)
            if role == "input" and exchange.train is not None:  # targets are sent too
                mapping.update({f"target of {o}": f for o, f in exchange.train.target.items()})
            for closure_name, model_name in mapping.items():
                if model_name not in defined:
                    yield (
                        f"exchange[{index}] ({exchange.closure}): closure {role} "
                        f"{closure_name!r} is mapped to model field {model_name!r}, which the "
                        f"model does not {verb}: {nml.where('nammlb', entry)} = "
                        f"{', '.join(defined) or 'nothing'}"
                    )
    if nml.has("nammlb", "nn_mlb_every"):
        try:
            every = nml.get_int("nammlb", "nn_mlb_every")
        except NamelistError as err:
            yield str(err)
            return
        exchanges = ctx.config.exchanges
        needed = model_schedule(exchanges)[0]
        if exchanges and not schedules_differ(exchanges) and needed != every:
            yield (
                f"exchange[0].every = {needed}, but the model exchanges every "
                f"{every} steps ({nml.where('nammlb', 'nn_mlb_every')} = {every})"
            )
        elif exchanges and needed != every:
            listing = ", ".join(f"exchange[{i}].every = {e.every}" for i, e in enumerate(exchanges))
            yield (
                f"{listing}: the exchanges on their own schedules need the model to exchange every "
                f"{needed} steps (their greatest common divisor), but it exchanges every {every} "
                f"({nml.where('nammlb', 'nn_mlb_every')} = {every})"
            )


DEFAULT_CHECKS: tuple[Check, ...] = (
    check_mpirun,
    check_executable,
    check_staged,
    check_generic_grid,
    check_namelists,
    check_time,
    check_decomposition,
    check_exchange_frequency,
    check_exchange_fields,
    check_restart,
    check_workdir,
    check_disk_space,
)


def load_run_namelist(config: CouplingConfig, *, model_ranks_changed: bool = False) -> NemoNamelist:
    """The merged namelists as the model will read them: the run's patch applied.

    Parameters
    ----------
    config
        The configuration (``run.steps`` > 0 patches ``nn_itend``; ``&nammlb ln_mlb`` is set
        to whether there is an ``[[exchange]]``).
    model_ranks_changed
        True when the model rank count was overridden on the command line: a ``jpni x jpnj``
        that does not match it is reset to 0 x 0 (the model chooses).

    Raises
    ------
    NamelistError
        If the namelists cannot be read or merged, or if an entry of ``namelist_cfg`` does not
        have the type of the reference's (every such entry, one line each: the model would stop
        on the first with a message that does not name it).
    """
    nml = read_namelists(config.model.namelist_ref, config.model.namelist_cfg)
    mistyped = nml.type_problems()
    if mistyped:
        raise NamelistError("\n".join(mistyped))
    patch = run_patch(
        nml,
        steps=config.run.steps or None,
        model_ranks=config.model.ranks if model_ranks_changed else None,
        coupled=config.coupled,
    )
    return nml.with_patch(patch)


def find_problems(
    config: CouplingConfig,
    namelist: NemoNamelist | None = None,
    *,
    build_dir: Path | None = None,
    checks: Sequence[Check] = DEFAULT_CHECKS,
) -> list[str]:
    """Run ``checks`` and return every problem found (empty: ready to launch).

    ``namelist`` None: the namelists are read from the config (without patch).
    """
    error = None
    if namelist is None and config.model.nemo:
        try:
            namelist = load_run_namelist(config)
        except NamelistError as err:
            error = str(err)
    ctx = LaunchContext(config, namelist, error, Path(build_dir or default_build_dir()))
    problems: list[str] = []
    for check in checks:
        problems.extend(check(ctx))
    return problems


def validate_before_launch(
    config: CouplingConfig,
    namelist: NemoNamelist | None = None,
    *,
    build_dir: Path | None = None,
    checks: Sequence[Check] = DEFAULT_CHECKS,
) -> None:
    """Check everything that can be checked before launching; raise if anything is wrong.

    Parameters
    ----------
    config
        The configuration, overrides applied.
    namelist
        The merged namelists as the model will read them (None: read them from the config).
    build_dir
        Where bare executable names are looked up (default: ``build/`` or
        ``$MLBRIDGE_BUILD_DIR``).
    checks
        The check functions to run.

    Raises
    ------
    ConfigError
        Listing every problem found, each naming its file, field and value.
    """
    problems = find_problems(config, namelist, build_dir=build_dir, checks=checks)
    if problems:
        raise ConfigError(problems, config.source)
