"""``mlbridge run`` with ``transport = "oasis"``, for both kinds of model.

A model that couples through OASIS itself and knows nothing of mlbridge: ``oasis_pure_model``
(``fortran_stubs/oasis``), as in ``examples/05_oasis_pure``, run through the real ``mlbridge run``
command line and judged by what the model received, compared with NumPy on the global field.

A model that links the mlbridge library: the toy (helpers of ``test_coupling_toy``), whose output
with ``transport = "oasis"`` must be the MPI transport's bit for bit.

The configuration tests need nothing beyond Python; the runs fail (never skip) when OASIS3-MCT is
not built, saying so (``apt-get install liboasis3-dev libnetcdff-dev``, then ``mlbridge build``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_coupling_toy as toy
from test_oasis import expected_output, read_received

import bridge.launch.launcher as launcher_module
from bridge.config import oasis as oasis_config
from bridge.config.coupling import ConfigError, CouplingConfig, load_config
from bridge.config.namcouple import read_namcouple, write_namcouple
from bridge.config.oasis import OasisCouplingConfig
from bridge.launch.checks import find_problems
from bridge.launch.launcher import RunResult
from bridge.paths import DONE_MARKER

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "05_oasis_pure"
RUN_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def oasis_build_dir(fortran_build: Path) -> Path:
    """The build directory, with ``oasis_pure_model`` and the shim (CMake found OASIS3-MCT)."""
    for part in (fortran_build / "bin" / "oasis_pure_model", fortran_build / "lib"):
        assert part.exists(), (
            f"{part} was not built: CMake did not find OASIS3-MCT "
            "(apt-get install liboasis3-dev libnetcdff-dev, then mlbridge build)"
        )
    return fortran_build


def make_case(
    tmp_path: Path,
    *,
    jpni: int = 1,
    jpnj: int = 1,
    servers: int = 1,
    toml_edits: dict[str, str] | None = None,
    namelist_edits: dict[str, str] | None = None,
) -> Path:
    """A copy of ``examples/05_oasis_pure`` in ``tmp_path`` with ``jpni x jpnj`` model ranks."""
    ranks = jpni * jpnj
    toml = (EXAMPLE / "coupling.toml").read_text()
    nml = (EXAMPLE / "namelist_pure").read_text()
    edits = {
        "ranks = 1                        # = jpni": f"ranks = {ranks}  # = jpni",
        "jpni = 1  ": f"jpni = {jpni}  ",
        "jpnj = 1\n": f"jpnj = {jpnj}\n",
        "[server]\nranks = 1": f"[server]\nranks = {servers}",
        **(toml_edits or {}),
    }
    for old, new in edits.items():
        assert old in toml, f"examples/05_oasis_pure/coupling.toml has no {old!r}"
        toml = toml.replace(old, new)
    nml_edits = {"nn_jpni = 1, nn_jpnj = 1": f"nn_jpni = {jpni}, nn_jpnj = {jpnj}"}
    nml_edits.update(namelist_edits or {})
    for old, new in nml_edits.items():
        assert old in nml, f"examples/05_oasis_pure/namelist_pure has no {old!r}"
        nml = nml.replace(old, new)
    (tmp_path / "coupling.toml").write_text(toml)
    (tmp_path / "namelist_pure").write_text(nml)
    return tmp_path / "coupling.toml"


def mlbridge_run(
    toml: Path, build_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``mlbridge run TOML --workdir <toml dir>/runs`` as a user types it."""
    full_env = {**os.environ, "MLBRIDGE_BUILD_DIR": str(build_dir), **(env or {})}
    full_env.pop("MLBRIDGE_OASIS_SHIM", None)
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", str(toml), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def run_dir_of(proc: subprocess.CompletedProcess[str]) -> Path:
    found = re.search(r"run directory (\S+)", proc.stdout)
    assert found, f"no run directory in the output:\n{proc.stdout}\n{proc.stderr}"
    return Path(found.group(1))


