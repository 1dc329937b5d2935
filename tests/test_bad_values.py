"""Bad values on their way to the model, and a disk that fills: each run ends fast and says why.

* Closure outputs: a non-finite value (``inf`` coefficient) and a huge finite one (``1e30``
  coefficient with ``max_abs``) end the coupled toy run at the step they appear, naming the step,
  the model field, the closure output, the server rank, the model rank, the global point and the
  value (the engine's one policy, ``on_nan``). The bound a registry manifest implies is checked on
  the engine with a real torch closure.
* Namelist types: an entry of ``namelist_cfg`` whose type is not the one of ``namelist_ref``
  (``nn_write = 'ten'``, ``nn_write = 2.5``) is refused by ``mlbridge run`` before anything starts.
* Disk space: a run whose outputs cannot fit is refused before launch; a disk that fills during
  the run is named in the failure report, which goes elsewhere when the run directory is full
  (a real tmpfs, mounted here when the sandbox allows it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from system_helpers import tmpfs
from test_coupling_toy import config_for, exchange, logs, make_case, run
from toy_helpers import NAMELIST_REF, read_nc

from bridge.closures.analytic import laplacian_op
from bridge.closures.base import ClosureSpec, FieldSpec
from bridge.config.coupling import CouplingConfig
from bridge.config.namelist import read_namelists
from bridge.domain.plan import Box, server_blocks
from bridge.launch.launcher import RunResult
from bridge.server.engine import Block, Engine, ServerError

REPO = Path(__file__).resolve().parents[1]
NX, NY, NZ = 23, 17, 3  # the small basin of make_case
FAST_S = 15.0  # seconds from mpirun's start to its end, at most


def assert_failed_fast(result: RunResult, *needles: str) -> str:
    text = logs(result)
    assert result.returncode != 0, text[-3000:]
    assert result.elapsed < FAST_S, f"took {result.elapsed:.1f} s\n{text[-3000:]}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in the logs:\n{text[-4000:]}"
    return text


# --------------------------------------------------------------------------------------------
# 8. closure outputs: Inf, NaN, huge finite values
# --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fortran_build")
def test_inf_coefficient_aborts_at_step_1(tmp_path: Path) -> None:
    """``coefficient = inf`` on the fluid at rest: inf * 0 is NaN at every point of step 1."""
    case = make_case(tmp_path)
    ex = exchange("laplacian", params={"coefficient": float("inf")})
    result = run(config_for(case, 2, 2, [ex]))
    block = server_blocks(NX, NY, 2)[0]
    assert_failed_fast(
        result,
        "NaN in closure output for 'u_tend' at step 1, model rank 0, global (i, j, k) = (1, 1, 1)",
        "closure output 'lap_u' of exchange 'laplacian'",
        f"{block.nx * block.ny * NZ} non-finite in server rank 0's block",
    )
    assert "ocean.output reports an error (E R R O R)" in result.problems


@pytest.mark.usefixtures("fortran_build")
def test_overflowing_closure_aborts_on_inf(tmp_path: Path) -> None:
    """``coefficient = 1.7e308`` on h: the Laplacian overflows to +-Inf where h varies."""
    rcv = {"cn_mlb_snd": ["u", "v", "h"], "cn_mlb_rcv": ["u_tend", "v_tend", "h_tend"]}
    case = make_case(tmp_path, nammlb=rcv)
    ex = exchange("laplacian", fields=("h",), params={"coefficient": 1.7e308})
    result = run(config_for(case, 2, 1, [ex]))
    text = assert_failed_fast(result, "Inf in closure output for 'h_tend' at step 1, model rank ")
    found = re.search(
        r"Inf in closure output for 'h_tend' at step 1, model rank (\d), global \(i, j, k\) = "
        r"\((\d+), (\d+), (\d+)\) \(1-based, Fortran order; value (-?inf); closure output "
        r"'lap_h' of exchange 'laplacian'; (\d+) non-finite in server rank 0's block",
        text,
    )
    assert found, text[-3000:]
    i, j, k = (int(v) for v in found.groups()[1:4])
    assert 1 <= i <= NX and 1 <= j <= NY and 1 <= k <= NZ


@pytest.mark.usefixtures("fortran_build")
def test_huge_value_without_bound_is_blamed_on_the_closure(tmp_path: Path) -> None:
    """Without ``max_abs`` the model stops, and says the closures' tendencies did it."""
    case = make_case(tmp_path)
    result = run(config_for(case, 1, 1, [exchange("laplacian", params={"coefficient": 1e30})]))
    text = assert_failed_fast(result, "the external (closure) tendencies did it")
    assert "max_abs in coupling.toml" in text


