"""The toy ocean model coupled to inference servers, under real mpirun, through the launcher.

The in-process closures of the toy (``&nammlb_test cn_mlb_inproc``, ``infclosure.F90``) compute the
same operations as the Python analytic closures in the same order, so a coupled run must give
the in-process run's bits for any number of model ranks N and server ranks M. The tendencies the
model used are in its NetCDF output (``u_tend``, ``v_tend``, ``h_tend``), so lag and every are
checked against the closure applied to the model's own output. The failure tests check that
every way a coupled run can go wrong ends the whole job non-zero, quickly, with a message that
names what is wrong.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from toy_helpers import COARSE_CFG, NAMELIST_REF, SMALL_BASIN, merge, read_nc

import bridge.launch.launcher as launcher_module
from bridge.closures.analytic import laplacian_op, smooth3_op
from bridge.config.coupling import ConfigError, CouplingConfig
from bridge.config.namelist import write_patched_cfg
from bridge.launch.checks import DEFAULT_CHECKS, check_exchange_fields, find_problems
from bridge.launch.launcher import RunResult, launch

REPO = Path(__file__).resolve().parents[1]
COEF = 2.0e-5  # s-1: visible tendencies, stable over a few steps
PREFIX = {"laplacian": "lap", "smooth3": "smooth"}
FIELDS = ("u", "v", "h", "u_tend", "v_tend", "h_tend")

pytestmark = pytest.mark.usefixtures("fortran_build")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def make_case(
    path: Path,
    *,
    steps: int = 6,
    nz: int = 3,
    write: int = 1,
    nammlb: Mapping[str, Any] | None = None,
    nammlb_test: Mapping[str, Any] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """A directory with a ``namelist_cfg``: the small basin, ``steps`` steps, output every step."""
    path.mkdir(parents=True, exist_ok=True)
    patch = merge(
        SMALL_BASIN,
        {
            "namrun": {"cn_exp": "TOY", "nn_itend": steps, "nn_write": write, "nn_stock": 0},
            "namusr_def": {"nn_nz": nz},
            "nammlb": {"cn_mlb_snd": ["u", "v", ""], "cn_mlb_rcv": ["u_tend", "v_tend", ""]},
        },
        {"nammlb": dict(nammlb or {}), "nammlb_test": dict(nammlb_test or {})},
        dict(extra or {}),
    )
    write_patched_cfg(COARSE_CFG, patch, path / "namelist_cfg")
    return path


def exchange(closure: str, fields: tuple[str, ...] = ("u", "v"), **options: Any) -> dict[str, Any]:
    """An ``[[exchange]]`` table: ``closure`` on ``fields``, outputs into ``<field>_tend``."""
    prefix = PREFIX.get(closure, closure)
    return {
        "closure": closure,
        "inputs": {f: f for f in fields},
        "outputs": {f"{prefix}_{f}": f"{f}_tend" for f in fields},
        "params": {"coefficient": COEF},
        **options,
    }


def config_for(
    case: Path,
    n: int,
    m: int = 1,
    exchanges: list[dict[str, Any]] | None = None,
    *,
    timeout_s: float = 20.0,
    model: Mapping[str, Any] | None = None,
) -> CouplingConfig:
    data: dict[str, Any] = {
        "model": {
            "executable": "toy_nemo",
            "ranks": n,
            "namelist_cfg": "namelist_cfg",
            **(model or {}),
        },
        "server": {"ranks": m, "timeout_s": timeout_s},
        "run": {"workdir": str(case / "runs")},
    }
    data["model"].update(model or {})
    if exchanges:
        data["exchange"] = exchanges
    return CouplingConfig.from_dict(data, base_dir=case)


def run(config: CouplingConfig) -> RunResult:
    from conftest import build_dir

    return launch(config, quiet=True, build_dir=build_dir())


def logs(result: RunResult) -> str:
    """Every rank's stdout and stderr, mpirun's log and ocean.output, for messages."""
    parts = []
    for log in result.rank_logs:
        for f in (log.stdout, log.stderr):
            if f.is_file():
                parts.append(f"--- {log.label} {f.name}\n{f.read_text(errors='replace')}")
    for name in ("mpirun.log", "ocean.output"):
        f = result.run_dir / name
        if f.is_file():
            parts.append(f"--- {name}\n{f.read_text(errors='replace')}")
    return "\n".join(parts)


def output(result: RunResult) -> dict[str, np.ndarray]:
    assert result.returncode == 0, logs(result)[-4000:]
    return read_nc(result.run_dir / "TOY_grid.nc", FIELDS)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal to 1e-13 of the field's largest value (float64)."""
    scale = max(float(np.abs(expected).max()), 1e-300)
    err = float(np.abs(actual - expected).max()) / scale
    assert err <= 1e-13, f"{what}: relative difference {err:.3e}"


