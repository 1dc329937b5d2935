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


def _spectrum(e: np.ndarray, n_ocean: int, dx: float) -> ev.Spectrum:
    """A synthetic spectrum of a basin of ``n_ocean`` cells of ``dx`` (bins as ke_spectrum's)."""
    dk = 2 * np.pi / (n_ocean * dx)
    return ev.Spectrum(np.arange(e.shape[-1]) * dk, e, dk, np.pi / dx)


def test_spectrum_distance_is_the_linear_rmse_below_two_thirds_of_nyquist() -> None:
    n = 62
    nk = 45  # bins of a 62 x 62 grid (up to the corner)
    rng = np.random.default_rng(11)
    truth = rng.uniform(1.0, 2.0, size=(2, nk))
    model = truth.copy()
    model[0] += 0.3  # layer 1 off by 0.3 everywhere: RMSE 0.3
    model[1, 1:5] += 0.4  # layer 2 off by 0.4 in 4 of the compared bins
    kcut = 2.0 / 3.0 * np.pi / DX
    nbins = int(np.sum((np.arange(nk) * 2 * np.pi / (n * DX) < kcut)[1:]))  # k = 0 left out
    assert nbins == 20
    beyond = np.arange(nk) * 2 * np.pi / (n * DX) >= kcut
    model[:, beyond] += 1e3  # beyond 2/3 of Nyquist: not counted
    d = ev.spectrum_distance(_spectrum(model, n, DX), _spectrum(truth, n, DX))
    np.testing.assert_allclose(d, [0.3, np.sqrt(4 * 0.4**2 / nbins)], rtol=1e-12)
    model[:, 0] += 5.0  # k = 0 (the mean) is not counted either
    d0 = ev.spectrum_distance(_spectrum(model, n, DX), _spectrum(truth, n, DX))
    np.testing.assert_allclose(d0, d, rtol=1e-12)


def test_spectrum_distance_between_grids_uses_the_coarser_nyquist() -> None:
    """The fine truth (4 x finer over the same basin) against a coarse run: same bins, compared
    below 2/3 of the coarse Nyquist only."""
    fine = _spectrum(np.ones((2, 180)), 248, DX / 4)
    coarse = _spectrum(np.ones((2, 45)) * 1.5, 62, DX)
    assert ev.comparable_bins(coarse, fine) == ev.comparable_bins(coarse, coarse) == 21
    np.testing.assert_allclose(ev.spectrum_distance(coarse, fine), [0.5, 0.5], rtol=1e-12)
    other = _spectrum(np.ones((2, 45)), 60, DX)  # another basin: other bins
    with pytest.raises(ValueError, match="bin widths"):
        ev.spectrum_distance(other, coarse)


def test_scores_identical_and_baseline() -> None:
    truth, base = _random_flow(1), _random_flow(2)
    st, sb = (ev.ke_spectrum(f[0], f[1], DX, DX) for f in (truth, base))
    d_base = ev.spectrum_distance(sb, st)
    assert np.all(ev.spectrum_distance(st, st) == 0.0) and np.all(d_base > 0)
    assert ev.similarity_score(0.0, float(d_base[0])) == 1.0
    assert ev.similarity_score(float(d_base[0]), float(d_base[0])) == 0.0
    with pytest.raises(ValueError, match="undefined"):
        ev.similarity_score(0.1, 0.0)

    kt, kb = ev.ke_values(truth[0], truth[1]), ev.ke_values(base[0], base[1])
    edges = np.linspace(0.0, np.quantile(kt, 0.999), 41)
    pt, pb = ev.histogram(kt, edges), ev.histogram(kb, edges)
    assert pt.sum() == pytest.approx(1.0)
    assert ev.hellinger(pt, pt) == 0.0 and 0.0 < ev.hellinger(pt, pb) <= 1.0
    assert ev.hellinger([1, 0], [0, 1]) == pytest.approx(1.0)
    assert ev.wasserstein1(kt, kt) == 0.0


def test_layer_wasserstein_of_shifted_layers() -> None:
    rng = np.random.default_rng(12)
    a = rng.normal(size=(2, 4000))
    b = a + np.array([[0.1], [0.7]])
    np.testing.assert_allclose(ev.layer_wasserstein1(b, a), [0.1, 0.7], rtol=1e-9)


