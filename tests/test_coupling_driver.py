"""The coupling library and the servers, driven by ``mlb_driver`` (a synthetic model) under mpirun.

The driver puts fields whose values are exact binary fractions of the global indices and the
step, so the expected outputs are computed here bit for bit; it writes what it received, rank by
rank, for every step. These tests pin down the wire protocol, the routing for several N x M
layouts and both halo widths, lag, every, the handshake checks and the NaN policies.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.closures.analytic import laplacian_op, smooth3_op
from bridge.config.coupling import CouplingConfig, write_config_json
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command, python_program

REPO = Path(__file__).resolve().parents[1]
PREFIX = {"laplacian": "lap", "smooth3": "smooth", "identity": "id"}
HALO = {"laplacian": 1, "smooth3": 3, "identity": 0}


@pytest.fixture(scope="module")
def driver_exe(fortran_build: Path) -> Path:
    exe = fortran_build / "bin" / "mlb_driver"
    assert exe.is_file(), f"{exe} was not built"
    return exe


def _nml(values: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return ".true." if v else ".false."
        if isinstance(v, str):
            return f"'{v}'"
        if isinstance(v, list | tuple):
            return ", ".join(fmt(x) for x in v)
        return str(v)

    body = "\n".join(f"  {k} = {fmt(v)}" for k, v in values.items())
    return f"&driver\n{body}\n/\n"


def run_driver(
    run_dir: Path,
    exe: Path,
    n: int,
    m: int,
    driver: dict[str, Any],
    exchange: dict[str, Any] | None,
    *,
    server_timeout_s: float = 30.0,
    wall_s: float = 120.0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``mpirun -np n mlb_driver : -np m python -m bridge.server`` in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "driver.nml").write_text(_nml(driver))
    data: dict[str, Any] = {
        "model": {"executable": str(exe), "ranks": n},
        "server": {"ranks": m, "timeout_s": server_timeout_s},
    }
    if exchange is not None:
        data["exchange"] = [exchange]
    config = CouplingConfig.from_dict(data, base_dir=run_dir)
    write_config_json(config, run_dir / "run_config.json")
    cmd = mpmd_command(
        [
            Program(n, (str(exe), "driver.nml")),
            python_program(m, "bridge.server", "--config", "run_config.json", "--run-dir", "."),
        ]
    )
    job_env = mpi_env(
        {"PYTHONPATH": str(REPO), "MLBRIDGE_TIMEOUT_S": str(server_timeout_s), **(env or {})}
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=run_dir, env=job_env, capture_output=True, text=True, timeout=wall_s
    )
    return proc, time.perf_counter() - t0


def driver_value(nx: int, ny: int, nz: int, kt: int, f: int) -> np.ndarray:
    """The driver's field ``f`` (1-based) at step ``kt``, global ``(nz, ny, nx)``."""
    k = np.arange(1, nz + 1)[:, None, None]
    j = np.arange(ny)[None, :, None]
    i = np.arange(nx)[None, None, :]
    return 0.5 * np.mod(7 * i * i + 13 * j + 31 * k + 17 * kt + 101 * f, 1000).astype(np.float64)


def closure_global(name: str, x: np.ndarray, coefficient: float) -> np.ndarray:
    """The closure applied to a whole closed-basin field (zero beyond the edge)."""
    h = HALO[name]
    padded = np.pad(x, ((0, 0), (h, h), (h, h)))
    if name == "laplacian":
        return laplacian_op(padded, coefficient)
    if name == "smooth3":
        mask = np.pad(np.ones_like(x), ((0, 0), (h, h), (h, h)))
        return smooth3_op(padded, coefficient, mask)
    return x.copy()