def closure_global(name: str, x: np.ndarray) -> np.ndarray:
    """The closure on whole closed-basin fields ``(nz, ny, nx)`` (zero beyond the edge)."""
    if name == "laplacian":
        return laplacian_op(np.pad(x, ((0, 0), (1, 1), (1, 1))), COEF)
    mask = np.zeros(x.shape[1:])
    mask[1:-1, 1:-1] = 1.0  # the toy's tmask: ocean inside the 1-point land rim
    mask3 = np.pad(np.broadcast_to(mask, x.shape), ((0, 0), (3, 3), (3, 3)))
    return smooth3_op(np.pad(x, ((0, 0), (3, 3), (3, 3))), COEF, mask3)


# --------------------------------------------------------------------------------------------
# coupled == in process, for N model ranks and M server ranks
# --------------------------------------------------------------------------------------------

# the full grid: every N in {1, 2, 4} with every M in {1, 2, 3}, for each halo width
LAYOUTS = {
    closure: [(n, m) for n in (1, 2, 4) for m in (1, 2, 3)] for closure in ("laplacian", "smooth3")
}


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """The in-process reference of each closure (1 rank: the toy is decomposition-independent)."""
    refs = {}
    for closure in LAYOUTS:
        case = make_case(
            tmp_path_factory.mktemp(f"ref_{closure}"),
            nammlb_test={"cn_mlb_inproc": closure, "rn_mlb_coef": COEF},
        )
        refs[closure] = output(run(config_for(case, 1)))
    return refs


@pytest.mark.parametrize(
    ("closure", "n", "m"), [(c, n, m) for c, pairs in LAYOUTS.items() for n, m in pairs]
)
def test_coupled_equals_inprocess(
    tmp_path: Path, inprocess: dict[str, dict[str, np.ndarray]], closure: str, n: int, m: int
) -> None:
    result = run(config_for(make_case(tmp_path), n, m, [exchange(closure)]))
    got, ref = output(result), inprocess[closure]
    assert np.abs(ref["u_tend"]).max() > 0, "the reference closure did nothing"
    for name in ("u", "v", "h", "u_tend", "v_tend"):
        assert_close(got[name], ref[name], f"{closure} N={n} M={m} {name}")
    assert not got["h_tend"].any()  # not received: zero


def test_inprocess_closure_is_the_python_closure(
    inprocess: dict[str, dict[str, np.ndarray]],
) -> None:
    """The toy's own closures give the Python closures' values (on the model's output)."""
    for closure, out in inprocess.items():
        for s in range(1, out["u"].shape[0]):  # inputs of step s+1 are the outputs of step s
            for f in ("u", "v"):
                assert_close(out[f"{f}_tend"][s], closure_global(closure, out[f][s - 1]), closure)


# --------------------------------------------------------------------------------------------
# lag and every
# --------------------------------------------------------------------------------------------


