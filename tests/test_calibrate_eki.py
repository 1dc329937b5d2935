"""The ensemble Kalman inversion that calibrates closure amplitudes online
(models/subgrid/calibrate_eki.py): its update on a problem with a known answer, the parsing, the
statistics and the patched, registered example its runs use."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from mlbridge_models.evaluation import metrics as ev
from mlbridge_models.subgrid import calibrate_eki as eki

REPO = Path(__file__).resolve().parents[1]


def test_eki_finds_the_parameters_of_a_linear_model() -> None:
    """G(theta) = A theta with y = A theta*: the ensemble mean converges to theta* and the
    misfit falls; with a wrong gain (no update) it would stay at the prior draw."""
    rng = np.random.default_rng(1)
    a = np.array([[1.0, 0.5], [0.2, 2.0], [1.0, -1.0]])
    theta_star = np.array([0.7, -0.4])
    y = a @ theta_star
    gamma = np.diag(np.full(3, 1e-4))
    theta = rng.normal(0.0, 1.0, size=(20, 2))
    first = eki.misfit(a @ theta.mean(axis=0), y, np.diag(gamma))
    for _ in range(8):
        theta = eki.eki_update(theta, theta @ a.T, y, gamma, rng)
    np.testing.assert_allclose(theta.mean(axis=0), theta_star, atol=0.02)
    assert eki.misfit(a @ theta.mean(axis=0), y, np.diag(gamma)) < 1e-3 * first


def test_param_parsing_and_prior() -> None:
    p = eki.Param.parse("nu_cap=0.2:8")
    assert (p.name, p.low, p.high) == ("nu_cap", 0.2, 8.0)
    mean, sd = p.prior
    assert np.exp(mean - 1.96 * sd) == pytest.approx(0.2)
    assert np.exp(mean + 1.96 * sd) == pytest.approx(8.0)
    for bad in ("nu_cap", "nu_cap=8:0.2", "nu_cap=0:1", "=1:2", "x=a:b"):
        with pytest.raises(ValueError, match="NAME=LOW:HIGH"):
            eki.Param.parse(bad)


def test_bands_cover_the_compared_wavenumbers() -> None:
    for n in (4, 8, 21, 40):
        bands = eki.band_edges(n)
        assert len(bands) == eki.BANDS and bands[0][0] == 1 and bands[-1][1] == n
        assert all(a < b for a, b in bands)
        assert all(b0 == a1 for (_, b0), (a1, _) in zip(bands[:-1], bands[1:], strict=True))
    with pytest.raises(ValueError, match="bands"):
        eki.band_edges(3)


def test_statistics_are_log_ke_and_log_band_spectra() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.normal(0, 0.1, (2, 3, 2, 20, 20))
    h = np.full((3, 2, 20, 20), 400.0)
    for a in (u, v, h):
        a[..., 0, :] = a[..., -1, :] = a[..., :, 0] = a[..., :, -1] = 0.0
    g = eki.statistics(u, v, h, 8)
    ke = ev.time_mean_ke(u, v, h, eki.DX, eki.DX)
    np.testing.assert_allclose(g[:2], np.log(ke))
    spec = ev.ke_spectrum(u, v, eki.DX, eki.DX)
    a, b = eki.band_edges(8)[1]
    assert g[2 + 1] == pytest.approx(np.log(spec.e[0, a:b].mean()))
    assert g.size == 2 + 2 * eki.BANDS
    # twice the velocity: every statistic up by ln 4
    np.testing.assert_allclose(eki.statistics(2 * u, 2 * v, h, 8) - g, np.log(4.0))


def test_patched_example_sets_values_adds_defaults_and_its_halo(tmp_path: Path) -> None:
    import shutil

    from bridge.registry.store import Registry

    src = tmp_path / "src"  # the example without smooth_passes: the patch must add it
    shutil.copytree(
        REPO / "examples" / "10_backscatter", src, ignore=shutil.ignore_patterns("registry", "runs")
    )
    text = (src / "backscatter.toml").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("smooth_passes")]
    (src / "backscatter.toml").write_text("\n".join(lines) + "\n")
    config = eki.patched_example(
        src,
        "backscatter.toml",
        tmp_path / "cand",
        {"nu_cap": 1.5, "smooth_passes": 2, "land_taper": 1},
    )
    assert config == tmp_path / "cand" / "coupling.toml" and config.is_file()
    doc = tomllib.loads((tmp_path / "cand" / "backscatter.toml").read_text())
    assert doc["arch"]["nu_cap"] == 1.5 and doc["arch"]["smooth_passes"] == 2
    assert doc["arch"]["land_taper"] == 1
    assert doc["halo"] == 2 + 2 * 2  # the closure's own halo for two passes
    source = tomllib.loads((REPO / "examples" / "10_backscatter" / "backscatter.toml").read_text())
    assert doc["arch"]["c_back"] == source["arch"]["c_back"]  # untouched
    names = [e.name for e in Registry(tmp_path / "cand" / "registry").list()]
    assert "backscatter" in names
    with pytest.raises(ValueError, match=r"\[arch\]"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "m.toml").write_text('name = "x"\n')
        eki.patched_example(tmp_path / "bad", "m.toml", tmp_path / "cand2", {"a": 1.0})


def test_best_member_is_the_stable_run_of_least_misfit() -> None:
    rows = [
        {"values": {"a": 1.0}, "stable": True, "misfit": 5.0},
        {"values": {"a": 2.0}, "stable": False},
        {"values": {"a": 3.0}, "stable": True, "misfit": 2.0},
    ]
    result = {"iterations": [{"members": rows[:2]}, {"members": rows[2:]}]}
    assert eki.best_member(result)["values"] == {"a": 3.0}
    result["check"] = {"values": {"a": 4.0}, "stable": True, "misfit": 1.0}
    assert eki.best_member(result)["values"] == {"a": 4.0}
    assert eki.best_member({"iterations": [{"members": rows[1:2]}]}) is None


def test_patched_example_imports_only_shipped_factories(tmp_path: Path) -> None:
    """A manifest naming any other module is refused before anything is imported."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(
        REPO / "examples" / "10_backscatter", src, ignore=shutil.ignore_patterns("registry", "runs")
    )
    text = (src / "backscatter.toml").read_text()
    (src / "backscatter.toml").write_text(
        text.replace("mlbridge_models.subgrid.backscatter:build_backscatter", "os:system")
    )
    with pytest.raises(ValueError, match="not a closure factory an installed package ships"):
        eki.patched_example(src, "backscatter.toml", tmp_path / "cand", {"nu_cap": 1.0})
