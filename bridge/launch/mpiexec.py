"""The one place that knows how to start MPI jobs.

Builds ``mpirun`` command lines (single program or MPMD), adding ``--allow-run-as-root`` only
when running as root and ``--oversubscribe`` only when more ranks than cores are asked for, and
the environment those jobs need.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class MpiNotFoundError(RuntimeError):
    """Raised when no ``mpirun`` is found on PATH."""


@dataclass(frozen=True)
class Program:
    """One program of an (MPMD) MPI job: ``ranks`` copies of ``argv``."""

    ranks: int
    argv: tuple[str, ...]


def find_mpirun() -> str:
    """Return the path of ``mpirun`` (``$MLBRIDGE_MPIRUN`` overrides).

    Raises
    ------
    MpiNotFoundError
        If neither the override nor ``mpirun`` on PATH exists.
    """
    override = os.environ.get("MLBRIDGE_MPIRUN")
    if override:
        if shutil.which(override) is None:
            raise MpiNotFoundError(
                f"MLBRIDGE_MPIRUN={override!r} is not an executable "
                "(unset it to use mpirun from PATH)"
            )
        return shutil.which(override) or override
    found = shutil.which("mpirun")
    if found is None:
        raise MpiNotFoundError(
            "mpirun not found on PATH: install Open MPI (apt-get install openmpi-bin "
            "libopenmpi-dev) or set MLBRIDGE_MPIRUN"
        )
    return found


def physical_cores() -> int:
    """Number of physical cores Open MPI will count as slots on this machine."""
    pairs: set[tuple[str, str]] = set()
    phys = core = None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip():
                    if phys is not None and core is not None:
                        pairs.add((phys, core))
                    phys = core = None
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    counts = [n for n in (len(pairs) or None, affinity, os.cpu_count()) if n]
    return max(1, min(counts)) if counts else 1


def mpirun_flags(total_ranks: int, *, bind: bool = False) -> list[str]:
    """Flags for an mpirun that starts ``total_ranks`` ranks on this machine."""
    flags: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    if total_ranks > physical_cores():
        flags.append("--oversubscribe")
    if not bind:
        # torch threads and oversubscribed ranks must not be pinned to one core each
        flags += ["--bind-to", "none"]
    return flags


def output_flags(log_dir: Path | str) -> list[str]:
    """Flags that make mpirun keep each rank's stdout and stderr in files under ``log_dir``.

    Open MPI 4.1 writes ``<log_dir>/1/rank.<R>/stdout`` and ``.../stderr`` for every rank ``R``
    of ``MPI_COMM_WORLD`` (``1`` is the job's first application context; MPMD programs share
    it and are numbered consecutively), and still forwards everything to its own stdout/stderr.
    Use :func:`rank_log_files` to find them.
    """
    return ["--output-filename", str(Path(log_dir).resolve())]


def rank_log_files(log_dir: Path | str, rank: int) -> tuple[Path, Path]:
    """``(stdout, stderr)`` files of world rank ``rank`` written under ``--output-filename``.

    The files may not exist (a rank that printed nothing, or one that never started).
    """
    base = Path(log_dir)
    found = sorted(base.glob(f"*/rank.{rank}"))
    rank_dir = found[0] if found else base / "1" / f"rank.{rank}"
    return rank_dir / "stdout", rank_dir / "stderr"


def mpmd_command(
    programs: Sequence[Program], *, bind: bool = False, log_dir: Path | str | None = None
) -> list[str]:
    """``mpirun [flags] -np N prog args : -np M prog args ...``.

    ``log_dir`` adds :func:`output_flags` (per-rank log files).

    Raises
    ------
    ValueError
        If there is no program or a program has fewer than 1 rank.
    MpiNotFoundError
        If ``mpirun`` cannot be found.
    """
    if not programs:
        raise ValueError("an MPI job needs at least one program")
    total = sum(p.ranks for p in programs)
    cmd = [find_mpirun(), *mpirun_flags(total, bind=bind)]
    if log_dir is not None:
        cmd += output_flags(log_dir)
    for index, program in enumerate(programs):
        if program.ranks < 1:
            raise ValueError(
                f"program {program.argv[0]!r} needs at least 1 rank, got {program.ranks}"
            )
        if index:
            cmd.append(":")
        cmd += ["-np", str(program.ranks), *program.argv]
    return cmd


def python_program(ranks: int, module: str, *args: str) -> Program:
    """A Python rank group running ``python -m module args`` with this interpreter."""
    return Program(ranks, (sys.executable, "-u", "-m", module, *args))


def mpi_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for an MPI job.

    In an MPMD line ``-x VAR`` does not reach every program, so everything is exported instead.
    """
    env = dict(os.environ)
    env.setdefault("MPI4PY_MPIABI", "openmpi")
    # containers often forbid the cross-memory-attach syscall Open MPI's shared memory uses
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    # keep Open MPI quiet about missing high-speed interconnects on a workstation
    env.setdefault("OMPI_MCA_btl_base_warn_component_unused", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Fortran stdout line by line, so that per-rank logs are current when a rank dies
    env.setdefault("GFORTRAN_UNBUFFERED_PRECONNECTED", "y")
    if extra:
        env.update(extra)
    return env
