"""The inference server: ``python -m bridge.server --config RUN/run_config.json --run-dir RUN``.

Started by ``mlbridge run`` after the model ranks in one MPMD job. Every server rank:

1. splits ``MPI_COMM_WORLD`` with the model (:func:`bridge.transport.mpi.split_world`), after
   waiting at most ``server.timeout_s`` for the model ranks to reach their ``mlb_init``: a model
   that never does makes the servers print why and ``MPI_Abort`` the job, never hang;
2. builds the closures of the configured exchanges (:func:`resolve_closure`);
3. takes part in the handshake: server rank 0 receives every model rank's report, checks it
   (:mod:`bridge.handshake`), plans the routes (:mod:`bridge.plan`) and answers each model rank
   with its route table, or every rank (model and server) with the error;
4. loops over exchanges: receive one message from each model rank feeding its block, assemble
   the block with its halo, run the closures on all levels at once, send each model rank the
   interior part it owns; until every model rank said goodbye;
5. writes ``RUN/timing.json`` (server rank 0; per-step figures in ``RUN/timing_steps.json``).

With ``transport = "oasis"`` steps 1 to 3 are the same (the handshake stays on MPI, and also
checks that every model rank's library can use OASIS and that the ``namcouple`` the launcher
wrote matches the fields reported); then every rank joins OASIS as ``mlbsrv`` and the fields
move through ``oasis_get``/``oasis_put`` on flat partitions (:class:`OasisBlockServer`); the
goodbye messages still come over MPI.

Exit status: 0, or 1 after a handshake mismatch, a NaN with ``on_nan = "abort"``, a closure
failure or a timeout; the message goes to stderr and, when the model is waiting, to every model
rank (which returns it as an error status).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.closures.base import Closure, ClosureSpec, check_outputs
from bridge.config import CouplingConfig, load_config
from bridge.handshake import (
    SERVER_SUPPLIED_INPUTS,
    FieldDecl,
    HandshakeError,
    RankReport,
    active_flags,
    check_reports,
    encode_reply,
    exchange_name,
    parse_report,
)
from bridge.oasis_server import exchange_block_halos
from bridge.plan import Box, Plan, assemble_global_reference, plan_routes, server_blocks
from bridge.transport import mpi as wire

EXAMPLES = "  python -m bridge.server --config runs/x/run_config.json --run-dir runs/x\n"
CLIP_REPORT_LIMIT = 20  # clip lines a server rank writes in a run; then one "not shown" line


def global_point(index: int, shape: Sequence[int], i0: int, j0: int) -> tuple[int, int, int]:
    """Global ``(i, j, k)``, 1-based (Fortran order), of flat index ``index`` of a block.

    ``shape`` is the block's ``(nz, ny, nx)`` (C order), ``(i0, j0)`` the 0-based global indices
    of its first point: the same convention as the NaN messages.
    """
    k, j, i = np.unravel_index(index, tuple(shape))
    return int(i0 + i) + 1, int(j0 + j) + 1, int(k) + 1


class ServerError(RuntimeError):
    """The server gives up: the message is reported to the user and to every model rank."""


# --------------------------------------------------------------------------------------------
# closures
# --------------------------------------------------------------------------------------------


def resolve_closure(
    name: str,
    params: Mapping[str, Any],
    device: str,
    threads: int,
    *,
    inputs: Sequence[str] = (),
    registry: Path | None = None,
    sha256: str = "",
) -> Closure:
    """The closure an exchange names: an analytic closure or a registry reference.

    Parameters
    ----------
    name
        ``laplacian``, ``smooth3``, ``identity`` (see :mod:`bridge.closures.analytic`), or a
        registry reference ``name[@version]`` (loaded with :meth:`bridge.registry.Registry.load`,
        which verifies the hashes).
    params
        The exchange's ``params`` table.
    device, threads
        Where the closure runs (used by torch closures).
    inputs
        The closure input names the exchange maps; analytic closures take their inputs from it.
    registry
        Registry directory (``server.registry``); None: the default registry.
    sha256
        Registry closures: the pinned sha256 (``exchange.sha256``) the entry's recorded hash
        (of its artifact, or of its manifest when it has none) must equal; empty: any.

    Returns
    -------
    Closure
        Ready to call.

    Raises
    ------
    ServerError
        If the name is unknown or the closure cannot be built, with the reason.
    """
    from bridge.closures.analytic import ANALYTIC, analytic_closure

    if name in ANALYTIC:
        try:
            return analytic_closure(name, inputs, params)
        except (KeyError, ValueError) as err:
            raise ServerError(f"closure {name!r}: {err}") from None
    try:
        from bridge.registry import Registry
    except ImportError as err:
        raise ServerError(
            f"closure {name!r} is not an analytic closure ({', '.join(sorted(ANALYTIC))}) and the "
            f"registry cannot be imported: {type(err).__name__}: {err}"
        ) from None
    if params:
        raise ServerError(
            f"closure {name!r}: registry closures take no params (got {sorted(params)}); their "
            "settings live in the manifest"
        )
    try:
        reg = Registry(registry)
        if sha256:
            _check_pinned_hash(reg, name, sha256)
        return reg.load(name, device=device, threads=threads)
    except ServerError:
        raise
    except Exception as err:  # a registry closure may fail in many ways: report, don't crash
        raise ServerError(
            f"closure {name!r} is not an analytic closure ({', '.join(sorted(ANALYTIC))}) and "
            f"cannot be loaded from the registry: {type(err).__name__}: {err}"
        ) from None


def _check_pinned_hash(registry: Any, name: str, sha256: str) -> None:
    """The recorded hash of registry entry ``name`` equals the pinned ``sha256``.

    Raises
    ------
    ServerError
        Naming the closure, the file and both hashes.
    """
    from bridge.registry import MANIFEST_FILE

    entry = registry.show(name)
    hashes = entry.record.get("sha256", {})
    artifact = entry.artifact
    path = artifact if artifact is not None else entry.directory / MANIFEST_FILE
    recorded = hashes.get(path.name, "")
    if recorded != sha256:
        raise ServerError(
            f"closure {name!r} ({entry.ref}): {path} has recorded sha256 {recorded or 'none'}, "
            f"the exchange pins sha256 {sha256} (pin the registered content, or register the "
            "pinned one)"
        )


def build_closures(config: CouplingConfig) -> dict[str, Closure]:
    """One closure per exchange, keyed by the exchange's name.

    Raises
    ------
    ServerError
        If a closure cannot be resolved.
    """
    return {
        exchange_name(ex): resolve_closure(
            ex.closure,
            ex.params,
            config.server.device,
            config.server.threads,
            inputs=tuple(ex.inputs),
            registry=config.server.registry,
            sha256=ex.sha256,
        )
        for ex in config.exchanges
    }


# --------------------------------------------------------------------------------------------
# handshake (server rank 0) and the setup every server shares
# --------------------------------------------------------------------------------------------


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
    every: int
    lag: int
    mask: np.ndarray  # (ny, nx) 1 ocean / 0 land

    def plan(self, n_server: int) -> Plan:
        """The routes (every server rank computes the same)."""
        blocks = server_blocks(self.nx, self.ny, n_server)
        return plan_routes(self.nx, self.ny, self.model_boxes, blocks, self.halo, self.boundary)

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
        from bridge.namelist import read_namelists

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
            wire.TAG_REPORT,
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
            mask = wire.recv_ints(layout.comm, source, wire.TAG_MASK, timeout_s, "a land mask")
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
) -> Setup:
    """The handshake on every server rank (server rank 0 talks to the model ranks).

    Raises
    ------
    ServerError
        On any mismatch, after every model rank and every server rank was told.
    """
    timeout = config.server.timeout_s
    payload: dict[str, Any]
    if layout.rank == 0:
        payload = _handshake_rank0(layout, config, closures, setup_problem, run_dir, timeout)
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
        grid, where = _namelist_grid(run_dir)
        problems += check_reports(reports, config.exchanges, specs, grid, where)
    if reports and not problems and config.transport == "oasis":
        problems += _check_oasis_reports(reports, config, run_dir)
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
            halo=max(c.spec.halo for c in closures.values()),
            boundary=config.model.boundary,
            every=config.exchanges[0].every,
            lag=config.exchanges[0].lag,
            mask=mask,
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
            keep.append(wire.isend_ints(layout.comm, np.array([1]), dest, wire.TAG_REPLY))
            keep.append(wire.isend_text(layout.comm, text, dest, wire.TAG_REPLY_TEXT))
        _wait_quietly(keep, 5.0)
        return {"error": text}
    assert setup is not None and plan is not None
    active = [a for a in setup.active]
    for rank, dest in enumerate(layout.model_ranks):
        reply = encode_reply(
            plan, rank, layout.server_ranks, active, setup.every, setup.lag, timeout,
            config.transport,
        )  # fmt: skip
        keep.append(wire.isend_ints(layout.comm, reply, dest, wire.TAG_REPLY))
    _wait_quietly(keep, timeout)
    return {"setup": setup}


def _check_oasis_reports(
    reports: Sequence[RankReport], config: CouplingConfig, run_dir: Path
) -> list[str]:
    """``transport = "oasis"``: every library can use OASIS; the namcouple fits the fields."""
    from bridge.namcouple import NamcoupleError, compare_namcouple, read_namcouple
    from bridge.oasis_server import library_namcouple

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
        found = read_namcouple(run_dir / "namcouple")
    except NamcoupleError as err:
        return [*problems, f"transport = 'oasis': {err}"]
    expected = library_namcouple(
        first.nx,
        first.ny,
        {f.name: f.nlev for f in used if f.direction == "send"},
        {f.name: f.nlev for f in used if f.direction == "recv"},
        config.exchanges[0].every,
        found.runtime_s,
        found.nlogprt,
    )
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


# --------------------------------------------------------------------------------------------
# the step loop
# --------------------------------------------------------------------------------------------


def _boxes_datatype(header: np.ndarray, pieces: Sequence[tuple[np.ndarray, int, Box]]) -> Any:
    """A committed MPI datatype: ``header[0]``, then ``array[:nlev, box]`` for each piece.

    The message the model expects (step number, then the segments in plan order), gathered
    straight from the arrays, without a pack copy.
    """
    from mpi4py import MPI

    lengths, displacements, types = [1], [MPI.Get_address(header)], [MPI.DOUBLE]
    parts = []
    for array, nlev, b in pieces:
        part = MPI.DOUBLE.Create_subarray(list(array.shape), [nlev, b.ny, b.nx], [0, b.j0, b.i0])
        parts.append(part)
        lengths.append(1)
        displacements.append(MPI.Get_address(array))
        types.append(part)
    dtype = MPI.Datatype.Create_struct(lengths, displacements, types).Commit()
    for part in parts:
        part.Free()
    return dtype


class BlockServer:
    """One server rank's block: buffers, closures and the exchange loop.

    Parameters
    ----------
    layout
        The world layout.
    config
        The run configuration.
    closures
        Closure per exchange name.
    setup
        What the handshake established.
    """

    STEP_KEYS = ("recv_wait_s", "unpack_s", "inference_s", "pack_s", "send_s")

    def __init__(
        self,
        layout: wire.WorldLayout,
        config: CouplingConfig,
        closures: Mapping[str, Closure],
        setup: Setup,
    ) -> None:
        self.layout = layout
        self.config = config
        self.closures = closures
        self.setup = setup
        self.rank = layout.rank
        self.plan = setup.plan(layout.n_server)
        self.box = self.plan.server_boxes[self.rank]
        self.halo = setup.halo
        self.timeout = config.server.timeout_s
        self.send_fields = setup.active_fields("send")
        self.recv_fields = setup.active_fields("recv")
        hy, hx = self.plan.haloed_shape(self.rank)
        # two sets of block arrays: the fields of the next exchange are received into one while
        # the closure reads the other (and outputs that alias a block stay valid while they go)
        self.block_sets = [
            {f.name: np.zeros((f.nlev, hy, hx)) for f in self.send_fields} for _ in range(2)
        ]
        self.blocks = self.block_sets[0]
        self.mask_block = assemble_global_reference(
            setup.mask[None], self.box, self.halo, setup.boundary
        )
        self.in_peers = self.plan.server_recv_peers(self.rank)
        self.out_peers = self.plan.server_send_peers(self.rank)
        levels = sum(f.nlev for f in self.recv_fields)
        self.out_sizes = {
            r: 1 + levels * sum(seg.size for seg in self.plan.returns[(self.rank, r)])
            for r in self.out_peers
        }
        # the fields land straight in the block arrays (no unpack): one datatype per model rank,
        # field and block set
        self.in_headers: dict[tuple[int, int, int], np.ndarray] = {}
        self.in_types: dict[tuple[int, int, int], Any] = {}
        self.in_sizes: dict[tuple[int, int], int] = {}
        # Lag 0: the messages go straight between the model's arrays and the blocks / the
        # closure's outputs (MPI datatypes): both sides are in MPI while they move. Lag 1:
        # contiguous buffers on both sides (with Open MPI's single-copy mechanism the receiver
        # then pulls a message by itself), and the outputs are copied into one of two send
        # buffers, so that the next closure never waits for the model to take them.
        self.buffered = setup.lag > 0
        self.in_bufs: dict[tuple[int, int, int], np.ndarray] = {}
        self.unpack_copies: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [], 1: []}
        for parity in (0, 1):
            for r in self.in_peers:
                self._receive_type(r, parity)
        self.out_bufs: dict[tuple[int, int], np.ndarray] = {}
        Copy = tuple[np.ndarray, str, tuple[slice, ...]]
        self.pack_copies: dict[int, list[Copy]] = {0: [], 1: []}
        if self.buffered:
            for parity in (0, 1):
                for r in self.out_peers:
                    self._output_buffer(r, parity)
        self.parity_sends: dict[int, list[Any]] = {0: [], 1: []}
        # the outputs leave straight from the closure's arrays: one datatype per model rank,
        # cached by the arrays' addresses (closures tend to reuse their memory)
        self.out_headers = {r: np.zeros(1) for r in self.out_peers}
        self.out_types: dict[tuple[Any, ...], Any] = {}
        self.send_keep: list[Any] = []
        self.takes_mask = {n: _accepts_mask(c) for n, c in closures.items()}
        self.send_requests: list[Any] = []
        self.nan_policy = self._nan_policies()
        self.nan_replaced = 0
        # values cut by the closures' clip bounds, per model field (fields with a bound only)
        self.clipped: dict[str, int] = {}
        for ex in config.exchanges:
            bounded = getattr(getattr(closures[exchange_name(ex)], "stats", None), "clipped", {})
            self.clipped.update({mf: 0 for co, mf in ex.outputs.items() if co in bounded})
        self.clip_lines = 0
        self.checked_outputs: set[str] = set()
        self.steps: list[int] = []
        self.times: dict[str, list[float]] = {k: [] for k in self.STEP_KEYS}
        self.model_timing: dict[int, list[float]] = {}

    # --- set-up ------------------------------------------------------------------------------

    def _receive_type(self, r: int, parity: int) -> None:
        """The MPI datatypes of model rank ``r``'s FIELDS messages, scattering into the blocks.

        One message per field, as the model sends it: the step in
        ``in_headers[r, f, parity][0]``, then for each segment of the plan the rectangle
        ``[:, dst]`` of the field's block array (of block set ``parity``).
        """
        from mpi4py import MPI

        if self.buffered:
            for jf, f in enumerate(self.send_fields):
                segments = self.plan.sends[(r, self.rank)]
                buf = np.zeros(1 + f.nlev * sum(seg.size for seg in segments))
                offset = 1
                block = self.block_sets[parity][f.name]
                for seg in segments:
                    b = seg.dst
                    count = f.nlev * b.size
                    view = buf[offset : offset + count].reshape(f.nlev, b.ny, b.nx)
                    self.unpack_copies[parity].append((block[(slice(None), *b.slices())], view))
                    offset += count
                self.in_bufs[(r, jf, parity)] = buf
                self.in_types[(r, jf, parity)] = MPI.DOUBLE
                self.in_headers[(r, jf, parity)] = buf[:1]
                self.in_sizes[(r, jf)] = buf.size
            return
        for jf, f in enumerate(self.send_fields):
            header = np.zeros(1)
            block = self.block_sets[parity][f.name]
            boxes = [seg.dst for seg in self.plan.sends[(r, self.rank)]]
            self.in_types[(r, jf, parity)] = _boxes_datatype(
                header, [(block, f.nlev, b) for b in boxes]
            )
            self.in_headers[(r, jf, parity)] = header
            self.in_sizes[(r, jf)] = 1 + sum(f.nlev * b.size for b in boxes)

    def _output_buffer(self, r: int, parity: int) -> None:
        """Lag 1: the contiguous OUTPUTS buffer ``[kt, field 1 segments, ...]`` for model rank
        ``r`` and the views that fill it."""
        segments = self.plan.returns[(self.rank, r)]
        buf = np.zeros(self.out_sizes[r])
        offset = 1
        for f in self.recv_fields:
            for seg in segments:
                b = seg.src
                count = f.nlev * b.size
                view = buf[offset : offset + count].reshape(f.nlev, b.ny, b.nx)
                self.pack_copies[parity].append((view, f.name, (slice(None), *b.slices())))
                offset += count
        self.out_bufs[(r, parity)] = buf

    def _send_type(self, r: int, outputs: Mapping[str, np.ndarray]) -> Any:
        """The datatype of the OUTPUTS message to model rank ``r``, gathering from ``outputs``.

        The step from ``out_headers[r]``, then for each received field and each segment the
        rectangle ``[:, src]`` of the output array: the layout the model expects.
        """

        key = (r, *((outputs[f.name].ctypes.data, outputs[f.name].shape) for f in self.recv_fields))
        dtype = self.out_types.get(key)
        if dtype is not None:
            return dtype
        dtype = _boxes_datatype(
            self.out_headers[r],
            [
                (outputs[f.name], f.nlev, seg.src)
                for f in self.recv_fields
                for seg in self.plan.returns[(self.rank, r)]
            ],
        )
        if len(self.out_types) >= 16 * max(1, len(self.out_peers)):  # closures that never reuse
            for old in self.out_types.values():
                old.Free()
            self.out_types = {}
        self.out_types[key] = dtype
        return dtype

    def free_types(self) -> None:
        """Free the datatypes (at the end)."""
        if not self.buffered:  # lag 1 receives plain buffers (MPI.DOUBLE: nothing to free)
            for dtype in self.in_types.values():
                dtype.Free()
        for dtype in self.out_types.values():
            dtype.Free()
        self.in_types = {}
        self.out_types = {}

    def _nan_policies(self) -> dict[str, str]:
        """on_nan of each model field (``abort`` wins when several exchanges use a field)."""
        policy: dict[str, str] = {}
        for ex in self.config.exchanges:
            for model_field in (*ex.inputs.values(), *ex.outputs.values()):
                if policy.get(model_field) != "abort":
                    policy[model_field] = ex.on_nan
        return policy

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve exchanges until every model rank feeding this block says goodbye.

        Raises
        ------
        ServerError
            On a NaN with ``on_nan = "abort"``, a closure failure, a protocol error or a timeout.
        """
        from mpi4py import MPI

        comm = self.layout.comm
        peers = list(self.in_peers)
        sources = [self.layout.model_ranks[r] for r in peers]

        nf = len(self.send_fields)

        def post(parity: int) -> list[list[Any]]:
            # one message per field from each model rank, matched in this order (same tag)
            return [
                [
                    comm.Irecv(
                        [self.in_bufs[(r, jf, parity)], MPI.DOUBLE]
                        if self.buffered
                        else [MPI.BOTTOM, 1, self.in_types[(r, jf, parity)]],
                        source=src,
                        tag=wire.TAG_FIELDS,
                    )
                    for jf in range(nf)
                ]
                for r, src in zip(peers, sources, strict=True)
            ]

        parity = 0
        requests = post(parity)
        statuses = [[MPI.Status() for _ in range(nf)] for _ in peers]
        while True:
            t0 = time.perf_counter()
            try:
                said = self._wait_fields_or_goodbye(requests, statuses, peers, sources)
            except wire.TransportTimeout as err:
                last = self.steps[-1] if self.steps else "none yet"
                raise ServerError(
                    f"server rank {self.rank}: {err} (model ranks {list(peers)}; last step "
                    f"served: {last}): is a model rank dead?"
                ) from None
            t1 = time.perf_counter()
            if all(w == "done" for w in said):
                break
            kt = self._check_messages(peers, statuses, said, parity)
            self.blocks = self.block_sets[parity]
            # The fields of the next exchange land in the other block set (lag 1: buffer) while
            # the closure runs. Lag 0: they cannot come before the model has the outputs, which
            # may alias that set: post once those sends are done. Lag 1: post at once.
            if self.buffered:
                requests = post(1 - parity)
                for dst, src in self.unpack_copies[parity]:
                    np.copyto(dst, src)
            else:
                self._wait_sends()
                requests = post(1 - parity)
            t2 = time.perf_counter()
            self._check_nan_inputs(kt)
            outputs = self._infer(kt)
            t3 = time.perf_counter()
            if self.buffered:
                # the buffers of this parity went two exchanges ago: long taken
                wire.wait_all(
                    self.parity_sends[parity], self.timeout, "the model ranks to take the outputs"
                )
                for view, name, region in self.pack_copies[parity]:
                    np.copyto(view, outputs[name][region])
                sends = [[self.out_bufs[(r, parity)], MPI.DOUBLE] for r in self.out_peers]
                for r in self.out_peers:
                    self.out_bufs[(r, parity)][0] = kt
            else:
                types = {r: self._send_type(r, outputs) for r in self.out_peers}
                sends = [[MPI.BOTTOM, 1, types[r]] for r in self.out_peers]
                for r in self.out_peers:
                    self.out_headers[r][0] = kt
            t4 = time.perf_counter()
            requests_out = [
                comm.Isend(msg, dest=self.layout.model_ranks[r], tag=wire.TAG_OUTPUTS)
                for r, msg in zip(self.out_peers, sends, strict=True)
            ]
            if self.buffered:
                self.parity_sends[parity] = requests_out
            else:
                self.send_requests = requests_out
                self.send_keep = list(outputs.values())  # alive until the sends complete
            t5 = time.perf_counter()
            parity = 1 - parity
            self.steps.append(kt)
            for key, value in zip(
                self.STEP_KEYS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
            ):
                self.times[key].append(value)
        wire.wait_all(
            [*self.send_requests, *self.parity_sends[0], *self.parity_sends[1]],
            self.timeout,
            "the model ranks to take the last outputs",
        )

    def _wait_fields_or_goodbye(
        self,
        requests: list[list[Any]],
        statuses: list[list[Any]],
        peers: Sequence[int],
        sources: Sequence[int],
    ) -> list[str]:
        """Wait until each model rank sent its fields (``"fields"``) or its goodbye (``"done"``).

        A goodbye (``TAG_DONE``) is received into ``model_timing`` and the fields receives
        still pending for that rank are cancelled.

        Raises
        ------
        wire.TransportTimeout
            If some model rank sends neither within the timeout.
        ServerError
            If a message does not fit the plan (MPI truncation).
        """
        from mpi4py import MPI

        comm = self.layout.comm
        said: list[str | None] = [None] * len(peers)
        goodbye = np.zeros(wire.DONE_LENGTH)
        testall = MPI.Request.Testall
        iprobe = comm.Iprobe
        pending = list(range(len(peers)))

        def ready() -> bool:
            for i in list(pending):
                try:
                    if testall(requests[i], statuses[i]):
                        said[i] = "fields"
                        pending.remove(i)
                        continue
                except MPI.Exception as err:
                    sizes = [self.in_sizes[(peers[i], jf)] for jf in range(len(requests[i]))]
                    raise ServerError(
                        f"server rank {self.rank}: the fields of model rank {peers[i]} do not fit "
                        f"the plan ({sizes} values expected): {err.Get_error_string()}"
                    ) from None
                if iprobe(sources[i], wire.TAG_DONE):
                    comm.Recv([goodbye, MPI.DOUBLE], source=sources[i], tag=wire.TAG_DONE)
                    self.model_timing[peers[i]] = [float(v) for v in goodbye]
                    for req in requests[i]:
                        if req:
                            req.Cancel()
                            req.Wait()
                    said[i] = "done"
                    pending.remove(i)
            return not pending

        wire.poll(ready, self.timeout, "the fields of the model ranks")
        return [str(w) for w in said]

    def _check_messages(
        self,
        peers: Sequence[int],
        statuses: Sequence[Sequence[Any]],
        said: Sequence[str],
        parity: int,
    ) -> int:
        from mpi4py import MPI

        steps = set()
        for r, sts, what in zip(peers, statuses, said, strict=True):
            if what != "fields":
                raise ServerError(
                    f"server rank {self.rank}: model rank {r} said goodbye while other model "
                    "ranks are still exchanging (did its run stop early?)"
                )
            for jf, st in enumerate(sts):
                count = st.Get_count(MPI.DOUBLE_PRECISION)
                if count != self.in_sizes[(r, jf)]:
                    raise ServerError(
                        f"server rank {self.rank}: model rank {r} sent {count} values of field "
                        f"{self.send_fields[jf].name!r}, the plan expects "
                        f"{self.in_sizes[(r, jf)]}"
                    )
                steps.add(int(self.in_headers[(r, jf, parity)][0]))
        if len(steps) != 1:
            raise ServerError(
                f"server rank {self.rank}: model ranks {list(peers)} sent different steps "
                f"{sorted(steps)}"
            )
        return steps.pop()

    # --- NaN policy --------------------------------------------------------------------------

    def _owner(self, i: int, j: int) -> int:
        for r, box in enumerate(self.setup.model_boxes):
            if box.contains(i, j):
                return r
        return -1

    def _nan_check(
        self, kt: int, name: str, interior: np.ndarray, full: np.ndarray, what: str
    ) -> None:
        """Abort or zero the NaNs of ``full`` (counting those of ``interior``, a view into it)."""
        if full.size == 0 or not np.isnan(full.max()):  # one read: max propagates a NaN
            return
        bad = np.isnan(interior)
        if not bad.any() and not np.isnan(full).any():
            return
        if self.nan_policy.get(name, "abort") == "abort":
            if not bad.any():
                return  # the NaN is in the halo: the server owning it reports it
            k, j, i = (int(v) for v in np.argwhere(bad)[0])
            gi, gj = self.box.i0 + i, self.box.j0 + j
            raise ServerError(
                f"NaN in {what} {name!r} at step {kt}, model rank {self._owner(gi, gj)}, global "
                f"(i, j, k) = ({gi + 1}, {gj + 1}, {k + 1}) (1-based, Fortran order; "
                f"{int(bad.sum())} NaN in server rank {self.rank}'s block; on_nan = 'abort')"
            )
        self.nan_replaced += int(bad.sum())
        full[np.isnan(full)] = 0.0

    def _check_nan_inputs(self, kt: int) -> None:
        h = self.halo
        for name, block in self.blocks.items():
            interior = block[:, h : block.shape[1] - h, h : block.shape[2] - h]
            self._nan_check(kt, name, interior, block, "model field")

    def _wait_sends(self) -> None:
        """Wait until the model ranks took the last outputs; forget their arrays."""
        wire.wait_all(self.send_requests, self.timeout, "the model ranks to take the outputs")
        self.send_requests = []
        self.send_keep = []

    def _block_holding(self, arr: np.ndarray) -> int:
        """The block set (0, 1) with a block array that holds ``arr`` (C-contiguous), or -1."""
        lo = arr.ctypes.data
        hi = lo + arr.nbytes
        for parity, blocks in enumerate(self.block_sets):
            for block in blocks.values():
                b0 = block.ctypes.data
                if b0 <= lo and hi <= b0 + block.nbytes:
                    return parity
        return -1

    # --- inference ---------------------------------------------------------------------------

    def _infer(self, kt: int) -> dict[str, np.ndarray]:
        """Run every exchange's closure on the block; return outputs keyed by model field."""
        outputs: dict[str, np.ndarray] = {}
        hy, hx = self.plan.haloed_shape(self.rank)
        for ex in self.config.exchanges:
            name = exchange_name(ex)
            closure = self.closures[name]
            spec = closure.spec
            cut = self.halo - spec.halo
            window = (slice(None), slice(cut, hy - cut), slice(cut, hx - cut))
            inputs: dict[str, np.ndarray] = {}
            nz = 1
            for closure_input, model_field in ex.inputs.items():
                arr = self.blocks[model_field][window]
                nz = arr.shape[0]
                inputs[closure_input] = arr if spec.dtype == "float64" else arr.astype(spec.dtype)
            for extra in SERVER_SUPPLIED_INPUTS:
                if extra in spec.input_names:
                    mask = self.mask_block[window].astype(spec.dtype, copy=False)
                    inputs[extra] = np.broadcast_to(mask, (nz, *mask.shape[1:]))
            try:
                if self.takes_mask[name]:  # registry closures: outputs are zero on land
                    result = closure(inputs, mask=self.mask_block[0][window[1:]])
                else:
                    result = closure(inputs)
                if name not in self.checked_outputs:
                    check_outputs(spec, result, (nz, *self.plan.interior_shape(self.rank)))
                    self.checked_outputs.add(name)
            except Exception as err:
                raise ServerError(
                    f"closure {spec.name!r} of exchange {name!r} failed at step {kt} on server "
                    f"rank {self.rank}: {type(err).__name__}: {err}"
                ) from None
            for closure_output, model_field in ex.outputs.items():
                out = np.ascontiguousarray(result[closure_output], dtype=np.float64)
                holder = self._block_holding(out)
                if holder < 0 or self.block_sets[holder] is not self.blocks:
                    self._nan_check(kt, model_field, out, out, "closure output for")
                # else an input passed through: its NaNs were handled with the inputs
                self._clip_report(kt, closure, closure_output, model_field, out.shape)
                outputs[model_field] = out
        return outputs

    def _clip_report(
        self, kt: int, closure: Closure, output: str, field: str, shape: Sequence[int]
    ) -> None:
        """Count and report (one line, the worst value) the clipping of the last closure call."""
        stats = getattr(closure, "stats", None)
        record = getattr(stats, "last_clip", {}).get(output)
        if record is None:
            return
        self.clipped[field] = self.clipped.get(field, 0) + record.count
        self.clip_lines += 1
        if self.clip_lines > CLIP_REPORT_LIMIT:
            if self.clip_lines == CLIP_REPORT_LIMIT + 1:
                print(
                    f"mlbridge server rank {self.rank}: further clip events not shown (the totals "
                    "per field are in the run's summary)",
                    flush=True,
                )
            return
        gi, gj, k = global_point(record.index, shape, self.box.i0, self.box.j0)
        print(
            f"mlbridge server rank {self.rank}: clip at step {kt}: {field!r} (closure output "
            f"{output!r}) = {record.value:.6g} before clipping to +-{record.bound:.6g} at "
            f"model rank {self._owner(gi - 1, gj - 1)}, global (i, j, k) = ({gi}, {gj}, {k}) "
            f"(1-based, Fortran order; the largest of {record.count} value(s) clipped in server "
            f"rank {self.rank}'s block)",
            flush=True,
        )

    # --- the end -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """This rank's timing (gathered by server rank 0)."""
        return {
            "rank": self.rank,
            "steps": list(self.steps),
            "times": {k: list(v) for k, v in self.times.items()},
            "model": dict(self.model_timing),
            "nan_replaced": self.nan_replaced,
            "clipped": dict(self.clipped),
        }


