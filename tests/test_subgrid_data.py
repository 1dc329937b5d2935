"""Training data of the subgrid closures: the toy's tendency mode, coarse-graining, the forcing,
and the dataset writer end to end on a small basin pair (coarse 18 x 18 <-> fine 66 x 66).

The Fortran tests run ``toy_nemo`` under mpirun on tiny grids and a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from mlbridge_models.subgrid import coarsen as cg
from mlbridge_models.subgrid.dataset import (
    DatasetError,
    DatasetSettings,
    ToyRunner,
    build_dataset,
    check_dataset,
    open_dataset,
)
from mlbridge_models.subgrid.forcing import subgrid_forcing
from mlbridge_models.subgrid.make_data import main
from toy_helpers import NAMELIST_REF, SMALL_BASIN, check_ok, make_run_dir, merge, read_nc, run_toy

from bridge.config.namelist import write_patched_cfg
from bridge.registry.manifest import Manifest, parse_manifest

TEND = ("dudt", "dvdt", "dhdt")


def _short(steps: int, write: int, stock: int = 0) -> dict:
    run = {"cn_exp": "TOY", "nn_it000": 1, "nn_itend": steps, "nn_write": write}
    return {"namrun": run | {"nn_stock": stock}}


def _tend(states: Path, out: str = "tend.nc", ranks: tuple[int, int] = (1, 1)) -> dict:
    return {
        "namtend": {"ln_tend": True, "cn_tend_in": str(states), "cn_tend_out": out},
        "nammpp": {"jpni": ranks[0], "jpnj": ranks[1]},
    }


# ------------------------------------------------------------------ the toy's tendency mode


@pytest.fixture(scope="module")
def short_run(toy_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 steps of the small basin, output every 5 steps, restart at step 10."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("short"), merge(SMALL_BASIN, _short(10, 5, 10)))
    check_ok(run_toy(toy_exe, run_dir, 1), run_dir)
    return run_dir


def test_tendency_is_one_euler_step(toy_exe: Path, tmp_path: Path, short_run: Path) -> None:
    """dudt of the state of step 10 == (u(11) - u(10)) / dt of a forward-Euler step from it."""
    restart = tmp_path / "euler_restart.nc"
    restart.write_bytes((short_run / "TOY_00000010_restart.nc").read_bytes())
    with netCDF4.Dataset(restart, "a") as ds:
        ds.variables["nab"][...] = 0  # no AB3 history: the next step is forward Euler
        dt = float(ds.variables["rn_Dt"][...])
    euler = make_run_dir(
        tmp_path / "euler",
        merge(
            SMALL_BASIN,
            _short(11, 1),
            {"namrun": {"nn_it000": 11, "ln_rstart": True, "cn_ocerst_in": str(restart)}},
        ),
    )
    check_ok(run_toy(toy_exe, euler, 1), euler)
    tend = make_run_dir(tmp_path / "tend", merge(SMALL_BASIN, _tend(short_run / "TOY_grid.nc")))
    check_ok(run_toy(toy_exe, tend, 1), tend)

    before = read_nc(short_run / "TOY_grid.nc", ("u", "v", "h"))
    after = read_nc(euler / "TOY_grid.nc", ("u", "v", "h"))
    got = read_nc(tend / "tend.nc", TEND)
    assert got["dudt"].shape == before["u"].shape  # (record, z, y, x), both records
    for name, tname in zip(("u", "v", "h"), TEND, strict=True):
        x0, x1 = before[name][1], after[name][0]
        expected = (x1 - x0) / dt
        assert np.abs(expected).max() > 0.0, f"{name} did not move"
        # x(n+1) = x(n) + dt T rounds to eps |x|: that is all the difference allowed
        atol = 4.0 * np.finfo(np.float64).eps * np.abs(x0).max() / dt
        np.testing.assert_allclose(got[tname][1], expected, rtol=0.0, atol=atol, err_msg=tname)
    assert not (tend / "TOY_grid.nc").exists(), "the tendency mode writes no model output"
    with xr.open_dataset(tend / "tend.nc") as ds:
        assert ds["dudt"].attrs["units"] == "m s-2" and ds["dhdt"].attrs["units"] == "m s-1"
        assert ds["dvdt"].attrs["grid_point"] == "V"
        np.testing.assert_array_equal(
            ds["time_counter"].values,
            xr.open_dataset(short_run / "TOY_grid.nc").time_counter.values,
        )


@pytest.mark.parametrize("jpni,jpnj", [(2, 2), (3, 1)])
def test_tendency_any_decomposition(
    toy_exe: Path, tmp_path: Path, short_run: Path, jpni: int, jpnj: int
) -> None:
    ref = make_run_dir(tmp_path / "ref", merge(SMALL_BASIN, _tend(short_run / "TOY_grid.nc")))
    check_ok(run_toy(toy_exe, ref, 1), ref)
    dec = make_run_dir(
        tmp_path / "dec", merge(SMALL_BASIN, _tend(short_run / "TOY_grid.nc", ranks=(jpni, jpnj)))
    )
    check_ok(run_toy(toy_exe, dec, jpni * jpnj), dec)
    a, b = read_nc(ref / "tend.nc", TEND), read_nc(dec / "tend.nc", TEND)
    for name in TEND:
        np.testing.assert_array_equal(b[name], a[name], err_msg=f"{name} on {jpni}x{jpnj}")


def test_tendency_refuses_wrong_grid(toy_exe: Path, tmp_path: Path, short_run: Path) -> None:
    patch = merge(SMALL_BASIN, _tend(short_run / "TOY_grid.nc"), {"namusr_def": {"nn_nx": 24}})
    run_dir = make_run_dir(tmp_path, patch)
    proc = run_toy(toy_exe, run_dir, 1)
    assert proc.returncode != 0
    assert "23 points in x" in proc.stderr and "gives 24" in proc.stderr


# ------------------------------------------------------------------ coarse-graining (pure numpy)

FACTOR = 4
NC = 10  # coarse 10 x 10 with the rim <-> fine 34 x 34
NF = FACTOR * (NC - 2) + 2


def _fine_fields(seed: int = 0, nz: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(nz, NF, NF)) * cg.u_mask(NF, NF)
    v = rng.normal(size=(nz, NF, NF)) * cg.v_mask(NF, NF)
    h = (500.0 + 50.0 * rng.normal(size=(nz, NF, NF))) * cg.t_mask(NF, NF)
    return u, v, h


def test_refinement_factor() -> None:
    assert cg.refinement(250, 64) == 4 and cg.refinement(66, 18) == 4
    assert cg.coarse_size(250, 4) == 64
    with pytest.raises(ValueError, match="not an integer refinement"):
        cg.refinement(251, 64)


def test_coarse_volume_equals_fine_volume() -> None:
    _, _, h = _fine_fields()
    hc = cg.coarsen_t(h, FACTOR)
    assert hc.shape == (2, NC, NC)
    dxf, dxc = 8000.0, 32000.0
    np.testing.assert_allclose(
        hc.sum(axis=(-2, -1)) * dxc**2, h.sum(axis=(-2, -1)) * dxf**2, rtol=1e-13
    )
    assert np.all(hc[:, 0, :] == 0) and np.all(hc[:, :, -1] == 0), "coarse rim must be land"


def test_flux_weighted_velocity_conserves_face_transport() -> None:
    u, v, h = _fine_fields(1)
    dxf, dxc = 8000.0, 32000.0
    uc, vc, hc = (
        cg.coarsen_u_flux(u, h, FACTOR),
        cg.coarsen_v_flux(v, h, FACTOR),
        cg.coarsen_t(h, FACTOR),
    )
    # coarse model flux e2u h_u u through every coarse east face ...
    coarse_flux = dxc * cg.face_thickness_u(hc) * uc
    fine_flux = dxf * cg.face_thickness_u(h) * u
    for jc in range(1, NC - 1):
        for ic in range(NC - 1):
            rows = slice(FACTOR * (jc - 1) + 1, FACTOR * jc + 1)
            expected = fine_flux[:, rows, FACTOR * ic].sum(axis=-1)  # ... the sum of fine fluxes
            np.testing.assert_allclose(coarse_flux[:, jc, ic], expected, rtol=1e-12, atol=1e-9)
    # and north faces
    coarse_vflux = dxc * np.swapaxes(cg.face_thickness_u(np.swapaxes(hc, -1, -2)), -1, -2) * vc
    fine_vflux = dxf * np.swapaxes(cg.face_thickness_u(np.swapaxes(h, -1, -2)), -1, -2) * v
    np.testing.assert_allclose(
        coarse_vflux[:, 3, 5], fine_vflux[:, 4 * 3, 4 * 4 + 1 : 4 * 5 + 1].sum(axis=-1), rtol=1e-12
    )

    # the coarse continuity of the coarse fluxes is the block mean of the fine divergence
    def div(fu: np.ndarray, fv: np.ndarray, d: float) -> np.ndarray:
        out = np.zeros_like(fu)
        out[..., 1:-1, 1:-1] = (
            fu[..., 1:-1, 1:-1] - fu[..., 1:-1, :-2] + fv[..., 1:-1, 1:-1] - fv[..., :-2, 1:-1]
        ) / d**2
        return out

    np.testing.assert_allclose(
        div(coarse_flux, coarse_vflux, dxc),
        cg.coarsen_t(div(fine_flux, fine_vflux, dxf), FACTOR),
        rtol=1e-10,
        atol=1e-12 * np.abs(fine_flux).max() / dxf**2,
    )


def test_face_average_is_linear_and_exact_for_uniform_thickness() -> None:
    u1, v1, _ = _fine_fields(2)
    u2, v2, _ = _fine_fields(3)
    for uf in ("face", "box"):
        np.testing.assert_allclose(
            cg.coarsen_u(2.0 * u1 - u2, FACTOR, uf),
            2.0 * cg.coarsen_u(u1, FACTOR, uf) - cg.coarsen_u(u2, FACTOR, uf),
            atol=1e-14,
        )
    h = 500.0 * cg.t_mask(NF, NF)[None].repeat(2, axis=0)
    np.testing.assert_allclose(
        cg.coarsen_u(u1, FACTOR), cg.coarsen_u_flux(u1, h, FACTOR), atol=1e-14
    )
    np.testing.assert_allclose(
        cg.coarsen_v(v1, FACTOR), cg.coarsen_v_flux(v1, h, FACTOR), atol=1e-14
    )


def test_box_filter_keeps_a_uniform_flow() -> None:
    u = np.ones((1, NF, NF)) * cg.u_mask(NF, NF)
    uc = cg.coarsen_u(u, FACTOR, "box")
    # away from the walls, a uniform flow is unchanged; on the walls it is 0
    np.testing.assert_allclose(uc[0, 1:-1, 1:-2], 1.0, rtol=1e-14)
    assert np.all(uc[0, :, 0] == 0) and np.all(uc[0, :, -2:] == 0) and np.all(uc[0, 0] == 0)
    with pytest.raises(ValueError, match="u_filter"):
        cg.coarsen_u(u, FACTOR, "gauss")


def test_forcing_sign() -> None:
    """Adding S to the coarse tendency gives the coarse-grained fine tendency."""
    du, dv, _ = _fine_fields(4)
    rng = np.random.default_rng(5)
    cu, cv = rng.normal(size=(2, NC, NC)), rng.normal(size=(2, NC, NC))
    su, sv = subgrid_forcing(du, dv, cu, cv, FACTOR)
    np.testing.assert_allclose(cu + su, cg.coarsen_u(du, FACTOR), atol=1e-14)
    np.testing.assert_allclose(cv + sv, cg.coarsen_v(dv, FACTOR), atol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        subgrid_forcing(du, dv, cu[:, :-1], cv, FACTOR)


# ------------------------------------------------------------------ the dataset, end to end

FINE_CFG = Path(__file__).resolve().parents[1] / "examples" / "02_fine" / "namelist_cfg"
COARSE_CFG = Path(__file__).resolve().parents[1] / "examples" / "01_coarse" / "namelist_cfg"


@pytest.fixture(scope="module")
def tiny_pair(toy_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4x refined small basin (fine 66 x 66 <-> coarse 18 x 18): 8 fine steps, 4 snapshots."""
    root = tmp_path_factory.mktemp("pair")
    grid_f = {"nn_nx": 66, "nn_ny": 66, "rn_bump": 20.0}
    run = {"cn_exp": "FINE", "nn_it000": 1, "nn_itend": 8, "nn_write": 2, "nn_stock": 0}
    fine_dir = root / "fine"
    fine_dir.mkdir()
    (fine_dir / "namelist_ref").write_bytes(NAMELIST_REF.read_bytes())
    fine_cfg = write_patched_cfg(
        FINE_CFG, {"namusr_def": grid_f, "namrun": run}, fine_dir / "namelist_cfg"
    )
    check_ok(run_toy(toy_exe, fine_dir, 2), fine_dir)
    coarse_cfg = write_patched_cfg(
        COARSE_CFG, {"namusr_def": {"nn_nx": 18, "nn_ny": 18}}, root / "coarse_cfg"
    )
    return {"run": fine_dir / "FINE_grid.nc", "fine_cfg": fine_cfg, "coarse_cfg": coarse_cfg}


