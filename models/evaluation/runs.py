"""evaluate coarse runs (baseline and hybrids, several members) against the coarse-grained truth

``mlbridge evaluate`` runs every experiment of an ``eval.toml`` as an ensemble of coarse runs
(``mlbridge_models.subgrid.truth.run_truth``, one resumable job per model year; the members
differ only by
the amplitude of the initial bump ``&namusr_def rn_bump``), coarse-grains the fine truth's years
file by file (``models/subgrid/coarsen.py``: ``h`` block mean, ``u, v`` the ``face`` filter), and
computes the Ross et al. (2023) scores of ``models/evaluation/metrics.py`` per layer over the
evaluation years of all members pooled, with block-bootstrap intervals over members and time
and the truth's noise floor (``models/evaluation/bootstrap.py``), against the coarse-grained
truth (the headline) and the fine truth itself
(definitions in ``docs/closures.md``)::

    mlbridge evaluate --truth runs/truth --truth-years 10-12 --experiments eval.toml \\
        --out runs/eval --members 3 --years 20 --eval-years 11-20

``eval.toml`` (config paths relative to the file; one experiment must be named ``baseline``)::

    [[experiment]]
    name = "baseline"
    config = "examples/01_coarse/coupling.toml"

    [[experiment]]
    name = "zb"
    config = "examples/06_subgrid_zb/coupling.toml"

Results in ``--out``: ``metrics.json`` (every number per layer, per member too), ``table.md``
(also printed), and the figures ``ke_time_mean.png``, ``ke_spectra.png``, ``pdfs.png``,
``ke_series.png``, ``interface_maps.png``, ``snapshots.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlbridge_models.evaluation import metrics as ev

EXAMPLES = (
    "  mlbridge evaluate --truth runs/truth --truth-years 10-12 --experiments eval.toml \\\n"
    "      --out runs/eval --members 3 --years 20 --eval-years 11-20\n"
    "\n"
    "eval.toml (config paths relative to it; one experiment must be named 'baseline'):\n"
    "  [[experiment]]\n"
    '  name = "baseline"\n'
    '  config = "examples/01_coarse/coupling.toml"\n'
    "  [[experiment]]\n"
    '  name = "zb"\n'
    '  config = "examples/06_subgrid_zb/coupling.toml"\n'
)

BASELINE = "baseline"
SECONDS_PER_YEAR = 365.0 * 86400.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHUNK = 8  # fine records read at once when coarse-graining


class EvalError(RuntimeError):
    """Bad input (experiments file, year range, grids) or nothing to evaluate."""


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Experiment:
    """One experiment: a name (also its folder under ``--out``) and its ``coupling.toml``."""

    name: str
    config: Path


def parse_years(text: str, option: str = "years") -> tuple[int, int]:
    """``"10-12"`` -> ``(10, 12)``, ``"11"`` -> ``(11, 11)``: an inclusive range of model years
    (1-based).

    Raises
    ------
    EvalError
        On anything else, naming ``option``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not match:
        raise EvalError(f"{option} {text!r}: expected FIRST-LAST or YEAR (e.g. 10-12 or 11)")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if first < 1:
        raise EvalError(f"{option} {text!r}: model years start at 1")
    if last < first:
        raise EvalError(f"{option} {text!r}: the last year {last} is before the first {first}")
    return first, last