def read_received(run_dir: Path, n: int, nx: int, ny: int, nz: int, nrecv: int, steps: int):
    """Global ``(steps, nrecv, nz, ny, nx)`` array of what the driver ranks received."""
    out = np.full((steps, nrecv, nz, ny, nx), np.nan)
    for r in range(n):
        i0, j0, nxl, nyl = (int(v) for v in (run_dir / f"driver_r{r}.txt").read_text().split())
        raw = np.fromfile(run_dir / f"driver_r{r}.bin", dtype=np.float64)
        raw = raw.reshape(steps, nrecv, nz, nyl, nxl)
        out[:, :, :, j0 : j0 + nyl, i0 : i0 + nxl] = raw
    return out


def expected_received(
    closure: str, nx: int, ny: int, nz: int, kt0: int, steps: int, every: int, lag: int, coef: float
) -> np.ndarray:
    """What the driver should receive: the outputs of the right exchange, held in between."""
    out = np.zeros((steps, 2, nz, ny, nx))
    for s in range(steps):
        kt = kt0 + s
        last = kt - (kt - kt0) % every - lag * every  # step whose fields made these outputs
        if last < kt0:
            continue
        for f in (1, 2):
            out[s, f - 1] = closure_global(closure, driver_value(nx, ny, nz, last, f), coef)
    return out


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


def _exchange(closure: str, **extra: Any) -> dict[str, Any]:
    p = PREFIX[closure]
    return {
        "closure": closure,
        "inputs": {"u": "u", "v": "v"},
        "outputs": {f"{p}_u": "u_tend", f"{p}_v": "v_tend"},
        "params": {"coefficient": 0.25},
        **extra,
    }


BASE = {"nx": 23, "ny": 17, "nz": 3, "send": ["u", "v"], "recv": ["u_tend", "v_tend"]}


@pytest.mark.parametrize(
    ("n", "m", "closure"),
    [
        (1, 1, "laplacian"),
        (2, 3, "laplacian"),
        (4, 2, "laplacian"),
        (1, 3, "smooth3"),
        (2, 2, "smooth3"),
        (4, 3, "smooth3"),
        (4, 1, "smooth3"),
    ],
)
def test_routes_are_exact(tmp_path: Path, driver_exe: Path, n: int, m: int, closure: str) -> None:
    steps = 3
    proc, _ = run_driver(
        tmp_path, driver_exe, n, m, {**BASE, "nitend": steps, "halo": 2}, _exchange(closure)
    )
    _ok(proc)
    got = read_received(tmp_path, n, 23, 17, 3, 2, steps)
    want = expected_received(closure, 23, 17, 3, 1, steps, 1, 0, 0.25)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("every", "lag"), [(1, 1), (3, 0), (3, 1)])
def test_every_and_lag(tmp_path: Path, driver_exe: Path, every: int, lag: int) -> None:
    steps = 8
    driver = {**BASE, "nit000": 5, "nitend": 5 + steps - 1, "every": every}
    proc, _ = run_driver(
        tmp_path, driver_exe, 2, 2, driver, _exchange("laplacian", every=every, lag=lag)
    )
    _ok(proc)
    got = read_received(tmp_path, 2, 23, 17, 3, 2, steps)
    want = expected_received("laplacian", 23, 17, 3, 5, steps, every, lag, 0.25)
    np.testing.assert_array_equal(got, want)
    import json

    served = json.loads((tmp_path / "timing_steps.json").read_text())["servers"][0]["kt"]
    assert served == list(range(5, 5 + steps, every))


