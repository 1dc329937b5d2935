"""``[diagnostics] netcdf``: the servers' ``diagnostics.nc`` (:mod:`bridge.server.diagnostics`).

The pure parts (blocks into global arrays, the variables, a one-rank writer) run without MPI;
the coupled runs put the toy model under real mpirun (2 model ranks, 2 server ranks) and check
the file against the model's own output: the fields the model sent at step kt are its state at
the end of step kt - 1 (``<cn_exp>_grid.nc`` written every step), the closure outputs are the
tendencies it used at kt and the analytic closure of the recorded fields.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import test_oasis_coupling as oasis_tests
import xarray as xr
from test_coupling_toy import NAN_AT, closure_global, config_for, exchange, logs, make_case, run
from test_oasis_coupling import oasis_build_dir  # noqa: F401 (a fixture)
from toy_helpers import read_nc

from bridge.closures.analytic import analytic_closure
from bridge.closures.base import ClosureSpec, FieldSpec
from bridge.config.coupling import (
    ConfigError,
    CouplingConfig,
    DiagnosticsConfig,
    ExchangeConfig,
    load_config,
)
from bridge.domain.plan import Box, server_blocks
from bridge.server.diagnostics import (
    DIAGNOSTICS_FILE,
    DiagnosticsError,
    DiagnosticsWriter,
    diagnostic_fields,
    pack_record,
    unpack_record,
)

NX, NY = 23, 17  # the toy's small basin (tests/toy_helpers.py SMALL_BASIN)

# --------------------------------------------------------------------------------------------
# pure: no MPI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 3, 4, 6])
def test_blocks_of_every_rank_make_the_global_fields(m: int) -> None:
    rng = np.random.default_rng(m)
    fields = [rng.standard_normal((3, NY, NX)), rng.standard_normal((1, NY, NX))]
    boxes = server_blocks(NX, NY, m)
    buffer = np.concatenate(
        [pack_record([f[:, b.j0 : b.j1, b.i0 : b.i1] for f in fields]) for b in boxes]
    )
    got = unpack_record(buffer, boxes, [3, 1], NX, NY)
    for g, f in zip(got, fields, strict=True):
        np.testing.assert_array_equal(g, f)
    with pytest.raises(ValueError, match="a record of"):
        unpack_record(np.concatenate([buffer, [0.0]]), boxes, [3, 1], NX, NY)


def lap_exchange() -> ExchangeConfig:
    return ExchangeConfig(
        "laplacian", {"u": "u", "v": "v"}, {"lap_u": "u_tend", "lap_v": "v_tend"}, "lap"
    )


def test_variables_follow_the_exchanges_and_the_selection() -> None:
    spec = analytic_closure("laplacian", ["u", "v"]).spec
    ex = lap_exchange()
    fields = diagnostic_fields([ex], {"lap": spec})
    assert [(f.name, f.role) for f in fields] == [
        ("u", "input"),
        ("v", "input"),
        ("u_tend", "output"),
        ("v_tend", "output"),
    ]
    assert "lap_u" in fields[2].long_name and "laplacian" in fields[2].long_name
    manifest = ClosureSpec(
        "gz", 1, (FieldSpec("u", "U", "m s-1"),), (FieldSpec("lap_u", "U", "m s-2"),)
    )
    units = [f.attrs().get("units") for f in diagnostic_fields([ex], {"lap": manifest})]
    assert units == ["m s-1", None, "m s-2", None]  # from the manifest, where it has them
    chosen = diagnostic_fields([ex], {"lap": spec}, ["v_tend", "u"])
    assert [f.name for f in chosen] == ["v_tend", "u"]
    with pytest.raises(DiagnosticsError, match="uu not exchanged.*u, v, u_tend, v_tend"):
        diagnostic_fields([ex], {"lap": spec}, ["uu"])


def test_unknown_field_is_refused_when_the_config_is_read() -> None:
    data = {
        "exchange": [{"closure": "laplacian", "inputs": {"u": "u"}, "outputs": {"lap_u": "ut"}}],
        "diagnostics": {"netcdf": True, "fields": ["ut", "u_tend"]},
    }
    with pytest.raises(ConfigError) as err:
        CouplingConfig.from_dict(data)
    assert str(err.value).endswith(
        'diagnostics.fields[1] = "u_tend": not a model field of any exchange (the exchanged '
        "model fields: u, ut)"
    )


def test_one_rank_writer_cuts_the_halo_and_appends_every_nth(tmp_path: Path) -> None:
    spec = analytic_closure("laplacian", ["u", "v"]).spec
    fields = diagnostic_fields([lap_exchange()], {"lap": spec}, ["u", "u_tend"])
    path = tmp_path / DIAGNOSTICS_FILE
    box, h = Box(0, NX, 0, NY), 2
    writer = DiagnosticsWriter(path, None, [box], 0, h, NX, NY, fields, 3, 10.0)
    rng = np.random.default_rng(0)
    sent = {}
    for kt in range(5, 17):
        u = rng.standard_normal((2, NY + 2 * h, NX + 2 * h))
        tend = rng.standard_normal((2, NY, NX))
        writer.record(kt, {"u": u, "v": u}, {"u_tend": tend, "v_tend": tend})
        sent[kt] = (u[:, h:-h, h:-h].copy(), tend)
    writer.close()
    with xr.open_dataset(path) as ds:
        assert ds["kt"].values.tolist() == [7, 10, 13, 16]
        assert list(ds.data_vars) == ["u", "u_tend"]
        assert ds["u"].dims == ("kt", "z_2", "y", "x")
        assert ds["u_tend"].attrs["long_name"].startswith("output lap_u of closure laplacian")
        assert ds.attrs["Conventions"] == "CF-1.8"
        for kt in (7, 10, 13, 16):
            np.testing.assert_array_equal(ds["u"].sel(kt=kt).values, sent[kt][0])
            np.testing.assert_array_equal(ds["u_tend"].sel(kt=kt).values, sent[kt][1])


# --------------------------------------------------------------------------------------------
# coupled: the toy model, 2 model ranks, 2 server ranks
# --------------------------------------------------------------------------------------------


def with_diagnostics(config: CouplingConfig, **options: object) -> CouplingConfig:
    return dataclasses.replace(config, diagnostics=DiagnosticsConfig(netcdf=True, **options))


@pytest.mark.usefixtures("fortran_build")
def test_coupled_diagnostics_are_the_model_fields_and_the_closure(tmp_path: Path) -> None:
    case = make_case(tmp_path, steps=6, write=1)
    config = with_diagnostics(config_for(case, 2, 2, [exchange("laplacian")]), every=2)
    result = run(config)
    assert result.returncode == 0, logs(result)[-4000:]
    model = read_nc(result.run_dir / "TOY_grid.nc", ("u", "v", "u_tend", "v_tend"))
    with xr.open_dataset(result.run_dir / DIAGNOSTICS_FILE) as ds:
        assert ds["kt"].values.tolist() == [2, 4, 6]  # every 2nd of the exchanges 1..6
        assert list(ds.data_vars) == ["u", "v", "u_tend", "v_tend"]
        assert ds["u"].dims == ("kt", "z_3", "y", "x") and ds["u"].shape == (3, 3, NY, NX)
        assert ds["u_tend"].attrs["long_name"] == (
            "output lap_u of closure laplacian (exchange laplacian), returned to model field u_tend"
        )
        assert ds.attrs["mlbridge_closures"] == "laplacian=laplacian"  # the launcher's stamp
        assert ds.attrs["mlbridge_closure_laplacian_name"] == "laplacian"
        for kt in (2, 4, 6):
            for f in ("u", "v"):
                sent = ds[f].sel(kt=kt).values
                assert np.abs(sent).max() > 0
                # sent at kt: the state at the end of step kt - 1 (record kt - 2, from step 1)
                np.testing.assert_array_equal(sent, model[f][kt - 2])
                # returned at kt: the tendency the model used at kt (record kt - 1)
                tend = ds[f"{f}_tend"].sel(kt=kt).values
                np.testing.assert_array_equal(tend, model[f"{f}_tend"][kt - 1])
                want = closure_global("laplacian", sent)
                assert np.abs(tend - want).max() <= 1e-13 * np.abs(want).max()


@pytest.mark.usefixtures("fortran_build")
def test_failed_run_keeps_the_records_written_before(tmp_path: Path) -> None:
    case = make_case(
        tmp_path, steps=6, nammlb_test={**NAN_AT, "nn_mlb_nan_kt": 5, "cn_mlb_nan_fld": "v"}
    )
    config = config_for(case, 2, 2, [exchange("laplacian")])
    result = run(with_diagnostics(config, every=2, fields=("u_tend",)))
    assert result.returncode != 0 and "NaN in model field 'v' at step 5" in logs(result)
    model = read_nc(result.run_dir / "TOY_grid.nc", ("u_tend",))
    with xr.open_dataset(result.run_dir / DIAGNOSTICS_FILE) as ds:
        assert ds["kt"].values.tolist() == [2, 4]
        assert list(ds.data_vars) == ["u_tend"]
        np.testing.assert_array_equal(ds["u_tend"].values, model["u_tend"][[1, 3]])


@pytest.mark.usefixtures("oasis_build_dir")
def test_diagnostics_through_the_oasis_transport(tmp_path: Path) -> None:
    # netCDF4 must be imported before the OASIS shim (its system libnetcdf): else a segfault
    config = config_for(make_case(tmp_path, steps=6), 2, 2, [exchange("laplacian")])
    config = dataclasses.replace(with_diagnostics(config, every=3), transport="oasis")
    result = run(config)
    assert result.returncode == 0, logs(result)[-4000:]
    model = read_nc(result.run_dir / "TOY_grid.nc", ("u", "u_tend"))
    with xr.open_dataset(result.run_dir / DIAGNOSTICS_FILE) as ds:
        assert ds["kt"].values.tolist() == [3, 6]
        np.testing.assert_array_equal(ds["u"].values, model["u"][[1, 4]])
        np.testing.assert_array_equal(ds["u_tend"].values, model["u_tend"][[2, 5]])


@pytest.mark.usefixtures("oasis_build_dir")
def test_diagnostics_of_a_model_that_couples_through_oasis_itself(tmp_path: Path) -> None:
    from conftest import build_dir

    toml = oasis_tests.make_case(tmp_path, jpnj=2, servers=2)
    toml.write_text(toml.read_text() + '\n[diagnostics]\nnetcdf = true\nfields = ["O_UTND"]\n')
    proc = oasis_tests.mlbridge_run(toml, build_dir())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = oasis_tests.run_dir_of(proc)
    oasis = load_config(toml).oasis
    assert oasis is not None
    got = oasis_tests.read_received(run_dir, 2, oasis)  # (kt, field, nz, ny, nx) the model got
    with xr.open_dataset(run_dir / DIAGNOSTICS_FILE) as ds:
        assert ds["kt"].values.tolist() == [1, 2, 3] and list(ds.data_vars) == ["O_UTND"]
        np.testing.assert_array_equal(ds["O_UTND"].values, got[:, 0])
