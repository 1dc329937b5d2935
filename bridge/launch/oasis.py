"""``transport = "oasis"``: what the launcher checks and writes for OASIS runs.

The launcher decides which OASIS binding the servers will use (:func:`choose_oasis_backend`),
checks every name against that binding's OASIS version, writes the namcouple for it, and pins
it for the servers (``$MLBRIDGE_OASIS_BACKEND``), so what was checked is what runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge import paths
from bridge.config.coupling import CouplingConfig, write_config_json
from bridge.config.namcouple import (
    OASIS_2_0,
    OASIS_4_5,
    NamcoupleConfig,
    NamcoupleError,
    OasisLimits,
    compare_namcouple,
    read_namcouple,
    write_namcouple,
)
from bridge.config.namelist import NamelistError, NemoNamelist
from bridge.config.oasis import OasisCouplingConfig, library_namcouple
from bridge.domain.plan import plan_routes, server_blocks
from bridge.launch.checks import (
    LaunchContext,
    check_executable,
    check_mpirun,
    check_workdir,
)
from bridge.launch.mpiexec import (
    Program,
    python_program,
)
from bridge.launch.rundir import LaunchError
from bridge.registry.resolve import resolve_closure
from bridge.transport.oasis import (
    BACKEND_ENV,
    BACKEND_KINDS,
    SHIM_ENV,
    OasisNotAvailableError,
    find_shim,
)

PROBE_TIMEOUT_S = 60.0
"""How long importing pyoasis in a child interpreter may take before it counts as failed."""

# --- which binding the servers will use --------------------------------------------------------


def probe_pyoasis(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Whether the servers can ``import pyoasis``: None when they can, else why not.

    ``importlib.util.find_spec`` only finds the package; importing it also loads
    ``liboasis.cbind.so``, which fails with ``OSError`` when that library is not on the loader
    path. The import is tried in a child interpreter with the environment the servers inherit
    (MPI left uninitialised there, ``MPI4PY_RC_INITIALIZE=0``), so the launcher neither starts
    MPI nor takes pyoasis's ``sys.excepthook``.
    """
    if importlib.util.find_spec("pyoasis") is None:
        return "pyoasis is not installed (no module named 'pyoasis')"
    env = {**os.environ, "MPI4PY_RC_INITIALIZE": "0"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import pyoasis"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"importing pyoasis took more than {timeout_s:g} s"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return f"pyoasis cannot be imported ({lines[-1] if lines else f'status {proc.returncode}'})"


@dataclass(frozen=True)
class OasisBackendChoice:
    """The OASIS binding the servers of a run will use, decided before launch.

    Attributes
    ----------
    kind
        ``"pyoasis"`` or ``"shim"``.
    limits
        What its OASIS version keeps: :data:`~bridge.config.namcouple.OASIS_4_5` for pyoasis
        (it reports no version and exists from 4 on), :data:`~bridge.config.namcouple.OASIS_2_0`
        for the shim.
    shim
        The shim library (``kind == "shim"``).
    why_not_pyoasis
        Why pyoasis was not taken (None when it was, or when the shim was pinned).
    """

    kind: str
    limits: OasisLimits
    shim: Path | None = None
    why_not_pyoasis: str | None = field(default=None, compare=False)

    @property
    def env(self) -> dict[str, str]:
        """What the servers need in their environment to open this binding (and no other)."""
        env = {BACKEND_ENV: self.kind}
        if self.shim is not None:
            env[SHIM_ENV] = str(self.shim)
        return env


def choose_oasis_backend(
    build_dir: Path, probe: Callable[[], str | None] = probe_pyoasis
) -> OasisBackendChoice:
    """pyoasis when the servers can import it, else the shim of ``build_dir``.

    ``$MLBRIDGE_OASIS_BACKEND`` (``pyoasis`` or ``shim``) pins the choice.

    Raises
    ------
    OasisNotAvailableError
        If the pinned binding, or neither, can be found; the message says why for each.
    """
    pinned = os.environ.get(BACKEND_ENV, "").strip() or "auto"
    if pinned not in ("auto", *BACKEND_KINDS):
        raise OasisNotAvailableError(
            f"{BACKEND_ENV}={pinned!r}: expected one of auto, {', '.join(BACKEND_KINDS)}"
        )
    why_not = None
    if pinned != "shim":
        why_not = probe()
        if why_not is None:
            return OasisBackendChoice("pyoasis", OASIS_4_5)
        if pinned == "pyoasis":
            raise OasisNotAvailableError(f"{BACKEND_ENV}=pyoasis, but {why_not}")
    try:
        shim = find_shim(build_dir)
    except OasisNotAvailableError as err:
        raise OasisNotAvailableError(f"{err} ({why_not})" if why_not else str(err)) from None
    return OasisBackendChoice("shim", OASIS_2_0, shim, why_not)


def oasis_backend_env(build_dir: Path) -> dict[str, str]:
    """What the OASIS servers need to find OASIS (:attr:`OasisBackendChoice.env`).

    Raises
    ------
    OasisNotAvailableError
        If neither ``pyoasis`` nor the shim can be used.
    """
    return choose_oasis_backend(build_dir).env


def library_run_namcouple(
    config: CouplingConfig, namelist: NemoNamelist, oasis: OasisLimits = OASIS_2_0
) -> NamcoupleConfig:
    """The namcouple of a toy-style model linking mlbridge, run with ``transport = "oasis"``.

    The fields are those the exchanges map; their levels come from ``&nammlb nn_mlb_lev`` (sent
    fields listed in ``cn_mlb_snd`` with a level count above 0), else all the levels of the grid
    (``&namusr_def``); the grid and the number of steps from the namelists. The servers check it
    against what the model ranks report at the handshake, before OASIS starts.

    Raises
    ------
    NamelistError
        If the grid or the run length cannot be read from the namelists.
    NamcoupleError
        If a field name is longer than the OASIS version ``oasis`` keeps.
    """
    grid = namelist.grid
    levels: dict[str, int] = {}
    if namelist.has("nammlb", "cn_mlb_snd") and namelist.has("nammlb", "nn_mlb_lev"):
        names, counts = namelist.get("nammlb", "cn_mlb_snd"), namelist.get("nammlb", "nn_mlb_lev")
        names = names if isinstance(names, list) else [names]
        counts = counts if isinstance(counts, list) else [counts]
        for name, count in zip(names, counts, strict=False):
            if isinstance(name, str) and name.strip() and isinstance(count, int) and count > 0:
                levels[name.strip()] = count
    sent = {f: levels.get(f, grid.nz) for ex in config.exchanges for f in ex.inputs.values()}
    returned = {f: grid.nz for ex in config.exchanges for f in ex.outputs.values()}
    return library_namcouple(
        grid.nx, grid.ny, sent, returned, config.exchanges[0].every, namelist.steps, oasis=oasis
    )


class OasisTransportCheck:
    """``transport = "oasis"`` with a model linking mlbridge: OASIS for the servers, and a
    namcouple for their OASIS version (a check of :mod:`bridge.launch.checks`).

    After it ran, :attr:`choice` is the binding the servers will use (None when there is none
    or the run does not use OASIS).
    """

    def __init__(self) -> None:
        self.choice: OasisBackendChoice | None = None

    def __call__(self, ctx: LaunchContext) -> Iterator[str]:
        if ctx.config.transport != "oasis" or ctx.config.oasis_only or not ctx.config.exchanges:
            return
        try:
            self.choice = choose_oasis_backend(ctx.build_dir)
        except OasisNotAvailableError as err:
            yield (
                f'transport = "oasis": {err} (or run `mlbridge build --build-dir {ctx.build_dir}`)'
            )
        limits = self.choice.limits if self.choice is not None else OASIS_2_0
        if ctx.namelist is not None:
            try:
                library_run_namcouple(ctx.config, ctx.namelist, limits)
            except (NamelistError, NamcoupleError) as err:
                yield f'transport = "oasis": no namcouple can be written: {err}'


def check_oasis_transport(ctx: LaunchContext) -> Iterator[str]:
    """:class:`OasisTransportCheck` as a plain check function."""
    return OasisTransportCheck()(ctx)


def _oasis_closure_problems(config: CouplingConfig, oasis: OasisCouplingConfig) -> list[str]:
    """The closure exists, has the mapped inputs and outputs, and fits the server blocks."""
    try:
        closure = resolve_closure(
            oasis.closure, oasis.params, "cpu", 1, inputs=tuple(oasis.inputs.values())
        )
    except Exception as err:  # a registry closure can fail to load in many ways
        return [f"oasis.closure = {oasis.closure!r}: {err}"]
    problems = []
    returned = [f.name for f in closure.spec.outputs]
    for output in oasis.outputs:
        if output not in returned:
            problems.append(
                f"oasis.outputs.{output}: closure {oasis.closure!r} has no output {output!r} "
                f"(it returns {', '.join(returned)})"
            )
    needed = {f.name for f in closure.spec.inputs} - {"mask"}
    mapped = set(oasis.inputs.values())
    for name in sorted(needed - mapped):
        problems.append(
            f"oasis.inputs: closure {oasis.closure!r} needs input {name!r}, which no OASIS "
            f"field feeds (inputs map {', '.join(sorted(mapped))})"
        )
    for name in sorted(mapped - needed):
        problems.append(
            f"oasis.inputs: {name!r} is not an input of closure {oasis.closure!r} "
            f"(it takes {', '.join(sorted(needed))})"
        )
    try:
        blocks = server_blocks(oasis.nx, oasis.ny, config.server.ranks)
        if oasis.halo_mode == "mpi":
            plan_routes(oasis.nx, oasis.ny, blocks, blocks, closure.spec.halo, oasis.boundary)
    except ValueError as err:
        problems.append(
            f"server.ranks = {config.server.ranks} on the {oasis.nx} x {oasis.ny} grid of "
            f"[oasis] (closure halo {closure.spec.halo}): {err}"
        )
    return problems


def find_oasis_problems(config: CouplingConfig, build_dir: Path) -> list[str]:
    """Everything that can be checked before an OASIS-only job starts (:func:`check_oasis_only`)."""
    return check_oasis_only(config, build_dir)[1]


def check_oasis_only(
    config: CouplingConfig, build_dir: Path
) -> tuple[OasisBackendChoice | None, list[str]]:
    """The OASIS binding the servers will use, and every problem found before start.

    mpirun, the model executable and the work directory (as for every run), the model's own
    namelists, OASIS (pyoasis or the shim, :func:`choose_oasis_backend`), every name against
    what that binding's OASIS version keeps, a namcouple supplied by the user (read for that
    version, field by field against the ``[oasis]`` table), and the closure.
    """
    oasis = config.oasis
    assert oasis is not None
    ctx = LaunchContext(config, None, None, build_dir)
    problems = [p for check in (check_mpirun, check_executable, check_workdir) for p in check(ctx)]
    names: dict[str, str] = {}
    for key in ("namelist_ref", "namelist_cfg"):
        path = getattr(config.model, key)
        if path is None:
            continue
        if not path.is_file():
            problems.append(f'model.{key} = "{path}": file not found')
        elif path.name in names or path.name in ("namcouple", paths.OASIS_CONFIG):
            problems.append(
                f'model.{key} = "{path}": the run directory already has a file {path.name!r} '
                f"({names.get(path.name, 'written by mlbridge')})"
            )
        names[path.name] = f"model.{key}"
    backend = None
    try:
        backend = choose_oasis_backend(build_dir)
    except OasisNotAvailableError as err:
        problems.append(f"{err} (or run `mlbridge build --build-dir {build_dir}`)")
    if backend is not None:  # names and a namcouple are checked for the version that will run
        named = oasis.version_problems(backend.limits)
        problems += [f"{p} (the {backend.kind} binding)" for p in named]
        if config.namcouple is not None and not named:
            problems += _user_namcouple_problems(oasis, config.namcouple, backend.limits)
    problems += _oasis_closure_problems(config, oasis)
    return backend, problems


def _user_namcouple_problems(
    oasis: OasisCouplingConfig, path: Path, limits: OasisLimits
) -> list[str]:
    """A namcouple of the user's own, read for the OASIS version ``limits``, against the table."""
    where = f'oasis.namcouple = "{path}"'
    try:
        found = read_namcouple(path, limits)
    except NamcoupleError as err:
        return [f"{where}: {err}"]
    differences = compare_namcouple(oasis.namcouple(limits), found)
    return [f"{where} disagrees with [oasis]: {d}" for d in differences]


def prepare_oasis_run_dir(
    config: CouplingConfig, run_dir: Path, oasis: OasisLimits = OASIS_2_0
) -> None:
    """The model's namelists (under their own names), the coupling file, ``run_config.json``,
    ``namcouple`` (the user's, already checked, or generated for the OASIS version ``oasis``)
    and ``oasis.json``.

    Raises
    ------
    LaunchError
        If a file cannot be copied or written.
    """
    assert config.oasis is not None
    try:
        for path in (config.model.namelist_ref, config.model.namelist_cfg):
            if path is not None:
                shutil.copyfile(path, run_dir / path.name)
        if config.source is not None and config.source.suffix == ".toml":
            shutil.copyfile(config.source, run_dir / "coupling.toml")
        write_config_json(config, run_dir / "run_config.json")
        write_oasis_files(config.oasis, run_dir, oasis)
        if config.namcouple is not None:
            shutil.copyfile(config.namcouple, run_dir / "namcouple")
    except OSError as err:
        raise LaunchError(f"{run_dir}: cannot prepare the run directory: {err}") from None


def write_oasis_files(
    oasis: OasisCouplingConfig, run_dir: Path, limits: OasisLimits = OASIS_2_0
) -> Path:
    """Write ``namcouple`` (for the OASIS version ``limits``) and ``oasis.json`` into
    ``run_dir`` (before the job starts).

    Returns
    -------
    Path
        ``oasis.json``: the ``[oasis]`` table alone (``python -m bridge.server --oasis``).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_namcouple(oasis.namcouple(limits), run_dir)
    path = run_dir / paths.OASIS_CONFIG
    path.write_text(json.dumps(oasis.to_mapping(), indent=2) + "\n")
    return path


def oasis_server_program(config_file: Path, run_dir: Path, ranks: int) -> Program:
    """The servers' part of the MPMD line for an OASIS-only model started by hand."""
    return python_program(
        ranks, "bridge.server", "--oasis", str(config_file), "--run-dir", str(run_dir)
    )
