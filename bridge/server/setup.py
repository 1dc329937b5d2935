"""The handshake on the server side, and what it establishes for every server rank.

Server rank 0 receives every model rank's report (and land mask), checks them against the
configuration and the closures (:func:`bridge.protocol.handshake.check_reports`; with
``transport = "oasis"`` also the namcouple the launcher wrote), plans the routes and answers each
model rank with its route table, or every rank (model and server) with the error. The result,
:class:`Setup`, is broadcast to every server rank.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.closures.base import Closure, ClosureSpec
from bridge.config.coupling import CouplingConfig, model_schedule
from bridge.config.namcouple import (
    OASIS_2_0,
    NamcoupleError,
    OasisLimits,
    compare_namcouple,
    read_namcouple,
)
from bridge.config.namelist import read_namelists
from bridge.config.oasis import library_namcouple
from bridge.domain.plan import FOLDS, Box, Plan, plan_routes, server_blocks
from bridge.domain.stagger import NEMO_FACES
from bridge.protocol.handshake import (
    FieldDecl,
    HandshakeError,
    RankReport,
    active_flags,
    check_reports,
    check_restart,
    encode_reply,
    parse_report,
)
from bridge.server.engine import ServerError, exchange_halo
from bridge.transport import mpi as wire
from bridge.wire import TAG_MASK, TAG_REPLY, TAG_REPLY_TEXT, TAG_REPORT


@dataclass(frozen=True)
class Setup:
    """What every server rank needs after the handshake (broadcast by server rank 0)."""

    nx: int
    ny: int
    model_boxes: tuple[Box, ...]
    fields: tuple[FieldDecl, ...]
    active: tuple[int, ...]
    halo: int
    boundary: str
    every: int  # the model's schedule (bridge.config.coupling.model_schedule): each exchange
    lag: int  # keeps its own, run by the engine
    mask: np.ndarray  # (ny, nx) 1 ocean / 0 land
    faces: tuple[str, str] = NEMO_FACES  # the model's face convention

    @property
    def points(self) -> dict[str, str]:
        """The C-grid point of each model field."""
        return {f.name: f.at for f in self.fields}

    def plan(self, n_server: int) -> Plan:
        """The routes (every server rank computes the same).

        Across a north fold the routes do not depend on the fields' points
        (``plan_routes(point=None)``): each field's halo is filled by its own point on arrival.
        """
        blocks = server_blocks(self.nx, self.ny, n_server)
        point = None if self.boundary in FOLDS else "T"
        return plan_routes(
            self.nx, self.ny, self.model_boxes, blocks, self.halo, self.boundary, point
        )

    def active_fields(self, direction: str) -> list[FieldDecl]:
        """Active fields of one direction, in declaration order (the message order)."""
        return [
            f
            for f, a in zip(self.fields, self.active, strict=True)
            if a and f.direction == direction
        ]


def _namelist_grid(run_dir: Path) -> tuple[tuple[int, int] | None, str]:
    ref, cfg = run_dir / "namelist_ref", run_dir / "namelist_cfg"
    if not (ref.is_file() and cfg.is_file()):
        return None, ""
    try:
        grid = read_namelists(ref, cfg).grid
        return (int(grid.nx), int(grid.ny)), f"{cfg} (&namusr_def)"
    except Exception:  # a namelist the model can read but we cannot is checked elsewhere
        return None, ""


def receive_reports(layout: wire.WorldLayout, timeout_s: float) -> list[RankReport]:
    """Server rank 0: the report (and mask) of every model rank, in model-rank order.

    Raises
    ------
    HandshakeError
        If a report is malformed or names another rank.
    wire.TransportTimeout
        If a model rank does not report within ``timeout_s``.
    """
    from mpi4py import MPI

    reports: dict[int, RankReport] = {}
    for count in range(layout.n_model):
        text, source = wire.recv_text(
            layout.comm,
            MPI.ANY_SOURCE,
            TAG_REPORT,
            timeout_s,
            f"the handshake reports of the model ranks ({count} of {layout.n_model} received)",
        )
        rank = layout.model_ranks.index(source)
        report = parse_report(text, f"model rank {rank}")
        if report.rank != rank:
            raise HandshakeError(
                f"world rank {source} reports model rank {report.rank}, not {rank}"
            )
        if report.has_mask:
            mask = wire.recv_ints(layout.comm, source, TAG_MASK, timeout_s, "a land mask")
            b = report.box
            if mask.size != b.size:
                raise HandshakeError(
                    f"model rank {rank}: land mask of {mask.size} points for a box of {b.size}"
                )
            report = dataclasses.replace(report, mask=mask.reshape(b.ny, b.nx))
        reports[rank] = report
    return [reports[r] for r in range(layout.n_model)]


def handshake(
    layout: wire.WorldLayout,
    config: CouplingConfig,
    closures: Mapping[str, Closure],
    setup_problem: str | None,
    run_dir: Path,
    oasis: OasisLimits = OASIS_2_0,
) -> Setup:
    """The handshake on every server rank (server rank 0 talks to the model ranks).

    ``oasis``: the OASIS version of the servers' binding (``transport = "oasis"``), for which
    the launcher wrote the namcouple.

    Raises
    ------
    ServerError
        On any mismatch, after every model rank and every server rank was told.
    """
    timeout = config.server.timeout_s
    payload: dict[str, Any]
    if layout.rank == 0:
        payload = _handshake_rank0(layout, config, closures, setup_problem, run_dir, timeout, oasis)
    else:
        payload = {}
    payload = layout.servers.bcast(payload, root=0)
    if "error" in payload:
        raise ServerError(payload["error"])
    return payload["setup"]


def _handshake_rank0(
    layout: wire.WorldLayout,
    config: CouplingConfig,
    closures: Mapping[str, Closure],
    setup_problem: str | None,
    run_dir: Path,
    timeout: float,
    oasis: OasisLimits,
) -> dict[str, Any]:
    problems: list[str] = [setup_problem] if setup_problem else []
    reports: list[RankReport] = []
    try:
        reports = receive_reports(layout, timeout)
    except (HandshakeError, wire.TransportError) as err:
        problems.append(str(err))
    setup: Setup | None = None
    plan: Plan | None = None
    if reports and not problems:
        specs: dict[str, ClosureSpec] = {n: c.spec for n, c in closures.items()}
        if config.model.nemo:
            grid, where = _namelist_grid(run_dir)
        else:
            grid, where = config.model.grid, "coupling.toml [model] nx, ny"
        problems += check_reports(reports, config.exchanges, specs, grid, where)
        problems += check_restart(
            reports, config.exchanges, specs, config.transport, config.model.nemo
        )
        declared = {f.name for f in reports[0].fields}
        for name in config.model.vectors:
            if name not in declared:
                problems.append(
                    f"[model] vectors names {name!r}, which model rank {reports[0].rank} does "
                    f"not declare (mlb_def_field: {', '.join(sorted(declared)) or 'none'})"
                )
    if reports and not problems and config.transport == "oasis":
        problems += _check_oasis_reports(reports, config, run_dir, oasis)
    if reports and not problems:
        first = reports[0]
        mask = np.ones((first.ny, first.nx))
        for rep in reports:
            if rep.mask is not None:
                mask[rep.box.slices()] = rep.mask != 0
        setup = Setup(
            nx=first.nx,
            ny=first.ny,
            model_boxes=tuple(r.box for r in reports),
            fields=first.fields,
            active=tuple(active_flags(first.fields, config.exchanges)),
            halo=exchange_halo(
                config.exchanges, closures, {f.name: f.at for f in first.fields}, first.faces
            ),
            boundary=config.model.boundary,
            every=model_schedule(config.exchanges)[0],
            lag=model_schedule(config.exchanges)[1],
            mask=mask,
            faces=first.faces,
        )
        try:
            plan = setup.plan(layout.n_server)
        except ValueError as err:
            problems.append(f"no plan for {layout.n_server} server ranks: {err}")
    keep: list[tuple[Any, Any]] = []
    if problems:
        source = config.source or "the configuration"
        text = f"the model and the coupling configuration ({source}) disagree:\n" + "\n".join(
            f"  - {p}" for p in problems
        )
        # said here, before the model ranks hear it: their abort may end the job at once
        print(f"mlbridge server: error: {text}", file=sys.stderr, flush=True)
        for dest in layout.model_ranks:
            keep.append(wire.isend_ints(layout.comm, np.array([1]), dest, TAG_REPLY))
            keep.append(wire.isend_text(layout.comm, text, dest, TAG_REPLY_TEXT))
        _wait_quietly(keep, 5.0)
        return {"error": text}
    assert setup is not None and plan is not None
    active = [a for a in setup.active]
    for rank, dest in enumerate(layout.model_ranks):
        reply = encode_reply(
            plan, rank, layout.server_ranks, active, setup.every, setup.lag, timeout,
            config.transport,
        )  # fmt: skip
        keep.append(wire.isend_ints(layout.comm, reply, dest, TAG_REPLY))
    _wait_quietly(keep, timeout)
    return {"setup": setup}


def _check_oasis_reports(
    reports: Sequence[RankReport], config: CouplingConfig, run_dir: Path, oasis: OasisLimits
) -> list[str]:
    """``transport = "oasis"``: every library can use OASIS; the namcouple fits the fields."""
    problems = [
        f"model rank {r.rank}: its mlbridge library was built without OASIS3-MCT (it reports "
        f"transports {', '.join(r.transports)}): install liboasis3-dev and rebuild it, or use "
        'transport = "mpi"'
        for r in reports
        if "oasis" not in r.transports
    ]
    first = reports[0]
    active = active_flags(first.fields, config.exchanges)
    used = [f for f, a in zip(first.fields, active, strict=True) if a]
    try:
        found = read_namcouple(run_dir / "namcouple", oasis)
        expected = library_namcouple(
            first.nx,
            first.ny,
            {f.name: f.nlev for f in used if f.direction == "send"},
            {f.name: f.nlev for f in used if f.direction == "recv"},
            config.exchanges[0].every,
            found.runtime_s,
            found.nlogprt,
            oasis=oasis,
        )
    except NamcoupleError as err:
        return [*problems, f"transport = 'oasis': {err}"]
    problems += [
        f"{run_dir / 'namcouple'} does not match the fields the model defines: {p}"
        for p in compare_namcouple(expected, found)
    ]
    return problems


def _wait_quietly(keep: Sequence[tuple[Any, Any]], timeout_s: float) -> None:
    try:
        wire.wait_all([req for req, _ in keep], timeout_s, "the model ranks to take the reply")
    except wire.TransportTimeout:
        pass
