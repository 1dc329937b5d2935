"""No hang, ever, also after the handshake: every fault ends the whole job, quickly, saying why.

Each test runs a real job under mpirun (the toy, the OASIS-only test model, or server ranks
alone) with one fault, and checks the exit status, the time to exit, the words that name the
cause, and that no process of the job is left:

* a model rank that enters a collective on ``MPI_COMM_WORLD`` after ``mlb_enddef`` (the toy's
  ``&nammlb_test nn_mlb_world_kt``): the servers time out, say so, and abort the job;
* a NaN with ``on_nan = "abort"`` through OASIS, for the toy (``transport = "oasis"``) and for a
  model that couples through OASIS itself: the job ends at once, the report names step, field,
  model rank and point; OASIS's own "variable not in namcouple" line is in the report;
* one server rank stuck in its closure: the messages name that server rank;
* SIGHUP and SIGTERM to ``mlbridge run`` stop every rank, as SIGINT does; under ``nohup`` SIGHUP
  is ignored and the job goes on.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_coupling_toy as toy
from test_launcher import _interrupt_run, _wait_for, live_job_processes
from test_oasis_coupling import make_case as oasis_case
from test_oasis_coupling import mlbridge_run, run_dir_of

from bridge.launch.launcher import RunResult
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command
from bridge.launch.supervise import GAVE_UP_GRACE_S
from bridge.registry.store import Registry
from bridge.registry.trust import CodeTrust

REPO = Path(__file__).resolve().parents[1]
COUPLED = REPO / "examples" / "03_coupled_laplacian" / "coupling.toml"
TIMEOUT_S = 5.0  # server.timeout_s of the runs that time out
SLACK_S = 10.0  # the job ends within timeout_s + this (a loaded machine included)

pytestmark = pytest.mark.usefixtures("fortran_build")


@pytest.fixture(scope="module")
def oasis_build(fortran_build: Path) -> Path:
    """The build directory with OASIS3-MCT's parts (the shim, the OASIS-only test model)."""
    for part in (fortran_build / "bin" / "oasis_pure_model", fortran_build / "lib"):
        assert part.exists(), f"{part} was not built: CMake did not find OASIS3-MCT"
    return fortran_build


def report_of(result: RunResult, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``mlbridge run`` printed (its failure report) and every rank's log."""
    return capsys.readouterr().err + "\n" + toy.logs(result)


def assert_ended(result: RunResult, limit_s: float) -> None:
    """Non-zero, within ``limit_s`` of the model's last step before the fault, nothing left.

    Timed from the last write of ``time.step`` (the toy writes it every step of these short
    runs) to the launcher's report: start-up (imports, handshake) on a loaded machine is not
    the fault's cost.
    """
    assert result.returncode != 0, result.problems
    to_exit = (result.run_dir / "failure_report.txt").stat().st_mtime
    to_exit -= (result.run_dir / "time.step").stat().st_mtime
    assert to_exit < limit_s, f"ended {to_exit:.1f} s after the last step: {result.problems}"
    assert result.elapsed < limit_s + 60.0, f"took {result.elapsed:.1f} s"
    assert not live_job_processes(result.run_dir), "processes of the job are left"


# --------------------------------------------------------------------------------------------
# 4. a model rank in a collective on MPI_COMM_WORLD after mlb_enddef
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("servers", [1, 2])
def test_model_in_a_world_collective_ends_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], servers: int
) -> None:
    case = toy.make_case(tmp_path, nammlb_test={"nn_mlb_world_kt": 3})
    config = toy.config_for(case, 2, servers, [toy.exchange("laplacian")], timeout_s=TIMEOUT_S)
    result = toy.run(config)
    assert_ended(result, TIMEOUT_S + SLACK_S)
    text = report_of(result, capsys)
    assert "timed out after 5 s waiting for the fields of step 3" in text, text[-3000:]
    assert "model ranks [0, 1] sent nothing (last step served: 2)" in text
    assert "a collective on MPI_COMM_WORLD, which includes the servers" in text
    assert "use the communicator mlb_init returned" in text
    # the cause comes first in the summary, whichever rank's log the report shows
    assert "collective on MPI_COMM_WORLD" in result.problems[0], result.problems
    assert (result.run_dir / "failure_report.txt").read_text().count("collective on MPI_COMM_WORLD")


def test_unforeseen_server_error_ends_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a bug (not a ServerError) on the servers at step 3, put there by a sitecustomize on their
    # PYTHONPATH: the server ranks must still end the job, not wait in MPI_Finalize
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import bridge.server.engine as engine\n"
        "original = engine.Engine.check_inputs\n"
        "def check_inputs(self, kt, blocks):\n"
        "    if kt == 3:\n"
        "        raise KeyError('planted at step 3')\n"
        "    return original(self, kt, blocks)\n"
        "engine.Engine.check_inputs = check_inputs\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    case = toy.make_case(tmp_path / "case")
    config = toy.config_for(case, 2, 2, [toy.exchange("laplacian")], timeout_s=60.0)
    result = toy.run(config)
    assert_ended(result, 20.0)  # not the model's timeout (60 s)
    assert "KeyError: 'planted at step 3' (a bug?)" in report_of(result, capsys)


