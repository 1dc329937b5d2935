"""``mlbridge_models.subgrid.truth``: year-by-year runs from restarts, resumed after a stop.

A 10 x 10 coarse basin (a model year in about a second) under real mpirun.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from mlbridge_models.subgrid.truth import TruthError, grid_files, main, read_year, run_truth

from bridge.config.namelist import write_patched_cfg

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    folder = tmp_path / "cfg"
    folder.mkdir()
    write_patched_cfg(
        REPO / "examples" / "01_coarse" / "namelist_cfg",
        {"namusr_def": {"nn_nx": 10, "nn_ny": 10, "rn_bump": 5.0}},
        folder / "namelist_cfg",
    )
    text = (REPO / "examples" / "01_coarse" / "coupling.toml").read_text()
    (folder / "coupling.toml").write_text(text.replace("ranks = 2", "ranks = 1"))
    return folder / "coupling.toml"


def _h(path: Path) -> np.ndarray:
    with xr.open_dataset(path, decode_times=False) as ds:
        return ds.h.values.copy()


def test_years_chain_and_resume_bit_for_bit(toy_exe: Path, small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    records = run_truth(small, out, 3, write_days=73)
    assert [r.year for r in records] == [1, 2, 3]
    files = grid_files(out, 1, 3)
    with xr.open_dataset(files[1], decode_times=False) as ds:
        assert ds.sizes["time_counter"] == 5  # 365 / 73
        assert int(ds.kt.values[0]) == 21900 + 73 * 60  # year 2 goes on from year 1's steps
    h3 = _h(files[2])

    # a rerun runs nothing
    again = run_truth(small, out, 3, write_days=73)
    assert [r.seconds for r in again] == [r.seconds for r in records]

    # year 3 lost (record gone, folder half there): only it runs again, to the same numbers
    (out / "year_003.json").unlink()
    redo = run_truth(small, out, 3, write_days=73)
    assert read_year(out, 3) is not None  # its record written again: the year ran again
    np.testing.assert_array_equal(_h(out / redo[2].grid), h3)
    assert json.loads((out / "year_002.json").read_text())["grid"] == records[1].grid

    # other settings in the same folder are refused, naming what changed
    with pytest.raises(TruthError, match="write_days: 73"):
        run_truth(small, out, 4, write_days=5)
    # so is the same config file with other contents (e.g. another closure version)
    text = small.read_text()
    small.write_text(text + "\n# edited\n")
    with pytest.raises(TruthError, match="config_sha256"):
        run_truth(small, out, 4, write_days=73)
    small.write_text(text)
    # a folder recorded before the digest existed: the digest is added, nothing reruns
    stored = json.loads((out / "truth.json").read_text())
    del stored["config_sha256"]
    (out / "truth.json").write_text(json.dumps(stored))
    assert [r.seconds for r in run_truth(small, out, 3, write_days=73)] == [r.seconds for r in redo]
    assert "config_sha256" in json.loads((out / "truth.json").read_text())


def test_seeded_run_equals_the_straight_one(toy_exe: Path, small: Path, tmp_path: Path) -> None:
    straight = run_truth(small, tmp_path / "a", 2, write_days=73)
    restart = tmp_path / "a" / straight[0].restart
    seeded = run_truth(small, tmp_path / "b", 2, write_days=73, seed_restart=restart, seed_year=1)
    assert seeded[0].seeded_from == str(restart.resolve()) and seeded[0].grid == ""
    np.testing.assert_array_equal(
        _h(tmp_path / "b" / seeded[1].grid), _h(tmp_path / "a" / straight[1].grid)
    )


def test_cli_refuses_bad_input(small: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "--config",
                str(small),
                "--out",
                str(tmp_path / "x"),
                "--years",
                "2",
                "--write-days",
                "7",
            ]
        )
        == 1
    )
    assert "do not divide a year" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                str(small),
                "--out",
                str(tmp_path / "y"),
                "--years",
                "1",
                "--set",
                "rn_tau0=0.1",
            ]
        )
