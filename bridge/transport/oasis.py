"""OASIS3-MCT from Python: ``pyoasis`` when importable, else a ctypes binding to the shim.

``pyoasis`` exists from OASIS3-MCT 4 on (HPC builds). Debian's ``liboasis3`` (OASIS3-MCT 2.0) has no
Python API, so ``fortran_stubs/oasis`` builds ``libmlb_oasis_shim.so``, a few ISO_C_BINDING wrappers
over the ``oasis_*`` calls, and :class:`ShimOasis` calls it through ctypes. Both backends offer the
same small interface (:class:`OasisBackend`): ``init``, ``def_partition``, ``def_var``, ``enddef``,
``put``, ``get``, ``terminate``, ``abort``, and ``limits``, what their OASIS version keeps
(:class:`bridge.config.namcouple.OasisLimits`): the shim is OASIS3-MCT 2.0; ``pyoasis`` does not
report its version, and since it only exists from 4 on it is taken as 4/5 (the same limits).

``import pyoasis`` loads ``liboasis.cbind.so`` while importing, so it raises ``OSError``, not
``ImportError``, when that library is not on the loader path; :func:`import_pyoasis` turns both
into :class:`OasisNotAvailableError`, and :func:`open_backend` then falls back to the shim.
``$MLBRIDGE_OASIS_BACKEND`` (``pyoasis`` or ``shim``, set by the launcher for the servers) pins
the choice, so the servers use the binding whose limits the launcher checked.

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
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np

from bridge.config.namcouple import OASIS_2_0, OASIS_4_5, OasisLimits
from bridge.domain.plan import Box
from bridge.paths import default_build_dir

__all__ = [
    "BACKEND_ENV",
    "BACKEND_KINDS",
    "NAME_MAX",
    "SHIM_ENV",
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
    "import_pyoasis",
    "open_backend",
    "orange_partition",
]

SHIM_NAME = "libmlb_oasis_shim.so"
"""File name of the shim library built by ``fortran_stubs/oasis``."""

SHIM_ENV = "MLBRIDGE_OASIS_SHIM"
"""Environment variable naming the shim library (a file)."""

BACKEND_ENV = "MLBRIDGE_OASIS_BACKEND"
"""Environment variable pinning the binding ``open_backend("auto")`` uses: ``pyoasis`` or
``shim`` (unset or ``auto``: pyoasis when it imports, else the shim)."""

BACKEND_KINDS = ("pyoasis", "shim")
"""The bindings, as :envvar:`MLBRIDGE_OASIS_BACKEND` and :attr:`OasisBackend.kind` name them."""

NAME_MAX = OASIS_2_0.field_name
"""Longest field name OASIS3-MCT 2.0 keeps (``ic_lvar`` of ``mod_oasis_kinds``, 128): a longer
name is cut by ``oasis_def_var`` and no longer matches the namcouple. Each backend checks the
limits of its own version (:attr:`OasisBackend.limits`)."""

ABORT_STATUS = 1
"""The exit status :meth:`PyOasis.abort` asks OASIS for (and MPI_Abort when OASIS cannot)."""

_PYOASIS_INFO = {
    "Ok": "OASIS_OK",
    "Sent": "OASIS_SENT",
    "Recvd": "OASIS_RECVD",
    "SentOut": "OASIS_SENTOUT",
    "RecvOut": "OASIS_RECVOUT",
    "ToRest": "OASIS_TOREST",
    "FromRest": "OASIS_FROMREST",
    "Output": "OASIS_OUTPUT",
    "Input": "OASIS_INPUT",
    "ToRestOut": "OASIS_TORESTOUT",
    "FromRestOut": "OASIS_FROMRESTOUT",
    "LocTrans": "OASIS_LOCTRANS",
}
"""The shim's names of the ``kinfo`` codes -> the members of ``pyoasis.OasisParameters``."""

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
    """What the servers need from OASIS, whatever the binding.

    Attributes
    ----------
    kind
        ``"pyoasis"`` or ``"shim"``.
    limits
        What the binding's OASIS version keeps (name lengths, ``$NBMODEL``): check names and
        write the namcouple with these.
    """

    kind: str
    limits: OasisLimits

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
    override = os.environ.get(SHIM_ENV)
    if override:
        path = Path(override)
        if path.is_file():
            return path.resolve()
        raise OasisNotAvailableError(f"{SHIM_ENV}={override!r} is not a file")
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
        f"when CMake finds OASIS3-MCT), or set {SHIM_ENV} to the library"
    )


