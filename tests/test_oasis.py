"""The OASIS3-MCT transport: namcouple writer and validator, the shim, and real coupled runs.

The unit tests need nothing beyond Python. The others build ``fortran_stubs/oasis`` (the ctypes shim
and ``oasis_pure_model``, a model that calls OASIS only) into ``<build dir>/oasis`` and run it under
the real ``mpirun`` with ``python -m bridge.server --oasis``; they are skipped when OASIS3-MCT is
not installed
(``liboasis3-dev``). With this OASIS version an abort can end every rank with exit status 0, so
every run is judged by its outputs and markers (:func:`bridge.paths.check_outcome`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bridge.closures.analytic import laplacian_op
from bridge.config.namcouple import (
    FIELD_NAME_MAX,
    FieldLink,
    NamcoupleConfig,
    NamcoupleError,
    Transform,
    compare_namcouple,
    format_namcouple,
    parse_namcouple,
    write_namcouple,
)
from bridge.config.oasis import OasisConfigError, OasisCouplingConfig
from bridge.domain.plan import Box
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command
from bridge.launch.oasis import oasis_server_program as server_programs
from bridge.launch.oasis import write_oasis_files as prepare_run_dir
from bridge.paths import DONE_MARKER, ERROR_FILE, check_outcome
from bridge.transport.oasis import (
    OasisNotAvailableError,
    box_segments,
    find_shim,
    orange_partition,
)

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 90

# the namcouple of docs (ENVIRONMENT.md), one field: the exact text OASIS3-MCT 2.0 reads
ONE_FIELD = """\
 $NFIELDS
 1
 $END
 $NBMODEL
 2 ocnmod pymod
 $END
 $RUNTIME
 36000
 $END
 $NLOGPRT
 1
 $END
 $STRINGS
O_U P_U 1 3600 1 rst_u.nc EXPORTED
100 50 100 50 ocnt ocnt LAG=0
R 0 R 0
LOCTRANS
INSTANT
 $END
