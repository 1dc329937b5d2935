"""Registry closures coupled through ``mlbridge run``: checks before launch, pinning, metadata.

The closure is the example's CNN (``examples/04_register_cnn``: ``models/cnn.py``, random seeded
weights, float32, TorchScript, halo 4) registered in a temporary registry; the model is
``mlb_driver``, whose fields are exact functions of the global indices and the step, so that
what it receives is compared with the closure applied once, in this process, to the global
field padded with zeros (a closed basin).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.config.coupling import ConfigError, load_config
from bridge.launch.closure_checks import (
    ClosureRecord,
    inspect_closures,
    netcdf_attributes,
    pin_closures,
)
from bridge.launch.launcher import RunResult, launch, stamp_outputs

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "04_register_cnn"
NX, NY, NZ, HALO = 23, 17, 3, 4
SEEDS = {"1": 1234, "2": 99}  # gz-toy@1 is the example's own; @2 has other weights


# --- fixtures ---------------------------------------------------------------------------------


def make_closure(case: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the example's ``make_closure.py`` as a user does."""
    return subprocess.run(
        [sys.executable, str(case / "make_closure.py"), "--home", str(home), *extra],
        cwd=case,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding gz-toy@1 and gz-toy@2, made by the example's script."""
    work = tmp_path_factory.mktemp("registry")
    home = work / "home"
    for version, seed in SEEDS.items():
        out = work / f"closure{version}"
        proc = make_closure(
            EXAMPLE, home, "--out", str(out), "--version", version, "--seed", str(seed)
        )
        assert proc.returncode == 0, proc.stderr
        assert f"registered gz-toy@{version}" in proc.stdout
    return home


@pytest.fixture()
def case(
    tmp_path: Path, fortran_build: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A copy of the example whose registry is a copy of ``registry`` (free to tamper with)."""
    dest = tmp_path / "case"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("registry", "closure", "runs"))
    shutil.copytree(registry, dest / "registry")
    monkeypatch.setenv("MLBRIDGE_BUILD_DIR", str(fortran_build))  # read by mlb_driver.sh
    monkeypatch.delenv("MLBRIDGE_HOME", raising=False)
    return dest


def edit_toml(case: Path, old: str, new: str) -> Path:
    toml = case / "coupling.toml"
    text = toml.read_text()
    assert old in text, old
    toml.write_text(text.replace(old, new))
    return toml


def run_case(case: Path, **overrides: Any) -> RunResult:
    return launch(case / "coupling.toml", workdir=case / "runs", quiet=True, **overrides)


def no_run_started(case: Path) -> bool:
    runs = case / "runs"
    return not runs.exists() or not any(runs.iterdir())


# --- the offline reference --------------------------------------------------------------------


def driver_value(kt: int, f: int) -> np.ndarray:
    """mlb_driver's field ``f`` (1-based) at step ``kt``, global ``(nz, ny, nx)``."""
    k = np.arange(1, NZ + 1)[:, None, None]
    j = np.arange(NY)[None, :, None]
    i = np.arange(NX)[None, None, :]
    return 0.5 * np.mod(7 * i * i + 13 * j + 31 * k + 17 * kt + 101 * f, 1000).astype(np.float64)


def received(run_dir: Path, n: int, steps: int) -> np.ndarray:
    """What the driver ranks received, gathered: ``(steps, 2, nz, ny, nx)``."""
    out = np.full((steps, 2, NZ, NY, NX), np.nan)
    for r in range(n):
        i0, j0, nxl, nyl = (int(v) for v in (run_dir / f"driver_r{r}.txt").read_text().split())
        raw = np.fromfile(run_dir / f"driver_r{r}.bin", dtype=np.float64)
        out[..., j0 : j0 + nyl, i0 : i0 + nxl] = raw.reshape(steps, 2, NZ, nyl, nxl)
    return out


def offline(home: Path, ref: str, steps: int) -> np.ndarray:
    """The closure applied once, here, to each step's global fields padded with zeros."""
    from bridge.registry.store import Registry

    closure = Registry(home).load(ref, device="cpu")
    out = np.zeros((steps, 2, NZ, NY, NX))
    for s in range(steps):
        # the server casts the float64 fields to the manifest's float32 before the closure
        pad = ((0, 0), (HALO, HALO), (HALO, HALO))
        inputs = {
            name: np.pad(driver_value(s + 1, f), pad).astype(np.float32)
            for f, name in ((1, "u"), (2, "v"))
        }
        result = closure(inputs)
        out[s, 0], out[s, 1] = result["su"], result["sv"]
    return out


def assert_close_f32(got: np.ndarray, want: np.ndarray) -> None:
    """At most 1e-6 of the largest value (float32 convolutions on other block shapes)."""
    assert np.isfinite(got).all()
    scale = np.abs(want).max()
    assert scale > 0
    err = np.abs(got - want).max() / scale
    assert err <= 1e-6, f"largest difference {err:.3g} of the largest value"


def assert_ok(result: RunResult) -> None:
    assert result.ok, f"{result.problems}\n" + (result.run_dir / "mpirun.log").read_text()[-3000:]


# --- refused before launch --------------------------------------------------------------------


def test_tampered_artifact_refused_with_file_and_both_hashes(case: Path) -> None:
    from bridge.registry.store import Registry, sha256_file

    artifact = case / "registry" / "gz-toy" / "1" / "gz_toy.pt2"
    recorded = Registry(case / "registry").show("gz-toy@1").record["sha256"]["gz_toy.pt2"]
    with artifact.open("ab") as fh:
        fh.write(b"\0")
    found = sha256_file(artifact)
    with pytest.raises(ConfigError) as info:
        run_case(case)
    text = str(info.value)
    assert str(artifact) in text and recorded in text and found in text, text
    assert "gz-toy@1" in text
    assert no_run_started(case)


def test_missing_artifact_refused(case: Path) -> None:
    artifact = case / "registry" / "gz-toy" / "1" / "gz_toy.pt2"
    artifact.unlink()
    with pytest.raises(ConfigError) as info:
        run_case(case)
    text = str(info.value)
    assert f"{artifact}: missing (recorded sha256 " in text and "gz-toy@1" in text, text
    assert no_run_started(case)


def test_unknown_version_and_name_refused(case: Path) -> None:
    edit_toml(case, '"gz-toy@1"', '"gz-toy@7"')
    with pytest.raises(ConfigError) as info:
        run_case(case)
    text = str(info.value)
    assert "gz-toy@7" in text and "versions of 'gz-toy': 1, 2" in text, text
    edit_toml(case, '"gz-toy@7"', '"no-such-closure"')
    with pytest.raises(ConfigError) as info:
        run_case(case)
    text = str(info.value)
    assert "no-such-closure" in text and "registered: gz-toy" in text and "laplacian" in text
    assert no_run_started(case)


def test_mapping_mismatch_refused_naming_both_sides(case: Path) -> None:
    edit_toml(case, 'inputs = { u = "u", v = "v" }', 'inputs = { u = "u", w = "v" }')
    edit_toml(case, 'outputs = { su = "u_tend", sv = "v_tend" }', 'outputs = { sx = "u_tend" }')
    with pytest.raises(ConfigError) as info:
        run_case(case)
    problems = info.value.problems
    text = "\n".join(problems)
    assert any("inputs.w" in p and "no input 'w'" in p and "u, v" in p for p in problems), text
    assert any("input(s) v not mapped" in p for p in problems), text
    assert any("outputs.sx" in p and "its outputs: su, sv" in p for p in problems), text
    assert no_run_started(case)


def test_halo_larger_than_server_block_refused(case: Path) -> None:
    with pytest.raises(ConfigError) as info:
        run_case(case, server_ranks=24)
    text = str(info.value)
    assert "gz-toy@1" in text and "halo of 4" in text and "server.ranks = 24" in text, text
    assert "smallest server block (3 x 4 cells" in text
    assert no_run_started(case)


def test_wrong_format_refused(case: Path) -> None:
    """An artifact that is not a torch.export archive (its record rewritten to match) fails to
    load."""
    from bridge.registry.store import sha256_file

    vdir = case / "registry" / "gz-toy" / "1"
    (vdir / "gz_toy.pt2").write_bytes(b"not a torch.export archive")
    record = json.loads((vdir / "record.json").read_text())
    record["sha256"]["gz_toy.pt2"] = sha256_file(vdir / "gz_toy.pt2")
    (vdir / "record.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError) as info:
        run_case(case)
    text = str(info.value)
    assert "cannot be loaded as format 'export'" in text and str(vdir / "gz_toy.pt2") in text
    assert no_run_started(case)


def test_pinned_sha256_mismatch_refused(case: Path) -> None:
    edit_toml(case, 'on_nan = "abort"', f'on_nan = "abort"\nsha256 = "{"0" * 64}"')
    with pytest.raises(ConfigError) as info:
        run_case(case)
    assert "exchange[0].sha256" in str(info.value) and "gz_toy.pt2" in str(info.value)


def test_mlbridge_home_and_pinning(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without [server] registry, $MLBRIDGE_HOME is used; "gz-toy" pins the newest version."""
    edit_toml(case, 'registry = "registry"', "")
    edit_toml(case, '"gz-toy@1"', '"gz-toy"')
    monkeypatch.setenv("MLBRIDGE_HOME", str(case / "registry"))
    config = load_config(case / "coupling.toml")
    assert config.server.registry is None
    check = inspect_closures(config, (NX, NY), load=False)
    assert not check.problems
    pinned = pin_closures(config, check)
    assert pinned.exchanges[0].closure == "gz-toy@2"
    assert pinned.exchanges[0].sha256 == check.closures[0].sha256
    assert pinned.server.registry == (case / "registry").resolve()


def test_config_registry_and_sha256_keys(tmp_path: Path) -> None:
    toml = tmp_path / "coupling.toml"
    toml.write_text(
        '[server]\nregistry = "reg"\n[[exchange]]\nclosure = "x"\ninputs = { a = "a" }\n'
        f'outputs = {{ b = "b" }}\nsha256 = "{"A" * 64}"\n'
    )
    config = load_config(toml)
    assert config.server.registry == tmp_path / "reg"
    assert config.exchanges[0].sha256 == "a" * 64
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.server.registry == tmp_path / "reg" and again.exchanges[0].sha256 == "a" * 64
    toml.write_text(toml.read_text().replace("A" * 64, "xyz"))
    with pytest.raises(ConfigError, match="exchange\\[0\\].sha256"):
        load_config(toml)


# --- coupled runs -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2)])
def test_offline_equals_online(
    case: Path, registry: Path, monkeypatch: pytest.MonkeyPatch, n: int, m: int
) -> None:
    """N model ranks x M server ranks give the closure applied once to the global field."""
    edit_toml(case, 'registry = "registry"', "")  # $MLBRIDGE_HOME this time
    edit_toml(case, '"gz-toy@1"', '"gz-toy"')  # the newest: gz-toy@2
    monkeypatch.setenv("MLBRIDGE_HOME", str(case / "registry"))
    result = run_case(case, model_ranks=n, server_ranks=m)
    assert_ok(result)
    assert_close_f32(received(result.run_dir, n, 2), offline(registry, "gz-toy@2", 2))
    pinned = json.loads((result.run_dir / "run_config.json").read_text())["exchange"][0]
    record = json.loads((result.run_dir / "closures.json").read_text())["closures"][0]
    assert pinned["closure"] == "gz-toy@2" == record["ref"]
    assert pinned["sha256"] == record["sha256"] == result.closures[0].sha256
    assert record["requested"] == "gz-toy" and record["version"] == "2"


def test_example_runs_and_records_its_closure(
    case: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example as a user runs it (its own registry/), with a NetCDF output to stamp."""
    shutil.rmtree(case / "registry")
    proc = make_closure(case, case / "registry")
    assert proc.returncode == 0, proc.stderr
    # the driver writes no NetCDF: let its wrapper leave a model-style *_grid.nc to stamp
    wrapper = case / "mlb_driver.sh"
    text = wrapper.read_text().replace(
        'exit "$status"',
        f'[ "$status" -eq 0 ] && [ "${{OMPI_COMM_WORLD_RANK:-0}}" = 0 ] && {sys.executable} '
        '-c \'import netCDF4; netCDF4.Dataset("REGCNN_grid.nc", "w").close()\'\n'
        'exit "$status"',
    )
    wrapper.write_text(text)
    result = launch(case / "coupling.toml", workdir=case / "runs")
    assert_ok(result)
    assert_close_f32(received(result.run_dir, 2, 2), offline(registry, "gz-toy@1", 2))
    record = result.closures[0]
    assert (record.name, record.version, record.kind) == ("gz-toy", "1", "registry")
    assert len(record.sha256) == 64
    log = capsys.readouterr().out
    assert f"exchange 'gz-toy': closure gz-toy@1 (export, halo 4) sha256 {record.sha256}" in log
    saved = json.loads((result.run_dir / "closures.json").read_text())
    assert saved["closures"][0]["sha256"] == record.sha256
    assert saved["registry"] == str((case / "registry").resolve())
    import netCDF4

    with netCDF4.Dataset(result.run_dir / "REGCNN_grid.nc") as ds:
        assert ds.getncattr("mlbridge_closures") == "gz-toy=gz-toy@1"
        assert ds.getncattr("mlbridge_closure_gz_toy_name") == "gz-toy"
        assert ds.getncattr("mlbridge_closure_gz_toy_version") == "1"
        assert ds.getncattr("mlbridge_closure_gz_toy_sha256") == record.sha256


def test_land_mask_run_matches_offline_on_ocean_points(
    case: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the driver's land mask the ocean points still see the closure of the whole field.

    The driver's fields are not masked (its land points carry values too), so the halo the
    server assembles is the zero-padded global field; only ocean points are compared, as whether
    land points of the outputs are zeroed is the server's policy.
    """
    nml = case / "driver.nml"
    nml.write_text(nml.read_text().replace("/", "  use_mask = .true.\n/"))
    result = run_case(case, model_ranks=2, server_ranks=2)
    assert_ok(result)
    i = np.arange(NX)[None, :]
    j = np.arange(NY)[:, None]
    ocean = np.mod((i + 2) + 2 * (j + 2), 7) != 0  # the driver's mask (global 0-based i, j)
    got = received(result.run_dir, 2, 2)[..., ocean]
    want = offline(registry, "gz-toy@1", 2)[..., ocean]
    assert_close_f32(got, want)


def test_stamp_outputs_names_every_exchange(tmp_path: Path) -> None:
    import netCDF4

    for name in ("EXP_grid.nc", "diagnostics.nc"):
        netCDF4.Dataset(tmp_path / name, "w").close()
    closures = (
        ClosureRecord("gz-toy", 0, "gz-toy", "registry", "gz-toy", "2", "ab" * 32),
        ClosureRecord("lap", 1, "laplacian", "analytic", "laplacian"),
    )
    assert stamp_outputs(tmp_path, closures) == []
    for name in ("EXP_grid.nc", "diagnostics.nc"):
        with netCDF4.Dataset(tmp_path / name) as ds:
            attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        assert attrs == netcdf_attributes(closures)
        assert attrs["mlbridge_closures"] == "gz-toy=gz-toy@2; lap=laplacian"
        assert attrs["mlbridge_closure_gz_toy_sha256"] == "ab" * 32
    (tmp_path / "broken_grid.nc").write_text("not netcdf")
    problems = stamp_outputs(tmp_path, closures)
    assert len(problems) == 1 and "broken_grid.nc" in problems[0]


TOY_CFG = """\
&namrun
   cn_exp = "REGTOY"
   nn_itend = 10
   nn_write = 5
/
&nammlb
   cn_mlb_snd = 'u', 'v', ''
   cn_mlb_rcv = 'u_tend', 'v_tend', ''
/
"""


def test_toy_grid_nc_names_the_closure(
    tmp_path: Path, toy_exe: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The toy model coupled to the registered CNN: its REGTOY_grid.nc names the closure."""
    from bridge.config.namelist import read_namelists

    toy_ref = REPO / "fortran_stubs" / "toy_nemo" / "namelist_ref"
    assert read_namelists(toy_ref, toy_ref).has("nammlb", "cn_mlb_snd")
    (tmp_path / "namelist_cfg").write_text(TOY_CFG)
    (tmp_path / "coupling.toml").write_text(
        f'[model]\nexecutable = "{toy_exe}"\nranks = 2\nnamelist_cfg = "namelist_cfg"\n'
        f'[server]\nregistry = "{registry}"\ntimeout_s = 60.0\n'
        '[[exchange]]\nclosure = "gz-toy@1"\ninputs = { u = "u", v = "v" }\n'
        'outputs = { su = "u_tend", sv = "v_tend" }\n'
    )
    monkeypatch.setenv("MLBRIDGE_HOME", str(tmp_path / "elsewhere"))  # [server] registry wins
    result = launch(tmp_path / "coupling.toml", workdir=tmp_path / "runs", quiet=True)
    assert_ok(result)
    import netCDF4

    with netCDF4.Dataset(result.run_dir / "REGTOY_grid.nc") as ds:
        assert ds.getncattr("mlbridge_closures") == "gz-toy=gz-toy@1"
        assert ds.getncattr("mlbridge_closure_gz_toy_sha256") == result.closures[0].sha256
        assert ds.getncattr("title")  # the model's own attributes are kept
