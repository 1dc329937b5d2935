"""Energy-budget backscatter: a negative viscosity fed by a prognostic subgrid energy.

In the spirit of Jansen & Held (2014, Ocean Modelling 80, doi:10.1016/j.ocemod.2014.06.002) and
Jansen et al. (2019, JAMES 11, doi:10.1029/2019MS001750): the energy the coarse model removes
at its grid scale (its biharmonic viscosity, and the potential energy its thickness diffusion
``rn_aeiv`` releases) is not lost but goes into a subgrid kinetic energy ``E`` per column, and
a negative Laplacian viscosity whose size grows with ``E`` gives it back to the resolved flow.

Per column (T point) of the block, ``E`` [m3 s-2] is the subgrid energy per unit mass and area
(``rho0 E dx dy`` is in joules), stepped by forward Euler once per exchange of length ``dt``::

    dE/dt = eps_visc + eps_gm - W - E / tau

* ``eps_visc = sum_k h_k B (|lap u_k|^2 + |lap v_k|^2)``: what the model's biharmonic viscosity
  ``B`` (``rn_bhm``) removes from the resolved flow (its local rate, exact in the domain sum
  for a doubly periodic field);
* ``eps_gm = kappa sum_k grad P_k . grad h_k`` (>= 0): the potential energy released by the
  thickness diffusion ``dh_k/dt = div(kappa grad h_k)`` with the toy's layer pressures
  ``P_k = sum_j g'_max(j,k) h_j`` (``docs/toy_model.md``);
* ``W``: the power the backscatter gives the resolved flow, computed from the very tendency the
  closure returns, so the energy that leaves ``E`` is the energy the flow receives (summed over
  the block, to round-off, for a flow away from its edges);
* ``E / tau``: the subgrid energy's own decay (what is not returned).

The backscatter is the anti-diffusion ``s = -(1/h) div(h nu grad u)`` with
``nu = min(c_back dx sqrt(2 E / H), nu_cap 4 B / dx^2)`` (``H`` the column's thickness), i.e. a
negative Laplacian viscosity ``-nu``; its power on layer ``k`` is ``sum h nu |grad u|^2 >= 0``:
energy returns when ``E > 0``, nothing happens when ``E = 0``. The cap keeps the model's
biharmonic viscosity stronger than the anti-diffusion at the grid scale (the 2-dx wave, whose
Laplacian eigenvalue is ``4 / dx^2``), so that the energy returns to the larger scales, as
Jansen et al. pair their negative viscosity with a biharmonic one: without it the first coupled
try (``c_back = 0.5``; ``nu`` estimated offline from the spun-up flow: up to 15,000 m2 s-1 in
the jet) grew a grid-scale instability and was stopped by the bridge on an Inf after 19 days.

The closure keeps ``E`` between calls (``stateful``): one field per server block, the block's
halo taking the edge values of ``E`` (with one server rank the block is the basin). A restarted
model run cannot give ``E`` back, so the servers refuse to continue one unless the model starts
the coupling cold (the toy: ``&nammlb ln_mlb_rst = .false.``); ``E`` then starts again from
``e_init``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bridge.closures.base import ClosureSpec, FieldSpec, check_inputs

#: Halo the stencils consume on each side.
HALO = 2


def _d(a: np.ndarray, axis: int) -> np.ndarray:
    """Forward difference along ``axis`` (the last point 0): ``a[i+1] - a[i]`` at i."""
    out = np.zeros_like(a)
    sl_hi = [slice(None)] * a.ndim
    sl_lo = [slice(None)] * a.ndim
    sl_hi[axis], sl_lo[axis] = slice(1, None), slice(None, -1)
    out[tuple(sl_lo)] = a[tuple(sl_hi)] - a[tuple(sl_lo)]
    return out


def _shift(a: np.ndarray, axis: int, by: int) -> np.ndarray:
    """``a[i - by]`` at i along ``axis`` (zeros shifted in)."""
    out = np.zeros_like(a)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if by > 0:
        src[axis], dst[axis] = slice(None, -by), slice(by, None)
    else:
        src[axis], dst[axis] = slice(-by, None), slice(None, by)
    out[tuple(dst)] = a[tuple(src)]
    return out


@dataclass(frozen=True)
class Stagger:
    """Masks of a block from its thicknesses (``h > 0`` is ocean), ``(ny, nx)``."""

    t: np.ndarray
    u: np.ndarray
    v: np.ndarray
    f: np.ndarray

    @classmethod
    def from_h(cls, h: np.ndarray) -> Stagger:
        t = (h[0] > 0).astype(np.float64)
        u = t * _shift(t, 1, -1)  # tmask(i) tmask(i+1)
        v = t * _shift(t, 0, -1)
        f = u * _shift(u, 0, -1)  # all four T neighbours
        return cls(t, u, v, f)


def away_from_land(mask: np.ndarray, cells: int) -> np.ndarray:
    """``mask`` (1 ocean, 0 land) eroded by ``cells`` cells: 1 only where every T point within
    ``cells`` steps along x and y (and within one diagonal step) is ocean. The array's own edges
    are not land (a block's halo goes on as the block's edge values)."""
    out = mask
    for _ in range(cells):
        p = np.pad(out, 1, mode="edge")
        out = out * p[:-2, 1:-1] * p[2:, 1:-1] * p[1:-1, :-2] * p[1:-1, 2:]
    return out


def pressures(h: np.ndarray, gprime: float) -> np.ndarray:
    """The toy's layer pressures per unit mass ``P_k = sum_j g'_max(j,k) h_j`` [m2 s-2],
    ``g'_m = gprime (N + 1 - m) / N`` (``docs/toy_model.md``), for ``(z, y, x)`` thicknesses."""
    nz = h.shape[0]
    p = np.zeros_like(h)
    acc = np.cumsum(h, axis=0)  # S_k = h_1 + ... + h_k
    p[nz - 1] = gprime / nz * acc[nz - 1]
    for k in range(nz - 2, -1, -1):
        p[k] = p[k + 1] + gprime / nz * acc[k]
    return p


