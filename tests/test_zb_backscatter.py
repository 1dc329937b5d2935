"""Zanna & Bolton with filtered gradients and stress and a backscattering coefficient
(Perezhogin et al. 2024; models/zanna_bolton.py): the filter, the forcing on analytic flows, the
halo, the sign of the energy transfer on 2D turbulence, the calibrated example
(examples/12_zb_backscatter) coupled through ``mlbridge run``."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from example_runs import run_with_u_tend
from mlbridge_models import zanna_bolton as zb
from mlbridge_models.zanna_bolton import ZannaBoltonClosure, build_zanna_bolton

from bridge.closures.base import ClosureInputError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "12_zb_backscatter"
CALIBRATION = REPO / "models" / "artifacts" / "zb_filtered_calibration.json"
DX, DY = 32.0e3, 24.0e3
FILTERED = {"vg_passes": 1, "stress_passes": 1, "vg_filter": "sharpen", "free_slip": True}


def _positions(ny: int, nx: int) -> dict[str, np.ndarray]:
    """Positions [m] of U and V points on a block (u: (x_u, y_t), v: (x_t, y_v))."""
    i, j = np.arange(nx, dtype=float), np.arange(ny, dtype=float)
    return {
        "xu": (i * DX)[None, :],
        "yu": ((j - 0.5) * DY)[:, None],
        "xv": ((i - 0.5) * DX)[None, :],
        "yv": (j * DY)[:, None],
    }


def test_filter_keeps_a_constant_and_removes_grid_modes() -> None:
    """G = [1 2 1; 2 4 2; 1 2 1]/16: response cos^2(k dx/2) cos^2(l dy/2) per pass."""
    j, i = np.mgrid[0:12, 0:14].astype(float)
    inner = (slice(2, -2), slice(2, -2))
    const = np.full((12, 14), 3.7)
    np.testing.assert_allclose(zb.smooth(const, 2)[inner], 3.7, rtol=1e-14)
    checker = (-1.0) ** (i + j)
    assert np.abs(zb.binomial_pass(checker)[1:-1, 1:-1]).max() < 1e-15
    stripes = (-1.0) ** i  # 2-cell wave along x only: removed too
    assert np.abs(zb.binomial_pass(stripes)[1:-1, 1:-1]).max() < 1e-15
    wave4 = np.cos(0.5 * np.pi * i)  # 4-cell wave: halved by each pass
    np.testing.assert_allclose(zb.smooth(wave4, 2)[inner], 0.25 * wave4[inner], atol=1e-14)
    # sharpening keeps exactly what smoothing removes; a linear field has nothing left
    f = np.random.default_rng(0).normal(size=(12, 14))
    both = zb.filter_gradient(f, 1, "sharpen") + zb.filter_gradient(f, 1, "smooth")
    np.testing.assert_allclose(both[1:-1, 1:-1], f[1:-1, 1:-1], rtol=1e-14)
    assert np.abs(zb.filter_gradient(2.0 * i - 3.0 * j, 1, "sharpen")[1:-1, 1:-1]).max() < 1e-12
    # the outer ring of each pass is NaN: a stencil that leaves the block cannot pass silently
    assert np.isnan(zb.smooth(const, 1)[0]).all() and np.isnan(zb.smooth(const, 2)[:, 1]).all()


def test_filters_off_is_zanna_bolton_2020_with_kappa_from_the_amplitude() -> None:
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(2, 16, 17)), rng.normal(size=(2, 16, 17))
    gamma = 0.8
    published = ZannaBoltonClosure(DX, DY, kappa=-gamma * DX * DY, trace="energy")
    scaled = build_zanna_bolton(DX, DY, amplitude=gamma, trace="energy")
    assert scaled.coefficient == pytest.approx(-gamma * DX * DY) and scaled.spec.halo == 2
    a, b = published({"u": u, "v": v}), scaled({"u": u, "v": v})
    np.testing.assert_array_equal(a["su"], b["su"])
    np.testing.assert_array_equal(a["sv"], b["sv"])
    with pytest.raises(ValueError, match="not both"):
        ZannaBoltonClosure(kappa=-1e8, amplitude=1.0)
    with pytest.raises(ValueError, match="vg_filter"):
        ZannaBoltonClosure(vg_filter="box")
    with pytest.raises(ValueError, match="stress_passes"):
        ZannaBoltonClosure(stress_passes=-1)


def test_rotation_and_quadratic_shear_by_hand() -> None:
    """Solid-body rotation: uniform gradients, uniform stress, no forcing, filtered or not.
    u = a y^2, v = b x^2: the gradients are linear, so smoothing keeps them and the stress
    (quadratic) gains only a constant: the forcing stays S_x = -8 a b kappa y,
    S_y = -8 a b kappa x (tests/test_zanna_bolton.py); sharpening leaves no gradient: S = 0."""
    ny, nx = 16, 17
    p = _positions(ny, nx)
    omega = 1.0e-5
    u = np.broadcast_to(-omega * (p["yu"] - 3e5), (ny, nx))[None].copy()
    v = np.broadcast_to(omega * (p["xv"] - 2e5), (ny, nx))[None].copy()
    for cfg in ({"vg_passes": 2, "stress_passes": 2}, FILTERED):
        out = ZannaBoltonClosure(DX, DY, amplitude=1.0, trace="energy", **cfg)({"u": u, "v": v})
        scale = DX * DY * (2 * omega) ** 2 / DX
        assert np.abs(out["su"]).max() < 1e-10 * scale and np.abs(out["sv"]).max() < 1e-10 * scale

    a, b, gamma = 2.0e-12, -3.0e-12, 0.5
    kappa = -gamma * DX * DY
    u = np.broadcast_to(a * p["yu"] ** 2, (ny, nx))[None].copy()
    v = np.broadcast_to(b * p["xv"] ** 2, (ny, nx))[None].copy()
    smooth = ZannaBoltonClosure(DX, DY, amplitude=gamma, vg_passes=2, stress_passes=1)
    out = smooth({"u": u, "v": v})
    h = smooth.spec.halo
    assert h == 5
    want_su = np.broadcast_to(-8 * a * b * kappa * p["yu"], (ny, nx))[None, h:-h, h:-h]
    want_sv = np.broadcast_to(-8 * a * b * kappa * p["xv"], (ny, nx))[None, h:-h, h:-h]
    np.testing.assert_allclose(out["su"], want_su, rtol=1e-9)
    np.testing.assert_allclose(out["sv"], want_sv, rtol=1e-9)
    sharp = ZannaBoltonClosure(DX, DY, amplitude=gamma, **FILTERED)({"u": u, "v": v})
    assert np.abs(sharp["su"]).max() < 1e-9 * np.abs(want_su).max()


def test_halo_covers_the_filters() -> None:
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(2, 24, 26)), rng.normal(size=(2, 24, 26))
    closure = build_zanna_bolton(DX, DY, amplitude=1.0, **FILTERED)
    h = closure.spec.halo
    assert h == zb.required_halo(1, 1) == 4
    full = closure({"u": u, "v": v})
    assert full["su"].shape == (2, 24 - 2 * h, 26 - 2 * h)
    assert np.isfinite(full["su"]).all() and np.isfinite(full["sv"]).all()
    # a sub-block with its own halo gives the same numbers as the whole block
    sub = closure({"u": u[:, 3:20, 4:23], "v": v[:, 3:20, 4:23]})
    np.testing.assert_allclose(sub["su"], full["su"][:, 3:12, 4:15], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sub["sv"], full["sv"][:, 3:12, 4:15], rtol=1e-12, atol=1e-15)
    # the outermost ring reaches the interior: the halo is not larger than needed
    # (v to the south, through D~ in T_xy, as without the filters)
    v2 = v.copy()
    v2[:, 0, 10] += 1.0
    assert not np.array_equal(closure({"u": u, "v": v2})["su"][:, 0], full["su"][:, 0])
    with pytest.raises(ClosureInputError):
        closure({"u": u[:, :8, :8], "v": v[:, :8, :8]})


def test_coast_is_free_slip_with_the_server_mask() -> None:
    """A current along a channel between two coasts, varying along it: without the mask the zero
    velocities on land make wall shear (no-slip) and extra forcing at the coast; with the T mask
    that the server hands to closures that take one, the F points touching land carry no
    gradient (free-slip, as in MOM6's implementation), so the forcing is the open ocean's."""
    from bridge.server.engine import accepts_mask

    closure = build_zanna_bolton(DX, DY, amplitude=1.0, trace="energy", free_slip=True)
    assert accepts_mask(closure) and accepts_mask(build_zanna_bolton(**FILTERED))
    h, n = closure.spec.halo, 24
    tmask = np.zeros((n, n))
    tmask[h + 1 : -h - 1, :] = 1.0  # ocean between two land rows, open east and west
    x = np.arange(n)[None, :]
    u_open = np.broadcast_to(0.3 + 0.1 * np.sin(2 * np.pi * x / 9.0), (n, n))[None].copy()
    v = np.zeros((1, n, n))
    u = u_open * tmask
    open_ocean = closure({"u": u_open, "v": v})
    walls = closure({"u": u, "v": v})
    free = closure({"u": u, "v": v}, mask=tmask)
    rows = slice(1, -1)  # the ocean rows of the interior (the land rows are masked by the server)
    np.testing.assert_allclose(free["su"][:, rows], open_ocean["su"][:, rows], rtol=1e-12)
    # without free_slip (the plain closure, examples/06) the mask is ignored
    plain = build_zanna_bolton(DX, DY, amplitude=1.0, trace="energy")
    np.testing.assert_array_equal(plain({"u": u, "v": v}, mask=tmask)["su"], walls["su"])
    assert (
        np.abs(walls["su"][:, rows] - open_ocean["su"][:, rows]).max()
        > 1e-3 * np.abs(open_ocean["su"]).max()
    )
    # the filters keep land at zero
    f = np.random.default_rng(3).normal(size=(1, n, n)) * tmask
    smoothed = zb.smooth(f, 2, tmask)
    land = (tmask[None] == 0) & np.isfinite(smoothed)
    assert land.sum() > 0 and np.all(smoothed[land] == 0.0)


def _turbulence(n: int = 64, steps: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decaying 2D turbulence on a doubly periodic ``n x n`` grid (pseudo-spectral vorticity
    equation, 2/3 dealiasing, exact hyperviscous decay, SSP-RK3), on the C-grid: ``u`` half a
    cell east of the T point, ``v`` half a cell north. The dynamics build the third-order
    correlations that a random-phase field lacks (whose energy transfer has no sign)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky = np.meshgrid(k, k)
    k2 = kx**2 + ky**2
    inv_k2 = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
    kk = np.sqrt(k2)
    spectrum = (kk / 6) * np.exp(-((kk / 6) ** 2))
    zh = np.fft.fft2(
        np.real(np.fft.ifft2(spectrum * np.exp(2j * np.pi * rng.uniform(size=k2.shape))))
    )
    zh /= np.sqrt(np.mean(np.real(np.fft.ifft2(zh)) ** 2))
    keep = ((np.abs(kx) < n / 3) & (np.abs(ky) < n / 3)).astype(float)
    dt = 0.02
    damp = np.exp(-2.0 * (k2 / (n / 3) ** 2) ** 4 * dt)

    def rhs(z: np.ndarray) -> np.ndarray:
        ph = z * inv_k2
        u, v = np.real(np.fft.ifft2(-1j * ky * ph)), np.real(np.fft.ifft2(1j * kx * ph))
        zx, zy = np.real(np.fft.ifft2(1j * kx * z)), np.real(np.fft.ifft2(1j * ky * z))
        return -keep * np.fft.fft2(u * zx + v * zy)

    for _ in range(steps):
        a = zh + dt * rhs(zh)
        b = 0.75 * zh + 0.25 * (a + dt * rhs(a))
        zh = (zh / 3 + 2 / 3 * (b + dt * rhs(b))) * damp
    ph = zh * inv_k2
    shift = np.pi / n
    u = np.real(np.fft.ifft2(-1j * ky * ph * np.exp(1j * kx * shift)))
    v = np.real(np.fft.ifft2(1j * kx * ph * np.exp(1j * ky * shift)))
    return u, v


def _transfer(closure: ZannaBoltonClosure, u: np.ndarray, v: np.ndarray) -> float:
    """``sum(u S_x + v S_y)`` over the periodic domain, over ``|S| |u|`` (dimensionless)."""
    h = closure.spec.halo
    out = closure({"u": np.pad(u, h, mode="wrap")[None], "v": np.pad(v, h, mode="wrap")[None]})
    su, sv = out["su"][0], out["sv"][0]
    return float(np.sum(u * su + v * sv) / np.sqrt(np.sum(su**2 + sv**2) * np.sum(u**2 + v**2)))


def test_filtered_forcing_backscatters_on_2d_turbulence() -> None:
    """Unfiltered, the stress is (up to an isotropic part) twice the nonlinear-gradient stress,
    whose transfer -T:S vanishes pointwise in non-divergent 2D flow: no net energy. With the
    sharpened gradients and smoothed stress and kappa_BC = -gamma dx dy < 0 the forcing feeds
    the resolved flow (Perezhogin et al. 2024's backscatter); gamma < 0 would drain it."""
    u, v = _turbulence()
    assert abs(_transfer(ZannaBoltonClosure(DX, DX, amplitude=1.0, trace="energy"), u, v)) < 2e-3
    back = _transfer(ZannaBoltonClosure(DX, DX, amplitude=1.0, trace="energy", **FILTERED), u, v)
    assert back > 0.1
    drain = _transfer(ZannaBoltonClosure(DX, DX, amplitude=-1.0, trace="energy", **FILTERED), u, v)
    assert drain == pytest.approx(-back, rel=1e-12)


def test_example_manifest_holds_the_calibrated_amplitude() -> None:
    """The example runs what the calibration chose (least J with the closure on), with the halo
    its filters need; every candidate ran from the spin-up restart, before year 11."""
    manifest = tomllib.loads((EXAMPLE / "zb_filtered.toml").read_text())
    arch = manifest["arch"]
    result = json.loads(CALIBRATION.read_text())
    chosen = result["chosen"]
    assert chosen is not None
    assert arch["amplitude"] == pytest.approx(chosen["amplitude"])
    for key, value in chosen["arch"].items():
        assert arch[key] == tomllib.loads(f"v = {value}")["v"], key
    assert manifest["halo"] == zb.required_halo(arch["vg_passes"], arch["stress_passes"])
    rows = [r for r in result["rows"] if r["amplitude"] == chosen["amplitude"]]
    assert any(r["stable"] and r["J"] == chosen["J"] for r in rows)
    assert result["seed_year"] >= 5 and all(r["years"][1] <= 10 for r in result["rows"])


def test_zb_backscatter_example_runs_coupled(fortran_build: Path, tmp_path: Path) -> None:
    """``examples/12_zb_backscatter``, registered as its README says, coupled for 120 steps from
    a bump: stable, and the closure's outputs are finite and nonzero."""
    import xarray as xr

    from bridge.config.namelist import write_patched_cfg
    from bridge.registry.store import Registry

    folder = tmp_path / "12_zb_backscatter"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("registry", "runs"))
    patch = {"namrun": {"nn_write": 60}, "namusr_def": {"rn_bump": 20.0}}
    write_patched_cfg(EXAMPLE / "namelist_cfg", patch, folder / "namelist_cfg")
    Registry(folder / "registry").register(None, folder / "zb_filtered.toml")
    result, tend = run_with_u_tend(folder, fortran_build, tmp_path / "r")
    assert np.isfinite(tend).all() and np.abs(tend).max() > 0.0
    with xr.open_dataset(next(result.run_dir.glob("*_grid.nc")), decode_times=False) as ds:
        assert np.isfinite(ds.u.values).all()
