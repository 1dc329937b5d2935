"""Routing plan between model ranks and inference-server ranks (pure logic, no MPI).

Conventions
-----------
* The global horizontal grid is ``nx x ny`` T points (the whole grid, land rim included), indexed
  from 0. ``i`` runs along x, ``j`` along y.
* A :class:`Box` is half-open: ``Box(i0, i1, j0, j1)`` holds the cells ``i0 <= i < i1`` and
  ``j0 <= j < j1``.
* Field arrays are C-ordered ``(nz, ny, nx)`` (the same memory as a Fortran ``(i, j, k)`` array),
  so the cells of a box are ``a[:, j0:j1, i0:i1]``, i.e. ``a[(slice(None), *box.slices())]``.
* Model rank ``r`` owns the interior box ``model_boxes[r]``; its local arrays have shape
  ``(nz, box.ny, box.nx)`` and "model-local" coordinates are relative to the box origin.
* Server rank ``s`` owns ``server_boxes[s]`` and works on that block grown by ``halo`` cells on
  every side. "Haloed" coordinates are relative to ``(i0 - halo, j0 - halo)``; "server-interior"
  coordinates are relative to ``(i0, j0)``.

Boundary rules
--------------
``boundary`` is one of ``"closed"``, ``"periodic"`` (wrapped in x and in y), ``"periodic_x"``
(wrapped in x only, NEMO's east-west cyclic case) or ``"periodic_y"``. Along a closed axis, halo
cells outside the grid are never sent: the server leaves them at zero. Along a periodic axis they
are wrapped and come from the model rank that owns the wrapped cell; the halo must then be smaller
than the grid along that axis.

North fold (NEMO's ORCA grids)
------------------------------
``"north_fold_t"`` and ``"north_fold_f"`` are NEMO's ``jperio = 4`` and ``6``: periodic in x with
period ``nx`` (the grid holds each column once: no duplicated cyclic columns), closed at the
south, and folded at the north about a T-point pivot or an F-point pivot. The grid's rows are the
model's inner rows; its last row ``P = ny - 1`` is NEMO's last inner row (``jpjglo - nn_hls``).
A halo cell ``(i, j)`` with ``j >= ny`` takes the value of the mirror cell ``(im, jm)`` times the
field's fold sign (``-1`` for the components of a vector, ``+1`` otherwise), with, by point
(the U/V/T/F shifts follow from U(i) at ``i + 1/2``, V(j) at ``j + 1/2``)::

    pivot   point   im                  jm
    T       T       (-i) mod nx         2P - j
    T       U       (-i - 1) mod nx     2P - j
    T       V       (-i) mod nx         2P - 1 - j
    T       F       (-i - 1) mod nx     2P - 1 - j
    F       T       (-i - 1) mod nx     2P + 1 - j
    F       U       (-i - 2) mod nx     2P + 1 - j
    F       V       (-i - 1) mod nx     2P - j
    F       F       (-i - 2) mod nx     2P - j

These are the index rules of NEMO's ``lbc_nfd`` written in 0-based inner indices (NEMO's global
column ``ji`` is ``i + 1 + nn_hls``): the T pivot sits on T point ``(0, P)`` (and ``(nx/2, P)``),
the F pivot on F point ``(-1, P)``. NEMO's ``lbc_lnk`` also overwrites the part of the inner rows
that the fold duplicates (the east half of row ``P`` for T and U with a T pivot, all of row ``P``
for V and F with a T pivot, the east half of row ``P`` for V and F with an F pivot) with their
mirror; the plan sends inner cells as the model holds them, so fields must have been through
the model's ``lbc_lnk`` (as NEMO's prognostic fields are) for the halo to equal the model's. The
mirror is taken before the zonal period, so the corner cells of the fold rows are the mirror of
the wrapped column (NEMO applies the period to the fold rows as well). The halo must be smaller
than ``ny - 1`` so that every mirror row lies in the grid.

Segments across the fold carry a transform (:class:`Segment`): the cells of the source box land
in the destination box in reversed i and j order and are multiplied by the field's fold sign.
The routes for one point (``point`` argument of :func:`plan_routes`) fill the block directly.
Fields on several points share one set of routes with ``point=None``: since the U mirror of
``(i, j)`` is the T mirror of ``(i + 1, j)``, the V mirror that of ``(i, j + 1)`` and the F mirror
that of ``(i + 1, j + 1)``, the T mirror of the fold rows grown by one column east and one row
north goes to a staging array (``staged`` segments) and :func:`fill_fold` fills each field's
halo from it by its point. For the other boundaries the routes do not depend on the point.

Wire layout
-----------
A message between one model rank and one server rank is the concatenation, in the order of the
plan's segment list, of each segment's cells as a C-ordered ``(nz, ny, nx)`` block: levels first.
The order is the source box's (the model sends plain rectangles); a reversed segment is reversed
on the destination side. :func:`pack` and :func:`unpack` implement exactly that layout, for any
dtype.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Literal

import numpy as np

__all__ = [
    "BOUNDARIES",
    "FOLDS",
    "POINTS",
    "Box",
    "Plan",
    "Segment",
    "assemble_global_reference",
    "apply_transforms",
    "check_tiling",
    "choose_process_grid",
    "fill_fold",
    "fold_mirror",
    "pack",
    "periodicity",
    "plan_routes",
    "server_blocks",
    "split_1d",
    "unpack",
]

BOUNDARIES: tuple[str, ...] = (
    "closed",
    "periodic",
    "periodic_x",
    "periodic_y",
    "north_fold_t",
    "north_fold_f",
)
"""The accepted values of ``boundary``."""

FOLDS: tuple[str, ...] = ("north_fold_t", "north_fold_f")
"""The north-fold boundaries (periodic in x, folded at the north)."""

POINTS: tuple[str, ...] = ("T", "U", "V", "F")
"""The C-grid points a field may sit on."""

Side = Literal["src", "dst"]


# --------------------------------------------------------------------------------------------
# Boxes and segments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Box:
    """A half-open rectangle of cells ``[i0, i1) x [j0, j1)``.

    Coordinates may be negative (a haloed block in global coordinates reaches below 0).

    Raises
    ------
    TypeError
        If a coordinate is not an integer.
    ValueError
        If ``i1 < i0`` or ``j1 < j0``.
    """

    i0: int
    i1: int
    j0: int
    j1: int

    def __post_init__(self) -> None:
        for name in ("i0", "i1", "j0", "j1"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, operator.index(value))
            except TypeError:
                raise TypeError(f"Box.{name} must be an integer, got {value!r}") from None
        if self.i1 < self.i0 or self.j1 < self.j0:
            raise ValueError(
                f"Box(i0={self.i0}, i1={self.i1}, j0={self.j0}, j1={self.j1}) is inverted: "
                "need i0 <= i1 and j0 <= j1"
            )

    @property
    def nx(self) -> int:
        """Number of cells along x (``i1 - i0``)."""
        return self.i1 - self.i0

    @property
    def ny(self) -> int:
        """Number of cells along y (``j1 - j0``)."""
        return self.j1 - self.j0

    @property
    def size(self) -> int:
        """Number of cells (``nx * ny``)."""
        return self.nx * self.ny

    @property
    def shape(self) -> tuple[int, int]:
        """The horizontal array shape ``(ny, nx)`` of the box."""
        return (self.ny, self.nx)

    def intersect(self, other: Box) -> Box | None:
        """The cells common to both boxes, or ``None`` when there are none."""
        i0, i1 = max(self.i0, other.i0), min(self.i1, other.i1)
        j0, j1 = max(self.j0, other.j0), min(self.j1, other.j1)
        if i0 >= i1 or j0 >= j1:
            return None
        return Box(i0, i1, j0, j1)

    def shift(self, di: int, dj: int) -> Box:
        """The same box moved by ``di`` cells along x and ``dj`` along y."""
        return Box(self.i0 + di, self.i1 + di, self.j0 + dj, self.j1 + dj)

    def grow(self, width: int) -> Box:
        """The box extended by ``width`` cells on every side.

        Raises
        ------
        ValueError
            If ``width`` is negative.
        """
        if width < 0:
            raise ValueError(f"cannot grow a box by a negative width ({width})")
        return Box(self.i0 - width, self.i1 + width, self.j0 - width, self.j1 + width)

    def slices(self) -> tuple[slice, slice]:
        """The ``(j, i)`` slice pair selecting the box in a ``(..., ny, nx)`` array."""
        return (slice(self.j0, self.j1), slice(self.i0, self.i1))

    def contains(self, i: int, j: int) -> bool:
        """Whether cell ``(i, j)`` lies in the box."""
        return self.i0 <= i < self.i1 and self.j0 <= j < self.j1

    def contains_box(self, other: Box) -> bool:
        """Whether every cell of ``other`` lies in this box (an empty ``other`` always does)."""
        if other.size == 0:
            return True
        return (
            self.i0 <= other.i0
            and other.i1 <= self.i1
            and self.j0 <= other.j0
            and other.j1 <= self.j1
        )


@dataclass(frozen=True)
class Segment:
    """One rectangle copied from a source array into a destination array.

    ``src`` and ``dst`` are in the local coordinates of their arrays and have the same shape.
    Cell ``(a, b)`` (row, column from the box's origin) of ``src`` lands at ``(a, b)`` of ``dst``,
    or at ``(ny - 1 - a, ...)`` when ``rev_j`` and ``(..., nx - 1 - b)`` when ``rev_i``; when
    ``signed``, its value is multiplied by the field's fold sign (across a north fold). The
    defaults are a plain copy. A ``staged`` segment's ``dst`` addresses the server's fold staging
    array instead of its haloed block (:func:`fill_fold`).

    Raises
    ------
    ValueError
        If ``src`` and ``dst`` differ in shape.
    """

    src: Box
    dst: Box
    rev_i: bool = False
    rev_j: bool = False
    signed: bool = False
    staged: bool = False

    def __post_init__(self) -> None:
        if self.src.shape != self.dst.shape:
            raise ValueError(
                f"segment source {self.src} and destination {self.dst} differ in shape "
                f"({self.src.shape} vs {self.dst.shape})"
            )

    @property
    def size(self) -> int:
        """Number of horizontal cells moved."""
        return self.src.size

    @property
    def plain(self) -> bool:
        """Whether the segment is a plain copy (no reversal, no sign)."""
        return not (self.rev_i or self.rev_j or self.signed)

    def view(self, array3d: np.ndarray, side: Side) -> np.ndarray:
        """The ``(nz, ny, nx)`` view of ``array3d`` on ``side``, in the source box's cell order.

        On the destination side of a reversed segment the view runs backwards, so that copying
        ``view(src_array, "src")`` into ``view(dst_array, "dst")`` performs the segment.
        """
        box = self.box(side)
        jj = slice(box.j0, box.j1)
        ii = slice(box.i0, box.i1)
        if side == "dst":
            if self.rev_j:
                jj = slice(box.j1 - 1, box.j0 - 1 if box.j0 > 0 else None, -1)
            if self.rev_i:
                ii = slice(box.i1 - 1, box.i0 - 1 if box.i0 > 0 else None, -1)
        return array3d[:, jj, ii]

    def box(self, side: Side) -> Box:
        """The box on ``side`` (``"src"`` or ``"dst"``).

        Raises
        ------
        ValueError
            If ``side`` is neither ``"src"`` nor ``"dst"``.
        """
        if side == "src":
            return self.src
        if side == "dst":
            return self.dst
        raise ValueError(f"side must be 'src' or 'dst', got {side!r}")


# --------------------------------------------------------------------------------------------
# Splitting the grid among servers
# --------------------------------------------------------------------------------------------


def _positive_int(name: str, value: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def split_1d(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``parts`` contiguous half-open intervals of near-equal size.

    Sizes differ by at most 1 and the larger ones come first (as NEMO's ``mpp_basesplit``).

    Parameters
    ----------
    n
        Number of cells along the axis.
    parts
        Number of intervals.

    Returns
    -------
    list of (start, stop)
        ``parts`` intervals covering ``[0, n)`` in order.

    Raises
    ------
    ValueError
        If ``n < 1``, ``parts < 1`` or ``parts > n`` (an interval would be empty).
    """
    n = _positive_int("n", n)
    parts = _positive_int("parts", parts)
    if parts > n:
        raise ValueError(
            f"cannot split {n} cells into {parts} parts: a part would be narrower than 1 cell"
        )
    base, extra = divmod(n, parts)
    bounds: list[tuple[int, int]] = []
    start = 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def choose_process_grid(nx: int, ny: int, m: int) -> tuple[int, int]:
    """Factor ``m`` into ``pi x pj`` server blocks that are as square as possible.

    The aspect ratio of the blocks, ``max(w/h, h/w)`` with ``w = nx/pi`` and ``h = ny/pj``, is
    minimised exactly (rational arithmetic). On a tie the factorisation with more splits along the
    longer axis wins (along x when ``nx == ny``). Only factorisations in which every block is at
    least one cell wide along both axes are considered.

    Parameters
    ----------
    nx, ny
        Global grid size.
    m
        Number of server ranks.

    Returns
    -------
    (pi, pj)
        Number of blocks along x and along y, ``pi * pj == m``.

    Raises
    ------
    ValueError
        If ``nx``, ``ny`` or ``m`` is below 1, or if no factorisation of ``m`` fits the grid
        (``m`` exceeds ``nx * ny``, or e.g. ``m`` is a prime larger than both ``nx`` and ``ny``).
    """
    nx = _positive_int("nx", nx)
    ny = _positive_int("ny", ny)
    m = _positive_int("m (number of server ranks)", m)
    best: tuple[Fraction, int, tuple[int, int]] | None = None
    for pi in range(1, m + 1):
        if m % pi:
            continue
        pj = m // pi
        if pi > nx or pj > ny:
            continue
        width, height = nx * pj, ny * pi  # proportional to nx/pi and ny/pj
        aspect = Fraction(max(width, height), min(width, height))
        splits_along_long = pi if nx >= ny else pj
        key = (aspect, -splits_along_long, (pi, pj))
        if best is None or key < best:
            best = key
    if best is None:
        raise ValueError(
            f"cannot split a {nx} x {ny} grid among m={m} server ranks: every factorisation "
            f"pi x pj of {m} gives a block narrower than 1 cell (need pi <= nx={nx} and "
            f"pj <= ny={ny})"
        )
    return best[2]


def server_blocks(nx: int, ny: int, m: int) -> list[Box]:
    """Tile the ``nx x ny`` grid with ``m`` near-equal blocks, one per server rank.

    The process grid comes from :func:`choose_process_grid`, each axis is split with
    :func:`split_1d`, and ranks are numbered with i fastest: rank ``s`` has block
    ``(s % pi, s // pi)``.

    Returns
    -------
    list of Box
        ``m`` boxes in server-rank order.

    Raises
    ------
    ValueError
        As :func:`choose_process_grid`.
    """
    pi, pj = choose_process_grid(nx, ny, m)
    xs = split_1d(nx, pi)
    ys = split_1d(ny, pj)
    return [Box(i0, i1, j0, j1) for (j0, j1) in ys for (i0, i1) in xs]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def periodicity(boundary: str) -> tuple[bool, bool]:
    """Whether the grid wraps along x and along y under ``boundary``.

    Raises
    ------
    ValueError
        If ``boundary`` is not one of :data:`BOUNDARIES`.
    """
    if boundary == "closed":
        return (False, False)
    if boundary == "periodic":
        return (True, True)
    if boundary == "periodic_x":
        return (True, False)
    if boundary == "periodic_y":
        return (False, True)
    if boundary in FOLDS:
        return (True, False)
    raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}; got {boundary!r}")


