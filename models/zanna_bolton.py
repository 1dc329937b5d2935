"""The Zanna & Bolton (2020) analytic momentum closure on the toy's C-grid, as a python closure.

Zanna & Bolton (2020, GRL, doi:10.1029/2020GL088376) found by equation discovery (relevance vector
machine on coarse-grained eddy-resolving runs) a subgrid momentum forcing made of products of
velocity gradients, eq. (6):

    S = kappa_BC * div( | zeta^2 - zeta D     zeta D~        | )
                        | zeta D~             zeta^2 + zeta D |

    S_x = kappa_BC * ( d/dx (zeta^2 - zeta D) + d/dy (zeta D~) )
    S_y = kappa_BC * ( d/dx (zeta D~) + d/dy (zeta^2 + zeta D) )

with ``zeta = dv/dx - du/dy`` the relative vorticity, ``D = du/dy + dv/dx`` the shearing and
``D~ = du/dx - dv/dy`` the stretching deformation, and ``kappa_BC < 0`` [m2], which scales with
the area of the coarse cell. ``trace="energy"`` replaces ``zeta^2`` on the diagonal by
``(zeta^2 + D^2 + D~^2) / 2`` (the form some ocean-model implementations use); the two differ by a
gradient, i.e. only in the pressure-like part of the forcing.

Discretisation on the C-grid (uniform spacing ``dx, dy``): ``zeta`` and ``D`` at F points,
``D~`` at T points; the diagonal terms are formed at F points and averaged to T points (4
corners), the off-diagonal term ``zeta D~`` at F points with ``D~`` averaged from the 4
surrounding T points; the divergence lands on U (``S_x``) and V (``S_y``) points. The stencil
reaches 2 cells on each side: ``halo = 2``. Halo cells beyond a closed edge are zero (the
server's boundary rule); the runtime masks land in the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bridge.closures.base import ClosureSpec, FieldSpec, check_inputs

#: Zanna & Bolton's coefficient [m2] at the reference coarse grid spacing below.
KAPPA_REF = -4.6e8

#: Grid spacing [m] at which ``KAPPA_REF`` applies; kappa scales with the cell area dx dy.
DX_REF = 30.0e3

#: Halo the stencil consumes on each side.
HALO = 2

#: Accepted values of ``trace``.
TRACES: tuple[str, ...] = ("vorticity", "energy")


def default_kappa(dx: float, dy: float) -> float:
    """``KAPPA_REF * dx * dy / DX_REF**2`` [m2]: the coefficient scaled with the cell area."""
    return KAPPA_REF * dx * dy / DX_REF**2


def _nan_like(x: np.ndarray) -> np.ndarray:
    return np.full_like(x, np.nan)


def velocity_gradients(
    u: np.ndarray, v: np.ndarray, dx: float, dy: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``zeta`` and ``D`` at F points, ``D~`` at T points, on the block of ``u, v``.

    Arrays keep the block's shape ``(..., ny, nx)``; points whose stencil leaves the block are NaN
    (so a stencil that reaches too far shows as NaN in the outputs, never as a silent zero).
    F(j, i) is the north-east corner of T(j, i).
    """
    dvdx, dudy = _nan_like(v), _nan_like(u)
    dvdx[..., :, :-1] = (v[..., :, 1:] - v[..., :, :-1]) / dx
    dudy[..., :-1, :] = (u[..., 1:, :] - u[..., :-1, :]) / dy
    dudx, dvdy = _nan_like(u), _nan_like(v)
    dudx[..., :, 1:] = (u[..., :, 1:] - u[..., :, :-1]) / dx
    dvdy[..., 1:, :] = (v[..., 1:, :] - v[..., :-1, :]) / dy
    return dvdx - dudy, dvdx + dudy, dudx - dvdy


def _f_to_t(f: np.ndarray) -> np.ndarray:
    out = _nan_like(f)
    out[..., 1:, 1:] = 0.25 * (
        (f[..., 1:, 1:] + f[..., :-1, 1:]) + (f[..., 1:, :-1] + f[..., :-1, :-1])
    )
    return out


def _t_to_f(t: np.ndarray) -> np.ndarray:
    out = _nan_like(t)
    out[..., :-1, :-1] = 0.25 * (
        (t[..., :-1, :-1] + t[..., 1:, :-1]) + (t[..., :-1, 1:] + t[..., 1:, 1:])
    )
    return out


