"""``transport = "oasis"``: what the launcher checks and writes for OASIS runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from bridge import paths
from bridge.config.coupling import CouplingConfig, write_config_json
from bridge.config.namcouple import (
    NamcoupleConfig,
    NamcoupleError,
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
from bridge.transport.oasis import OasisNotAvailableError, find_shim

# --- a model that couples through OASIS itself --------------------------------------------------


def oasis_backend_env(build_dir: Path) -> dict[str, str]:
    """What the OASIS servers need to find OASIS: the shim of ``build_dir`` (unless pyoasis).

    Raises
    ------
    OasisNotAvailableError
        If neither ``pyoasis`` nor the shim can be found.
    """
    if importlib.util.find_spec("pyoasis") is not None:
        return {}
    return {"MLBRIDGE_OASIS_SHIM": str(find_shim(build_dir))}


def library_run_namcouple(config: CouplingConfig, namelist: NemoNamelist) -> NamcoupleConfig:
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
        If a field name is longer than OASIS keeps.
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
        grid.nx, grid.ny, sent, returned, config.exchanges[0].every, namelist.steps
    )


def check_oasis_transport(ctx: LaunchContext) -> Iterator[str]:
    """``transport = "oasis"`` with a model linking mlbridge: OASIS for the servers, a namcouple."""
    if ctx.config.transport != "oasis" or ctx.config.oasis_only or not ctx.config.exchanges:
        return
    try:
        oasis_backend_env(ctx.build_dir)
    except OasisNotAvailableError as err:
        yield f'transport = "oasis": {err} (or run `mlbridge build --build-dir {ctx.build_dir}`)'
    if ctx.namelist is not None:
        try:
            library_run_namcouple(ctx.config, ctx.namelist)
        except (NamelistError, NamcoupleError) as err:
            yield f'transport = "oasis": no namcouple can be written: {err}'


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
    """Everything that can be checked before an OASIS-only job starts.

    mpirun, the model executable and the work directory (as for every run), the model's own
    namelists, OASIS (the shim or pyoasis), a namcouple supplied by the user (field by field
    against the ``[oasis]`` table), and the closure.
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
    try:
        oasis_backend_env(build_dir)
    except OasisNotAvailableError as err:
        problems.append(f"{err} (or run `mlbridge build --build-dir {build_dir}`)")
    if config.namcouple is not None:
        where = f'oasis.namcouple = "{config.namcouple}"'
        try:
            found = read_namcouple(config.namcouple)
        except NamcoupleError as err:
            problems.append(f"{where}: {err}")
        else:
            differences = compare_namcouple(oasis.namcouple(), found)
            problems += [f"{where} disagrees with [oasis]: {d}" for d in differences]
    problems += _oasis_closure_problems(config, oasis)
    return problems


def prepare_oasis_run_dir(config: CouplingConfig, run_dir: Path) -> None:
    """The model's namelists (under their own names), the coupling file, ``run_config.json``,
    ``namcouple`` (the user's, already checked, or generated) and ``oasis.json``.

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
        write_oasis_files(config.oasis, run_dir)
        if config.namcouple is not None:
            shutil.copyfile(config.namcouple, run_dir / "namcouple")
    except OSError as err:
        raise LaunchError(f"{run_dir}: cannot prepare the run directory: {err}") from None


def write_oasis_files(oasis: OasisCouplingConfig, run_dir: Path) -> Path:
    """Write ``namcouple`` and ``oasis.json`` into ``run_dir`` (before the job starts).

    Returns
    -------
    Path
        ``oasis.json``: the ``[oasis]`` table alone (``python -m bridge.server --oasis``).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_namcouple(oasis.namcouple(), run_dir)
    path = run_dir / paths.OASIS_CONFIG
    path.write_text(json.dumps(oasis.to_mapping(), indent=2) + "\n")
    return path


def oasis_server_program(config_file: Path, run_dir: Path, ranks: int) -> Program:
    """The servers' part of the MPMD line for an OASIS-only model started by hand."""
    return python_program(
        ranks, "bridge.server", "--oasis", str(config_file), "--run-dir", str(run_dir)
    )
