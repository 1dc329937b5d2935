"""Disk space of a run: what its outputs need before launch, a full disk after a failure.

A disk that fills during a run is hard to see from its results: the model's last words, mpirun's
report and the rank logs live on that disk too, and come back empty. So :func:`estimate_outputs`
sizes what a toy-like model writes (its NetCDF output every ``nn_write`` steps, its restarts every
``nn_stock``, the servers' ``diagnostics.nc``, the logs), :func:`space_problems` compares it with
the free space of each file system before launch, and :func:`disk_full_problem` names a full disk
after a failure: the free space left, and any "No space left on device" in the logs.

The estimate reads the toy's namelist entries (``&namrun nn_write, nn_stock, cn_ocerst_outdir``,
the grid of ``&namusr_def``, ``&namnudge ln_nudge``, ``&nammlb_test cn_mlb_inproc``); a model
without them is estimated from its logs alone. It is rough on purpose: float64 variables as the
toy defines them, plus :data:`MARGIN` and :data:`LOG_BYTES`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.config.coupling import CouplingConfig, model_schedule
from bridge.config.namelist import NamelistError, NemoNamelist

MARGIN = 1.10  # the estimate of the outputs times this
LOG_BYTES = 256 * 1024  # ocean.output, mpirun.log, the rank logs, time.step, timing files
HEADER_BYTES = 8 * 1024  # a NetCDF file's header and attributes, rounded up
LOW_SPACE_BYTES = 1024 * 1024  # less free than this when a run failed: the disk was full
NO_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "enospc")
TAIL_BYTES = 64 * 1024  # how much of the end of each log is searched


@dataclass(frozen=True)
class OutputEstimate:
    """One kind of output of a run and the bytes it will take.

    Attributes
    ----------
    what
        The file(s), in words (``TOY_grid.nc: 3 fields of 23 x 17 x 3, 60 records``).
    nbytes
        Its size, without margin.
    directory
        Where it is written (the run directory, or the restart directory).
    """

    what: str
    nbytes: int
    directory: Path


def human(nbytes: float) -> str:
    """``1.5 MiB``, ``300 KiB``, ``12 B``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def _records(first: int, last: int, every: int) -> int:
    """Steps ``kt`` of ``first..last`` with ``kt % every == 0``."""
    return 0 if every <= 0 else max(0, last // every - (first - 1) // every)


def estimate_outputs(
    config: CouplingConfig, namelist: NemoNamelist, run_dir: Path
) -> list[OutputEstimate]:
    """What a run of the toy-like model of ``namelist`` writes, by kind (no margin).

    ``run_dir`` is where the run will write (a directory below ``run.workdir``).
    """
    estimates = [OutputEstimate("logs and small files", LOG_BYTES, run_dir)]
    try:
        grid = namelist.grid
        first, last = namelist.it000, namelist.itend
        write = namelist.get_int("namrun", "nn_write", 0)
        stock = namelist.get_int("namrun", "nn_stock", 0)
    except NamelistError:
        return estimates  # not a toy-like namelist: the logs only
    field = 8 * grid.nx * grid.ny * grid.nz
    records = _records(first, last, write)
    if records:
        inproc = str(namelist.get("nammlb_test", "cn_mlb_inproc", "none")).strip().lower()
        fields = 3 + (3 if config.coupled or inproc not in ("", "none") else 0)
        fields += 3 if namelist.get("namnudge", "ln_nudge", False) is True else 0
        fixed = HEADER_BYTES + 8 * (2 * grid.nx + 2 * grid.ny + 3 * grid.nx * grid.ny)
        per_record = fields * field + 8 * grid.nz + 12
        estimates.append(
            OutputEstimate(
                f"{namelist.experiment}_grid.nc: {fields} fields of {grid.nx} x {grid.ny} x "
                f"{grid.nz}, {records} records (nn_write = {write})",
                fixed + records * per_record,
                run_dir,
            )
        )
    if stock > 0:
        restarts = _records(first, last, stock) + (0 if last % stock == 0 else 1)
        outdir = Path(str(namelist.get("namrun", "cn_ocerst_outdir", ".")).strip() or ".")
        estimates.append(
            OutputEstimate(
                f"{restarts} restart files of 9 fields of {grid.nx} x {grid.ny} x {grid.nz} "
                f"(nn_stock = {stock})",
                restarts * (HEADER_BYTES + 9 * field),
                outdir if outdir.is_absolute() else run_dir / outdir,
            )
        )
    diagnostics = config.diagnostics
    if diagnostics.netcdf and config.exchanges:
        every = model_schedule(config.exchanges)[0]
        exchanged = {
            f for ex in config.exchanges for f in (*ex.inputs.values(), *ex.outputs.values())
        }
        names = diagnostics.fields or tuple(sorted(exchanged))
        count = _records(first, last, every) // max(1, diagnostics.every)
        estimates.append(
            OutputEstimate(
                f"diagnostics.nc: {len(names)} fields of {grid.nx} x {grid.ny} x {grid.nz}, "
                f"{count} records",
                HEADER_BYTES + count * len(names) * field,
                run_dir,
            )
        )
    return estimates


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (where its file system is asked)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the file system of ``path`` (or of its nearest parent)."""
    return shutil.disk_usage(_existing(path)).free


def space_problems(estimates: Sequence[OutputEstimate]) -> list[str]:
    """One line per file system that cannot hold its share of ``estimates`` (with the margin).

    Each line names the directory, the bytes needed (and what needs them) and the bytes free.
    """
    by_device: dict[int, list[OutputEstimate]] = {}
    for item in estimates:
        by_device.setdefault(os.stat(_existing(item.directory)).st_dev, []).append(item)
    problems = []
    for items in by_device.values():
        directory = items[0].directory
        needed = int(sum(i.nbytes for i in items) * MARGIN)
        free = free_bytes(directory)
        if needed > free:
            parts = "; ".join(f"{i.what}: {human(i.nbytes)}" for i in items)
            problems.append(
                f"{directory}: the run needs about {human(needed)} ({needed} bytes: {parts}; "
                f"x {MARGIN:g}), but its file system ({_existing(directory)}) has "
                f"{human(free)} ({free} bytes) free: the run would stop when the disk is full "
                "(free space, or write less: nn_write, nn_stock, [diagnostics])"
            )
    return problems


def _tail_text(path: Path, nbytes: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - nbytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def no_space_mentions(paths: Iterable[Path], limit: int = 3) -> list[str]:
    """``FILE: line`` of the lines of ``paths`` (their ends) that say the disk is full."""
    found = []
    for path in paths:
        for line in _tail_text(path).splitlines():
            if any(t in line.lower() for t in NO_SPACE_TEXTS):
                found.append(f"{path}: {line.strip()}")
                break
        if len(found) >= limit:
            break
    return found


def disk_full_problem(run_dir: Path, logs: Iterable[Path]) -> str | None:
    """Why a failed run may have failed for want of disk space, or None.

    A full disk: less than :data:`LOW_SPACE_BYTES` free on the run directory's file system now,
    or a log (``logs``: mpirun.log, ocean.output, the rank logs) that says so.
    """
    try:
        usage = shutil.disk_usage(_existing(run_dir))
    except OSError:
        return None
    mentions = no_space_mentions(logs)
    if usage.free >= LOW_SPACE_BYTES and not mentions:
        return None
    text = (
        f"no space left on device: the file system of {run_dir} has {human(usage.free)} "
        f"({usage.free} bytes) free of {human(usage.total)} at the end of the run"
    )
    if mentions:
        text += "; " + "; ".join(mentions)
    return (
        text + ". The run's logs and outputs live there too and may be cut short or empty: free "
        "space (or write less: nn_write, nn_stock, [diagnostics]) and run again"
    )
