"""A real single-node Slurm cluster for the tests: munge, slurmctld and slurmd from Debian.

Everything lives in one scratch folder (configuration, state, spool, logs, pid files, munge's
socket), the daemons run as root without systemd or cgroups, and they are stopped by the PIDs in
their pid files, never by name. ``make test`` installs the packages (``slurmd slurmctld
slurm-client munge``); where they are missing, or the tests do not run as root, the tests that
need the cluster are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from system_helpers import unavailable

PACKAGES = "slurmd slurmctld slurm-client munge"
DAEMONS = ("munged", "slurmctld", "slurmd", "srun", "salloc", "sbatch", "sinfo")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its configuration file and the environment its clients need."""

    root: Path
    conf: Path
    node: str
    partition: str
    cpus: int

    def env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` with ``SLURM_CONF`` pointing at this cluster (and no job's variables)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra)
        return env

    def wait_job(self, job_id: str, timeout_s: float = 120.0) -> str:
        """Wait until job ``job_id`` has left the queue; return its final state (``sacct``-free:
        ``scontrol show job`` keeps finished jobs for ``MinJobAge`` seconds)."""
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["scontrol", "-o", "show", "job", job_id],
                env=self.env(),
                capture_output=True,
                text=True,
            ).stdout
            fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
            state = fields.get("JobState", "")
            if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {state or 'unknown'} after {timeout_s:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(pid_file: Path, timeout_s: float = 10.0) -> None:
    pid = _pid(pid_file)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _missing() -> str | None:
    """Why the cluster cannot start here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    for name in ("munged", "slurmctld", "slurmd"):  # in sbin, off a user's PATH
        if name in absent and Path("/usr/sbin", name).exists():
            absent.remove(name)
    if absent:
        return (
            f"Slurm is not installed ({', '.join(absent)} missing): `make test` installs it, "
            f"or as root: apt-get install --no-install-recommends {PACKAGES}"
        )
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root; these tests are not run as root"
    if not Path("/etc/munge/munge.key").is_file():
        return "/etc/munge/munge.key is missing (reinstall the munge package)"
    return None


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _write_conf(root: Path, node: str, cpus: int) -> Path:
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=mlbtest",
                f"SlurmctldHost={node}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={root / 'munge.socket'}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=pmix",
                "ReturnToService=2",
                "MinJobAge=600",
                # the tests start more ranks than this machine has cores: take the CPUs below
                "SlurmdParameters=config_overrides",
                f"NodeName={node} CPUs={cpus} State=UNKNOWN",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP "
                "OverSubscribe=FORCE",
                "",
            ]
        )
    )
    return conf


def _node_state(env: dict[str, str]) -> str:
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start munge, slurmctld and slurmd in a scratch folder; stop them after the session."""
    reason = _missing()
    if reason is not None:
        unavailable(reason)
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o700)  # munged refuses a socket folder others can write to
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    node = socket.gethostname().split(".")[0]
    cpus = max(8, os.cpu_count() or 1)
    conf = _write_conf(root, node, cpus)
    cluster = SlurmCluster(root=root, conf=conf, node=node, partition="debug", cpus=cpus)
    env = cluster.env()
    pid_files = [root / "slurmd.pid", root / "slurmctld.pid", root / "munged.pid"]
    try:
        for argv in (
            [
                _sbin("munged"),
                "--force",
                f"--socket={root / 'munge.socket'}",
                f"--pid-file={root / 'munged.pid'}",
                f"--log-file={root / 'munged.log'}",
                f"--seed-file={root / 'munged.seed'}",
            ],
            [_sbin("slurmctld"), "-f", str(conf)],
            [_sbin("slurmd"), "-f", str(conf)],
        ):
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                logs = "".join(
                    f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                    for p in sorted(root.glob("*.log"))
                )
                pytest.fail(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}{logs}")
        deadline = time.monotonic() + START_TIMEOUT_S
        state = ""
        while time.monotonic() < deadline:
            state = _node_state(env)
            if state in ("idle", "mix", "alloc"):
                break
            time.sleep(0.5)
        else:
            logs = "".join(
                f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                for p in sorted(root.glob("slurm*.log"))
            )
            pytest.fail(f"the Slurm node is {state or 'not up'} after {START_TIMEOUT_S} s{logs}")
        yield cluster
    finally:
        for pid_file in pid_files:
            _stop(pid_file)
