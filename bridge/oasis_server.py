"""Inference server for a model that couples through OASIS3-MCT and knows nothing of mlbridge.

``python -m bridge.oasis_server --config RUN/oasis.json --run-dir RUN``, started after the model in
one MPMD job, in the run directory that holds the ``namcouple`` (:func:`prepare_run_dir` writes it
before anything starts: every component reads it in ``oasis_init_comp``).

A model such as a NEMO built with ``key_oasis3`` defines its own OASIS partitions and fields; there
is no handshake. Everything the servers need comes from the configuration
(:class:`OasisCouplingConfig`, the ``[oasis]`` table of ``coupling.toml``): the model component's
name, the global grid ``nx x ny x nz``, the model ranks' boxes (or NEMO's ``jpni x jpnj`` rule), the
OASIS names of the fields the model puts and gets, the closure, the coupling period and run length.

Every server rank:

1. checks the ``namcouple`` in the run directory against the configuration, field by field
   (:func:`bridge.namcouple.compare_namcouple`), and stops the whole job on a difference;
2. joins OASIS as component ``server_component`` (``pyoasis`` or the shim,
   :func:`bridge.transport.oasis.open_backend`);
3. defines orange partitions over its block of :func:`bridge.plan.server_blocks` (all levels;
   the fields are flat grids of ``nx * ny * nz`` points, see ``docs/oasis.md``) and the fields:
   OASIS's MCT routing replaces the plan's sends between model and server ranks;
4. every ``period_s`` seconds of model time: gets the model's fields on its block with the halo
   (either straight from OASIS on overlapping partitions, or exchanged among the server ranks
   over MPI: :class:`OasisServer`), runs the closure on all levels at once, checks for NaN and
   puts the outputs back;
5. ``oasis_terminate``; server rank 0 writes ``RUN/oasis_server_done.json`` (the marker a caller
   checks: with this OASIS version an abort can leave exit status 0).

On any failure the server writes ``RUN/oasis_server_error.txt`` and calls ``oasis_abort``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bridge.mpiexec import Program, python_program
from bridge.namcouple import (
    FIELD_NAME_MAX,
    MODEL_NAME_MAX,
    FieldLink,
    NamcoupleConfig,
    NamcoupleError,
    compare_namcouple,
    read_namcouple,
    write_namcouple,
)
from bridge.plan import (
    BOUNDARIES,
    Box,
    check_tiling,
    pack,
    plan_routes,
    server_blocks,
    split_1d,
    unpack,
)

__all__ = [
    "DONE_MARKER",
    "ERROR_FILE",
    "OasisConfigError",
    "OasisCouplingConfig",
    "OasisServer",
    "PROGRESS_FILE",
    "check_outcome",
    "exchange_block_halos",
    "library_namcouple",
    "main",
    "prepare_run_dir",
    "read_progress",
    "server_programs",
]

CONFIG_FILE = "oasis.json"
"""The configuration as the servers read it, in the run directory."""

DONE_MARKER = "oasis_server_done.json"
"""Written by server rank 0 after ``oasis_terminate``: the run finished."""

ERROR_FILE = "oasis_server_error.txt"
"""Written by the server that gives up, before ``oasis_abort``."""

PROGRESS_FILE = "oasis_server.step"
"""Exchanges served so far, one integer, rewritten by server rank 0 after each coupling date: the
launcher's progress, and its evidence that the job is not stuck in an ``oasis_get`` (which has no
time limit)."""

HALO_EXCHANGES = ("auto", "oasis", "mpi")
"""How server ranks get their halo: see :class:`OasisServer`; ``auto``: oasis when closed."""

LIBRARY_MODEL_COMPONENT = "mlbmod"
"""OASIS component name of a model that links the mlbridge library (``transport = "oasis"``)."""

LIBRARY_SERVER_COMPONENT = "mlbsrv"
"""OASIS component name of the servers of such a model."""

LIBRARY_PREFIX = "MLB_"
"""The servers' OASIS name of model field ``X`` is ``MLB_X`` (the model's is ``X``)."""

HALO_TAG = 7301
"""MPI tag of the halo messages among server ranks (``halo_exchange = "mpi"``)."""

EXAMPLES = "  python -m bridge.oasis_server --config runs/x/oasis.json --run-dir runs/x\n"


class OasisConfigError(ValueError):
    """The ``[oasis]`` table is incomplete or inconsistent; the message names the key."""


class _Stop(RuntimeError):
    """The server gives up: the message goes to stderr and to the error file."""


def _int(table: Mapping[str, Any], key: str, default: int | None = None, minimum: int = 1) -> int:
    value = table.get(key, default)
    if value is None:
        raise OasisConfigError(f"[oasis] {key} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise OasisConfigError(f"[oasis] {key} must be an integer, got {value!r}")
    if value < minimum:
        raise OasisConfigError(f"[oasis] {key} must be at least {minimum}, got {value}")
    return value


def _str(table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise OasisConfigError(f"[oasis] {key} must be a non-empty string, got {value!r}")
    return value


def _names(table: Mapping[str, Any], key: str) -> dict[str, str]:
    value = table.get(key)
    if not isinstance(value, Mapping) or not value:
        raise OasisConfigError(f"[oasis] {key} must be a non-empty table of names, got {value!r}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or not v:
            raise OasisConfigError(f"[oasis] {key}: {k!r} = {v!r} must map a name to a name")
        out[k] = v
    return out


@dataclass(frozen=True)
class OasisCouplingConfig:
    """How to serve a model that couples through OASIS only (the ``[oasis]`` table).

    Parameters
    ----------
    model_component
        The model's OASIS component name (``oasis_init_comp``; NEMO: ``oceanx``), at most
        :data:`bridge.namcouple.MODEL_NAME_MAX` (6) characters.
    server_component
        The servers' component name (at most 6 characters).
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
        Halo rule beyond the grid edge, as :data:`bridge.plan.BOUNDARIES`.
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
        On any inconsistency (boxes that do not tile the grid, a name longer than OASIS keeps, a
        period that does not divide the run, ...), naming the key.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_boxes", tuple(self.model_boxes))
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "outputs", dict(self.outputs))
        object.__setattr__(self, "params", dict(self.params))
        try:
            check_tiling(self.nx, self.ny, self.model_boxes, "[oasis] model boxes")
        except (ValueError, TypeError) as err:
            raise OasisConfigError(str(err)) from None
        if self.boundary not in BOUNDARIES:
            raise OasisConfigError(
                f"[oasis] boundary must be one of {', '.join(BOUNDARIES)}, got {self.boundary!r}"
            )
        if self.halo_exchange not in HALO_EXCHANGES:
            raise OasisConfigError(
                f"[oasis] halo_exchange must be one of {', '.join(HALO_EXCHANGES)}, "
                f"got {self.halo_exchange!r}"
            )
        if self.halo_exchange == "oasis" and self.boundary != "closed":
            raise OasisConfigError(
                f"[oasis] halo_exchange = 'oasis' needs boundary = 'closed' (got "
                f"{self.boundary!r}): use 'mpi' or 'auto' for a wrapped halo"
            )
        if self.lag_s != 0:
            raise OasisConfigError(
                f"[oasis] lag_s = {self.lag_s}: only 0 is supported by the OASIS server for now"
            )
        if self.runtime_s % self.period_s:
            raise OasisConfigError(
                f"[oasis] period_s = {self.period_s} does not divide runtime_s = {self.runtime_s}"
            )
        for key in ("model_component", "server_component"):
            name = getattr(self, key)
            if len(name) > MODEL_NAME_MAX:
                raise OasisConfigError(
                    f"[oasis] {key} = {name!r} has {len(name)} characters; OASIS3-MCT 2.0 keeps "
                    f"{MODEL_NAME_MAX} of a component name ($NBMODEL), so oasis_init_comp would "
                    "not find it in the namcouple"
                )
        if self.model_component == self.server_component:
            raise OasisConfigError(
                f"[oasis] model_component and server_component are both {self.model_component!r}"
            )
        if not self.server_prefix:
            # OASIS aborts (with exit status 0) on a send/receive pair of one name
            raise OasisConfigError(
                "[oasis] server_prefix must not be empty: the servers' field names must differ "
                "from the model's"
            )
        for what, names in (("inputs", self.inputs), ("outputs", self.outputs.values())):
            for name in names:
                longest = max(len(name), len(self.server_prefix + name))
                if longest > FIELD_NAME_MAX:
                    raise OasisConfigError(
                        f"[oasis] {what}: field {name!r} ({len(name)} characters, "
                        f"{len(self.server_prefix + name)} with the server prefix "
                        f"{self.server_prefix!r}) is longer than the {FIELD_NAME_MAX} characters "
                        "OASIS3-MCT 2.0 keeps"
                    )
        try:
            self.namcouple()
        except NamcoupleError as err:
            raise OasisConfigError(f"[oasis] {err}") from None

    # --- the [oasis] table ------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> OasisCouplingConfig:
        """Build from the ``[oasis]`` table of ``coupling.toml`` (or its JSON copy).

        Raises
        ------
        OasisConfigError
            If a key is missing, unknown or has the wrong type.
        """
        known = {
            "model_component", "server_component", "nx", "ny", "nz", "boxes", "jpni", "jpnj",
            "inputs", "outputs", "closure", "params", "period_s", "runtime_s", "lag_s",
            "boundary", "server_prefix", "model_grid", "server_grid", "nlogprt", "device",
            "threads", "halo_exchange",
        }  # fmt: skip
        unknown = sorted(set(table) - known)
        if unknown:
            raise OasisConfigError(f"[oasis] unknown key(s) {unknown} (known: {sorted(known)})")
        nx, ny, nz = _int(table, "nx"), _int(table, "ny"), _int(table, "nz")
        if "boxes" in table:
            if "jpni" in table or "jpnj" in table:
                raise OasisConfigError("[oasis] give either boxes or jpni and jpnj, not both")
            try:
                boxes = tuple(Box(*b) for b in table["boxes"])
            except (TypeError, ValueError) as err:
                raise OasisConfigError(
                    f"[oasis] boxes must be [[i0, i1, j0, j1], ...]: {err}"
                ) from None
        else:
            jpni, jpnj = _int(table, "jpni", 1), _int(table, "jpnj", 1)
            try:
                boxes = tuple(
                    Box(i0, i1, j0, j1)
                    for (j0, j1) in split_1d(ny, jpnj)
                    for (i0, i1) in split_1d(nx, jpni)
                )
            except ValueError as err:
                raise OasisConfigError(f"[oasis] jpni x jpnj = {jpni} x {jpnj}: {err}") from None
        params = table.get("params", {})
        if not isinstance(params, Mapping):
            raise OasisConfigError(f"[oasis] params must be a table, got {params!r}")
        return cls(
            nx=nx,
            ny=ny,
            nz=nz,
            model_boxes=boxes,
            inputs=_names(table, "inputs"),
            outputs=_names(table, "outputs"),
            closure=_str(table, "closure", ""),
            params=params,
            period_s=_int(table, "period_s"),
            runtime_s=_int(table, "runtime_s"),
            model_component=_str(table, "model_component", "ocnmod"),
            server_component=_str(table, "server_component", "mlbsrv"),
            lag_s=_int(table, "lag_s", 0, minimum=0),
            boundary=_str(table, "boundary", "closed"),
            server_prefix=str(table.get("server_prefix", "MLB_")),
            model_grid=_str(table, "model_grid", "ocnt"),
            server_grid=_str(table, "server_grid", "mlbt"),
            nlogprt=_int(table, "nlogprt", 1, minimum=0),
            device=_str(table, "device", "cpu"),
            threads=_int(table, "threads", 1),
            halo_exchange=_str(table, "halo_exchange", "auto"),
        )

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

    def namcouple(self) -> NamcoupleConfig:
        """The namcouple this configuration needs (flat ``nx*ny`` by ``nz`` grids)."""
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
        return NamcoupleConfig(
            models=(self.model_component, self.server_component),
            runtime_s=self.runtime_s,
            fields=tuple(links),
            nlogprt=self.nlogprt,
        )