@pytest.mark.parametrize("at_once", ["1", "0"])
def test_lag1_put_at_once_is_exact(tmp_path: Path, driver_exe: Path, at_once: str) -> None:
    """Lag 1 with mlb_put returning with the fields in flight (as where the servers pull them)
    and without: the same outputs, and the model's timeline reaches the servers."""
    import json

    steps = 6
    driver = {**BASE, "nitend": steps}
    proc, _ = run_driver(
        tmp_path, driver_exe, 2, 1, driver, _exchange("laplacian", lag=1),
        env={"MLBRIDGE_PUT_AT_ONCE": at_once},
    )  # fmt: skip
    _ok(proc)
    got = read_received(tmp_path, 2, 23, 17, 3, 2, steps)
    np.testing.assert_array_equal(
        got, expected_received("laplacian", 23, 17, 3, 1, steps, 1, 1, 0.25)
    )
    model = json.loads((tmp_path / "timing_steps.json").read_text())["model"]
    assert sorted(model) == ["0", "1"]
    for rank in model.values():
        assert rank["kt"] == list(range(1, steps + 1))
        assert all(s <= e for s, e in zip(rank["put_start_s"], rank["put_end_s"], strict=True))


@pytest.mark.parametrize(
    ("driver", "exchange", "words"),
    [
        (
            {},
            {"inputs": {"u": "uu"}, "outputs": {"lap_u": "u_tend"}},
            ["'uu'", "does not define"],
        ),
        ({"nlev_recv": [2, 2]}, {}, ["'u_tend'", "2 levels", "'u'", "3"]),
        ({"bad_nx_rank": 1}, {}, ["grid", "23 x 17", "24 x 17"]),
        ({"every": 2}, {}, ["'u'", "every 2", "every 1"]),
        ({}, {"closure": "no_such_closure"}, ["no_such_closure"]),
    ],
    ids=["unknown-field", "wrong-levels", "wrong-grid", "wrong-every", "unknown-closure"],
)
def test_handshake_mismatch_stops_every_rank(
    tmp_path: Path, driver_exe: Path, driver: dict, exchange: dict, words: list[str]
) -> None:
    ex = {**_exchange("laplacian"), "params": {}, **exchange}
    if "inputs" in exchange:
        ex["outputs"] = exchange["outputs"]
    proc, elapsed = run_driver(tmp_path, driver_exe, 2, 2, {**BASE, **driver}, ex)
    assert proc.returncode != 0
    assert elapsed < 10.0
    text = proc.stderr
    for word in words:
        assert word in text, f"{word!r} not in:\n{text}"
    assert "mlb_enddef failed" in text  # the model side got the message too


def test_nan_abort_names_step_field_rank_and_point(tmp_path: Path, driver_exe: Path) -> None:
    driver = {**BASE, "nitend": 5, "nan_step": 3, "nan_field": "v", "nan_i": 20, "nan_j": 9}
    driver["nan_k"] = 2
    proc, elapsed = run_driver(tmp_path, driver_exe, 2, 2, driver, _exchange("laplacian"))
    assert proc.returncode != 0
    assert elapsed < 30.0
    text = proc.stderr
    assert "NaN in model field 'v' at step 3, model rank 1" in text, text
    assert "(i, j, k) = (20, 9, 2)" in text, text


def test_nan_zero_goes_on_and_counts(tmp_path: Path, driver_exe: Path) -> None:
    driver = {**BASE, "nitend": 4, "nan_step": 2, "nan_field": "u", "nan_i": 5, "nan_j": 5}
    proc, _ = run_driver(tmp_path, driver_exe, 2, 3, driver, _exchange("laplacian", on_nan="zero"))
    _ok(proc)
    import json

    assert json.loads((tmp_path / "timing.json").read_text())["nan_replaced"] == 1
    assert "replaced 1 NaN" in proc.stdout
    got = read_received(tmp_path, 2, 23, 17, 3, 2, 4)
    assert np.isfinite(got).all()


