"""evaluate coarse runs (baseline and hybrids, several members) against the coarse-grained truth

``mlbridge evaluate`` runs every experiment of an ``eval.toml`` as an ensemble of coarse runs
(``mlbridge_models.subgrid.truth.run_truth``, one resumable job per model year; the members
differ only by
the amplitude of the initial bump ``&namusr_def rn_bump``), coarse-grains the fine truth's years
file by file (``models/subgrid/coarsen.py``: ``h`` block mean, ``u, v`` the ``face`` filter), and
computes the metrics of ``models/evaluation/metrics.py`` over the evaluation years of all
members pooled
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

Results in ``--out``: ``metrics.json``, ``table.md`` (also printed), and the figures
``ke_time_mean.png``, ``ke_spectra.png``, ``pdfs.png``, ``ke_series.png``, ``interface_maps.png``.
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


def evaluate(
    truth: ev.Flow,
    flows: dict[str, ev.Flow],
    runs: list[MemberRun],
    dx: float,
    dy: float,
    settings: dict[str, Any],
) -> Evaluation:
    """The metrics of every experiment's pooled flow against ``truth``; scores relative to the
    experiment ``baseline`` (its own scores are 0 exactly)."""
    names = list(flows)
    all_flows = {"truth": truth, **flows}
    spectra = {n: ev.ke_spectrum(f.u, f.v, dx, dy) for n, f in all_flows.items()}
    ke_samples = {n: ev.ke_values(f.u, f.v) for n, f in all_flows.items()}
    vort_samples = {n: ev.relative_vorticity(f.u, f.v, dx, dy) for n, f in all_flows.items()}
    ke = {n: ev.time_mean_ke(f.u, f.v, f.h, dx, dy) for n, f in all_flows.items()}
    top = {n: ev.interface_depths(f.h.mean(axis=0))[0] for n, f in all_flows.items()}
    dist = {
        n: {
            "ke_spectrum": ev.log_spectrum_rmse(spectra[n], spectra["truth"]),
            "ke_distribution": ev.wasserstein1(ke_samples[n], ke_samples["truth"]),
            "vorticity_distribution": ev.wasserstein1(vort_samples[n], vort_samples["truth"]),
        }
        for n in names
    }
    experiments: dict[str, Any] = {}
    for n in names:
        scores = {}
        for key, d in dist[n].items():
            base = dist.get(BASELINE, {}).get(key)
            scores[key] = (
                _finite(ev.similarity_score(d, base)) if base is not None and base > 0 else None
            )
        rel = (ke[n] - ke["truth"]) / ke["truth"]
        experiments[n] = {
            "records": int(flows[n].u.shape[0]),
            "members_used": sorted(r.member for r in runs if r.experiment == n and _usable(r)),
            "time_mean_ke": [float(x) for x in ke[n]],
            "time_mean_ke_relative_error": [float(x) for x in rel],
            "time_mean_ke_total_relative_error": float(
                abs(ke[n].sum() - ke["truth"].sum()) / ke["truth"].sum()
            ),
            "distances": {k: float(v) for k, v in dist[n].items()},
            "scores": scores,
            "interface_rmse": [float(x) for x in ev.interface_rmse(flows[n].h, truth.h)],
        }
    for r in runs:
        if r.experiment not in experiments:
            experiments[r.experiment] = {"members_used": [], "error": "no usable member"}
    metrics = {
        "settings": settings,
        "truth": {
            "records": int(truth.u.shape[0]),
            "time_mean_ke": [float(x) for x in ke["truth"]],
        },
        "experiments": experiments,
        "stability": [_stability(r, settings["eval_years"]) for r in runs],
    }
    return Evaluation(metrics, ke["truth"], ke, spectra, ke_samples, vort_samples, top, runs)


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
) -> dict[str, ev.Flow]:
    """Read every member's years: the KE series and NaN check of each run (all years), and the
    eval years of the usable members pooled per experiment."""
    from mlbridge_models.subgrid.truth import TruthError, grid_files

    pooled: dict[str, list[ev.Flow]] = {}
    for run in runs:
        pooled.setdefault(run.experiment, [])
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
        if not run.has_nan:  # a member with NaN is left out of the pooled metrics
            pooled[run.experiment] += mine
    flows = {}
    for name, parts in pooled.items():
        if parts:
            flows[name] = ev.Flow(
                *(np.concatenate([getattr(p, k) for p in parts]) for k in ("u", "v", "h"))
            )
    return flows


# ------------------------------------------------------------------ outputs


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown_table(metrics: dict[str, Any]) -> str:
    """The metrics of every experiment as a markdown table, and the stability of every run."""
    exps = metrics["experiments"]
    nz = len(metrics["truth"]["time_mean_ke"])
    head = (
        ["experiment", "members"]
        + [f"KE L{k + 1} rel. err." for k in range(nz)]
        + ["KE total rel. err.", "spectrum score", "KE dist. score", "vort. dist. score"]
        + [f"interface {k + 1} RMSE [m]" for k in range(nz)]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in exps.items():
        if "error" in m:
            lines.append("| " + " | ".join([name, "0", *["n/a"] * (len(head) - 2)]) + " |")
            continue
        s = m["scores"]
        row = (
            [name, str(len(m["members_used"]))]
            + [f"{x:+.1%}" for x in m["time_mean_ke_relative_error"]]
            + [f"{m['time_mean_ke_total_relative_error']:.1%}"]
            + [_fmt(s[k]) for k in ("ke_spectrum", "ke_distribution", "vorticity_distribution")]
            + [f"{x:.2f}" for x in m["interface_rmse"]]
        )
        lines.append("| " + " | ".join(row) + " |")
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
        f"of {s['members']} members pooled. Scores (Ross et al. 2023): 1 = truth, "
        f"0 = {BASELINE}, < 0 worse.",
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
    flows = load_runs(runs, years, e_years, dx, dy)
    if BASELINE not in flows:
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
    print("[evaluate] computing the metrics", flush=True)
    result = evaluate(truth_flow, flows, runs, dx, dy, settings)
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
        )
    except EvalError as exc:
        print(f"mlbridge evaluate: {exc}", file=sys.stderr)
        return 1
    print()
    print(markdown_table(result.metrics))
    print(f"results in {args.out}: metrics.json, table.md, *.png")
    return 0