def gm_release(
    h: np.ndarray, kappa: float, gprime: float, dx: float, dy: float, m: Stagger | None = None
) -> np.ndarray:
    """``kappa sum_k grad P_k . grad h_k`` at T points [m3 s-3]: the potential energy the
    thickness diffusion releases, from face values averaged to T; 0 at faces touching land.
    ``m``: the block's masks if already made from ``h``."""
    m = m or Stagger.from_h(h)
    p = pressures(h, gprime)
    fx = _d(p, -1) * _d(h, -1) / dx**2 * m.u  # U faces
    fy = _d(p, -2) * _d(h, -2) / dy**2 * m.v  # V faces
    at_t = 0.5 * (fx + _shift(fx, -1, 1)) + 0.5 * (fy + _shift(fy, -2, 1))
    return kappa * at_t.sum(axis=0) * m.t


def _laplacian(a: np.ndarray, mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    lap = (_d(a, -1) - _shift(_d(a, -1), -1, 1)) / dx**2 + (
        _d(a, -2) - _shift(_d(a, -2), -2, 1)
    ) / dy**2
    return lap * mask


def viscous_loss(
    u: np.ndarray,
    v: np.ndarray,
    h: np.ndarray,
    bhm: float,
    dx: float,
    dy: float,
    m: Stagger | None = None,
) -> np.ndarray:
    """``sum_k h_k B (|lap u_k|^2 + |lap v_k|^2)`` at T points [m3 s-3]: the rate at which a
    biharmonic viscosity ``B`` removes the resolved kinetic energy (U and V values averaged to
    T)."""
    m = m or Stagger.from_h(h)
    lu2 = _laplacian(u * m.u, m.u, dx, dy) ** 2
    lv2 = _laplacian(v * m.v, m.v, dx, dy) ** 2
    at_t = 0.5 * (lu2 + _shift(lu2, -1, 1)) + 0.5 * (lv2 + _shift(lv2, -2, 1))
    return bhm * (h * at_t).sum(axis=0) * m.t


def backscatter_tendency(
    u: np.ndarray,
    v: np.ndarray,
    h: np.ndarray,
    nu_t: np.ndarray,
    dx: float,
    dy: float,
    m: Stagger | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The anti-diffusion ``s = -(1/h) div(h nu grad u)`` of ``(z, y, x)`` velocities with the
    positive viscosity ``nu_t`` at T points ``(y, x)`` (``nu`` at F points: the mean of its 4 T
    neighbours), and its power ``W`` per column at T points.

    Returns
    -------
    tuple
        ``su`` (U points), ``sv`` (V points) [m s-2] and ``W`` [m3 s-3], with
        ``sum(h_u u su + h_v v sv) = sum(W)`` over the block for a flow away from its edges.
    """
    m = m or Stagger.from_h(h)
    nu_f = 0.25 * (nu_t + _shift(nu_t, -1, -1) + _shift(nu_t, -2, -1)) + 0.25 * _shift(
        _shift(nu_t, -1, -1), -2, -1
    )
    h_f = 0.25 * (h + _shift(h, -1, -1) + _shift(h, -2, -1) + _shift(_shift(h, -1, -1), -2, -1))
    h_u = 0.5 * (h + _shift(h, -1, -1))
    h_v = 0.5 * (h + _shift(h, -2, -1))
    um, vm = u * m.u, v * m.v
    # fluxes: d/dx of u at T (between U faces i-1, i), d/dy of u at F; likewise for v
    gxu = _shift(_d(um, -1), -1, 1) / dx * m.t  # at T(i): u(i) - u(i-1)
    gyu = _d(um, -2) / dy * m.f  # at F(j): u(j+1) - u(j)
    gxv = _d(vm, -1) / dx * m.f  # at F(i): v(i+1) - v(i)
    gyv = _shift(_d(vm, -2), -2, 1) / dy * m.t  # at T(j): v(j) - v(j-1)
    flux_xu = h * nu_t * gxu  # T
    flux_yu = h_f * nu_f * gyu  # F
    flux_xv = h_f * nu_f * gxv  # F
    flux_yv = h * nu_t * gyv  # T
    div_u = (_shift(flux_xu, -1, -1) - flux_xu) / dx + (flux_yu - _shift(flux_yu, -2, 1)) / dy
    div_v = (flux_xv - _shift(flux_xv, -1, 1)) / dx + (_shift(flux_yv, -2, -1) - flux_yv) / dy
    su = np.zeros_like(u)
    sv = np.zeros_like(v)
    np.divide(-div_u, h_u, out=su, where=h_u > 0)
    np.divide(-div_v, h_v, out=sv, where=h_v > 0)
    su, sv = su * m.u, sv * m.v
    # power: h nu |grad u|^2, T terms in place, F terms shared by their 4 T neighbours
    w_t = (h * nu_t * (gxu**2 + gyv**2)).sum(axis=0)
    w_f = (h_f * nu_f * (gyu**2 + gxv**2)).sum(axis=0)
    w_f_at_t = 0.25 * (
        w_f + _shift(w_f, -1, 1) + _shift(w_f, -2, 1) + _shift(_shift(w_f, -1, 1), -2, 1)
    )
    return su, sv, w_t + w_f_at_t


def _smooth0(f: np.ndarray, passes: int, mask: np.ndarray) -> np.ndarray:
    """``G^passes f`` on wet points (each pass ``mask * G(mask * f)``, ``G`` the 3 x 3 binomial
    filter of :func:`mlbridge_models.zanna_bolton.binomial_pass`), the outer ring the stencil
    cannot reach set to 0 at each pass (not NaN)."""
    for _ in range(passes):
        a = f * mask
        row = 0.25 * (a[..., :, :-2] + a[..., :, 2:]) + 0.5 * a[..., :, 1:-1]
        out = np.zeros_like(f)
        out[..., 1:-1, 1:-1] = 0.25 * (row[..., :-2, :] + row[..., 2:, :]) + 0.5 * row[..., 1:-1, :]
        f = out * mask
    return f


def smoothed_backscatter(
    u: np.ndarray,
    v: np.ndarray,
    h: np.ndarray,
    nu_t: np.ndarray,
    dx: float,
    dy: float,
    passes: int,
    m: Stagger | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``G^n`` of :func:`backscatter_tendency` of ``G^n u``, and its power ``W`` per column at
    T points [m3 s-3]: ``h_u u su`` and ``h_v v sv`` summed over the layers and averaged from the
    faces to T, so that ``sum(W)`` over the block is what the flow receives. ``W`` can be
    negative at a point (the smoothed tendency need not oppose the local flow); its block sum is
    ``sum h nu |grad G^n u|^2 >= 0`` for a flow away from land and the block's edges (``G`` is
    symmetric). The outer ``2 + 2 n`` rings of the block are not valid."""
    m = m or Stagger.from_h(h)
    su, sv, _ = backscatter_tendency(
        _smooth0(u, passes, m.u), _smooth0(v, passes, m.v), h, nu_t, dx, dy, m
    )
    su, sv = _smooth0(su, passes, m.u), _smooth0(sv, passes, m.v)
    h_u = 0.5 * (h + _shift(h, -1, -1))
    h_v = 0.5 * (h + _shift(h, -2, -1))
    pu = (h_u * u * su).sum(axis=0)
    pv = (h_v * v * sv).sum(axis=0)
    power = 0.5 * (pu + _shift(pu, -1, 1)) + 0.5 * (pv + _shift(pv, -2, 1))
    return su, sv, power * m.t


@dataclass(frozen=True)
class BudgetTerms:
    """One exchange of the subgrid energy budget, ``(y, x)`` at T points [m3 s-3] (``e`` [m3
    s-2])."""

    e_before: np.ndarray
    e_after: np.ndarray
    viscous: np.ndarray
    gm: np.ndarray
    backscatter: np.ndarray
    decay: np.ndarray


@dataclass
class EnergyBudgetBackscatter:
    """The closure: ``u, v, h`` (halo 2) -> ``su, sv`` on the interior; keeps ``E`` per block.

    Parameters
    ----------
    dx, dy
        Grid spacing [m].
    dt
        Time between two calls [s]: the exchange's ``every`` times the model's ``rn_Dt``.
    c_back
        Amplitude of the negative viscosity ``nu = c_back dx sqrt(2 E / H)`` (dimensionless).
    bhm
        The model's biharmonic viscosity [m4 s-1] (``rn_bhm``): its loss feeds ``E``.
    kappa_gm
        The model's thickness diffusivity [m2 s-1] (``rn_aeiv``): its release feeds ``E``.
    gprime
        Reduced gravity top layer / abyss [m s-2] (``rn_gprime``).
    tau
        Decay time of ``E`` [s] (0: no decay).
    e_init
        ``E`` at the first call [m3 s-2].
    nu_cap
        ``nu`` is at most ``nu_cap`` times ``4 bhm / min(dx, dy)^2``, the biharmonic damping of
        the 2-dx wave expressed as a Laplacian viscosity (0: no backscatter).
    land_taper
        ``nu = 0`` within this many cells of land (:func:`away_from_land`): the cap's argument
        holds only where the model's biharmonic stencil (2 cells) lies in the ocean. With
        ``smooth_passes = n`` the taper reaches ``n`` cells further, so that the smoothed
        tendency stays as far from land as the unsmoothed one.
    smooth_passes
        ``n``: the backscatter acts on the smoothed flow and is smoothed again,
        ``s = G^n(-(1/h) div(h nu grad G^n u))`` with ``G`` the land-aware 3 x 3 binomial filter
        (:func:`mlbridge_models.zanna_bolton.smooth`), in the spirit of the smoothed backscatter
        of Juricke et al. (2020, JAMES 12, doi:10.1029/2019MS001855): the energy goes in at
        several grid cells instead of next to the grid scale (0: no smoothing). The power ``W``
        is then ``h u . s`` at each point (its block sum is exactly what the flow receives).
    name
        Closure name in its spec.
    """

    dx: float = 32.0e3
    dy: float = 32.0e3
    dt: float = 1440.0
    c_back: float = 0.5
    bhm: float = 5.0e11
    kappa_gm: float = 200.0
    gprime: float = 0.02
    tau: float = 30.0 * 86400.0
    e_init: float = 0.0
    nu_cap: float = 0.5
    land_taper: int = 2
    smooth_passes: int = 0
    name: str = "backscatter"
    spec: ClosureSpec = field(init=False)
    energy: np.ndarray | None = field(default=None, init=False)
    last: BudgetTerms | None = field(default=None, init=False)
    _mask_cache: tuple[bytes, Stagger, np.ndarray] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        for key in ("dx", "dy", "dt"):
            if not getattr(self, key) > 0:
                raise ValueError(f"backscatter: {key} must be > 0, got {getattr(self, key)}")
        keys = ("c_back", "bhm", "kappa_gm", "tau", "e_init", "nu_cap", "land_taper")
        for key in (*keys, "smooth_passes"):
            if getattr(self, key) < 0:
                raise ValueError(f"backscatter: {key} must be >= 0, got {getattr(self, key)}")
        self.spec = ClosureSpec(
            self.name,
            self.halo,
            (
                FieldSpec("u", "U", "m s-1"),
                FieldSpec("v", "V", "m s-1"),
                FieldSpec("h", "T", "m"),
            ),
            (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2")),
            dtype="float64",
            stateful=True,
        )

    def _masks(self, h: np.ndarray) -> tuple[Stagger, np.ndarray]:
        """The block's masks and its land taper of ``nu``, made again only when the wet points
        change (the smoothing spreads the tendency by ``smooth_passes`` cells: the taper reaches
        that much further)."""
        key = (h[0] > 0).tobytes() + bytes(str(h.shape[-2:]), "ascii")
        if self._mask_cache is None or self._mask_cache[0] != key:
            m = Stagger.from_h(h)
            reach = int(self.land_taper) + int(self.smooth_passes)
            self._mask_cache = (key, m, away_from_land(m.t, reach))
        return self._mask_cache[1], self._mask_cache[2]

    @property
    def halo(self) -> int:
        """Halo the closure consumes: the stencil's 2, plus one per filter pass on each side."""
        return HALO + 2 * int(self.smooth_passes)

    @property
    def nu_max(self) -> float:
        """The largest ``nu`` [m2 s-1]: ``nu_cap * 4 bhm / min(dx, dy)^2``."""
        return self.nu_cap * 4.0 * self.bhm / min(self.dx, self.dy) ** 2

    def step(
        self, u: np.ndarray, v: np.ndarray, h: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, BudgetTerms]:
        """One exchange on a block with its halo: the tendencies from the current ``E``, then
        ``E`` stepped by the budget. Returns ``su, sv`` on the whole block (halo included)."""
        halo = self.halo
        inner = (slice(halo, -halo), slice(halo, -halo))
        shape = h.shape[-2:]
        if self.energy is None:
            self.energy = np.full((shape[0] - 2 * halo, shape[1] - 2 * halo), self.e_init)
        e = np.pad(self.energy, halo, mode="edge")  # the halo takes the block's edge values
        m, taper = self._masks(h)
        mask_t = m.t
        depth = h.sum(axis=0)
        e_per_mass = np.zeros_like(depth)
        np.divide(e, depth, out=e_per_mass, where=depth > 0)
        nu = self.c_back * self.dx * np.sqrt(2.0 * np.maximum(e_per_mass, 0.0))
        nu = np.minimum(nu, self.nu_max) * taper
        if self.smooth_passes:
            su, sv, power = smoothed_backscatter(
                u, v, h, nu, self.dx, self.dy, int(self.smooth_passes), m
            )
        else:
            su, sv, power = backscatter_tendency(u, v, h, nu, self.dx, self.dy, m)
        visc = viscous_loss(u, v, h, self.bhm, self.dx, self.dy, m)
        gm = gm_release(h, self.kappa_gm, self.gprime, self.dx, self.dy, m)
        decay = e / self.tau if self.tau > 0 else np.zeros_like(e)
        before = self.energy
        after = np.maximum(before + self.dt * (visc + gm - power - decay)[inner], 0.0)
        self.energy = after * mask_t[inner]
        terms = BudgetTerms(before, self.energy, visc[inner], gm[inner], power[inner], decay[inner])
        self.last = terms
        return su, sv, terms

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tendencies on the interior of a halo-2 block, in the inputs' dtype.

        Raises
        ------
        bridge.closures.base.ClosureInputError
            If the inputs do not match the spec.
        """
        check_inputs(self.spec, inputs)
        u, v, h = (inputs[n].astype(np.float64) for n in ("u", "v", "h"))
        su, sv, _ = self.step(u, v, h)
        inner = (slice(None), slice(self.halo, -self.halo), slice(self.halo, -self.halo))
        return {
            "su": np.ascontiguousarray(su[inner], dtype=inputs["u"].dtype),
            "sv": np.ascontiguousarray(sv[inner], dtype=inputs["v"].dtype),
        }


def build_backscatter(
    dx: float = 32.0e3,
    dy: float = 32.0e3,
    dt: float = 1440.0,
    c_back: float = 0.5,
    bhm: float = 5.0e11,
    kappa_gm: float = 200.0,
    gprime: float = 0.02,
    tau: float = 30.0 * 86400.0,
    e_init: float = 0.0,
    nu_cap: float = 0.5,
    land_taper: int = 2,
    smooth_passes: int = 0,
    name: str = "backscatter",
) -> EnergyBudgetBackscatter:
    """Entry point of the ``python`` manifest format: the closure with its ``[arch]`` values."""
    return EnergyBudgetBackscatter(
        dx=dx,
        dy=dy,
        dt=dt,
        c_back=c_back,
        bhm=bhm,
        kappa_gm=kappa_gm,
        gprime=gprime,
        tau=tau,
        e_init=e_init,
        nu_cap=nu_cap,
        land_taper=land_taper,
        smooth_passes=smooth_passes,
        name=name,
    )
