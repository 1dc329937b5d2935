"""The ``[oasis]`` table: a model that couples through OASIS3-MCT and knows nothing of mlbridge.

A model such as a NEMO built with ``key_oasis3`` defines its own OASIS partitions and fields;
there is no handshake. Everything the servers need comes from this table
(:class:`OasisCouplingConfig`): the model component's name, the global grid ``nx x ny x nz``, the
model ranks' boxes (or NEMO's ``jpni x jpnj`` rule), the OASIS names of the fields the model puts
and gets, the closure, the coupling period and run length. Also here: the namcouple of a model
that links the mlbridge library with ``transport = "oasis"`` (:func:`library_namcouple`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING as MISSING_FIELD
from dataclasses import dataclass, field, fields
from typing import Any

from bridge.config.namcouple import (
    OASIS_2_0,
    OASIS_VERSIONS,
    FieldLink,
    NamcoupleConfig,
    NamcoupleError,
    OasisLimits,
)
from bridge.config.schema import Problem, Reader, SchemaError
from bridge.domain.plan import BOUNDARIES, Box, check_tiling, split_1d

ON_NAN = ("abort", "zero")
"""What the servers do with a non-finite value (as ``[[exchange]] on_nan``)."""

HALO_EXCHANGES = ("auto", "oasis", "mpi")
"""How server ranks get their halo (:class:`bridge.transport.oasis_fields.OasisFields`);
``auto``: oasis when closed."""

LIBRARY_MODEL_COMPONENT = "mlbmod"
"""OASIS component name of a model that links the mlbridge library (``transport = "oasis"``)."""

LIBRARY_SERVER_COMPONENT = "mlbsrv"
"""OASIS component name of the servers of such a model."""

LIBRARY_PREFIX = "MLB_"
"""The servers' OASIS name of model field ``X`` is ``MLB_X`` (the model's is ``X``)."""

WIDEST_COMPONENT_NAME = max(v.component_name for v in OASIS_VERSIONS.values())
"""The most characters of a component name any known OASIS version keeps (4/5: 80)."""


class OasisConfigError(SchemaError):
    """The ``[oasis]`` table is incomplete or inconsistent; every problem names its key."""


_TABLE_KEYS = (
    "model_component", "server_component", "nx", "ny", "nz", "boxes", "jpni", "jpnj", "inputs",
    "outputs", "closure", "params", "period_s", "runtime_s", "lag_s", "boundary", "server_prefix",
    "model_grid", "server_grid", "nlogprt", "device", "threads", "halo_exchange", "on_nan",
)  # fmt: skip
"""The keys of the ``[oasis]`` table (:meth:`OasisCouplingConfig.from_mapping`)."""


def _wording(p: Problem) -> str:
    """The ``[oasis]`` wording of a problem: ``[oasis] nz must be at least 1, got 0``."""
    if p.kind == "missing":
        return f"[oasis] {p.path} is required"
    if p.kind == "unknown":
        return f"[oasis] unknown key {p.path!r} (known: {sorted(p.known)})"
    if p.kind == "value":
        return f"[oasis] {p.path} must be {p.bound or p.text}, got {p.value!r}"
    return f"[oasis] {p.path}: {p.text}" if p.path else f"[oasis] {p.text}"


def _model_boxes(r: Reader, table: Mapping[str, Any], nx: Any, ny: Any) -> tuple[Box, ...]:
    """``boxes``, or NEMO's regular split of ``nx x ny`` by ``jpni x jpnj``."""
    if "boxes" in table:
        if "jpni" in table or "jpnj" in table:
            r.note("boxes", "give either boxes or jpni and jpnj, not both")
        try:
            return tuple(Box(*b) for b in table["boxes"])
        except (TypeError, ValueError) as err:
            r.bad("boxes", table["boxes"], f"[[i0, i1, j0, j1], ...] ({err})")
            return ()
    jpni, jpnj = r.integer(table, "", "jpni", 1), r.integer(table, "", "jpnj", 1)
    if None in (nx, ny, jpni, jpnj):
        return ()
    try:
        return tuple(
            Box(i0, i1, j0, j1)
            for (j0, j1) in split_1d(ny, jpnj)
            for (i0, i1) in split_1d(nx, jpni)
        )
    except ValueError as err:
        r.note("", f"jpni x jpnj = {jpni} x {jpnj}: {err}")
        return ()