def _check_name(what: str, name: str, limit: int, limits: OasisLimits) -> bytes:
    """``name`` as bytes, or :class:`OasisError` naming it, its length and ``limit``."""
    if not name or len(name) > limit or not name.isascii() or " " in name:
        raise OasisError(
            f"{what} {name!r} has {len(name)} characters: OASIS3-MCT {limits.version} names "
            f"must be 1 to {limit} ASCII characters without blanks"
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
    limits = OASIS_2_0

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

        raw = _check_name("component", component, self.limits.component_name, self.limits)
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
        raw = _check_name("field", name, self.limits.field_name, self.limits)
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


def import_pyoasis() -> ModuleType:
    """``import pyoasis``, or :class:`OasisNotAvailableError` saying why not.

    ``pyoasis`` loads ``liboasis.cbind.so`` while it is imported, so a missing library raises
    ``OSError`` (not ``ImportError``); both mean "not available here". Importing it replaces
    ``sys.excepthook`` with one that calls ``MPI_Abort`` (pyoasis's own choice).

    Raises
    ------
    OasisNotAvailableError
        If the import raises ``ImportError`` or ``OSError`` (the message keeps the cause).
    """
    try:
        import pyoasis
    except (ImportError, OSError) as err:
        raise OasisNotAvailableError(
            f"pyoasis cannot be imported ({type(err).__name__}: {err})"
        ) from None
    return pyoasis


def _info_code(result: object) -> int:
    """The integer of what ``Var.put``/``Var.get`` return: a member of ``OasisParameters`` (a
    plain ``Enum``, so ``int()`` of it raises), or None from early pyoasis releases."""
    if result is None:
        return 0
    return int(getattr(result, "value", result))


def _mpi_abort(status: int) -> None:
    from mpi4py import MPI

    MPI.COMM_WORLD.Abort(status)


class PyOasis:
    """OASIS3-MCT through its own Python API, ``pyoasis`` (OASIS3-MCT 4 or 5).

    Written against pyoasis's source (``docs/oasis.md`` names the revision); not run here:
    Debian ships OASIS3-MCT 2.0 without pyoasis. The contract it relies on is pinned by
    ``tests/test_pyoasis_interface.py`` over a stand-in module.

    Parameters
    ----------
    module
        The imported ``pyoasis`` (:func:`import_pyoasis`).
    hard_abort
        Ends the job with a status when ``pyoasis.oasis_abort`` cannot (default: MPI_Abort on
        ``MPI_COMM_WORLD``).
    """

    kind = "pyoasis"
    limits = OASIS_4_5

    def __init__(self, module: Any, hard_abort: Callable[[int], None] = _mpi_abort) -> None:
        self._pyoasis = module
        self._component: Any = None
        self._hard_abort = hard_abort
        params = module.OasisParameters
        self.info_codes: dict[str, int] = {
            ours: int(getattr(params, theirs).value)
            for ours, theirs in _PYOASIS_INFO.items()
            if hasattr(params, theirs)
        }
        self._errors: tuple[type[BaseException], ...] = tuple(
            e
            for e in (
                getattr(module, "OasisException", None),
                getattr(module, "PyOasisException", None),
            )
            if isinstance(e, type)
        )

    def _call(self, call: str, about: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``fn(*args)``, pyoasis's exceptions turned into :class:`OasisError` naming the call."""
        try:
            return fn(*args, **kw)
        except self._errors as err:
            raise OasisError(f"oasis_{call} ({about}): {type(err).__name__}: {err}") from err

    def init(self, component: str) -> Any:
        """``pyoasis.Component``; returns its local communicator (an ``mpi4py`` Comm).

        Raises
        ------
        OasisError
            If the name is longer than OASIS keeps or OASIS refuses the component.
        """
        _check_name("component", component, self.limits.component_name, self.limits)
        self._component = self._call("init_comp", component, self._pyoasis.Component, component)
        return self._component.localcomm

    def def_partition(self, segments: Sequence[tuple[int, int]], global_size: int) -> Any:
        """``pyoasis.OrangePartition`` of the segments (plain ``int`` lists, as pyoasis checks
        ``type(x) is int``; no segment at all for a rank with no points).

        Raises
        ------
        OasisError
            If pyoasis or OASIS refuses it.
        """
        offsets = [int(o) for o, _ in segments]
        extents = [int(n) for _, n in segments]
        return self._call(
            "def_partition",
            f"{len(segments)} segments",
            self._pyoasis.OrangePartition,
            offsets,
            extents,
            global_size=int(global_size),
        )

    def def_var(self, name: str, partition: Any, direction: Direction, size: int) -> OasisVar:
        """``pyoasis.Var`` of a flat field (bundle size 1).

        Raises
        ------
        OasisError
            If the name is longer than OASIS keeps, OASIS refuses the field, or the namcouple
            does not couple it (``Var.is_active`` false: a put or get would abort).
        """
        if direction not in ("in", "out"):
            raise OasisError(f"field {name!r}: direction must be 'in' or 'out', got {direction!r}")
        _check_name("field", name, self.limits.field_name, self.limits)
        params = self._pyoasis.OasisParameters
        inout = params.OASIS_OUT if direction == "out" else params.OASIS_IN
        handle = self._call("def_var", name, self._pyoasis.Var, name, partition, inout)
        if not getattr(handle, "is_active", True):
            raise OasisError(f"oasis_def_var ({name}): the namcouple does not couple this field")
        return OasisVar(name, direction, int(size), handle)

    def enddef(self) -> None:
        """``Component.enddef``."""
        self._call("enddef", "component", self._component.enddef)

    def _exchange(self, call: str, var: OasisVar, date: int, array: np.ndarray) -> int:
        if array.dtype != np.float64 or not array.flags.c_contiguous:
            raise OasisError(f"{call} {var.name!r}: need a C-contiguous float64 array")
        if array.size != var.size:
            raise OasisError(
                f"{call} {var.name!r}: the partition has {var.size} points, the array {array.size}"
            )
        fn = var.handle.put if call == "put" else var.handle.get
        # pyoasis checks isinstance(date, int): a numpy integer is refused
        result = self._call(call, f"{var.name} at date {date}", fn, int(date), array)
        return _info_code(result)

    def put(self, var: OasisVar, date: int, array: np.ndarray) -> int:
        """``Var.put``; returns the OASIS info code (see :attr:`info_codes`)."""
        if var.direction != "out":
            raise OasisError(f"put {var.name!r}: the field was defined as received ('in')")
        return self._exchange("put", var, date, array)

    def get(self, var: OasisVar, date: int, out: np.ndarray) -> int:
        """``Var.get`` into ``out``; returns the OASIS info code."""
        if var.direction != "in":
            raise OasisError(f"get {var.name!r}: the field was defined as sent ('out')")
        return self._exchange("get", var, date, out)

    def terminate(self) -> None:
        """``oasis_terminate``: pyoasis calls it when the component is deleted (its
        ``__del__``); this binding holds the only reference, so dropping it is the call."""
        self._component = None

    def abort(self, routine: str, message: str) -> None:
        """End the whole job with status :data:`ABORT_STATUS`; never returns normally.

        ``pyoasis.oasis_abort(component, routine, message, file, line, rcode)`` with rcode 1
        writes the message to OASIS's logs and calls MPI_Abort. Not ``pyoasis_abort``: it takes
        an exception (a string raises ``PyOasisException``) and passes return code 0. When
        ``oasis_abort`` raises (a pyoasis whose Python layer and C binding disagree on its
        arguments) or returns, MPI_Abort ends the job instead.
        """
        print(f"mlbridge: OASIS abort from {routine}: {message}", file=sys.stderr, flush=True)
        try:
            self._pyoasis.oasis_abort(
                0, routine, message, "bridge/transport/oasis.py", 0, ABORT_STATUS
            )
        except Exception as err:  # any failure here must still end the job
            print(
                f"mlbridge: pyoasis.oasis_abort failed ({type(err).__name__}: {err}); "
                "MPI_Abort instead",
                file=sys.stderr,
                flush=True,
            )
        self._hard_abort(ABORT_STATUS)


def _pinned_backend() -> str:
    """``$MLBRIDGE_OASIS_BACKEND`` (``auto`` when unset).

    Raises
    ------
    OasisNotAvailableError
        If it names no binding.
    """
    pinned = os.environ.get(BACKEND_ENV, "").strip() or "auto"
    if pinned not in ("auto", *BACKEND_KINDS):
        raise OasisNotAvailableError(
            f"{BACKEND_ENV}={pinned!r}: expected one of auto, {', '.join(BACKEND_KINDS)}"
        )
    return pinned


def open_backend(
    prefer: Literal["auto", "pyoasis", "shim"] = "auto", build_dir: Path | str | None = None
) -> OasisBackend:
    """The OASIS binding to use: ``pyoasis`` when it imports (``auto``), else the shim.

    ``auto`` follows ``$MLBRIDGE_OASIS_BACKEND`` when it is set (the launcher pins the binding
    whose limits it checked). ``mpi4py`` is imported first, so that MPI is initialised before
    OASIS.

    Raises
    ------
    OasisNotAvailableError
        If the requested binding (or, with ``auto``, both) cannot be loaded; the message says
        why for each.
    """
    from mpi4py import MPI  # noqa: F401

    choice = _pinned_backend() if prefer == "auto" else prefer
    why_not_pyoasis = ""
    if choice in ("auto", "pyoasis"):
        try:
            return PyOasis(import_pyoasis())
        except OasisNotAvailableError as err:
            if choice == "pyoasis":
                raise
            why_not_pyoasis = str(err)
    try:
        return ShimOasis(find_shim(build_dir))
    except OasisNotAvailableError as err:
        if why_not_pyoasis:
            raise OasisNotAvailableError(f"{err} ({why_not_pyoasis})") from None
        raise
