"""The energy-budget backscatter closure (models/subgrid/backscatter.py): its budget on synthetic
fields, and coupled to the coarse toy through ``mlbridge run`` (examples/10_backscatter)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from example_runs import run_with_u_tend
from mlbridge_models.subgrid import backscatter as bs

DX = 32.0e3
N = 24  # block with its halo
REPO = Path(__file__).resolve().parents[1]


def _block(seed: int = 0, amp: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2-layer block with a closed-basin land rim at its edge ring, a smooth eddy field that
    vanishes towards the edges, and sloping interfaces."""
    rng = np.random.default_rng(seed)
    j, i = np.mgrid[0:N, 0:N].astype(float)
    c = (N - 1) / 2
    env = np.exp(-((i - c) ** 2 + (j - c) ** 2) / 8.0)
    u = np.stack([amp * env * np.sin(0.9 * j + rng.uniform()), 0.5 * amp * env * np.cos(i)])
    v = np.stack([amp * env * np.cos(0.7 * i + rng.uniform()), 0.5 * amp * env * np.sin(j)])
    h = np.stack([500.0 + 40.0 * env + 2.0 * i, 500.0 - 20.0 * env])
    h[:, :1, :] = h[:, -1:, :] = h[:, :, :1] = h[:, :, -1:] = 0.0  # land rim
    m = bs.Stagger.from_h(h)
    return u * m.u, v * m.v, h


def test_returned_power_is_what_leaves_the_budget() -> None:
    """sum(h_u u su + h_v v sv) over the block equals sum(W), and W > 0 for E > 0."""
    u, v, h = _block()
    nu = np.full(h.shape[-2:], 300.0) * bs.Stagger.from_h(h).t
    su, sv, w = bs.backscatter_tendency(u, v, h, nu, DX, DX)
    h_u = 0.5 * (h + np.roll(h, -1, axis=-1))
    h_v = 0.5 * (h + np.roll(h, -1, axis=-2))
    power = float(np.sum(h_u * u * su + h_v * v * sv))
    assert power > 0.0
    assert float(w.sum()) == pytest.approx(power, rel=1e-12)
    assert np.all(w >= 0.0)


def test_budget_closes_and_energy_comes_back() -> None:
    closure = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, dt=1440.0, e_init=5.0)
    u, v, h = _block(1)
    su, sv, t = closure.step(u, v, h)
    # E(n+1) - E(n) = dt (viscous + GM - backscatter - decay), wherever E stays positive
    expected = t.e_before + 1440.0 * (t.viscous + t.gm - t.backscatter - t.decay)
    ocean = t.e_after > 0
    assert ocean.sum() > 100
    np.testing.assert_allclose(t.e_after[ocean], expected[ocean], rtol=1e-12)
    assert np.all(t.viscous >= 0) and np.all(t.gm >= 0) and t.gm.sum() > 0
    # the resolved flow gains the energy the budget loses (d KE / dt from the closure > 0)
    inner = (slice(None), slice(bs.HALO, -bs.HALO), slice(bs.HALO, -bs.HALO))
    h_u = 0.5 * (h + np.roll(h, -1, axis=-1))
    h_v = 0.5 * (h + np.roll(h, -1, axis=-2))
    gain = float(np.sum((h_u * u * su + h_v * v * sv)[inner]))
    assert gain > 0.0
    assert gain == pytest.approx(float(t.backscatter.sum()), rel=1e-6)
    # the state survives between calls
    assert closure.energy is t.e_after
    _, _, t2 = closure.step(u, v, h)
    np.testing.assert_array_equal(t2.e_before, t.e_after)


def test_no_backscatter_next_to_land() -> None:
    """``nu = 0`` within ``land_taper`` cells of land; a block's own edges are not land."""
    mask = np.ones((10, 10))
    np.testing.assert_array_equal(bs.away_from_land(mask, 2), mask)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0.0
    eroded = bs.away_from_land(mask, 2)
    assert eroded[3:7, 3:7].all() and eroded.sum() == 16
    assert bs.away_from_land(mask, 0) is mask
    u, v, h = _block(2)
    out = {}
    for taper in (0, 2, N):
        closure = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, e_init=5.0, land_taper=taper)
        out[taper] = closure.step(u, v, h)
    assert np.abs(out[0][0]).max() > 0 and np.abs(out[2][0]).max() > 0
    assert not np.array_equal(out[0][0], out[2][0])
    assert not out[N][0].any() and not out[N][1].any()  # no ocean is far enough from land
    # next to the wall (first ocean row and column) the tapered closure returns no tendency
    assert not out[2][0][:, 1, :].any() and not out[2][0][:, :, 1].any()
    # so does the smoothed one, whose taper reaches as far again as its filter spreads
    smoothed = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, e_init=5.0, smooth_passes=2)
    su, sv, _ = smoothed.step(u, v, h)
    assert np.abs(su).max() > 0
    for s in (su, sv):
        assert not s[:, 1, :].any() and not s[:, :, 1].any()
        assert not s[:, -2, :].any() and not s[:, :, -2].any()


def test_empty_budget_returns_nothing() -> None:
    closure = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, bhm=0.0, kappa_gm=0.0, e_init=0.0)
    u, v, h = _block(2)
    out = closure({"u": u, "v": v, "h": h})
    assert not out["su"].any() and not out["sv"].any()
    assert out["su"].shape == (2, N - 4, N - 4)
    assert not closure.energy.any()
    assert closure.spec.stateful and closure.spec.halo == bs.HALO