def _settings(pair: dict[str, Path], chunk: int = 2) -> DatasetSettings:
    return DatasetSettings(pair["run"], pair["fine_cfg"], pair["coarse_cfg"], chunk=chunk)


def _manifest(units_su: str = "m s-2") -> Manifest:
    return parse_manifest(
        {
            "name": "subgrid",
            "version": "1",
            "format": "python",
            "halo": 2,
            "entry_point": "mlbridge_models.zanna_bolton:build_zanna_bolton",
            "inputs": [
                {"name": "u", "grid": "U", "units": "m s-1"},
                {"name": "v", "grid": "V", "units": "m s-1"},
            ],
            "outputs": [
                {"name": "su", "grid": "U", "units": units_su},
                {"name": "sv", "grid": "V", "units": "m s-2"},
            ],
        }
    )


def test_dataset_end_to_end_and_resumable(
    toy_exe: Path, tmp_path: Path, tiny_pair: dict[str, Path]
) -> None:
    runner = ToyRunner(toy_exe, ranks=1)
    straight = build_dataset(_settings(tiny_pair), tmp_path / "straight", runner)
    assert straight.written == [0, 1] and straight.records == 4

    # killed after the first chunk, then the same command again
    part = build_dataset(_settings(tiny_pair), tmp_path / "resumed", runner, max_chunks=1)
    assert part.written == [0]
    first = (tmp_path / "resumed" / "chunk_0000.nc").read_bytes()
    rest = build_dataset(_settings(tiny_pair), tmp_path / "resumed", runner)
    assert rest.skipped == [0] and rest.written == [1]
    assert (tmp_path / "resumed" / "chunk_0000.nc").read_bytes() == first, "chunk 0 rewritten"

    a, b = open_dataset(tmp_path / "straight"), open_dataset(tmp_path / "resumed")
    for name in ("u", "v", "h", "su", "sv"):
        np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)
        assert a[name].shape == (4, 2, 18, 18)
        assert np.isfinite(a[name].values).all()
        assert a[name].attrs["units"] == {"u": "m s-1", "v": "m s-1", "h": "m"}.get(name, "m s-2")
    assert np.abs(a["su"].values).max() > 0.0 and np.abs(a["u"].values).max() > 0.0
    assert np.all(a["su"].values[..., :, -2:] == 0.0), "forcing on the walls / rim must be 0"
    assert a.attrs["fine_run_file"].endswith("FINE_grid.nc") and "code_revision" in a.attrs
    assert a.attrs["fine_rn_dx"] == 8000.0 and a.attrs["factor"] == 4
    # coarse h is the block mean of the fine h: volume of the fine run
    with xr.open_dataset(tiny_pair["run"], decode_times=False) as fine:
        np.testing.assert_allclose(
            a["h"].values.sum(axis=(-2, -1)) * 16.0, fine["h"].values.sum(axis=(-2, -1)), rtol=1e-13
        )
    assert json.loads((tmp_path / "straight" / "index.json").read_text())["settings"]["factor"] == 4

    check_dataset(a, _manifest(), grid=(18, 18))
    with pytest.raises(DatasetError, match="su: units 'm s-2' in the dataset, 'm s-1'"):
        check_dataset(a, _manifest("m s-1"))
    with pytest.raises(DatasetError, match=r"grid \(y, x\) = \(18, 18\) in the dataset"):
        check_dataset(a, _manifest(), grid=(64, 64))

    # another chunk size in the same directory is refused, not mixed
    with pytest.raises(DatasetError, match="other settings"):
        build_dataset(_settings(tiny_pair, chunk=3), tmp_path / "straight", runner)


