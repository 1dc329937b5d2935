"""Coupled restarts continue bit for bit: 2N steps in one job == N steps + restart + N steps.

The toy model saves the coupling's state at its restart steps (``rst.F90`` through ``infmod``:
the schedule's origin, the outputs held between exchanges and, with lag 1, the outputs in
flight, waited for at the restart step) and gives it back when it restarts (``mlb_def_restart``,
``mlb_load_outputs``), so the restarted run takes the exchanges on the first run's steps and
the tendencies it would have had. Each case restarts on other numbers of model and server
ranks than the first half ran on; with ``every = 7`` the restart step (17) is not an exchange
step. Where a restart cannot continue exactly the run says so before the first step: the
coupling starts cold with a warning, or the servers refuse a closure that keeps state.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlbridge_models.zanna_bolton import manifest_toml
from test_coupling_toy import (
    COEF,
    assert_failed_fast,
    config_for,
    exchange,
    logs,
    make_case,
    run,
)
from toy_helpers import read_nc

from bridge.closures.base import ClosureSpec, FieldSpec
from bridge.config.coupling import CouplingConfig, ExchangeConfig
from bridge.launch.launcher import RunResult
from bridge.protocol.handshake import check_restart, parse_report

REPO = Path(__file__).resolve().parents[1]
N = 17  # steps of each half; every = 7: exchanges at 1, 8, 15, 22, 29, the restart between
GRID = ("u", "v", "h", "u_tend", "v_tend")
RESTART = (
    *("u", "v", "h", "ua_b1", "va_b1", "ha_b1", "ua_b2", "va_b2", "ha_b2"),
    *("mlb_origin", "mlb_every", "mlb_lag", "mlb_held_u_tend", "mlb_held_v_tend"),
)
WARNING = "W A R N I N G"


def coupled_case(
    path: Path,
    every: int,
    first: int,
    last: int,
    restart: Path | None = None,
    test: dict[str, Any] | None = None,
    **nammlb: Any,
) -> Path:
    """Steps ``first`` to ``last`` of the toy (u, v sent; u_tend, v_tend received), output every
    step, a restart file at the last one; started from ``restart`` when given; ``test``:
    ``&nammlb_test``."""
    namrun: dict[str, Any] = {"nn_it000": first, "nn_stock": last}
    if restart is not None:
        namrun |= {"ln_rstart": True, "cn_ocerst_in": str(restart)}
    return make_case(
        path,
        steps=last,
        nammlb={"nn_mlb_every": every, **nammlb},
        nammlb_test=test,
        extra={"namrun": namrun},
    )


def laplacian_run(
    case: Path, ranks: tuple[int, int], lag: int, every: int, ok: bool = True
) -> RunResult:
    """The laplacian closure on u and v, on (model, server) ``ranks``."""
    result = run(config_for(case, *ranks, [exchange("laplacian", lag=lag, every=every)]))
    if ok:
        assert result.returncode == 0, logs(result)[-4000:]
    return result


def restart_file(result: RunResult, kt: int) -> Path:
    return result.run_dir / f"TOY_{kt:08d}_restart.nc"


# --------------------------------------------------------------------------------------------
# bit for bit
# --------------------------------------------------------------------------------------------

# (lag, every): (model, server) ranks of the run in one go, of the first half, of the second
LAYOUTS = {
    (0, 1): ((1, 1), (2, 1), (1, 2)),
    (0, 7): ((2, 2), (1, 1), (2, 2)),
    (1, 1): ((1, 2), (2, 2), (1, 1)),
    (1, 7): ((2, 1), (1, 2), (2, 1)),
}


@pytest.mark.parametrize(
    ("lag", "every"), list(LAYOUTS), ids=[f"lag{lag}-every{every}" for lag, every in LAYOUTS]
)
def test_restart_continues_bit_for_bit(
    tmp_path: Path, fortran_build: Path, lag: int, every: int
) -> None:
    whole, half1, half2 = LAYOUTS[(lag, every)]
    straight = laplacian_run(
        coupled_case(tmp_path / "straight", every, 1, 2 * N), whole, lag, every
    )
    first = laplacian_run(coupled_case(tmp_path / "first", every, 1, N), half1, lag, every)
    case = coupled_case(tmp_path / "second", every, N + 1, 2 * N, restart_file(first, N))
    second = laplacian_run(case, half2, lag, every)

    a = read_nc(straight.run_dir / "TOY_grid.nc", GRID)
    b = read_nc(second.run_dir / "TOY_grid.nc", GRID)
    assert b["u"].shape[0] == N
    # the step after the restart gets the tendencies of the run in one go, not zeros
    assert np.abs(b["u_tend"][0]).max() > 0
    for name in GRID:
        np.testing.assert_array_equal(b[name], a[name][N:], err_msg=f"{name} after the restart")
    names = RESTART + (("mlb_pending_u_tend", "mlb_pending_v_tend") if lag else ())
    ra = read_nc(restart_file(straight, 2 * N), names)
    rb = read_nc(restart_file(second, 2 * N), names)
    for name in names:
        np.testing.assert_array_equal(rb[name], ra[name], err_msg=f"restart {name}")
    assert (int(rb["mlb_origin"]), int(rb["mlb_every"]), int(rb["mlb_lag"])) == (1, every, lag)
    assert WARNING not in logs(second)


def test_inprocess_closure_restarts_bit_for_bit(tmp_path: Path, fortran_build: Path) -> None:
    """The toy's in-process closure (the coupled runs' reference) saves its state the same way."""
    test = {"cn_mlb_inproc": "laplacian", "rn_mlb_coef": COEF}

    def alone(case: Path, ranks: int) -> RunResult:
        result = run(config_for(case, ranks, 1, []))
        assert result.returncode == 0, logs(result)[-4000:]
        return result

    straight = alone(coupled_case(tmp_path / "straight", 7, 1, 2 * N, test=test), 1)
    first = alone(coupled_case(tmp_path / "first", 7, 1, N, test=test), 2)
    restart = restart_file(first, N)
    second = alone(coupled_case(tmp_path / "second", 7, N + 1, 2 * N, restart, test), 1)
    a = read_nc(straight.run_dir / "TOY_grid.nc", GRID)
    b = read_nc(second.run_dir / "TOY_grid.nc", GRID)
    assert np.abs(b["u_tend"][0]).max() > 0
    for name in GRID:
        np.testing.assert_array_equal(b[name], a[name][N:], err_msg=f"in process: {name}")


# --------------------------------------------------------------------------------------------
# where a restart cannot continue exactly: a warning, or a refusal, before the first step
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("why", ["ln_mlb_rst-false", "uncoupled-restart"])
def test_cold_restart_warns_before_the_first_step(
    tmp_path: Path, fortran_build: Path, why: str
) -> None:
    """Lag 1: a cold start has no outputs at the first exchange: zero tendencies, and a warning."""
    first_case = coupled_case(tmp_path / "first", 1, 1, N)
    if why == "uncoupled-restart":  # the model alone: its restart holds no coupling state
        first = run(config_for(first_case, 1, 1, []))
        assert first.returncode == 0, logs(first)[-4000:]
        nammlb: dict[str, Any] = {}
        needle = "holds no coupling state (written by a run without closures)"
    else:
        first = laplacian_run(first_case, (1, 1), 1, 1)
        nammlb = {"ln_mlb_rst": False}
        needle = "&nammlb ln_mlb_rst = .false."
    case = coupled_case(tmp_path / "second", 1, N + 1, N + 3, restart_file(first, N), **nammlb)
    second = laplacian_run(case, (1, 1), 1, 1)
    text = logs(second)
    assert needle in text and f"the coupling starts cold at step {N + 1}" in text, text[-3000:]
    model_stderr = second.rank_logs[0].stderr.read_text()
    assert WARNING in model_stderr and "differs from one done in one go" in model_stderr
    assert WARNING in (second.run_dir / "ocean.output").read_text()
    out = read_nc(second.run_dir / "TOY_grid.nc", ("u_tend",))["u_tend"]
    assert not out[0].any() and np.abs(out[1]).max() > 0


def register_stateful(tmp_path: Path) -> Path:
    """A registry holding the Zanna & Bolton closure declared ``stateful = true``."""
    manifest = tmp_path / "zanna_bolton.toml"
    text = manifest_toml().replace('dtype = "float64"\n', 'dtype = "float64"\nstateful = true\n')
    assert "stateful = true" in text
    manifest.write_text(text)
    home = tmp_path / "registry"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "register", "--manifest", str(manifest)]
        + ["--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home


def test_stateful_closure_refused_on_restart(tmp_path: Path, fortran_build: Path) -> None:
    home = register_stateful(tmp_path)
    first = laplacian_run(coupled_case(tmp_path / "first", 1, 1, 4), (1, 1), 0, 1)
    case = coupled_case(tmp_path / "second", 1, 5, 8, restart_file(first, 4))
    stateful = {
        "closure": "zanna_bolton@1",
        "inputs": {"u": "u", "v": "v"},
        "outputs": {"su": "u_tend", "sv": "v_tend"},
    }
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": "toy_nemo", "ranks": 2, "namelist_cfg": "namelist_cfg"},
            "server": {"ranks": 1, "timeout_s": 20.0, "registry": str(home)},
            "run": {"workdir": str(case / "runs")},
            "exchange": [stateful],
        },
        base_dir=case,
    )
    result = run(config)
    text = assert_failed_fast(
        result, 20.0, "closure 'zanna_bolton' keeps state between calls", "ln_mlb_rst = .false."
    )
    assert "nemo_init: initialisation done" not in text  # refused before the first step


# --------------------------------------------------------------------------------------------
# the handshake's restart check, without MPI
# --------------------------------------------------------------------------------------------

REPORT = "mlbridge-report 2\nrank 0\ngrid 4 3\nbox 0 0 4 3\nmask 0\n"


def _exchange(every: int = 1, lag: int = 0) -> ExchangeConfig:
    return ExchangeConfig(
        closure="c", inputs={"u": "u"}, outputs={"o": "u_tend"}, every=every, lag=lag
    )


def _spec(stateful: bool) -> ClosureSpec:
    return ClosureSpec("c", 0, (FieldSpec("u"),), (FieldSpec("o"),), stateful=stateful)


def test_report_says_restart_and_origin() -> None:
    assert parse_report(REPORT).restart_origin is None
    assert parse_report(REPORT + "restart 11\n").restart_origin == 11


def test_check_restart() -> None:
    fresh, restarted = parse_report(REPORT), parse_report(REPORT + "restart 1\n")
    stateful = {"c": _spec(True)}
    assert check_restart([fresh], [_exchange()], stateful, "mpi") == []
    assert check_restart([restarted], [_exchange(7, 1)], {"c": _spec(False)}, "mpi") == []
    (problem,) = check_restart([restarted], [_exchange()], stateful, "mpi")
    assert "closure 'c' keeps state" in problem and "origin is step 1" in problem
    assert check_restart([restarted], [_exchange()], {"c": _spec(False)}, "oasis") == []
    (problem,) = check_restart([restarted], [_exchange(1, 1)], {"c": _spec(False)}, "oasis")
    assert "transport = 'oasis' with every = 1, lag = 1" in problem
    other = parse_report(REPORT.replace("rank 0", "rank 1") + "restart 3\n")
    assert "other schedule origins" in check_restart([restarted, other], [], {}, "mpi")[0]


def test_oasis_restart_exact_or_refused(tmp_path: Path, fortran_build: Path) -> None:
    """``transport = "oasis"``: every 1, lag 0 continues exactly; lag 1 is refused, fast."""
    straight = laplacian_run(coupled_case(tmp_path / "straight", 1, 1, 2 * N), (1, 1), 0, 1)

    def oasis_run(case: Path, ranks: tuple[int, int], lag: int) -> RunResult:
        config = config_for(case, *ranks, [exchange("laplacian", lag=lag)])
        return run(dataclasses.replace(config, transport="oasis"))

    first = oasis_run(coupled_case(tmp_path / "first", 1, 1, N), (2, 1), 0)
    assert first.returncode == 0, logs(first)[-4000:]
    case = coupled_case(tmp_path / "second", 1, N + 1, 2 * N, restart_file(first, N))
    second = oasis_run(case, (1, 2), 0)
    assert second.returncode == 0, logs(second)[-4000:]
    a = read_nc(straight.run_dir / "TOY_grid.nc", GRID)
    b = read_nc(second.run_dir / "TOY_grid.nc", GRID)
    for name in GRID:
        np.testing.assert_array_equal(b[name], a[name][N:], err_msg=f"oasis: {name}")

    refused = oasis_run(
        coupled_case(tmp_path / "lag1", 1, N + 1, 2 * N, restart_file(first, N)), (1, 1), 1
    )
    assert_failed_fast(refused, 20.0, "transport = 'oasis' with every = 1, lag = 1")
