"""Pre-launch checks of the registry closures a ``coupling.toml`` names, and their pinning.

An ``[[exchange]]`` whose ``closure`` is not an analytic closure is a registry reference
``name`` (newest version) or ``name@version``. Before any rank starts, :func:`inspect_closures`
resolves each one in the run's registry (``[server] registry``, else ``$MLBRIDGE_HOME``, else
the user's data directory) and refuses the run, naming the exchange, the closure, the file and the
values, when:

* the reference is malformed or not registered (the registered names or versions are listed);
* a registered file is missing or its sha256 differs from the one recorded at registration
  (the file and both hashes are named), or differs from the exchange's pinned ``sha256``;
* its manifest names Python code (an architecture, a python closure factory) that is neither
  shipped by an installed package nor trusted at registration (``--architecture``,
  ``--trust-code``); nothing is imported;
* the artifact cannot be loaded in its manifest's format (``load=True``, the default);
* the exchange's ``inputs`` name a closure input the manifest lacks, or leave a manifest input
  unmapped (inputs the server supplies, such as ``mask``, excepted); its ``outputs`` name an
  output the manifest lacks; or it gives ``params`` (a registry closure's settings live in its
  manifest);
* the closure's halo is larger than the smallest server block of the run's grid.

:func:`pin_closures` then rewrites the configuration written to ``run_config.json``: each
registry exchange gets the resolved ``name@version`` and its artifact's sha256, and
``[server] registry`` the absolute registry directory, so that the servers load exactly what was
checked. :class:`ClosureRecord` is what the run records about each closure (``closures.json``,
the start of the run log, the global attributes of the run's NetCDF files).

The checks have the signature of :mod:`bridge.launch.checks` checks (a function of a
:class:`~bridge.launch.checks.LaunchContext` yielding problems); the launcher runs them after
:data:`bridge.launch.checks.DEFAULT_CHECKS`, in the same
:func:`~bridge.launch.checks.validate_before_launch`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.closures.analytic import ANALYTIC
from bridge.config.coupling import CouplingConfig, ExchangeConfig, exchange_name
from bridge.config.namelist import NamelistError, NemoNamelist
from bridge.domain.plan import server_blocks
from bridge.protocol.handshake import SERVER_SUPPLIED_INPUTS
from bridge.registry.resolve import pinned_hash_mismatch, recorded_hash
from bridge.registry.store import (
    MANIFEST_FILE,
    Registry,
    RegistryError,
    code_grant,
    default_root,
)
from bridge.registry.trust import UntrustedCodeError

if TYPE_CHECKING:  # bridge.launch.checks may import these checks: no import cycle at run time
    from bridge.launch.checks import LaunchContext

#: The environment variable that names the registry directory (read by every rank).
REGISTRY_ENV = "MLBRIDGE_HOME"
#: Prefix of the NetCDF global attributes written by :func:`netcdf_attributes`.
ATTRIBUTE_PREFIX = "mlbridge_"


@dataclass(frozen=True)
class ClosureRecord:
    """What a run uses for one exchange: the closure, resolved and hashed.

    Attributes
    ----------
    exchange : str
        The exchange's name.
    index : int
        Its position among the ``[[exchange]]`` blocks (0-based).
    requested : str
        The ``closure`` value of the coupling file (``gz-toy``, ``gz-toy@1``, ``laplacian``).
    kind : str
        ``registry`` or ``analytic``.
    name, version : str
        The resolved reference parts (version empty for an analytic closure).
    sha256 : str
        sha256 of the artifact (of the stored manifest when the closure has no artifact);
        empty for an analytic closure.
    manifest_sha256 : str
        sha256 of the stored manifest (empty for an analytic closure).
    format : str
        The manifest's ``format`` (``analytic`` for an analytic closure).
    artifact : str
        Absolute path of the registered artifact (empty when none).
    halo : int
        Cells of halo the closure consumes (-1 when unknown).
    registry : str
        The registry directory (empty for an analytic closure).
    code : str
        The Python code the closure runs and why it may (empty when it runs none: analytic,
        TorchScript, torch.export).
    trusted_code : bool
        True when that code runs because the user trusted it at registration
        (``--architecture``, ``--trust-code``), not because an installed package ships it.
    """

    exchange: str
    index: int
    requested: str
    kind: str
    name: str
    version: str = ""
    sha256: str = ""
    manifest_sha256: str = ""
    format: str = "analytic"
    artifact: str = ""
    halo: int = -1
    registry: str = ""
    code: str = ""
    trusted_code: bool = False

    @property
    def ref(self) -> str:
        """``name@version`` (the bare name for an analytic closure)."""
        return f"{self.name}@{self.version}" if self.version else self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (with ``ref``)."""
        return {"ref": self.ref, **dataclasses.asdict(self)}

    def describe(self) -> str:
        """One line for the run log."""
        if self.kind == "analytic":
            return f"exchange {self.exchange!r}: analytic closure {self.name!r}"
        line = (
            f"exchange {self.exchange!r}: closure {self.ref} ({self.format}, halo {self.halo}) "
            f"sha256 {self.sha256} from {self.registry}"
        )
        if self.code:
            line += f"; runs Python code {self.code}"
        return line