def _accepts_mask(closure: Closure) -> bool:
    """Whether ``closure`` is called with ``mask=`` (registry closures; analytic ones are not)."""
    import inspect

    try:
        params = inspect.signature(closure.__call__).parameters  # type: ignore[operator]
    except (TypeError, ValueError):
        return False
    return "mask" in params


class OasisBlockServer(BlockServer):
    """``transport = "oasis"``: the fields come and go through OASIS instead of MPI messages.

    Every server rank joins OASIS as :data:`bridge.oasis_server.LIBRARY_SERVER_COMPONENT` and
    defines the sent fields on its block grown by the halo (a closed boundary: MCT brings every
    halo cell from the model rank that owns it) or on its block alone (periodic: the servers
    then exchange the halo over MPI), and the returned fields on its block
    (:class:`bridge.transport.oasis.ServerBlockFields`). OASIS dates count model steps from the
    first exchange: the servers serve the dates ``0, every, ...`` below the namcouple's
    ``$RUNTIME`` (the number of steps), then take the model ranks' goodbye over MPI.

    Parameters
    ----------
    layout, config, closures, setup
        As :class:`BlockServer`.
    backend
        An OASIS binding (:func:`bridge.transport.oasis.open_backend`), not yet initialised.
    steps
        Steps of the run (the namcouple's ``$RUNTIME``).
    first_step
        The model's first step (``nn_it000``), to name steps in messages.
    """

    def __init__(
        self,
        layout: wire.WorldLayout,
        config: CouplingConfig,
        closures: Mapping[str, Closure],
        setup: Setup,
        backend: Any,
        steps: int,
        first_step: int,
    ) -> None:
        from bridge.oasis_server import LIBRARY_PREFIX, LIBRARY_SERVER_COMPONENT
        from bridge.transport.oasis import ServerBlockFields

        super().__init__(layout, config, closures, setup)
        self.backend = backend
        self.dates = list(range(0, steps, setup.every))
        self.first_step = first_step
        self.halo_mode = "oasis" if setup.boundary == "closed" else "mpi"
        blocks = self.plan.server_boxes
        self.halo_routes = plan_routes(
            setup.nx, setup.ny, blocks, blocks, self.halo, setup.boundary
        )
        backend.init(LIBRARY_SERVER_COMPONENT)  # collective over the whole job
        self.fields = ServerBlockFields(
            backend,
            setup.nx,
            setup.ny,
            self.box,
            self.halo,
            self.halo_mode,
            {f.name: f.nlev for f in self.send_fields},
            {f.name: f.nlev for f in self.recv_fields},
            LIBRARY_PREFIX,
        )
        backend.enddef()

    def run(self) -> None:
        """Serve every coupling date, end OASIS, then take the model ranks' goodbye (MPI)."""
        from mpi4py import MPI

        h = self.halo
        for date in self.dates:
            kt = self.first_step + date
            t0 = time.perf_counter()
            self.fields.get(date, self.blocks)
            t1 = time.perf_counter()
            if self.halo_mode == "mpi":
                interior = {
                    name: b[:, h : b.shape[1] - h, h : b.shape[2] - h]
                    for name, b in self.blocks.items()
                }
                exchange_block_halos(
                    self.layout.servers, self.halo_routes, self.rank, interior, self.blocks
                )
            t2 = time.perf_counter()
            self._check_nan_inputs(kt)
            outputs = self._infer(kt)
            t3 = time.perf_counter()
            self.fields.put(date, outputs)
            t4 = time.perf_counter()
            self.steps.append(kt)
            for key, value in zip(
                self.STEP_KEYS, (t1 - t0, t2 - t1, t3 - t2, 0.0, t4 - t3), strict=True
            ):
                self.times[key].append(value)
        self.backend.terminate()
        peers = list(self.in_peers)
        bufs = [np.zeros(wire.DONE_LENGTH) for _ in peers]
        requests = [
            self.layout.comm.Irecv(
                [buf, MPI.DOUBLE_PRECISION],
                source=self.layout.model_ranks[r],
                tag=wire.TAG_DONE,
            )
            for r, buf in zip(peers, bufs, strict=True)
        ]
        try:
            wire.wait_all(requests, self.timeout, "the model ranks' goodbye")
        except wire.TransportTimeout as err:
            raise ServerError(f"server rank {self.rank}: {err}") from None
        for r, buf in zip(peers, bufs, strict=True):
            self.model_timing[r] = [float(v) for v in buf]


