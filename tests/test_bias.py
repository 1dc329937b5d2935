"""Bias-correction twin: the toy's nudging (&namnudge), an end-to-end of mlbridge_models.bias."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from toy_helpers import SMALL_BASIN, check_ok, make_run_dir, merge, read_nc, run_toy

STEPS = 12
# truth: the small basin with a stronger wind, written every step
TRUTH = merge(
    SMALL_BASIN,
    {
        "namrun": {"cn_exp": "TRU", "nn_it000": 1, "nn_itend": STEPS, "nn_write": 1},
        "namusr_def": {"rn_tau0": 0.065},
    },
)
MODEL = merge(
    SMALL_BASIN, {"namrun": {"cn_exp": "MOD", "nn_it000": 1, "nn_itend": STEPS, "nn_write": 3}}
)


def _nudged(truth_file: Path, tau: float) -> dict:
    return merge(
        MODEL,
        {"namnudge": {"ln_nudge": True, "cn_nudge_in": str(truth_file), "rn_nudge_tau": tau}},
    )


@pytest.fixture(scope="module")
def truth(toy_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A truth run of 12 steps with every step written, plus a kt = 0 record (the rest state)."""
    run = make_run_dir(tmp_path_factory.mktemp("truth"), TRUTH)
    check_ok(run_toy(toy_exe, run), run)
    return run / "TRU_grid.nc"


def test_nudging_off_is_bit_identical(toy_exe: Path, tmp_path: Path) -> None:
    """ln_nudge = .false. given explicitly == the block left out: same numbers, no nudge_*."""
    a = make_run_dir(tmp_path / "a", MODEL)
    b = make_run_dir(
        tmp_path / "b",
        merge(MODEL, {"namnudge": {"ln_nudge": False, "cn_nudge_in": "missing.nc"}}),
    )
    for run in (a, b):
        check_ok(run_toy(toy_exe, run), run)
    fa, fb = read_nc(a / "MOD_grid.nc"), read_nc(b / "MOD_grid.nc")
    for name in ("u", "v", "h", "ke"):
        np.testing.assert_array_equal(fa[name], fb[name])
    with netCDF4.Dataset(a / "MOD_grid.nc") as nc:
        assert "nudge_u" not in nc.variables


def test_tau_dt_reproduces_truth(toy_exe: Path, truth: Path, tmp_path: Path) -> None:
    """rn_nudge_tau = rn_Dt: the state at every record time is the truth record (round-off)."""
    run = make_run_dir(tmp_path / "n", _nudged(truth, 1440.0))
    # steps 1..12 are all in the truth's records
    check_ok(run_toy(toy_exe, run), run)
    out, ref = read_nc(run / "MOD_grid.nc"), read_nc(truth)
    with netCDF4.Dataset(run / "MOD_grid.nc") as nc, netCDF4.Dataset(truth) as tn:
        kt, tkt = list(nc["kt"][:]), list(tn["kt"][:])
        assert nc["nudge_u"].units == "m s-2" and nc["nudge_h"].units == "m s-1"
        nudge_u = np.asarray(nc["nudge_u"][:])
    assert kt == [3, 6, 9, 12]
    for name in ("u", "v", "h"):
        scale = np.max(np.abs(ref[name])) + 1e-30
        for rec, k in enumerate(kt):
            err = np.max(np.abs(out[name][rec] - ref[name][tkt.index(k)]))
            assert err <= 1e-12 * scale, (name, k, err)
    # the model error is the wind: the nudging corrects u (h follows u exactly here)
    assert np.all(np.isfinite(nudge_u)) and np.max(np.abs(nudge_u)) > 0


def test_interpolation_and_two_ranks(toy_exe: Path, truth: Path, tmp_path: Path) -> None:
    """Every other truth record only (interpolated in between); 2 ranks == 1 rank bit for bit."""
    sparse = tmp_path / "sparse_grid.nc"
    with netCDF4.Dataset(truth) as src, netCDF4.Dataset(sparse, "w") as dst:
        for name, dim in src.dimensions.items():
            dst.createDimension(name, None if dim.isunlimited() else len(dim))
        keep = np.arange(1, len(src.dimensions["time_counter"]), 2)  # kt = 2, 4, ..., 12
        for name in ("kt", "u", "v", "h"):
            var = src[name]
            out = dst.createVariable(name, var.dtype, var.dimensions)
            out[:] = var[keep]
    patch = merge(_nudged(sparse, 5 * 1440.0), {"namrun": {"nn_it000": 2}})
    one = make_run_dir(tmp_path / "r1", patch)
    two = make_run_dir(tmp_path / "r2", patch)
    check_ok(run_toy(toy_exe, one, ranks=1), one)
    check_ok(run_toy(toy_exe, two, ranks=2), two)
    with netCDF4.Dataset(one / "MOD_grid.nc") as a, netCDF4.Dataset(two / "MOD_grid.nc") as b:
        for name in ("u", "v", "h", "nudge_u", "nudge_v", "nudge_h"):
            np.testing.assert_array_equal(np.asarray(a[name][:]), np.asarray(b[name][:]))
        assert np.max(np.abs(np.asarray(a["nudge_u"][:]))) > 0