def zanna_bolton_forcing(
    u: np.ndarray, v: np.ndarray, dx: float, dy: float, kappa: float, trace: str = "vorticity"
) -> tuple[np.ndarray, np.ndarray]:
    """``(S_x, S_y)`` at U and V points of the whole block (NaN where the stencil leaves it).

    Parameters
    ----------
    u, v
        Velocities at U and V points ``(..., ny, nx)`` [m s-1].
    dx, dy
        Grid spacing [m].
    kappa
        ``kappa_BC`` [m2] (negative in Zanna & Bolton).
    trace
        ``"vorticity"`` (eq. 6: ``zeta^2`` on the diagonal) or ``"energy"``
        (``(zeta^2 + D^2 + D~^2) / 2``).

    Returns
    -------
    tuple of numpy.ndarray
        ``S_x`` (U points), ``S_y`` (V points) [m s-2], the block's shape.

    Raises
    ------
    ValueError
        On an unknown ``trace``.
    """
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
    zeta, shear, stretch = velocity_gradients(u, v, dx, dy)
    if trace == "vorticity":
        diag_f = zeta * zeta
        diag_t = _f_to_t(diag_f)
    else:
        diag_t = 0.5 * (_f_to_t(zeta * zeta + shear * shear) + stretch * stretch)
    zd_t = _f_to_t(zeta * shear)
    txx, tyy = diag_t - zd_t, diag_t + zd_t  # T points
    txy = zeta * _t_to_f(stretch)  # F points
    sx, sy = _nan_like(u), _nan_like(v)
    sx[..., :, :-1] = (txx[..., :, 1:] - txx[..., :, :-1]) / dx
    sx[..., 1:, :] += (txy[..., 1:, :] - txy[..., :-1, :]) / dy
    sx[..., 0, :] = np.nan
    sy[..., :, 1:] = (txy[..., :, 1:] - txy[..., :, :-1]) / dx
    sy[..., :-1, :] += (tyy[..., 1:, :] - tyy[..., :-1, :]) / dy
    sy[..., -1, :] = np.nan
    return kappa * sx, kappa * sy


@dataclass(frozen=True)
class ZannaBoltonClosure:
    """The Zanna & Bolton (2020) closure: ``u, v`` (halo 2) -> ``su, sv`` on the interior.

    Parameters
    ----------
    dx, dy
        Grid spacing of the model the closure runs on [m] (the toy's coarse grid: 32 km).
    kappa
        ``kappa_BC`` [m2]; ``None``: :func:`default_kappa` (the published value scaled with the
        cell area). Tune it here (or in the manifest's ``[arch]``).
    trace
        ``"vorticity"`` or ``"energy"`` (see :func:`zanna_bolton_forcing`).
    name
        Closure name in its spec.
    """

    dx: float = 32.0e3
    dy: float = 32.0e3
    kappa: float | None = None
    trace: str = "vorticity"
    name: str = "zanna_bolton"
    spec: ClosureSpec = field(init=False)

    def __post_init__(self) -> None:
        if not (self.dx > 0 and self.dy > 0):
            raise ValueError(f"dx and dy must be > 0, got {self.dx}, {self.dy}")
        if self.trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {self.trace!r}")
        spec = ClosureSpec(
            self.name,
            HALO,
            (FieldSpec("u", "U", "m s-1"), FieldSpec("v", "V", "m s-1")),
            (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2")),
            dtype="float64",
        )
        object.__setattr__(self, "spec", spec)

    @property
    def coefficient(self) -> float:
        """The ``kappa_BC`` used [m2]."""
        return default_kappa(self.dx, self.dy) if self.kappa is None else float(self.kappa)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Forcing on the interior of a halo-2 block, in the inputs' dtype.

        Raises
        ------
        bridge.closures.base.ClosureInputError
            If the inputs do not match the spec.
        """
        check_inputs(self.spec, inputs)
        u, v = inputs["u"], inputs["v"]
        sx, sy = zanna_bolton_forcing(
            u.astype(np.float64),
            v.astype(np.float64),
            self.dx,
            self.dy,
            self.coefficient,
            self.trace,
        )
        inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
        return {
            "su": np.ascontiguousarray(sx[inner], dtype=u.dtype),
            "sv": np.ascontiguousarray(sy[inner], dtype=v.dtype),
        }


def build_zanna_bolton(
    dx: float = 32.0e3,
    dy: float = 32.0e3,
    kappa: float | None = None,
    trace: str = "vorticity",
    name: str = "zanna_bolton",
) -> ZannaBoltonClosure:
    """Entry point of the ``python`` manifest format: the closure with its ``[arch]`` values."""
    return ZannaBoltonClosure(dx=dx, dy=dy, kappa=kappa, trace=trace, name=name)


def manifest_toml(
    dx: float = 32.0e3, dy: float = 32.0e3, kappa: float | None = None, version: str = "1"
) -> str:
    """A registry manifest (``format = "python"``) for the closure on a grid of ``dx x dy``.

    ``mlbridge register --manifest FILE`` with this text in ``FILE`` registers it; no artifact.
    """
    arch = f"dx = {float(dx)!r}\ndy = {float(dy)!r}\n"
    if kappa is not None:
        arch += f"kappa = {float(kappa)!r}\n"
    return f"""name = "zanna_bolton"
version = "{version}"
format = "python"
entry_point = "mlbridge_models.zanna_bolton:build_zanna_bolton"
halo = {HALO}
dtype = "float64"
description = "Zanna & Bolton (2020) analytic subgrid momentum forcing, eq. 6"

[arch]
{arch}
[[inputs]]
name = "u"
grid = "U"
units = "m s-1"

[[inputs]]
name = "v"
grid = "V"
units = "m s-1"

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"

[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
"""
