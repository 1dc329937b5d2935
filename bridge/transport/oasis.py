"""OASIS3-MCT from Python: ``pyoasis`` when importable, else a ctypes binding to the shim.

``pyoasis`` exists from OASIS3-MCT 4 on (HPC builds). Debian's ``liboasis3`` (OASIS3-MCT 2.0) has no
Python API, so ``fortran_stubs/oasis`` builds ``libmlb_oasis_shim.so``, a few ISO_C_BINDING wrappers
over the ``oasis_*`` calls, and :class:`ShimOasis` calls it through ctypes. Both backends offer the
same small interface (:class:`OasisBackend`): ``init``, ``def_partition``, ``def_var``, ``enddef``,
``put``, ``get``, ``terminate``, ``abort``.

Three-dimensional fields
------------------------
OASIS3-MCT 2.0 exchanges 1D or 2D arrays only and has no bundles, so a field of ``nx x ny x nz``
points is described as a flat grid of ``nx * ny * nz`` points, point ``(i, j, k)`` (0-based) at
index ``i + nx * (j + ny * k)``. A box of the horizontal grid is an orange partition with one
segment per (level, row) (:func:`box_segments`), and the local array is the box's C-ordered
``(nz, ny, nx)`` block, flattened: the same memory order as the segments.

MPI start-up
------------
``mpi4py`` is imported before OASIS is touched, so MPI is initialised by mpi4py and OASIS does
not call ``MPI_Init`` again; ``oasis_terminate`` then leaves MPI running and mpi4py finalises it
at exit.
Nothing here runs at import time: the library is loaded by :func:`open_backend`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from bridge.domain.plan import Box
from bridge.paths import default_build_dir

__all__ = [
    "NAME_MAX",
    "SHIM_NAME",
    "Direction",
    "OasisBackend",
    "OasisError",
    "OasisNotAvailableError",
    "OasisVar",
    "PyOasis",
    "ServerBlockFields",
    "ShimOasis",
    "box_segments",
    "find_shim",
    "open_backend",
    "orange_partition",
]

SHIM_NAME = "libmlb_oasis_shim.so"
"""File name of the shim library built by ``fortran_stubs/oasis``."""

NAME_MAX = 128
"""Longest field (and component) name OASIS3-MCT 2.0 keeps: ``ic_lvar`` of ``mod_oasis_kinds``.

A longer name is cut to 128 characters by ``oasis_def_var`` and no longer matches the namcouple.
"""

Direction = Literal["in", "out"]
"""``"in"``: the component receives the field (``OASIS_In``); ``"out"``: it sends it."""

_INFO_NAMES = (
    "Ok",
    "Sent",
    "Recvd",
    "SentOut",
    "RecvOut",
    "ToRest",
    "FromRest",
    "Output",
    "Input",
    "ToRestOut",
    "FromRestOut",
    "LocTrans",
)


class OasisNotAvailableError(RuntimeError):
    """Neither ``pyoasis`` nor the shim library can be loaded; the message says what to build."""


class OasisError(RuntimeError):
    """An OASIS call returned an error status; the message names the call and its argument."""


@dataclass(frozen=True)
class OasisVar:
    """A coupling field defined with :meth:`OasisBackend.def_var`.

    Attributes
    ----------
    name
        The OASIS name (as in the namcouple).
    direction
        ``"in"`` (received) or ``"out"`` (sent).
    size
        Number of points of the local partition (the length of the flat array).
    handle
        The backend's handle (an integer id for the shim, a ``pyoasis.Var`` for pyoasis).
    """

    name: str
    direction: Direction
    size: int
    handle: Any


class OasisBackend(Protocol):
    """What the servers need from OASIS, whatever the binding."""

    kind: str

    def init(self, component: str) -> Any:
        """``oasis_init_comp``; returns the component's communicator as an ``mpi4py`` Comm."""

    def def_partition(self, segments: Sequence[tuple[int, int]], global_size: int) -> Any:
        """An orange partition of ``(global offset, length)`` segments; returns its handle."""

    def def_var(self, name: str, partition: Any, direction: Direction, size: int) -> OasisVar:
        """``oasis_def_var`` of a flat float64 field of ``size`` local points."""

    def enddef(self) -> None:
        """``oasis_enddef``."""

    def put(self, var: OasisVar, date: int, array: np.ndarray) -> int:
        """``oasis_put`` of a float64 array of ``var.size`` points at ``date`` seconds."""

    def get(self, var: OasisVar, date: int, out: np.ndarray) -> int:
        """``oasis_get`` into ``out`` (float64, ``var.size`` points) at ``date`` seconds."""

    def terminate(self) -> None:
        """``oasis_terminate``."""

    def abort(self, routine: str, message: str) -> None:
        """``oasis_abort``: ends the whole coupled job."""


