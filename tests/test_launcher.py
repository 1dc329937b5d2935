"""``mlbridge run``: mpirun flags, run directories, validation, and real launches.

Every launch runs the real toy model (``build/bin/toy_nemo``) under the real ``mpirun``; the
validation tests use the toy's own ``namelist_ref`` with small ``namelist_cfg`` overrides.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from bridge.config.coupling import ConfigError, load_config, write_config_json
from bridge.config.namelist import write_patched_cfg
from bridge.launch import mpiexec
from bridge.launch.checks import find_problems
from bridge.launch.launcher import launch, programs_for
from bridge.launch.rundir import format_timing, make_run_dir, run_dir_name
from bridge.launch.supervise import _alive, failing_ranks, job_processes, mpi_aborts

REPO = Path(__file__).resolve().parents[1]
COARSE = REPO / "examples" / "01_coarse" / "coupling.toml"

TOY_REF = REPO / "fortran_stubs" / "toy_nemo" / "namelist_ref"


def make_case(
    tmp_path: Path, cfg: str = "", toml_extra: str = "", ranks: int = 2, exe: Path | None = None
) -> Path:
    """A coupling.toml running the toy (``exe``, else a copy that tests may break); its path."""
    if exe is None:
        exe = tmp_path / "toy_nemo_copy"
        exe.write_bytes(b"")
        exe.chmod(0o755)
    (tmp_path / "namelist_ref").write_text(TOY_REF.read_text())
    (tmp_path / "namelist_cfg").write_text(cfg)
    toml = tmp_path / "coupling.toml"
    toml.write_text(
        f'[model]\nexecutable = "{exe}"\nranks = {ranks}\n'
        f'namelist_ref = "namelist_ref"\n[run]\nworkdir = "runs"\n{toml_extra}'
    )
    return toml


def live_job_processes(run_dir: Path) -> set[int]:
    return _alive(job_processes(run_dir))


# --- mpirun flags ------------------------------------------------------------------------------


def test_root_flag_only_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mpiexec, "physical_cores", lambda: 8)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "--allow-run-as-root" in mpiexec.mpirun_flags(2)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "--allow-run-as-root" not in mpiexec.mpirun_flags(2)


def test_oversubscribe_only_beyond_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mpiexec, "physical_cores", lambda: 2)
    assert "--oversubscribe" not in mpiexec.mpirun_flags(1)
    assert "--oversubscribe" not in mpiexec.mpirun_flags(2)
    assert "--oversubscribe" in mpiexec.mpirun_flags(3)


def test_mpmd_command_with_logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mpiexec, "physical_cores", lambda: 2)
    monkeypatch.setattr(mpiexec, "find_mpirun", lambda: "/usr/bin/mpirun")
    cmd = mpiexec.mpmd_command(
        [mpiexec.Program(2, ("./model",)), mpiexec.python_program(1, "bridge.server", "-x")],
        log_dir=tmp_path / "logs",
    )
    assert cmd[0] == "/usr/bin/mpirun"
    assert cmd[cmd.index("--output-filename") + 1] == str(tmp_path / "logs")
    assert "--oversubscribe" in cmd  # 3 ranks on 2 cores
    colon = cmd.index(":")
    assert cmd[colon - 3 : colon + 1] == ["-np", "2", "./model", ":"]
    assert cmd[-7:] == ["-np", "1", sys.executable, "-u", "-m", "bridge.server", "-x"]


def test_rank_log_files_layout(tmp_path: Path) -> None:
    out, err = mpiexec.rank_log_files(tmp_path, 3)
    assert (out, err) == (
        tmp_path / "1" / "rank.3" / "stdout",
        tmp_path / "1" / "rank.3" / "stderr",
    )


def test_missing_mpirun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLBRIDGE_MPIRUN", "/nonexistent")
    with pytest.raises(mpiexec.MpiNotFoundError, match="/nonexistent"):
        mpiexec.find_mpirun()


# --- run directory, command, reports ----------------------------------------------------------


def test_run_dir_name_and_no_reuse(tmp_path: Path) -> None:
    now = datetime(2024, 3, 5, 14, 7, 9)
    assert run_dir_name("COARSE", now) == "COARSE_20240305-140709"
    assert run_dir_name(" my exp/1 ", now) == "my_exp_1_20240305-140709"
    first = make_run_dir(tmp_path / "runs", "COARSE", now)
    second = make_run_dir(tmp_path / "runs", "COARSE", now)
    third = make_run_dir(tmp_path / "runs", "COARSE", now)
    assert first.name == "COARSE_20240305-140709"
    assert second.name == "COARSE_20240305-140709_2"
    assert third.name == "COARSE_20240305-140709_3"
    assert all(p.is_dir() for p in (first, second, third))


def test_programs_model_alone_or_with_servers(tmp_path: Path) -> None:
    toml = make_case(tmp_path)
    alone = load_config(toml)
    assert [p.argv for p in programs_for(alone, tmp_path / "run")] == [(alone.model.executable,)]
    toml.write_text(
        toml.read_text()
        + '[server]\nranks = 3\n[[exchange]]\nclosure = "x"\ninputs = {a = "u"}\n'
        + 'outputs = {b = "u_tend"}\n'
    )
    coupled = load_config(toml)
    model, server = programs_for(coupled, tmp_path / "run")
    assert server.ranks == 3
    assert server.argv == (
        sys.executable,
        "-u",
        "-m",
        "bridge.server",
        "--config",
        str(tmp_path / "run" / "run_config.json"),
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert model.argv == (coupled.model.executable,)


MPIRUN_REPORT = """\
--------------------------------------------------------------------------
MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD
with errorcode 4.