@pytest.mark.usefixtures("fortran_build")
def test_max_abs_aborts_on_1e30_coefficient(tmp_path: Path) -> None:
    """``coefficient = 1e30`` with ``max_abs = 1e-3``: caught at step 2 (u is 0 at step 1), by
    every server rank, each naming the largest value of its block, which is the closure applied
    to the model's own u after step 1."""
    case = make_case(tmp_path)
    ex = exchange("laplacian", params={"coefficient": 1e30}, max_abs={"u_tend": 1e-3})
    result = run(config_for(case, 2, 2, [ex]))
    text = assert_failed_fast(
        result, "value beyond max_abs in closure output for 'u_tend' at step 2"
    )
    u1 = read_nc(result.run_dir / "TOY_grid.nc", ("u",))["u"][0]  # the input of step 2
    tend = laplacian_op(np.pad(u1, ((0, 0), (1, 1), (1, 1))), 1e30)
    for rank, box in enumerate(server_blocks(NX, NY, 2)):
        part = tend[:, box.j0 : box.j1, box.i0 : box.i1]
        k, j, i = np.unravel_index(int(np.argmax(np.abs(part))), part.shape)
        gi, gj = box.i0 + i + 1, box.j0 + j + 1
        owner = 0 if gi <= 12 else 1  # 23 columns on 2 model ranks: 12 + 11
        over = int(np.count_nonzero(np.abs(part) > 1e-3))
        line = (
            f"mlbridge server rank {rank}: value beyond max_abs in closure output for 'u_tend' at "
            f"step 2, model rank {owner}, global (i, j, k) = ({gi}, {gj}, {k + 1}) (1-based, "
            f"Fortran order): {part[k, j, i]:.6g}, |value| > 0.001 (max_abs of the exchange in "
            "coupling.toml; closure output 'lap_u' of exchange 'laplacian'; the largest of "
            f"{over} value(s) beyond the bound in server rank {rank}'s block; on_nan = 'abort')"
        )
        assert line in text, f"{line}\nnot in\n{text[-4000:]}"


@pytest.mark.usefixtures("fortran_build")
def test_max_abs_zero_replaces_and_counts(tmp_path: Path) -> None:
    """``on_nan = "zero"``: the values beyond ``max_abs`` reach the model as zeros, counted."""
    case = make_case(tmp_path, steps=4)
    bound = 1e-9
    ex = exchange("laplacian", on_nan="zero", max_abs=bound)
    result = run(config_for(case, 2, 2, [ex]))
    assert result.returncode == 0, logs(result)[-3000:]
    out = read_nc(result.run_dir / "TOY_grid.nc", ("u", "u_tend"))
    # the closure on the state the model sent, with the values beyond the bound set to zero
    replaced = 0
    for s in range(1, out["u"].shape[0]):
        raw = laplacian_op(np.pad(out["u"][s - 1], ((0, 0), (1, 1), (1, 1))), 2.0e-5)
        beyond = np.abs(raw) > bound
        replaced += int(beyond.sum())
        np.testing.assert_allclose(out["u_tend"][s], np.where(beyond, 0.0, raw), rtol=1e-12)
    assert replaced > 0
    assert np.abs(out["u_tend"]).max() <= bound
    timing = result.timing
    assert timing is not None and timing["max_abs_replaced"] >= replaced
    assert "value(s) beyond max_abs by zero (on_nan = 'zero')" in logs(result)


# --- the bound a registry manifest implies, on the engine -------------------------------------


def amplifier_engine(exchange_table: dict[str, Any]) -> tuple[Engine, dict[str, np.ndarray]]:
    """A torch closure ``b = 1e-6 * a`` (``scale = 1e-6`` on ``b``, no clip) on one 4 x 3 block."""
    torch = pytest.importorskip("torch")
    from bridge.registry.manifest import Normalisation
    from bridge.registry.torch_closure import TorchClosure

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

    spec = ClosureSpec(
        "amp", 0, (FieldSpec("a", "T", "m"),), (FieldSpec("b", "T", "m s-2"),), "float64"
    )
    closure = TorchClosure(Identity(), spec, output_norm={"b": Normalisation(0.0, 1.0e-6)})
    assert closure.sane_bounds == {"b": pytest.approx(1.0e-3)}
    config = CouplingConfig.from_dict(
        {"exchange": [{"closure": "amp", "inputs": {"a": "a"}, **exchange_table}]}
    )
    box = Box(0, 4, 0, 3)
    block = Block(0, box, 0, np.ones((1, 3, 4)), (box,))
    fields = {"a": np.ones((2, 3, 4))}
    fields["a"][1, 2, 3] = 5000.0  # -> 5e-3 m s-2 after the output's scale: beyond 1e-3
    return Engine(config.exchanges, {"amp": closure}, block), fields