def test_inviscid_forcing_leaves_the_viscosity_out(
    toy_exe: Path, tmp_path: Path, tiny_pair: dict[str, Path]
) -> None:
    """``inviscid``: both tendencies without lateral viscosity. The difference to the default
    forcing is then exactly C(fine viscous tendency) - coarse viscous tendency(C state)."""
    import dataclasses

    runner = ToyRunner(toy_exe, ranks=1)
    viscous = _settings(tiny_pair, chunk=4)
    inviscid = dataclasses.replace(viscous, inviscid=True)
    build_dataset(viscous, tmp_path / "visc", runner)
    build_dataset(inviscid, tmp_path / "inv", runner)
    a, b = open_dataset(tmp_path / "visc"), open_dataset(tmp_path / "inv")
    assert b.attrs["inviscid"] == 1 and a.attrs["inviscid"] == 0
    assert "without lateral viscosity" in b.attrs["forcing_definition"]
    np.testing.assert_array_equal(a["u"].values, b["u"].values)
    diff = np.abs(a["su"].values - b["su"].values).max()
    assert diff > 1e-3 * np.abs(a["su"].values).max(), "the viscosity made no difference"
    # the viscous parts alone, from the model's own tendency mode
    with xr.open_dataset(tiny_pair["run"], decode_times=False) as fine:
        u, v, h = (fine[n].values[:4].astype(np.float64) for n in ("u", "v", "h"))
        t = fine["time_counter"].values[:4].astype(np.float64)
    from mlbridge_models.subgrid.dataset import _states_file

    def viscous_part(cfg: Path, states: Path, work: Path) -> np.ndarray:
        full = runner.tendencies(cfg, states, work / "full")
        inv = runner.tendencies(cfg, states, work / "inv", inviscid=True)
        return full["dudt"].values - inv["dudt"].values

    fine_states = _states_file(tmp_path / "fs.nc", u, v, h, t)
    cu, cv, ch = (cg.coarsen_u(u, 4), cg.coarsen_v(v, 4), cg.coarsen_t(h, 4))
    coarse_states = _states_file(tmp_path / "cs.nc", cu, cv, ch, t)
    expected = cg.coarsen_u(
        viscous_part(tiny_pair["fine_cfg"], fine_states, tmp_path / "f"), 4
    ) - viscous_part(tiny_pair["coarse_cfg"], coarse_states, tmp_path / "c")
    np.testing.assert_allclose(
        a["su"].values - b["su"].values, expected, rtol=0, atol=1e-12 * np.abs(a["su"]).max()
    )
    # the other setting in the same folder is refused, not mixed
    with pytest.raises(DatasetError, match="other settings"):
        build_dataset(viscous, tmp_path / "inv", runner)


