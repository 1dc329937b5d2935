"""Metrics that judge a coarse run (with or without a closure) against the coarse-grained truth.

Pure NumPy on the toy's C-grid arrays ``(time, z, y, x)`` with the 1-point land rim (NEMO indices:
``u[..., j, i]`` on the east face of T(i, j), ``v[..., j, i]`` on its north face). Definitions,
and why these choices, are in ``docs/closures.md``:

* :func:`layer_ke`: ``rho0/2 * integral of h (u^2 + v^2)`` per record and layer [J], the same sum
  as the model's ``ke`` output; :func:`time_mean_ke` averages it in time.
* :func:`ke_spectrum`: isotropic KE spectrum on the ocean interior, velocities at T points,
  spatial mean removed and a 2D Hann window (renormalised to keep the variance) by default; with
  ``window=None, detrend=False`` it satisfies Parseval exactly.
* :func:`ke_values`, :func:`u_values`, :func:`v_values`, :func:`enstrophy_values`
  (:func:`distribution_samples` per layer) and :func:`histogram`: distributions.
* Distances as Ross et al. (2023, JAMES, doi:10.1029/2022MS003258) define them:
  :func:`spectrum_distance` (RMSE of the LINEAR spectra per layer below 2/3 of both grids'
  Nyquist wavenumbers) and :func:`layer_wasserstein1` (Wasserstein-1 per layer of ``u``, ``v``,
  KE and enstrophy); :func:`hellinger` between histograms as a second opinion.
* :func:`similarity_score`: ``1 - d(model, truth) / d(baseline, truth)``:
  1 is the truth, 0 the baseline, negative worse than the baseline.
* :func:`interface_rmse` of the time-mean flow and :func:`rmse` of any field.
* :func:`similarity_scores`: every score per layer and the time-mean KE error of one run at once.

Confidence intervals and the truth's noise floor: :mod:`mlbridge_models.evaluation.bootstrap`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Reference density [kg m-3] of the toy (``rn_rho0``).
RHO0 = 1025.0


def _ocean(a: np.ndarray) -> np.ndarray:
    """The ocean interior ``[..., 1:-1, 1:-1]`` of a field with the 1-point rim."""
    return a[..., 1:-1, 1:-1]


def u_at_t(u: np.ndarray) -> np.ndarray:
    """``u`` averaged to T points: ``(u[i-1] + u[i]) / 2`` (0 on the west rim column)."""
    out = np.zeros_like(u, dtype=np.result_type(u, np.float64))
    out[..., 1:] = 0.5 * (u[..., :-1] + u[..., 1:])
    return out


def v_at_t(v: np.ndarray) -> np.ndarray:
    """``v`` averaged to T points: ``(v[j-1] + v[j]) / 2``."""
    out = np.zeros_like(v, dtype=np.result_type(v, np.float64))
    out[..., 1:, :] = 0.5 * (v[..., :-1, :] + v[..., 1:, :])
    return out


def ke_values(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """KE per unit mass at T points of the ocean interior, ``(u^2 + v^2)/2`` with the squares
    averaged from the faces (as the model's Bernoulli term) [m2 s-2]."""
    u2, v2 = u_at_t(u * u), v_at_t(v * v)
    return _ocean(0.5 * (u2 + v2))


def layer_ke(
    u: np.ndarray, v: np.ndarray, h: np.ndarray, dx: float, dy: float, rho0: float = RHO0
) -> np.ndarray:
    """``rho0/2 * sum of h (u^2 + v^2) dx dy`` over the ocean, per leading index [J].

    Parameters
    ----------
    u, v, h
        ``(..., ny, nx)`` fields (e.g. ``(time, z, y, x)``).
    dx, dy
        Grid spacing [m].
    rho0
        Reference density [kg m-3].

    Returns
    -------
    numpy.ndarray
        The leading shape of the inputs (e.g. ``(time, z)``).
    """
    return rho0 * dx * dy * np.sum(_ocean(h) * ke_values(u, v), axis=(-2, -1))


def time_mean_ke(
    u: np.ndarray, v: np.ndarray, h: np.ndarray, dx: float, dy: float, rho0: float = RHO0
) -> np.ndarray:
    """Time-mean layer kinetic energy ``(z,)`` [J] of ``(time, z, y, x)`` fields."""
    return layer_ke(u, v, h, dx, dy, rho0).mean(axis=0)


def relative_vorticity(u: np.ndarray, v: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``dv/dx - du/dy`` at the F points of the ocean interior (corners between ocean cells)
    [s-1], ``(..., ny-3, nx-3)``: the coastal F points are left out (their value depends on the
    lateral boundary condition, not on the flow)."""
    zeta = (v[..., :, 1:] - v[..., :, :-1])[..., :-1, :] / dx - (u[..., 1:, :] - u[..., :-1, :])[
        ..., :, :-1
    ] / dy
    return zeta[..., 1:-1, 1:-1]


def vorticity_values(u: np.ndarray, v: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Alias of :func:`relative_vorticity`, the sample of the vorticity distribution."""
    return relative_vorticity(u, v, dx, dy)


def enstrophy_values(u: np.ndarray, v: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``zeta^2`` at the F points of :func:`relative_vorticity` [s-2]: the enstrophy sample of
    Ross et al. (2023), who use ``(du/dy - dv/dx)^2`` (no factor 1/2)."""
    zeta = relative_vorticity(u, v, dx, dy)
    return zeta * zeta


def u_values(u: np.ndarray) -> np.ndarray:
    """``u`` at the U points between two ocean cells, ``(..., ny-2, nx-3)`` [m s-1]."""
    return u[..., 1:-1, 1:-2]


def v_values(v: np.ndarray) -> np.ndarray:
    """``v`` at the V points between two ocean cells, ``(..., ny-3, nx-2)`` [m s-1]."""
    return v[..., 1:-2, 1:-1]


#: The distributions compared (Ross et al. 2023, without their PV ``q``, which the layered toy
#: does not write): velocity components, KE per unit mass and enstrophy, per layer.
DISTRIBUTIONS: tuple[str, ...] = ("u", "v", "ke", "enstrophy")


def distribution_samples(
    u: np.ndarray, v: np.ndarray, dx: float, dy: float
) -> dict[str, np.ndarray]:
    """The samples of :data:`DISTRIBUTIONS` of ``(time, z, y, x)`` fields, each flattened to
    ``(z, n)`` (time and space pooled per layer)."""
    nz = u.shape[1]
    fields = {
        "u": u_values(u),
        "v": v_values(v),
        "ke": ke_values(u, v),
        "enstrophy": enstrophy_values(u, v, dx, dy),
    }
    return {n: np.moveaxis(a, 1, 0).reshape(nz, -1) for n, a in fields.items()}


def layer_wasserstein1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`wasserstein1` of each layer of two ``(z, n)`` samples, ``(z,)``."""
    return np.array([wasserstein1(a[k], b[k]) for k in range(a.shape[0])])


@dataclass(frozen=True)
class Spectrum:
    """An isotropic spectrum: ``k`` [rad m-1] bin centres, ``e`` density [m3 s-2], bin width
    ``dk`` and the grid's Nyquist wavenumber ``k_nyquist = pi / max(dx, dy)``."""

    k: np.ndarray
    e: np.ndarray
    dk: float
    k_nyquist: float


def ke_spectrum(
    u: np.ndarray,
    v: np.ndarray,
    dx: float,
    dy: float,
    window: str | None = "hann",
    detrend: bool = True,
) -> Spectrum:
    """Isotropic KE spectrum of the ocean interior, averaged over all leading indices but the last
    spatial two kept as given (e.g. ``(time, z, y, x)`` -> ``e`` of shape ``(z, nk)``).

    Velocities go to T points; each 2D field gets its spatial mean removed (``detrend``) and is
    multiplied by a 2D Hann window renormalised so that the window keeps the variance
    (``window="hann"``). ``E(k)`` sums ``(|u_hat|^2 + |v_hat|^2) / 2`` over the annulus
    ``|k| in [k - dk/2, k + dk/2)``, divided by ``dk``, with ``dk = 2 pi / min(Lx, Ly)``; all modes
    are binned (corners included), so ``sum(E) dk`` is the mean of ``(u^2 + v^2)/2`` (Parseval)
    when neither window nor detrending is applied.

    Parameters
    ----------
    u, v
        ``(..., ny, nx)`` with the rim; at least 2D.
    dx, dy
        Grid spacing [m].
    window
        ``"hann"`` or ``None``.
    detrend
        Remove the spatial mean of each field first.

    Returns
    -------
    Spectrum
        ``e`` has the leading shape of the inputs without the first axis when they are 4D
        (time-mean), otherwise the leading shape; last axis the wavenumber.

    Raises
    ------
    ValueError
        On an unknown window.
    """
    ut, vt = _ocean(u_at_t(u)), _ocean(v_at_t(v))
    ny, nx = ut.shape[-2:]
    if detrend:
        ut = ut - ut.mean(axis=(-2, -1), keepdims=True)
        vt = vt - vt.mean(axis=(-2, -1), keepdims=True)
    if window == "hann":
        w = np.outer(np.hanning(ny + 2)[1:-1], np.hanning(nx + 2)[1:-1])
        w /= np.sqrt(np.mean(w * w))
        ut, vt = ut * w, vt * w
    elif window is not None:
        raise ValueError(f"window must be 'hann' or None, got {window!r}")
    npts = nx * ny
    power = 0.5 * (np.abs(np.fft.fft2(ut)) ** 2 + np.abs(np.fft.fft2(vt)) ** 2) / npts**2
    kx = 2 * np.pi * np.fft.fftfreq(nx, dx)
    ky = 2 * np.pi * np.fft.fftfreq(ny, dy)
    kk = np.hypot(ky[:, None], kx[None, :])
    dk = 2 * np.pi / min(nx * dx, ny * dy)
    ibin = np.floor(kk / dk + 0.5).astype(int).ravel()
    nk = int(ibin.max()) + 1
    flat = power.reshape(*power.shape[:-2], npts)
    e = np.zeros((*power.shape[:-2], nk))
    for i in range(nk):
        e[..., i] = flat[..., ibin == i].sum(axis=-1) / dk
    if e.ndim >= 3:
        e = e.mean(axis=0)
    return Spectrum(np.arange(nk) * dk, e, dk, np.pi / max(dx, dy))


#: Fraction of the Nyquist wavenumber below which spectra are compared (Ross et al. 2023).
SPECTRUM_FRACTION = 2.0 / 3.0


def comparable_bins(model: Spectrum, truth: Spectrum, fraction: float = SPECTRUM_FRACTION) -> int:
    """Number of leading wavenumber bins two spectra share below ``fraction`` of the smaller
    Nyquist wavenumber of the two grids (Ross et al. 2023: 2/3 of both models' Nyquist).

    The spectra may come from grids of different spacing over the same basin (the fine truth and
    the coarse model): their bins are then the same (``dk = 2 pi / L``) and only their number
    differs.

    Raises
    ------
    ValueError
        If the bin widths differ (not the same basin) or no bin is left.
    """
    if not np.isclose(model.dk, truth.dk, rtol=1e-9):
        raise ValueError(
            f"spectra have different bin widths dk = {model.dk:.6g} and {truth.dk:.6g} rad m-1: "
            "compute both over the same basin"
        )
    kmax = fraction * min(model.k_nyquist, truth.k_nyquist)
    n = min(model.k.size, truth.k.size)
    sel = np.flatnonzero(model.k[:n] < kmax)
    if sel.size < 2:
        raise ValueError(f"no wavenumber below {kmax:.3g} rad m-1 besides k = 0")
    return int(sel[-1]) + 1


def spectrum_distance(
    model: Spectrum, truth: Spectrum, fraction: float = SPECTRUM_FRACTION
) -> np.ndarray:
    """Ross et al. (2023) spectral distance, per layer: the RMSE of the LINEAR spectra ``E(k)``
    over the wavenumbers ``0 < k < fraction * min(Nyquist of both grids)``.

    Parameters
    ----------
    model, truth
        Spectra with ``e`` of shape ``(..., nk)`` (e.g. ``(z, nk)``), same basin.
    fraction
        Of the smaller Nyquist wavenumber (2/3 as in the paper).

    Returns
    -------
    numpy.ndarray
        ``e``'s leading shape (e.g. ``(z,)``) [m3 s-2].
    """
    n = comparable_bins(model, truth, fraction)
    d = model.e[..., 1:n] - truth.e[..., 1:n]
    return np.sqrt(np.mean(d * d, axis=-1))


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Probability masses of ``values`` in the bins ``edges`` (values outside the range are put
    in the end bins, so the masses sum to 1)."""
    clipped = np.clip(np.ravel(values), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts / max(counts.sum(), 1)


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance ``sqrt(1 - sum sqrt(p q))`` between two probability mass vectors."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between two samples: ``integral |F_a - F_b| dx``."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    grid.sort()
    fa = np.searchsorted(a, grid[:-1], side="right") / a.size
    fb = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def similarity_score(d_model: float, d_baseline: float) -> float:
    """Ross et al. (2023): ``1 - d(model, truth) / d(baseline, truth)``.

    Raises
    ------
    ValueError
        If the baseline is already at distance 0 from the truth (the score is undefined).
    """
    if d_baseline <= 0.0:
        raise ValueError("the baseline's distance to the truth is 0: the score is undefined")
    return 1.0 - d_model / d_baseline


def rmse(model: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square difference, over the points where ``mask`` is nonzero (all if ``None``).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if model.shape != truth.shape:
        raise ValueError(f"shapes differ: model {model.shape}, truth {truth.shape}")
    d = np.asarray(model, float) - np.asarray(truth, float)
    if mask is None:
        return float(np.sqrt(np.mean(d * d)))
    m = np.broadcast_to(mask != 0, d.shape)
    return float(np.sqrt(np.mean(d[m] ** 2)))


def interface_depths(h: np.ndarray) -> np.ndarray:
    """Depths of the layer bottoms ``sum_{j<=k} h_j`` [m] from ``(..., z, y, x)`` thicknesses."""
    return np.cumsum(h, axis=-3)


def interface_rmse(h_model: np.ndarray, h_truth: np.ndarray) -> np.ndarray:
    """RMSE [m] of each interface depth of the time-mean flow over the ocean interior, ``(z,)``.

    ``h_model``, ``h_truth``: ``(time, z, y, x)`` on the same grid (the truth coarse-grained);
    the time means are taken first, then the interface depths compared.
    """
    zm = _ocean(interface_depths(h_model.mean(axis=0)))
    zt = _ocean(interface_depths(h_truth.mean(axis=0)))
    return np.sqrt(np.mean((zm - zt) ** 2, axis=(-2, -1)))


@dataclass(frozen=True)
class Flow:
    """One run on the coarse grid: ``u, v, h`` as ``(time, z, y, x)`` [m s-1, m s-1, m]."""

    u: np.ndarray
    v: np.ndarray
    h: np.ndarray


def similarity_scores(
    model: Flow, baseline: Flow, truth: Flow, dx: float, dy: float
) -> dict[str, np.ndarray | float]:
    """The Ross et al. (2023) similarity scores of ``model`` against ``truth`` relative to
    ``baseline``, per layer, all three on the same grid.

    Returns
    -------
    dict
        ``ke_spectrum`` (:func:`spectrum_distance`) and ``u``, ``v``, ``ke``, ``enstrophy``
        (:func:`layer_wasserstein1`) as ``(z,)`` scores, and ``time_mean_ke_error``: the relative
        error of the time-mean KE summed over layers, ``|KE_model - KE_truth| / KE_truth``
        (not a score).
    """
    flows = {"m": model, "b": baseline, "t": truth}
    spec = {n: ke_spectrum(f.u, f.v, dx, dy) for n, f in flows.items()}
    samples = {n: distribution_samples(f.u, f.v, dx, dy) for n, f in flows.items()}
    out: dict[str, np.ndarray | float] = {
        "ke_spectrum": 1.0
        - spectrum_distance(spec["m"], spec["t"]) / spectrum_distance(spec["b"], spec["t"])
    }
    for name in DISTRIBUTIONS:
        d_m = layer_wasserstein1(samples["m"][name], samples["t"][name])
        d_b = layer_wasserstein1(samples["b"][name], samples["t"][name])
        out[name] = 1.0 - d_m / d_b
    ke_truth = time_mean_ke(truth.u, truth.v, truth.h, dx, dy).sum()
    ke_model = time_mean_ke(model.u, model.v, model.h, dx, dy).sum()
    out["time_mean_ke_error"] = float(abs(ke_model - ke_truth) / ke_truth)
    return out