def test_manifest_scale_bounds_the_output() -> None:
    engine, fields = amplifier_engine({"outputs": {"b": "b_tend"}})
    with pytest.raises(ServerError) as err:
        engine.infer(7, fields)
    assert str(err.value) == (
        "value beyond max_abs in closure output for 'b_tend' at step 7, model rank 0, global "
        "(i, j, k) = (4, 3, 2) (1-based, Fortran order): 0.005, |value| > 0.001 (|offset| + "
        "1000 x |scale| of output 'b' in the manifest of closure 'amp', which has no clip; set "
        "max_abs to change it; closure output 'b' of exchange 'amp'; the largest of 1 value(s) "
        "beyond the bound in server rank 0's block; on_nan = 'abort')"
    )


def test_max_abs_replaces_or_lifts_the_manifest_bound() -> None:
    engine, fields = amplifier_engine({"outputs": {"b": "b_tend"}, "max_abs": float("inf")})
    assert engine.infer(1, fields)["b_tend"][1, 2, 3] == pytest.approx(5.0e-3)
    engine, fields = amplifier_engine(
        {"outputs": {"b": "b_tend"}, "max_abs": {"b": 1e-2}, "on_nan": "zero"}
    )
    assert engine.infer(1, fields)["b_tend"][1, 2, 3] == pytest.approx(5.0e-3)
    engine, fields = amplifier_engine({"outputs": {"b": "b_tend"}, "on_nan": "zero"})
    out = engine.infer(1, fields)["b_tend"]
    assert out[1, 2, 3] == 0.0 and out[0, 0, 0] == pytest.approx(1.0e-6)
    assert engine.summary({})["max_abs_replaced"] == 1


# --------------------------------------------------------------------------------------------
# 9. namelist entries of the wrong type, refused before anything starts
# --------------------------------------------------------------------------------------------