@dataclass(frozen=True)
class ClosureCheck:
    """The outcome of :func:`inspect_closures`.

    Attributes
    ----------
    closures : tuple of ClosureRecord
        One per exchange that could be resolved, in exchange order.
    problems : tuple of str
        Why the run must not start (empty: every closure is fit).
    registry : Path
        The registry directory the references were resolved in.
    """

    closures: tuple[ClosureRecord, ...]
    problems: tuple[str, ...]
    registry: Path

    @property
    def uses_registry(self) -> bool:
        """True when some exchange takes its closure from the registry."""
        return any(c.kind == "registry" for c in self.closures)


def registry_root(config: CouplingConfig) -> Path:
    """The registry of a run: ``[server] registry``, else the default (``$MLBRIDGE_HOME``...)."""

    root = config.server.registry if config.server.registry is not None else default_root()
    return Path(root).expanduser().resolve()


def is_analytic(closure: str) -> bool:
    """True when ``closure`` names an analytic closure (resolved before the registry)."""

    return closure in ANALYTIC


def namelist_grid(namelist: NemoNamelist | None) -> tuple[int, int] | None:
    """``(nx, ny)`` of the run's ``&namusr_def``, or None when unknown."""
    if namelist is None:
        return None
    try:
        grid = namelist.grid
    except NamelistError:
        return None
    return int(grid.nx), int(grid.ny)


def smallest_block(nx: int, ny: int, server_ranks: int) -> tuple[int, int]:
    """``(width, height)`` of the server block with the fewest cells along its short side.

    Raises
    ------
    ValueError
        If the grid cannot be split among ``server_ranks`` blocks.
    """
    blocks = server_blocks(nx, ny, server_ranks)
    small = min(blocks, key=lambda b: (min(b.nx, b.ny), b.nx * b.ny))
    return small.nx, small.ny


def inspect_closures(
    config: CouplingConfig,
    grid: tuple[int, int] | None = None,
    *,
    grid_where: str = "the namelist's &namusr_def",
    load: bool = True,
) -> ClosureCheck:
    """Resolve, verify and check every registry closure of ``config`` (nothing is started).

    Parameters
    ----------
    config
        The configuration, overrides applied (``server.ranks`` sets the block size).
    grid
        ``(nx, ny)`` of the global grid; None skips the halo check.
    grid_where
        How to name where ``grid`` comes from, in messages.
    load
        Also load each closure on the CPU, to prove its artifact has the manifest's format.

    Returns
    -------
    ClosureCheck
        The resolved closures and every problem found (see the module docstring).
    """

    root = registry_root(config)
    registry = Registry(root)
    records: list[ClosureRecord] = []
    problems: list[str] = []
    for index, ex in enumerate(config.exchanges):
        name = exchange_name(ex)
        if is_analytic(ex.closure):
            records.append(ClosureRecord(name, index, ex.closure, "analytic", ex.closure))
            continue
        record, found = _inspect_one(registry, ex, index, load)
        problems += found
        if record is None:
            continue
        records.append(record)
        problems += _halo_problems(ex, index, record, grid, grid_where, config.server.ranks)
    return ClosureCheck(tuple(records), tuple(problems), root)


def _where(ex: ExchangeConfig, index: int) -> str:
    return f'exchange[{index}].closure = "{ex.closure}"'