NOTE: invoking MPI_ABORT causes Open MPI to kill all MPI processes.
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[29030,1],2]
  Exit code:    3
--------------------------------------------------------------------------
mpirun noticed that process rank 0 with PID 123 on node host exited on signal 9 (Killed).
"""


def test_failing_ranks_from_mpirun_report() -> None:
    assert failing_ranks(MPIRUN_REPORT) == {1: 4, 2: 3, 0: 137}
    assert failing_ranks("all good\n") == {}
    # a rank of a split communicator is not a world rank: not attributed
    split = MPIRUN_REPORT.replace("MPI_COMM_WORLD", "MPI COMMUNICATOR 3 SPLIT FROM 0")
    assert failing_ranks(split) == {2: 3, 0: 137}
    assert mpi_aborts(split) == [(1, "MPI COMMUNICATOR 3 SPLIT FROM 0", 4)]


def test_format_timing_is_generic() -> None:
    table = format_timing(
        {"inference_s": 1.5, "exchanges": 20, "per_rank": {"0": {"wait_s": 0.25}}}
    )
    lines = table.splitlines()
    assert "inference_s" in table and "1.5000 s" in table
    assert any(line.split()[:2] == ["exchanges", "20"] for line in lines)
    assert "per_rank.0.wait_s" in table


def test_format_timing_shows_a_list_by_its_length() -> None:
    # per-step records (timing.json per_exchange steps) must not widen the table
    table = format_timing({"per_exchange": {"cnn": {"steps": list(range(21900))}}, "lag": 0})
    assert "per_exchange.cnn.steps   [21900 values]" in table
    assert max(len(line) for line in table.splitlines()) < 60


# --- validation --------------------------------------------------------------------------------


def test_validation_lists_every_problem(tmp_path: Path) -> None:
    cfg = (
        "&namdom\n rn_Dt = 0.\n/\n"
        "&namrun\n nn_it000 = 5\n nn_itend = 2\n/\n"
        "&nammpp\n jpni = 3\n jpnj = 1\n/\n"
    )
    toml = make_case(tmp_path, cfg=cfg, ranks=2)
    (tmp_path / "toy_nemo_copy").chmod(0o644)
    problems = find_problems(load_config(toml), build_dir=tmp_path)
    text = "\n".join(problems)
    assert "model.executable" in text and "is not executable" in text
    assert "&namdom rn_Dt = 0.0: the time step must be > 0" in text
    assert "&namrun nn_itend = 2 is before &namrun nn_it000 = 5" in text
    assert "jpni = 3, jpnj = 1: 3 subdomains but model.ranks = 2" in text
    assert str(tmp_path / "namelist_cfg") in text


def test_validation_ranks_columns_and_frequency(tmp_path: Path) -> None:
    extra = (
        '[[exchange]]\nclosure = "c"\ninputs = {a = "u"}\noutputs = {b = "u_tend"}\nevery = 50\n'
    )
    cfg = "&namrun\n nn_it000 = 1\n nn_itend = 10\n/\n&namusr_def\n nn_nx = 8\n nn_ny = 6\n/\n"
    toml = make_case(tmp_path, cfg=cfg, toml_extra=extra, ranks=49)
    problems = find_problems(load_config(toml), build_dir=tmp_path)
    assert any(
        "model.ranks = 49: more ranks than the 8 x 6 = 48 grid columns" in p for p in problems
    )
    assert any(
        p.startswith("exchange[0].every = 50: longer than the run (10 steps)") for p in problems
    )


def test_missing_executable_and_mpirun_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = make_case(tmp_path)
    toml.write_text(toml.read_text().replace(str(tmp_path / "toy_nemo_copy"), "toy_nemo_missing"))
    monkeypatch.setenv("MLBRIDGE_MPIRUN", "/nonexistent")
    with pytest.raises(ConfigError) as info:
        launch(toml, build_dir=tmp_path / "build")
    message = str(info.value)
    assert str(tmp_path / "build" / "bin" / "toy_nemo_missing") in message
    assert "mlbridge build" in message
    assert "MLBRIDGE_MPIRUN='/nonexistent'" in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_namelist_errors_stop_before_launch(tmp_path: Path) -> None:
    toml = make_case(tmp_path, cfg="&namrun\n nn_bogus = 1\n/\n")
    with pytest.raises(ConfigError, match=r"&namrun nn_bogus: no such entry"):
        launch(toml)


def test_cli_exit_status_2_on_config_error(tmp_path: Path) -> None:
    toml = make_case(tmp_path, toml_extra="[server]\ndevice = 'gpu'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", str(toml)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert 'server.device = "gpu"' in proc.stderr and str(toml) in proc.stderr


def _wait_for(predicate, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _hangup_default() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _interrupt_run(
    toml: Path, workdir: Path, args: list[str], startup_s: float, sig: int = signal.SIGINT
) -> Path:
    """``mlbridge run`` stopped by ``sig`` once the model steps; return the run directory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "run", str(toml), "--workdir", str(workdir), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a suite run under nohup would hand the launcher SIGHUP ignored,
        # which it keeps ignored on purpose (test_nohup_keeps_the_job_running_on_sighup)
        preexec_fn=_hangup_default,
    )
    run_dir: Path | None = None
    try:
        assert _wait_for(lambda: any(workdir.glob("*/time.step")), startup_s), "never started"
        run_dir = next(workdir.glob("*/time.step")).parent
        ranks = live_job_processes(run_dir)
        assert ranks, "the ranks should be running"
        start = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - start < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in live_job_processes(run_dir) if run_dir is not None else ():
            os.kill(pid, signal.SIGKILL)  # a launcher that failed to stop its job
    assert run_dir is not None
    assert proc.returncode == 128 + sig, err
    assert f"{signal.Signals(sig).name}: stopping every rank" in err
    assert _wait_for(lambda: not live_job_processes(run_dir), 2), "ranks outlived the launcher"
    # not even as zombies: the launcher reaps what mpirun leaves behind
    left = [Path(f"/proc/{pid}/stat").read_text() for pid in ranks if Path(f"/proc/{pid}").exists()]
    assert not left
    return run_dir


