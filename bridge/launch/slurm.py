"""The one place that knows Slurm: ``srun`` command lines, the ``--multi-prog`` file, batch scripts.

Inside an allocation (``SLURM_JOB_ID`` set) a job is one ``srun --mpi=pmix --multi-prog`` step
whose MPMD file lists the model ranks, then the server ranks (one ``MPI_COMM_WORLD``, the same
world ranks as under ``mpirun``); with ``[slurm] server_nodes`` the servers are the second
component of a heterogeneous job and the step is ``srun ... model : ... servers``. Each rank's
output goes to ``logs/rank.<R>.out`` and ``logs/rank.<R>.err`` (srun's ``%t``, the task id,
which is the world rank). :func:`batch_script` writes the script ``mlbridge submit`` hands to
``sbatch``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.config.coupling import SlurmConfig
from bridge.launch.mpiexec import Program

JOB_ID_ENV = "SLURM_JOB_ID"
HET_SIZE_ENV = "SLURM_HET_SIZE"
MULTI_PROG_FILE = "mpmd.conf"
PACKAGES = "slurm-client"


class SlurmError(RuntimeError):
    """Slurm is not usable for what was asked (no allocation, no srun, sbatch refused)."""


def job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The id of the Slurm allocation this process runs in, or None outside one."""
    env = os.environ if environ is None else environ
    return env.get(JOB_ID_ENV) or None


def find_tool(name: str) -> str:
    """The path of a Slurm command (``srun``, ``sbatch``); ``$MLBRIDGE_<NAME>`` overrides.

    Raises
    ------
    SlurmError
        If it is not found.
    """
    override = os.environ.get(f"MLBRIDGE_{name.upper()}")
    found = shutil.which(override or name)
    if found is None:
        where = f"MLBRIDGE_{name.upper()}={override!r}" if override else f"{name} on PATH"
        raise SlurmError(
            f"{where} not found: run on a Slurm cluster's login or compute node "
            f"(Debian: apt-get install {PACKAGES})"
        )
    return found


# --- srun -------------------------------------------------------------------------------------


def rank_log_files(log_dir: Path | str, rank: int) -> tuple[Path, Path]:
    """``(stdout, stderr)`` of world rank ``rank`` under srun (``--output``/``--error`` ``%t``)."""
    base = Path(log_dir)
    return base / f"rank.{rank}.out", base / f"rank.{rank}.err"


def _output_flags(log_dir: Path) -> list[str]:
    return [f"--output={log_dir / 'rank.%t.out'}", f"--error={log_dir / 'rank.%t.err'}"]


def _check(programs: Sequence[Program]) -> None:
    if not programs:
        raise ValueError("a Slurm job step needs at least one program")
    for program in programs:
        if program.ranks < 1:
            raise ValueError(
                f"program {program.argv[0]!r} needs at least 1 rank, got {program.ranks}"
            )


def multi_prog_text(programs: Sequence[Program]) -> str:
    """The ``--multi-prog`` file: one line ``first-last argv`` per program, in world-rank order."""
    _check(programs)
    lines = [
        "# srun --multi-prog: task ids (world ranks) and the program each runs",
    ]
    first = 0
    for program in programs:
        last = first + program.ranks - 1
        ids = str(first) if first == last else f"{first}-{last}"
        lines.append(f"{ids} {shlex.join(program.argv)}")
        first = last + 1
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SrunStep:
    """An srun job step: its command line and the files it needs in the run directory."""

    argv: tuple[str, ...]
    files: tuple[tuple[Path, str], ...]