# --------------------------------------------------------------------------------------------
# the configuration (no MPI)
# --------------------------------------------------------------------------------------------


def test_example_config_parses_and_round_trips(tmp_path: Path) -> None:
    config = load_config(EXAMPLE / "coupling.toml")
    assert config.transport == "oasis" and config.oasis_only and config.coupled
    oasis = config.oasis
    assert oasis is not None
    assert (oasis.nx, oasis.ny, oasis.nz, oasis.exchanges) == (12, 10, 3, 3)
    assert (oasis.device, oasis.threads, oasis.boundary) == ("cpu", 1, "closed")
    assert config.model.namelist_cfg == EXAMPLE / "namelist_pure"
    assert config.model.namelist_ref is None
    path = tmp_path / "run_config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_config(path) == config


def test_server_table_gives_device_and_threads(tmp_path: Path) -> None:
    toml = make_case(tmp_path, toml_edits={"threads = 1": "threads = 2"})
    oasis = load_config(toml).oasis
    assert oasis is not None and oasis.threads == 2


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({'transport = "oasis"': 'transport = "mpi"'}, 'it needs transport = "oasis"'),
        ({"nx = 12 ": "nx = 0 "}, r"\[oasis\] nx must be at least 1"),
        ({"period_s = 3600": "period_s = 7000"}, "does not divide runtime_s"),
        ({"[oasis]\n": '[oasis]\ndevice = "cuda"\n'}, r"oasis.device: set it in \[server\]"),
        ({"ranks = 1                        # = jpni": "ranks = 2  #"}, "2 model boxes|but"),
        ({"[oasis]\n": "[oasis]\ncolour = 1\n"}, "unknown key"),
        ({"[run]\n": "[run]\nsteps = 4\n"}, "its own namelist sets its length"),
        (  # what one OASIS version keeps is checked before launch, for the binding it uses
            {'model_component = "ocnmod"': f'model_component = "{"o" * 81}"'},
            r"has 81 characters; no OASIS3-MCT version keeps more than 80 \(2.0: 6, 4/5: 80\)",
        ),
    ],
)
def test_config_errors_name_the_file_and_key(
    tmp_path: Path, edits: dict[str, str], message: str
) -> None:
    toml = make_case(tmp_path, toml_edits=edits)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(toml)
    assert str(toml) in str(err.value)


def test_transport_oasis_without_table_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"needs \[\[exchange\]\] blocks .* or an \[oasis\] table"
    ):
        CouplingConfig.from_dict({"transport": "oasis"})


def test_exchange_blocks_and_oasis_table_exclude_each_other(tmp_path: Path) -> None:
    data = tomllib.loads((EXAMPLE / "coupling.toml").read_text())
    data["exchange"] = [{"closure": "laplacian", "inputs": {"u": "u"}, "outputs": {"x": "y"}}]
    with pytest.raises(ConfigError, match=r"\[\[exchange\]\] blocks and an \[oasis\] table"):
        CouplingConfig.from_dict(data, base_dir=EXAMPLE)


def test_model_ranks_override_must_match_the_boxes() -> None:
    config = load_config(EXAMPLE / "coupling.toml")
    with pytest.raises(ConfigError, match="--model-ranks 2: .oasis. describes 1 model boxes"):
        config.with_overrides(model_ranks=2)


# --------------------------------------------------------------------------------------------
# refused before start: nothing runs, exit status 2
# --------------------------------------------------------------------------------------------