def test_wind_mode_off_is_bit_identical_on_changes_u(toy_exe: Path, tmp_path: Path) -> None:
    """rn_tau1 = 0 given explicitly == left out, bit for bit; rn_tau1 /= 0 changes the flow."""
    runs = {}
    for name, tau1 in (("absent", None), ("zero", 0.0), ("on", 0.02)):
        patch = MODEL if tau1 is None else merge(MODEL, {"namusr_def": {"rn_tau1": tau1}})
        runs[name] = make_run_dir(tmp_path / name, patch)
        check_ok(run_toy(toy_exe, runs[name]), runs[name])
    out = {k: read_nc(run / "MOD_grid.nc") for k, run in runs.items()}
    for name in ("u", "v", "h"):
        np.testing.assert_array_equal(out["absent"][name], out["zero"][name])
    assert np.max(np.abs(out["on"]["u"] - out["absent"]["u"])) > 0


def _forcing_file(path: Path, shape: tuple[int, int, int], value: float) -> Path:
    """A ``ln_nudge_frc`` file: one record of nudge_u = value, nudge_v = nudge_h = 0."""
    nz, ny, nx = shape
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in (("x", nx), ("y", ny), ("z", nz)):
            nc.createDimension(name, size)
        nc.createDimension("time_counter", None)
        nc.createVariable("kt", "i4", ("time_counter",))[0] = 0
        for name in ("nudge_u", "nudge_v", "nudge_h"):
            var = nc.createVariable(name, "f8", ("time_counter", "z", "y", "x"))
            var[0] = np.full(shape, value if name == "nudge_u" else 0.0)
    return path


def test_constant_forcing(toy_exe: Path, tmp_path: Path) -> None:
    """ln_nudge_frc: a zero forcing == no forcing bit for bit; a forcing F is written back as
    nudge_u = F on the U ocean points and moves the flow; 2 ranks == 1 rank."""
    plain = make_run_dir(tmp_path / "plain", MODEL)
    check_ok(run_toy(toy_exe, plain), plain)
    ref = read_nc(plain / "MOD_grid.nc")
    shape = ref["u"].shape[1:]
    runs = {}
    for name, value, ranks in (("zero", 0.0, 1), ("one", 1e-6, 1), ("two", 1e-6, 2)):
        frc = _forcing_file(tmp_path / f"{name}.nc", shape, value)
        patch = merge(
            MODEL,
            {"namnudge": {"ln_nudge": True, "ln_nudge_frc": True, "cn_nudge_in": str(frc)}},
        )
        runs[name] = make_run_dir(tmp_path / name, patch)
        check_ok(run_toy(toy_exe, runs[name], ranks=ranks), runs[name])
    zero, one, two = (read_nc(runs[k] / "MOD_grid.nc") for k in ("zero", "one", "two"))
    for name in ("u", "v", "h"):
        np.testing.assert_array_equal(zero[name], ref[name])
        np.testing.assert_array_equal(one[name], two[name])
    with netCDF4.Dataset(runs["one"] / "MOD_grid.nc") as nc:
        umask = np.asarray(nc["umask"][:]) != 0
        nudge_u = np.asarray(nc["nudge_u"][:])
    inner = np.zeros_like(umask)
    inner[1:-1, 1:-1] = umask[1:-1, 1:-1]
    np.testing.assert_allclose(nudge_u[:, :, inner], 1e-6, rtol=1e-12)
    assert np.all(nudge_u[:, :, ~inner] == 0)
    assert np.max(np.abs(one["u"] - ref["u"])) > 0


@pytest.mark.parametrize(
    "case, patch, message",
    [
        ("missing", {"cn_nudge_in": "no_such_grid.nc"}, "cannot open no_such_grid.nc"),
        ("outside", {}, "step kt = 13 is outside the records of"),
        ("grid", {}, "has 23 points in x where this run (&namusr_def) has 20"),
    ],
)
def test_refused(
    toy_exe: Path, truth: Path, tmp_path: Path, case: str, patch: dict, message: str
) -> None:
    """A missing file, a step beyond the last record, another grid: refused, named."""
    base = _nudged(truth, 1440.0)
    if case == "outside":
        base = merge(base, {"namrun": {"nn_itend": STEPS + 1}})
    if case == "grid":
        base = merge(base, {"namusr_def": {"nn_nx": 20}})
    run = make_run_dir(tmp_path / case, merge(base, {"namnudge": patch}))
    proc = run_toy(toy_exe, run)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert message in text, text[-2000:]
    if case == "outside":
        assert str(truth) in text.replace("\n", "") or truth.name in text