def _check_halo(nx: int, ny: int, halo: int, boundary: str) -> tuple[bool, bool]:
    try:
        halo = operator.index(halo)
    except TypeError:
        raise TypeError(f"halo must be an integer, got {halo!r}") from None
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    px, py = periodicity(boundary)
    for periodic, axis, n in ((px, "nx", nx), (py, "ny", ny)):
        if periodic and halo >= n:
            raise ValueError(
                f"halo={halo} is not smaller than {axis}={n}: with boundary={boundary!r} the "
                "halo would wrap around the whole grid; use a smaller halo or a closed boundary"
            )
    if boundary in FOLDS and halo >= ny - 1:
        raise ValueError(
            f"halo={halo} is not smaller than ny - 1 = {ny - 1}: with boundary={boundary!r} the "
            "fold's mirror rows would leave the grid; use a smaller halo"
        )
    return px, py


def _check_point(point: str) -> str:
    if point not in POINTS:
        raise ValueError(f"point must be one of {', '.join(POINTS)}; got {point!r}")
    return point


def fold_mirror(boundary: str, point: str, nx: int, ny: int) -> tuple[int, int]:
    """``(ci, cj)``: beyond the north fold, cell ``(i, j)`` takes ``((ci - i) mod nx, cj - j)``.

    See the table in the module docstring.

    Raises
    ------
    ValueError
        If ``boundary`` is not one of :data:`FOLDS` or ``point`` not one of :data:`POINTS`.
    """
    _check_point(point)
    if boundary not in FOLDS:
        raise ValueError(f"boundary must be one of {', '.join(FOLDS)}; got {boundary!r}")
    last = ny - 1
    shift_i = 1 if point in ("U", "F") else 0
    shift_j = 1 if point in ("V", "F") else 0
    if boundary == "north_fold_t":
        return -shift_i, 2 * last - shift_j
    return -1 - shift_i, 2 * last + 1 - shift_j


