"""The handshake: what the model ranks report at ``mlb_enddef`` and how server rank 0 answers.

Each model rank sends a text report, one item per line::

    mlbridge-report 1
    rank 0
    grid 40 30                      global grid nx ny
    box 0 0 20 30                   interior box: i0 j0 (0-based) nx_loc ny_loc
    mask 1                          1: a land mask message follows
    transports mpi oasis            what the library can move fields with (absent: mpi)
    faces east north                where U(i) and V(j) sit: east = i+1/2 (NEMO), west = i-1/2;
                                    north = j+1/2, south = j-1/2 (absent: east north)
    restart 1                       the run continues another from a restart, schedule origin 1
                                    (mlb_def_restart; absent: a run from the start)
    field u 3 send 1 float64 U      name levels direction every dtype point (in mlb_def_field
    field u_tend 3 recv 1 float64 U order; point T, U, V or F, absent: not declared, taken as T
                                    and not checked against the closure's)

Server rank 0 checks the reports against each other, the run's namelist grid, the configured
exchanges and the closures' specs (:func:`check_reports`, pure), and answers every model rank
with either an error text naming the field and both values, or its route table
(:func:`encode_reply`), whose last word names the transport of the fields (0 ``mpi``, 1
``oasis``). A restarted run is checked by :func:`check_restart`: what the servers cannot
continue exactly is refused. Everything here is pure Python, testable without MPI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bridge.closures.base import ClosureSpec
from bridge.config.coupling import (
    ExchangeConfig,
    exchange_name,
    model_schedule,
    schedules_differ,
    sent_fields,
)
from bridge.domain.plan import Box, Plan, check_tiling
from bridge.domain.stagger import NEMO_FACES, describe_faces, parse_faces
from bridge.wire import PROTOCOL_VERSION

#: The last word of the reply: how the fields travel after the handshake.
TRANSPORT_CODES: dict[str, int] = {"mpi": 0, "oasis": 1}

#: Closure inputs the server fills itself (never mapped in ``coupling.toml``).
SERVER_SUPPLIED_INPUTS: tuple[str, ...] = ("mask",)


class HandshakeError(ValueError):
    """A report is malformed or disagrees with the configuration; the message says how."""


@dataclass(frozen=True)
class FieldDecl:
    """One field as the model declared it with ``mlb_def_field``."""

    name: str
    nlev: int
    direction: str  # "send" (model -> servers) or "recv"
    every: int
    dtype: str
    point: str = ""  # Arakawa C-grid point T, U, V or F; "": not declared (taken as T, unchecked)

    @property
    def at(self) -> str:
        """The point the field is handled on (T when not declared)."""
        return self.point or "T"

    def describe(self) -> str:
        """``u (send, 3 levels, every 1, float64)``."""
        return (
            f"{self.name} ({self.direction}, {self.nlev} levels, every {self.every}, {self.dtype})"
        )


@dataclass(frozen=True)
class RankReport:
    """The handshake report of one model rank."""

    rank: int
    nx: int
    ny: int
    box: Box
    has_mask: bool
    fields: tuple[FieldDecl, ...]
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    transports: tuple[str, ...] = ("mpi",)
    restart_origin: int | None = None  # mlb_def_restart: the schedule's origin; None: no restart
    faces: tuple[str, str] = NEMO_FACES  # where U(i), V(j) sit (bridge.domain.stagger)

    def field(self, name: str) -> FieldDecl | None:
        """The declared field ``name``, or None."""
        return next((f for f in self.fields if f.name == name), None)


def parse_report(text: str, source: str = "a model rank") -> RankReport:
    """Parse a report (see the module docstring).

    Raises
    ------
    HandshakeError
        If a line is malformed or an item is missing, naming ``source`` and the line.
    """
    items: dict[str, list[str]] = {}
    fields: list[FieldDecl] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "field":
                name, nlev, direction, every, dtype = words[1:6]
                point = words[6] if len(words) > 6 else ""
                if direction not in ("send", "recv") or point not in ("", "T", "U", "V", "F"):
                    raise ValueError(direction)
                fields.append(FieldDecl(name, int(nlev), direction, int(every), dtype, point))
            else:
                items[words[0]] = words[1:]
        except ValueError:
            raise HandshakeError(f"{source}: malformed report line {number}: {line!r}") from None
    try:
        if items["mlbridge-report"] != [str(PROTOCOL_VERSION)]:
            raise HandshakeError(
                f"{source}: protocol version {items['mlbridge-report']}, the servers speak "
                f"{PROTOCOL_VERSION}: rebuild the model against this mlbridge"
            )
        rank = int(items["rank"][0])
        nx, ny = (int(v) for v in items["grid"][:2])
        i0, j0, nxl, nyl = (int(v) for v in items["box"][:4])
        has_mask = items.get("mask", ["0"])[0] == "1"
        transports = tuple(items.get("transports", ["mpi"]))
        origin = int(items["restart"][0]) if "restart" in items else None
        faces = parse_faces(items["faces"], "faces") if "faces" in items else NEMO_FACES
    except (KeyError, IndexError, ValueError):
        raise HandshakeError(f"{source}: incomplete handshake report:\n{text}") from None
    box = Box(i0, i0 + nxl, j0, j0 + nyl)
    return RankReport(
        rank,
        nx,
        ny,
        box,
        has_mask,
        tuple(fields),
        transports=transports,
        restart_origin=origin,
        faces=faces,
    )


def check_reports(
    reports: Sequence[RankReport],
    exchanges: Sequence[ExchangeConfig],
    specs: Mapping[str, ClosureSpec],
    namelist_grid: tuple[int, int] | None = None,
    namelist_where: str = "the namelist",
) -> list[str]:
    """Every disagreement between the reports, the configuration and the closures.

    Parameters
    ----------
    reports
        One report per model rank, in model-rank order.
    exchanges
        The configured exchanges.
    specs
        Closure spec of each exchange, keyed by :func:`exchange_name`.
    namelist_grid
        ``(nx, ny)`` from the run's namelist, when known.
    namelist_where
        How to name the namelist in messages.

    Returns
    -------
    list of str
        Problems, each naming the field (or rank) and both values; empty when all agree.
    """
    problems: list[str] = []
    if not reports:
        return ["no model rank reported"]
    first = reports[0]
    for rep in reports[1:]:
        if (rep.nx, rep.ny) != (first.nx, first.ny):
            problems.append(
                f"grid: model rank {first.rank} reports {first.nx} x {first.ny}, "
                f"model rank {rep.rank} reports {rep.nx} x {rep.ny}"
            )
        if rep.faces != first.faces:
            problems.append(
                f"faces: model rank {first.rank} reports {describe_faces(first.faces)}, model "
                f"rank {rep.rank} reports {describe_faces(rep.faces)}"
            )
        if rep.fields != first.fields:
            mine = {f.name: f for f in first.fields}
            theirs = {f.name: f for f in rep.fields}
            for name in sorted(set(mine) | set(theirs)):
                a, b = mine.get(name), theirs.get(name)
                if a != b:
                    problems.append(
                        f"field {name}: model rank {first.rank} declares "
                        f"{a.describe() if a else 'nothing'}, model rank {rep.rank} declares "
                        f"{b.describe() if b else 'nothing'}"
                    )
            if not problems and [f.name for f in rep.fields] != [f.name for f in first.fields]:
                problems.append(
                    f"fields: model ranks {first.rank} and {rep.rank} define the same fields in "
                    "another order; call mlb_def_field in the same order on every rank"
                )
    if namelist_grid is not None and (first.nx, first.ny) != tuple(namelist_grid):
        problems.append(
            f"grid: {namelist_where} gives {namelist_grid[0]} x {namelist_grid[1]}, "
            f"model rank {first.rank} reports {first.nx} x {first.ny} to mlb_def_grid"
        )
    if not problems:
        try:
            check_tiling(first.nx, first.ny, [r.box for r in reports], "model boxes")
        except ValueError as err:
            problems.append(str(err))

    declared = {f.name: f for f in first.fields}
    listing = ", ".join(f"{f.name} ({f.direction})" for f in first.fields) or "none"
    produced: dict[str, ExchangeConfig] = {}
    every, _ = model_schedule(exchanges)
    needs = (
        f"the configuration says every {exchanges[0].every}"
        if exchanges and not schedules_differ(exchanges)
        else f"the exchanges' schedules need every {every} (the greatest common divisor of their "
        "every)"
    )
    for ex in exchanges:
        name = exchange_name(ex)
        spec = specs.get(name)
        used: list[FieldDecl] = []
        roles = [("input", ex.inputs, "send"), ("output", ex.outputs, "recv")]
        if ex.train is not None:  # training targets: fields the model sends, keyed by output
            roles.append(("target", ex.train.target, "send"))
        for role, mapping, direction in roles:
            spec_names = (
                () if spec is None else (spec.input_names if role == "input" else spec.output_names)
            )
            point_role = (
                "output" if role == "target" else role
            )  # a target sits on its output's point
            for closure_name, model_name in mapping.items():
                if spec is not None and closure_name not in spec_names:
                    problems.append(
                        f"exchange {name!r}: closure {spec.name!r} has no {role} "
                        f"{closure_name!r} (its {role}s: {', '.join(spec_names)})"
                    )
                decl = declared.get(model_name)
                if decl is None:
                    problems.append(
                        f"exchange {name!r}: {role} {closure_name!r} is mapped to model field "
                        f"{model_name!r}, which the model does not define (it defines: {listing})"
                    )
                    continue
                if decl.direction != direction:
                    problems.append(
                        f"exchange {name!r}: model field {model_name!r} is declared "
                        f"{decl.direction} by the model, the configuration uses it as a closure "
                        f"{role} (needs {direction})"
                    )
                wanted = _spec_point(spec, point_role, closure_name)
                if spec is not None and wanted is not None and decl.point and decl.point != wanted:
                    problems.append(
                        f"exchange {name!r}: model field {model_name!r} is on the "
                        f"{decl.point} point of the model ({describe_faces(first.faces)}), "
                        f"closure {spec.name!r} takes its {role} {closure_name!r} on the {wanted} "
                        f"point ({describe_faces(spec.faces)}): declare the field with grid = "
                        f"'{wanted}' (mlb_def_field) or map it to another closure {role}"
                    )
                if decl.every != every:
                    problems.append(
                        f"exchange {name!r}: model field {model_name!r} is declared every "
                        f"{decl.every} steps by the model, {needs}"
                    )
                if role == "output":
                    other = produced.get(model_name)
                    if other is not None and not (ex.combine == other.combine == "add"):
                        problems.append(
                            f"model field {model_name!r} is produced by two exchanges: "
                            f"{exchange_name(other)!r} and {name!r} (combine = 'add' in both "
                            "adds their outputs)"
                        )
                    produced.setdefault(model_name, ex)
                used.append(decl)
        if spec is not None:
            missing = [
                n
                for n in spec.input_names
                if n not in ex.inputs and n not in SERVER_SUPPLIED_INPUTS
            ]
            if missing:
                problems.append(
                    f"exchange {name!r}: closure inputs {missing} are not mapped to model fields"
                )
        surface = _surface_fields(spec, ex)
        for decl in used:
            if decl.name in surface and decl.nlev != 1:
                problems.append(
                    f"exchange {name!r}: model field {decl.name!r} has {decl.nlev} levels, "
                    f"closure {spec.name if spec else '?'!r} takes it as the surface field "
                    f"{surface[decl.name]!r} (levels = 1): declare it with nlev = 1"
                )
        full = [decl for decl in used if decl.name not in surface]
        for decl in full[1:]:
            if decl.nlev != full[0].nlev:
                problems.append(
                    f"exchange {name!r}: model field {decl.name!r} has {decl.nlev} levels, "
                    f"model field {full[0].name!r} has {full[0].nlev} (one closure call takes "
                    "all levels of all its fields at once; only surface fields, levels = 1, "
                    "may differ)"
                )
    return problems


def _surface_fields(spec: ClosureSpec | None, ex: ExchangeConfig) -> dict[str, str]:
    """Model fields the closure takes or gives as surface fields (levels = 1): model -> closure."""
    if spec is None:
        return {}
    out: dict[str, str] = {}
    for role, mapping in (("input", ex.inputs), ("output", ex.outputs)):
        for closure_name, model_name in mapping.items():
            field = spec.field(role, closure_name)
            if field is not None and field.surface:
                out[model_name] = closure_name
    return out


def _spec_point(spec: ClosureSpec | None, role: str, name: str) -> str | None:
    """The C-grid point of closure input or output ``name`` (None: no spec or no such field)."""
    if spec is None:
        return None
    fields = spec.inputs if role == "input" else spec.outputs
    return next((f.grid for f in fields if f.name == name), None)


def check_restart(
    reports: Sequence[RankReport],
    exchanges: Sequence[ExchangeConfig],
    specs: Mapping[str, ClosureSpec],
    transport: str,
    nemo: bool = True,
) -> list[str]:
    """What keeps a restarted run (``restart`` in the reports) from continuing bit for bit.

    The model saves and gives back the coupling's own state (the schedule's origin, the
    outputs held and in flight); what it cannot give back is refused here, before the first
    step: a closure that keeps state between calls (``ClosureSpec.stateful``), and
    ``transport = "oasis"`` unless every exchange is ``every = 1, lag = 0`` (OASIS keeps the
    outputs in flight and counts its dates from each run's first step). The model can start
    the coupling cold instead (no ``mlb_def_restart``; the toy: ``&nammlb ln_mlb_rst =
    .false.``), which it says with a warning. ``nemo``: name the toy's namelist entry in the
    hint (models with NEMO-style namelists only).

    Returns
    -------
    list of str
        Problems, each naming the exchange or rank; empty when the run can continue exactly
        (or is no restart).
    """
    origins = {r.rank: r.restart_origin for r in reports}
    if all(o is None for o in origins.values()):
        return []
    if len(set(origins.values())) > 1:
        return [f"restart: the model ranks give other schedule origins {origins} (rank: origin)"]
    origin = next(iter(origins.values()))
    toy = "; toy_nemo: &nammlb ln_mlb_rst = .false." if nemo else ""
    cold = (
        f"or start the coupling cold (the model does not call mlb_def_restart{toy}), "
        "accepting a run that differs from one done in one go"
    )
    problems: list[str] = []
    if schedules_differ(exchanges):
        listing = ", ".join(f"{exchange_name(e)!r} every {e.every} lag {e.lag}" for e in exchanges)
        problems.append(
            f"exchanges on their own schedules ({listing}) and the model restarts (the schedule's "
            f"origin is step {origin}): the servers hold each exchange's outputs between its due "
            f"steps, which a restart does not save. Put every exchange on one schedule, {cold}"
        )
    for ex in exchanges:
        name = exchange_name(ex)
        spec = specs.get(name)
        if spec is not None and spec.stateful:
            problems.append(
                f"exchange {name!r}: closure {spec.name!r} keeps state between calls (stateful = "
                f"true in its manifest) that a restart cannot save, and the model restarts (the "
                f"schedule's origin is step {origin}): the run would differ from one done in one "
                f"go. Use a stateless closure, {cold}"
            )
        if transport == "oasis" and (ex.every, ex.lag) != (1, 0):
            problems.append(
                f"exchange {name!r}: transport = 'oasis' with every = {ex.every}, lag = {ex.lag} "
                f"does not continue a restarted run exactly (OASIS keeps the outputs in flight "
                f"and counts its dates from each run's first step): use transport = 'mpi', {cold}"
            )
    return problems


def active_flags(fields: Sequence[FieldDecl], exchanges: Sequence[ExchangeConfig]) -> list[int]:
    """1 for each declared field some exchange uses, else 0 (the model skips those)."""
    used = {m for ex in exchanges for m in (*sent_fields(ex), *ex.outputs.values())}
    return [1 if f.name in used else 0 for f in fields]


def encode_reply(
    plan: Plan,
    rank: int,
    server_world_ranks: Sequence[int],
    active: Sequence[int],
    every: int,
    lag: int,
    timeout_s: float,
    transport: str = "mpi",
) -> np.ndarray:
    """The route table sent to model rank ``rank`` (integers, read by ``mlb_enddef``).

    Layout: ``[0, version, timeout_ms, every, lag, nfields, active(nfields), nroutes]``, then per
    server (in server-rank order) ``[world rank, nsend, (i0, i1, j0, j1) * nsend, nrecv,
    (i0, i1, j0, j1) * nrecv]``: model-local, 0-based, half-open boxes in the order of the plan's
    segments, which is the order of the message layout; last, the transport of the fields
    (:data:`TRANSPORT_CODES`: 0 ``mpi``, 1 ``oasis``). With ``oasis`` the routes still say which
    servers a model rank says goodbye to.
    """
    out = [0, PROTOCOL_VERSION, int(round(timeout_s * 1000)), every, lag, len(active), *active]
    routes: list[int] = []
    nroutes = 0
    for s in range(plan.n_server):
        sends = plan.sends.get((rank, s), ())
        returns = plan.returns.get((s, rank), ())
        if not sends and not returns:
            continue
        nroutes += 1
        routes += [server_world_ranks[s], len(sends)]
        for seg in sends:
            routes += [seg.src.i0, seg.src.i1, seg.src.j0, seg.src.j1]
        routes.append(len(returns))
        for seg in returns:
            routes += [seg.dst.i0, seg.dst.i1, seg.dst.j0, seg.dst.j1]
    return np.array([*out, nroutes, *routes, TRANSPORT_CODES[transport]], dtype=np.int32)
