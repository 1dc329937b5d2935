"""The subgrid momentum forcing: what the coarse model misses of the filtered truth's tendency.

With ``C`` the coarse-graining of :mod:`mlbridge_models.subgrid.coarsen` (linear), ``T_f`` the fine
model's dynamical tendency and ``T_c`` the coarse model's own tendency operator (both from the
toy's ``&namtend`` mode, so exactly what the models compute in a step):

    S_u = C_u(T_f,u(state_f)) - T_c,u(C(state_f))
    S_v = C_v(T_f,v(state_f)) - T_c,v(C(state_f))

``C_u(T_f,u)`` is the tendency of the filtered truth ``d C_u(u_f) / dt`` (``C`` is linear and
time independent), so adding ``S`` to the coarse tendency of the filtered state gives the
filtered truth's tendency: the sign makes the coarse model move toward the truth.
Units: m s-2, at the coarse U and V points, 0 on land.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlbridge_models.subgrid.coarsen import coarsen_t, coarsen_u, coarsen_v


@dataclass(frozen=True)
class CoarseState:
    """Coarse-grained ``u``, ``v``, ``h`` ``(..., ny_c, nx_c)`` [m s-1, m s-1, m]."""

    u: np.ndarray
    v: np.ndarray
    h: np.ndarray


def coarsen_state(
    u: np.ndarray, v: np.ndarray, h: np.ndarray, factor: int, u_filter: str = "face"
) -> CoarseState:
    """Coarse-grain a fine state with the linear operators (the training data's definition)."""
    return CoarseState(
        coarsen_u(u, factor, u_filter), coarsen_v(v, factor, u_filter), coarsen_t(h, factor)
    )


def subgrid_forcing(
    fine_dudt: np.ndarray,
    fine_dvdt: np.ndarray,
    coarse_dudt: np.ndarray,
    coarse_dvdt: np.ndarray,
    factor: int,
    u_filter: str = "face",
) -> tuple[np.ndarray, np.ndarray]:
    """``(S_u, S_v)``: coarse-grained fine tendency minus the coarse tendency of the coarse state.

    Parameters
    ----------
    fine_dudt, fine_dvdt
        Fine model tendencies of ``u`` and ``v`` ``(..., ny_f, nx_f)`` [m s-2].
    coarse_dudt, coarse_dvdt
        Coarse model tendencies of the coarse-grained state ``(..., ny_c, nx_c)`` [m s-2].
    factor, u_filter
        As in :func:`mlbridge_models.subgrid.coarsen.coarsen_u`; must be those of the coarse state.

    Returns
    -------
    tuple of numpy.ndarray
        ``S_u`` and ``S_v`` [m s-2] on the coarse grid.

    Raises
    ------
    ValueError
        If the coarse-grained fine tendency and the coarse tendency differ in shape.
    """
    su = coarsen_u(fine_dudt, factor, u_filter)
    sv = coarsen_v(fine_dvdt, factor, u_filter)
    for name, fine, coarse in (("u", su, coarse_dudt), ("v", sv, coarse_dvdt)):
        if fine.shape != coarse.shape:
            raise ValueError(
                f"tendency of {name}: the coarse-grained fine tendency has shape {fine.shape}, "
                f"the coarse tendency {coarse.shape}"
            )
    return su - coarse_dudt, sv - coarse_dvdt