def srun_step(
    programs: Sequence[Program],
    run_dir: Path,
    slurm: SlurmConfig,
    *,
    log_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> SrunStep:
    """The srun command of a job (MPMD through ``--multi-prog``, or a heterogeneous step).

    The step is heterogeneous (model ``:`` servers, one ``--het-group`` each) when
    ``[slurm] server_nodes`` asks for it or the allocation is heterogeneous (``SLURM_HET_SIZE``).

    ``--kill-on-bad-exit=1``: a rank that fails ends the step, as under mpirun.

    Raises
    ------
    ValueError
        If there is no program, a program has no rank, or a heterogeneous step is asked for
        with other than two programs.
    SlurmError
        If ``srun`` is not found.
    """
    _check(programs)
    head = [find_tool("srun"), "--mpi=pmix", "--kill-on-bad-exit=1", *slurm.srun_args]
    env = os.environ if environ is None else environ
    # in a heterogeneous allocation a plain step would only use its first component
    heterogeneous = slurm.heterogeneous or int(env.get(HET_SIZE_ENV, "1") or 1) > 1
    if heterogeneous and len(programs) > 1:
        if len(programs) != 2:
            raise ValueError(f"a heterogeneous step takes 2 programs, got {len(programs)}")
        argv = list(head)
        for group, program in enumerate(programs):
            if group:
                argv.append(":")
            argv += [
                f"--het-group={group}",
                f"--ntasks={program.ranks}",
                *_output_flags(log_dir),
                *program.argv,
            ]
        return SrunStep(tuple(argv), ())
    conf = run_dir / MULTI_PROG_FILE
    total = sum(p.ranks for p in programs)
    argv = [*head, f"--ntasks={total}", *_output_flags(log_dir), "--multi-prog", str(conf)]
    return SrunStep(tuple(argv), ((conf, multi_prog_text(programs)),))


_TASKS = re.compile(
    r"srun: error: \S+: tasks? ([\d,\-]+): (?:Exited with exit code (\d+)|Killed|Terminated)"
)


def _task_ids(spec: str) -> list[int]:
    ids = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        ids += range(int(first), int(last or first) + 1)
    return ids


def failed_tasks(srun_log: str) -> dict[int, int]:
    """World rank -> exit status of the tasks srun reported as failed (killed: 137)."""
    found: dict[int, int] = {}
    for match in _TASKS.finditer(srun_log):
        code = int(match.group(2)) if match.group(2) else 137
        for rank in _task_ids(match.group(1)):
            found[rank] = max(found.get(rank, 0), code)
    return found


# --- sbatch -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchJob:
    """What a batch script asks for and runs.

    Attributes
    ----------
    model_ranks, server_ranks : int
        Tasks of the model and of the servers (0 servers: the model runs alone).
    slurm : SlurmConfig
        Partition, nodes, time limit, GPUs, heterogeneous placement, further options.
    name : str
        The job's name.
    command : tuple of str
        What the job runs (``mlbridge run CONFIG --launcher srun ...``).
    workdir : Path
        The job's working directory.
    output : Path
        The batch log (``%j``: the job id).
    env : dict of str to str
        Variables the script exports before the command.
    """

    model_ranks: int
    server_ranks: int
    slurm: SlurmConfig
    name: str
    command: tuple[str, ...]
    workdir: Path
    output: Path
    env: dict[str, str]


def _directives(ntasks: int, nodes: int, partition: str, gpus: int) -> list[str]:
    lines = [f"--ntasks={ntasks}", f"--nodes={nodes}"]
    if partition:
        lines.append(f"--partition={partition}")
    if gpus:
        lines.append(f"--gpus-per-node={gpus}")
    return lines


def batch_script(job: BatchJob, *, source: str = "") -> str:
    """The text of an sbatch script running ``job.command`` inside its allocation."""
    slurm = job.slurm
    common = [
        f"--job-name={job.name}",
        f"--time={slurm.time}",
        f"--chdir={job.workdir}",
        f"--output={job.output}",
    ]
    if slurm.account:
        common.append(f"--account={slurm.account}")
    common += slurm.sbatch_args
    if slurm.heterogeneous and job.server_ranks:
        groups = [
            _directives(job.model_ranks, slurm.nodes, slurm.partition, 0),
            _directives(
                job.server_ranks,
                slurm.server_nodes,
                slurm.server_partition or slurm.partition,
                slurm.gpus_per_node,
            ),
        ]
    else:
        total = job.model_ranks + job.server_ranks
        groups = [_directives(total, slurm.nodes, slurm.partition, slurm.gpus_per_node)]
    lines = ["#!/bin/bash"]
    if source:
        lines.append(f"# mlbridge submit {source}: the coupled job in one Slurm allocation")
    lines += [f"#SBATCH {d}" for d in [*common, *groups[0]]]
    for group in groups[1:]:
        lines.append("#SBATCH hetjob")
        lines += [f"#SBATCH {d}" for d in group]
    lines += ["", "set -eu"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in job.env.items()]
    lines += ["", "exec " + shlex.join(job.command), ""]
    return "\n".join(lines)


_JOB_ID = re.compile(r"^(\d+)")


def submit(script: Path, *, env: Mapping[str, str] | None = None) -> str:
    """Submit ``script`` with ``sbatch``; return the job id.

    Raises
    ------
    SlurmError
        If sbatch is missing or refuses the script (its message included).
    """
    sbatch = find_tool("sbatch")
    try:
        proc = subprocess.run(
            [sbatch, "--parsable", str(script)],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmError(f"sbatch {script}: {err}") from None
    found = _JOB_ID.match(proc.stdout.strip())
    if proc.returncode != 0 or found is None:
        said = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise SlurmError(f"sbatch {script} refused the job: {said}")
    return found.group(1)