# --------------------------------------------------------------------------------------------
# partitions (pure)
# --------------------------------------------------------------------------------------------


def box_segments(nx: int, ny: int, nz: int, box: Box) -> list[tuple[int, int]]:
    """Orange segments of ``box`` (all levels) in the flat ``nx * ny * nz`` index space.

    One segment ``(offset, length)`` per (level, row) of the box, levels outer, rows inner, so the
    local points follow the C-ordered ``(nz, box.ny, box.nx)`` block; segments that follow each
    other in the flat space (a box spanning whole rows) are merged, as fewer segments make
    OASIS's routing cheaper.

    Raises
    ------
    ValueError
        If the box reaches outside the ``nx x ny`` grid or ``nz < 1``.
    """
    if nz < 1:
        raise ValueError(f"nz must be at least 1, got {nz}")
    if box.size and not Box(0, nx, 0, ny).contains_box(box):
        raise ValueError(f"box {box} lies outside the {nx} x {ny} grid")
    if box.size == 0:
        return []
    segments: list[tuple[int, int]] = []
    for k in range(nz):
        for j in range(box.j0, box.j1):
            offset = box.i0 + nx * (j + ny * k)
            if segments and sum(segments[-1]) == offset:
                segments[-1] = (segments[-1][0], segments[-1][1] + box.nx)
            else:
                segments.append((offset, box.nx))
    return segments


def orange_partition(segments: Sequence[tuple[int, int]]) -> np.ndarray:
    """The OASIS partition vector ``[3, nseg, off1, len1, off2, len2, ...]`` (int32).

    Raises
    ------
    ValueError
        If a segment has a negative offset or a length below 1.
    """
    flat: list[int] = [3, len(segments)]
    for offset, length in segments:
        if offset < 0 or length < 1:
            raise ValueError(f"bad orange segment (offset={offset}, length={length})")
        flat += [int(offset), int(length)]
    return np.asarray(flat, dtype=np.int32)


class ServerBlockFields:
    """A server rank's OASIS fields for a model that links the mlbridge library.

    The model puts each sent field on its interior box (flat partitions, one segment per level
    and row) and gets each returned field there; this server rank defines the sent fields on its
    block grown by the halo (clipped to the grid: MCT routes every halo cell from the model rank
    that owns it) or, with ``halo_mode = "mpi"``, on its block alone (the caller then exchanges
    the halo among the servers), and the returned fields on its block. The OASIS name of model
    field ``X`` is ``X`` on the model's side and ``prefix + X`` here.

    Parameters
    ----------
    backend
        An :class:`OasisBackend` after ``init``.
    nx, ny
        The global grid.
    block
        This server rank's block (global, 0-based, half-open).
    halo
        The halo the closures need.
    halo_mode
        ``"oasis"`` or ``"mpi"``.
    sent, returned
        Levels of each field the model sends, and of each it receives, in definition order.
    prefix
        The servers' name prefix.
    """

    def __init__(
        self,
        backend: OasisBackend,
        nx: int,
        ny: int,
        block: Box,
        halo: int,
        halo_mode: str,
        sent: dict[str, int],
        returned: dict[str, int],
        prefix: str,
    ) -> None:
        self.backend = backend
        hbox = block.grow(halo)
        received = hbox.intersect(Box(0, nx, 0, ny)) if halo_mode == "oasis" else block
        assert received is not None  # a block is never empty
        self.received_box = received
        self.received_at = received.shift(-hbox.i0, -hbox.j0)
        partitions: dict[tuple[Box, int], Any] = {}

        def partition(box: Box, nlev: int) -> Any:
            if (box, nlev) not in partitions:
                segments = box_segments(nx, ny, nlev, box)
                partitions[(box, nlev)] = backend.def_partition(segments, nx * ny * nlev)
            return partitions[(box, nlev)]

        self.in_vars = {
            name: backend.def_var(prefix + name, partition(received, n), "in", n * received.size)
            for name, n in sent.items()
        }
        self.out_vars = {
            name: backend.def_var(prefix + name, partition(block, n), "out", n * block.size)
            for name, n in returned.items()
        }
        self.scratch = {name: np.zeros((n, *received.shape)) for name, n in sent.items()}

    def get(self, date: int, blocks: dict[str, np.ndarray]) -> None:
        """``oasis_get`` of every sent field at ``date`` into the haloed ``blocks``."""
        where = (slice(None), *self.received_at.slices())
        for name, var in self.in_vars.items():
            self.backend.get(var, date, self.scratch[name].reshape(-1))
            blocks[name][where] = self.scratch[name]

    def put(self, date: int, outputs: dict[str, np.ndarray]) -> None:
        """``oasis_put`` every returned field at ``date`` from ``outputs`` (``(nlev, by, bx)``)."""
        for name, var in self.out_vars.items():
            array = np.ascontiguousarray(outputs[name], dtype=np.float64)
            self.backend.put(var, date, array.reshape(-1))


