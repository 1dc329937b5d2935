"""The servers' NetCDF diagnostics: ``RUN/diagnostics.nc``, the exchanged fields and the outputs.

With ``[diagnostics] netcdf = true`` every server rank hands :class:`DiagnosticsWriter` what it
holds after each exchange: the model fields it received (on its block grown by the halo) and the
closure outputs (on its block), keyed by model field. Every ``every``-th exchange (the
``every``-th, the ``2 every``-th...; ``every`` counts exchanges, not model steps) is a record:

* each server rank copies the interiors of the selected fields (``fields``, else all) into one
  contiguous buffer, and server rank 0 gathers them over the servers' communicator
  (``MPI_Igatherv``, waited with ``server.timeout_s`` like every other wait);
* server rank 0 places the blocks into global ``(nlev, ny, nx)`` arrays
  (:func:`unpack_record`) and appends the record to the file at once, so that a run that
  fails later still leaves every record written so far (the file is closed after each record:
  a rank killed by ``mpirun`` between two records leaves a readable file).

Gather, not one part file per rank merged at the end: the servers already move in step (each
exchange waits for the same model ranks), a record is one global field per selected field, and
the file is complete and readable at any moment, also after a failure, without a merge step
that a failed run would never reach. Memory: the selected fields of one record on the global
grid, twice (as gathered, as placed) on server rank 0, and one block record on every rank,
allocated at the first record and reused; records are never held beyond their write.

The file is defined by xarray (netCDF4 engine) at the first record, with CF attributes
(``long_name``; ``units`` where the closure's manifest gives them), the record
coordinate ``kt`` (the model step of each record, unlimited) and dims ``(kt, z_<nlev>, y, x)``
over the global grid; later records are appended with netCDF4 (xarray's engine), since xarray
cannot append along an existing dimension of a NetCDF file. The closures' name, version and
sha256 are added as global attributes by the launcher after the run
(:func:`bridge.launch.rundir.stamp_outputs`).

With ``netcdf = false`` no writer exists and the step loop does nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.closures.base import Closure, ClosureSpec
from bridge.config.coupling import DiagnosticsConfig, ExchangeConfig, ServerConfig, exchange_name
from bridge.domain.plan import Box
from bridge.server.engine import Block, ServerError

DIAGNOSTICS_FILE = "diagnostics.nc"
"""The file the servers write into the run directory."""

RECORD_DIM = "kt"


class DiagnosticsError(ServerError):
    """A record could not be gathered or written (the message names the file or the rank)."""


@dataclass(frozen=True)
class DiagnosticField:
    """One variable of ``diagnostics.nc``.

    Attributes
    ----------
    name
        The model field (the variable's name).
    role
        ``input`` (sent by the model, read on the block's interior) or ``output`` (a closure
        output returned to the model).
    long_name, units
        CF ``long_name`` and ``units`` (empty: unknown, not written).
    """

    name: str
    role: str
    long_name: str
    units: str = ""

    def attrs(self) -> dict[str, str]:
        """The variable's attributes (``units`` only when known)."""
        attrs = {"long_name": self.long_name}
        if self.units:
            attrs["units"] = self.units
        return attrs


def diagnostic_fields(
    exchanges: Sequence[ExchangeConfig],
    specs: Mapping[str, ClosureSpec],
    selected: Sequence[str] = (),
) -> tuple[DiagnosticField, ...]:
    """The variables to write: the exchanges' model fields in, then out, in exchange order.

    Parameters
    ----------
    exchanges
        The exchanges served.
    specs
        Each exchange's closure spec, by :func:`exchange_name` (the units).
    selected
        ``[diagnostics] fields``; empty: every exchanged model field.

    Raises
    ------
    DiagnosticsError
        If ``selected`` names a model field no exchange moves (the configuration check refuses
        it before launch; this guards a hand-written ``run_config.json``).
    """
    found: dict[str, DiagnosticField] = {}
    for ex in exchanges:
        name = exchange_name(ex)
        spec = specs.get(name)
        ins = {f.name: f for f in spec.inputs} if spec is not None else {}
        for closure_input, field in ex.inputs.items():
            if field not in found:
                fs = ins.get(closure_input)
                found[field] = DiagnosticField(
                    field,
                    "input",
                    f"model field {field} received by the servers (input {closure_input} of "
                    f"exchange {name})",
                    fs.units if fs else "",
                )
    for ex in exchanges:
        name = exchange_name(ex)
        spec = specs.get(name)
        outs = {f.name: f for f in spec.outputs} if spec is not None else {}
        closure = spec.name if spec is not None else ex.closure
        for closure_output, field in ex.outputs.items():
            if field not in found:
                fs = outs.get(closure_output)
                found[field] = DiagnosticField(
                    field,
                    "output",
                    f"output {closure_output} of closure {closure} (exchange {name}), "
                    f"returned to model field {field}",
                    fs.units if fs else "",
                )
    if not selected:
        return tuple(found.values())
    unknown = [f for f in selected if f not in found]
    if unknown:
        raise DiagnosticsError(
            f"diagnostics.fields: {', '.join(unknown)} not exchanged (the exchanged model "
            f"fields: {', '.join(found)})"
        )
    return tuple(found[f] for f in dict.fromkeys(selected))


def preload_netcdf() -> None:
    """Import netCDF4 and xarray now: before the OASIS shim is loaded, if it is.

    The shim is loaded with ``RTLD_GLOBAL`` and brings the system's ``libnetcdf`` (through
    OASIS3-MCT) into the global symbol scope; netCDF4's extension imported after it binds to
    that library instead of the one in its wheel, and crashes at import (Debian's
    ``libnetcdf.so.19`` with the netCDF4 1.7 wheel: a segmentation fault). Imported first, it
    binds to its own.
    """
    import netCDF4  # noqa: F401
    import xarray  # noqa: F401


# --------------------------------------------------------------------------------------------
# a record: blocks <-> one buffer <-> global arrays (pure)
# --------------------------------------------------------------------------------------------


def pack_record(arrays: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """One rank's record: each ``(nlev, ny, nx)`` array, C order, one after the other."""
    total = sum(a.size for a in arrays)
    if out is None or out.size != total:
        out = np.empty(total)
    at = 0
    for a in arrays:
        out[at : at + a.size].reshape(a.shape)[...] = a
        at += a.size
    return out


def unpack_record(
    buffer: np.ndarray,
    boxes: Sequence[Box],
    nlevs: Sequence[int],
    nx: int,
    ny: int,
    out: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Global ``(nlev, ny, nx)`` arrays from the records of every block, in ``boxes`` order.

    ``buffer`` is the concatenation of :func:`pack_record` of each block (server-rank order),
    each holding the fields of ``nlevs`` in order on its box.
    """
    fields = (
        list(out) if out is not None else [np.zeros((n, ny, nx)) for n in nlevs]
    )  # the blocks tile the grid: every point is written
    at = 0
    for box in boxes:
        for field, nlev in zip(fields, nlevs, strict=True):
            size = nlev * box.ny * box.nx
            field[:, box.j0 : box.j1, box.i0 : box.i1] = buffer[at : at + size].reshape(
                nlev, box.ny, box.nx
            )
            at += size
    if at != buffer.size:
        raise ValueError(f"a record of {buffer.size} values for blocks holding {at}")
    return fields


def record_dataset(kt: int, fields: Sequence[DiagnosticField], arrays: Sequence[np.ndarray]) -> Any:
    """The first record as an ``xarray.Dataset`` (dims ``(kt, z_<nlev>, y, x)``)."""
    import xarray as xr

    data = {
        f.name: xr.DataArray(
            a[None], dims=(RECORD_DIM, f"z_{a.shape[0]}", "y", "x"), attrs=f.attrs()
        )
        for f, a in zip(fields, arrays, strict=True)
    }
    coords = {
        RECORD_DIM: xr.DataArray(
            np.array([kt], dtype=np.int32),
            dims=(RECORD_DIM,),
            attrs={"long_name": "model time step of the exchange"},
        )
    }
    return xr.Dataset(
        data,
        coords=coords,
        attrs={
            "title": "mlbridge diagnostics: model fields received by the inference servers and "
            "closure outputs returned to the model",
            "Conventions": "CF-1.8",
            "source": "mlbridge inference servers",
        },
    )


# --------------------------------------------------------------------------------------------
# the writer
# --------------------------------------------------------------------------------------------


class DiagnosticsWriter:
    """Collects the records on server rank 0 and appends them to ``diagnostics.nc``.

    Parameters
    ----------
    path
        The file (written by server rank 0 only).
    comm
        The servers' communicator (mpi4py), or None for a single server rank.
    boxes
        Every server rank's block, in rank order.
    rank
        This server rank.
    halo
        Cells around the received blocks (the interiors are written).
    nx, ny
        The global grid.
    fields
        What to write (:func:`diagnostic_fields`).
    every
        A record every this many exchanges.
    timeout_s
        How long server rank 0 waits for the other ranks' blocks.
    """

    def __init__(
        self,
        path: Path,
        comm: Any,
        boxes: Sequence[Box],
        rank: int,
        halo: int,
        nx: int,
        ny: int,
        fields: Sequence[DiagnosticField],
        every: int,
        timeout_s: float,
    ) -> None:
        self.path = Path(path)
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.boxes = tuple(boxes)
        self.rank = rank
        self.halo = halo
        self.nx, self.ny = nx, ny
        self.fields = tuple(fields)
        self.every = every
        self.timeout_s = timeout_s
        self.exchanges = 0
        self.records = 0
        self.seconds = 0.0
        self._send: np.ndarray | None = None
        self._recv: np.ndarray | None = None
        self._global: list[np.ndarray] | None = None
        self._pending: Any = None  # a non-root rank's gather still in flight (and its buffer)
        if rank == 0:  # before the step loop, not at the first record (~0.3 s)
            preload_netcdf()

    def record(
        self, kt: int, blocks: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> None:
        """Count an exchange; every ``every``-th, gather the fields and append the record.

        Call it once the outputs have gone: server rank 0 writes while the model steps on.

        Raises
        ------
        DiagnosticsError
            If a rank's blocks do not arrive within ``timeout_s`` or the file cannot be written.
        """
        self.exchanges += 1
        if self.exchanges % self.every:
            return
        t0 = time.perf_counter()
        h = self.halo
        box = self.boxes[self.rank]
        try:
            parts = [
                blocks[f.name][:, h : h + box.ny, h : h + box.nx]
                if f.role == "input"
                else outputs[f.name]
                for f in self.fields
            ]
        except KeyError as err:
            raise DiagnosticsError(
                f"server rank {self.rank}: model field {err} is not exchanged at step {kt}"
            ) from None
        nlevs = [p.shape[0] for p in parts]
        self._finish_pending()
        self._send = pack_record(parts, self._send)
        if self.comm is None:
            received = self._send
        else:
            received = self._gather(nlevs)
        if self.rank == 0:
            assert received is not None
            self._global = unpack_record(
                received, self.boxes, nlevs, self.nx, self.ny, self._global
            )
            self._write(kt, self._global)
        self.records += 1
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        """After the last exchange: the last gather completes; server rank 0 says what it wrote."""
        self._finish_pending()
        if self.rank == 0:
            where = self.path if self.records else f"no record (every = {self.every})"
            print(
                f"mlbridge server: diagnostics: {self.records} record(s) of "
                f"{', '.join(f.name for f in self.fields)} in {where} ({self.seconds:.3f} s)",
                flush=True,
            )

    # --- helpers -----------------------------------------------------------------------------

    def _gather(self, nlevs: Sequence[int]) -> np.ndarray | None:
        from mpi4py import MPI

        from bridge.transport import mpi as wire

        assert self.comm is not None and self._send is not None
        if self.rank != 0:
            request = self.comm.Igatherv([self._send, MPI.DOUBLE], None, root=0)
            self._pending = (request, self._send)
            self._send = None  # in flight: back in _finish_pending once the gather is done
            return None
        levels = sum(nlevs)
        counts = [levels * b.ny * b.nx for b in self.boxes]
        if self._recv is None or self._recv.size != sum(counts):
            self._recv = np.empty(sum(counts))
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
        request = self.comm.Igatherv(
            [self._send, MPI.DOUBLE], [self._recv, (counts, displs), MPI.DOUBLE], root=0
        )
        try:
            wire.wait_all([request], self.timeout_s, "the other server ranks' diagnostics")
        except wire.TransportTimeout as err:
            raise DiagnosticsError(f"server rank 0: {err}") from None
        return self._recv

    def _finish_pending(self) -> None:
        if self._pending is None:
            return
        from bridge.transport import mpi as wire

        request, buffer = self._pending
        try:
            wire.wait_all([request], self.timeout_s, "server rank 0 to take the diagnostics")
        except wire.TransportTimeout as err:
            raise DiagnosticsError(f"server rank {self.rank}: {err}") from None
        self._pending = None
        self._send = buffer  # free again: reuse it

    def _write(self, kt: int, arrays: Sequence[np.ndarray]) -> None:
        try:
            if self.records == 0:
                ds = record_dataset(kt, self.fields, arrays)
                encoding: dict[str, dict[str, Any]] = {
                    f.name: {"_FillValue": None} for f in self.fields
                }
                encoding[RECORD_DIM] = {"dtype": "int32"}
                ds.to_netcdf(
                    self.path,
                    mode="w",
                    engine="netcdf4",
                    unlimited_dims=[RECORD_DIM],
                    encoding=encoding,
                )
                return
            import netCDF4

            with netCDF4.Dataset(self.path, "a") as ds:
                n = ds.dimensions[RECORD_DIM].size
                ds.variables[RECORD_DIM][n] = kt
                for f, a in zip(self.fields, arrays, strict=True):
                    ds.variables[f.name][n] = a
        except (OSError, RuntimeError, ValueError) as err:
            raise DiagnosticsError(
                f"{self.path}: cannot write the record of step {kt}: {err}"
            ) from None


def open_diagnostics(
    config: DiagnosticsConfig,
    run_dir: Path,
    comm: Any,
    boxes: Sequence[Box],
    block: Block,
    exchanges: Sequence[ExchangeConfig],
    closures: Mapping[str, Closure],
    timeout_s: float = ServerConfig.timeout_s,
) -> DiagnosticsWriter | None:
    """The writer of a run on one server rank, or None with ``netcdf = false``.

    ``comm`` is the servers' communicator, ``boxes`` every server rank's block (they tile the
    global grid), ``block`` this rank's, ``closures`` the closure of each exchange by
    :func:`exchange_name`.

    Raises
    ------
    DiagnosticsError
        As :func:`diagnostic_fields`.
    """
    if not config.netcdf:
        return None
    fields = diagnostic_fields(exchanges, {n: c.spec for n, c in closures.items()}, config.fields)
    return DiagnosticsWriter(
        Path(run_dir) / DIAGNOSTICS_FILE,
        comm,
        boxes,
        block.rank,
        block.halo,
        max(b.i1 for b in boxes),
        max(b.j1 for b in boxes),
        fields,
        config.every,
        timeout_s,
    )
