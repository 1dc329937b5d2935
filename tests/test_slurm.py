"""Slurm: the launcher's choice, ``--dry-run``, srun inside an allocation, ``mlbridge submit``.

The command texts are checked without a cluster; the jobs run on a real single-node Slurm
cluster that :mod:`slurm_fixture` starts (munge, slurmctld, slurmd) and stops.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from slurm_fixture import SlurmCluster
from system_helpers import unavailable
from toy_helpers import read_nc

from bridge.config.coupling import SlurmConfig, load_config
from bridge.launch import slurm
from bridge.launch.command import LauncherError, choose_launcher, job_command
from bridge.launch.launcher import launch
from bridge.launch.mpiexec import Program
from bridge.launch.processes import _alive, job_processes

REPO = Path(__file__).resolve().parents[1]
COUPLED = REPO / "examples" / "03_coupled_laplacian" / "coupling.toml"
STEPS = 3


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def no_slurm_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(extra)
    return env


def needs_srun() -> None:
    if shutil.which("srun") is None:
        unavailable("srun is not installed (`make test` installs slurm-client)")


# --- the choice and the command texts (no cluster) ---------------------------------------------


def test_choice_of_launcher() -> None:
    assert choose_launcher(None, {}) == "mpirun"
    assert choose_launcher(None, {"SLURM_JOB_ID": "12"}) == "srun"
    assert choose_launcher("mpirun", {"SLURM_JOB_ID": "12"}) == "mpirun"
    with pytest.raises(LauncherError, match="not inside a Slurm allocation"):
        choose_launcher("srun", {})
    with pytest.raises(LauncherError, match="expected one of mpirun, srun"):
        choose_launcher("aprun", {})


def test_multi_prog_file_and_heterogeneous_step(tmp_path: Path) -> None:
    needs_srun()
    programs = [Program(2, ("/m/model", "--x", "a b")), Program(1, ("python", "-m", "srv"))]
    text = slurm.multi_prog_text(programs)
    assert text.splitlines()[1:] == ["0-1 /m/model --x 'a b'", "2 python -m srv"]
    plain = job_command("srun", programs, tmp_path, SlurmConfig())
    assert plain.argv[1:3] == ("--mpi=pmix", "--kill-on-bad-exit=1")
    assert "--ntasks=3" in plain.argv and plain.argv[-2:] == (
        "--multi-prog",
        str(tmp_path / "mpmd.conf"),
    )
    assert plain.files == ((tmp_path / "mpmd.conf", text),)
    assert plain.rank_log_files(2) == (tmp_path / "logs/rank.2.out", tmp_path / "logs/rank.2.err")
    het = job_command("srun", programs, tmp_path, SlurmConfig(server_nodes=1))
    joined = " ".join(het.argv)
    assert " --het-group=0 --ntasks=2 " in joined and " : --het-group=1 --ntasks=1 " in joined
    assert het.files == ()
    # a heterogeneous allocation makes a heterogeneous step, whatever the config says
    step = slurm.srun_step(
        programs, tmp_path, SlurmConfig(), log_dir=tmp_path, environ={"SLURM_HET_SIZE": "2"}
    )
    assert "--het-group=1" in step.argv


def test_batch_script_directives() -> None:
    job = slurm.BatchJob(
        model_ranks=4,
        server_ranks=2,
        slurm=SlurmConfig(
            partition="cpu",
            time="00:20:00",
            server_nodes=1,
            server_partition="gpu",
            gpus_per_node=2,
            sbatch_args=("--qos=debug",),
        ),
        name="mlbridge-x",
        command=("mlbridge", "run", "c.toml", "--launcher", "srun"),
        workdir=Path("/w"),
        output=Path("/w/runs/slurm-%j.out"),
        env={"A": "b c"},
    )
    lines = slurm.batch_script(job).splitlines()
    assert lines[0] == "#!/bin/bash"
    het = lines.index("#SBATCH hetjob")
    first, second = lines[:het], lines[het:]
    assert "#SBATCH --ntasks=4" in first and "#SBATCH --partition=cpu" in first
    assert "#SBATCH --time=00:20:00" in first and "#SBATCH --qos=debug" in first
    assert "#SBATCH --ntasks=2" in second and "#SBATCH --partition=gpu" in second
    assert "#SBATCH --gpus-per-node=2" in second and "--gpus-per-node=2" not in " ".join(first)
    assert "export A='b c'" in lines
    assert lines[-1] == "exec mlbridge run c.toml --launcher srun"


def test_slurm_table_is_validated(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[slurm]\ntime = "soon"\nnodes = 0\ngpu = 1\n')
    with pytest.raises(Exception) as err:
        load_config(toml)
    text = str(err.value)
    assert "slurm.time" in text and "soon" in text
    assert "slurm.nodes" in text and "slurm.gpu" in text
    toml.write_text('[slurm]\ntime = "1-00:30:00"\nserver_nodes = 2\nsrun_args = ["--exclusive"]\n')
    config = load_config(toml)
    assert config.slurm.heterogeneous and config.slurm.srun_args == ("--exclusive",)


def test_dry_run_mpirun(toy_exe: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    proc = cli(
        "run",
        str(COUPLED),
        "--dry-run",
        "--steps",
        "3",
        "--workdir",
        str(workdir),
        "--build-dir",
        str(toy_exe.parents[1]),
        env=no_slurm_env(),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "launcher: mpirun" in out
    run_dir = re.search(r"run directory \(would be created\): (\S+)", out).group(1)
    assert Path(run_dir).parent == workdir and not Path(run_dir).exists()
    assert not workdir.exists() or not any(workdir.iterdir()), "a dry run created something"
    assert "run_config.json" in out and "namelist_cfg" in out
    assert f"MLBRIDGE_RUN_DIR={run_dir}" in out and "OMP_NUM_THREADS=1" in out
    command = out.split("command:\n", 1)[1].strip()
    assert re.search(
        rf"mpirun .*-np 2 {toy_exe} : -np 1 \S*python\S* -u -m bridge\.server "
        rf"--config {run_dir}/run_config\.json --run-dir {run_dir}$",
        command,
    ), command


def test_dry_run_srun(toy_exe: Path, tmp_path: Path) -> None:
    needs_srun()
    workdir = tmp_path / "runs"
    proc = cli(
        "run",
        str(COUPLED),
        "--dry-run",
        "--workdir",
        str(workdir),
        "--build-dir",
        str(toy_exe.parents[1]),
        env=no_slurm_env(SLURM_JOB_ID="4242"),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "launcher: srun (inside Slurm job 4242)" in out
    run_dir = re.search(r"run directory \(would be created\): (\S+)", out).group(1)
    assert not Path(run_dir).exists()
    conf = out.split(f"--- {run_dir}/mpmd.conf\n", 1)[1].split("\n---", 1)[0].splitlines()
    assert conf[1] == f"0-1 {toy_exe}"
    assert re.fullmatch(
        rf"2 \S+ -u -m bridge\.server --config {run_dir}/run_config\.json "
        rf"--run-dir {run_dir}",
        conf[2],
    ), conf
    command = out.split("command:\n", 1)[1].strip()
    assert command == (
        f"{shutil.which('srun')} --mpi=pmix --kill-on-bad-exit=1 --ntasks=3 "
        f"--output={run_dir}/logs/rank.%t.out --error={run_dir}/logs/rank.%t.err "
        f"--multi-prog {run_dir}/mpmd.conf"
    )


def test_srun_outside_an_allocation_is_refused(toy_exe: Path, tmp_path: Path) -> None:
    proc = cli(
        "run",
        str(COUPLED),
        "--launcher",
        "srun",
        "--workdir",
        str(tmp_path / "runs"),
        "--build-dir",
        str(toy_exe.parents[1]),
        env=no_slurm_env(),
    )
    assert proc.returncode == 2
    assert (
        "--launcher srun: not inside a Slurm allocation ($SLURM_JOB_ID is not set)" in proc.stderr
    )
    assert "mlbridge submit" in proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be created"


# --- a real cluster ----------------------------------------------------------------------------


def outputs(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    files = sorted(run_dir.glob("*_grid.nc"))
    assert files, f"no model output in {run_dir}"
    return {f.name: read_nc(f) for f in files}


def test_srun_in_salloc_is_bit_identical_to_mpirun(
    toy_exe: Path, tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    reference = launch(
        COUPLED,
        steps=STEPS,
        workdir=tmp_path / "mpirun",
        build_dir=toy_exe.parents[1],
        quiet=True,
        launcher="mpirun",
    )
    assert reference.ok, reference.problems
    start = time.monotonic()
    proc = subprocess.run(
        [
            "salloc",
            "--ntasks=3",
            "--time=5",
            sys.executable,
            "-m",
            "bridge.cli",
            "run",
            str(COUPLED),
            "--steps",
            str(STEPS),
            "--workdir",
            str(tmp_path / "srun"),
            "--build-dir",
            str(toy_exe.parents[1]),
        ],
        cwd=REPO,
        env=slurm_cluster.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"finished {STEPS} steps" in proc.stdout
    run_dir = next((tmp_path / "srun").iterdir())
    command = (run_dir / "command.txt").read_text()
    assert command.startswith(shutil.which("srun")) and "--multi-prog" in command
    assert (run_dir / "mpmd.conf").is_file()
    # per-rank logs under srun: srun opened one pair of files per world rank where the
    # supervisor reads them (a quiet successful run leaves them empty)
    logs = sorted(p.name for p in (run_dir / "logs").iterdir())
    assert logs == [f"rank.{r}.{kind}" for r in range(3) for kind in ("err", "out")]
    got, want = outputs(run_dir), outputs(reference.run_dir)
    assert got.keys() == want.keys()
    for name in want:
        for var in want[name]:
            assert np.array_equal(got[name][var], want[name][var]), f"{name}:{var} differs"
            assert got[name][var].tobytes() == want[name][var].tobytes()
    print(f"srun run in salloc: {elapsed:.1f} s; mpirun run: {reference.elapsed:.1f} s")


def test_submit_runs_under_sbatch(
    toy_exe: Path, tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    workdir = tmp_path / "runs"
    proc = cli(
        "submit",
        str(COUPLED),
        "--steps",
        str(STEPS),
        "--workdir",
        str(workdir),
        "--build-dir",
        str(toy_exe.parents[1]),
        "--time",
        "00:05:00",
        env=slurm_cluster.env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = re.search(r"submitted batch job (\d+)", proc.stdout).group(1)
    script = workdir / "coupling.sbatch"
    text = script.read_text()
    assert "#SBATCH --ntasks=3" in text and "#SBATCH --time=00:05:00" in text
    assert "--launcher srun" in text
    state = slurm_cluster.wait_job(job_id, timeout_s=180)
    log = (workdir / f"slurm-{job_id}.out").read_text()
    assert state == "COMPLETED", log
    assert f"finished {STEPS} steps" in log, log
    run_dir = Path(re.search(r"mlbridge run: run directory (\S+)", log).group(1))
    assert run_dir.parent == workdir
    assert (run_dir / "time.step").read_text().split()[0] == str(STEPS)
    assert (run_dir / "mpmd.conf").is_file() and (run_dir / "timing.json").is_file()
    assert outputs(run_dir)


def test_submit_no_submit_only_writes(toy_exe: Path, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    proc = cli(
        "submit",
        str(COUPLED),
        "--no-submit",
        "--script",
        str(script),
        "--workdir",
        str(tmp_path / "runs"),
        "--build-dir",
        str(toy_exe.parents[1]),
        "--partition",
        "p1",
        env=no_slurm_env(MLBRIDGE_SBATCH="/nonexistent/sbatch"),  # sbatch is never called
    )
    assert proc.returncode == 0, proc.stderr
    assert "sbatch " + str(script) in proc.stdout
    text = script.read_text()
    assert "#SBATCH --partition=p1" in text and "#SBATCH --ntasks=3" in text
    assert not list((tmp_path / "runs").glob("*_*")), "no run directory before the job runs"


def test_sigint_under_srun_ends_every_rank(
    toy_exe: Path, tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    workdir = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            "salloc",
            "--ntasks=3",
            "--time=5",
            sys.executable,
            "-m",
            "bridge.cli",
            "run",
            str(COUPLED),
            "--steps",
            "200000",
            "--workdir",
            str(workdir),
            "--build-dir",
            str(toy_exe.parents[1]),
        ],
        cwd=REPO,
        env=slurm_cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir: Path | None = None
    try:
        deadline = time.monotonic() + 90
        ranks: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(workdir.glob("*/mpmd.conf")) if workdir.exists() else []
            if found:
                run_dir = found[0].parent
                ranks = _alive(job_processes(run_dir))
                if len(ranks) >= 3:  # every rank started (srun's tasks carry the marker)
                    break
            time.sleep(0.2)
        assert run_dir is not None and len(ranks) >= 3, f"the ranks never started: {ranks}"
        time.sleep(2.0)  # into the exchanges
        # the launcher (a child of salloc) gets the signal, as from Ctrl-C in the terminal
        launcher = [pid for pid in ranks | _children(proc.pid) if b"bridge.cli" in _cmdline(pid)]
        assert launcher, "launcher process not found"
        for pid in launcher:
            os.kill(pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "SIGINT: stopping every rank" in err, err
    assert run_dir is not None
    deadline = time.monotonic() + 10
    while _alive(job_processes(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(job_processes(run_dir)), "ranks outlived the launcher"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_failed_tasks_read_from_srun_messages(slurm_cluster: SlurmCluster) -> None:
    # srun's own words about failing tasks: the failure report names those world ranks
    proc = subprocess.run(
        ["srun", "--ntasks=3", "bash", "-c", "exit $(( SLURM_PROCID == 2 ? 7 : 0 ))"],
        env=slurm_cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 7, proc.stderr
    assert slurm.failed_tasks(proc.stderr) == {2: 7}, proc.stderr
    assert slurm.failed_tasks("srun: error: n1: tasks 0-1,4: Killed\n") == {0: 137, 1: 137, 4: 137}
