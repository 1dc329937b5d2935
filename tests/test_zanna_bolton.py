"""The Zanna & Bolton (2020) closure: analytic fields, halo consumption, registration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlbridge_models.zanna_bolton import (
    HALO,
    ZannaBoltonClosure,
    build_zanna_bolton,
    default_kappa,
    manifest_toml,
)

from bridge.closures.base import Closure, ClosureInputError
from bridge.registry.store import Registry

REPO = Path(__file__).resolve().parents[1]
DX, DY = 32.0e3, 24.0e3


def _positions(ny: int, nx: int) -> dict[str, np.ndarray]:
    """Positions [m] of U and V points on a block (u: (x_u, y_t), v: (x_t, y_v))."""
    i, j = np.arange(nx, dtype=float), np.arange(ny, dtype=float)
    x_t, x_u = (i - 0.5) * DX, i * DX
    y_t, y_v = (j - 0.5) * DY, j * DY
    return {"xu": x_u[None, :], "yu": y_t[:, None], "xv": x_t[None, :], "yv": y_v[:, None]}


def test_solid_body_rotation_has_no_forcing() -> None:
    p = _positions(14, 16)
    omega = 1.0e-5
    u = (-omega * (p["yu"] - 3e5) + 0.0 * p["xu"])[None]
    v = (omega * (p["xv"] - 2e5) + 0.0 * p["yv"])[None]
    for trace in ("vorticity", "energy"):
        out = ZannaBoltonClosure(DX, DY, kappa=-1e8, trace=trace)({"u": u, "v": v})
        scale = 1e8 * (2 * omega) ** 2 / DX
        assert np.abs(out["su"]).max() < 1e-12 * scale, trace
        assert np.abs(out["sv"]).max() < 1e-12 * scale, trace


def test_shear_flow_by_hand() -> None:
    """u = a y^2, v = b x^2: zeta = 2bx - 2ay, D = 2bx + 2ay, D~ = 0, so
    S_x = kappa d/dx(zeta (zeta - D)) = kappa d/dx(-4ay (2bx - 2ay)) = -8 a b kappa y and
    S_y = kappa d/dy(zeta (zeta + D)) = kappa d/dy(4bx (2bx - 2ay)) = -8 a b kappa x,
    exact on the C-grid (every difference and average is exact on these polynomials)."""
    a, b, kappa = 2.0e-12, -3.0e-12, -5.0e8
    p = _positions(12, 13)
    u = np.broadcast_to(a * p["yu"] ** 2, (12, 13))[None].copy()
    v = np.broadcast_to(b * p["xv"] ** 2, (12, 13))[None].copy()
    out = ZannaBoltonClosure(DX, DY, kappa=kappa)({"u": u, "v": v})
    inner = slice(HALO, -HALO)
    expected_su = np.broadcast_to(-8 * a * b * kappa * p["yu"], (12, 13))[None, inner, inner]
    expected_sv = np.broadcast_to(-8 * a * b * kappa * p["xv"], (12, 13))[None, inner, inner]
    np.testing.assert_allclose(out["su"], expected_su, rtol=1e-9)
    np.testing.assert_allclose(out["sv"], expected_sv, rtol=1e-9)


def test_stretching_term_by_hand() -> None:
    """u = c x y, v = 0: zeta = -cx, D = cx, D~ = cy: T_xx = 2c^2x^2, T_xy = -c^2 x y,
    T_yy = 0, so S_x = kappa (4c^2 x - c^2 x) = 3 kappa c^2 x and S_y = -kappa c^2 y (+ the
    discrete corrections of the averages, which vanish for these polynomials but for a
    constant in T_xx that the x-derivative removes)."""
    c, kappa = 1.0e-10, -4.0e8
    p = _positions(12, 12)
    u = (c * p["xu"] * p["yu"])[None]
    v = np.zeros_like(u)
    out = ZannaBoltonClosure(DX, DY, kappa=kappa)({"u": u, "v": v})
    inner = slice(HALO, -HALO)
    xu = np.broadcast_to(p["xu"], (12, 12))[inner, inner]
    yv = np.broadcast_to(p["yv"], (12, 12))[inner, inner]
    np.testing.assert_allclose(out["su"][0], 3 * kappa * c**2 * xu, rtol=1e-9)
    np.testing.assert_allclose(out["sv"][0], -kappa * c**2 * yv, rtol=1e-9)


def test_halo_consumption() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(3, 20, 22)), rng.normal(size=(3, 20, 22))
    closure = build_zanna_bolton(DX, DY)
    full = closure({"u": u, "v": v})
    assert full["su"].shape == (3, 16, 18) and np.isfinite(full["su"]).all()
    # a sub-block with its own halo gives the same numbers as the whole block
    sub = closure({"u": u[:, 3:15, 4:17], "v": v[:, 3:15, 4:17]})
    np.testing.assert_allclose(sub["su"], full["su"][:, 3:11, 4:13], rtol=1e-12)
    np.testing.assert_allclose(sub["sv"], full["sv"][:, 3:11, 4:13], rtol=1e-12)
    # the whole halo is used: the outermost ring reaches the interior (v to the south through
    # D~ in T_xy, u to the west likewise), one cell further out does not exist
    v2 = v.copy()
    v2[:, 0, 5] += 1.0
    assert not np.array_equal(closure({"u": u, "v": v2})["su"][:, 0], full["su"][:, 0])
    u2 = u.copy()
    u2[:, 5, 0] += 1.0
    assert not np.array_equal(closure({"u": u2, "v": v})["sv"][:, :, 0], full["sv"][:, :, 0])
    with pytest.raises(ClosureInputError):
        closure({"u": u[:, :4, :4], "v": v[:, :4, :4]})


def test_dtype_kappa_and_interface() -> None:
    closure = build_zanna_bolton()
    assert isinstance(closure, Closure)
    assert closure.spec.halo == HALO and closure.spec.output_names == ("su", "sv")
    assert closure.coefficient == pytest.approx(-4.6e8 * (32e3 / 30e3) ** 2)
    assert default_kappa(64e3, 64e3) == pytest.approx(4 * default_kappa(32e3, 32e3))
    u = np.random.default_rng(1).normal(size=(2, 9, 9)).astype(np.float32)
    out = closure({"u": u, "v": u})
    assert out["su"].dtype == np.float32 and out["su"].flags.c_contiguous
    with pytest.raises(ValueError, match="trace"):
        build_zanna_bolton(trace="full")


def test_registration_dry_run(tmp_path: Path) -> None:
    manifest = tmp_path / "zanna_bolton.toml"
    manifest.write_text(manifest_toml(kappa=-3.0e8))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "register",
            "--manifest",
            str(manifest),
            "--home",
            str(tmp_path / "reg"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "zanna_bolton@1" in proc.stdout
    loaded = Registry(tmp_path / "reg").load("zanna_bolton@1", device="cpu")
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(2, 12, 12)), rng.normal(size=(2, 12, 12))
    direct = build_zanna_bolton(kappa=-3.0e8)({"u": u, "v": v})
    got = loaded({"u": u, "v": v})
    np.testing.assert_allclose(got["su"], direct["su"], rtol=1e-12)
