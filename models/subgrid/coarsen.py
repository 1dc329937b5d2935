"""Coarse-graining from the fine toy grid to the coarse one, consistent with the Arakawa C-grid.

Both grids cover the same basin and carry the toy's 1-point land rim: a coarse grid of
``nc`` T points per direction (ocean ``nc - 2``) pairs with a fine grid of ``r (nc - 2) + 2``
(ocean ``r (nc - 2)``), ``r`` the integer refinement factor (4 for the toy's two configurations:
64 <-> 250). Arrays are C-ordered ``(..., ny, nx)`` with NEMO indices: ``u[..., j, i]`` on the
east face of T(i, j), ``v[..., j, i]`` on its north face. Coarse cell ``I`` (0-based, ocean
``1 .. nc-2``) holds fine T cells ``r (I-1) + 1 .. r I``; its east face is the fine face ``r I``.

The filter is a box of width one coarse cell, sampled at the coarse points:

* T points (``h``): the box average sampled at a coarse centre *is* the mean of the ``r x r``
  fine cells, so the coarse volume equals the fine volume exactly.
* U points (``u``): along the face, the mean of the ``r`` fine ``u`` of the coarse east face
  (``u_filter="face"``, the default); ``u_filter="box"`` also applies the box along x (the
  trapezoid over the ``r + 1`` fine faces from ``r I - r/2`` to ``r I + r/2``).
* V points (``v``): the same with x and y exchanged.
* ``coarsen_u_flux``/``coarsen_v_flux``: thickness-weighted face averages, chosen so that the
  coarse model's own flux ``e2u h_u u`` (``h_u`` the mean of the two coarse neighbours, as in
  ``dyn.F90``) equals the sum of the fine fluxes through the face, exactly.

Why ``face`` is the default for the training data: it is linear (so the coarse-grained tendency is
the tendency of the coarse-grained field, which is what defines the subgrid forcing), and it is
the transport through the coarse face whenever ``h`` does not vary along the face; the flux form
is exact for the volume transport but depends on ``h`` (see ``docs/closures.md``).
The coarse land rim, and the coarse faces on the walls, are set to 0.
"""

from __future__ import annotations

import numpy as np

#: Accepted values of ``u_filter``.
U_FILTERS: tuple[str, ...] = ("face", "box")


def refinement(n_fine: int, n_coarse: int) -> int:
    """Integer refinement factor between a fine and a coarse size (rim included).

    Raises
    ------
    ValueError
        If the fine ocean is not an integer multiple of the coarse ocean.
    """
    if n_coarse < 3 or n_fine < 3:
        raise ValueError(
            f"grids need >= 3 points with the rim, got fine {n_fine}, coarse {n_coarse}"
        )
    factor, rest = divmod(n_fine - 2, n_coarse - 2)
    if rest or factor < 1:
        raise ValueError(
            f"fine grid of {n_fine} points (ocean {n_fine - 2}) is not an integer refinement of "
            f"a coarse grid of {n_coarse} (ocean {n_coarse - 2}); expected r * {n_coarse - 2} + 2"
        )
    return factor


def coarse_size(n_fine: int, factor: int) -> int:
    """Coarse size (rim included) of a fine size for a refinement ``factor``.

    Raises
    ------
    ValueError
        If the fine ocean does not divide by ``factor``.
    """
    if factor < 1 or (n_fine - 2) % factor:
        raise ValueError(f"fine ocean of {n_fine - 2} points does not divide by factor {factor}")
    return (n_fine - 2) // factor + 2


def _block_shape(shape: tuple[int, ...], factor: int) -> tuple[int, int]:
    ny, nx = shape[-2:]
    return coarse_size(ny, factor), coarse_size(nx, factor)


def t_mask(ny: int, nx: int) -> np.ndarray:
    """Land mask at T points of a toy grid (1 ocean, 0 on the rim)."""
    mask = np.zeros((ny, nx))
    mask[1:-1, 1:-1] = 1.0
    return mask


def u_mask(ny: int, nx: int) -> np.ndarray:
    """Land mask at U points: ``tmask(i) tmask(i+1)``."""
    t = t_mask(ny, nx)
    mask = np.zeros((ny, nx))
    mask[:, :-1] = t[:, :-1] * t[:, 1:]
    return mask


def v_mask(ny: int, nx: int) -> np.ndarray:
    """Land mask at V points: ``tmask(j) tmask(j+1)``."""
    t = t_mask(ny, nx)
    mask = np.zeros((ny, nx))
    mask[:-1, :] = t[:-1, :] * t[1:, :]
    return mask