def library_namcouple(
    nx: int,
    ny: int,
    sent: Mapping[str, int],
    returned: Mapping[str, int],
    every: int,
    steps: int,
    nlogprt: int = 1,
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

    Raises
    ------
    NamcoupleError
        If a name is longer than OASIS keeps (the message names it).
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
    )


# --------------------------------------------------------------------------------------------
# run directory and job (used by the launcher)
# --------------------------------------------------------------------------------------------


def prepare_run_dir(config: OasisCouplingConfig, run_dir: Path) -> Path:
    """Write ``namcouple`` and ``oasis.json`` into ``run_dir`` (before the job starts).

    Returns
    -------
    Path
        The configuration file the servers read (``--config``).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_namcouple(config.namcouple(), run_dir)
    path = run_dir / CONFIG_FILE
    path.write_text(json.dumps(config.to_mapping(), indent=2) + "\n")
    return path


def server_programs(config_file: Path, run_dir: Path, ranks: int) -> Program:
    """The server ranks' part of the MPMD line (after the model's)."""
    return python_program(
        ranks, "bridge.oasis_server", "--config", str(config_file), "--run-dir", str(run_dir)
    )


def check_outcome(run_dir: Path, returncode: int) -> list[str]:
    """Why a finished OASIS job failed, or an empty list when it did not.

    The exit status alone is not enough: an ``oasis_abort`` of this version can end every rank
    with status 0. The job succeeded only if the done marker exists and no error file does.
    """
    problems: list[str] = []
    if returncode != 0:
        problems.append(f"the job ended with exit status {returncode}")
    error = run_dir / ERROR_FILE
    if error.is_file():
        problems.append(f"server error: {error.read_text().strip()}")
    if not (run_dir / DONE_MARKER).is_file():
        problems.append(
            f"the servers did not finish ({DONE_MARKER} missing in {run_dir}); see the nout.* "
            "and debug.* files of OASIS there"
        )
    return problems


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


class OasisServer:
    """One server rank: its block, its OASIS fields, the halo, the closure.

    Two ways to get the halo (``config.halo_exchange``):

    * ``"oasis"``: the received fields are defined on a partition covering the block grown by the
      halo and clipped to the grid; server partitions then overlap, and MCT routes every halo
      cell from the model rank that owns it (checked exact with OASIS3-MCT 2.0). Cells beyond a
      closed edge stay zero. Only for a closed boundary: a wrapped halo could hold one point twice.
    * ``"mpi"``: the received fields cover the block alone, and the halo is exchanged among the
      servers over their OASIS communicator, along ``plan_routes(blocks -> blocks)`` (any
      boundary rule).

    The outputs are always put on the block alone (no overlap: every model point gets one value).

    Parameters
    ----------
    config
        The coupling.
    comm
        The server component's communicator (from OASIS).
    backend
        An :class:`bridge.transport.oasis.OasisBackend` after ``init``.
    closure
        The closure (``bridge.server.resolve_closure``).
    """

    def __init__(self, config: OasisCouplingConfig, comm: Any, backend: Any, closure: Any) -> None:
        from bridge.transport.oasis import box_segments

        self.config = config
        self.comm = comm
        self.backend = backend
        self.closure = closure
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.blocks = server_blocks(config.nx, config.ny, self.size)
        self.block = self.blocks[self.rank]
        self.halo = int(closure.spec.halo)
        self.mode = config.halo_mode
        # halos among servers: the blocks play the part of the model boxes of the plan
        self.routes = plan_routes(
            config.nx, config.ny, self.blocks, self.blocks, self.halo, config.boundary
        )
        nz, npts = config.nz, config.nx * config.ny * config.nz
        self.interior_shape = (nz, *self.block.shape)
        hbox = self.block.grow(self.halo)
        self.haloed_shape = (nz, *hbox.shape)
        if self.mode == "oasis":
            received_box = hbox.intersect(Box(0, config.nx, 0, config.ny))
            assert received_box is not None  # a block is never empty
        else:
            received_box = self.block
        self.received_box = received_box
        # where the received box sits in the haloed block
        self.received_at = received_box.shift(-hbox.i0, -hbox.j0)
        out_part = backend.def_partition(box_segments(config.nx, config.ny, nz, self.block), npts)
        in_part = out_part
        if received_box != self.block:
            in_part = backend.def_partition(
                box_segments(config.nx, config.ny, nz, received_box), npts
            )
        self.in_vars = {
            name: backend.def_var(config.server_name(name), in_part, "in", nz * received_box.size)
            for name in config.inputs
        }
        self.out_vars = {
            out: backend.def_var(config.server_name(name), out_part, "out", nz * self.block.size)
            for out, name in config.outputs.items()
        }
        self.received = {name: np.zeros((nz, *received_box.shape)) for name in config.inputs}
        self.mask = self._mask() if any(f.name == "mask" for f in closure.spec.inputs) else None
        self.timing = {"get_s": 0.0, "halo_s": 0.0, "infer_s": 0.0, "put_s": 0.0}

    def _mask(self) -> np.ndarray:
        """1 inside the grid, 0 beyond a closed edge (no land mask is known without a handshake)."""
        hbox = self.block.grow(self.halo)
        px, py = (self.config.boundary in ("periodic", "periodic_x"),
                  self.config.boundary in ("periodic", "periodic_y"))  # fmt: skip
        ii = np.arange(hbox.i0, hbox.i1)
        jj = np.arange(hbox.j0, hbox.j1)
        inside_i = np.ones(ii.size, bool) if px else (ii >= 0) & (ii < self.config.nx)
        inside_j = np.ones(jj.size, bool) if py else (jj >= 0) & (jj < self.config.ny)
        horizontal = np.outer(inside_j, inside_i).astype(np.float64)
        return np.broadcast_to(horizontal, self.haloed_shape).copy()

    def haloed(self, received: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each field on this block grown by the halo (zero beyond a closed edge)."""
        out = {name: np.zeros(self.haloed_shape) for name in received}
        for name, array in received.items():
            out[name][(slice(None), *self.received_at.slices())] = array
        if self.mode == "mpi":
            self._exchange_halos(received, out)
        return out

    def _exchange_halos(
        self, interior: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]
    ) -> None:
        """Fill the halo of ``out`` from the other servers' blocks (MPI, non-blocking)."""
        exchange_block_halos(self.comm, self.routes, self.rank, interior, out)

    def step(self, date: int) -> None:
        """One coupling date: get, halo exchange, closure, NaN check, put."""
        t0 = time.perf_counter()
        for name, var in self.in_vars.items():
            flat = self.received[name].reshape(-1)
            self.backend.get(var, date, flat)
            self._check_finite(
                date, f"received field {name}", self.received[name], self.received_box
            )
        t1 = time.perf_counter()
        by_input = {self.config.inputs[n]: a for n, a in self.received.items()}
        inputs = self.haloed(by_input)
        if self.mask is not None:
            inputs["mask"] = self.mask
        t2 = time.perf_counter()
        outputs = self.closure(inputs)
        t3 = time.perf_counter()
        for out, var in self.out_vars.items():
            if out not in outputs:
                raise _Stop(f"closure {self.config.closure!r} did not return output {out!r}")
            array = np.ascontiguousarray(outputs[out], dtype=np.float64)
            if array.shape != self.interior_shape:
                raise _Stop(
                    f"closure output {out!r} has shape {array.shape}, expected "
                    f"{self.interior_shape}"
                )
            self._check_finite(date, f"closure output {out}", array, self.block)
            self.backend.put(var, date, array.reshape(-1))
        t4 = time.perf_counter()
        for key, dt in zip(self.timing, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            self.timing[key] += dt

    @staticmethod
    def _check_finite(date: int, what: str, array: np.ndarray, box: Box) -> None:
        bad = ~np.isfinite(array)
        if bad.any():
            k, j, i = (int(x) for x in np.argwhere(bad)[0])
            raise _Stop(
                f"{what}: {int(bad.sum())} non-finite value(s) at date {date} s, first at global "
                f"(i, j, k) = ({box.i0 + i + 1}, {box.j0 + j + 1}, {k + 1}) "
                "(1-based)"
            )

    def run(self, on_step: Callable[[int], None] | None = None) -> int:
        """Serve every coupling date; return the number served.

        Parameters
        ----------
        on_step
            Called with the number of dates served after each one (progress).
        """
        for n in range(self.config.exchanges):
            self.step(n * self.config.period_s)
            if on_step is not None:
                on_step(n + 1)
        return self.config.exchanges


def write_progress(run_dir: Path, served: int) -> None:
    """Rewrite ``RUN/oasis_server.step`` (atomically: the launcher reads it while it changes)."""
    path = run_dir / PROGRESS_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(f"{served}\n")
        os.replace(tmp, path)
    except OSError:
        pass  # progress is a convenience: never a reason to stop serving


def read_progress(run_dir: Path) -> int | None:
    """Exchanges served so far (``RUN/oasis_server.step``); None before the first one."""
    try:
        return int((run_dir / PROGRESS_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def exchange_block_halos(
    comm: Any,
    routes: Any,
    rank: int,
    interior: Mapping[str, np.ndarray],
    out: Mapping[str, np.ndarray],
) -> None:
    """Fill the halos of server ``rank``'s haloed blocks from the other servers' blocks.

    Parameters
    ----------
    comm
        The servers' communicator (``mpi4py``).
    routes
        ``plan_routes(nx, ny, blocks, blocks, halo, boundary)``: the server blocks playing the
        model boxes (wrapped cells of one's own block, when periodic, are copied locally).
    rank
        This server's rank in ``comm``.
    interior
        Each field on this rank's block alone, ``(nlev, by, bx)`` (views are fine).
    out
        The same fields on the haloed block, ``(nlev, by + 2h, bx + 2h)``, filled in place.
    """
    from mpi4py import MPI

    names = list(interior)
    levels = {name: interior[name].shape[0] for name in names}
    requests = []
    recv_buffers: list[tuple[int, np.ndarray]] = []
    for src in routes.server_recv_peers(rank):
        segments = routes.sends[(src, rank)]
        if src == rank:  # wrapped cells of one's own block (periodic)
            for name in names:
                unpack(pack(interior[name], segments), segments, out[name], side="dst")
            continue
        cells = sum(seg.size for seg in segments)
        buf = np.empty(sum(levels.values()) * cells)
        requests.append(comm.Irecv(buf, source=src, tag=HALO_TAG))
        recv_buffers.append((src, buf))
    send_buffers = []  # kept alive until Waitall
    for (src, dst), segments in routes.sends.items():
        if src != rank or dst == rank:
            continue
        buf = np.concatenate([pack(interior[name], segments) for name in names])
        send_buffers.append(buf)
        requests.append(comm.Isend(buf, dest=dst, tag=HALO_TAG))
    MPI.Request.Waitall(requests)
    for src, buf in recv_buffers:
        segments = routes.sends[(src, rank)]
        cells = sum(seg.size for seg in segments)
        offset = 0
        for name in names:
            count = levels[name] * cells
            unpack(buf[offset : offset + count], segments, out[name], side="dst")
            offset += count


def _fail(run_dir: Path, message: str, backend: Any = None) -> int:
    """Report, then end the whole job (``oasis_abort`` once OASIS is up, else MPI_Abort)."""
    from mpi4py import MPI

    print(f"mlbridge oasis server: error: {message}", file=sys.stderr, flush=True)
    try:
        with open(run_dir / ERROR_FILE, "a") as fh:
            fh.write(message + "\n")
    except OSError:
        pass
    if backend is not None:
        backend.abort("bridge.oasis_server", message[:1000])
    MPI.COMM_WORLD.Abort(1)
    return 1


def serve(
    config: OasisCouplingConfig,
    run_dir: Path,
    *,
    prefer: Literal["auto", "pyoasis", "shim"] = "auto",
) -> int:
    """Run one server rank to the end; return the exit status (0, or it aborts the job)."""
    from mpi4py import MPI  # noqa: F401  (before OASIS: MPI is initialised here, not by OASIS)

    from bridge.transport.oasis import OasisError, OasisNotAvailableError, open_backend

    try:
        problems = compare_namcouple(config.namcouple(), read_namcouple(run_dir / "namcouple"))
    except NamcoupleError as err:
        problems = [str(err)]
    if problems:
        return _fail(
            run_dir,
            f"the namcouple in {run_dir} does not match the configuration:\n  "
            + "\n  ".join(problems),
        )
    try:
        backend = open_backend(prefer, None)
    except OasisNotAvailableError as err:
        return _fail(run_dir, str(err))
    try:
        from bridge.server import resolve_closure

        closure = resolve_closure(
            config.closure,
            config.params,
            config.device,
            config.threads,
            inputs=tuple(config.inputs.values()),
        )
    except Exception as err:  # reported before OASIS starts: the job ends cleanly
        return _fail(run_dir, f"closure {config.closure!r}: {err}")
    missing = sorted(set(config.outputs) - {f.name for f in closure.spec.outputs})
    if missing:
        known = [f.name for f in closure.spec.outputs]
        return _fail(run_dir, f"[oasis] outputs: closure {config.closure!r} has no {missing} "
                     f"(it returns {known})")  # fmt: skip
    start = time.perf_counter()
    try:
        comm = backend.init(config.server_component)
        server = OasisServer(config, comm, backend, closure)
        backend.enddef()
        rank = comm.Get_rank()
        served = server.run((lambda n: write_progress(run_dir, n)) if rank == 0 else None)
    except (_Stop, OasisError) as err:
        return _fail(run_dir, str(err), backend)
    except Exception as err:  # a closure may fail in many ways: report it, end the job
        return _fail(
            run_dir, f"closure {config.closure!r} failed: {type(err).__name__}: {err}", backend
        )
    timings = comm.gather(server.timing, root=0)
    backend.terminate()
    if rank == 0:
        summary = {
            "exchanges": served,
            "server_ranks": comm.Get_size(),
            "backend": backend.kind,
            "halo_exchange": server.mode,
            "elapsed_s": time.perf_counter() - start,
            "max_over_ranks": {k: max(t[k] for t in timings) for k in server.timing},
        }
        (run_dir / DONE_MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    # no collective on MPI_COMM_WORLD here: a model whose OASIS started MPI has finalised it
    return 0


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge.oasis_server --config RUN/oasis.json --run-dir RUN``."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.oasis_server",
        description="Serve closures to a model that couples through OASIS3-MCT only.",
        epilog="example:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="the [oasis] table as JSON")
    parser.add_argument("--run-dir", type=Path, required=True, help="where the namcouple is")
    parser.add_argument(
        "--backend", choices=("auto", "pyoasis", "shim"), default="auto", help="OASIS binding"
    )
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    try:
        config = OasisCouplingConfig.from_mapping(json.loads(args.config.read_text()))
    except (OSError, ValueError) as err:
        return _fail(run_dir, f"{args.config}: {err}")
    return serve(config, run_dir, prefer=args.backend)


if __name__ == "__main__":
    sys.exit(main())