def _oasis_run_length(run_dir: Path) -> tuple[int, int]:
    """``transport = "oasis"``: steps of the run (the namcouple's ``$RUNTIME``) and first step."""
    from bridge.namcouple import read_namcouple

    steps = read_namcouple(run_dir / "namcouple").runtime_s
    first = 0
    try:
        from bridge.namelist import read_namelists

        first = read_namelists(run_dir / "namelist_ref", run_dir / "namelist_cfg").it000
    except Exception:  # a model without a NEMO-style namelist: steps are named by date
        pass
    return steps, first


def merged_clipped(summaries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Values cut by the clip bounds per model field, summed over the server ranks."""
    total: dict[str, int] = {}
    for s in summaries:
        for name, n in s.get("clipped", {}).items():
            total[name] = total.get(name, 0) + int(n)
    return total


def write_timing(
    run_dir: Path, summaries: Sequence[Mapping[str, Any]], lag: int, every: int
) -> None:
    """``timing.json`` (totals, max over server ranks) and ``timing_steps.json`` (per step)."""
    server: dict[str, Any] = {"ranks": len(summaries), "exchanges": len(summaries[0]["steps"])}
    for key in BlockServer.STEP_KEYS:
        server[key] = max(float(np.sum(s["times"][key])) for s in summaries)
    per_step = [
        float(np.median(np.sum([s["times"][k] for k in BlockServer.STEP_KEYS[1:]], axis=0)))
        for s in summaries
        if s["steps"]
    ]
    server["busy_per_exchange_median_s"] = max(per_step) if per_step else 0.0
    model_rows: dict[int, list[float]] = {}
    for s in summaries:
        model_rows.update({int(r): v for r, v in s["model"].items()})
    model = {
        "ranks": len(model_rows),
        "wait_s_max": max((v[1] for v in model_rows.values()), default=0.0),
        "put_s_max": max((v[2] for v in model_rows.values()), default=0.0),
        "get_s_max": max((v[3] for v in model_rows.values()), default=0.0),
    }
    timing = {
        "server": server,
        "model": model,
        "lag": lag,
        "every": every,
        "nan_replaced": int(sum(s["nan_replaced"] for s in summaries)),
        "clipped": merged_clipped(summaries),
        "per_step_file": "timing_steps.json",
    }
    steps = {
        "servers": [{"rank": s["rank"], "kt": s["steps"], **s["times"]} for s in summaries],
        "model": {
            str(r): dict(zip(("exchanges", "wait_s", "put_s", "get_s"), v, strict=True))
            for r, v in sorted(model_rows.items())
        },
    }
    (run_dir / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    (run_dir / "timing_steps.json").write_text(json.dumps(steps) + "\n")


def serve(layout: wire.WorldLayout, config: CouplingConfig, run_dir: Path) -> int:
    """Everything after the world split, on one server rank; return the exit status."""
    setup_problem: str | None = None
    closures: dict[str, Closure] = {}
    backend: Any = None
    try:
        if config.transport not in ("mpi", "oasis"):
            raise ServerError(f"transport {config.transport!r}: this server speaks mpi and oasis")
        if not config.exchanges:
            raise ServerError("the configuration has no [[exchange]]: nothing to serve")
        if config.transport == "oasis":
            from bridge.transport.oasis import OasisNotAvailableError, open_backend

            try:
                backend = open_backend()
            except OasisNotAvailableError as err:
                raise ServerError(str(err)) from None
        closures = build_closures(config)
    except ServerError as err:
        setup_problem = str(err)
    try:
        setup = handshake(layout, config, closures, setup_problem, run_dir)
    except ServerError:
        return 1  # server rank 0 has reported it
    try:
        if config.transport == "oasis":
            steps, first = _oasis_run_length(run_dir)
            server: BlockServer = OasisBlockServer(
                layout, config, closures, setup, backend, steps, first
            )
        else:
            server = BlockServer(layout, config, closures, setup)
        try:
            server.run()
        finally:
            server.free_types()
    except (ServerError, wire.TransportError) as err:
        text = f"mlbridge server rank {layout.rank}: {err}"
        print(f"mlbridge server: error: {text}", file=sys.stderr, flush=True)
        wire.send_error_to_models(layout, text)
        time.sleep(1.0)  # let the model ranks report it before mpirun ends the job
        return 1
    summaries = layout.servers.gather(server.summary(), root=0)
    if layout.rank == 0:
        assert summaries is not None
        if config.diagnostics.timing:
            write_timing(run_dir, summaries, setup.lag, setup.every)
        replaced = sum(s["nan_replaced"] for s in summaries)
        if replaced:
            print(
                f"mlbridge server: replaced {replaced} NaN value(s) by zero (on_nan = 'zero')",
                flush=True,
            )
        clipped = merged_clipped(summaries)
        if any(clipped.values()):
            counts = ", ".join(f"{name} {n}" for name, n in clipped.items())
            print(
                f"mlbridge server: clipped {sum(clipped.values())} value(s) to the closures' "
                f"clip bounds ({counts})",
                flush=True,
            )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m bridge.server``."""
    parser.add_argument(
        "--config", type=Path, required=True, help="run_config.json (or coupling.toml)"
    )
    parser.add_argument("--run-dir", type=Path, default=Path.cwd(), help="where timing.json goes")


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    A closure allocates the same large temporaries every step (numpy, torch on CPU). With glibc's
    defaults each one above the mmap threshold is a fresh ``mmap`` whose pages fault in again
    every step: measured 2.5x slower for ``smooth3`` on 30 x 70 x 70 blocks (5.3 ms vs 2.1 ms).
    Blocks below ``mmap_threshold`` (glibc's maximum, 32 MiB) come from the heap, and the heap is
    trimmed only above ``trim_threshold``. Returns False where this is not glibc (nothing done).
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(
        mallopt(m_trim_threshold, trim_threshold)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a server rank (under mpirun, after the model ranks)."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.server",
        description="mlbridge inference server (started by `mlbridge run`, after the model ranks)",
        epilog="example:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    keep_freed_memory()
    from mpi4py import MPI

    # the configuration is read before the split, for the time to wait for the model ranks
    problem: str | None = None
    try:
        config = load_config(args.config)
    except Exception as err:  # reported through the handshake, so that the model ranks stop too
        config = CouplingConfig()
        problem = f"cannot load {args.config}: {err}"
    try:
        layout = wire.split_world(
            MPI.COMM_WORLD, wire.COLOUR_SERVER, join_timeout_s=config.server.timeout_s
        )
    except wire.JoinTimeout as err:
        if MPI.COMM_WORLD.Get_rank() == _first_server_rank():
            print(f"mlbridge server: error: {err}", file=sys.stderr, flush=True)
        time.sleep(0.5)
        MPI.COMM_WORLD.Abort(1)
        return 1  # not reached
    run_dir = args.run_dir.resolve()
    (run_dir / f"server.{layout.rank}.pid").write_text(f"{os.getpid()}\n")
    if problem is not None:
        return serve_with_problem(layout, config, run_dir, problem)
    return serve(layout, config, run_dir)


def _first_server_rank() -> int:
    """World rank of the first server (the last program of Open MPI's MPMD line; else this rank)."""
    from mpi4py import MPI

    counts = os.environ.get("OMPI_APP_CTX_NUM_PROCS", "").split()
    if counts and all(c.isdigit() for c in counts):
        return sum(int(c) for c in counts[:-1])
    return MPI.COMM_WORLD.Get_rank()


def serve_with_problem(
    layout: wire.WorldLayout, config: CouplingConfig, run_dir: Path, problem: str
) -> int:
    """Answer the handshake with ``problem`` (the configuration could not be read)."""
    try:
        handshake(layout, config, {}, problem, run_dir)
    except ServerError:
        pass  # server rank 0 has reported it
    return 1


if __name__ == "__main__":
    sys.exit(main())