def coarsen_t(h: np.ndarray, factor: int) -> np.ndarray:
    """Coarse T-point field: the mean of the ``factor x factor`` fine cells of each coarse cell.

    Parameters
    ----------
    h
        Fine T-point field ``(..., ny, nx)``, land rim included.
    factor
        Refinement factor.

    Returns
    -------
    numpy.ndarray
        ``(..., ny_c, nx_c)``, 0 on the coarse rim.
    """
    nyc, nxc = _block_shape(h.shape, factor)
    inner = h[..., 1:-1, 1:-1].reshape(*h.shape[:-2], nyc - 2, factor, nxc - 2, factor)
    out = np.zeros((*h.shape[:-2], nyc, nxc), dtype=np.result_type(h, np.float64))
    out[..., 1:-1, 1:-1] = inner.mean(axis=(-3, -1))
    return out


def _x_box(u: np.ndarray, factor: int, cols: np.ndarray) -> np.ndarray:
    """Trapezoid box along x of width ``factor`` fine cells, centred on fine columns ``cols``."""
    half = factor // 2
    pad = np.zeros((*u.shape[:-1], u.shape[-1] + 2 * half), dtype=u.dtype)
    pad[..., half:-half] = u  # beyond the grid: land, 0
    weights = np.full(2 * half + 1, 1.0 / factor)
    weights[[0, -1]] = 0.5 / factor
    return sum(w * pad[..., cols + k] for k, w in enumerate(weights))


def coarsen_u(u: np.ndarray, factor: int, u_filter: str = "face") -> np.ndarray:
    """Coarse U-point field from a fine one (linear).

    Parameters
    ----------
    u
        Fine U-point field ``(..., ny, nx)``.
    factor
        Refinement factor (even when ``u_filter="box"``).
    u_filter
        ``"face"``: mean of the fine ``u`` on the coarse face; ``"box"``: the box of width one
        coarse cell along x first (trapezoid), then the face mean.

    Returns
    -------
    numpy.ndarray
        ``(..., ny_c, nx_c)``, 0 on the coarse faces that are walls or land.

    Raises
    ------
    ValueError
        On an unknown ``u_filter`` or an odd factor with ``"box"``.
    """
    nyc, nxc = _block_shape(u.shape, factor)
    cols = factor * np.arange(nxc - 1)  # east faces of coarse cells 0 .. nxc-2
    if u_filter == "face":
        faces = u[..., cols]
    elif u_filter == "box":
        if factor % 2:
            raise ValueError(f"u_filter='box' needs an even factor, got {factor}")
        faces = _x_box(u, factor, cols)
    else:
        raise ValueError(f"u_filter must be one of {U_FILTERS}, got {u_filter!r}")
    inner = faces[..., 1:-1, :].reshape(*u.shape[:-2], nyc - 2, factor, nxc - 1)
    out = np.zeros((*u.shape[:-2], nyc, nxc), dtype=np.result_type(u, np.float64))
    out[..., 1:-1, :-1] = inner.mean(axis=-2)
    return out * u_mask(nyc, nxc)


def coarsen_v(v: np.ndarray, factor: int, u_filter: str = "face") -> np.ndarray:
    """Coarse V-point field from a fine one: :func:`coarsen_u` with x and y exchanged."""
    return np.swapaxes(coarsen_u(np.swapaxes(v, -1, -2), factor, u_filter), -1, -2)


def face_thickness_u(h: np.ndarray) -> np.ndarray:
    """Thickness at U points as the model's continuity uses it: the mean of the 2 T neighbours."""
    hu = np.zeros_like(h, dtype=np.result_type(h, np.float64))
    hu[..., :-1] = 0.5 * (h[..., :-1] + h[..., 1:])
    return hu


def coarsen_u_flux(u: np.ndarray, h: np.ndarray, factor: int) -> np.ndarray:
    """Coarse ``u`` whose coarse-model flux equals the fine flux through each coarse face.

    ``u_c = sum(h_u u)_fine / (factor * h_u,c)`` with ``h_u`` the centred face thickness of each
    grid and ``h_c`` from :func:`coarsen_t`; then ``dy_c h_u,c u_c = sum(dy_f h_u u)_fine``.

    Parameters
    ----------
    u, h
        Fine ``u`` (U points) and ``h`` (T points), ``(..., ny, nx)``.
    factor
        Refinement factor.

    Returns
    -------
    numpy.ndarray
        ``(..., ny_c, nx_c)``, 0 on walls and land.
    """
    flux_c = coarsen_u(face_thickness_u(h) * u, factor)  # mean of the fine h_u u on the face
    hu_c = face_thickness_u(coarsen_t(h, factor))
    out = np.zeros_like(flux_c)
    np.divide(flux_c, hu_c, out=out, where=hu_c != 0.0)
    return out


def coarsen_v_flux(v: np.ndarray, h: np.ndarray, factor: int) -> np.ndarray:
    """:func:`coarsen_u_flux` for ``v``: x and y exchanged."""
    return np.swapaxes(
        coarsen_u_flux(np.swapaxes(v, -1, -2), np.swapaxes(h, -1, -2), factor), -1, -2
    )