def _inspect_one(
    registry: Any, ex: ExchangeConfig, index: int, load: bool
) -> tuple[ClosureRecord | None, list[str]]:
    """Resolve and check one registry exchange; the record is None when it cannot be resolved."""

    where = _where(ex, index)
    try:
        entry = registry.show(ex.closure)
    except RegistryError as err:
        analytic = ", ".join(sorted(ANALYTIC))
        return None, [f"{where}: not an analytic closure ({analytic}) and not registered: {err}"]
    if entry.ref != ex.closure:
        where = f"{where} ({entry.ref})"
    problems = [f"{where}: {p}" for p in registry.verify(entry.ref)[0].problems]
    manifest = entry.manifest
    if manifest is None:
        problems.append(f"{where}: {entry.problem}")
        return None, problems
    hashes = entry.record.get("sha256", {})
    artifact = entry.artifact
    _, sha = recorded_hash(entry)
    try:
        grant = code_grant(entry)
    except (UntrustedCodeError, RegistryError) as err:
        problems.append(f"{where}: {err}")
        grant = None
    record = ClosureRecord(
        exchange=exchange_name(ex),
        index=index,
        requested=ex.closure,
        kind="registry",
        name=entry.name,
        version=entry.version,
        sha256=sha,
        manifest_sha256=hashes.get(MANIFEST_FILE, ""),
        format=manifest.format,
        artifact=str(artifact.resolve()) if artifact is not None else "",
        halo=manifest.halo,
        registry=str(registry.root.resolve()),
        code=grant.describe() if grant is not None else "",
        trusted_code=grant is not None and grant.user_trusted,
    )
    mismatch = pinned_hash_mismatch(entry, ex.sha256) if ex.sha256 else ""
    if mismatch:
        problems.append(f'exchange[{index}].sha256 = "{ex.sha256}": {entry.ref}: {mismatch}')
    problems += _mapping_problems(ex, index, entry.ref, manifest)
    if load and not problems:
        try:
            registry.load(entry.ref, device="cpu")
        except Exception as err:  # foreign artifacts fail in many ways: report, never crash
            problems.append(
                f"{where}: the artifact {artifact} cannot be loaded as format "
                f"{manifest.format!r}: {type(err).__name__}: {err}"
            )
    return record, problems


def _mapping_problems(ex: ExchangeConfig, index: int, ref: str, manifest: Any) -> list[str]:
    """The exchange's inputs/outputs against the manifest's (both directions for inputs)."""
    problems = []
    spec_inputs = [f.name for f in manifest.inputs]
    spec_outputs = [f.name for f in manifest.outputs]
    mapped = [n for n in spec_inputs if n not in SERVER_SUPPLIED_INPUTS]
    for closure_input, model_field in ex.inputs.items():
        if closure_input in SERVER_SUPPLIED_INPUTS:
            problems.append(
                f'exchange[{index}].inputs.{closure_input} = "{model_field}": closure input '
                f"{closure_input!r} is supplied by the server, it is not mapped to a model field"
            )
        elif closure_input not in spec_inputs:
            problems.append(
                f'exchange[{index}].inputs.{closure_input} = "{model_field}": closure {ref} has '
                f"no input {closure_input!r} (its inputs: {', '.join(spec_inputs)})"
            )
    missing = [n for n in mapped if n not in ex.inputs]
    if missing:
        problems.append(
            f"exchange[{index}].inputs: closure {ref} input(s) {', '.join(missing)} not mapped "
            f"to a model field (its inputs: {', '.join(mapped)}; mapped: "
            f"{', '.join(ex.inputs) or 'none'})"
        )
    for closure_output, model_field in ex.outputs.items():
        if closure_output not in spec_outputs:
            problems.append(
                f'exchange[{index}].outputs.{closure_output} = "{model_field}": closure {ref} '
                f"has no output {closure_output!r} (its outputs: {', '.join(spec_outputs)})"
            )
    if ex.params:
        problems.append(
            f"exchange[{index}].params: closure {ref} comes from the registry and takes no "
            f"params (got {', '.join(sorted(ex.params))}); its settings live in its manifest"
        )
    return problems