def test_enstrophy_of_solid_body_rotation() -> None:
    n, omega = 12, 1e-5
    j, i = np.mgrid[0 : n + 2, 0 : n + 2].astype(float)
    u, v = -omega * (j - 0.5) * DX, omega * (i - 0.5) * DX
    np.testing.assert_allclose(ev.enstrophy_values(u, v, DX, DX), (2 * omega) ** 2, rtol=1e-12)


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


SCORES = ("ke_spectrum", *ev.DISTRIBUTIONS)


def test_similarity_scores_truth_one_baseline_zero_closer_higher() -> None:
    """Per layer: the truth scores 1, the baseline 0, and a model closer to the truth (80 % of
    its velocities, the baseline 50 %) scores in between, for every score."""
    truth = ev.Flow(*_random_flow(6))
    base = ev.Flow(truth.u * 0.5, truth.v * 0.5, truth.h)
    closer = ev.Flow(truth.u * 0.8, truth.v * 0.8, truth.h)
    perfect = ev.similarity_scores(truth, base, truth, DX, DX)
    same = ev.similarity_scores(base, base, truth, DX, DX)
    better = ev.similarity_scores(closer, base, truth, DX, DX)
    for name in SCORES:
        np.testing.assert_array_equal(perfect[name], [1.0, 1.0], err_msg=name)
        np.testing.assert_array_equal(same[name], [0.0, 0.0], err_msg=name)
        assert np.all((better[name] > 0.0) & (better[name] < 1.0)), name
    # the spectrum scales as the square of the velocity: (0.64 - 1) / (0.25 - 1) from 1
    np.testing.assert_allclose(better["ke_spectrum"], 1 - 0.36 / 0.75, rtol=1e-9)
    # u, v: Wasserstein-1 of a scaled sample scales with |1 - factor|
    np.testing.assert_allclose(better["u"], 1 - 0.2 / 0.5, rtol=1e-9)
    assert perfect["time_mean_ke_error"] == 0.0
    assert same["time_mean_ke_error"] == pytest.approx(0.75, rel=1e-9)


def test_bootstrap_interval_noise_floor_and_binned_distance() -> None:
    from mlbridge_models.evaluation import bootstrap as bs

    def member(seed: int, factor: float = 1.0) -> ev.Flow:
        u, v, h = _random_flow(seed, (16, 2, 30, 30))
        return ev.Flow(u * factor, v * factor, h)

    truth = [(0, member(20))]
    base = [(1, member(21, 0.5)), (2, member(22, 0.5))]
    model = [(1, member(23, 0.8)), (2, member(24, 0.8))]
    samples = [ev.distribution_samples(f.u, f.v, DX, DX) for _, f in truth + base + model]
    edges = bs.common_edges(samples)
    blocks = {
        name: bs.summarise(parts, DX, DX, 4, edges)
        for name, parts in (("t", truth), ("b", base), ("m", model))
    }
    assert blocks["t"].records.tolist() == [4, 4, 4, 4] and blocks["m"].records.size == 8
    # the binned distance is the exact one to within 2 %
    pooled_base = np.concatenate([samples[1]["u"], samples[2]["u"]], axis=1)
    exact = ev.layer_wasserstein1(pooled_base, samples[0]["u"])
    binned = bs.distances(blocks["b"], blocks["t"], edges)["u"]
    np.testing.assert_allclose(binned, exact, rtol=0.02)
    reps = bs.bootstrap_scores(blocks["m"], blocks["b"], blocks["t"], edges, n_boot=60)
    for name in SCORES:
        ci = bs.confidence_interval(reps[name])
        assert ci.shape == (2, 2) and np.all(ci[:, 0] <= ci[:, 1]), name
        assert np.all(ci[:, 0] > 0.0) and np.all(ci[:, 1] < 1.0), name  # better than base
    same = bs.bootstrap_scores(blocks["b"], blocks["b"], blocks["t"], edges, n_boot=20)
    assert np.all(np.abs(bs.confidence_interval(same["u"])) < 0.5)
    # truth against itself: below the baseline's distance (a white-noise spectrum of 6 records
    # is the noisiest of them)
    floor = bs.noise_floor(blocks["t"], edges)
    d_base = bs.distances(blocks["b"], blocks["t"], edges)
    for name in SCORES:
        bound = 0.5 if name == "ke_spectrum" else 0.3
        assert np.all(floor[name] < bound * d_base[name]), name