def test_land_mask_reaches_smooth3(tmp_path: Path, driver_exe: Path) -> None:
    """With a land mask, the filter is masked between passes (zero on land points)."""
    proc, _ = run_driver(
        tmp_path,
        driver_exe,
        2,
        2,
        {**BASE, "nitend": 1, "use_mask": True},
        _exchange("smooth3"),
    )
    _ok(proc)
    got = read_received(tmp_path, 2, 23, 17, 3, 2, 1)
    i = np.arange(23)[None, :]
    j = np.arange(17)[:, None]
    mask = np.where(np.mod((i + 2) + 2 * (j + 2), 7) == 0, 0.0, 1.0)
    x = driver_value(23, 17, 3, 1, 1)
    padded_mask = np.pad(np.broadcast_to(mask, x.shape), ((0, 0), (3, 3), (3, 3)))
    want = smooth3_op(np.pad(x, ((0, 0), (3, 3), (3, 3))), 0.25, padded_mask)
    np.testing.assert_array_equal(got[0, 0], want)


def test_killed_server_ends_the_job(tmp_path: Path, driver_exe: Path) -> None:
    """A server rank killed mid-run: the job ends non-zero within 30 s, no hang."""
    import os
    import signal

    (tmp_path / "driver.nml").write_text(_nml({**BASE, "nitend": 10_000_000}))
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": str(driver_exe), "ranks": 2},
            "server": {"ranks": 2, "timeout_s": 20.0},
            "exchange": [_exchange("laplacian")],
        },
        base_dir=tmp_path,
    )
    write_config_json(config, tmp_path / "run_config.json")
    cmd = mpmd_command(
        [
            Program(2, (str(driver_exe), "driver.nml")),
            python_program(2, "bridge.server", "--config", "run_config.json", "--run-dir", "."),
        ]
    )
    env = mpi_env({"PYTHONPATH": str(REPO), "MLBRIDGE_TIMEOUT_S": "20"})
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pid_file = tmp_path / "server.1.pid"
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "server rank 1 never started"
            time.sleep(0.1)
        time.sleep(1.0)  # exchanging by now
        assert proc.poll() is None, "the job ended before the kill"
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        t0 = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - t0 < 30
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_servers_that_never_join_do_not_hang_the_model(tmp_path: Path, driver_exe: Path) -> None:
    """MPI ranks that never reach the world split: mlb_init gives up after MLBRIDGE_TIMEOUT_S."""
    import sys

    (tmp_path / "driver.nml").write_text(_nml(BASE))
    idle = "from mpi4py import MPI; import time; time.sleep(60)"
    cmd = mpmd_command(
        [Program(1, (str(driver_exe), "driver.nml")), Program(1, (sys.executable, "-c", idle))]
    )
    env = mpi_env({"PYTHONPATH": str(REPO), "MLBRIDGE_TIMEOUT_S": "2"})
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 20
    assert "did not reach the world split within 2.0 s" in proc.stderr, proc.stderr[-2000:]


def test_pinned_sha256_checked_before_loading(tmp_path: Path) -> None:
    """A registry closure whose recorded hash is not the pinned one is refused, naming both."""
    from types import SimpleNamespace

    from bridge.registry.resolve import ClosureResolutionError, _check_pinned_hash

    entry = SimpleNamespace(
        ref="gz@1",
        directory=tmp_path,
        artifact=tmp_path / "gz.ts",
        record={"sha256": {"gz.ts": "a" * 64, "manifest.toml": "b" * 64}},
    )
    reg = SimpleNamespace(show=lambda name: entry)
    _check_pinned_hash(reg, "gz", "a" * 64)  # the pinned content: accepted
    with pytest.raises(ClosureResolutionError) as info:
        _check_pinned_hash(reg, "gz", "c" * 64)
    text = str(info.value)
    assert "'gz'" in text and str(tmp_path / "gz.ts") in text
    assert "a" * 64 in text and "c" * 64 in text


def test_mask_passed_only_to_closures_that_take_it() -> None:
    from bridge.closures.analytic import analytic_closure
    from bridge.server.engine import accepts_mask

    class WithMask:
        def __call__(self, inputs: dict, mask: object = None) -> dict:
            return dict(inputs)

    assert accepts_mask(WithMask())
    assert not accepts_mask(analytic_closure("laplacian", ("u",), {}))