# --------------------------------------------------------------------------------------------
# 5. OASIS: a NaN abort ends the job at once; OASIS's own words are in the report
# --------------------------------------------------------------------------------------------


def test_nan_abort_through_oasis_ends_the_job_at_once(
    oasis_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a library model with transport = "oasis": the model waits in oasis_get, where no MPI
    # message of the servers reaches it; the server must end the job itself
    case = toy.make_case(tmp_path, nammlb_test={**toy.NAN_AT, "cn_mlb_nan_fld": "v"})
    config = toy.config_for(case, 2, 2, [toy.exchange("laplacian")], timeout_s=60.0)
    result = toy.run(dataclasses.replace(config, transport="oasis"))
    assert_ended(result, 15.0)  # not the launcher's no-progress limit (60 s)
    text = report_of(result, capsys)
    want = "NaN in model field 'v' at step 3, model rank 1, global (i, j, k) = (15, 8, 2)"
    assert want in text
    assert any(want in p for p in result.problems), result.problems
    assert not any("no progress" in p for p in result.problems), result.problems


def test_launcher_stops_a_job_a_server_gave_up_on(
    oasis_build: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the launcher's backstop: servers that report the NaN but never end the job (their
    # end_job replaced by a sleep), a model waiting in oasis_get: stopped GAVE_UP_GRACE_S later
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import time\nimport bridge.server.main as main\n"
        "main.end_job = lambda *args, **kwargs: time.sleep(3600)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    case = toy.make_case(tmp_path / "case", nammlb_test={**toy.NAN_AT, "cn_mlb_nan_fld": "v"})
    config = toy.config_for(case, 2, 1, [toy.exchange("laplacian")], timeout_s=60.0)
    result = toy.run(dataclasses.replace(config, transport="oasis"))
    assert_ended(result, GAVE_UP_GRACE_S + SLACK_S)
    assert result.problems[0].startswith("a server gave up and the job was still running 10 s")
    assert "NaN in model field 'v' at step 3" in report_of(result, capsys)


def test_nan_abort_of_an_oasis_only_model_names_the_point(
    oasis_build: Path, tmp_path: Path
) -> None:
    toml = oasis_case(
        tmp_path,
        jpni=2,
        servers=2,
        namelist_edits={
            "rn_dt = 3600": "rn_dt = 3600, nn_nan_kt = 2, nn_nan_i = 10, nn_nan_j = 4, nn_nan_k = 2"
        },
    )
    t0 = time.monotonic()
    proc = mlbridge_run(toml, oasis_build)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 30.0, f"took {elapsed:.1f} s"  # the no-progress limit is 60 s
    want = "NaN in model field 'O_U' at step 2, model rank 1, global (i, j, k) = (10, 4, 2)"
    summary = proc.stderr.split("\n--- ")[0]  # the problems, before the logs
    assert want in summary, proc.stderr
    assert not live_job_processes(run_dir_of(proc))


def test_oasis_variable_not_in_namcouple_is_in_the_report(
    oasis_build: Path, tmp_path: Path
) -> None:
    # the model puts O_X, which the namcouple does not know: OASIS says so in its debug file
    # only, and the job dies in the first oasis_put with exit status 0
    toml = oasis_case(tmp_path, namelist_edits={"cn_snd = 'O_U'": "cn_snd = 'O_X'"})
    t0 = time.monotonic()
    proc = mlbridge_run(toml, oasis_build)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 30.0, f"took {elapsed:.1f} s"
    assert "OASIS: debug.root.01: oasis_def_var variable not in namcouple return O_X" in (
        proc.stderr
    ), proc.stderr
    assert not live_job_processes(run_dir_of(proc))


# --------------------------------------------------------------------------------------------
# 6. one server rank stuck: the messages name it
# --------------------------------------------------------------------------------------------

STUCK_MODULE = '''
import os
import time

from bridge.closures.base import ClosureSpec, FieldSpec


class StuckOnOneServerRank:
    """Zero tendencies; from its call number ``after + 1`` on, server rank ``rank`` sleeps for
    ever (it knows its rank by the pid file the server writes in the run directory)."""

    def __init__(self, rank=1, after=1):
        self.rank, self.after, self.calls = rank, after, 0
        self.spec = ClosureSpec(
            "stuck", 0, (FieldSpec("u", "U", "m s-1"), FieldSpec("v", "V", "m s-1")),
            (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2")), "float64",
        )

    def __call__(self, inputs):
        self.calls += 1
        pid_file = f"server.{self.rank}.pid"
        if self.calls > self.after and os.path.isfile(pid_file):
            if open(pid_file).read().strip() == str(os.getpid()):
                while True:
                    time.sleep(60)
        return {"su": 0.0 * inputs["u"], "sv": 0.0 * inputs["v"]}
'''

STUCK_MANIFEST = """
name = "stuck"
version = "1"
format = "python"
entry_point = "no_hang_closures:StuckOnOneServerRank"
halo = 0
dtype = "float64"
[arch]
rank = 1
after = 1
[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
[[inputs]]
name = "v"
grid = "V"
units = "m s-1"
[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
"""


def test_stuck_server_rank_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "no_hang_closures.py").write_text(STUCK_MODULE)
    (src / "stuck.toml").write_text(STUCK_MANIFEST)
    monkeypatch.syspath_prepend(str(src))  # the launcher checks the closure
    monkeypatch.setenv("PYTHONPATH", str(src))  # the servers load it
    registry = tmp_path / "registry"
    # a format "python" closure is code: registered with the explicit trust it needs
    trust = CodeTrust(code=True)
    assert Registry(registry).register(None, src / "stuck.toml", trust=trust) == "stuck@1"
    exchange = {
        "closure": "stuck",
        "inputs": {"u": "u", "v": "v"},
        "outputs": {"su": "u_tend", "sv": "v_tend"},
    }
    case = toy.make_case(tmp_path / "case")
    config = toy.config_for(case, 2, 2, [exchange], timeout_s=TIMEOUT_S)
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, registry=registry)
    )
    result = toy.run(config)
    assert_ended(result, TIMEOUT_S + SLACK_S)
    text = report_of(result, capsys)
    assert "server rank 1 (world rank 3) did not answer" in text, text[-4000:]
    assert "stuck (e.g. in a closure) or dead" in text
    assert "blocked outside the coupling" not in text  # the model ranks are not to blame


