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

Filtered inputs and outputs (Perezhogin, Zhang, Adcroft, Fernandez-Granda & Zanna 2024, JAMES,
"A stable implementation of a data-driven scale-aware mesoscale parameterization",
doi:10.1029/2023MS004104; the options of MOM6's ``MOM_Zanna_Bolton``): the unfiltered forcing is
noisy near the grid scale and, in two dimensions, moves almost no net energy (the stress is, up to
an isotropic part, twice the nonlinear-gradient stress, whose energy transfer ``-T : S`` vanishes
pointwise for a non-divergent flow). Perezhogin et al. filter the velocity-gradient components
before forming the stress and filter the stress before its divergence, each with a few passes of
the 3 x 3 binomial filter ``G = [1 2 1; 2 4 2; 1 2 1] / 16`` (which removes the checkerboard mode
in one pass), and write the coefficient as ``kappa_BC = -gamma * dx * dy`` with a
non-dimensional scaling ``gamma > 0`` (scale-aware: one ``gamma`` for several resolutions).
``vg_filter="smooth"`` applies ``G^n`` to ``zeta, D, D~`` (``n = vg_passes``),
``vg_filter="sharpen"`` applies ``I - G^n`` (the part of the gradients at scales below the
filter's; MOM6's ``VG_SHARP_PASS``); ``stress_passes = m`` applies ``G^m`` to ``T_xx, T_yy``
(T points) and ``T_xy`` (F points) (``STRESS_SMOOTH_PASS``). Every pass reaches one cell
further: ``halo = 2 + vg_passes + stress_passes`` (:func:`required_halo`). With ``free_slip``
and the server's land mask the coast is free-slip for the closure, as in MOM6. Which
combination backscatters, measured: ``docs/closures.md``.
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

#: Accepted values of ``vg_filter``: low-pass ``G^n`` or high-pass ``I - G^n`` of the gradients.
VG_FILTERS: tuple[str, ...] = ("smooth", "sharpen")


def required_halo(vg_passes: int = 0, stress_passes: int = 0) -> int:
    """Halo the forcing consumes: 2 for the unfiltered stencil, plus one per filter pass."""
    return HALO + int(vg_passes) + int(stress_passes)


def binomial_pass(f: np.ndarray) -> np.ndarray:
    """One pass of the 3 x 3 binomial filter ``[1 2 1; 2 4 2; 1 2 1] / 16`` on the last two axes.

    Its response to a mode ``(k, l)`` is ``cos^2(k dx / 2) cos^2(l dy / 2)``: 1 for a constant,
    1/2 for a 4-cell wave along one axis, 0 for a 2-cell wave along either axis (the checkerboard
    included). The outer ring of the result is
    NaN (its stencil leaves the block), so a stencil that reaches too far shows as NaN.
    """
    out = np.full_like(f, np.nan)
    row = np.full_like(f, np.nan)
    row[..., :, 1:-1] = 0.25 * (f[..., :, :-2] + f[..., :, 2:]) + 0.5 * f[..., :, 1:-1]
    out[..., 1:-1, :] = 0.25 * (row[..., :-2, :] + row[..., 2:, :]) + 0.5 * row[..., 1:-1, :]
    return out


def smooth(f: np.ndarray, passes: int, mask: np.ndarray | None = None) -> np.ndarray:
    """``G^passes f`` (:func:`binomial_pass` applied ``passes`` times; ``f`` itself for 0).

    With ``mask`` (1 at wet points of ``f``'s grid, 0 on land), each pass is
    ``mask * G(mask * f)``: zero values on land, as MOM6's filter (zero Dirichlet).
    """
    for _ in range(passes):
        f = binomial_pass(f) if mask is None else binomial_pass(f * mask) * mask
    return f


def filter_gradient(
    f: np.ndarray, passes: int, mode: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """``G^n f`` (``mode="smooth"``) or ``f - G^n f`` (``"sharpen"``); ``f`` for ``n = 0``."""
    if mode not in VG_FILTERS:
        raise ValueError(f"vg_filter must be one of {VG_FILTERS}, got {mode!r}")
    if passes == 0:
        return f
    low = smooth(f, passes, mask)
    return low if mode == "smooth" else f - low


def corner_mask(tmask: np.ndarray) -> np.ndarray:
    """F-point mask from the T mask: 1 where the 4 T cells around F(j, i) (its south-west
    corner is T(j, i)) are all wet, else 0 (0 on the block's last row and column)."""
    f = np.zeros_like(tmask)
    f[..., :-1, :-1] = tmask[..., :-1, :-1] * tmask[..., 1:, :-1] * tmask[..., :-1, 1:]
    f[..., :-1, :-1] *= tmask[..., 1:, 1:]
    return f


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
    u: np.ndarray,
    v: np.ndarray,
    dx: float,
    dy: float,
    kappa: float,
    trace: str = "vorticity",
    vg_passes: int = 0,
    stress_passes: int = 0,
    vg_filter: str = "smooth",
    tmask: np.ndarray | None = None,
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
    vg_passes, stress_passes
        Filter passes on the velocity gradients and on the stress (Perezhogin et al. 2024);
        0 and 0: the forcing of eq. 6 as published.
    vg_filter
        ``"smooth"`` (``G^n``) or ``"sharpen"`` (``I - G^n``) for the gradients.
    tmask
        The T-point land mask of the block ``(ny, nx)`` (1 ocean, 0 land), or ``None`` (all
        ocean). With it the boundary is free-slip for the closure, as in MOM6's implementation:
        ``zeta`` and ``D`` are zero at F points that touch land (:func:`corner_mask`), ``D~`` and
        the diagonal stress zero on land T points, ``T_xy`` zero at those F points, and every
        filter pass keeps land at zero.

    Returns
    -------
    tuple of numpy.ndarray
        ``S_x`` (U points), ``S_y`` (V points) [m s-2], the block's shape.

    Raises
    ------
    ValueError
        On an unknown ``trace`` or ``vg_filter``, or negative pass counts.
    """
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
    if vg_filter not in VG_FILTERS:
        raise ValueError(f"vg_filter must be one of {VG_FILTERS}, got {vg_filter!r}")
    if vg_passes < 0 or stress_passes < 0:
        raise ValueError(
            f"filter passes must be >= 0, got vg_passes={vg_passes}, stress_passes={stress_passes}"
        )
    zeta, shear, stretch = velocity_gradients(u, v, dx, dy)
    fmask = None if tmask is None else corner_mask(tmask)
    if tmask is not None:
        zeta, shear, stretch = zeta * fmask, shear * fmask, stretch * tmask
    zeta = filter_gradient(zeta, vg_passes, vg_filter, fmask)
    shear = filter_gradient(shear, vg_passes, vg_filter, fmask)
    stretch = filter_gradient(stretch, vg_passes, vg_filter, tmask)
    if trace == "vorticity":
        diag_f = zeta * zeta
        diag_t = _f_to_t(diag_f)
    else:
        diag_t = 0.5 * (_f_to_t(zeta * zeta + shear * shear) + stretch * stretch)
    zd_t = _f_to_t(zeta * shear)
    txx, tyy = diag_t - zd_t, diag_t + zd_t  # T points
    txy = zeta * _t_to_f(stretch)  # F points
    if tmask is not None:
        txx, tyy, txy = txx * tmask, tyy * tmask, txy * fmask
    txx, tyy = smooth(txx, stress_passes, tmask), smooth(tyy, stress_passes, tmask)
    txy = smooth(txy, stress_passes, fmask)
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
    """The Zanna & Bolton (2020) closure: ``u, v`` (halo :func:`required_halo`) -> ``su, sv``.

    Parameters
    ----------
    dx, dy
        Grid spacing of the model the closure runs on [m] (the toy's coarse grid: 32 km).
    kappa
        ``kappa_BC`` [m2]; ``None``: from ``amplitude`` if given, else :func:`default_kappa`
        (the published value scaled with the cell area). Tune it here (or in the manifest's
        ``[arch]``).
    trace
        ``"vorticity"`` or ``"energy"`` (see :func:`zanna_bolton_forcing`).
    name
        Closure name in its spec.
    amplitude
        Perezhogin et al. (2024)'s non-dimensional scaling ``gamma``: ``kappa_BC = -gamma dx dy``
        (``gamma > 0`` backscatters). Give ``kappa`` or ``amplitude``, not both.
    vg_passes, stress_passes, vg_filter
        The filters of Perezhogin et al. (2024) (see :func:`zanna_bolton_forcing`).
    free_slip
        Use the land mask the server hands over: free-slip coasts for the closure (see
        :func:`zanna_bolton_forcing`). ``False`` (default): the mask is ignored and land is
        just zero velocity (no-slip gradients at the coast), the behaviour of the plain closure.
    """

    dx: float = 32.0e3
    dy: float = 32.0e3
    kappa: float | None = None
    trace: str = "vorticity"
    name: str = "zanna_bolton"
    amplitude: float | None = None
    vg_passes: int = 0
    stress_passes: int = 0
    vg_filter: str = "smooth"
    free_slip: bool = False
    spec: ClosureSpec = field(init=False)

    def __post_init__(self) -> None:
        if not (self.dx > 0 and self.dy > 0):
            raise ValueError(f"dx and dy must be > 0, got {self.dx}, {self.dy}")
        if self.trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {self.trace!r}")
        if self.vg_filter not in VG_FILTERS:
            raise ValueError(f"vg_filter must be one of {VG_FILTERS}, got {self.vg_filter!r}")
        if self.kappa is not None and self.amplitude is not None:
            raise ValueError(f"give kappa ({self.kappa}) or amplitude ({self.amplitude}), not both")
        for key in ("vg_passes", "stress_passes"):
            n = getattr(self, key)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {n!r}")
        spec = ClosureSpec(
            self.name,
            required_halo(self.vg_passes, self.stress_passes),
            (FieldSpec("u", "U", "m s-1"), FieldSpec("v", "V", "m s-1")),
            (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2")),
            dtype="float64",
        )
        object.__setattr__(self, "spec", spec)

    @property
    def coefficient(self) -> float:
        """The ``kappa_BC`` used [m2]."""
        if self.kappa is not None:
            return float(self.kappa)
        if self.amplitude is not None:
            return -float(self.amplitude) * self.dx * self.dy
        return default_kappa(self.dx, self.dy)

    def __call__(
        self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Forcing on the interior of a block with the spec's halo, in the inputs' dtype.

        ``mask`` is the block's T-point land mask ``(ny, nx)`` with the halo (the server hands
        it to closures that take it): with ``free_slip`` the closure is free-slip at the coast
        (see :func:`zanna_bolton_forcing`); otherwise, or without it, it is not used.

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
            self.vg_passes,
            self.stress_passes,
            self.vg_filter,
            None if mask is None or not self.free_slip else np.asarray(mask, dtype=np.float64),
        )
        h = self.spec.halo
        inner = (slice(None), slice(h, -h), slice(h, -h))
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
    amplitude: float | None = None,
    vg_passes: int = 0,
    stress_passes: int = 0,
    vg_filter: str = "smooth",
    free_slip: bool = False,
) -> ZannaBoltonClosure:
    """Entry point of the ``python`` manifest format: the closure with its ``[arch]`` values."""
    return ZannaBoltonClosure(
        dx=dx,
        dy=dy,
        kappa=kappa,
        trace=trace,
        name=name,
        amplitude=amplitude,
        vg_passes=vg_passes,
        stress_passes=stress_passes,
        vg_filter=vg_filter,
        free_slip=free_slip,
    )


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