# --------------------------------------------------------------------------------------------
# the shim (ctypes)
# --------------------------------------------------------------------------------------------


def find_shim(build_dir: Path | str | None = None) -> Path:
    """Locate ``libmlb_oasis_shim.so``.

    Looked for, in order: ``$MLBRIDGE_OASIS_SHIM`` (a file), then ``lib/``, ``bin/``,
    ``oasis/lib/`` and ``oasis/bin/`` of ``build_dir`` (default
    :func:`bridge.paths.default_build_dir`: ``$MLBRIDGE_BUILD_DIR``, else ``build/`` of a
    checkout, else the user's data directory).

    Raises
    ------
    OasisNotAvailableError
        If it is nowhere, with every place looked at.
    """
    override = os.environ.get("MLBRIDGE_OASIS_SHIM")
    if override:
        path = Path(override)
        if path.is_file():
            return path.resolve()
        raise OasisNotAvailableError(f"MLBRIDGE_OASIS_SHIM={override!r} is not a file")
    if build_dir is None:
        build_dir = default_build_dir()
    base = Path(build_dir).resolve()
    candidates = [base / sub / SHIM_NAME for sub in ("lib", "bin", "oasis/lib", "oasis/bin")]
    for path in candidates:
        if path.is_file():
            return path
    raise OasisNotAvailableError(
        "OASIS3-MCT is not available from Python: pyoasis is not importable and the shim "
        f"{SHIM_NAME} was not found (looked in {', '.join(str(p.parent) for p in candidates)}). "
        "Install liboasis3-dev and libnetcdff-dev and run `mlbridge build` (it builds the shim "
        "when CMake finds OASIS3-MCT), or set MLBRIDGE_OASIS_SHIM to the library"
    )


def _check_name(what: str, name: str) -> bytes:
    if not name or len(name) > NAME_MAX or not name.isascii() or " " in name:
        raise OasisError(
            f"{what} {name!r}: OASIS names must be 1 to {NAME_MAX} ASCII characters without "
            f"blanks (got {len(name)} characters)"
        )
    return name.encode("ascii")


