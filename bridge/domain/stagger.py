"""Arakawa C-grid staggering: where U, V and F points sit, and the masks of each point.

A model or a closure says where its U and V points sit relative to the T cell of the same index
with a *face convention*, one word per axis:

* ``("east", "north")``, NEMO's: ``U(i)`` at ``i + 1/2``, ``V(j)`` at ``j + 1/2``, ``F(i, j)`` at
  ``(i + 1/2, j + 1/2)``;
* ``("west", "south")``, MITgcm-like models: ``U(i)`` at ``i - 1/2``, ``V(j)`` at ``j - 1/2``,
  ``F(i, j)`` at ``(i - 1/2, j - 1/2)``.

When the model's convention differs from a closure's along an axis, the server hands the closure
its staggered fields shifted by one cell along that axis (:func:`input_shift`), so that the
closure's index ``i`` names the physical point its own convention says; its outputs shift back.

The masks of the points follow NEMO's rule (``domain/dommsk.F90``), written in the east-north
convention: ``umask(i, j) = tmask(i, j) * tmask(i+1, j)``, ``vmask(i, j) = tmask(i, j) *
tmask(i, j+1)``, ``fmask`` the product of the four T points around the F point. In the west-south
convention the same physical rule reads ``umask(i, j) = tmask(i-1, j) * tmask(i, j)`` and so on
(:func:`point_masks`). NEMO's later free-slip / no-slip change of fmask at coasts (``rn_shlat``) is
a property of its momentum equations, not of which point is wet, and is not applied here.

Pure NumPy, no MPI.
"""

from __future__ import annotations

import numpy as np

from bridge.domain.plan import FOLDS, Box, assemble_global_reference, periodicity

#: Faces along i and along j.
FACES_I: tuple[str, ...] = ("east", "west")
FACES_J: tuple[str, ...] = ("north", "south")

#: NEMO's convention: U(i) at i + 1/2, V(j) at j + 1/2 (the default of models and closures).
NEMO_FACES: tuple[str, str] = ("east", "north")

#: The points staggered along i (U, F) and along j (V, F).
STAGGERED_I: tuple[str, ...] = ("U", "F")
STAGGERED_J: tuple[str, ...] = ("V", "F")

_SHORT = {"east": ("east", "north"), "west": ("west", "south"), "nemo": NEMO_FACES}


def parse_faces(text: str | tuple[str, ...] | list[str], where: str = "faces") -> tuple[str, str]:
    """``("east", "north")`` from ``"east"``, ``"west"``, ``"nemo"``, ``"west south"`` or a list.

    One word names both axes (``east``: NEMO's east and north faces; ``west``: west and south);
    two words name the i face then the j face.

    Raises
    ------
    ValueError
        Naming ``where`` and the value, if it is not a convention.
    """
    words = text.lower().split() if isinstance(text, str) else [str(w).lower() for w in text]
    if len(words) == 1 and words[0] in _SHORT:
        return _SHORT[words[0]]
    if len(words) == 2 and words[0] in FACES_I and words[1] in FACES_J:
        return words[0], words[1]
    raise ValueError(
        f"{where}: {text!r} is not a face convention (east, west, nemo, or two words: "
        f"{'|'.join(FACES_I)} then {'|'.join(FACES_J)}, e.g. 'west south')"
    )


def describe_faces(faces: tuple[str, str]) -> str:
    """``U at i+1/2, V at j+1/2 (east north)``."""
    si = "+" if faces[0] == "east" else "-"
    sj = "+" if faces[1] == "north" else "-"
    return f"U at i{si}1/2, V at j{sj}1/2 ({faces[0]} {faces[1]})"


def input_shift(
    point: str, model_faces: tuple[str, str], closure_faces: tuple[str, str]
) -> tuple[int, int]:
    """``(dj, di)``: the closure's value at index ``c`` is the model's at ``c + d``.

    Zero along an axis where the point is not staggered or the conventions agree; ``+1`` where
    the model's face is west (south) and the closure's east (north): NEMO's ``U(i)`` at ``i+1/2``
    is the west-face model's ``U(i+1)``; ``-1`` the other way round.
    """

    def one(staggered: bool, model: str, closure: str, plus: str) -> int:
        if not staggered or model == closure:
            return 0
        return 1 if closure == plus else -1

    return (
        one(point in STAGGERED_J, model_faces[1], closure_faces[1], "north"),
        one(point in STAGGERED_I, model_faces[0], closure_faces[0], "east"),
    )


def _neighbour(t: np.ndarray, axis: int, step: int, periodic: bool) -> np.ndarray:
    """``t`` at index + ``step`` along ``axis``; beyond the edge 0, or wrapped if periodic."""
    if periodic:
        return np.roll(t, -step, axis=axis)
    out = np.zeros_like(t)
    n = t.shape[axis]
    src = [slice(None)] * t.ndim
    dst = [slice(None)] * t.ndim
    if step > 0:
        src[axis], dst[axis] = slice(step, n), slice(0, n - step)
    else:
        src[axis], dst[axis] = slice(0, n + step), slice(-step, n)
    out[tuple(dst)] = t[tuple(src)]
    return out


def point_masks(
    tmask: np.ndarray, faces: tuple[str, str] = NEMO_FACES, boundary: str = "closed"
) -> dict[str, np.ndarray]:
    """The ``T``, ``U``, ``V`` and ``F`` masks of a global ``(ny, nx)`` T mask, by NEMO's rule.

    In the model's convention ``faces``; beyond a closed edge the T mask is 0, along a periodic
    axis (``boundary``: ``periodic``, ``periodic_x``, ``periodic_y``) it wraps, beyond a north
    fold (``north_fold_t``, ``north_fold_f``) it is the mirror T point's. Values are 0/1 in
    ``tmask``'s dtype.
    """
    t = (np.asarray(tmask) != 0).astype(np.float64)
    si = 1 if faces[0] == "east" else -1
    sj = 1 if faces[1] == "north" else -1
    if boundary in FOLDS:
        ny, nx = t.shape
        ext = assemble_global_reference(t[None], Box(0, nx, 0, ny), 1, boundary)[0]
        u_rows = ext[:, 1:-1] * ext[:, 1 + si : 1 + si + nx]  # rows -1 .. ny
        u = u_rows[1:-1]
        v = t * ext[1 + sj : 1 + sj + ny, 1:-1]
        f = u * u_rows[1 + sj : 1 + sj + ny]
        return {"T": t, "U": u, "V": v, "F": f}
    px, py = periodicity(boundary)
    t_i = _neighbour(t, 1, si, px)
    u = t * t_i
    v = t * _neighbour(t, 0, sj, py)
    f = u * _neighbour(u, 0, sj, py)
    return {"T": t, "U": u, "V": v, "F": f}
