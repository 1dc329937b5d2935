"""A long toy run, one model year per job, resumable: the fine "truth" and the twin experiments.

Every year runs as its own job from the previous year's restart, in ``<out>/year_NNN/``, and is
recorded in ``<out>/year_NNN.json`` (the grid file, the restart and its sha256) only once the job
ended well. A rerun skips the years recorded whose restart still has its hash, removes any
half-done year and goes on from there, so an interruption costs at most one year. The settings
(configuration, namelist patch, output interval) are stored in ``<out>/truth.json``; a rerun with
other settings is refused instead of mixed.

A run already made elsewhere can be continued: ``--seed-restart FILE --seed-year N`` takes FILE
as the end of year N (copied in, recorded with its origin).

Usage::

    python -m mlbridge_models.subgrid.truth --config examples/02_fine/coupling.toml \\
        --out runs/truth --years 20 --write-days 5

    # continue a 4-year run made by hand
    python -m mlbridge_models.subgrid.truth --config examples/02_fine/coupling.toml \\
        --out runs/truth --years 20 --seed-year 4 \\
        --seed-restart runs-toy/fine/FINE_00350400_restart.nc
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.registry.store import sha256_file

DAYS_PER_YEAR = 365
SECONDS_PER_DAY = 86400.0


class TruthError(RuntimeError):
    """The run cannot go on: bad settings, a failed year, settings that changed."""


@dataclasses.dataclass(frozen=True)
class YearRecord:
    """One finished model year."""

    year: int
    grid: str  # path of the year's *_grid.nc, relative to the run folder ("" when seeded)
    restart: str  # path of the restart at the end of the year, relative to the run folder
    sha256: str
    seconds: float
    seeded_from: str = ""


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def year_dir(out: Path, year: int) -> Path:
    return out / f"year_{year:03d}"


def year_record_path(out: Path, year: int) -> Path:
    return out / f"year_{year:03d}.json"


def read_year(out: Path, year: int, *, check: bool = True) -> YearRecord | None:
    """The record of ``year`` if it exists and (``check``) its restart still has its hash."""
    path = year_record_path(out, year)
    if not path.is_file():
        return None
    try:
        record = YearRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    restart = out / record.restart
    if not restart.is_file():
        return None
    if check and sha256_file(restart) != record.sha256:
        return None
    return record


def grid_files(out: Path, first: int, last: int) -> list[Path]:
    """The ``*_grid.nc`` of years ``first..last`` (inclusive), in order; all must be done."""
    files = []
    for year in range(first, last + 1):
        record = read_year(out, year, check=False)
        if record is None or not record.grid:
            raise TruthError(f"{out}: year {year} has no recorded output (run it first)")
        files.append(out / record.grid)
    return files


def config_digest(config: Path, namelist_cfg: Path | None) -> str:
    """sha256 of the coupling config's text and of its ``namelist_cfg``: what a run folder was
    made with (a closure version changed in the config, or a namelist edited, changes it)."""
    import hashlib

    digest = hashlib.sha256()
    for path in (config, namelist_cfg):
        if path is None:
            continue
        digest.update(path.resolve().read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _settings(
    config: Path, patch: Mapping[str, Any], write_days: float, steps: int, digest: str
) -> dict:
    return {
        "config": str(config.resolve()),
        "config_sha256": digest,
        "namelist_patch": json.loads(json.dumps(patch)),
        "write_days": write_days,
        "steps_per_year": steps,
    }


def run_truth(
    config_path: Path,
    out: Path,
    years: int,
    *,
    write_days: float = 5.0,
    patch: Mapping[str, Mapping[str, Any]] | None = None,
    seed_restart: Path | None = None,
    seed_year: int = 0,
    progress: bool = False,
    config_changes: bool = False,
) -> list[YearRecord]:
    """Run (or resume) years ``1..years``; return their records.

    The config's path and its digest (:func:`config_digest`) are part of the settings a folder
    is continued with; ``config_changes=True`` leaves the digest out of the comparison, for a
    caller that rewrites the config between years on purpose (e.g. a restart path per year).

    Raises
    ------
    TruthError
        If the settings differ from those stored in ``out``, or a year's job fails (its
        folder is kept for the post-mortem; the years before it stay recorded).
    """
    from bridge.config.coupling import TOY_NAMELIST_REF, load_config
    from bridge.config.namelist import read_namelists, write_patched_cfg
    from bridge.launch.launcher import launch

    patch = {k: dict(v) for k, v in (patch or {}).items()}
    out = Path(out).resolve()
    config = load_config(config_path)
    nml = read_namelists(config.model.namelist_ref or TOY_NAMELIST_REF, config.model.namelist_cfg)
    dt = float(nml.get("namdom", "rn_dt"))
    exp = str(nml.get("namrun", "cn_exp"))
    steps = round(DAYS_PER_YEAR * SECONDS_PER_DAY / dt)
    if abs(steps * dt - DAYS_PER_YEAR * SECONDS_PER_DAY) > 1e-6 * dt:
        raise TruthError(f"{config_path}: rn_Dt = {dt} s does not divide a 365-day year")
    write = round(write_days * SECONDS_PER_DAY / dt)
    if write < 1 or steps % write:
        raise TruthError(
            f"--write-days {write_days}: {write} steps of {dt} s do not divide a year "
            f"of {steps} steps"
        )

    out.mkdir(parents=True, exist_ok=True)
    digest = config_digest(config_path, config.model.namelist_cfg)
    settings = _settings(config_path, patch, write_days, steps, digest)
    stored = out / "truth.json"
    if stored.is_file():
        old = json.loads(stored.read_text())
        if "config_sha256" not in old and {**old, "config_sha256": digest} == settings:
            # written before the digest was recorded: same path and settings, record it now
            print(f"{stored}: recording the config's sha256 (not stored before)", flush=True)
            _write_json(stored, settings)
            old = settings
        if config_changes:
            old = {**old, "config_sha256": digest}
        if old != settings:
            diff = [
                f"{k}: {old.get(k)!r} stored, {settings[k]!r} now"
                for k in settings
                if old.get(k) != settings[k]
            ]
            raise TruthError(f"{out} holds a run with other settings:\n  " + "\n  ".join(diff))
    else:
        _write_json(stored, settings)

    records: list[YearRecord] = []
    if seed_restart is not None:
        if not 1 <= seed_year < years:
            raise TruthError(f"--seed-year {seed_year} must be in 1..{years - 1}")
        if read_year(out, seed_year) is None:
            folder = year_dir(out, seed_year)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / Path(seed_restart).name
            shutil.copyfile(seed_restart, target)
            _write_json(
                year_record_path(out, seed_year),
                dataclasses.asdict(
                    YearRecord(
                        year=seed_year,
                        grid="",
                        restart=str(target.relative_to(out)),
                        sha256=sha256_file(target),
                        seconds=0.0,
                        seeded_from=str(Path(seed_restart).resolve()),
                    )
                ),
            )

    first = 1
    for year in range(years, 0, -1):  # the last year recorded: go on after it
        if read_year(out, year) is not None:
            first = year + 1
            break
    for year in range(1, first):
        record = read_year(out, year, check=False)
        if record is not None:
            records.append(record)

    for year in range(first, years + 1):
        folder = year_dir(out, year)
        if folder.exists():
            shutil.rmtree(folder)  # a half-done year
        folder.mkdir(parents=True)
        it000 = (year - 1) * steps + 1
        run_patch = {k: dict(v) for k, v in patch.items()}
        namrun = run_patch.setdefault("namrun", {})
        namrun.update(
            {
                "nn_it000": it000,
                "nn_itend": year * steps,
                "nn_write": write,
                "nn_stock": steps,
                "cn_ocerst_outdir": ".",
            }
        )
        if year > 1:
            prev = read_year(out, year - 1, check=False)
            if prev is None:
                raise TruthError(f"{out}: year {year - 1} is not recorded; cannot start {year}")
            namrun.update(
                {
                    "ln_rstart": True,
                    "cn_ocerst_in": str((out / prev.restart).resolve().with_suffix("")),
                }
            )
        cfg = write_patched_cfg(config.model.namelist_cfg, run_patch, folder / "namelist_cfg")
        cfg_year = dataclasses.replace(
            config, model=dataclasses.replace(config.model, namelist_cfg=cfg)
        )
        print(f"== {exp}: year {year} of {years} (steps {it000} to {year * steps})", flush=True)
        start = time.perf_counter()
        result = launch(cfg_year, steps=steps, workdir=folder, progress=progress, quiet=True)
        seconds = time.perf_counter() - start
        if not result.ok:
            raise TruthError(
                f"year {year} failed (exit {result.returncode}); its run is kept in "
                f"{result.run_dir}"
            )
        restart = result.run_dir / f"{exp}_{year * steps:08d}_restart.nc"
        grids = sorted(result.run_dir.glob("*_grid.nc"))
        if not restart.is_file() or not grids:
            raise TruthError(
                f"year {year}: no restart {restart.name} or *_grid.nc in {result.run_dir}"
            )
        record = YearRecord(
            year=year,
            grid=str(grids[0].relative_to(out)),
            restart=str(restart.relative_to(out)),
            sha256=sha256_file(restart),
            seconds=seconds,
        )
        _write_json(year_record_path(out, year), dataclasses.asdict(record))
        records.append(record)
        print(f"   year {year} done in {seconds:.0f} s", flush=True)
    return records


def _parse_patch(items: list[str]) -> dict[str, dict[str, Any]]:
    """``block.entry=value`` items (value read as JSON when it parses, else a string)."""
    patch: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        block, dot, entry = key.partition(".")
        if not sep or not dot or not block or not entry:
            raise SystemExit(
                f"--set {item!r}: expected block.entry=value (namusr_def.rn_tau0=0.06)"
            )
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        patch.setdefault(block.lower(), {})[entry.lower()] = parsed
    return patch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlbridge_models.subgrid.truth",
        description="Run a toy configuration for many model years, one resumable job per year.",
        epilog=(
            "examples:\n"
            "  python -m mlbridge_models.subgrid.truth --config examples/02_fine/coupling.toml \\\n"
            "      --out runs/truth --years 20 --write-days 5\n"
            "  python -m mlbridge_models.subgrid.truth \\\n"
            "      --config examples/01_coarse/coupling.toml --out runs/twin --years 12 \\\n"
            "      --set namusr_def.rn_tau0=0.06\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="coupling.toml of the model")
    parser.add_argument("--out", type=Path, required=True, help="run folder (created)")
    parser.add_argument("--years", type=int, required=True, help="model years in all")
    parser.add_argument("--write-days", type=float, default=5.0, help="output interval [days]")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="BLOCK.ENTRY=VALUE",
        help="namelist entry to change for every year (repeatable)",
    )
    parser.add_argument("--seed-restart", type=Path, help="restart taken as the end of a year")
    parser.add_argument("--seed-year", type=int, default=0, help="the year it ends")
    args = parser.parse_args(argv)
    try:
        records = run_truth(
            args.config,
            args.out,
            args.years,
            write_days=args.write_days,
            patch=_parse_patch(args.set),
            seed_restart=args.seed_restart,
            seed_year=args.seed_year,
            progress=sys.stderr.isatty(),
        )
    except TruthError as exc:
        print(f"truth: {exc}", file=sys.stderr)
        return 1
    ran = [r for r in records if r.seconds > 0]
    if ran:
        print(
            f"{len(records)} years recorded in {args.out}; "
            f"{sum(r.seconds for r in ran) / len(ran):.0f} s per year run"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