def _box_arrays(boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    coords = np.array([(b.i0, b.i1, b.j0, b.j1) for b in boxes], dtype=np.int64).reshape(-1, 4)
    return coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]


def check_tiling(nx: int, ny: int, boxes: Sequence[Box], what: str = "boxes") -> None:
    """Check that ``boxes`` tile the ``nx x ny`` grid exactly (no gap, no overlap).

    Empty boxes are allowed (a rank that owns nothing exchanges nothing). The check runs on the
    grid compressed to the boxes' edges, so its cost depends on the number of boxes, not cells.

    Parameters
    ----------
    nx, ny
        Global grid size.
    boxes
        One box per rank, in global coordinates.
    what
        Name used in error messages (``"model boxes"``, ``"server boxes"``).

    Raises
    ------
    TypeError
        If an entry is not a :class:`Box`.
    ValueError
        If ``boxes`` is empty, a box reaches outside the grid, two boxes overlap (the message names
        both ranks and one shared cell) or cells are left uncovered (the message gives their count
        and one of them).
    """
    nx = _positive_int("nx", nx)
    ny = _positive_int("ny", ny)
    if len(boxes) == 0:
        raise ValueError(f"{what}: no boxes given for a {nx} x {ny} grid")
    grid = Box(0, nx, 0, ny)
    for rank, box in enumerate(boxes):
        if not isinstance(box, Box):
            raise TypeError(f"{what}: rank {rank} has {box!r}, not a Box")
        if box.size and not grid.contains_box(box):
            raise ValueError(f"{what}: rank {rank} has {box}, outside the {nx} x {ny} grid")
    xs = np.unique(np.array([0, nx, *(c for b in boxes if b.size for c in (b.i0, b.i1))]))
    ys = np.unique(np.array([0, ny, *(c for b in boxes if b.size for c in (b.j0, b.j1))]))
    owner = np.full((ys.size - 1, xs.size - 1), -1, dtype=np.int64)
    for rank, box in enumerate(boxes):
        if box.size == 0:
            continue
        a0, a1 = np.searchsorted(xs, (box.i0, box.i1))
        b0, b1 = np.searchsorted(ys, (box.j0, box.j1))
        view = owner[b0:b1, a0:a1]
        taken = view >= 0
        if taken.any():
            jj, ii = np.argwhere(taken)[0]
            other = int(view[jj, ii])
            cell = (int(xs[a0 + ii]), int(ys[b0 + jj]))
            raise ValueError(
                f"{what} overlap: ranks {other} ({boxes[other]}) and {rank} ({box}) both own "
                f"cell (i={cell[0]}, j={cell[1]})"
            )
        view[...] = rank
    gaps = owner < 0
    if gaps.any():
        widths = np.diff(xs)
        heights = np.diff(ys)
        count = int((heights[:, None] * widths[None, :])[gaps].sum())
        jj, ii = np.argwhere(gaps)[0]
        raise ValueError(
            f"{what} do not cover the {nx} x {ny} grid: {count} cell(s) uncovered, e.g. "
            f"(i={int(xs[ii])}, j={int(ys[jj])})"
        )


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def _freeze(
    table: Mapping[tuple[int, int], Sequence[Segment]],
) -> Mapping[tuple[int, int], tuple[Segment, ...]]:
    return MappingProxyType({key: tuple(table[key]) for key in sorted(table)})