def load_experiments(path: Path | str) -> list[Experiment]:
    """Read ``[[experiment]]`` tables (``name``, ``config``) from a TOML file.

    ``config`` is relative to the TOML file. Names must be unique, usable as folder names, and
    one must be ``"baseline"`` (the reference of the similarity scores).

    Raises
    ------
    EvalError
        Naming the file and the key of every problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: experiments file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EvalError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"experiment"})
    problems = [f"unknown top-level key {k!r} (expected [[experiment]] tables)" for k in unknown]
    entries = data.get("experiment")
    if entries is None:
        problems.append("no [[experiment]] table")
        entries = []
    elif not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append("'experiment' must be an array of tables ([[experiment]])")
        entries = []
    experiments: list[Experiment] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"experiment[{i}]"
        name, config = entry.get("name"), entry.get("config")
        label = f"{where} ({name!r})" if isinstance(name, str) and _NAME.match(name) else where
        extra = sorted(set(entry) - {"name", "config"})
        problems += [f"{label}: unknown key {k!r} (expected name, config)" for k in extra]
        if name is None:
            problems.append(f"{where}: missing key 'name'")
        elif not isinstance(name, str) or not _NAME.match(name):
            problems.append(
                f"{where}.name = {name!r}: must be a non-empty string of letters, digits, _ . -"
            )
        else:
            where = f"experiment[{i}] ({name!r})"
            if name in seen:
                problems.append(f"{where}: duplicate name {name!r}")
            seen.add(name)
        if config is None:
            problems.append(f"{where}: missing key 'config'")
        elif not isinstance(config, str) or not config:
            problems.append(f"{where}.config = {config!r}: must be a path (string)")
        else:
            resolved = (path.parent / config).resolve()
            if not resolved.is_file():
                problems.append(f"{where}.config: {resolved} not found")
            elif isinstance(name, str):
                experiments.append(Experiment(name, resolved))
    if entries and BASELINE not in seen:
        problems.append(f"no experiment named {BASELINE!r} (the reference of the scores)")
    if problems:
        raise EvalError(f"{path}:\n  - " + "\n  - ".join(problems))
    return experiments


# ------------------------------------------------------------------ runs


@dataclass
class MemberRun:
    """One member of an experiment: its folder, whether it ran, its KE series."""

    experiment: str
    member: int
    folder: Path
    error: str = ""
    has_nan: bool = False
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # years
    ke: np.ndarray = field(default_factory=lambda: np.zeros(0))  # total KE [J] per record


def member_folder(out: Path, name: str, member: int) -> Path:
    return Path(out) / name / f"member_{member}"


def run_members(
    experiments: list[Experiment],
    out: Path,
    members: int,
    years: int,
    *,
    write_days: float = 5.0,
    bump: float = 1.0,
    namelist_patch: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
) -> list[MemberRun]:
    """Run (or resume) every member of every experiment, one after the other.

    Member ``m`` gets ``&namusr_def rn_bump = bump * m`` [m], on top of ``namelist_patch``
    (block -> entry -> value, applied to every experiment's ``namelist_cfg``). A failed member
    (blow-up, crash) is recorded with its error and the others go on.
    """
    from mlbridge_models.subgrid.truth import TruthError, run_truth

    runs: list[MemberRun] = []
    total = len(experiments) * members
    for e_index, exp in enumerate(experiments):
        for member in range(1, members + 1):
            count = e_index * members + member
            folder = member_folder(out, exp.name, member)
            amp = bump * member
            print(
                f"[evaluate] run {count}/{total}: {exp.name} member {member} "
                f"(rn_bump = {amp:g} m, years 1-{years}) in {folder}",
                flush=True,
            )
            run = MemberRun(exp.name, member, folder)
            try:
                run_truth(
                    exp.config,
                    folder,
                    years,
                    write_days=write_days,
                    patch=_member_patch(namelist_patch, amp),
                    progress=progress,
                )
            except TruthError as exc:
                run.error = str(exc)
                print(f"[evaluate]   {exp.name} member {member} FAILED: {exc}", flush=True)
            runs.append(run)
    return runs


def _member_patch(
    namelist_patch: dict[str, dict[str, Any]] | None, bump: float
) -> dict[str, dict[str, Any]]:
    patch = {block: dict(entries) for block, entries in (namelist_patch or {}).items()}
    patch.setdefault("namusr_def", {})["rn_bump"] = bump
    return patch


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["namusr_def.rn_bhm=1.5e11", ...]`` as a namelist patch, each value typed as in a
    namelist file.

    Raises
    ------
    EvalError
        If an item is not ``block.entry=value``, its value is no namelist value, or it sets
        ``rn_bump`` (the members' own entry).
    """
    from bridge.config.namelist import NamelistError, parse_value

    patch: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        block, dot, entry = key.strip().partition(".")
        if not (sep and dot and block and entry and text.strip()):
            raise EvalError(
                f"--set {item!r}: expected block.entry=value, e.g. namusr_def.rn_bhm=1e11"
            )
        if entry.lower() == "rn_bump":
            raise EvalError(f"--set {item!r}: rn_bump is what tells the members apart (--bump)")
        try:
            value = parse_value(text.strip())
        except NamelistError as exc:
            raise EvalError(f"--set {item!r}: {exc}") from None
        patch.setdefault(block.lower(), {})[entry.lower()] = value
    return patch


def _read_vars(path: Path, names: tuple[str, ...], start: int = 0, stop: int | None = None):  # noqa: ANN202
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        return [np.array(ds.variables[n][start:stop], dtype=np.float64) for n in names]


def _grid_info(path: Path) -> dict[str, Any]:
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        u = ds.variables["u"]
        return {
            "nrec": u.shape[0],
            "nz": u.shape[1],
            "ny": u.shape[2],
            "nx": u.shape[3],
            "dx": float(ds.getncattr("rn_dx")),
            "dy": float(ds.getncattr("rn_dy")),
            "x_t": np.array(ds.variables["x_t"][:]),
            "y_t": np.array(ds.variables["y_t"][:]),
        }


def read_flow(files: list[Path]) -> tuple[ev.Flow, np.ndarray]:
    """``u, v, h`` of model grid files concatenated in time, and the times [years]."""
    parts = [_read_vars(f, ("u", "v", "h", "time_counter")) for f in files]
    u, v, h, t = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return ev.Flow(u, v, h), t / SECONDS_PER_YEAR


def coarse_truth(
    files: list[Path], ny: int, nx: int, dx: float, u_filter: str = "face", progress: bool = True
) -> ev.Flow:
    """The fine run's ``u, v, h`` coarse-grained to a ``ny x nx`` grid of spacing ``dx``,
    read ``_CHUNK`` records at a time (a fine year file does not have to fit in memory twice).

    Raises
    ------
    EvalError
        If the fine grid is not an integer refinement of the coarse one with the same factor in
        x, y and ``dx``.
    """
    from mlbridge_models.subgrid import coarsen as cg

    info = _grid_info(files[0])
    try:
        fy, fx = cg.refinement(info["ny"], ny), cg.refinement(info["nx"], nx)
    except ValueError as exc:
        raise EvalError(f"truth {files[0]}: {exc}") from exc
    if fy != fx or not math.isclose(info["dx"] * fx, dx, rel_tol=1e-9):
        raise EvalError(
            f"truth {files[0]}: grid {info['ny']}x{info['nx']} dx = {info['dx']} m is not a "
            f"refinement of the coarse {ny}x{nx} dx = {dx} m by one factor"
        )
    out: dict[str, list[np.ndarray]] = {"u": [], "v": [], "h": []}
    for i, path in enumerate(files, 1):
        nrec = _grid_info(path)["nrec"]
        if progress:
            print(f"[evaluate] truth {i}/{len(files)}: {path} ({nrec} records)", flush=True)
        for start in range(0, nrec, _CHUNK):
            u, v, h = _read_vars(path, ("u", "v", "h"), start, start + _CHUNK)
            out["u"].append(cg.coarsen_u(u, fx, u_filter))
            out["v"].append(cg.coarsen_v(v, fx, u_filter))
            out["h"].append(cg.coarsen_t(h, fx))
    return ev.Flow(*(np.concatenate(out[k]) for k in ("u", "v", "h")))


# ------------------------------------------------------------------ metrics


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


@dataclass
class Evaluation:
    """Everything computed: ``metrics`` (as written to JSON) and the arrays of the figures."""

    metrics: dict[str, Any]
    truth_ke: np.ndarray
    ke: dict[str, np.ndarray]
    spectra: dict[str, ev.Spectrum]
    ke_samples: dict[str, np.ndarray]
    vort_samples: dict[str, np.ndarray]
    top_interface: dict[str, np.ndarray]
    runs: list[MemberRun]
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)


