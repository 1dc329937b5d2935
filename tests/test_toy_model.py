"""The NEMO-like toy model under real mpirun: decompositions, restarts, conservation, errors.

Every test runs ``toy_nemo`` in its own directory with the toy's ``namelist_ref`` and the coarse
example's ``namelist_cfg`` patched for the case (small basins and few steps wherever the
property does not need the full configuration).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from toy_helpers import SMALL_BASIN, check_ok, make_run_dir, merge, read_nc, run_toy

SECONDS_PER_YEAR = 365 * 86400


def _short(steps: int, write: int, exp: str = "TOY", stock: int = 0) -> dict:
    """&namrun of a short run from step 1."""
    run = {"cn_exp": exp, "nn_it000": 1, "nn_itend": steps, "nn_write": write, "nn_stock": stock}
    return {"namrun": run}


@pytest.fixture(scope="module")
def reference_1x1(toy_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Outputs of the small basin on one rank: the reference for every decomposition."""
    run_dir = make_run_dir(
        tmp_path_factory.mktemp("decomp_1x1"),
        merge(SMALL_BASIN, _short(60, 20, stock=60), {"nammpp": {"jpni": 1, "jpnj": 1}}),
    )
    check_ok(run_toy(toy_exe, run_dir, 1), run_dir)
    return {
        "grid": read_nc(run_dir / "TOY_grid.nc"),
        "restart": read_nc(run_dir / "TOY_00000060_restart.nc", ("u", "v", "h", "ua_b1", "ha_b2")),
    }


@pytest.mark.parametrize("jpni,jpnj", [(2, 1), (1, 2), (2, 2), (3, 1)])
def test_decompositions_bit_identical(
    toy_exe: Path, tmp_path: Path, reference_1x1: dict, jpni: int, jpnj: int
) -> None:
    patch = merge(SMALL_BASIN, _short(60, 20, stock=60), {"nammpp": {"jpni": jpni, "jpnj": jpnj}})
    run_dir = make_run_dir(tmp_path, patch)
    check_ok(run_toy(toy_exe, run_dir, jpni * jpnj), run_dir)
    grid = read_nc(run_dir / "TOY_grid.nc")
    assert np.abs(grid["u"]).max() > 0.0, "nothing moved: the test would prove nothing"
    for name, ref in reference_1x1["grid"].items():
        np.testing.assert_array_equal(grid[name], ref, err_msg=f"{name} on {jpni}x{jpnj}")
    restart = read_nc(run_dir / "TOY_00000060_restart.nc", ("u", "v", "h", "ua_b1", "ha_b2"))
    for name, ref in reference_1x1["restart"].items():
        np.testing.assert_array_equal(
            restart[name], ref, err_msg=f"restart {name} on {jpni}x{jpnj}"
        )


def test_automatic_decomposition_is_near_square(toy_exe: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, merge(SMALL_BASIN, _short(2, 0)))
    check_ok(run_toy(toy_exe, run_dir, 4), run_dir)
    assert "jpni x jpnj =     2 x     2" in (run_dir / "ocean.output").read_text()


def test_restart_bit_for_bit(toy_exe: Path, tmp_path: Path) -> None:
    """2N steps == N steps + restart + N steps, read back on another decomposition."""
    n = 25
    straight = make_run_dir(
        tmp_path / "straight", merge(SMALL_BASIN, _short(2 * n, n, stock=2 * n))
    )
    check_ok(run_toy(toy_exe, straight, 1), straight)

    first = make_run_dir(tmp_path / "first", merge(SMALL_BASIN, _short(n, n, stock=n)))
    check_ok(run_toy(toy_exe, first, 1), first)
    second = make_run_dir(
        tmp_path / "second",
        merge(
            SMALL_BASIN,
            _short(2 * n, n, stock=2 * n),
            {
                "namrun": {
                    "nn_it000": n + 1,
                    "ln_rstart": True,
                    "cn_ocerst_in": str(first / f"TOY_{n:08d}_restart"),
                }
            },
        ),
    )
    check_ok(run_toy(toy_exe, second, 2), second)

    a = read_nc(straight / "TOY_grid.nc")
    b = read_nc(second / "TOY_grid.nc")
    assert np.abs(a["u"][-1]).max() > 0.0
    for name in ("u", "v", "h", "ke"):
        np.testing.assert_array_equal(b[name][-1], a[name][-1], err_msg=name)
    names = ("u", "v", "h", "ua_b1", "va_b1", "ha_b1", "ua_b2", "va_b2", "ha_b2")
    ra = read_nc(straight / f"TOY_{2 * n:08d}_restart.nc", names)
    rb = read_nc(second / f"TOY_{2 * n:08d}_restart.nc", names)
    for name in names:
        np.testing.assert_array_equal(rb[name], ra[name], err_msg=f"restart {name}")