def test_make_data_cli(
    toy_exe: Path, tmp_path: Path, tiny_pair: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        str(tiny_pair["run"]),
        "--fine-cfg",
        str(tiny_pair["fine_cfg"]),
        "--coarse-cfg",
        str(tiny_pair["coarse_cfg"]),
        "--out",
        str(tmp_path / "d"),
        "--chunk",
        "4",
        "--exe",
        str(toy_exe),
    ]
    assert main(args) == 0
    assert open_dataset(tmp_path / "d").sizes["time_counter"] == 4
    inv = args + ["--inviscid"]
    inv[inv.index("--out") + 1] = str(tmp_path / "inv")
    assert main(inv) == 0
    assert open_dataset(tmp_path / "inv").attrs["inviscid"] == 1
    bad = args[:4] + [str(tiny_pair["fine_cfg"])] + args[5:]  # coarse cfg = the fine one
    bad[bad.index("--out") + 1] = str(tmp_path / "bad")
    assert main(bad) == 2
    assert "not coarser than the fine one" in capsys.readouterr().err


# --- training (models/subgrid/train.py) on the tiny dataset ---------------------------------


@pytest.fixture(scope="module")
def tiny_data(
    toy_exe: Path, tiny_pair: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("tiny_data") / "d"
    build_dataset(_settings(tiny_pair, chunk=4), out, ToyRunner(toy_exe, ranks=1))
    return out


def test_train_writes_a_closure_the_runtime_runs_as_trained(
    tiny_data: Path, tiny_pair: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from mlbridge_models.subgrid.train import TrainSettings, train

    from bridge.registry.manifest import load_manifest
    from bridge.registry.runtime import load_closure

    settings = TrainSettings(
        hidden=(4, 4), kernel_sizes=(3, 3, 3), epochs=3, val_frac=0.25, input_noise=0.3
    )
    result = train(
        [tiny_data], tmp_path / "art", settings, coarse_cfg=tiny_pair["coarse_cfg"], progress=False
    )
    assert result.epochs == 3 and len(result.history) == 3
    assert np.isfinite(result.kappa) and result.kappa != 0.0
    manifest = load_manifest(tmp_path / "art" / "manifest.toml")
    assert manifest.halo == 3
    clip = {e.name: e.clip for e in manifest.outputs}
    ds = open_dataset(tiny_data)
    smax = max(float(np.abs(ds.su).max()), float(np.abs(ds.sv).max()))
    assert clip["su"] == pytest.approx(settings.clip_factor * smax, rel=1e-12)
    assert set(manifest.provenance.metrics) >= {"r2_su_validation", "zb_kappa_fit"}

    # the registered form (runtime, normalisation from the manifest) on the zero-padded global
    # field gives what the trained network gives, i.e. the same padding online and in training
    closure = load_closure(manifest, levels_per_call=None)
    h = manifest.halo
    u = ds.u.values[0]
    v = ds.v.values[0]
    pad = ((0, 0), (h, h), (h, h))
    online = closure({"u": np.pad(u, pad), "v": np.pad(v, pad)})
    net = torch.export.load(tmp_path / "art" / "subgrid_cnn.pt2").module()
    us = manifest.inputs[0].norm.scale
    ss = manifest.outputs[0].norm.scale
    x = torch.from_numpy((np.stack([np.pad(u, pad), np.pad(v, pad)], axis=1) / us).astype("f4"))
    with torch.no_grad():
        ref = net(x).numpy() * ss
    umask = ds.umask.values.astype(bool)
    np.testing.assert_allclose(
        online["su"][:, umask], ref[:, 0][:, umask], rtol=1e-4, atol=1e-6 * ss
    )
    # no biases (the default): an ocean at rest gets exactly no forcing
    rest = closure({"u": np.zeros_like(np.pad(u, pad)), "v": np.zeros_like(np.pad(v, pad))})
    assert not np.any(rest["su"]) and not np.any(rest["sv"])
    assert not any(n.endswith("bias") for n, _ in net.named_parameters())


def test_train_refuses_a_dataset_of_another_grid(tiny_data: Path, tmp_path: Path) -> None:
    from mlbridge_models.subgrid.train import TrainSettings, train

    coarse64 = Path(__file__).resolve().parents[1] / "examples" / "01_coarse" / "namelist_cfg"
    with pytest.raises(
        DatasetError, match=r"grid \(y, x\) = \(18, 18\) in the dataset, \(64, 64\)"
    ):
        train(
            [tiny_data],
            tmp_path / "art",
            TrainSettings(epochs=1),
            coarse_cfg=coarse64,
            progress=False,
        )
    assert not (tmp_path / "art").exists(), "nothing written for a refused dataset"


# ------------------------------------------------------------------ consistent forcing


def _balanced_eddy(nx: int, dx: float, eta0: float, radius: float) -> tuple[np.ndarray, ...]:
    """A geostrophic Gaussian bump of the top interface on an f-plane (2 layers of 500 m,
    g' = 0.02, f0 = 7e-5), as ``(1, 2, nx, nx)`` u, v, h on the toy's C-grid."""
    gp, f0, hl = 0.02, 7e-5, 500.0
    i = np.arange(1, nx + 1, dtype=float)
    x_t, x_u = (i - 1.5) * dx, (i - 1.0) * dx
    c = 0.5 * (nx - 2) * dx

    def eta(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return eta0 * np.exp(-((x - c) ** 2 + (y - c) ** 2) / radius**2)

    def grad(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = eta(x, y)
        return -2 * (x - c) / radius**2 * e, -2 * (y - c) / radius**2 * e

    # layer pressures P1 = g' eta, P2 = g' eta / 2 (docs/toy_model.md); u = -P_y / f, v = P_x / f
    _, ey_u = grad(x_u[None, :], x_t[:, None])  # U points: (x_u, y_t)
    ex_v, _ = grad(x_t[None, :], x_u[:, None])  # V points: (x_t, y_v)
    u = np.stack([-gp * ey_u / f0, -0.5 * gp * ey_u / f0])[None]
    v = np.stack([gp * ex_v / f0, 0.5 * gp * ex_v / f0])[None]
    h = np.stack([hl + eta(x_t[None, :], x_t[:, None]), np.full((nx, nx), hl)])[None]
    mask_t = cg.t_mask(nx, nx)
    return u * cg.u_mask(nx, nx), v * cg.v_mask(nx, nx), h * mask_t + hl * (1 - mask_t)


def test_affine_residual_removes_the_linear_terms_of_a_balanced_eddy(
    toy_exe: Path, tmp_path: Path
) -> None:
    """A small geostrophic eddy (linear regime): the face (velocity) and block (thickness)
    filters do not commute with the pressure gradient and the Coriolis term, so the forcing of
    the old definition is large although nothing is unresolved; minus the affine residual it is
    below 1 % of the Coriolis term, a bound the old definition misses by far."""
    f_plane = {"rn_beta": 0.0, "rn_tau0": 0.0, "rn_aeiv": 0.0}
    fine_cfg = write_patched_cfg(
        FINE_CFG, {"namusr_def": {"nn_nx": 34, "nn_ny": 34} | f_plane}, tmp_path / "fine_cfg"
    )
    coarse_cfg = write_patched_cfg(
        COARSE_CFG, {"namusr_def": {"nn_nx": 10, "nn_ny": 10} | f_plane}, tmp_path / "coarse_cfg"
    )
    u, v, h = _balanced_eddy(34, 8000.0, eta0=0.5, radius=40e3)
    run = tmp_path / "eddy_grid.nc"
    dims = ("time_counter", "z", "y", "x")
    xr.Dataset(
        {"u": (dims, u), "v": (dims, v), "h": (dims, h)},
        coords={"time_counter": ("time_counter", [0.0], {"units": "seconds"})},
    ).to_netcdf(run)
    runner = ToyRunner(toy_exe, ranks=1)
    old = DatasetSettings(run, fine_cfg, coarse_cfg, chunk=1, inviscid=True)
    new = DatasetSettings(run, fine_cfg, coarse_cfg, chunk=1, inviscid=True, subtract_affine=True)
    build_dataset(old, tmp_path / "old", runner)
    build_dataset(new, tmp_path / "new", runner)
    a, b = open_dataset(tmp_path / "old"), open_dataset(tmp_path / "new")
    coriolis = 7e-5 * float(np.abs(v).max())  # size of f v (and of the pressure gradient)
    s_old = max(float(np.abs(a[n].values).max()) for n in ("su", "sv"))
    s_new = max(float(np.abs(b[n].values).max()) for n in ("su", "sv"))
    assert s_old > 0.05 * coriolis, (s_old, coriolis)  # the old filter pair: a large residual
    assert s_new < 0.01 * coriolis, (s_new, coriolis)  # the nonlinear terms only
    assert b.attrs["subtract_affine"] == 1 and "affine residual" in b.attrs["forcing_definition"]
    assert b["sh"].attrs["units"] == "m s-1" and b["sh"].shape == (1, 2, 10, 10)
    # the thickness forcing is kept; the divergence commutes with these filters, so the
    # balanced eddy's is small either way
    assert float(np.abs(a["sh"].values).max()) < 1e-3 * 500.0 * float(np.abs(u).max()) / 32e3