def test_lag1_returns_previous_exchange(tmp_path: Path) -> None:
    result = run(config_for(make_case(tmp_path, steps=6), 2, 2, [exchange("laplacian", lag=1)]))
    out = output(result)
    assert not out["u_tend"][0].any()  # step 1: nothing received yet
    for s in range(2, 6):  # step s+1 gets the outputs computed from the inputs of step s
        expected = closure_global("laplacian", out["u"][s - 2])
        assert_close(out["u_tend"][s], expected, f"lag 1, step {s + 1}")
        assert np.abs(out["u_tend"][s] - closure_global("laplacian", out["u"][s - 1])).max() > 0


def test_every3_exchanges_on_due_steps_and_holds(tmp_path: Path) -> None:
    case = make_case(tmp_path, steps=9, nammlb={"nn_mlb_every": 3})
    result = run(config_for(case, 2, 1, [exchange("laplacian", every=3)]))
    out = output(result)
    assert read_steps(result) == [1, 4, 7]
    for s in range(9):
        kt = s + 1
        due = 1 + 3 * ((kt - 1) // 3)
        if due == 1:  # fields of step 1 are the state at rest: u = 0
            assert not out["u_tend"][s].any()
        else:
            expected = closure_global("laplacian", out["u"][due - 2])
            assert_close(out["u_tend"][s], expected, f"every 3, step {kt}")


def read_steps(result: RunResult) -> list[int]:
    import json

    data = json.loads((result.run_dir / "timing_steps.json").read_text())
    return [int(k) for k in data["servers"][0]["kt"]]


# --------------------------------------------------------------------------------------------
# handshake mismatches: every rank ends non-zero within seconds, both values named
# --------------------------------------------------------------------------------------------


def assert_failed_fast(result: RunResult, limit_s: float, *needles: str) -> str:
    text = logs(result)
    assert result.returncode != 0, text[-3000:]
    assert result.elapsed < limit_s, f"took {result.elapsed:.1f} s\n{text[-3000:]}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in the logs:\n{text[-4000:]}"
    return text


def test_handshake_unknown_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {"closure": "laplacian", "inputs": {"u": "t"}, "outputs": {"lap_u": "u_tend"}}
    config = config_for(make_case(tmp_path), 2, 1, [bad])
    # caught before anything starts, reading &nammlb ...
    with pytest.raises(ConfigError, match=r"'t'.*cn_mlb_snd"):
        run(config)
    # ... and by the handshake when that check is skipped
    original = launcher_module.validate_before_launch

    def without_field_check(*args: Any, **kwargs: Any) -> None:
        checks = kwargs.get("checks", DEFAULT_CHECKS)
        kwargs["checks"] = tuple(c for c in checks if c is not check_exchange_fields)
        original(*args, **kwargs)

    monkeypatch.setattr(launcher_module, "validate_before_launch", without_field_check)
    result = run(config)
    assert_failed_fast(result, 10.0, "model field 't'", "does not define", "u (send)")
    # told on both sides: model rank 0 (once for all model ranks, as NEMO) and server rank 0
    for log in (result.rank_logs[0], next(g for g in result.rank_logs if g.program == "server")):
        assert "model field 't'" in log.stderr.read_text(), f"{log.label} was not told"


def test_handshake_wrong_levels(tmp_path: Path) -> None:
    case = make_case(tmp_path, nammlb={"nn_mlb_lev": [1, 0, 0]})
    result = run(config_for(case, 2, 2, [exchange("laplacian", ("u",))]))
    assert_failed_fast(result, 10.0, "'u_tend' has 3 levels", "'u' has 1")


def test_handshake_wrong_grid(tmp_path: Path, toy_exe: Path) -> None:
    """The model reads another namelist (a 25 x 17 grid) than the coupling file's (23 x 17)."""
    case = make_case(tmp_path)
    wrapper = tmp_path / "toy_other_grid.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        'd="model_$OMPI_COMM_WORLD_RANK"; mkdir -p "$d" && cp namelist_ref "$d"/ && '
        'sed \'s/nn_nx *= *23/nn_nx = 25/\' namelist_cfg > "$d"/namelist_cfg && cd "$d" && '
        f'exec "{toy_exe}"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    result = run(
        config_for(case, 2, 1, [exchange("laplacian")], model={"executable": str(wrapper)})
    )
    assert_failed_fast(result, 10.0, "gives 23 x 17", "reports 25 x 17")