@dataclass(frozen=True)
class OasisCouplingConfig:
    """How to serve a model that couples through OASIS only (the ``[oasis]`` table).

    Parameters
    ----------
    model_component
        The model's OASIS component name (``oasis_init_comp``; NEMO: ``oceanx``): at most 6
        characters for OASIS3-MCT 2.0, 80 for 4 and 5 (:meth:`version_problems`).
    server_component
        The servers' component name (the same limits).
    nx, ny, nz
        Global grid (T points, the whole grid) and levels the fields have.
    model_boxes
        Interior box of each model rank (global, 0-based, half-open); they must tile the grid.
        In the table: ``boxes = [[i0, i1, j0, j1], ...]``, or ``jpni``, ``jpnj`` for NEMO's regular
        split (larger boxes first, rank ``ri + jpni * rj``).
    inputs
        OASIS field the model puts -> closure input (``{ O_U = "u" }``).
    outputs
        Closure output -> OASIS field the model gets (``{ lap_u = "O_UTND" }``).
    closure
        Closure name (``bridge.server.resolve_closure``: analytic or registry).
    params
        The closure's parameters.
    period_s
        Coupling period in seconds (the namcouple's frequency).
    runtime_s
        Run length in seconds (``$RUNTIME``); the servers serve ``runtime_s // period_s`` exchanges.
    lag_s
        The namcouple ``LAG`` of every link; only 0 for now (outputs of date t come back at t).
    boundary
        Halo rule beyond the grid edge, as :data:`bridge.domain.plan.BOUNDARIES`.
    server_prefix
        The servers' OASIS name of a model field is ``server_prefix + name``.
    model_grid, server_grid
        Grid names written in the namcouple.
    nlogprt
        OASIS log level.
    device, threads
        Where torch closures run.
    halo_exchange
        ``"auto"`` (default), ``"oasis"`` or ``"mpi"``: how server ranks get the cells of their
        halo (see :class:`OasisServer`).

    Raises
    ------
    OasisConfigError
        Listing every inconsistency (boxes that do not tile the grid, a name longer than any
        OASIS version keeps, a period that does not divide the run, ...), each naming the key.
        What one version keeps is checked once the binding is known (:meth:`version_problems`).
    """

    nx: int
    ny: int
    nz: int
    model_boxes: tuple[Box, ...]
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    closure: str
    period_s: int
    runtime_s: int
    model_component: str = "ocnmod"
    server_component: str = "mlbsrv"
    params: Mapping[str, Any] = field(default_factory=dict)
    lag_s: int = 0
    boundary: str = "closed"
    server_prefix: str = "MLB_"
    model_grid: str = "ocnt"
    server_grid: str = "mlbt"
    nlogprt: int = 1
    device: str = "cpu"
    threads: int = 1
    halo_exchange: str = "auto"
    on_nan: str = "abort"

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_boxes", tuple(self.model_boxes))
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "outputs", dict(self.outputs))
        object.__setattr__(self, "params", dict(self.params))
        problems = self._problems()
        if problems:
            raise OasisConfigError(problems)

    def _problems(self) -> list[str]:
        """Every inconsistency of the configuration, one line each (naming the key)."""
        r = Reader()
        rules = (("boundary", BOUNDARIES), ("on_nan", ON_NAN), ("halo_exchange", HALO_EXCHANGES))
        own = {key: getattr(self, key) for key, _ in rules}
        for key, choices in rules:
            r.choice(own, "", key, choices)
        problems = r.texts(_wording)
        try:
            check_tiling(self.nx, self.ny, self.model_boxes, "[oasis] model boxes")
        except (ValueError, TypeError) as err:
            problems.append(str(err))
        if self.halo_exchange == "oasis" and self.boundary != "closed":
            problems.append(
                f"[oasis] halo_exchange = 'oasis' needs boundary = 'closed' (got "
                f"{self.boundary!r}): use 'mpi' or 'auto' for a wrapped halo"
            )
        if self.lag_s != 0:
            problems.append(
                f"[oasis] lag_s = {self.lag_s}: only 0 is supported by the OASIS server for now"
            )
        if self.runtime_s % self.period_s:
            problems.append(
                f"[oasis] period_s = {self.period_s} does not divide runtime_s = {self.runtime_s}"
            )
        if self.model_component == self.server_component:
            problems.append(
                f"[oasis] model_component and server_component are both {self.model_component!r}"
            )
        if not self.server_prefix:
            # OASIS aborts (with exit status 0) on a send/receive pair of one name
            problems.append(
                "[oasis] server_prefix must not be empty: the servers' field names must differ "
                "from the model's"
            )
        limits = ", ".join(f"{v.version}: {v.component_name}" for v in OASIS_VERSIONS.values())
        for key in ("model_component", "server_component"):
            name = getattr(self, key)
            if len(name) > WIDEST_COMPONENT_NAME:
                problems.append(
                    f"[oasis] {key} = {name!r} has {len(name)} characters; no OASIS3-MCT "
                    f"version keeps more than {WIDEST_COMPONENT_NAME} ({limits})"
                )
        widest = max(OASIS_VERSIONS.values(), key=lambda v: v.field_name)
        problems += self._field_name_problems(widest.field_name, widest.version)
        if not problems:
            try:
                self.field_links()
            except NamcoupleError as err:
                problems.append(f"[oasis] {err}")
        return problems

    def _field_name_problems(self, limit: int, version: str) -> list[str]:
        """Every OASIS field name (with the servers' prefix) longer than ``limit``."""
        problems = []
        for what, names in (("inputs", self.inputs), ("outputs", self.outputs.values())):
            for name in names:
                longest = max(len(name), len(self.server_prefix + name))
                if longest > limit:
                    problems.append(
                        f"[oasis] {what}: field {name!r} ({len(name)} characters, "
                        f"{len(self.server_prefix + name)} with the server prefix "
                        f"{self.server_prefix!r}) is longer than the {limit} characters "
                        f"OASIS3-MCT {version} keeps"
                    )
        return problems

    def version_problems(self, oasis: OasisLimits) -> list[str]:
        """What the OASIS version ``oasis`` does not keep: names too long, each with its
        length and the limit, naming the key (empty when it fits).

        The launcher and the servers call it with the limits of the binding they use
        (:attr:`bridge.transport.oasis.OasisBackend.limits`) before anything starts.
        """
        problems = []
        for key in ("model_component", "server_component"):
            name = getattr(self, key)
            if len(name) > oasis.component_name:
                why = (
                    " of a component name ($NBMODEL), so oasis_init_comp would not find it in "
                    "the namcouple"
                    if oasis.nbmodel
                    else " of a component name (oasis_init_comp)"
                )
                problems.append(
                    f"[oasis] {key} = {name!r} has {len(name)} characters; OASIS3-MCT "
                    f"{oasis.version} keeps {oasis.component_name}{why}"
                )
        problems += self._field_name_problems(oasis.field_name, oasis.version)
        if not problems:
            try:
                self.namcouple(oasis)
            except NamcoupleError as err:
                problems.append(f"[oasis] {err}")
        return problems

    # --- the [oasis] table ------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> OasisCouplingConfig:
        """Build from the ``[oasis]`` table of ``coupling.toml`` (or its JSON copy).

        Raises
        ------
        OasisConfigError
            Listing every key that is missing, unknown or has the wrong type or value (then,
            once the table reads, every inconsistency :meth:`__post_init__` finds).
        """
        r = Reader()
        r.known_keys(table, "", _TABLE_KEYS)
        default = {f.name: f.default for f in fields(cls) if f.default is not MISSING_FIELD}
        nx, ny, nz = (r.integer(table, "", key) for key in ("nx", "ny", "nz"))
        strings = (
            "model_component", "server_component", "model_grid", "server_grid", "boundary",
            "device", "halo_exchange", "on_nan",
        )  # fmt: skip
        values = {
            "nx": nx,
            "ny": ny,
            "nz": nz,
            "model_boxes": _model_boxes(r, table, nx, ny),
            "inputs": r.names(table, "", "inputs"),
            "outputs": r.names(table, "", "outputs"),
            "closure": r.string(table, "", "closure", nonempty=True),
            "params": r.sub_table(table, "", "params"),
            "period_s": r.integer(table, "", "period_s"),
            "runtime_s": r.integer(table, "", "runtime_s"),
            "lag_s": r.integer(table, "", "lag_s", default["lag_s"], minimum=0),
            "nlogprt": r.integer(table, "", "nlogprt", default["nlogprt"], minimum=0),
            "threads": r.integer(table, "", "threads", default["threads"]),
            "server_prefix": r.string(table, "", "server_prefix", default["server_prefix"]),
            **{key: r.string(table, "", key, default[key], nonempty=True) for key in strings},
        }
        if r.problems:
            raise OasisConfigError(r.texts(_wording))
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The ``[oasis]`` table (explicit boxes) that :meth:`from_mapping` reads back."""
        return {
            "model_component": self.model_component,
            "server_component": self.server_component,
            "nx": self.nx,
            "ny": self.ny,
            "nz": self.nz,
            "boxes": [[b.i0, b.i1, b.j0, b.j1] for b in self.model_boxes],
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "closure": self.closure,
            "params": dict(self.params),
            "period_s": self.period_s,
            "runtime_s": self.runtime_s,
            "lag_s": self.lag_s,
            "boundary": self.boundary,
            "server_prefix": self.server_prefix,
            "model_grid": self.model_grid,
            "server_grid": self.server_grid,
            "nlogprt": self.nlogprt,
            "device": self.device,
            "threads": self.threads,
            "halo_exchange": self.halo_exchange,
            "on_nan": self.on_nan,
        }

    # --- derived ----------------------------------------------------------------------------

    @property
    def halo_mode(self) -> str:
        """``"oasis"`` or ``"mpi"``: :attr:`halo_exchange` with ``auto`` resolved."""
        if self.halo_exchange == "auto":
            return "oasis" if self.boundary == "closed" else "mpi"
        return self.halo_exchange

    @property
    def exchanges(self) -> int:
        """Number of coupling dates in the run."""
        return self.runtime_s // self.period_s

    def server_name(self, model_field: str) -> str:
        """The servers' OASIS name of a model field."""
        return self.server_prefix + model_field

    def field_links(self) -> tuple[FieldLink, ...]:
        """The namcouple's field links (flat ``nx*ny`` by ``nz`` grids), in order.

        Raises
        ------
        NamcoupleError
            If a name is not a word (blanks, non-ASCII).
        """
        flat = {
            "src_nx": self.nx * self.ny,
            "src_ny": self.nz,
            "dst_nx": self.nx * self.ny,
            "dst_ny": self.nz,
            "freq_s": self.period_s,
            "lag": self.lag_s,
        }
        links = [
            FieldLink(
                src=name,
                dst=self.server_name(name),
                src_grid=self.model_grid,
                dst_grid=self.server_grid,
                restart_file=f"rst_in{k}.nc",
                **flat,
            )
            for k, name in enumerate(self.inputs, start=1)
        ]
        links += [
            FieldLink(
                src=self.server_name(name),
                dst=name,
                src_grid=self.server_grid,
                dst_grid=self.model_grid,
                restart_file=f"rst_out{k}.nc",
                **flat,
            )
            for k, name in enumerate(self.outputs.values(), start=1)
        ]
        return tuple(links)

    def namcouple(self, oasis: OasisLimits = OASIS_2_0) -> NamcoupleConfig:
        """The namcouple this configuration needs, for the OASIS version ``oasis``.

        Raises
        ------
        NamcoupleError
            If a name is longer than ``oasis`` keeps (each with its length and the limit).
        """
        return NamcoupleConfig(
            models=(self.model_component, self.server_component),
            runtime_s=self.runtime_s,
            fields=self.field_links(),
            nlogprt=self.nlogprt,
            oasis=oasis,
        )


