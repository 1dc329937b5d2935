"""The subgrid CNN with the layer thickness: inputs ``u, v, h``, outputs ``su, sv, sh``
(``python -m mlbridge_models.subgrid.train --inputs u v h --outputs su sv sh``).

On a synthetic dataset where ``sh`` is a known local function of ``h`` (and ``su, sv`` of
``u, v``) the network learns it and a network blind to ``h`` cannot; the exported closure is
local and returns ``sh`` on T points; its manifest round-trips and passes the dataset check;
``examples/13_subgrid_cnn_h`` runs coupled with a tiny network trained on a tiny ``make_data``
dataset (``--inviscid --subtract-affine``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from example_runs import run_with_tendencies
from mlbridge_models.subgrid.coarsen import t_mask, u_mask, v_mask
from toy_helpers import NAMELIST_REF, check_ok, run_toy

from bridge.registry.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "13_subgrid_cnn_h"
H_REST = 500.0  # m: the synthetic layers' reference thickness


def test_thickness_channel_is_zero_on_land_and_keeps_nan() -> None:
    """``ThicknessInputCNN`` zeroes the thickness channel at or below its floor (land), per
    point, and leaves the other channels and a NaN alone."""
    import torch
    from mlbridge_models.cnn import ThicknessInputCNN, build_cnn

    torch.manual_seed(0)
    cnn = build_cnn(3, 3, (4,), (3, 3), bias=False)
    net = ThicknessInputCNN(cnn, 2, floor=-5.0).eval()
    x = torch.randn(2, 3, 9, 9)
    land = x.clone()
    land[:, 2, :, :2] = -7.0  # the normalised zero thickness of a west coast
    u_only = x.clone()
    u_only[:, 2, :, :2] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(net(land), cnn(u_only))
        assert not torch.equal(net(land), cnn(land))
        bad = land.clone()
        bad[0, 0, 4, 4] = bad[1, 2, 4, 4] = float("nan")
        out = net(bad)
    assert torch.isnan(out[0]).any() and torch.isnan(out[1]).any()
    with pytest.raises(ValueError, match="channel 3"):
        ThicknessInputCNN(cnn, 3, -5.0)


def _smooth(x: np.ndarray, passes: int = 3) -> np.ndarray:
    for _ in range(passes):
        x = (x + sum(np.roll(x, s, a) for s in (1, -1) for a in (-1, -2))) / 5.0
    return x


def _laplacian(f: np.ndarray) -> np.ndarray:
    """5-point Laplacian (grid units) of ``(..., ny, nx)``, zero beyond the edges."""
    p = np.pad(f, [(0, 0)] * (f.ndim - 2) + [(1, 1), (1, 1)])
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4.0 * f


def _write_synthetic(out: Path, nt: int = 32, nz: int = 2, n: int = 16, seed: int = 0) -> Path:
    """A ``make_data``-style dataset (index and one chunk) of random smooth ``u, v`` and
    thickness anomalies ``h'`` (``h = 500 m + h'`` in the ocean, 0 on the rim), with
    ``su = c_u lap(u)``, ``sv = c_u lap(v)``, ``sh = c_h lap(h')``: ``sh`` depends on ``h``
    alone, which is independent of ``u, v``."""
    from mlbridge_models.subgrid.dataset import _chunk_dataset

    from bridge.registry.store import sha256_file

    rng = np.random.default_rng(seed)
    tm, um, vm = t_mask(n, n), u_mask(n, n), v_mask(n, n)

    def field(rms: float) -> np.ndarray:
        f = _smooth(rng.standard_normal((nt, nz, n, n)))
        return rms * f / f.std()

    u, v, ha = field(0.1) * um, field(0.1) * vm, field(20.0) * tm
    h = (H_REST + ha) * tm
    su, sv = 1e-5 * _laplacian(u) * um, 1e-5 * _laplacian(v) * vm
    sh = 5e-7 * _laplacian(ha) * tm
    grid = {"nx": n, "ny": n, "dx": 32000.0, "dy": 32000.0}
    attrs = {"coarse_rn_dx": 32000.0, "coarse_rn_dy": 32000.0, "forcing_definition": "synthetic"}
    time = np.arange(nt) * 432000.0
    ds = _chunk_dataset(SimpleNamespace(u=u, v=v, h=h), su, sv, time, {}, grid, attrs, sh)
    out.mkdir(parents=True)
    ds.to_netcdf(out / "chunk_0000.nc")
    chunk = {
        "file": "chunk_0000.nc",
        "records": [0, nt],
        "sha256": sha256_file(out / "chunk_0000.nc"),
    }
    (out / "index.json").write_text(
        json.dumps({"version": 1, "settings": {}, "chunks": {"0": chunk}})
    )
    return out


def _tiny_settings(inputs: tuple[str, ...]) -> object:
    from mlbridge_models.subgrid.train import TrainSettings

    return TrainSettings(
        hidden=(8,),
        kernel_sizes=(3, 3),
        epochs=15,
        lr=1e-2,
        batch=8,
        val_frac=0.25,
        inputs=inputs,
        outputs=("su", "sv", "sh"),
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The synthetic dataset and two networks trained on it: one of ``u, v, h``, one blind to
    ``h`` (inputs ``u, v``), both returning ``su, sv, sh``."""
    from mlbridge_models.subgrid.train import train

    root = tmp_path_factory.mktemp("synthetic")
    data = _write_synthetic(root / "data")
    out = {"data": data}
    for key, inputs in (("h", ("u", "v", "h")), ("blind", ("u", "v"))):
        out[key] = train([data], root / key, _tiny_settings(inputs), progress=False)
    return out


def test_sh_is_learnt_from_h_and_not_without_it(synthetic: dict[str, object]) -> None:
    import torch
    import xarray as xr
    from mlbridge_models.cnn import ThicknessInputCNN, build_cnn
    from mlbridge_models.subgrid.train import LAND_FRACTION

    with_h, blind = synthetic["h"], synthetic["blind"]
    print("R2 with h", with_h.r2_cnn, "blind to h", blind.r2_cnn)
    assert with_h.r2_cnn["sh"] > 0.7, with_h.r2_cnn
    assert min(with_h.r2_cnn["su"], with_h.r2_cnn["sv"]) > 0.7, with_h.r2_cnn
    assert blind.r2_cnn["sh"] < 0.1, blind.r2_cnn  # u, v say nothing of h
    assert min(blind.r2_cnn["su"], blind.r2_cnn["sv"]) > 0.7, blind.r2_cnn

    # the untrained network (same seed and shape) on the same validation snapshots
    manifest = load_manifest(with_h.out / "manifest.toml")
    norm = {e.name: e.norm for e in (*manifest.inputs, *manifest.outputs)}
    with xr.open_dataset(synthetic["data"] / "chunk_0000.nc") as ds:
        val = {k: ds[k].values[24:] for k in ("u", "v", "h", "sh")}  # the validation quarter
        tmask = ds["tmask"].values.astype(bool)
    halo = manifest.halo
    pad = ((0, 0), (0, 0), (halo, halo), (halo, halo))
    x = np.stack(
        [(np.pad(val[k], pad) - norm[k].offset) / norm[k].scale for k in ("u", "v", "h")], axis=2
    )
    torch.manual_seed(0)
    floor = (LAND_FRACTION - 1.0) * norm["h"].offset / norm["h"].scale
    net = ThicknessInputCNN(build_cnn(3, 3, (8,), (3, 3), bias=False), 2, floor).eval()
    with torch.no_grad():
        y = net(torch.from_numpy(x.reshape(-1, *x.shape[2:]).astype(np.float32))).numpy()
    pred = y[:, 2].reshape(val["sh"].shape) * norm["sh"].scale
    ocean = np.broadcast_to(tmask, val["sh"].shape)
    err = np.sum((pred - val["sh"])[ocean] ** 2)
    r2_untrained = 1.0 - err / np.sum((val["sh"][ocean] - val["sh"][ocean].mean()) ** 2)
    assert r2_untrained < 0.1

    record = json.loads((with_h.out / "training.json").read_text())
    assert set(record["r2_cnn"]) == {"su", "sv", "sh"}
    assert record["settings"]["name"] == "subgrid-cnn-h" and record["h_ref"] > 0
    assert len(record["h_mean_per_layer"]) == 2 and record["sh_scale"] > 0


def test_exported_closure_is_local_and_returns_sh_on_t_points(
    synthetic: dict[str, object],
) -> None:
    import xarray as xr

    from bridge.registry.runtime import load_closure

    manifest = load_manifest(synthetic["h"].out / "manifest.toml")
    closure = load_closure(manifest, levels_per_call=None)
    halo = manifest.halo
    with xr.open_dataset(synthetic["data"] / "chunk_0000.nc") as ds:
        fields = {k: ds[k].values[-1] for k in ("u", "v", "h")}
        tmask = ds["tmask"].values.astype(bool)
    pad = ((0, 0), (halo, halo), (halo, halo))
    full_in = {k: np.pad(f, pad) for k, f in fields.items()}  # zero beyond the edge, as online
    full = closure(full_in)
    nz, ny, nx = fields["u"].shape
    for name in ("su", "sv", "sh"):
        assert full[name].shape == (nz, ny, nx) and full[name].dtype == np.float64
    assert np.abs(full["sh"][:, tmask]).max() > 0
    # a block of rows 3..9, columns 5..12 (wall included on the east) with its halo
    j0, j1, i0, i1 = 3, 10, 5, nx
    block = {k: f[:, j0 : j1 + 2 * halo, i0 : i1 + 2 * halo] for k, f in full_in.items()}
    part = closure(block)
    for name in ("su", "sv", "sh"):
        np.testing.assert_allclose(
            part[name], full[name][:, j0:j1, i0:i1], rtol=1e-5, atol=1e-6 * np.abs(full[name]).max()
        )
    single = closure({k: f.astype(np.float32) for k, f in full_in.items()})
    assert single["sh"].dtype == np.float32
    # an ocean at rest (u = v = 0, h = the reference, 0 on land) gets exactly no forcing
    h_ref = manifest.inputs[2].norm.offset
    h_rest = np.broadcast_to(np.pad(h_ref * tmask, halo), full_in["h"].shape).copy()
    rest = {"u": np.zeros_like(full_in["u"]), "v": np.zeros_like(full_in["v"]), "h": h_rest}
    assert not any(np.any(out) for out in closure(rest).values())


def test_manifest_round_trip_and_dataset_check(
    synthetic: dict[str, object], tmp_path: Path
) -> None:
    import xarray as xr
    from mlbridge_models.subgrid.dataset import DatasetError, check_dataset, open_dataset
    from mlbridge_models.subgrid.train import TrainSettings, manifest_text

    from bridge.cli import main as cli_main
    from bridge.registry.manifest import manifest_to_toml, parse_manifest
    from bridge.registry.store import Registry

    art = synthetic["h"].out
    manifest = load_manifest(art / "manifest.toml")
    assert manifest.ref == "subgrid-cnn-h@1" and manifest.artifact == "subgrid_cnn_h.pt2"
    fields = {e.name: (e.grid, e.units) for e in (*manifest.inputs, *manifest.outputs)}
    assert fields == {
        "u": ("U", "m s-1"),
        "v": ("V", "m s-1"),
        "h": ("T", "m"),
        "su": ("U", "m s-2"),
        "sv": ("V", "m s-2"),
        "sh": ("T", "m s-1"),
    }
    h_in, sh_out = manifest.inputs[2], manifest.outputs[2]
    assert h_in.norm.offset == pytest.approx(H_REST, rel=1e-2) and 0 < h_in.norm.scale < 100
    assert sh_out.clip > 0 and sh_out.norm.scale > 0
    assert {"r2_sh_validation", "r2_su_validation"} <= set(manifest.provenance.metrics)
    assert parse_manifest(manifest_to_toml(manifest), source=manifest.source) == manifest

    home = ["--home", str(tmp_path / "reg")]
    assert cli_main(["register", "--manifest", str(art / "manifest.toml"), *home]) == 0
    loaded = Registry(tmp_path / "reg").load("subgrid-cnn-h@1")
    assert [f.name for f in loaded.spec.outputs] == ["su", "sv", "sh"]

    ds = open_dataset(synthetic["data"])
    check_dataset(ds, manifest, grid=(16, 16))
    with pytest.raises(DatasetError, match="manifest output 'sh': no such variable"):
        check_dataset(ds.drop_vars("sh"), manifest)
    bad = ds.copy()
    bad["h"] = bad["h"].assign_attrs(units="cm")
    with pytest.raises(DatasetError, match="h: units 'cm' in the dataset, 'm' in the manifest"):
        check_dataset(bad, manifest)
    assert isinstance(ds, xr.Dataset)

    # the defaults are unchanged: the committed subgrid-cnn@2's fields and names
    committed = load_manifest(REPO / "models" / "artifacts" / "subgrid_cnn" / "manifest.toml")
    again = parse_manifest(
        manifest_text(
            TrainSettings(),
            u_scale=committed.inputs[0].norm.scale,
            s_scale=committed.outputs[0].norm.scale,
            clip=committed.outputs[0].clip,
            provenance={},
            metrics={},
            halo=committed.halo,
        )
    )
    for key in ("ref", "artifact", "inputs", "outputs", "description", "halo"):
        assert getattr(again, key) == getattr(committed, key), key
    for inputs, outputs in ((("h", "u", "v"), ("su", "sv")), (("u", "v"), ("sh",))):
        with pytest.raises(ValueError, match="expected"):
            TrainSettings(inputs=inputs, outputs=outputs)


# ------------------------------------------------------------------ examples/13_subgrid_cnn_h


@pytest.fixture(scope="module")
def tiny_h_closure(toy_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``subgrid-cnn-h`` trained on a tiny dataset: a fine 66 x 66 basin (8 km, with a
    bump of the top interface) for 16 steps, 8 snapshots coarse-grained to 18 x 18 by
    ``make_data --inviscid --subtract-affine``; returns the artifact folder."""
    from mlbridge_models.subgrid.make_data import main as make_data
    from mlbridge_models.subgrid.train import main as train_main

    from bridge.config.namelist import write_patched_cfg

    root = tmp_path_factory.mktemp("tiny_h")
    fine = root / "fine"
    fine.mkdir()
    (fine / "namelist_ref").write_bytes(NAMELIST_REF.read_bytes())
    fine_cfg = write_patched_cfg(
        REPO / "examples" / "02_fine" / "namelist_cfg",
        {
            "namusr_def": {"nn_nx": 66, "nn_ny": 66, "rn_bump": 20.0},
            "namrun": {
                "cn_exp": "FINE",
                "nn_it000": 1,
                "nn_itend": 16,
                "nn_write": 2,
                "nn_stock": 0,
            },
        },
        fine / "namelist_cfg",
    )
    check_ok(run_toy(toy_exe, fine, 2), fine)
    coarse_cfg = write_patched_cfg(
        REPO / "examples" / "01_coarse" / "namelist_cfg",
        {"namusr_def": {"nn_nx": 18, "nn_ny": 18}},
        root / "coarse_cfg",
    )
    data = root / "data"
    args = [
        str(fine / "FINE_grid.nc"),
        "--fine-cfg",
        str(fine_cfg),
        "--coarse-cfg",
        str(coarse_cfg),
    ]
    args += [
        "--out",
        str(data),
        "--chunk",
        "8",
        "--exe",
        str(toy_exe),
        "--inviscid",
        "--subtract-affine",
    ]
    assert make_data(args) == 0
    art = root / "art"
    train_args = [str(data), "--out", str(art), "--coarse-cfg", str(coarse_cfg)]
    train_args += ["--inputs", "u", "v", "h", "--outputs", "su", "sv", "sh"]
    train_args += ["--hidden", "4,4", "--kernels", "3,3,3", "--epochs", "3", "--val-frac", "0.25"]
    assert train_main(train_args) == 0
    return art


def test_subgrid_cnn_h_example_runs_coupled(
    fortran_build: Path, toy_exe: Path, tiny_h_closure: Path, tmp_path: Path
) -> None:
    """``examples/13_subgrid_cnn_h`` with the tiny closure, registered as its comment says, 120
    steps from a bump: finite, ``h_tend`` nonzero, and the flow differs from the model alone."""
    import xarray as xr

    from bridge.config.namelist import write_patched_cfg
    from bridge.registry.store import Registry

    record = json.loads((tiny_h_closure / "training.json").read_text())
    print("tiny make_data closure: R2", record["r2_cnn"], f"{record['seconds']:.1f} s")
    assert set(record["r2_cnn"]) == {"su", "sv", "sh"}

    folder = tmp_path / "13_subgrid_cnn_h"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("registry", "runs"))
    patch = {"namrun": {"nn_write": 60}, "namusr_def": {"rn_bump": 20.0}}
    write_patched_cfg(EXAMPLE / "namelist_cfg", patch, folder / "namelist_cfg")
    Registry(folder / "registry").register(None, tiny_h_closure / "manifest.toml")
    result, tend = run_with_tendencies(
        folder, fortran_build, tmp_path / "r", ("u_tend", "h_tend"), steps=120
    )
    for name, values in tend.items():
        assert np.isfinite(values).all() and np.abs(values).max() > 0.0, name
    with xr.open_dataset(next(result.run_dir.glob("*_grid.nc")), decode_times=False) as ds:
        coupled = {k: ds[k].values[-1].copy() for k in ("u", "h")}
    assert all(np.isfinite(f).all() for f in coupled.values())

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "namelist_ref").write_bytes(NAMELIST_REF.read_bytes())
    write_patched_cfg(
        folder / "namelist_cfg",
        {"namrun": {"nn_itend": 120}, "nammlb": {"ln_mlb": False}},
        alone / "namelist_cfg",
    )
    check_ok(run_toy(toy_exe, alone, 1), alone)
    with xr.open_dataset(next(alone.glob("*_grid.nc")), decode_times=False) as ds:
        assert ds.u.shape[0] == 2  # steps 60 and 120, as the coupled run
        for k in ("u", "h"):
            assert np.abs(coupled[k] - ds[k].values[-1]).max() > 0.0, k