def _lists(d: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
    return {k: [_finite(x) for x in np.ravel(v)] for k, v in d.items()}


def _scores(d_model: dict[str, np.ndarray], d_base: dict[str, np.ndarray]) -> dict[str, list]:
    out = {}
    for key, dm in d_model.items():
        db = d_base[key]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = 1.0 - dm / db
            out[key] = [_finite(x) if b > 0 else None for x, b in zip(ratio, db, strict=True)]
    return out


def _distances_exact(
    model: ev.Flow, truth: ev.Flow, dx: float, dy: float, tdx: float, tdy: float
) -> dict[str, np.ndarray]:
    """Ross et al. distances per layer, exact (all samples; the truth may be on another grid)."""
    sm, st = ev.ke_spectrum(model.u, model.v, dx, dy), ev.ke_spectrum(truth.u, truth.v, tdx, tdy)
    out = {"ke_spectrum": ev.spectrum_distance(sm, st)}
    am = ev.distribution_samples(model.u, model.v, dx, dy)
    at = ev.distribution_samples(truth.u, truth.v, tdx, tdy)
    for name in ev.DISTRIBUTIONS:
        out[name] = ev.layer_wasserstein1(am[name], at[name])
    return out


def _concat(parts: list[ev.Flow]) -> ev.Flow:
    return ev.Flow(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("u", "v", "h")))