# --------------------------------------------------------------------------------------------
# no hang: a model that never calls mlb_init, a server rank that dies
# --------------------------------------------------------------------------------------------


def test_model_that_never_joins_does_not_hang(tmp_path: Path) -> None:
    """A namelist without ln_mlb: the launcher cannot switch it on, the model runs alone."""
    case = make_case(tmp_path)
    ref = "\n".join(
        line
        for line in NAMELIST_REF.read_text().splitlines()
        if not line.strip().startswith("ln_mlb")
    )
    (case / "namelist_ref").write_text(ref + "\n")
    cfg = case / "namelist_cfg"
    cfg.write_text(
        "\n".join(line for line in cfg.read_text().splitlines() if "ln_mlb" not in line) + "\n"
    )
    config = config_for(
        case, 2, 2, [exchange("laplacian")], timeout_s=3.0, model={"namelist_ref": "namelist_ref"}
    )
    result = run(config)
    assert_failed_fast(result, 15.0, "model ranks did not call mlb_init within 3 s", "ln_mlb")


def test_server_rank_killed(tmp_path: Path) -> None:
    case = make_case(tmp_path, steps=200_000, write=5)
    config = config_for(case, 2, 2, [exchange("laplacian")], timeout_s=10.0)
    killed: dict[str, float] = {}

    def kill_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for run_dir in (case / "runs").glob("*"):
                pid_file, step_file = run_dir / "server.1.pid", run_dir / "time.step"
                try:
                    ready = pid_file.is_file() and int(step_file.read_text().split()[0]) >= 20
                except (OSError, ValueError, IndexError):
                    ready = False
                if ready:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                    killed["at"] = time.monotonic()
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_when_running, daemon=True)
    thread.start()
    result = run(config)
    end = time.monotonic()
    thread.join(5)
    assert "at" in killed, "the run ended before a server rank could be killed"
    assert result.returncode != 0
    assert end - killed["at"] < 30.0, f"the job took {end - killed['at']:.1f} s to end"
    import xarray as xr

    with xr.open_dataset(result.run_dir / "TOY_grid.nc") as ds:
        assert ds.sizes["time_counter"] >= 1
        assert np.isfinite(ds["u"].isel(time_counter=-1).values).all()


# --------------------------------------------------------------------------------------------
# NaN in a sent field
# --------------------------------------------------------------------------------------------

NAN_AT = {"nn_mlb_nan_kt": 3, "nn_mlb_nan_i": 15, "nn_mlb_nan_j": 8, "nn_mlb_nan_k": 2}


def test_nan_abort_names_step_field_rank_point(tmp_path: Path) -> None:
    case = make_case(tmp_path, nammlb_test={**NAN_AT, "cn_mlb_nan_fld": "v"})
    result = run(config_for(case, 2, 2, [exchange("laplacian")]))
    # 23 x 17 on 2 ranks is split 2 x 1: i = 15 is on model rank 1
    assert_failed_fast(
        result, 15.0, "NaN in model field 'v' at step 3, model rank 1", "(i, j, k) = (15, 8, 2)"
    )


def test_nan_zero_goes_on_and_counts(tmp_path: Path) -> None:
    case = make_case(tmp_path, nammlb_test={**NAN_AT, "cn_mlb_nan_fld": "u"})
    result = run(config_for(case, 2, 2, [exchange("laplacian", on_nan="zero")]))
    out = output(result)
    assert np.isfinite(out["u"]).all()
    assert "replaced 1 NaN value(s) by zero" in logs(result)
    assert result.timing is not None and result.timing["nan_replaced"] == 1


# --------------------------------------------------------------------------------------------
# bad input through `mlbridge run`
# --------------------------------------------------------------------------------------------


