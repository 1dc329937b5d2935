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


def thickness_forcing(fine_dhdt: np.ndarray, coarse_dhdt: np.ndarray, factor: int) -> np.ndarray:
    """``S_h = C_T(T_f,h(state_f)) - T_c,h(C(state_f))`` [m s-1] at the coarse T points: the
    thickness-equation forcing (in a layered model mostly the eddy thickness flux divergence).

    Raises
    ------
    ValueError
        If the coarse-grained fine tendency and the coarse tendency differ in shape.
    """
    sh = coarsen_t(fine_dhdt, factor)
    if sh.shape != coarse_dhdt.shape:
        raise ValueError(
            f"tendency of h: the coarse-grained fine tendency has shape {sh.shape}, "
            f"the coarse tendency {coarse_dhdt.shape}"
        )
    return sh - coarse_dhdt


#: Relative size of the perturbation of the rest state that gives the linear tendencies.
LINEAR_EPSILON = 1.0e-3


def rest_thickness(h: np.ndarray, total: float) -> np.ndarray:
    """The state of rest of ``(..., z, y, x)`` thicknesses: ``total / nz`` in every layer."""
    return np.full_like(h, total / h.shape[-3], dtype=np.float64)


def perturbed_states(
    u: np.ndarray, v: np.ndarray, h: np.ndarray, h_rest: np.ndarray, eps: float = LINEAR_EPSILON
) -> tuple[CoarseState, CoarseState]:
    """The states ``rest +- eps (state - rest)`` whose tendencies give, by a centred
    difference, the model's tendency linearised about rest (:func:`linear_tendency`)."""
    dh = h - h_rest
    plus = CoarseState(eps * u, eps * v, h_rest + eps * dh)
    minus = CoarseState(-eps * u, -eps * v, h_rest - eps * dh)
    return plus, minus


def linear_tendency(
    t_plus: np.ndarray, t_minus: np.ndarray, eps: float = LINEAR_EPSILON
) -> np.ndarray:
    """``L (state - rest) = (T(rest + eps d) - T(rest - eps d)) / (2 eps)``: the model's own
    tendency linearised about rest (pressure gradient, Coriolis, divergence, drag, the wind's
    ``1/h``), its quadratic terms cancelled, its cubic ones ``O(eps^2)``."""
    return (t_plus - t_minus) / (2.0 * eps)


@dataclass(frozen=True)
class AffineResidual:
    """The part of the forcing that is affine in the state: the filters' commutation error of
    the linear operators and of the rest state's tendency (the wind), ``(..., ny_c, nx_c)``
    [m s-2, m s-2, m s-1]."""

    u: np.ndarray
    v: np.ndarray
    h: np.ndarray


def affine_residual(
    fine_rest: tuple[np.ndarray, np.ndarray, np.ndarray],
    fine_linear: tuple[np.ndarray, np.ndarray, np.ndarray],
    coarse_rest: tuple[np.ndarray, np.ndarray, np.ndarray],
    coarse_linear: tuple[np.ndarray, np.ndarray, np.ndarray],
    factor: int,
    u_filter: str = "face",
) -> AffineResidual:
    """``R = C(T_f(rest) + L_f d_f) - (T_c(rest) + L_c C d_f)`` for ``(dudt, dvdt, dhdt)``
    tuples of tendencies: what the forcing would hold if the flow were linear about rest.

    With linear filters the rest state and the perturbation coarse-grain exactly
    (``C(rest_f) = rest_c``, ``C d_f = d_c``), so ``R`` is the commutation error of the linear
    operators with the filters, ``C L_f - L_c C``: the velocity filter (mean along the face)
    and the thickness filter (block mean) differ, so the pressure gradient and the Coriolis term
    do not commute and leave ``R`` even for a balanced eddy. ``S - R`` is the forcing of the
    nonlinear terms alone, ``C N_f(state_f) - N_c(C state_f)``.
    """
    coarsen = (
        lambda a: coarsen_u(a, factor, u_filter),
        lambda a: coarsen_v(a, factor, u_filter),
        lambda a: coarsen_t(a, factor),
    )
    parts = []
    for c, fr, fl, cr, cl in zip(
        coarsen, fine_rest, fine_linear, coarse_rest, coarse_linear, strict=True
    ):
        parts.append(c(fr) + c(fl) - (cr + cl))
    return AffineResidual(*parts)