def assert_refused(proc: subprocess.CompletedProcess[str], tmp_path: Path, message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists(), "a run directory was made for a refused run"


def test_namcouple_that_disagrees_is_refused_before_start(
    oasis_build_dir: Path, tmp_path: Path
) -> None:
    toml = make_case(tmp_path, toml_edits={'namcouple = ""': 'namcouple = "mine/namcouple"'})
    table = tomllib.loads(toml.read_text())["oasis"]
    table.pop("namcouple")
    namcouple = OasisCouplingConfig.from_mapping(table).namcouple()
    first = dataclasses.replace(namcouple.fields[0], freq_s=1800)
    edited = dataclasses.replace(namcouple, fields=(first, *namcouple.fields[1:]))
    (tmp_path / "mine").mkdir()
    write_namcouple(edited, tmp_path / "mine")
    proc = mlbridge_run(toml, oasis_build_dir)
    assert_refused(proc, tmp_path, "field O_U -> MLB_O_U: freq_s: config 3600, namcouple 1800")
    assert "oasis.namcouple" in proc.stderr


def test_namcouple_of_ones_own_that_agrees_is_used(oasis_build_dir: Path, tmp_path: Path) -> None:
    toml = make_case(tmp_path, toml_edits={'namcouple = ""': 'namcouple = "mine/namcouple"'})
    (tmp_path / "mine").mkdir()
    config = load_config(toml)
    assert config.oasis is not None
    text = "# my own namcouple, same links\n" + (
        write_namcouple(config.oasis.namcouple(), tmp_path / "mine").read_text()
    )
    (tmp_path / "mine" / "namcouple").write_text(text)
    proc = mlbridge_run(toml, oasis_build_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = run_dir_of(proc)
    assert (run_dir / "namcouple").read_text() == text
    assert read_namcouple(run_dir / "namcouple") == config.oasis.namcouple()


def test_too_long_field_name_is_refused_before_start(oasis_build_dir: Path, tmp_path: Path) -> None:
    name = "U" * 125  # 129 characters with the servers' prefix MLB_: OASIS keeps 128
    toml = make_case(tmp_path, toml_edits={'{ O_U = "u"': f'{{ {name} = "u"'})
    proc = mlbridge_run(toml, oasis_build_dir)
    assert_refused(proc, tmp_path, f"field '{name}' (125 characters, 129 with the server prefix")


def test_oasis_not_built_is_a_clear_error(tmp_path: Path) -> None:
    toml = make_case(tmp_path)
    empty = tmp_path / "empty_build"
    empty.mkdir()
    proc = mlbridge_run(toml, empty, "--build-dir", str(empty))
    assert_refused(proc, tmp_path, "pyoasis is not importable and the shim libmlb_oasis_shim.so")
    assert f"{empty}/bin/oasis_pure_model does not exist" in proc.stderr
    assert f"mlbridge build --build-dir {empty}" in proc.stderr


def test_closure_without_the_mapped_output_is_refused(
    oasis_build_dir: Path, tmp_path: Path
) -> None:
    toml = make_case(tmp_path, toml_edits={"lap_v = ": "lap_w = "})
    proc = mlbridge_run(toml, oasis_build_dir)
    assert_refused(proc, tmp_path, "oasis.outputs.lap_w: closure 'laplacian' has no output")


# --------------------------------------------------------------------------------------------
# real runs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jpni", "jpnj", "servers"),
    [(1, 1, 1), (1, 1, 2), (2, 1, 1), (1, 2, 2)],
    ids=["N1-M1", "N1-M2", "N2x1-M1", "N1x2-M2"],
)
def test_example_served_through_mlbridge_run(
    oasis_build_dir: Path, tmp_path: Path, jpni: int, jpnj: int, servers: int
) -> None:
    toml = make_case(tmp_path, jpni=jpni, jpnj=jpnj, servers=servers)
    proc = mlbridge_run(toml, oasis_build_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "finished 3 exchanges" in proc.stdout
    run_dir = run_dir_of(proc)
    for name in ("namcouple", "oasis.json", "run_config.json", "namelist_pure", "command.txt"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "logs").is_dir() and (run_dir / "mpirun.log").is_file()
    oasis = load_config(toml).oasis
    assert oasis is not None
    got = read_received(run_dir, jpni * jpnj, oasis)
    for kt in range(1, oasis.exchanges + 1):
        for f in (0, 1):
            want = expected_output("laplacian", kt, f, oasis)
            np.testing.assert_array_equal(got[kt - 1, f], want, err_msg=f"kt={kt} field {f}")
    done = json.loads((run_dir / DONE_MARKER).read_text())
    assert done["server_ranks"] == servers and done["exchanges"] == 3


def test_oasis_abort_with_exit_status_zero_fails_the_run(
    oasis_build_dir: Path, tmp_path: Path
) -> None:
    # [oasis] and model.ranks say 2 x 1, the model's namelist 1 x 1: it calls oasis_abort,
    # which ends every rank with exit status 0 in this OASIS version
    toml = make_case(tmp_path, jpni=2, namelist_edits={"nn_jpni = 2": "nn_jpni = 1"})
    proc = mlbridge_run(toml, oasis_build_dir)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "FAILED" in proc.stderr
    assert "nn_jpni x nn_jpnj = 1 x 1 but the component has 2 ranks" in proc.stderr
    assert DONE_MARKER in proc.stderr


def test_a_stalled_job_is_stopped_after_the_timeout(oasis_build_dir: Path, tmp_path: Path) -> None:
    # the model stops after 1 step while the servers wait for 3: oasis_get has no time limit
    toml = make_case(
        tmp_path,
        toml_edits={"timeout_s = 60.0": "timeout_s = 4.0"},
        namelist_edits={"nn_itend = 3": "nn_itend = 1"},
    )
    proc = mlbridge_run(toml, oasis_build_dir)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "no progress for 4 s (server.timeout_s) at exchange 1 of 3" in proc.stderr
    assert "the servers served 1 of 3 exchanges" in proc.stderr


# --------------------------------------------------------------------------------------------
# a model that links the mlbridge library: the toy, transport = "oasis" against "mpi"
# --------------------------------------------------------------------------------------------


def toy_run(config: CouplingConfig, transport: str) -> RunResult:
    """The toy coupled with ``transport`` (the handshake on MPI in both cases)."""
    return toy.run(dataclasses.replace(config, transport=transport))


def assert_same_bits(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str) -> None:
    for name in toy.FIELDS:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{what}: {name}")


@pytest.mark.parametrize(
    ("closure", "n", "m"),
    [(c, n, m) for c in ("laplacian", "smooth3") for n in (1, 2, 4) for m in (1, 2)],
)
def test_toy_through_oasis_equals_mpi_bit_for_bit(
    oasis_build_dir: Path, tmp_path: Path, closure: str, n: int, m: int
) -> None:
    config = toy.config_for(toy.make_case(tmp_path), n, m, [toy.exchange(closure)])
    result = toy_run(config, "oasis")
    got = toy.output(result)
    assert (result.run_dir / "namcouple").is_file()
    assert np.abs(got["u_tend"]).max() > 0, "the closure did nothing"
    assert_same_bits(got, toy.output(toy_run(config, "mpi")), f"{closure} N={n} M={m}")


def test_toy_through_oasis_lag1(oasis_build_dir: Path, tmp_path: Path) -> None:
    config = toy.config_for(toy.make_case(tmp_path), 2, 2, [toy.exchange("laplacian", lag=1)])
    out = toy.output(toy_run(config, "oasis"))
    assert not out["u_tend"][0].any()  # step 1: nothing received yet
    for s in range(2, 6):  # step s+1 gets the outputs computed from the inputs of step s
        expected = toy.closure_global("laplacian", out["u"][s - 2])
        toy.assert_close(out["u_tend"][s], expected, f"lag 1, step {s + 1}")
    assert_same_bits(out, toy.output(toy_run(config, "mpi")), "lag 1")


def test_toy_through_oasis_every3(oasis_build_dir: Path, tmp_path: Path) -> None:
    case = toy.make_case(tmp_path, steps=9, nammlb={"nn_mlb_every": 3})
    config = toy.config_for(case, 2, 1, [toy.exchange("laplacian", every=3)])
    result = toy_run(config, "oasis")
    out = toy.output(result)
    assert toy.read_steps(result) == [1, 4, 7]
    expected = toy.closure_global("laplacian", out["u"][3 - 1])  # exchanged at step 4
    for s in (3, 4, 5):  # steps 4, 5, 6 keep the outputs of step 4
        toy.assert_close(out["u_tend"][s], expected, f"every 3, step {s + 1}")
    assert_same_bits(out, toy.output(toy_run(config, "mpi")), "every 3")


def test_toy_through_oasis_nan_zero(oasis_build_dir: Path, tmp_path: Path) -> None:
    case = toy.make_case(tmp_path, nammlb_test={**toy.NAN_AT, "cn_mlb_nan_fld": "u"})
    config = toy.config_for(case, 2, 2, [toy.exchange("laplacian", on_nan="zero")])
    result = toy_run(config, "oasis")
    out = toy.output(result)
    assert np.isfinite(out["u"]).all()
    assert "replaced 1 NaN value(s) by zero" in toy.logs(result)
    assert result.timing is not None and result.timing["nan_replaced"] == 1
    assert_same_bits(out, toy.output(toy_run(config, "mpi")), "on_nan zero")


def test_toy_namcouple_is_checked_at_the_handshake(
    oasis_build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the launcher writes a namcouple with 1 level for u where the model defines 3
    original = launcher_module.library_run_namcouple

    def one_level_u(config: CouplingConfig, namelist: Any, *version: Any) -> Any:
        namcouple = original(config, namelist, *version)
        first = dataclasses.replace(namcouple.fields[0], src_ny=1, dst_ny=1)
        return dataclasses.replace(namcouple, fields=(first, *namcouple.fields[1:]))

    monkeypatch.setattr(launcher_module, "library_run_namcouple", one_level_u)
    config = toy.config_for(toy.make_case(tmp_path), 2, 1, [toy.exchange("laplacian")])
    result = toy_run(config, "oasis")
    toy.assert_failed_fast(result, 15.0, "field u -> MLB_u: src_ny: config 3, namcouple 1")


def test_toy_oasis_abort_with_status_zero_is_reported(
    oasis_build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a namcouple naming another model component, and servers that do not check it (a
    # sitecustomize on their PYTHONPATH): the model's oasis_init_comp aborts, exit status 0
    monkeypatch.setattr(oasis_config, "LIBRARY_MODEL_COMPONENT", "mlbxxx")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import bridge.config.namcouple\n"
        "bridge.config.namcouple.compare_namcouple = lambda *args: []\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    config = toy.config_for(
        toy.make_case(tmp_path), 1, 1, [toy.exchange("laplacian")], timeout_s=10.0
    )
    result = toy_run(config, "oasis")
    assert result.returncode != 0
    assert any("model not found in namcouple mlbmod" in p for p in result.problems), result.problems


def test_toy_through_oasis_periodic_halos_between_servers(
    oasis_build_dir: Path, tmp_path: Path
) -> None:
    # a wrapped halo cannot come from OASIS (one point twice in a partition): the servers
    # exchange it among themselves over MPI
    config = toy.config_for(
        toy.make_case(tmp_path), 2, 2, [toy.exchange("laplacian")], model={"boundary": "periodic"}
    )
    got = toy.output(toy_run(config, "oasis"))
    assert_same_bits(got, toy.output(toy_run(config, "mpi")), "periodic")


def test_toy_with_oasis_needs_oasis_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLBRIDGE_OASIS_SHIM", raising=False)
    config = toy.config_for(toy.make_case(tmp_path), 1, 1, [toy.exchange("laplacian")])
    empty = tmp_path / "empty_build"
    empty.mkdir()
    problems = find_problems(
        dataclasses.replace(config, transport="oasis"),
        build_dir=empty,
        checks=(launcher_module.check_oasis_transport,),
    )
    assert any("pyoasis is not importable and the shim" in p for p in problems), problems
    assert any(f"mlbridge build --build-dir {empty}" in p for p in problems), problems