def write_toml(case: Path, text: str) -> Path:
    path = case / "coupling.toml"
    path.write_text(text)
    return path


TOML = """
[model]
executable = "{exe}"
ranks = 1
namelist_cfg = "{cfg}"
[server]
ranks = 1
timeout_s = 10.0
[run]
workdir = "runs"
[[exchange]]
closure = "{closure}"
inputs = {{ u = "{field}" }}
outputs = {{ lap_u = "u_tend" }}
"""


GOOD = {"exe": "toy_nemo", "cfg": "namelist_cfg", "closure": "laplacian", "field": "u"}


def mlbridge_run(
    path: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    from conftest import build_dir

    environ = {**os.environ, "MLBRIDGE_BUILD_DIR": str(build_dir()), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", "-q", str(path)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("values", "env", "needles"),
    [
        ({"exe": "/nonexistent/toy_nemo"}, None, ["/nonexistent/toy_nemo", "does not exist"]),
        ({"cfg": "no_such_namelist_cfg"}, None, ["no_such_namelist_cfg"]),
        ({"field": "t"}, None, ["'t'", "cn_mlb_snd"]),
        ({}, {"MLBRIDGE_MPIRUN": "/nonexistent/mpirun"}, ["/nonexistent/mpirun"]),
    ],
    ids=["missing-executable", "unreadable-namelist", "undefined-field", "no-mpirun"],
)
def test_bad_input_refused_before_launch(
    tmp_path: Path, values: dict[str, str], env: dict[str, str] | None, needles: list[str]
) -> None:
    make_case(tmp_path)
    fill = {
        "exe": "toy_nemo",
        "cfg": "namelist_cfg",
        "closure": "laplacian",
        "field": "u",
        **values,
    }
    t0 = time.perf_counter()
    proc = mlbridge_run(write_toml(tmp_path, TOML.format(**fill)), env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.perf_counter() - t0 < 30
    for needle in needles:
        assert needle in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_unknown_closure_refused_before_launch(tmp_path: Path) -> None:
    make_case(tmp_path)
    proc = mlbridge_run(write_toml(tmp_path, TOML.format(**{**GOOD, "closure": "no_such_closure"})))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no_such_closure" in proc.stdout + proc.stderr


def test_server_that_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers die at import (a broken mpi4py): the model, waiting in mlb_init, is stopped."""
    broken = tmp_path / "broken" / "mpi4py"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("mpi4py broken on purpose (test)")\n')
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    result = run(config_for(make_case(tmp_path), 2, 1, [exchange("laplacian")]))
    assert_failed_fast(result, 20.0, "mpi4py broken on purpose")


def test_validate_reads_nammlb(tmp_path: Path) -> None:
    case = make_case(tmp_path, nammlb={"nn_mlb_every": 2})
    bad = {"closure": "laplacian", "inputs": {"u": "h"}, "outputs": {"lap_u": "w_tend"}}
    problems = find_problems(config_for(case, 1, 1, [bad]), checks=(check_exchange_fields,))
    text = "\n".join(problems)
    assert "'h', which the model does not send" in text  # h is not in cn_mlb_snd here
    assert "'w_tend', which the model does not receive" in text
    assert "exchange[0].every = 1, but the model exchanges every 2 steps" in text


# --------------------------------------------------------------------------------------------
# the example
# --------------------------------------------------------------------------------------------


def test_example_coupled_laplacian(tmp_path: Path) -> None:
    from conftest import build_dir

    example = REPO / "examples" / "03_coupled_laplacian" / "coupling.toml"
    result = launch(example, steps=30, workdir=tmp_path, quiet=True, build_dir=build_dir())
    assert result.returncode == 0, logs(result)[-3000:]
    grid = next(result.run_dir.glob("*_grid.nc"))
    out = read_nc(grid, ("u", "u_tend", "v_tend"))
    assert np.abs(out["u_tend"]).max() > 0
    assert (result.run_dir / "timing.json").is_file()
