"""The job's command line: which launcher starts it (:func:`choose_launcher`, the one place that
decides) and what that launcher needs (:func:`job_command`). ``mpiexec.py`` knows mpirun,
``slurm.py`` knows srun; nothing else builds a launcher's command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.config.coupling import SlurmConfig
from bridge.launch import mpiexec, slurm
from bridge.launch.mpiexec import Program

LAUNCHERS = ("mpirun", "srun")


class LauncherError(RuntimeError):
    """The launcher asked for cannot start this job here (nothing was started)."""


def choose_launcher(requested: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``mpirun`` or ``srun``: ``requested`` when given, else srun inside a Slurm allocation.

    Raises
    ------
    LauncherError
        For an unknown launcher, or srun asked for outside a Slurm allocation.
    """
    env = os.environ if environ is None else environ
    inside = slurm.job_id(env)
    if requested is None:
        return "srun" if inside else "mpirun"
    if requested not in LAUNCHERS:
        raise LauncherError(f"--launcher {requested}: expected one of {', '.join(LAUNCHERS)}")
    if requested == "srun" and not inside:
        raise LauncherError(
            f"--launcher srun: not inside a Slurm allocation (${slurm.JOB_ID_ENV} is not set); "
            "run it inside salloc or sbatch, use `mlbridge submit` to write and submit a batch "
            "script, or leave --launcher out to use mpirun here"
        )
    return requested


@dataclass(frozen=True)
class JobCommand:
    """A launcher's command for the job, the files it reads and where each rank's output goes.

    Attributes
    ----------
    launcher : str
        ``mpirun`` or ``srun``.
    argv : tuple of str
        The command line.
    files : tuple of (Path, str)
        Files to write before starting it (srun's ``--multi-prog`` file), with their text.
    log_dir : Path
        Where the ranks' output files go.
    """

    launcher: str
    argv: tuple[str, ...]
    files: tuple[tuple[Path, str], ...]
    log_dir: Path

    def rank_log_files(self, rank: int) -> tuple[Path, Path]:
        """``(stdout, stderr)`` files of world rank ``rank``."""
        if self.launcher == "srun":
            return slurm.rank_log_files(self.log_dir, rank)
        return mpiexec.rank_log_files(self.log_dir, rank)

    def write_files(self) -> None:
        """Write the files the command reads, and the folder of the ranks' output."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for path, text in self.files:
            path.write_text(text)


def job_command(
    launcher: str, programs: Sequence[Program], run_dir: Path, slurm_config: SlurmConfig
) -> JobCommand:
    """The command that starts ``programs`` (MPMD, in world-rank order) with ``launcher``.

    Raises
    ------
    mpiexec.MpiNotFoundError, slurm.SlurmError
        If the launcher's executable is not found.
    """
    log_dir = run_dir / "logs"
    if launcher == "srun":
        step = slurm.srun_step(programs, run_dir, slurm_config, log_dir=log_dir)
        return JobCommand("srun", step.argv, step.files, log_dir)
    argv = mpiexec.mpmd_command(programs, log_dir=log_dir)
    return JobCommand("mpirun", tuple(argv), (), log_dir)