def test_pipeline_end_to_end(toy_exe: Path, tmp_path: Path) -> None:
    """The whole twin on a 10 x 10 basin: truth, nudged, training, the baselines and the
    coupled evaluation."""
    from mlbridge_models.bias.twin import TwinSettings, run_all

    s = TwinSettings(
        nx=10,
        ny=10,
        spinup_years=0,
        train_years=1,
        eval_years=1,
        sample_days=5.0,
        eval_days=5.0,
        every=60,
        epochs=3,
        hidden=(4,),
        kernel_sizes=(3, 3),
    )
    out = tmp_path / "bias"
    result = run_all(out, s)
    with netCDF4.Dataset(next((out / "nudged" / "year_001").glob("*/*_grid.nc"))) as nc:
        assert {"nudge_u", "nudge_v", "nudge_h"} <= set(nc.variables)
        assert np.max(np.abs(np.asarray(nc["nudge_u"][:]))) > 0
    manifest = (out / "model" / "manifest.toml").read_text()
    assert 'format = "export"' in manifest and "clip = " in manifest
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["rmse"] == result["evaluate"]["rmse"]
    runs = {"free", "mean_forcing", "wind_oracle", "corrected", "perfect_model"}
    assert set(saved["rmse"]) == runs
    for key, values in saved["rmse"].items():
        assert set(values) == {"u", "v", "interface_1", "interface_2"}, key
        assert all(np.isfinite(v) for v in values.values()), (key, values)
    assert saved["rmse"]["free"]["u"] > 0  # the wind and drag errors are there to correct
    # the baselines are other runs than the free one
    assert saved["rmse"]["wind_oracle"] != saved["rmse"]["free"]
    assert saved["rmse"]["mean_forcing"] != saved["rmse"]["free"]
    assert all(v > 0 for v in saved["mean_forcing_rms"].values())
    row = saved["summary"]["u"]
    assert row["best_baseline"] in ("mean_forcing", "wind_oracle")
    best = saved["rmse"][row["best_baseline"]]["u"]
    assert row["vs_best_baseline"] == pytest.approx(saved["rmse"]["corrected"]["u"] / best - 1)
    assert set(saved["per_year"]["corrected"]) == {"2"}  # the held-out year
    assert saved["per_year"]["free"]["2"] == saved["rmse"]["free"]  # one year: the same mean
    # one exchange every 60 steps of the held-out year (365 days of 60 steps)
    assert saved["corrected_exchanges"]["exchanges"] == 365
    assert (out / "evaluation.png").stat().st_size > 1000


def test_layer_aware_cnn_flags_and_columns(tmp_path: Path) -> None:
    """The top/bottom channels follow the level in the column; several columns at once (the
    training) == one column at a time (the bridge); the exported program (levels dynamic) gives
    the same numbers for another number of levels than its example's."""
    import torch
    from mlbridge_models.bias.network import LayerAwareCNN, with_layer_flags
    from mlbridge_models.export import export_closure

    x = torch.randn(6, 3, 9, 9)
    flagged = with_layer_flags(x, 3)
    assert flagged.shape == (6, 5, 9, 9)
    assert flagged[:, 3, 0, 0].tolist() == [1, 0, 0, 1, 0, 0]  # top
    assert flagged[:, 4, 0, 0].tolist() == [0, 0, 1, 0, 0, 1]  # bottom
    torch.manual_seed(0)
    net = LayerAwareCNN(3, 3, (4,), (3, 3)).eval()
    with torch.no_grad():
        both = net.columns(x, 3)
        one = torch.cat([net(x[:3]), net(x[3:])])
        exported = torch.export.load(export_closure(net, tmp_path / "b.pt2", in_channels=3, halo=2))
        three = exported.module()(x[:3])
        two = exported.module()(x[:2])
    assert both.shape == (6, 3, 5, 5)
    torch.testing.assert_close(both, one)
    torch.testing.assert_close(three, one[:3])
    torch.testing.assert_close(two, net(x[:2]))
    # the same fields on another level give another answer: the network knows the layer
    assert not torch.allclose(net(x[:3])[0], net(x[[1, 0, 2]])[1])
