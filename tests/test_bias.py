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
    """The whole twin on a 10 x 10 basin: truth, nudged, training, coupled evaluation."""
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
    for key in ("free", "corrected"):
        values = saved["rmse"][key]
        assert set(values) == {"u", "v", "interface_1", "interface_2"}
        assert all(np.isfinite(v) for v in values.values()), values
    assert saved["rmse"]["free"]["u"] > 0  # the wind error is there to correct
    assert (out / "evaluation.png").stat().st_size > 1000