def _halo_problems(
    ex: ExchangeConfig,
    index: int,
    record: ClosureRecord,
    grid: tuple[int, int] | None,
    grid_where: str,
    server_ranks: int,
) -> list[str]:
    if grid is None:
        return []
    nx, ny = grid
    try:
        bx, by = smallest_block(nx, ny, server_ranks)
    except ValueError as err:
        return [f"server.ranks = {server_ranks}: {err}"]
    if record.halo > min(bx, by):
        return [
            f"{_where(ex, index)}: closure {record.ref} needs a halo of {record.halo} cells, "
            f"larger than the smallest server block ({bx} x {by} cells: {nx} x {ny} grid of "
            f"{grid_where} split among server.ranks = {server_ranks}); use fewer server ranks"
        ]
    return []


def model_grid(ctx: LaunchContext) -> tuple[tuple[int, int] | None, str]:
    """``(nx, ny)`` of the run (NEMO kind: the namelist; generic: ``[model] nx, ny``) and where
    it comes from, for messages."""
    if not ctx.config.model.nemo:
        return ctx.config.model.grid, "[model] nx, ny"
    nml = ctx.namelist
    where = "&namusr_def" if nml is None else nml.where("namusr_def")
    return namelist_grid(nml), where


def check_registry_closures(ctx: LaunchContext) -> Iterator[str]:
    """Registry closures exist, are intact, load, fit their exchange and the server blocks."""
    grid, where = model_grid(ctx)
    yield from inspect_closures(ctx.config, grid, grid_where=where).problems


class RegistryClosureCheck:
    """:func:`check_registry_closures` that keeps what it resolved (for pinning).

    An instance is a check for :func:`bridge.launch.checks.validate_before_launch`; after the
    validation, :attr:`result` holds the resolved closures.

    Parameters
    ----------
    load
        Load each closure on the CPU during the check (proves its format).
    """

    def __init__(self, *, load: bool = True) -> None:
        self.load = load
        self.result: ClosureCheck | None = None

    def __call__(self, ctx: LaunchContext) -> Iterator[str]:
        grid, where = model_grid(ctx)
        self.result = inspect_closures(ctx.config, grid, grid_where=where, load=self.load)
        yield from self.result.problems


#: Checks to run after :data:`bridge.launch.checks.DEFAULT_CHECKS`.
REGISTRY_CHECKS = (check_registry_closures,)


def pin_closures(config: CouplingConfig, check: ClosureCheck) -> CouplingConfig:
    """The configuration the servers get: registry references resolved and hashes pinned.

    Each registry exchange's ``closure`` becomes ``name@version`` and its ``sha256`` the
    artifact's; ``server.registry`` becomes the registry directory (when a registry closure is
    used).
    """
    by_index = {c.index: c for c in check.closures if c.kind == "registry"}
    if not by_index:
        return config
    exchanges = tuple(
        dataclasses.replace(ex, closure=by_index[i].ref, sha256=by_index[i].sha256)
        if i in by_index
        else ex
        for i, ex in enumerate(config.exchanges)
    )
    server = dataclasses.replace(config.server, registry=check.registry)
    return dataclasses.replace(config, exchanges=exchanges, server=server)


def closures_document(check: ClosureCheck) -> dict[str, Any]:
    """The content of ``closures.json``: the registry and one entry per exchange."""
    return {
        "registry": str(check.registry) if check.uses_registry else "",
        "closures": [c.to_dict() for c in check.closures],
    }


def write_closures_json(check: ClosureCheck, path: Path) -> Path:
    """Write :func:`closures_document` as indented JSON; return the path.

    Raises
    ------
    OSError
        If the file cannot be written.
    """
    path.write_text(json.dumps(closures_document(check), indent=2) + "\n", encoding="utf-8")
    return path


def netcdf_attributes(closures: Sequence[ClosureRecord]) -> dict[str, str]:
    """Global attributes naming the closures of a run.

    ``mlbridge_closures`` lists ``exchange=name@version`` for every exchange; for each exchange
    ``mlbridge_closure_<exchange>_name``, ``_version``, ``_sha256`` (the exchange's name with
    every character but letters, digits and ``_`` replaced by ``_``).
    """
    attrs = {
        f"{ATTRIBUTE_PREFIX}closures": "; ".join(f"{c.exchange}={c.ref}" for c in closures),
    }
    for c in closures:
        key = re.sub(r"\W", "_", c.exchange, flags=re.ASCII)
        base = f"{ATTRIBUTE_PREFIX}closure_{key}_"
        attrs[base + "name"] = c.name
        attrs[base + "version"] = c.version
        attrs[base + "sha256"] = c.sha256
    return attrs