@dataclass(frozen=True)
class Plan:
    """Who sends which cells to whom, for one grid, decomposition pair, halo and boundary rule.

    Built by :func:`plan_routes`. Every mapping iterates in sorted key order and every segment list
    is in a fixed order, so both ends of a connection walk the same segments in the same order.

    Attributes
    ----------
    nx, ny
        Global grid size.
    halo
        Halo width of the server blocks.
    boundary
        One of :data:`BOUNDARIES`.
    model_boxes, server_boxes
        Interior box of each model rank and each server rank (global coordinates).
    sends
        ``sends[(r, s)]``: segments from model-local coordinates of model rank ``r`` to haloed
        coordinates of server rank ``s``. Only pairs that exchange data appear.
    returns
        ``returns[(s, r)]``: segments from server-interior coordinates of server rank ``s`` to
        model-local coordinates of model rank ``r``.
    """

    nx: int
    ny: int
    halo: int
    boundary: str
    model_boxes: tuple[Box, ...]
    server_boxes: tuple[Box, ...]
    sends: Mapping[tuple[int, int], tuple[Segment, ...]]
    returns: Mapping[tuple[int, int], tuple[Segment, ...]]
    _send_cells: Mapping[tuple[int, int], int] = field(init=False, repr=False, compare=False)
    _return_cells: Mapping[tuple[int, int], int] = field(init=False, repr=False, compare=False)
    _peers: Mapping[str, tuple[tuple[int, ...], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_boxes", tuple(self.model_boxes))
        object.__setattr__(self, "server_boxes", tuple(self.server_boxes))
        object.__setattr__(self, "sends", _freeze(self.sends))
        object.__setattr__(self, "returns", _freeze(self.returns))
        nm, ns = len(self.model_boxes), len(self.server_boxes)
        send_cells = {k: sum(seg.size for seg in v) for k, v in self.sends.items()}
        return_cells = {k: sum(seg.size for seg in v) for k, v in self.returns.items()}
        object.__setattr__(self, "_send_cells", MappingProxyType(send_cells))
        object.__setattr__(self, "_return_cells", MappingProxyType(return_cells))
        model_send: list[list[int]] = [[] for _ in range(nm)]
        server_recv: list[list[int]] = [[] for _ in range(ns)]
        for r, s in self.sends:  # sorted by (r, s)
            model_send[r].append(s)
            server_recv[s].append(r)
        server_send: list[list[int]] = [[] for _ in range(ns)]
        model_recv: list[list[int]] = [[] for _ in range(nm)]
        for s, r in self.returns:  # sorted by (s, r)
            server_send[s].append(r)
            model_recv[r].append(s)
        peers = {
            "model_send": tuple(tuple(x) for x in model_send),
            "model_recv": tuple(tuple(sorted(x)) for x in model_recv),
            "server_recv": tuple(tuple(sorted(x)) for x in server_recv),
            "server_send": tuple(tuple(x) for x in server_send),
        }
        object.__setattr__(self, "_peers", MappingProxyType(peers))

    @property
    def n_model(self) -> int:
        """Number of model ranks."""
        return len(self.model_boxes)

    @property
    def n_server(self) -> int:
        """Number of server ranks."""
        return len(self.server_boxes)

    def haloed_box(self, s: int) -> Box:
        """Server ``s``'s block grown by the halo, in global (unwrapped) coordinates."""
        return self.server_boxes[s].grow(self.halo)

    def staging_shape(self, s: int) -> tuple[int, int]:
        """Horizontal shape of server ``s``'s fold staging array: ``(rows beyond the fold + 1,
        nx + 2*halo + 1)``, or ``(0, 0)`` when its routes have no staged segment."""
        if not any(seg.staged for (_, t), segs in self.sends.items() if t == s for seg in segs):
            return (0, 0)
        hbox = self.haloed_box(s)
        return (hbox.j1 - max(hbox.j0, self.ny) + 1, hbox.nx + 1)

    def haloed_shape(self, s: int) -> tuple[int, int]:
        """Horizontal shape ``(ny + 2*halo, nx + 2*halo)`` of server ``s``'s input arrays."""
        return self.haloed_box(s).shape

    def interior_shape(self, s: int) -> tuple[int, int]:
        """Horizontal shape ``(ny, nx)`` of server ``s``'s output arrays."""
        return self.server_boxes[s].shape

    def model_shape(self, r: int) -> tuple[int, int]:
        """Horizontal shape ``(ny, nx)`` of model rank ``r``'s local arrays."""
        return self.model_boxes[r].shape

    def send_cells(self, r: int, s: int) -> int:
        """Horizontal cells model ``r`` sends server ``s`` (0 if none); times ``nz`` per field."""
        return self._send_cells.get((r, s), 0)

    def return_cells(self, s: int, r: int) -> int:
        """Horizontal cells server ``s`` returns to model ``r`` (0 if none)."""
        return self._return_cells.get((s, r), 0)

    def model_send_peers(self, r: int) -> tuple[int, ...]:
        """Server ranks model rank ``r`` sends to, sorted."""
        return self._peers["model_send"][r]

    def model_recv_peers(self, r: int) -> tuple[int, ...]:
        """Server ranks model rank ``r`` receives outputs from, sorted."""
        return self._peers["model_recv"][r]

    def server_recv_peers(self, s: int) -> tuple[int, ...]:
        """Model ranks server rank ``s`` receives inputs from, sorted."""
        return self._peers["server_recv"][s]

    def server_send_peers(self, s: int) -> tuple[int, ...]:
        """Model ranks server rank ``s`` sends outputs back to, sorted."""
        return self._peers["server_send"][s]


def _axis_pieces(a0: int, a1: int, n: int, periodic: bool) -> list[tuple[int, int, int]]:
    """Cut the unwrapped range ``[a0, a1)`` into pieces lying in ``[0, n)``.

    Returns ``(g0, g1, d0)``: global cells ``[g0, g1)`` land at offset ``d0`` from ``a0``. Assumes
    ``-n < a0`` and ``a1 < 2n`` (checked by the halo rule).
    """
    pieces: list[tuple[int, int, int]] = []
    for k in (-1, 0, 1) if periodic else (0,):
        lo, hi = max(a0, k * n), min(a1, (k + 1) * n)
        if lo < hi:
            pieces.append((lo - k * n, hi - k * n, lo - a0))
    return pieces


def _overlapping(
    coords: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], box: Box
) -> np.ndarray:
    i0, i1, j0, j1 = coords
    hit = (np.maximum(i0, box.i0) < np.minimum(i1, box.i1)) & (
        np.maximum(j0, box.j0) < np.minimum(j1, box.j1)
    )
    return np.flatnonzero(hit)


def _fold_runs(a0: int, a1: int, ci: int, nx: int) -> list[tuple[int, int, int]]:
    """Cut the unwrapped columns ``[a0, a1)`` into runs whose mirrors ``(ci - i) mod nx`` are
    contiguous: ``(m0, m1, d0)``, source columns ``[m0, m1)`` land reversed at offset ``d0``."""
    runs: list[tuple[int, int, int]] = []
    start = a0
    while start < a1:
        top = (ci - start) % nx  # mirror of the run's first column: the largest source column
        length = min(a1 - start, top + 1)
        runs.append((top - length + 1, top + 1, start - a0))
        start += length
    return runs


def _fold_segments(
    hbox: Box,
    nx: int,
    ny: int,
    boundary: str,
    point: str,
    mcoords: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    model_boxes: Sequence[Box],
    staged: bool = False,
) -> list[tuple[int, Segment]]:
    """The ``(model rank, segment)`` pairs filling the rows of ``hbox`` beyond the north fold.

    ``staged``: the T-point mirror of those rows grown by one column east and one row north, in
    staging coordinates (origin: the first column of ``hbox``, the first row beyond the fold).
    """
    if hbox.j1 <= ny:
        return []
    j0 = max(hbox.j0, ny)
    if staged:
        hbox = Box(hbox.i0, hbox.i1 + 1, j0, hbox.j1 + 1)
    ci, cj = fold_mirror(boundary, point, nx, ny)
    rows = (cj - (hbox.j1 - 1), cj - j0 + 1)  # source rows, reversed
    out: list[tuple[int, Segment]] = []
    for m0, m1, d0 in _fold_runs(hbox.i0, hbox.i1, ci, nx):
        piece = Box(m0, m1, rows[0], rows[1])
        for r in _overlapping(mcoords, piece):
            mbox = model_boxes[r]
            common = piece.intersect(mbox)
            assert common is not None
            # reversed: source column m lands at d0 + (m1 - 1 - m), source row n at
            # (j0 - hbox.j0) + (rows[1] - 1 - n)
            dst = Box(
                d0 + (m1 - common.i1),
                d0 + (m1 - common.i0),
                (j0 - hbox.j0) + (rows[1] - common.j1),
                (j0 - hbox.j0) + (rows[1] - common.j0),
            )
            seg = Segment(
                src=common.shift(-mbox.i0, -mbox.j0),
                dst=dst,
                rev_i=True,
                rev_j=True,
                signed=True,
                staged=staged,
            )
            out.append((int(r), seg))
    return out


def plan_routes(
    nx: int,
    ny: int,
    model_boxes: Sequence[Box],
    server_boxes: Sequence[Box],
    halo: int,
    boundary: str = "closed",
    point: str | None = "T",
) -> Plan:
    """Compute the routes between model ranks and server ranks.

    Server ``s`` needs ``server_boxes[s]`` grown by ``halo`` cells on every side. Each of those
    cells inside the grid (or wrapped into it along a periodic axis) comes from the model rank that
    owns it, whatever the distance: a halo wider than the neighbouring block reaches further ranks.
    Cells beyond a closed edge are not sent. Beyond a north fold they come from their mirror
    cell, through reversed, signed segments (module docstring).

    Parameters
    ----------
    nx, ny
        Global grid size (T points).
    model_boxes
        ``model_boxes[r]``: interior box of model rank ``r``, global coordinates. Must tile the
        grid.
    server_boxes
        ``server_boxes[s]``: block of server rank ``s`` (see :func:`server_blocks`). Must tile the
        grid.
    halo
        Halo width (cells) the servers need on every side, ``>= 0``.
    boundary
        One of :data:`BOUNDARIES`.
    point
        The C-grid point of the fields (:data:`POINTS`): it moves the fold's mirror; the routes of
        the other boundaries are the same for every point. ``None``: routes for fields on any
        point at once: beyond a fold, the T-point mirror of the north halo rows grown by one
        column and one row goes to a staging array (``staged`` segments), from which
        :func:`fill_fold` fills each field's halo by its point.

    Returns
    -------
    Plan
        The send and return segments of every pair of ranks that exchange data.

    Raises
    ------
    ValueError
        If either box list does not tile the grid (see :func:`check_tiling`), ``halo`` is negative,
        ``boundary`` or ``point`` is unknown, ``halo >= nx`` (``ny``) along a periodic axis, or
        ``halo >= ny - 1`` with a north fold.
    TypeError
        If a box is not a :class:`Box` or ``halo`` is not an integer.
    """
    if point is not None:
        _check_point(point)
    check_tiling(nx, ny, model_boxes, "model boxes")
    check_tiling(nx, ny, server_boxes, "server boxes")
    px, py = _check_halo(nx, ny, halo, boundary)
    mcoords = _box_arrays(model_boxes)

    sends: dict[tuple[int, int], list[Segment]] = {}
    returns: dict[tuple[int, int], list[Segment]] = {}
    for s, sbox in enumerate(server_boxes):
        if sbox.size == 0:
            continue
        hbox = sbox.grow(halo)
        for gx0, gx1, dx0 in _axis_pieces(hbox.i0, hbox.i1, nx, px):
            for gy0, gy1, dy0 in _axis_pieces(hbox.j0, hbox.j1, ny, py):
                piece = Box(gx0, gx1, gy0, gy1)
                for r in _overlapping(mcoords, piece):
                    mbox = model_boxes[r]
                    common = piece.intersect(mbox)
                    assert common is not None
                    seg = Segment(
                        src=common.shift(-mbox.i0, -mbox.j0),
                        dst=common.shift(dx0 - gx0, dy0 - gy0),
                    )
                    sends.setdefault((int(r), s), []).append(seg)
        if boundary in FOLDS:
            for r, seg in _fold_segments(
                hbox, nx, ny, boundary, point or "T", mcoords, model_boxes, staged=point is None
            ):
                sends.setdefault((r, s), []).append(seg)
        for r in _overlapping(mcoords, sbox):
            mbox = model_boxes[r]
            common = sbox.intersect(mbox)
            assert common is not None
            seg = Segment(
                src=common.shift(-sbox.i0, -sbox.j0), dst=common.shift(-mbox.i0, -mbox.j0)
            )
            returns[(s, int(r))] = [seg]

    for segments in sends.values():
        segments.sort(key=lambda seg: (seg.dst.j0, seg.dst.i0))
    return Plan(
        nx=nx,
        ny=ny,
        halo=halo,
        boundary=boundary,
        model_boxes=tuple(model_boxes),
        server_boxes=tuple(server_boxes),
        sends={key: tuple(segments) for key, segments in sends.items()},
        returns={key: tuple(segments) for key, segments in returns.items()},
    )


# --------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------


def _check_3d(name: str, array: np.ndarray, boxes: Sequence[Box]) -> None:
    if array.ndim != 3:
        raise ValueError(f"{name} must be 3-D (nz, ny, nx), got shape {array.shape}")
    area = Box(0, array.shape[2], 0, array.shape[1])
    for box in boxes:
        if not area.contains_box(box):
            raise ValueError(
                f"segment box {box} does not fit in {name} of horizontal shape {array.shape[1:]}"
            )


def pack(
    array3d: np.ndarray,
    segments: Sequence[Segment],
    side: Side = "src",
    out: np.ndarray | None = None,
    sign: float = 1.0,
) -> np.ndarray:
    """Copy the cells of ``segments`` out of ``array3d`` into one contiguous 1-D buffer.

    Each segment contributes its cells as a C-ordered ``(nz, ny, nx)`` block (levels first), in
    its source box's order, the segments following one another in the given order. On the
    ``"dst"`` side a segment's transform is undone (reversed read, ``sign`` on signed segments).

    Parameters
    ----------
    array3d
        ``(nz, ny, nx)`` array, any dtype.
    segments
        The segments of one connection (e.g. ``plan.sends[(r, s)]``).
    side
        Which box of each segment addresses ``array3d``: ``"src"`` (default) or ``"dst"``.
    out
        Optional preallocated 1-D C-contiguous buffer of the right size and ``array3d``'s dtype,
        reused to avoid an allocation per step.
    sign
        The field's fold sign (``-1.0`` for a vector component), applied on the ``"dst"`` side to
        the segments marked ``signed``.

    Returns
    -------
    numpy.ndarray
        The 1-D buffer (``out`` when given).

    Raises
    ------
    ValueError
        If ``array3d`` is not 3-D, a box does not fit in it, ``side`` is invalid, or ``out`` has the
        wrong size, dtype or layout.
    """
    boxes = [seg.box(side) for seg in segments]
    _check_3d("array3d", array3d, boxes)
    nz = array3d.shape[0]
    total = nz * sum(b.size for b in boxes)
    if out is None:
        out = np.empty(total, dtype=array3d.dtype)
    elif out.ndim != 1 or out.size != total or out.dtype != array3d.dtype:
        raise ValueError(
            f"out must be 1-D with {total} elements of dtype {array3d.dtype}, got shape "
            f"{out.shape} and dtype {out.dtype}"
        )
    elif not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    offset = 0
    for seg, box in zip(segments, boxes, strict=True):
        count = nz * box.size
        dest = out[offset : offset + count].reshape(nz, box.ny, box.nx)
        if side == "src" or seg.plain:
            dest[...] = array3d[:, box.j0 : box.j1, box.i0 : box.i1]
        else:
            dest[...] = seg.view(array3d, "dst")
            if seg.signed and sign != 1.0:
                dest *= sign
        offset += count
    return out


def unpack(
    buffer: np.ndarray,
    segments: Sequence[Segment],
    out3d: np.ndarray,
    side: Side = "dst",
    sign: float = 1.0,
) -> np.ndarray:
    """Scatter a buffer made by :func:`pack` into ``out3d`` (in place).

    On the ``"dst"`` side each segment's transform applies: reversed order, ``sign`` on signed
    segments.

    Parameters
    ----------
    buffer
        1-D buffer laid out as :func:`pack` writes it (its dtype is cast to ``out3d``'s if they
        differ).
    segments
        The same segments, in the same order, as on the packing side.
    out3d
        ``(nz, ny, nx)`` destination array, modified in place.
    side
        Which box of each segment addresses ``out3d``: ``"dst"`` (default) or ``"src"``.
    sign
        The field's fold sign (``-1.0`` for a vector component), applied on the ``"dst"`` side to
        the segments marked ``signed``.

    Returns
    -------
    numpy.ndarray
        ``out3d``.

    Raises
    ------
    ValueError
        If ``out3d`` is not 3-D, a box does not fit in it, ``side`` is invalid, or ``buffer`` is
        not 1-D with ``nz`` times the segments' cells.
    """
    boxes = [seg.box(side) for seg in segments]
    _check_3d("out3d", out3d, boxes)
    nz = out3d.shape[0]
    total = nz * sum(b.size for b in boxes)
    if buffer.ndim != 1 or buffer.size != total:
        raise ValueError(
            f"buffer must be 1-D with {total} elements ({nz} levels x "
            f"{total // nz if nz else 0} cells), got shape {buffer.shape}"
        )
    offset = 0
    for seg, box in zip(segments, boxes, strict=True):
        count = nz * box.size
        block = buffer[offset : offset + count].reshape(nz, box.ny, box.nx)
        if side == "src" or seg.plain:
            out3d[:, box.j0 : box.j1, box.i0 : box.i1] = block
        else:
            view = seg.view(out3d, "dst")
            view[...] = block
            if seg.signed and sign != 1.0:
                view *= sign
        offset += count
    return out3d


def apply_transforms(block3d: np.ndarray, segments: Sequence[Segment], sign: float = 1.0) -> None:
    """Turn cells copied plainly into the destination boxes into the segments' transforms.

    For receivers that let MPI place each segment's cells in its ``dst`` box in source order
    (derived datatypes): reverses those boxes in place and multiplies signed ones by ``sign``.
    Plain segments are left alone.
    """
    for seg in segments:
        if seg.plain:
            continue
        box = seg.dst
        view = block3d[:, box.j0 : box.j1, box.i0 : box.i1]
        data = view.copy()  # the cells in source order
        view[...] = data[:, :: -1 if seg.rev_j else 1, :: -1 if seg.rev_i else 1]
        if seg.signed and sign != 1.0:
            view *= sign


def fill_fold(
    block3d: np.ndarray, staging3d: np.ndarray, point: str, sign: float = 1.0
) -> np.ndarray:
    """Fill the rows of a haloed block beyond the north fold from its staging array.

    ``staging3d`` holds, in source order undone (see :func:`apply_transforms`), the T-point mirror
    of those rows grown by one column east and one row north; a field on ``point`` takes it
    shifted by one column (U, F) and one row (V, F), times ``sign``: the U-point mirror of cell
    ``(i, j)`` is the T-point mirror of ``(i + 1, j)``, the V-point's that of ``(i, j + 1)``
    (module docstring). The block's last ``staging rows - 1`` rows are written.

    Returns
    -------
    numpy.ndarray
        ``block3d``.
    """
    _check_point(point)
    rows = staging3d.shape[1] - 1
    if rows <= 0:
        return block3d
    a = 1 if point in ("U", "F") else 0
    b = 1 if point in ("V", "F") else 0
    nx = block3d.shape[2]
    src = staging3d[:, b : b + rows, a : a + nx]
    block3d[:, block3d.shape[1] - rows :, :] = src * sign if sign != 1.0 else src
    return block3d


def assemble_global_reference(
    global3d: np.ndarray,
    server_box: Box,
    halo: int,
    boundary: str = "closed",
    point: str = "T",
    sign: float = 1.0,
) -> np.ndarray:
    """What a server should see: its block of a global field with the halo, built directly.

    Independent of the routing (index arithmetic on the global array), for tests and for checking
    an online run against an offline application of the closure.

    Parameters
    ----------
    global3d
        ``(nz, ny, nx)`` global field.
    server_box
        The server's block, global coordinates, inside the grid.
    halo
        Halo width, ``>= 0``.
    boundary
        One of :data:`BOUNDARIES`: cells beyond a closed edge are zero, along a periodic axis they
        are wrapped, beyond a north fold they are the mirror cell times ``sign``.
    point
        The field's C-grid point (moves the fold's mirror).
    sign
        The field's fold sign: ``-1.0`` for a vector component, ``1.0`` otherwise.

    Returns
    -------
    numpy.ndarray
        New ``(nz, server_box.ny + 2*halo, server_box.nx + 2*halo)`` array of ``global3d``'s dtype.

    Raises
    ------
    ValueError
        If ``global3d`` is not 3-D, ``server_box`` is not inside the grid, ``halo`` is negative,
        ``boundary`` is unknown, or ``halo`` is not smaller than the grid along a periodic axis.
    """
    if global3d.ndim != 3:
        raise ValueError(f"global3d must be 3-D (nz, ny, nx), got shape {global3d.shape}")
    nz, ny, nx = global3d.shape
    px, py = _check_halo(nx, ny, halo, boundary)
    if not Box(0, nx, 0, ny).contains_box(server_box):
        raise ValueError(f"server box {server_box} is not inside the {nx} x {ny} grid")
    hbox = server_box.grow(halo)
    ii = np.arange(hbox.i0, hbox.i1)
    jj = np.arange(hbox.j0, hbox.j1)
    if px:
        ii %= nx
    if py:
        jj %= ny
    keep_i = np.flatnonzero((ii >= 0) & (ii < nx))
    keep_j = np.flatnonzero((jj >= 0) & (jj < ny))
    out = np.zeros((nz, hbox.ny, hbox.nx), dtype=global3d.dtype)
    out[:, keep_j[:, None], keep_i[None, :]] = global3d[:, jj[keep_j][:, None], ii[keep_i][None, :]]
    if boundary in FOLDS:
        _check_point(point)
        ci, cj = fold_mirror(boundary, point, nx, ny)
        north = np.flatnonzero(np.arange(hbox.j0, hbox.j1) >= ny)
        if north.size:
            mj = cj - (hbox.j0 + north)
            mi = (ci - np.arange(hbox.i0, hbox.i1)) % nx
            mirror = global3d[:, mj[:, None], mi[None, :]]
            out[:, north, :] = mirror * sign if sign != 1.0 else mirror
    return out
