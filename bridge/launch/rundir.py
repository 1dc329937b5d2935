"""The run directory: its name, what is written into it before the job, what is read after."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.config.coupling import CouplingConfig, write_config_json
from bridge.config.namelist import NamelistError, NemoNamelist, write_patched_cfg
from bridge.launch.closure_checks import (
    ClosureCheck,
    ClosureRecord,
    netcdf_attributes,
    write_closures_json,
)


class LaunchError(RuntimeError):
    """The job could not be started (mpirun failed to execute, run directory not writable)."""


# --- run directory ----------------------------------------------------------------------------


def run_dir_name(experiment: str, now: datetime) -> str:
    """``<experiment>_<YYYYmmdd-HHMMSS>``, the experiment name made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment.strip()).strip("._") or "run"
    return f"{safe}_{now:%Y%m%d-%H%M%S}"


def next_run_dir(workdir: Path, experiment: str, now: datetime | None = None) -> Path:
    """The run directory :func:`make_run_dir` would create now (nothing is created)."""
    base = run_dir_name(experiment, now or datetime.now())
    for n in range(1, 10_000):
        candidate = workdir / (base if n == 1 else f"{base}_{n}")
        if not candidate.exists():
            return candidate
    raise LaunchError(f"{workdir}: no free run directory name for {base}")


def make_run_dir(workdir: Path, experiment: str, now: datetime | None = None) -> Path:
    """Create and return a new run directory below ``workdir`` (``_2``, ``_3``... if taken).

    Raises
    ------
    LaunchError
        If the directory cannot be created.
    """
    base = run_dir_name(experiment, now or datetime.now())
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LaunchError(f"run.workdir {workdir}: cannot create: {err.strerror}") from None
    for n in range(1, 10_000):
        candidate = workdir / (base if n == 1 else f"{base}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise LaunchError(
                f"{candidate}: cannot create the run directory: {err.strerror}"
            ) from None
        return candidate
    raise LaunchError(f"{workdir}: no free run directory name for {base}")


def prepare_run_dir(config: CouplingConfig, namelist: NemoNamelist, run_dir: Path) -> None:
    """Copy the namelists (cfg with ``namelist.patch``), the coupling file, ``run_config.json``.

    Raises
    ------
    LaunchError
        If a file cannot be copied or written.
    """
    try:
        shutil.copyfile(namelist.ref_path, run_dir / "namelist_ref")
        write_patched_cfg(namelist.cfg_path, namelist.patch, run_dir / "namelist_cfg")
        if config.source is not None and config.source.suffix == ".toml":
            shutil.copyfile(config.source, run_dir / "coupling.toml")
        write_config_json(config, run_dir / "run_config.json")
    except (OSError, NamelistError) as err:
        raise LaunchError(f"{run_dir}: cannot prepare the run directory: {err}") from None


def stage_model_files(config: CouplingConfig, run_dir: Path) -> None:
    """Copy ``[model] stage`` and link ``[model] link`` into the run directory (own names).

    Raises
    ------
    LaunchError
        If a file or folder cannot be copied or linked.
    """
    model = config.model
    for key, items in (("stage", model.stage), ("link", model.link)):
        verb = "link" if key == "link" else "copy"
        for index, item in enumerate(items):
            target = run_dir / item.name
            try:
                if key == "link":
                    target.symlink_to(item.resolve(), target_is_directory=item.is_dir())
                elif item.is_dir():
                    shutil.copytree(item, target, symlinks=True)
                else:
                    shutil.copy2(item, target)
            except OSError as err:
                raise LaunchError(
                    f"model.{key}[{index}] = {str(item)!r}: cannot {verb} it into {run_dir}: {err}"
                ) from None


def prepare_generic_run_dir(config: CouplingConfig, run_dir: Path) -> None:
    """A ``kind = "generic"`` model: the coupling file and ``run_config.json`` (the staged files
    follow, :func:`stage_model_files`).

    Raises
    ------
    LaunchError
        If a file cannot be copied or written.
    """
    try:
        if config.source is not None and config.source.suffix == ".toml":
            shutil.copyfile(config.source, run_dir / "coupling.toml")
        write_config_json(config, run_dir / "run_config.json")
    except OSError as err:
        raise LaunchError(f"{run_dir}: cannot prepare the run directory: {err}") from None


# --- closures: the run log and the outputs ----------------------------------------------------


def record_closures(check: ClosureCheck, run_dir: Path, *, quiet: bool = False) -> None:
    """Print the closures of the run (unless ``quiet``) and write ``<run_dir>/closures.json``.

    Raises
    ------
    LaunchError
        If ``closures.json`` cannot be written.
    """
    if not check.closures:
        return
    if not quiet:
        for closure in check.closures:
            print(f"mlbridge run: {closure.describe()}", flush=True)
    try:
        write_closures_json(check, run_dir / "closures.json")
    except OSError as err:
        raise LaunchError(f"{run_dir / 'closures.json'}: cannot write: {err.strerror}") from None


def stamp_netcdf(path: Path, closures: tuple[ClosureRecord, ...] | list[ClosureRecord]) -> None:
    """Add the closures' global attributes (:func:`netcdf_attributes`) to a NetCDF file in place.

    Raises
    ------
    OSError
        If the file cannot be opened for writing or is not NetCDF.
    """
    import netCDF4  # only when there is something to stamp

    with netCDF4.Dataset(path, "a") as dataset:
        for key, value in netcdf_attributes(closures).items():
            dataset.setncattr(key, value)


def stamp_outputs(run_dir: Path, closures: tuple[ClosureRecord, ...]) -> list[str]:
    """Stamp ``*_grid.nc`` and ``diagnostics.nc`` of the run directory; return the problems."""
    if not closures:
        return []
    problems = []
    targets = sorted(run_dir.glob("*_grid.nc")) + sorted(run_dir.glob("diagnostics*.nc"))
    for path in targets:
        try:
            stamp_netcdf(path, closures)
        except (OSError, ImportError) as err:  # the run's result stands; say what is missing
            problems.append(f"{path}: closure attributes not written: {err}")
    return problems


# --- monitoring -------------------------------------------------------------------------------


def read_time_step(run_dir: Path) -> int | None:
    """The model's current step from ``<run_dir>/time.step`` (None: absent or being rewritten)."""
    try:
        text = (run_dir / "time.step").read_text(errors="replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def read_timing(run_dir: Path, name: str = "timing.json") -> dict[str, Any] | None:
    """``<run_dir>/timing.json`` (or ``name``) as a dict, or None when absent or unreadable."""
    try:
        data = json.loads((run_dir / name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def format_timing(data: dict[str, Any], source: str = "timing.json") -> str:
    """A small two-column table of ``timing.json``: floats as seconds, integers as counts, lists
    (per-step records) as their length."""
    rows = []
    for name, value in _flatten(data):
        if isinstance(value, list | tuple):
            text = f"[{len(value)} values]"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, int):
            text = f"{value:d}"
        else:
            text = f"{value:.4f} s" if math.isfinite(value) else str(value)
        rows.append((name, text))
    if not rows:
        return ""
    width = max(len(name) for name, _ in rows)
    vwidth = max(len(text) for _, text in rows)
    lines = [f"timing summary ({source})", "-" * (width + vwidth + 3)]
    lines += [f"{name:<{width}}   {text:>{vwidth}}" for name, text in rows]
    return "\n".join(lines)