PEERS_SCRIPT = """
import json, sys, time
from mpi4py import MPI
from bridge.transport import mpi as wire

watch = wire.PeerWatch(MPI.COMM_WORLD)
rank = watch.rank
if rank == 1:  # in its closure: no MPI call for a while
    time.sleep(6.0)
    watch.answer("late")
elif rank == 2:  # waiting in a poll of the transport: answers
    end = time.monotonic() + 6.0
    wire.poll(lambda: time.monotonic() > end, 10.0, "the fields of step 7", watch)
else:
    t0 = time.monotonic()
    silent, answers = watch.silent_peers(2.0)
    print(json.dumps({"silent": silent, "answers": answers, "s": time.monotonic() - t0}))
    sys.stdout.flush()
MPI.COMM_WORLD.Barrier()
"""


def test_peer_watch_names_the_server_rank_that_does_not_answer(tmp_path: Path) -> None:
    """Server side of item 6: a server rank that times out asks the others; the one busy in its
    closure is silent, the one waiting in a poll answers with what it waits for."""
    cmd = mpmd_command([Program(3, (sys.executable, "-c", PEERS_SCRIPT))])
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=mpi_env({"PYTHONPATH": str(REPO)}), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
    assert found["silent"] == [1]
    assert found["answers"] == {"2": "the fields of step 7"}
    assert 1.9 < found["s"] < 5.0


# --------------------------------------------------------------------------------------------
# 7. SIGHUP and SIGTERM stop every rank, as SIGINT does; nohup keeps the job going
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_hangup_and_terminate_stop_every_rank(
    toy_exe: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    run_dir = _interrupt_run(
        COUPLED,
        tmp_path / "runs",
        ["--steps", "200000", "--build-dir", str(toy_exe.parents[1])],
        startup_s=60,
        sig=sig,
    )
    report = (run_dir / "failure_report.txt").read_text()
    assert f"interrupted by {sig.name}: every rank was stopped" in report


def test_nohup_keeps_the_job_running_on_sighup(toy_exe: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bridge.cli", "run", str(COUPLED), "--workdir", str(workdir)]
    cmd += ["--steps", "200000", "--build-dir", str(toy_exe.parents[1])]
    proc = subprocess.Popen(
        ["nohup", *cmd], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _wait_for(lambda: any(workdir.glob("*/time.step")), 60), "never started"
        run_dir = next(workdir.glob("*/time.step")).parent
        proc.send_signal(signal.SIGHUP)
        before = int((run_dir / "time.step").read_text().split()[0])
        assert _wait_for(
            lambda: int((run_dir / "time.step").read_text().split()[0]) > before, 20
        ), "the job stopped stepping after SIGHUP under nohup"
        assert proc.poll() is None, proc.communicate()
        assert live_job_processes(run_dir)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "SIGHUP" not in err
    assert _wait_for(lambda: not live_job_processes(run_dir), 5), "ranks outlived the launcher"