def library_namcouple(
    nx: int,
    ny: int,
    sent: Mapping[str, int],
    returned: Mapping[str, int],
    every: int,
    steps: int,
    nlogprt: int = 1,
    oasis: OasisLimits = OASIS_2_0,
) -> NamcoupleConfig:
    """The namcouple of a run whose model links mlbridge with ``transport = "oasis"``.

    Every field the exchanges use is a flat grid of ``nx*ny`` by its levels; model field ``X``
    is ``X`` in the model (component :data:`LIBRARY_MODEL_COMPONENT`) and ``MLB_X`` in the
    servers (:data:`LIBRARY_SERVER_COMPONENT`). OASIS dates count model steps from the first
    exchange (``date = kt - kt0``), so the frequency is ``every`` and ``$RUNTIME`` the number of
    steps of the run: the time step of the model plays no part.

    Parameters
    ----------
    nx, ny
        The global grid.
    sent, returned
        Levels of each model field sent to the servers and received from them.
    every
        Exchange every this many steps.
    steps
        Steps of the run.
    nlogprt
        OASIS log level.
    oasis
        The OASIS version that will read it (the binding the servers use).

    Raises
    ------
    NamcoupleError
        If a name is longer than ``oasis`` keeps (the message names it, its length and the
        limit).
    """
    links = []
    for k, (name, nlev) in enumerate(sent.items(), start=1):
        links.append(
            FieldLink(
                src=name, dst=LIBRARY_PREFIX + name, freq_s=every, src_grid="mlbm",
                dst_grid="mlbs", src_nx=nx * ny, src_ny=nlev, dst_nx=nx * ny, dst_ny=nlev,
                restart_file=f"rst_s{k}.nc",
            )
        )  # fmt: skip
    for k, (name, nlev) in enumerate(returned.items(), start=1):
        links.append(
            FieldLink(
                src=LIBRARY_PREFIX + name, dst=name, freq_s=every, src_grid="mlbs",
                dst_grid="mlbm", src_nx=nx * ny, src_ny=nlev, dst_nx=nx * ny, dst_ny=nlev,
                restart_file=f"rst_r{k}.nc",
            )
        )  # fmt: skip
    return NamcoupleConfig(
        models=(LIBRARY_MODEL_COMPONENT, LIBRARY_SERVER_COMPONENT),
        runtime_s=steps,
        fields=tuple(links),
        nlogprt=nlogprt,
        oasis=oasis,
    )