def _wave(wavelength_cells: float, n: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A doubly periodic-looking field (no land) with one sinusoid in u along y."""
    j = np.mgrid[0:n, 0:n][0].astype(float)
    u = np.stack([0.1 * np.cos(2 * np.pi * j / wavelength_cells + 0.3)] * 2)
    return u, np.zeros_like(u), np.full_like(u, 500.0)


@pytest.mark.parametrize("passes", [1, 3])
def test_smoothed_backscatter_feeds_larger_scales(passes: int) -> None:
    """Per unit ``nu``, the smoothed backscatter's power on one wave is ``cos^(4n)(pi dx / L)``
    times the plain one's (``G`` is ``cos^2`` per pass): nothing for the 2-dx wave, most of it for
    a 16-dx wave; the block's power is what the flow receives."""
    inner = (slice(None), slice(12, -12), slice(12, -12))
    for cells in (2.0, 4.0, 16.0):
        u, v, h = _wave(cells)
        nu = np.full(h.shape[-2:], 300.0)
        plain = bs.backscatter_tendency(u, v, h, nu, DX, DX)[0]
        su, _, w = bs.smoothed_backscatter(u, v, h, nu, DX, DX, passes)
        ratio = float(np.sum((u * su)[inner]) / np.sum((u * plain)[inner]))
        expected = np.cos(np.pi / cells) ** (4 * passes)
        assert ratio == pytest.approx(expected, abs=1e-9)
        h_u = 0.5 * (h + np.roll(h, -1, axis=-1))
        assert float(w[12:-12, 12:-12].sum()) == pytest.approx(
            float(np.sum((h_u * u * su)[inner])), rel=1e-12, abs=1e-20
        )
    assert np.cos(np.pi / 16.0) ** (4 * passes) > 0.5


def test_smoothed_closure_is_local_and_its_budget_closes() -> None:
    """The closure on a sub-block with its halo gives the whole field's answer there; ``E``
    loses exactly the power the flow receives (where it stays positive)."""
    passes = 2
    u, v, h = _block(3)
    closure = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, e_init=5.0, smooth_passes=passes)
    halo = closure.halo
    assert halo == 2 + 2 * passes and closure.spec.halo == halo
    out = closure({"u": u, "v": v, "h": h})
    assert out["su"].shape == (2, N - 2 * halo, N - 2 * halo) and np.abs(out["su"]).max() > 0
    # a sub-block: drop 2 interior columns on the right; its halo still comes from the field
    part = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, e_init=5.0, smooth_passes=passes)
    sub = part({"u": u[..., :-2], "v": v[..., :-2], "h": h[..., :-2]})
    np.testing.assert_allclose(sub["su"], out["su"][..., :-2], rtol=1e-12, atol=1e-22)
    again = bs.EnergyBudgetBackscatter(dx=DX, dy=DX, e_init=5.0, smooth_passes=passes)
    su, sv, t = again.step(u, v, h)
    expected = t.e_before + 1440.0 * (t.viscous + t.gm - t.backscatter - t.decay)
    ocean = t.e_after > 0
    np.testing.assert_allclose(t.e_after[ocean], expected[ocean], rtol=1e-12)
    assert np.isfinite(su).all() and np.isfinite(sv).all()


def test_gm_release_is_positive_for_any_interfaces() -> None:
    rng = np.random.default_rng(3)
    h = 500.0 + 50.0 * rng.normal(size=(2, N, N))
    release = bs.gm_release(h, 200.0, 0.02, DX, DX)
    assert np.all(release >= -1e-20) and release.sum() > 0.0
    flat = np.full((2, N, N), 500.0)
    assert not bs.gm_release(flat, 200.0, 0.02, DX, DX).any()


def test_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="dt must be > 0"):
        bs.EnergyBudgetBackscatter(dt=0.0)
    with pytest.raises(ValueError, match="c_back must be >= 0"):
        bs.EnergyBudgetBackscatter(c_back=-1.0)


def test_backscatter_example_runs_coupled(fortran_build: Path, tmp_path: Path) -> None:
    """``examples/10_backscatter``, registered as its README says, coupled for 120 steps from a
    bump: stable, and the closure's outputs are nonzero and change the flow."""
    import xarray as xr

    from bridge.config.coupling import load_config
    from bridge.config.namelist import write_patched_cfg
    from bridge.launch.launcher import launch
    from bridge.registry.store import Registry

    folder = tmp_path / "10_backscatter"
    src = REPO / "examples" / "10_backscatter"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("registry", "runs"))
    patch = {"namrun": {"nn_write": 60}, "namusr_def": {"rn_bump": 20.0}}
    write_patched_cfg(src / "namelist_cfg", patch, folder / "namelist_cfg")
    manifest = (src / "backscatter.toml").read_text().replace("e_init = 0.0", "e_init = 20.0")
    (folder / "backscatter.toml").write_text(manifest)
    Registry(folder / "registry").register(None, folder / "backscatter.toml")
    result, tend = run_with_u_tend(folder, fortran_build, tmp_path / "r")
    assert np.isfinite(tend).all() and np.abs(tend).max() > 0.0
    with xr.open_dataset(next(result.run_dir.glob("*_grid.nc")), decode_times=False) as ds:
        coupled = ds.u.values[-1].copy()
    alone_cfg = tmp_path / "alone"
    alone_cfg.mkdir()
    write_patched_cfg(REPO / "examples" / "01_coarse" / "namelist_cfg", patch, alone_cfg / "nl")
    config = load_config(REPO / "examples" / "01_coarse" / "coupling.toml")
    import dataclasses

    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, namelist_cfg=alone_cfg / "nl")
    )
    alone = launch(config, steps=120, workdir=tmp_path / "a", build_dir=fortran_build, quiet=True)
    assert alone.ok
    with xr.open_dataset(next(alone.run_dir.glob("*_grid.nc")), decode_times=False) as ds:
        assert np.isfinite(coupled).all() and not np.array_equal(ds.u.values[-1], coupled)