def test_restart_refuses_wrong_first_step(toy_exe: Path, tmp_path: Path) -> None:
    first = make_run_dir(tmp_path / "first", merge(SMALL_BASIN, _short(4, 0, stock=4)))
    check_ok(run_toy(toy_exe, first, 1), first)
    second = make_run_dir(
        tmp_path / "second",
        merge(
            SMALL_BASIN,
            _short(8, 0),
            {
                "namrun": {
                    "nn_it000": 3,
                    "ln_rstart": True,
                    "cn_ocerst_in": str(first / "TOY_00000004_restart.nc"),
                }
            },
        ),
    )
    proc = run_toy(toy_exe, second, 1)
    assert proc.returncode != 0
    assert "nn_it000 = 3" in proc.stderr and "must be 5" in proc.stderr


@pytest.mark.parametrize("aeiv", [0.0, 5.0e3], ids=["adiabatic", "thickness-diffusion"])
def test_volume_conserved_without_forcing(toy_exe: Path, tmp_path: Path, aeiv: float) -> None:
    """No wind, drag or viscosity: an initial bump adjusts, the layer volumes stay to round-off.

    With the thickness diffusion on, each layer's volume is still conserved: its eddy-induced
    flux is a divergence with no flux through the walls.
    """
    patch = merge(
        SMALL_BASIN,
        _short(300, 10),
        {
            "namusr_def": {
                "nn_nx": 40,
                "nn_ny": 34,
                "rn_tau0": 0.0,
                "rn_rfr": 0.0,
                "rn_ahm": 0.0,
                "rn_bhm": 0.0,
                "rn_shlat": 0.0,
                "rn_bump": 100.0,
                "rn_aeiv": aeiv,
            }
        },
    )
    run_dir = make_run_dir(tmp_path, patch)
    check_ok(run_toy(toy_exe, run_dir, 2), run_dir)
    out = read_nc(run_dir / "TOY_grid.nc")
    volume = out["h"].sum(axis=(2, 3))  # (time, layer); dx dy uniform
    assert np.abs(out["u"]).max() > 1e-3, "the bump did not move anything"
    drift = np.abs(volume - volume[0]) / volume[0]
    assert drift.max() < 1e-12, f"relative volume drift {drift.max():.3e}"


def test_thickness_diffusion_flattens_a_bump(toy_exe: Path, tmp_path: Path) -> None:
    """rn_aeiv removes interface-height variance (available potential energy)."""
    base = {
        "namusr_def": {
            "nn_nx": 30,
            "nn_ny": 30,
            "rn_tau0": 0.0,
            "rn_bump": 100.0,
        }
    }
    variance = {}
    for aeiv in (0.0, 2.0e4):
        patch = merge(_short(200, 200), base, {"namusr_def": {"rn_aeiv": aeiv}})
        run_dir = make_run_dir(tmp_path / f"aeiv_{aeiv}", patch)
        check_ok(run_toy(toy_exe, run_dir, 1), run_dir)
        h = read_nc(run_dir / "TOY_grid.nc")["h"][-1, 0, 1:-1, 1:-1]
        variance[aeiv] = float(np.var(h))
    assert variance[2.0e4] < 0.5 * variance[0.0], variance


@pytest.mark.slow
def test_coarse_five_years_bounded(toy_exe: Path, tmp_path: Path) -> None:
    """The coarse configuration as shipped: 5 model years, finite and bounded kinetic energy."""
    dt = 1440.0
    steps = int(5 * SECONDS_PER_YEAR / dt)
    run_dir = make_run_dir(tmp_path, _short(steps, 1800))
    proc = run_toy(toy_exe, run_dir, 1, timeout=180.0)
    check_ok(proc, run_dir)
    out = read_nc(run_dir / "TOY_grid.nc", ("u", "v", "h", "ke"))
    assert all(np.isfinite(a).all() for a in out.values())
    ke = out["ke"].sum(axis=1)
    assert ke[-1] > 0.0
    # bounded: spun up, not exploding (coarse equilibrium is a few 1e16 J)
    assert ke.max() < 2.0e17, f"kinetic energy {ke.max():.3e} J"
    assert np.abs(out["u"]).max() < 3.0
    assert out["h"][:, :, 1:-1, 1:-1].min() > 0.0


def _expect_refusal(proc, run_dir: Path, *needles: str) -> None:  # noqa: ANN001
    assert proc.returncode != 0, "the model accepted a wrong namelist"
    assert " E R R O R" in proc.stderr
    for needle in needles:
        assert needle.lower() in proc.stderr.lower(), f"{needle!r} not in:\n{proc.stderr[-2000:]}"
    log = (run_dir / "ocean.output").read_text()
    assert " E R R O R" in log
    assert "nemo_init: initialisation done" not in log, "refused only after the first step"