# --- the real toy model ------------------------------------------------------------------------


def model_alone(tmp_path: Path, **model_changes: object) -> Path:
    """The coarse example without its exchanges, as a JSON coupling file."""
    example = load_config(COARSE)
    config = dataclasses.replace(
        example, model=dataclasses.replace(example.model, **model_changes), exchanges=()
    )
    return write_config_json(config, tmp_path / "model_alone.json")


def test_toy_runs_on_two_ranks(toy_exe: Path, tmp_path: Path) -> None:
    result = launch(
        model_alone(tmp_path),
        model_ranks=2,
        steps=5,
        workdir=tmp_path / "runs",
        build_dir=toy_exe.parents[1],
        quiet=True,
    )
    assert result.returncode == 0, result.problems
    run_dir = result.run_dir
    assert run_dir.name.startswith("COARSE_")
    for name in ("ocean.output", "namelist_cfg", "namelist_ref", "run_config.json", "mpirun.log"):
        assert (run_dir / name).is_file(), name
    assert re.search(r"nn_itend\s*=\s*5\b", (run_dir / "namelist_cfg").read_text())
    assert result.reached_step == result.last_step == 5
    assert any(run_dir.glob("*.nc")), "the model wrote no NetCDF output"
    assert json.loads((run_dir / "run_config.json").read_text())["run"]["steps"] == 5
    assert "toy_nemo" in (run_dir / "command.txt").read_text()
    assert [log.label for log in result.rank_logs] == ["model 0", "model 1"]
    assert all(log.stdout.parent.is_dir() for log in result.rank_logs)
    assert not live_job_processes(run_dir)


