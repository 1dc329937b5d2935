"""Metrics of mlbridge_models.evaluation.metrics on synthetic fields whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from mlbridge_models.evaluation import metrics as ev

DX = 32.0e3


def _rim(a: np.ndarray) -> np.ndarray:
    """Zero land rim around ``(..., ny, nx)`` ocean values."""
    out = np.zeros((*a.shape[:-2], a.shape[-2] + 2, a.shape[-1] + 2))
    out[..., 1:-1, 1:-1] = a
    return out


def _random_flow(seed: int, shape: tuple[int, ...] = (3, 2, 34, 34)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=shape) * 0.1, rng.normal(size=shape) * 0.1
    h = 500.0 + 10.0 * rng.normal(size=shape)
    return u, v, h


def test_layer_ke_of_uniform_flow() -> None:
    n = 10
    u = _rim(np.full((1, 2, n, n), 0.3))
    u[..., :, 0] = 0.3  # west face of the first ocean column: a uniform flow through the basin
    v = _rim(np.full((1, 2, n, n), 0.4))
    v[..., 0, :] = 0.4
    h = _rim(np.full((1, 2, n, n), 250.0))
    ke = ev.time_mean_ke(u, v, h, DX, DX)
    expected = 1025.0 / 2 * 250.0 * (0.3**2 + 0.4**2) * (n * DX) ** 2
    np.testing.assert_allclose(ke, [expected, expected], rtol=1e-12)


def test_spectrum_parseval() -> None:
    u, v, _ = _random_flow(0, (2, 40, 30))
    spec = ev.ke_spectrum(u, v, DX, DX, window=None, detrend=False)
    ut, vt = ev.u_at_t(u)[..., 1:-1, 1:-1], ev.v_at_t(v)[..., 1:-1, 1:-1]
    energy = 0.5 * np.mean(ut**2 + vt**2, axis=(-2, -1))
    np.testing.assert_allclose(spec.e.sum(axis=-1) * spec.dk, energy, rtol=1e-12)
    assert spec.k[0] == 0.0 and spec.k_nyquist == pytest.approx(np.pi / DX)


def test_spectrum_peaks_at_the_wave() -> None:
    n = 64
    x = (np.arange(n) + 0.5) * DX
    k0 = 2 * np.pi * 8 / (n * DX)
    u = _rim(np.broadcast_to(np.cos(k0 * x)[None, :] * 0.0 + np.cos(k0 * x)[:, None], (n, n)))
    spec = ev.ke_spectrum(u, np.zeros_like(u), DX, DX)
    assert abs(spec.k[np.argmax(spec.e)] - k0) <= spec.dk


def test_scores_identical_and_baseline() -> None:
    truth, base, model = _random_flow(1), _random_flow(2), _random_flow(3)
    st, sb, sm = (ev.ke_spectrum(f[0], f[1], DX, DX) for f in (truth, base, model))
    d_base = ev.log_spectrum_rmse(sb, st)
    assert ev.log_spectrum_rmse(st, st) == 0.0
    assert ev.similarity_score(ev.log_spectrum_rmse(st, st), d_base) == 1.0
    assert ev.similarity_score(d_base, d_base) == 0.0
    assert np.isfinite(ev.similarity_score(ev.log_spectrum_rmse(sm, st), d_base))
    with pytest.raises(ValueError, match="undefined"):
        ev.similarity_score(0.1, 0.0)

    kt, kb = ev.ke_values(truth[0], truth[1]), ev.ke_values(base[0], base[1])
    edges = np.linspace(0.0, np.quantile(kt, 0.999), 41)
    pt, pb = ev.histogram(kt, edges), ev.histogram(kb, edges)
    assert pt.sum() == pytest.approx(1.0)
    assert ev.hellinger(pt, pt) == 0.0 and 0.0 < ev.hellinger(pt, pb) <= 1.0
    assert ev.hellinger([1, 0], [0, 1]) == pytest.approx(1.0)
    assert ev.wasserstein1(kt, kt) == 0.0
    assert ev.similarity_score(ev.wasserstein1(kb, kt), ev.wasserstein1(kb, kt)) == 0.0


def test_wasserstein_of_a_shift() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=5000)
    assert ev.wasserstein1(a, a + 0.25) == pytest.approx(0.25, rel=1e-9)
    assert ev.wasserstein1([0.0, 1.0], [0.0, 3.0]) == pytest.approx(1.0)


def test_vorticity_of_solid_body_rotation() -> None:
    n, omega = 12, 1e-5
    j, i = np.mgrid[0 : n + 2, 0 : n + 2].astype(float)
    u = -omega * (j - 0.5) * DX  # u at (x_u, y_t)
    v = omega * (i - 0.5) * DX  # v at (x_t, y_v)
    zeta = ev.relative_vorticity(u, v, DX, DX)
    assert zeta.shape == (n - 1, n - 1)
    np.testing.assert_allclose(zeta, 2 * omega, rtol=1e-12)


def test_rmse_and_interfaces() -> None:
    _, _, h = _random_flow(5)
    assert ev.rmse(h, h) == 0.0
    np.testing.assert_allclose(ev.interface_rmse(h, h), 0.0)
    shifted = h.copy()
    shifted[:, 0] += 3.0  # top layer 3 m thicker everywhere: both interfaces 3 m deeper
    np.testing.assert_allclose(ev.interface_rmse(shifted, h), [3.0, 3.0], rtol=1e-12)
    mask = np.zeros(h.shape[-2:])
    mask[5, 5] = 1.0
    d = h.copy()
    d[..., 5, 5] += 2.0
    assert ev.rmse(d, h, mask) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shapes differ"):
        ev.rmse(h, h[0])


def test_similarity_scores_of_truth_and_baseline() -> None:
    truth, base = ev.Flow(*_random_flow(6)), ev.Flow(*_random_flow(7))
    base = ev.Flow(base.u * 0.5, base.v * 0.5, base.h)  # a baseline with too little energy
    perfect = ev.similarity_scores(truth, base, truth, DX, DX)
    for name in ("ke_spectrum", "ke_distribution", "vorticity_distribution"):
        assert perfect[name] == 1.0, name
    assert perfect["time_mean_ke_error"] == 0.0
    same = ev.similarity_scores(base, base, truth, DX, DX)
    for name in ("ke_spectrum", "ke_distribution", "vorticity_distribution"):
        assert same[name] == 0.0, name
    assert same["time_mean_ke_error"] == pytest.approx(0.75, rel=0.05)