class ShimOasis:
    """OASIS3-MCT through ``libmlb_oasis_shim.so`` (ctypes).

    Parameters
    ----------
    library
        Path of the shim; default :func:`find_shim`.

    Raises
    ------
    OasisNotAvailableError
        If the library cannot be found or loaded.
    """

    kind = "shim"

    def __init__(self, library: Path | str | None = None) -> None:
        from mpi4py import MPI  # noqa: F401  (MPI must be up before OASIS looks at it)

        path = Path(library) if library is not None else find_shim()
        try:
            self._lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            raise OasisNotAvailableError(f"cannot load the OASIS shim {path}: {err}") from None
        self.path = path
        self._declare()
        codes = (ctypes.c_int32 * len(_INFO_NAMES))()
        self._check("info_codes", self._lib.mlb_oasis_info_codes(codes, len(codes)))
        self.info_codes: dict[str, int] = dict(zip(_INFO_NAMES, codes, strict=True))
        self.component_id = -1

    def _declare(self) -> None:
        i32, p_i32 = ctypes.c_int32, ctypes.POINTER(ctypes.c_int32)
        p_f64 = ctypes.POINTER(ctypes.c_double)
        signatures: dict[str, list[Any]] = {
            "mlb_oasis_init_comp": [ctypes.c_char_p, i32, p_i32],
            "mlb_oasis_get_localcomm": [p_i32],
            "mlb_oasis_def_partition": [p_i32, i32, i32, p_i32],
            "mlb_oasis_def_var": [ctypes.c_char_p, i32, i32, i32, p_i32],
            "mlb_oasis_enddef": [],
            "mlb_oasis_put_r8": [i32, i32, i32, p_f64, p_i32],
            "mlb_oasis_get_r8": [i32, i32, i32, p_f64, p_i32],
            "mlb_oasis_terminate": [],
            "mlb_oasis_abort": [i32, ctypes.c_char_p, i32, ctypes.c_char_p, i32],
            "mlb_oasis_info_codes": [p_i32, i32],
        }
        for name, args in signatures.items():
            fn = getattr(self._lib, name)
            fn.argtypes = args
            fn.restype = i32

    @staticmethod
    def _check(call: str, status: int, about: str = "") -> None:
        if status != 0:
            where = f" ({about})" if about else ""
            raise OasisError(f"oasis_{call}{where} returned status {status}")

    def init(self, component: str) -> Any:
        """``oasis_init_comp`` then ``oasis_get_localcomm``; returns an ``mpi4py`` Comm."""
        from mpi4py import MPI

        raw = _check_name("component", component)
        comp = ctypes.c_int32(-1)
        self._check("init_comp", self._lib.mlb_oasis_init_comp(raw, len(raw), comp), component)
        self.component_id = comp.value
        fcomm = ctypes.c_int32(-1)
        self._check("get_localcomm", self._lib.mlb_oasis_get_localcomm(fcomm))
        return MPI.Comm.f2py(fcomm.value)

    def def_partition(self, segments: Sequence[tuple[int, int]], global_size: int) -> int:
        """An orange partition; an empty one (a rank with no points) is given one no-op segment.

        Raises
        ------
        OasisError
            If OASIS refuses it.
        """
        paral = orange_partition(segments) if segments else np.array([3, 0, 0, 0], np.int32)
        paral = np.ascontiguousarray(paral, dtype=np.int32)
        part = ctypes.c_int32(-1)
        status = self._lib.mlb_oasis_def_partition(
            paral.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), paral.size, global_size, part
        )
        self._check("def_partition", status, f"{len(segments)} segments")
        return part.value

    def def_var(self, name: str, partition: Any, direction: Direction, size: int) -> OasisVar:
        """``oasis_def_var`` of a flat float64 field.

        Raises
        ------
        OasisError
            If the name is too long or OASIS refuses the field.
        """
        if direction not in ("in", "out"):
            raise OasisError(f"field {name!r}: direction must be 'in' or 'out', got {direction!r}")
        raw = _check_name("field", name)
        var = ctypes.c_int32(-1)
        status = self._lib.mlb_oasis_def_var(
            raw, len(raw), int(partition), 1 if direction == "out" else 0, var
        )
        self._check("def_var", status, name)
        return OasisVar(name, direction, int(size), var.value)

    def enddef(self) -> None:
        """``oasis_enddef``."""
        self._check("enddef", self._lib.mlb_oasis_enddef())

    def _exchange(self, call: str, var: OasisVar, date: int, array: np.ndarray) -> int:
        if array.dtype != np.float64 or not array.flags.c_contiguous:
            raise OasisError(f"{call} {var.name!r}: need a C-contiguous float64 array")
        if array.size != var.size:
            raise OasisError(
                f"{call} {var.name!r}: the partition has {var.size} points, the array {array.size}"
            )
        info = ctypes.c_int32(0)
        fn = self._lib.mlb_oasis_put_r8 if call == "put" else self._lib.mlb_oasis_get_r8
        ptr = array.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._check(call, fn(var.handle, int(date), max(var.size, 1), ptr, info), var.name)
        return info.value

    def put(self, var: OasisVar, date: int, array: np.ndarray) -> int:
        """``oasis_put``; returns the OASIS info code (see :attr:`info_codes`)."""
        if var.direction != "out":
            raise OasisError(f"put {var.name!r}: the field was defined as received ('in')")
        return self._exchange("put", var, date, array)

    def get(self, var: OasisVar, date: int, out: np.ndarray) -> int:
        """``oasis_get`` into ``out``; returns the OASIS info code."""
        if var.direction != "in":
            raise OasisError(f"get {var.name!r}: the field was defined as sent ('out')")
        return self._exchange("get", var, date, out)

    def terminate(self) -> None:
        """``oasis_terminate`` (MPI stays up: mpi4py started it)."""
        self._check("terminate", self._lib.mlb_oasis_terminate())

    def abort(self, routine: str, message: str) -> None:
        """``oasis_abort``: ends the job (and, with this version, possibly with status 0)."""
        r, m = routine.encode("ascii", "replace"), message.encode("ascii", "replace")
        self._lib.mlb_oasis_abort(self.component_id, r, len(r), m, len(m))