@pytest.mark.parametrize(
    "patch,ranks,needles",
    [
        ({"namdom": {"rn_dtt": 1440.0}}, 1, ("namdom", "rn_dtt")),
        ({"namrun": {"nn_itnd": 10}}, 1, ("namrun", "nn_itnd")),
        ({"namdom": {"rn_Dt": -1440.0}}, 1, ("rn_Dt", "-1440")),
        ({"namdom": {"rn_Dt": 0.0}}, 1, ("rn_Dt", "= 0")),
        ({"nammpp": {"jpni": 2, "jpnj": 2}}, 2, ("jpni*jpnj", "2*2 = 4", "ranks 2")),
        (
            {"namusr_def": {"nn_nx": 4}, "nammpp": {"jpni": 3, "jpnj": 1}},
            3,
            ("jpni = 3", "columns"),
        ),
        ({"namusr_def": {"nn_nz": 101}}, 1, ("nn_nz", "101")),
        ({"namusr_def": {"nn_nz": 0}}, 1, ("nn_nz", "= 0")),
        ({"namusr_def": {"rn_aeiv": -1.0}}, 1, ("rn_aeiv", "must be >= 0")),
    ],
    ids=[
        "misspelled-rn_Dtt",
        "misspelled-nn_itnd",
        "negative-dt",
        "zero-dt",
        "jpni*jpnj",
        "ranks>columns",
        "nz>100",
        "nz=0",
        "negative-aeiv",
    ],
)
def test_bad_namelist_refused(
    toy_exe: Path, tmp_path: Path, patch: dict, ranks: int, needles: tuple[str, ...]
) -> None:
    run_dir = make_run_dir(tmp_path, merge(_short(5, 0), patch))
    _expect_refusal(run_toy(toy_exe, run_dir, ranks, timeout=60.0), run_dir, *needles)


def test_unwritable_output_fails(toy_exe: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, merge(SMALL_BASIN, _short(5, 1, exp="no_such_dir/TOY")))
    proc = run_toy(toy_exe, run_dir, 1, timeout=60.0)
    assert proc.returncode != 0
    assert " E R R O R" in proc.stderr and "no_such_dir/TOY_grid.nc" in proc.stderr


def test_unwritable_restart_fails(toy_exe: Path, tmp_path: Path) -> None:
    patch = merge(
        SMALL_BASIN, _short(6, 0, stock=3), {"namrun": {"cn_ocerst_outdir": "no/such/dir"}}
    )
    run_dir = make_run_dir(tmp_path, patch)
    proc = run_toy(toy_exe, run_dir, 2, timeout=60.0)
    assert proc.returncode != 0
    assert " E R R O R" in proc.stderr and "no/such/dir/TOY_00000003_restart.nc" in proc.stderr
    assert (run_dir / "time.step").read_text().split() != ["6"], "the run went on after the error"


def test_output_is_cf_and_opens_in_xarray(toy_exe: Path, tmp_path: Path) -> None:
    import xarray as xr

    run_dir = make_run_dir(tmp_path, merge(SMALL_BASIN, _short(20, 10)))
    check_ok(run_toy(toy_exe, run_dir, 1), run_dir)
    with xr.open_dataset(run_dir / "TOY_grid.nc") as ds:
        assert ds["u"].dims == ("time_counter", "z", "y", "x")
        assert ds["u"].attrs["standard_name"] == "sea_water_x_velocity"
        assert ds["h"].attrs["units"] == "m"
        assert ds.sizes["time_counter"] == 2
        assert ds["time_counter"].encoding["units"].startswith("seconds since")
    assert (run_dir / "time.step").read_text().split() == ["20"]


@pytest.mark.parametrize("config,steps", [("01_coarse", 60), ("02_fine", 8)])
def test_example_runs_with_mlbridge_run(
    toy_exe: Path, tmp_path: Path, config: str, steps: int
) -> None:
    """``examples/<config>/coupling.toml`` runs the model alone through the launcher."""
    import subprocess
    import sys

    from toy_helpers import REPO

    toml = REPO / "examples" / config / "coupling.toml"
    cmd = [sys.executable, "-m", "bridge.cli", "run", str(toml), "--steps", str(steps)]
    cmd += ["--workdir", str(tmp_path), "--build-dir", str(toy_exe.parents[1]), "-q"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    logs = list(tmp_path.glob("*/ocean.output"))
    assert len(logs) == 1 and "normal end of the run" in logs[0].read_text()