def _edges(flows: list[ev.Flow], dx: float, dy: float, records: int = 60) -> dict:
    """Common bins of the bootstrap from about ``records`` records of each flow (the quantiles
    of all of them pooled would not fit in memory), widened to every flow's extremes."""
    from mlbridge_models.evaluation import bootstrap as bs

    subsets = [f.u.shape[0] // records + 1 for f in flows]
    samples = [
        ev.distribution_samples(f.u[::n], f.v[::n], dx, dy)
        for f, n in zip(flows, subsets, strict=True)
    ]
    edges = bs.common_edges(samples)
    for f in flows:
        for r0 in range(0, f.u.shape[0], 100):
            part = ev.distribution_samples(f.u[r0 : r0 + 100], f.v[r0 : r0 + 100], dx, dy)
            for name, per_layer in edges.items():
                for k, e in enumerate(per_layer):
                    e[0] = min(e[0], float(part[name][k].min()))
                    e[-1] = max(e[-1], float(part[name][k].max()))
    return edges


def evaluate(
    truth: ev.Flow,
    members: dict[str, list[tuple[int, ev.Flow]]],
    runs: list[MemberRun],
    dx: float,
    dy: float,
    settings: dict[str, Any],
    *,
    raw_truth: ev.Flow | None = None,
    raw_dx: float | None = None,
    block_records: int = 73,
    n_boot: int = 300,
    seed: int = 0,
) -> Evaluation:
    """The metrics of every experiment against ``truth`` (coarse-grained, the headline) and,
    when given, against ``raw_truth`` (the fine run itself, on its own grid of spacing
    ``raw_dx``); scores relative to the experiment ``baseline`` (its own scores are 0 exactly).

    Per layer, as Ross et al. (2023): the spectral distance (linear spectra below 2/3 of both
    Nyquist wavenumbers) and the Wasserstein-1 distances of ``u``, ``v``, KE and enstrophy;
    block-bootstrap confidence intervals over members and time
    (:mod:`mlbridge_models.evaluation.bootstrap`, blocks of ``block_records`` records) and the
    truth's noise floor; the distances of every member on its own.
    """
    from mlbridge_models.evaluation import bootstrap as bs

    flows = {n: _concat([f for _, f in parts]) for n, parts in members.items() if parts}
    names = list(flows)
    all_flows = {"truth": truth, **flows}
    spectra = {n: ev.ke_spectrum(f.u, f.v, dx, dy) for n, f in all_flows.items()}
    if raw_truth is not None and raw_dx is not None:
        spectra["fine truth"] = ev.ke_spectrum(raw_truth.u, raw_truth.v, raw_dx, raw_dx)
    ke_samples = {n: ev.ke_values(f.u, f.v) for n, f in all_flows.items()}
    vort_samples = {n: ev.relative_vorticity(f.u, f.v, dx, dy) for n, f in all_flows.items()}
    ke = {n: ev.time_mean_ke(f.u, f.v, f.h, dx, dy) for n, f in all_flows.items()}
    top = {n: ev.interface_depths(f.h.mean(axis=0))[0] for n, f in all_flows.items()}
    snapshots = {
        n: ev.relative_vorticity(f.u[-1], f.v[-1], dx, dy)[0] for n, f in all_flows.items()
    }

    dist = {n: _distances_exact(flows[n], truth, dx, dy, dx, dy) for n in names}
    raw_dist = {}
    if raw_truth is not None and raw_dx is not None:
        raw_dist = {n: _distances_exact(flows[n], raw_truth, dx, dy, raw_dx, raw_dx) for n in names}

    # blocks for the bootstrap and the noise floor, bins common to every flow
    edges = _edges(list(all_flows.values()), dx, dy)
    t_blocks = bs.summarise([(0, truth)], dx, dy, block_records, edges)
    blocks = {n: bs.summarise(members[n], dx, dy, block_records, edges) for n in names}
    floor = bs.noise_floor(t_blocks, edges) if t_blocks.records.size >= 2 else None

    experiments: dict[str, Any] = {}
    base = dist.get(BASELINE)
    for n in names:
        entry: dict[str, Any] = {
            "records": int(flows[n].u.shape[0]),
            "members_used": [m for m, _ in members[n]],
        }
        rel = (ke[n] - ke["truth"]) / ke["truth"]
        entry["time_mean_ke"] = [float(x) for x in ke[n]]
        entry["time_mean_ke_relative_error"] = [float(x) for x in rel]
        entry["time_mean_ke_total_relative_error"] = float(
            abs(ke[n].sum() - ke["truth"].sum()) / ke["truth"].sum()
        )
        entry["distances"] = _lists(dist[n])
        entry["scores"] = _scores(dist[n], base) if base is not None else {}
        if base is not None and n != BASELINE and n_boot > 0:
            reps = bs.bootstrap_scores(
                blocks[n], blocks[BASELINE], t_blocks, edges, n_boot=n_boot, seed=seed
            )
            entry["scores_ci95"] = {
                k: [[_finite(x) for x in ci] for ci in bs.confidence_interval(r)]
                for k, r in reps.items()
            }
        elif n == BASELINE:
            entry["scores_ci95"] = {k: [[0.0, 0.0] for _ in v] for k, v in dist[n].items()}
        if raw_dist:
            entry["fine_truth"] = {
                "distances": _lists(raw_dist[n]),
                "scores": _scores(raw_dist[n], raw_dist[BASELINE]) if BASELINE in raw_dist else {},
            }
        entry["per_member"] = [
            {
                "member": m,
                "time_mean_ke": [float(x) for x in ev.time_mean_ke(f.u, f.v, f.h, dx, dy)],
                "distances": _lists(_distances_exact(f, truth, dx, dy, dx, dy)),
            }
            for m, f in members[n]
        ]
        entry["interface_rmse"] = [float(x) for x in ev.interface_rmse(flows[n].h, truth.h)]
        experiments[n] = entry
    for r in runs:
        if r.experiment not in experiments:
            experiments[r.experiment] = {"members_used": [], "error": "no usable member"}
    truth_entry: dict[str, Any] = {
        "records": int(truth.u.shape[0]),
        "blocks": int(t_blocks.records.size),
        "time_mean_ke": [float(x) for x in ke["truth"]],
    }
    if floor is not None:
        truth_entry["noise_floor"] = _lists(floor)
        if base is not None:
            truth_entry["noise_floor_score"] = _scores(floor, base)
    if raw_truth is not None:
        truth_entry["fine_records"] = int(raw_truth.u.shape[0])
    metrics = {
        "settings": settings | {"block_records": block_records, "bootstrap": n_boot},
        "truth": truth_entry,
        "experiments": experiments,
        "stability": [_stability(r, settings["eval_years"]) for r in runs],
    }
    return Evaluation(
        metrics, ke["truth"], ke, spectra, ke_samples, vort_samples, top, runs, snapshots
    )


def _usable(run: MemberRun) -> bool:
    return not run.error and not run.has_nan


def _stability(run: MemberRun, eval_years: list[int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "experiment": run.experiment,
        "member": run.member,
        "ok": _usable(run),
        "error": run.error,
        "any_nan": bool(run.has_nan),
        "max_ke": None,
        "eval_mean_ke": None,
        "max_over_eval_mean": None,
    }
    if run.ke.size:
        finite = run.ke[np.isfinite(run.ke)]
        if finite.size:
            entry["max_ke"] = float(finite.max())
        # records of year y have times in (y - 1, y]
        sel = (run.times > eval_years[0] - 1 + 1e-9) & (run.times <= eval_years[1] + 1e-9)
        if sel.any() and np.all(np.isfinite(run.ke[sel])):
            mean = float(run.ke[sel].mean())
            entry["eval_mean_ke"] = mean
            if entry["max_ke"] is not None and mean > 0:
                entry["max_over_eval_mean"] = entry["max_ke"] / mean
    return entry


def load_runs(
    runs: list[MemberRun], years: int, eval_years: tuple[int, int], dx: float, dy: float
) -> dict[str, list[tuple[int, ev.Flow]]]:
    """Read every member's years: the KE series and NaN check of each run (all years), and the
    eval years of every usable member, per experiment (``(member, flow)`` in member order)."""
    from mlbridge_models.subgrid.truth import TruthError, grid_files

    out: dict[str, list[tuple[int, ev.Flow]]] = {}
    for run in runs:
        out.setdefault(run.experiment, [])
        if run.error:
            continue
        try:
            files = grid_files(run.folder, 1, years)
        except TruthError as exc:
            run.error = str(exc)
            continue
        times, kes, mine = [], [], []
        for year, path in enumerate(files, 1):
            flow, t = read_flow([path])
            if not all(np.all(np.isfinite(a)) for a in (flow.u, flow.v, flow.h)):
                run.has_nan = True
            times.append(t)
            kes.append(ev.layer_ke(flow.u, flow.v, flow.h, dx, dy).sum(axis=-1))
            if eval_years[0] <= year <= eval_years[1]:
                mine.append(flow)
        run.times, run.ke = np.concatenate(times), np.concatenate(kes)
        if not run.has_nan and mine:  # a member with NaN is left out of the metrics
            out[run.experiment].append((run.member, _concat(mine)))
    return {n: parts for n, parts in out.items() if parts}


def raw_truth_flow(files: list[Path], stride: int) -> tuple[ev.Flow, float]:
    """Every ``stride``-th record of the fine run's ``u, v, h`` (its own grid), and its ``dx``."""
    parts = []
    for path in files:
        nrec = _grid_info(path)["nrec"]
        idx = list(range(0, nrec, stride))
        u, v, h = _read_vars(path, ("u", "v", "h"))
        parts.append(ev.Flow(u[idx], v[idx], h[idx]))
    return _concat(parts), _grid_info(files[0])["dx"]


# ------------------------------------------------------------------ outputs


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


#: Scores shown in the table: key, column title.
TABLE_SCORES: tuple[tuple[str, str], ...] = (
    ("ke_spectrum", "KE spectrum"),
    ("ke", "KE dist."),
    ("u", "u dist."),
    ("v", "v dist."),
    ("enstrophy", "enstrophy dist."),
)


def _score_cell(m: dict[str, Any], key: str, k: int) -> str:
    value = m.get("scores", {}).get(key, [None] * (k + 1))[k]
    ci = m.get("scores_ci95", {}).get(key)
    text = _fmt(value, ".2f")
    if ci is not None and ci[k][0] is not None and ci[k][1] is not None:
        text += f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]"
    return text


def markdown_table(metrics: dict[str, Any]) -> str:
    """The scores of every experiment per layer (with their 95 % intervals), the KE errors, the
    truth's noise floor, and the stability of every run, as markdown."""
    exps = metrics["experiments"]
    nz = len(metrics["truth"]["time_mean_ke"])
    head = ["experiment", "layer", "members", "KE rel. err."] + [t for _, t in TABLE_SCORES]
    head += ["interface RMSE [m]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in exps.items():
        if "error" in m:
            lines.append("| " + " | ".join([name, "all", "0", *["n/a"] * (len(head) - 3)]) + " |")
            continue
        for k in range(nz):
            row = [name, str(k + 1), str(len(m["members_used"]))]
            row += [f"{m['time_mean_ke_relative_error'][k]:+.1%}"]
            row += [_score_cell(m, key, k) for key, _ in TABLE_SCORES]
            row += [f"{m['interface_rmse'][k]:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
    floor = metrics["truth"].get("noise_floor_score")
    if floor:
        for k in range(nz):
            row = ["truth vs truth (noise floor)", str(k + 1), "", ""]
            row += [_fmt(floor[key][k], ".2f") for key, _ in TABLE_SCORES] + [""]
            lines.append("| " + " | ".join(row) + " |")
    fine = [(n, m["fine_truth"]) for n, m in exps.items() if "fine_truth" in m]
    if fine:
        lines += [
            "",
            "Against the fine truth itself (its own grid; no interval):",
            "",
            "| experiment | layer | " + " | ".join(t for _, t in TABLE_SCORES) + " |",
            "|" + "---|" * (2 + len(TABLE_SCORES)),
        ]
        for name, f in fine:
            for k in range(nz):
                cells = [
                    _fmt(f["scores"].get(key, [None] * nz)[k], ".2f") for key, _ in TABLE_SCORES
                ]
                lines.append(f"| {name} | {k + 1} | " + " | ".join(cells) + " |")
    totals = ", ".join(
        f"{n} {m['time_mean_ke_total_relative_error']:.1%}"
        for n, m in exps.items()
        if "error" not in m
    )
    lines += ["", f"Time-mean KE error, layers summed: {totals}."]
    lines += [
        "",
        "| run | member | ok | NaN | max KE [PJ] | max / eval mean |",
        "|---|---|---|---|---|---|",
    ]
    for st in metrics["stability"]:
        max_ke = None if st["max_ke"] is None else st["max_ke"] / 1e15
        lines.append(
            f"| {st['experiment']} | {st['member']} | {'yes' if st['ok'] else 'NO'} | "
            f"{'yes' if st['any_nan'] else 'no'} | {_fmt(max_ke, '.4g')} | "
            f"{_fmt(st['max_over_eval_mean'], '.2f')} |"
        )
    s = metrics["settings"]
    lines += [
        "",
        f"Truth: years {s['truth_years'][0]}-{s['truth_years'][1]} of {s['truth']} coarse-grained "
        f"({s['u_filter']} filter); experiments: years {s['eval_years'][0]}-{s['eval_years'][1]} "
        f"of {s['members']} members. Scores (Ross et al. 2023, per layer): "
        f"1 - d(model, truth) / d({BASELINE}, truth), 1 = truth, 0 = {BASELINE}, < 0 worse; "
        f"[95 % bootstrap interval over members and blocks of {s.get('block_records')} records]. "
        "Noise floor: the score of the truth's second half against its first.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(result: Evaluation, out: Path, x_km: np.ndarray, y_km: np.ndarray) -> list[Path]:
    """``metrics.json``, ``table.md`` and the figures in ``out``."""
    from mlbridge_models.evaluation import plots as ep

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(result.metrics, indent=2) + "\n")
    table = out / "table.md"
    table.write_text(markdown_table(result.metrics))
    names = list(result.ke.keys() - {"truth"})
    names = [n for n in result.metrics["experiments"] if n in names]
    figs = [
        ep.plot_time_mean_ke(
            out / "ke_time_mean.png", {n: result.ke[n] for n in names}, result.truth_ke
        ),
        ep.plot_spectra(out / "ke_spectra.png", result.spectra),
        ep.plot_pdfs(
            out / "pdfs.png",
            result.ke_samples,
            result.vort_samples,
            f0=result.metrics["settings"].get("f0"),
        ),
        ep.plot_ke_series(
            out / "ke_series.png",
            {f"{r.experiment} m{r.member}": (r.times, r.ke) for r in result.runs if r.ke.size},
            truth_mean=float(result.truth_ke.sum()),
        ),
        ep.plot_interface_maps(out / "interface_maps.png", result.top_interface, x_km, y_km),
        ep.plot_snapshots(out / "snapshots.png", result.snapshots, x_km, y_km),
    ]
    return [metrics_path, table, *figs]


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truth", type=Path, required=True, help="the fine run's folder (truth)")
    parser.add_argument(
        "--truth-years", required=True, metavar="FIRST-LAST", help="truth years to use (10-12)"
    )
    parser.add_argument(
        "--experiments", type=Path, required=True, help="eval.toml listing [[experiment]]s"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs and results")
    parser.add_argument("--members", type=int, default=3, help="members per experiment (3)")
    parser.add_argument("--years", type=int, default=20, help="model years of each run (20)")
    parser.add_argument(
        "--eval-years",
        metavar="FIRST-LAST",
        help="years of each run evaluated (default: the second half, 11-20 of 20)",
    )
    parser.add_argument(
        "--write-days",
        type=float,
        default=5.0,
        help="output interval of the runs [days] (5; must divide the 365-day year)",
    )
    parser.add_argument(
        "--bump", type=float, default=1.0, help="member m starts with rn_bump = BUMP * m [m] (1)"
    )
    parser.add_argument(
        "--u-filter", choices=("face", "box"), default="face", help="coarse-graining of u, v"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="BLOCK.ENTRY=VALUE",
        help="namelist entry set in every experiment's runs, e.g. namusr_def.rn_bhm=1.5e11 "
        "(repeatable)",
    )
    parser.add_argument(
        "--block-days",
        type=float,
        default=365.0,
        help="length of the blocks of the bootstrap [days] (365: one model year)",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=300, help="bootstrap replicates of the scores (300)"
    )
    parser.add_argument(
        "--fine-stride",
        type=int,
        default=4,
        help="score also against the fine truth itself, every N-th record (4; 0: not)",
    )


def main_evaluate(
    truth: Path,
    truth_years: str,
    experiments_toml: Path,
    out: Path,
    *,
    members: int = 3,
    years: int = 20,
    eval_years: str | None = None,
    write_days: float = 5.0,
    bump: float = 1.0,
    u_filter: str = "face",
    namelist_patch: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
    block_days: float = 365.0,
    n_boot: int = 300,
    fine_stride: int = 4,
) -> Evaluation:
    """Run, evaluate and write everything (the body of ``mlbridge evaluate``).

    Raises
    ------
    EvalError
        On bad arguments, a missing truth year, grids that do not pair, or a baseline with no
        usable member.
    """
    from mlbridge_models.subgrid.truth import TruthError, grid_files

    if members < 1:
        raise EvalError(f"--members {members}: at least 1")
    if block_days <= 0 or n_boot < 0 or fine_stride < 0:
        raise EvalError(
            f"--block-days {block_days} must be > 0, --bootstrap {n_boot} and --fine-stride "
            f"{fine_stride} >= 0"
        )
    if years < 1:
        raise EvalError(f"--years {years}: at least 1")
    t_years = parse_years(truth_years, "--truth-years")
    e_years = parse_years(eval_years, "--eval-years") if eval_years else (years // 2 + 1, years)
    if e_years[1] > years:
        raise EvalError(f"--eval-years {eval_years}: beyond --years {years}")
    exps = load_experiments(experiments_toml)
    try:
        truth_files = grid_files(Path(truth), *t_years)
    except TruthError as exc:
        raise EvalError(f"--truth: {exc}") from exc
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    runs = run_members(
        exps,
        out,
        members,
        years,
        write_days=write_days,
        bump=bump,
        namelist_patch=namelist_patch,
        progress=progress,
    )
    usable = [r for r in runs if not r.error]
    if not any(r.experiment == BASELINE for r in usable):
        raise EvalError(f"every member of {BASELINE!r} failed: nothing to score against")
    info = _grid_info(grid_files(usable[0].folder, 1, 1)[0])
    dx, dy = info["dx"], info["dy"]
    print("[evaluate] reading the runs", flush=True)
    members_flows = load_runs(runs, years, e_years, dx, dy)
    if BASELINE not in members_flows:
        raise EvalError(f"no usable member of {BASELINE!r}: nothing to score against")
    truth_flow = coarse_truth(truth_files, info["ny"], info["nx"], dx, u_filter)
    import netCDF4

    with netCDF4.Dataset(truth_files[0]) as ds:
        f0 = float(ds.getncattr("rn_f0")) if "rn_f0" in ds.ncattrs() else None
    settings = {
        "truth": str(Path(truth).resolve()),
        "truth_years": list(t_years),
        "truth_files": [str(p) for p in truth_files],
        "experiments_file": str(Path(experiments_toml).resolve()),
        "experiments": {e.name: str(e.config) for e in exps},
        "members": members,
        "years": years,
        "eval_years": list(e_years),
        "write_days": write_days,
        "bump": bump,
        "namelist_patch": namelist_patch or {},
        "u_filter": u_filter,
        "dx": dx,
        "dy": dy,
        "f0": f0,
    }
    raw, raw_dx = (None, None)
    if fine_stride > 0:
        print(f"[evaluate] reading the fine truth (every {fine_stride} records)", flush=True)
        raw, raw_dx = raw_truth_flow(truth_files, fine_stride)
        settings["fine_stride"] = fine_stride
    block = max(1, round(block_days / write_days))
    print("[evaluate] computing the metrics", flush=True)
    result = evaluate(
        truth_flow,
        members_flows,
        runs,
        dx,
        dy,
        settings,
        raw_truth=raw,
        raw_dx=raw_dx,
        block_records=block,
        n_boot=n_boot,
    )
    write_outputs(result, out, info["x_t"] / 1e3, info["y_t"] / 1e3)
    return result


def run(args: argparse.Namespace) -> int:
    try:
        result = main_evaluate(
            args.truth,
            args.truth_years,
            args.experiments,
            args.out,
            members=args.members,
            years=args.years,
            eval_years=args.eval_years,
            write_days=args.write_days,
            bump=args.bump,
            u_filter=args.u_filter,
            namelist_patch=parse_set(args.set),
            progress=sys.stderr.isatty(),
            block_days=args.block_days,
            n_boot=args.bootstrap,
            fine_stride=args.fine_stride,
        )
    except EvalError as exc:
        print(f"mlbridge evaluate: {exc}", file=sys.stderr)
        return 1
    print()
    print(markdown_table(result.metrics))
    print(f"results in {args.out}: metrics.json, table.md, *.png")
    return 0