# --------------------------------------------------------------------------------------------
# pyoasis (OASIS3-MCT 4 and 5)
# --------------------------------------------------------------------------------------------


class PyOasis:
    """OASIS3-MCT through its own Python API, ``pyoasis`` (OASIS3-MCT 4 or 5).

    Not exercised on this machine (Debian ships OASIS3-MCT 2.0 without pyoasis).
    """

    kind = "pyoasis"

    def __init__(self, module: Any) -> None:
        self._pyoasis = module
        self._component: Any = None
        self.info_codes: dict[str, int] = {}

    def init(self, component: str) -> Any:
        """``pyoasis.Component``; returns its local communicator."""
        _check_name("component", component)
        self._component = self._pyoasis.Component(component)
        return self._component.localcomm

    def def_partition(self, segments: Sequence[tuple[int, int]], global_size: int) -> Any:
        """``pyoasis.OrangePartition`` of the segments."""
        offsets = [int(o) for o, _ in segments] or [0]
        extents = [int(n) for _, n in segments] or [0]
        return self._pyoasis.OrangePartition(offsets, extents, global_size=global_size)

    def def_var(self, name: str, partition: Any, direction: Direction, size: int) -> OasisVar:
        """``pyoasis.Var``."""
        _check_name("field", name)
        params = self._pyoasis.OasisParameters
        inout = params.OASIS_OUT if direction == "out" else params.OASIS_IN
        return OasisVar(name, direction, int(size), self._pyoasis.Var(name, partition, inout))

    def enddef(self) -> None:
        """``Component.enddef``."""
        self._component.enddef()

    def put(self, var: OasisVar, date: int, array: np.ndarray) -> int:
        """``Var.put``."""
        return int(var.handle.put(int(date), array) or 0)

    def get(self, var: OasisVar, date: int, out: np.ndarray) -> int:
        """``Var.get``."""
        return int(var.handle.get(int(date), out) or 0)

    def terminate(self) -> None:
        """Deleting the component calls ``oasis_terminate``."""
        self._component = None

    def abort(self, routine: str, message: str) -> None:
        """``pyoasis.pyoasis_abort``."""
        self._pyoasis.pyoasis_abort(message)


def open_backend(
    prefer: Literal["auto", "pyoasis", "shim"] = "auto", build_dir: Path | str | None = None
) -> OasisBackend:
    """The OASIS binding to use: ``pyoasis`` when importable (``auto``), else the shim.

    ``mpi4py`` is imported first, so that MPI is initialised before OASIS.

    Raises
    ------
    OasisNotAvailableError
        If the requested binding (or, with ``auto``, both) cannot be loaded.
    """
    from mpi4py import MPI  # noqa: F401

    if prefer in ("auto", "pyoasis"):
        try:
            import pyoasis
        except ImportError as err:
            if prefer == "pyoasis":
                raise OasisNotAvailableError(f"pyoasis is not importable: {err}") from None
        else:
            return PyOasis(pyoasis)
    return ShimOasis(find_shim(build_dir))