"""


def one_field_config(**changes: object) -> NamcoupleConfig:
    link = FieldLink(
        src="O_U",
        dst="P_U",
        freq_s=3600,
        restart_file="rst_u.nc",
        src_grid="ocnt",
        dst_grid="ocnt",
        src_nx=100,
        src_ny=50,
        dst_nx=100,
        dst_ny=50,
    )
    link = dataclasses.replace(link, **changes)
    return NamcoupleConfig(models=("ocnmod", "pymod"), runtime_s=36000, fields=(link,))


def oasis_table(**changes: object) -> dict[str, object]:
    table: dict[str, object] = {
        "nx": 12,
        "ny": 10,
        "nz": 3,
        "jpni": 1,
        "jpnj": 1,
        "inputs": {"O_U": "u", "O_V": "v"},
        "outputs": {"lap_u": "O_UTND", "lap_v": "O_VTND"},
        "closure": "laplacian",
        "period_s": 3600,
        "runtime_s": 3 * 3600,
    }
    table.update(changes)
    return table


# --------------------------------------------------------------------------------------------
# namcouple: writer, parser, validator (no MPI)
# --------------------------------------------------------------------------------------------


def test_writer_gives_the_documented_format() -> None:
    text = format_namcouple(one_field_config())
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ONE_FIELD.splitlines()


def test_parser_reads_the_documented_format() -> None:
    assert parse_namcouple(ONE_FIELD) == one_field_config()


def test_round_trip_with_options_and_several_transforms(tmp_path: Path) -> None:
    link = dataclasses.replace(
        one_field_config().fields[0],
        lag=1800,
        seq=2,
        dst_overlap=("P", 2),
        transforms=(Transform("LOCTRANS", ("AVERAGE",)), Transform("SCRIPR", ("BILINEAR", "LR"))),
    )
    config = NamcoupleConfig(models=("a", "b", "c"), runtime_s=7200, fields=(link,), nlogprt=2)
    path = write_namcouple(config, tmp_path)
    assert parse_namcouple(path.read_text()) == config


def test_validator_reports_each_difference_by_field() -> None:
    expected = one_field_config()
    found = parse_namcouple(
        ONE_FIELD.replace("3600 1 rst_u.nc", "1800 1 rst_u.nc").replace("LAG=0", "LAG=3600")
    )
    problems = compare_namcouple(expected, found)
    assert problems == [
        "field O_U -> P_U: freq_s: config 3600, namcouple 1800",
        "field O_U -> P_U: lag: config 0, namcouple 3600",
    ]


def test_validator_reports_missing_and_extra_fields_and_blocks() -> None:
    found = parse_namcouple(
        ONE_FIELD.replace("O_U P_U", "O_U Q_U").replace("36000", "3600").replace("pymod", "pym")
    )
    problems = compare_namcouple(one_field_config(), found)
    assert "$NBMODEL: config ('ocnmod', 'pymod'), namcouple ('ocnmod', 'pym')" in problems
    assert "$RUNTIME: config 36000, namcouple 3600" in problems
    assert "field O_U -> P_U: missing from the namcouple (the namcouple sends 'O_U' to 'Q_U')" in (
        problems
    )
    assert "field O_U -> Q_U: in the namcouple but not in the config" in problems


def test_validator_matches_values_not_text() -> None:
    # the same namcouple with other spacing, comments and blank lines is the same namcouple
    spaced = "# a comment\n\n" + ONE_FIELD.replace("O_U P_U 1", "O_U   P_U  1").replace(
        " 2 ocnmod pymod", "2    ocnmod   pymod"
    )
    assert compare_namcouple(one_field_config(), parse_namcouple(spaced)) == []


def test_field_names_longer_than_oasis_keeps_are_refused() -> None:
    assert FIELD_NAME_MAX == 128  # ic_lvar of mod_oasis_kinds in OASIS3-MCT 2.0
    one_field_config(src="U" * 128)  # the longest name is accepted
    name = "U" * 129
    with pytest.raises(NamcoupleError, match=f"field name \\(src\\) '{name}' has 129 characters"):
        one_field_config(src=name)
    with pytest.raises(NamcoupleError, match="restart file"):
        one_field_config(restart_file="r" * 65 + ".nc")


def test_exported_field_without_transformation_is_refused() -> None:
    with pytest.raises(NamcoupleError, match="needs at least one transformation"):
        one_field_config(transforms=())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(" 1\n $END\n $NBMODEL", " 2\n $END\n $NBMODEL"), "NFIELDS says 2"),
        (lambda t: t.replace("LOCTRANS\n", "LOCTRANS SCRIPR\n"), "announces 1 transformations"),
        (lambda t: t.replace("LAG=0", "LAGG=0"), "unknown option 'LAGG=0'"),
        (lambda t: t.replace(" $RUNTIME\n 36000\n $END\n", ""), "block \\$RUNTIME is missing"),
    ],
)
def test_parse_errors_name_the_line(edit: Callable[[str], str], message: str) -> None:
    with pytest.raises(NamcoupleError, match=message):
        parse_namcouple(edit(ONE_FIELD), "run/namcouple")


# --------------------------------------------------------------------------------------------
# the [oasis] table and the partitions (no MPI)
# --------------------------------------------------------------------------------------------


def test_config_from_jpni_jpnj_and_round_trip() -> None:
    config = OasisCouplingConfig.from_mapping(oasis_table(jpni=2, jpnj=2))
    assert config.model_boxes == (
        Box(0, 6, 0, 5),
        Box(6, 12, 0, 5),
        Box(0, 6, 5, 10),
        Box(6, 12, 5, 10),
    )
    assert OasisCouplingConfig.from_mapping(config.to_mapping()) == config
    assert config.exchanges == 3
    links = {(f.src, f.dst): f for f in config.namcouple().fields}
    assert set(links) == {
        ("O_U", "MLB_O_U"),
        ("O_V", "MLB_O_V"),
        ("MLB_O_UTND", "O_UTND"),
        ("MLB_O_VTND", "O_VTND"),
    }
    assert links[("O_U", "MLB_O_U")].src_nx * links[("O_U", "MLB_O_U")].src_ny == 12 * 10 * 3


def test_too_long_field_name_is_refused_before_start() -> None:
    name = "U" * 125  # 129 characters with the servers' prefix MLB_
    with pytest.raises(OasisConfigError, match=f"field '{name}' \\(125 characters, 129 with"):
        OasisCouplingConfig.from_mapping(oasis_table(inputs={name: "u", "O_V": "v"}))
    OasisCouplingConfig.from_mapping(oasis_table(inputs={"U" * 124: "u", "O_V": "v"}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"boxes": [[0, 6, 0, 10], [5, 12, 0, 10]]}, "overlap"),
        ({"boxes": [[0, 6, 0, 10], [7, 12, 0, 10]]}, "do not cover the 12 x 10 grid"),
        ({"boxes": [[0, 12, 0, 10]], "jpni": 1}, "either boxes or jpni"),
        ({"period_s": 7000}, "does not divide"),
        ({"server_prefix": ""}, "server_prefix must not be empty"),
        ({"lag_s": 3600}, "only 0"),
        ({"colour": 1}, "unknown key"),
        ({"nz": 0}, "nz must be at least 1"),
        ({"halo_exchange": "oasis", "boundary": "periodic"}, "needs boundary = 'closed'"),
    ],
)
def test_config_errors_name_the_key(changes: dict[str, object], message: str) -> None:
    table = oasis_table()
    if "boxes" in changes:
        del table["jpni"], table["jpnj"]
    table.update(changes)
    with pytest.raises(OasisConfigError, match=message):
        OasisCouplingConfig.from_mapping(table)


def test_box_segments_follow_the_c_ordered_block() -> None:
    nx, ny, nz = 7, 5, 2
    box = Box(2, 5, 1, 4)
    flat = np.arange(nx * ny * nz, dtype=np.int64)
    picked = np.concatenate([flat[o : o + n] for o, n in box_segments(nx, ny, nz, box)])
    block = flat.reshape(nz, ny, nx)[:, 1:4, 2:5]
    assert np.array_equal(picked, block.reshape(-1))
    assert orange_partition(box_segments(nx, ny, nz, box))[:4].tolist() == [3, 6, 9, 3]
    # whole rows follow each other in the flat space: one segment per level, or one in all
    assert box_segments(nx, ny, nz, Box(0, nx, 1, 4)) == [(7, 21), (42, 21)]
    assert box_segments(nx, ny, nz, Box(0, nx, 0, ny)) == [(0, nx * ny * nz)]


def test_missing_oasis_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLBRIDGE_OASIS_SHIM", raising=False)
    with pytest.raises(OasisNotAvailableError, match="pyoasis is not importable and the shim"):
        find_shim(tmp_path)
    monkeypatch.setenv("MLBRIDGE_OASIS_SHIM", str(tmp_path / "nowhere.so"))
    with pytest.raises(OasisNotAvailableError, match="MLBRIDGE_OASIS_SHIM="):
        find_shim(tmp_path)


# --------------------------------------------------------------------------------------------
# the Fortran side, built once, and real runs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oasis_build(fortran_build: Path) -> Path:
    """The build directory, which must hold the OASIS parts (``make`` installs liboasis3-dev)."""
    for part in (fortran_build / "bin" / "oasis_pure_model", find_shim(fortran_build)):
        assert Path(part).is_file(), (
            f"{part} was not built: CMake did not find OASIS3-MCT "
            "(apt-get install liboasis3-dev libnetcdff-dev, then mlbridge build)"
        )
    return fortran_build


def test_shim_builds_and_loads(oasis_build: Path) -> None:
    shim = find_shim(oasis_build)
    # a fresh interpreter: MPI must not be initialised inside the pytest process
    code = (
        "import sys; from bridge.transport.oasis import ShimOasis; "
        "s = ShimOasis(sys.argv[1]); print(s.info_codes['Ok'], s.info_codes['Recvd'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(shim)],
        capture_output=True,
        text=True,
        env=mpi_env(),
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "3"]


def u_field(kt: int, nx: int, ny: int, nz: int) -> np.ndarray:
    """``upoly`` of oasis_pure_model.F90, C-ordered (nz, ny, nx)."""
    k, j, i = np.meshgrid(np.arange(1, nz + 1), np.arange(ny), np.arange(nx), indexing="ij")
    return 0.5 * i * i + 0.25 * j * j * j + k + 0.125 * kt


def v_field(kt: int, nx: int, ny: int, nz: int) -> np.ndarray:
    """``vpoly`` of oasis_pure_model.F90."""
    k, j, i = np.meshgrid(np.arange(1, nz + 1), np.arange(ny), np.arange(nx), indexing="ij")
    return 0.375 * i * i * i - 0.5 * j * j + 2.0 * i * j + 3.0 * k - 0.25 * kt


def read_received(run_dir: Path, n_model: int, config: OasisCouplingConfig) -> np.ndarray:
    """What the model ranks got: ``(steps, 2 fields, nz, ny, nx)``; NaN where nothing came."""
    steps = config.exchanges
    got = np.full((steps, 2, config.nz, config.ny, config.nx), np.nan)
    for rank in range(n_model):
        lines = (run_dir / f"received_{rank}.txt").read_text().splitlines()
        assert lines[-1] == f"END {steps}", f"model rank {rank} did not finish: {lines[-1:]}"
        for line in lines[1:-1]:
            kt, field, i, j, k, value = line.split()
            got[int(kt) - 1, int(field) - 1, int(k) - 1, int(j) - 1, int(i) - 1] = float(value)
    return got


def namelist_pure(config: OasisCouplingConfig, jpni: int, jpnj: int) -> str:
    snd = ", ".join(f"'{name}'" for name in config.inputs)
    rcv = ", ".join(f"'{name}'" for name in config.outputs.values())
    return (
        "&nampure\n"
        f"  cn_comp = '{config.model_component}'\n"
        f"  nn_nx = {config.nx}, nn_ny = {config.ny}, nn_nz = {config.nz}\n"
        f"  nn_jpni = {jpni}, nn_jpnj = {jpnj}\n"
        f"  nn_it000 = 1, nn_itend = {config.exchanges}, rn_dt = {config.period_s}\n"
        f"  cn_snd = {snd}\n  cn_rcv = {rcv}\n/\n"
    )


def run_job(
    oasis_build: Path,
    run_dir: Path,
    config: OasisCouplingConfig,
    n_model: int,
    n_server: int,
    *,
    jpni: int | None = None,
    jpnj: int = 1,
    namcouple: NamcoupleConfig | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Model + servers in one MPMD job in ``run_dir``; killed (whole group) after the timeout."""
    config_file = prepare_run_dir(config, run_dir)
    if namcouple is not None:
        write_namcouple(namcouple, run_dir)
    jpni = n_model if jpni is None else jpni
    (run_dir / "namelist_pure").write_text(namelist_pure(config, jpni, jpnj))
    model = Program(n_model, (str(oasis_build / "bin" / "oasis_pure_model"),))
    command = mpmd_command([model, server_programs(config_file, run_dir, n_server)])
    extra = {"MLBRIDGE_OASIS_SHIM": str(find_shim(oasis_build)), "PYTHONPATH": str(REPO)}
    extra.update(env or {})
    proc = subprocess.Popen(
        command,
        cwd=run_dir,
        env=mpi_env(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the OASIS job hung for {JOB_TIMEOUT_S} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def expected_output(
    closure: str, kt: int, field: int, config: OasisCouplingConfig, boundary: str = "closed"
) -> np.ndarray:
    """NumPy applied to the global field: zero beyond a closed edge, wrapped when periodic."""
    from bridge.closures.analytic import ANALYTIC, smooth3_op

    halo = ANALYTIC[closure][0]
    shape = (config.nz, config.ny, config.nx)
    a = (u_field, v_field)[field](kt, config.nx, config.ny, config.nz)
    pad = ((0, 0), (halo, halo), (halo, halo))
    if boundary == "periodic":
        return laplacian_op(np.pad(a, pad, mode="wrap"), 1.0)
    padded = np.pad(a, pad)
    if closure == "laplacian":
        return laplacian_op(padded, 1.0)
    mask = np.pad(np.ones(shape), pad)
    return smooth3_op(padded, 1.0, mask)


def assert_served(
    run_dir: Path,
    config: OasisCouplingConfig,
    n_model: int,
    n_server: int,
    proc: subprocess.CompletedProcess[str],
) -> dict[str, object]:
    assert check_outcome(run_dir, proc.returncode) == [], proc.stderr[-3000:]
    got = read_received(run_dir, n_model, config)
    for kt in range(1, config.exchanges + 1):
        for f in (0, 1):
            expected = expected_output(config.closure, kt, f, config, config.boundary)
            np.testing.assert_array_equal(got[kt - 1, f], expected, err_msg=f"kt={kt} field {f}")
    done = json.loads((run_dir / DONE_MARKER).read_text())
    assert done["exchanges"] == config.exchanges and done["server_ranks"] == n_server
    assert done["backend"] == "shim"
    return done


@pytest.mark.parametrize("halo_exchange", ["oasis", "mpi"])
@pytest.mark.parametrize(
    ("n_model", "jpni", "jpnj", "n_server"),
    [(1, 1, 1, 1), (2, 2, 1, 1), (1, 1, 1, 2), (2, 1, 2, 2)],
    ids=["N1-M1", "N2x1-M1", "N1-M2", "N1x2-M2"],
)
def test_pure_oasis_model_gets_the_laplacian(
    oasis_build: Path,
    tmp_path: Path,
    n_model: int,
    jpni: int,
    jpnj: int,
    n_server: int,
    halo_exchange: str,
) -> None:
    table = oasis_table(jpni=jpni, jpnj=jpnj, halo_exchange=halo_exchange)
    config = OasisCouplingConfig.from_mapping(table)
    proc = run_job(oasis_build, tmp_path, config, n_model, n_server, jpni=jpni, jpnj=jpnj)
    done = assert_served(tmp_path, config, n_model, n_server, proc)
    assert done["halo_exchange"] == halo_exchange


def test_wide_halo_with_mask_across_servers(oasis_build: Path, tmp_path: Path) -> None:
    # smooth3: halo 3 and the server-supplied mask, 2 x 2 model ranks, 2 servers, OASIS halos
    config = OasisCouplingConfig.from_mapping(
        oasis_table(
            jpni=2,
            jpnj=2,
            closure="smooth3",
            outputs={"smooth_u": "O_UTND", "smooth_v": "O_VTND"},
        )
    )
    proc = run_job(oasis_build, tmp_path, config, 4, 2, jpni=2, jpnj=2)
    assert assert_served(tmp_path, config, 4, 2, proc)["halo_exchange"] == "oasis"


def test_periodic_boundary_wraps_through_mpi_halos(oasis_build: Path, tmp_path: Path) -> None:
    config = OasisCouplingConfig.from_mapping(oasis_table(jpni=2, boundary="periodic"))
    proc = run_job(oasis_build, tmp_path, config, 2, 2, jpni=2)
    assert assert_served(tmp_path, config, 2, 2, proc)["halo_exchange"] == "mpi"


def test_longest_field_name_couples(oasis_build: Path, tmp_path: Path) -> None:
    name = "U" * 124  # the servers call it MLB_ + name: 128 characters, the most OASIS keeps
    config = OasisCouplingConfig.from_mapping(oasis_table(inputs={name: "u", "O_V": "v"}))
    proc = run_job(oasis_build, tmp_path, config, 1, 1)
    assert check_outcome(tmp_path, proc.returncode) == [], proc.stderr[-3000:]
    got = read_received(tmp_path, 1, config)
    padded = np.zeros((config.nz, config.ny + 2, config.nx + 2))
    padded[:, 1:-1, 1:-1] = u_field(1, config.nx, config.ny, config.nz)
    np.testing.assert_array_equal(got[0, 0], laplacian_op(padded, 1.0))


def test_oasis_abort_with_exit_status_zero_is_detected(oasis_build: Path, tmp_path: Path) -> None:
    # the model is told 1 x 1 ranks but runs on 2: it calls oasis_abort, which exits 0 here
    config = OasisCouplingConfig.from_mapping(oasis_table())
    proc = run_job(oasis_build, tmp_path, config, 2, 1, jpni=1, jpnj=1)
    assert "nn_jpni x nn_jpnj = 1 x 1 but the component has 2 ranks" in proc.stderr
    problems = check_outcome(tmp_path, proc.returncode)
    assert any(DONE_MARKER in p for p in problems), problems
    assert (
        not (tmp_path / "received_0.txt").exists()
        or "END" not in (tmp_path / "received_0.txt").read_text()
    )


def test_server_failure_is_reported_even_with_exit_status_zero(
    oasis_build: Path, tmp_path: Path
) -> None:
    config = OasisCouplingConfig.from_mapping(oasis_table(params={"coefficient": float("nan")}))
    proc = run_job(oasis_build, tmp_path, config, 1, 1)
    problems = check_outcome(tmp_path, proc.returncode)
    # the engine's NaN policy, as for a model linking the library: field, step, point, count
    assert any(
        "NaN in closure output for 'O_UTND' at step 1, model rank 0, global (i, j, k) = (1, 1, 1)"
        in p
        and "360 non-finite" in p
        for p in problems
    ), problems
    assert any(DONE_MARKER in p for p in problems)
    assert "END" not in (tmp_path / "received_0.txt").read_text()


@pytest.mark.parametrize(("n_model", "n_server"), [(1, 1), (2, 2)])
def test_on_nan_zero_serves_zeros_to_an_oasis_only_model(
    oasis_build: Path, tmp_path: Path, n_model: int, n_server: int
) -> None:
    # every output is NaN; on_nan = "zero" hands the model zeros and counts them
    table = oasis_table(params={"coefficient": float("nan")}, on_nan="zero", jpni=n_model)
    config = OasisCouplingConfig.from_mapping(table)
    proc = run_job(oasis_build, tmp_path, config, n_model, n_server, jpni=n_model)
    assert check_outcome(tmp_path, proc.returncode) == [], proc.stderr[-3000:]
    got = read_received(tmp_path, n_model, config)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, np.zeros_like(got))
    points = config.nx * config.ny * config.nz
    done = json.loads((tmp_path / DONE_MARKER).read_text())
    assert done["nan_replaced"] == 2 * points * config.exchanges
    assert "replaced 2160 NaN value(s) by zero" in proc.stdout
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["nan_replaced"] == 2160 and timing["server"]["exchanges"] == 3


def test_namcouple_that_disagrees_is_reported_field_by_field(
    oasis_build: Path, tmp_path: Path
) -> None:
    config = OasisCouplingConfig.from_mapping(oasis_table())
    expected = config.namcouple()
    edited = dataclasses.replace(
        expected,
        fields=(dataclasses.replace(expected.fields[0], freq_s=1800), *expected.fields[1:]),
    )
    proc = run_job(oasis_build, tmp_path, config, 1, 1, namcouple=edited)
    error = (tmp_path / ERROR_FILE).read_text()
    assert "field O_U -> MLB_O_U: freq_s: config 3600, namcouple 1800" in error
    assert "namcouple" in proc.stderr
    assert check_outcome(tmp_path, proc.returncode)


def test_missing_shim_stops_the_job_with_a_clear_error(oasis_build: Path, tmp_path: Path) -> None:
    config = OasisCouplingConfig.from_mapping(oasis_table())
    proc = run_job(
        oasis_build,
        tmp_path,
        config,
        1,
        1,
        env={"MLBRIDGE_OASIS_SHIM": "", "MLBRIDGE_BUILD_DIR": str(tmp_path / "empty")},
    )
    problems = check_outcome(tmp_path, proc.returncode)
    assert any("pyoasis is not importable and the shim libmlb_oasis_shim.so" in p for p in problems)