def mlbridge_run(case: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``mlbridge run -q CASE/coupling.toml ARGS`` (laplacian on u and v); its seconds."""
    from conftest import build_dir

    toml = case / "coupling.toml"
    toml.write_text(COUPLING_TOML)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", "-q", str(toml), *args],
        cwd=REPO,
        env={**os.environ, "MLBRIDGE_BUILD_DIR": str(build_dir())},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.perf_counter() - t0


COUPLING_TOML = """
[model]
executable = "toy_nemo"
ranks = 1
namelist_cfg = "namelist_cfg"
[server]
ranks = 1
timeout_s = 20.0
[run]
workdir = "runs"
[[exchange]]
closure = "laplacian"
inputs = { u = "u", v = "v" }
outputs = { lap_u = "u_tend", lap_v = "v_tend" }
params = { coefficient = 2.0e-5 }
"""


@pytest.mark.usefixtures("fortran_build")
@pytest.mark.parametrize(("value", "shown"), [("ten", "'ten'"), (2.5, "2.5")])
def test_mistyped_namelist_entry_refused_before_launch(
    tmp_path: Path, value: Any, shown: str
) -> None:
    case = make_case(tmp_path, extra={"namrun": {"nn_write": value}})
    proc, seconds = mlbridge_run(case)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    expected = (
        f"{case / 'namelist_cfg'}: &namrun nn_write = {shown}: expected an integer (as in "
        f"{NAMELIST_REF}: nn_write = 600)"
    )
    assert expected in text, text
    assert not (case / "runs").exists()  # nothing started: no run directory
    assert seconds < 30


def test_namelist_type_rules(tmp_path: Path) -> None:
    """Real from an integer: fine; the other way round, logical from a number, a string for a
    number, an element of an array or of a NEMO structure (mixed types): refused, each named."""
    ref = tmp_path / "namelist_ref"
    ref.write_text(
        "&namx\n nn_a = 1\n rn_b = 1.5\n rn_c = 0\n ln_d = .false.\n cn_e = 'x'\n"
        " nn_f = 1, 2, 3\n sn_g = 'file', 6., 'var', .true.\n/\n"
    )
    cfg = tmp_path / "namelist_cfg"
    cfg.write_text(
        "&namx\n nn_a = 2.0\n rn_b = 2\n rn_c = 0.5\n ln_d = 1\n cn_e = 3\n"
        " nn_f = 1, 'two', 3, 4.5\n sn_g = 'other', 12, 'var', 'yes'\n/\n"
    )
    problems = read_namelists(ref, cfg).type_problems()
    head = f"{cfg}: &namx"
    assert problems == [
        f"{head} nn_a = 2.0: expected an integer (as in {ref}: nn_a = 1)",
        f"{head} ln_d = 1: expected a logical (as in {ref}: ln_d = .false.)",
        f"{head} cn_e = 3: expected a character string (in quotes) (as in {ref}: cn_e = 'x')",
        f"{head} nn_f(2) = 'two': expected an integer (as in {ref}: nn_f = 1, 2, 3)",
        f"{head} nn_f(4) = 4.5: expected an integer (as in {ref}: nn_f = 1, 2, 3)",
        f"{head} sn_g(4) = 'yes': expected a logical (as in {ref}: sn_g = 'file', 6.0, 'var', "
        ".true.)",
    ]
    # rn_b = 2 and rn_c = 0.5 (a real written 0 in the reference) pass; the repository's
    # own namelists pass
    for example in sorted((REPO / "examples").glob("*/namelist_cfg")):
        assert read_namelists(NAMELIST_REF, example).type_problems() == [], example


# --------------------------------------------------------------------------------------------
# 10. a disk too small, or one that fills during the run
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs of a given size (``300k``) under ``tmp_path``; unmounted afterwards."""
    with contextlib.ExitStack() as stack:
        disks = iter(range(1_000))

        def mount(size: str) -> Path:
            return stack.enter_context(tmpfs(tmp_path / f"disk{next(disks)}", size))

        yield mount


@pytest.mark.usefixtures("fortran_build")
def test_outputs_too_big_for_the_disk_refused_before_launch(
    tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    disk = small_disk("300k")
    case = make_case(tmp_path / "case", steps=200, write=1)  # 200 records of 28 KiB
    proc, seconds = mlbridge_run(case, "--workdir", str(disk / "runs"))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert f"run.workdir: {disk / 'runs'}: the run needs about " in text, text
    assert "TOY_grid.nc: 6 fields of 23 x 17 x 3, 200 records (nn_write = 1)" in text
    assert f"but its file system ({disk}) has 300.0 KiB (307200 bytes) free" in text, text
    assert not any(disk.iterdir())  # nothing started
    assert seconds < 30


def fill_when_running(disk: Path, runs: Path, timeout_s: float = 60.0) -> threading.Thread:
    """Another job filling ``disk`` as soon as the model has reported a step in ``runs``."""

    def fill() -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not list(runs.glob("*/time.step")):
            time.sleep(0.01)
        with contextlib.suppress(OSError), open(disk / "other_job.bin", "wb") as fh:
            while True:
                fh.write(bytes(1 << 16))
                fh.flush()

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


@pytest.mark.usefixtures("fortran_build")
def test_disk_full_during_the_run_is_named(
    tmp_path: Path,
    small_disk: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk fills once the model reports its first step (1% of 100000): the run ends
    non-zero at its next write, the report says "no space left" naming the run directory, and
    goes to $TMPDIR since the run directory is full."""
    disk = small_disk("4m")
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setenv("TMPDIR", str(spare))
    case = make_case(tmp_path / "case", steps=100000, write=5000)  # 20 records: fit 4 MiB
    config = config_for(case, 1)  # the model alone
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, workdir=disk / "runs"))
    filler = fill_when_running(disk, disk / "runs")
    result = run(config)
    filler.join(timeout=30)
    err = capsys.readouterr().err
    assert result.returncode != 0, err
    assert result.elapsed < FAST_S, err
    first = result.problems[0]
    assert first.startswith(
        f"no space left on device: the file system of {result.run_dir} has 0 B (0 bytes) free"
    ), result.problems
    assert f"FAILED with status {result.returncode} (run directory {result.run_dir})" in err
    assert "no space left on device" in err
    # the run directory could not take the report: it went to $TMPDIR, and stderr says so
    assert result.report == spare / f"mlbridge_{result.run_dir.name}_failure_report.txt"
    assert first in result.report.read_text()
    assert f"{result.run_dir / 'failure_report.txt'}: No space left on device" in err
    assert f"written to {result.report}" in err
    assert not (result.run_dir / "failure_report.txt").exists()