def test_example_runs_from_the_command_line(toy_exe: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "run",
            str(COARSE),
            "--steps",
            "4",
            "--model-ranks",
            "2",
            "--workdir",
            str(tmp_path),
            "--build-dir",
            str(toy_exe.parents[1]),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mlbridge run: run directory" in proc.stdout
    assert "finished 4 steps" in proc.stdout
    run_dir = next(tmp_path.glob("COARSE_*"))
    assert (run_dir / "time.step").read_text().split()[0] == "4"


def test_toy_with_bad_namelist_entry_fails_with_its_message(
    toy_exe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_config(COARSE)
    # a value only the model checks (the launcher validates the grid, not the physics)
    bad_cfg = write_patched_cfg(
        example.model.namelist_cfg, {"namusr_def": {"rn_dx": -1.0}}, tmp_path / "namelist_cfg"
    )
    result = launch(
        model_alone(tmp_path, namelist_cfg=bad_cfg),
        model_ranks=2,
        steps=3,
        workdir=tmp_path / "runs",
        build_dir=toy_exe.parents[1],
        quiet=True,
    )
    assert result.returncode != 0
    err = capsys.readouterr().err
    assert "FAILED with status" in err
    assert "E R R O R" in err and "rn_dx" in err
    assert not live_job_processes(result.run_dir)


def test_toy_sigint_ends_every_rank(toy_exe: Path, tmp_path: Path) -> None:
    _interrupt_run(
        model_alone(tmp_path),
        tmp_path / "runs",
        ["--model-ranks", "2", "--steps", "20000", "--build-dir", str(toy_exe.parents[1])],
        startup_s=60,
    )


def test_model_ranks_override_resets_decomposition(toy_exe: Path, tmp_path: Path) -> None:
    toml = make_case(tmp_path, cfg="&nammpp\n jpni = 2\n jpnj = 1\n/\n", ranks=2, exe=toy_exe)
    result = launch(toml, model_ranks=1, steps=2, quiet=True)
    assert result.ok, result.problems
    text = (result.run_dir / "namelist_cfg").read_text()
    assert re.search(r"jpni\s*=\s*0", text) and re.search(r"jpnj\s*=\s*0", text)
    assert len(result.rank_logs) == 1


def test_coupled_sigint_ends_model_and_server_ranks(toy_exe: Path, tmp_path: Path) -> None:
    coupled = REPO / "examples" / "03_coupled_laplacian" / "coupling.toml"
    _interrupt_run(
        coupled,
        tmp_path / "runs",
        ["--steps", "200000", "--build-dir", str(toy_exe.parents[1])],
        startup_s=60,
    )
