"""Online calibration of a closure's amplitudes by ensemble Kalman inversion (EKI).

EKI (Iglesias, Law & Stuart 2013, Inverse Problems 29, 045001, doi:10.1088/0266-5611/29/4/045001;
used to calibrate climate-model closures by Schneider et al. 2017, GRL 44, and by Lopez-Gomez et
al. 2022, JAMES 14, doi:10.1029/2022MS003105) moves an ensemble of parameter vectors ``theta_j``
towards the observations ``y`` with the ensemble's own covariances, no gradient needed::

    theta_j <- theta_j + C_tG (C_GG + Gamma)^-1 (y + eta_j - G(theta_j)),   eta_j ~ N(0, Gamma)

Here ``G(theta)`` runs the coupled coarse toy with the closure's ``[arch]`` values ``theta``
from a spin-up restart for ``--years`` years (never from rest, and never over the evaluation's
years: the evaluation members start from rest and are scored over their own years 11-20) and
returns the statistics of its last ``--score-years`` years:

    G = [ln KE_k (each layer k), ln mean E_k(K) over each wavenumber band K (each layer)]

``KE_k`` the time-mean layer kinetic energy, ``E_k`` the isotropic KE spectrum
(``metrics.ke_spectrum``), the bands log-spaced below 2/3 of the Nyquist wavenumber (the range of
Ross et al. 2023's spectral distance). ``y`` is the same vector of the coarse-grained fine truth
over ``--truth-years`` (keep them apart from the evaluation's truth years), ``Gamma`` the
diagonal of the variance of the truth's yearly values over those years (the noise of a one-year
statistic) plus ``--noise-floor`` squared. The parameters are updated in log space (each one
positive), with a log-normal prior whose 95 % range is the ``LOW:HIGH`` given, and kept within it.
A member whose run fails or leaves non-finite fields is dropped from the update and replaced by a
draw from the Gaussian of the updated successful members (Lopez-Gomez et al. 2022's failure
handling); an iteration with fewer than 2 stable members redraws the ensemble from the prior.
After the last iteration the ensemble mean (geometric) is the estimate; ``--check`` runs it once
more and scores it. ``best_member`` is the stable run of least misfit over all iterations: the
answer to use when the ensemble did not settle.

Everything goes to ``--out`` and a rerun resumes (each run folder is reused, the JSON holds every
member of every iteration)::

    python -m mlbridge_models.subgrid.calibrate_eki --example examples/10_backscatter \\
        --manifest backscatter.toml --param nu_cap=0.2:8 --param c_back=0.1:4 \\
        --fixed smooth_passes=3 --spin runs/calib_bs/spin --seed-year 6 --years 2 \\
        --truth runs/truth --truth-years 3-7 --ensemble 6 --iterations 3 --out runs/calib_bs/eki
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The coarse toy's grid spacing [m] (the examples' coupling configs).
DX = 32.0e3
#: Number of log-spaced wavenumber bands of the spectrum in ``G``.
BANDS = 3


@dataclass(frozen=True)
class Param:
    """A calibrated ``[arch]`` value: its name and the 95 % range of its log-normal prior."""

    name: str
    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> Param:
        """``"nu_cap=0.2:8"`` -> ``Param("nu_cap", 0.2, 8.0)``.

        Raises
        ------
        ValueError
            If the text is not ``NAME=LOW:HIGH`` with ``0 < LOW < HIGH``.
        """
        name, sep, rng = text.partition("=")
        lo, sep2, hi = rng.partition(":")
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            low = high = math.nan
        if not (sep and sep2 and name.strip() and 0 < low < high):
            raise ValueError(f"--param {text!r}: expected NAME=LOW:HIGH with 0 < LOW < HIGH")
        return cls(name.strip(), low, high)

    @property
    def prior(self) -> tuple[float, float]:
        """Mean and standard deviation of ``ln theta`` (95 % of the prior in ``[low, high]``)."""
        lo, hi = math.log(self.low), math.log(self.high)
        return 0.5 * (lo + hi), (hi - lo) / (2 * 1.96)


def band_edges(nbins: int, bands: int = BANDS) -> list[tuple[int, int]]:
    """``bands`` log-spaced index ranges ``[a, b)`` covering the bins ``1 .. nbins - 1``."""
    if nbins - 1 < bands:
        raise ValueError(f"{nbins - 1} wavenumber bins cannot make {bands} bands")
    cuts = np.unique(np.round(np.geomspace(1, nbins, bands + 1)).astype(int))
    if cuts.size != bands + 1:  # too few bins for log spacing: equal counts instead
        cuts = np.linspace(1, nbins, bands + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def statistics(u: np.ndarray, v: np.ndarray, h: np.ndarray, nbins: int | None = None) -> np.ndarray:
    """``G`` of ``(time, z, y, x)`` fields: ``ln KE_k`` then ``ln`` band means of ``E_k(K)``,
    layer by layer. ``nbins``: the bins below 2/3 Nyquist (from :func:`comparable`)."""
    from mlbridge_models.evaluation import metrics as ev

    ke = ev.time_mean_ke(u, v, h, DX, DX)
    spec = ev.ke_spectrum(u, v, DX, DX)
    n = nbins if nbins is not None else ev.comparable_bins(spec, spec)
    bands = [np.log(spec.e[..., a:b].mean(axis=-1)) for a, b in band_edges(n)]
    return np.concatenate([np.log(ke), np.stack(bands, axis=-1).ravel()])


def truth_observations(
    truth: Path, years: tuple[int, int], cache: Path
) -> tuple[np.ndarray, np.ndarray, list[list[float]], int]:
    """``y`` (statistics of all ``years`` of the coarse-grained truth), the variance of the
    yearly statistics, the yearly rows and the number of spectrum bins used (those below 2/3
    Nyquist); cached in ``cache`` (npz)."""
    from mlbridge_models.evaluation import metrics as ev
    from mlbridge_models.evaluation.runs import _grid_info, coarse_truth
    from mlbridge_models.subgrid.truth import grid_files

    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return z["y"], z["var"], z["yearly"].tolist(), int(z["nbins"])
    flows = []
    for year in range(years[0], years[1] + 1):
        files = grid_files(truth, year, year)
        info = _grid_info(files[0])
        n = (info["nx"] - 2) // 4 + 2  # the coarse toy: 4x coarser ocean, plus its land rim
        flows.append(coarse_truth(files, n, n, DX, progress=True))
    u, v, h = (np.concatenate([getattr(f, k) for f in flows]) for k in ("u", "v", "h"))
    spec = ev.ke_spectrum(u[:1], v[:1], DX, DX)
    nbins = ev.comparable_bins(spec, spec)
    yearly = np.stack([statistics(f.u, f.v, f.h, nbins) for f in flows])
    y = statistics(u, v, h, nbins)
    var = yearly.var(axis=0, ddof=1) if len(flows) > 1 else np.zeros_like(y)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, y=y, var=var, yearly=yearly, nbins=nbins)
    return y, var, yearly.tolist(), nbins


def patched_example(example: Path, manifest: str, folder: Path, values: dict[str, Any]) -> Path:
    """``example`` copied to ``folder`` with the manifest's ``[arch]`` entries set to
    ``values`` (added where the manifest leaves one to the factory's default) and its ``halo``
    set to the closure's own (built from the patched ``[arch]`` through the manifest's entry
    point), registered in ``folder/registry``; its coupling.toml.

    Raises
    ------
    ValueError
        If the manifest has no ``[arch]`` table, or its entry point is not a shipped closure
        factory.
    """
    from importlib import import_module

    from bridge.registry.store import Registry
    from bridge.registry.trust import CLOSURE_FACTORIES_GROUP, shipped_entry_points

    if (folder / "registry").is_dir():
        return folder / "coupling.toml"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(example, folder, ignore=shutil.ignore_patterns("registry", "runs"))
    todo = {k: repr(float(v)) if isinstance(v, float) else repr(v) for k, v in values.items()}
    lines, in_arch = [], False
    for ln in (folder / manifest).read_text().splitlines():
        if ln.startswith("["):
            in_arch = ln.strip() == "[arch]"
        key = ln.split("=")[0].strip()
        lines.append(f"{key} = {todo.pop(key)}" if in_arch and key in todo else ln)
    if "[arch]" not in lines:
        raise ValueError(f"{example / manifest}: no [arch] table")
    at = lines.index("[arch]") + 1  # values the manifest leaves at the factory's default
    lines[at:at] = [f"{key} = {value}" for key, value in todo.items()]
    doc = tomllib.loads("\n".join(lines))
    # the factory is imported here to read its halo: only one an installed package ships
    # (the registry's own rule for python manifests), never a module a manifest names
    shipped = shipped_entry_points(CLOSURE_FACTORIES_GROUP)
    if doc.get("entry_point", "").replace(" ", "") not in shipped:
        raise ValueError(
            f"{example / manifest}: entry_point {doc.get('entry_point')!r} is not a closure "
            f"factory an installed package ships ({CLOSURE_FACTORIES_GROUP})"
        )
    module, _, attr = doc["entry_point"].partition(":")
    halo = getattr(import_module(module), attr)(**doc["arch"]).spec.halo
    text = "\n".join(f"halo = {halo}" if ln.startswith("halo = ") else ln for ln in lines)
    (folder / manifest).write_text(text + "\n")
    Registry(folder / "registry").register(None, folder / manifest)
    return folder / "coupling.toml"


@dataclass(frozen=True)
class Setup:
    """What every member run shares."""

    example: Path
    manifest: str
    fixed: dict[str, Any]
    restart: Path
    seed_year: int
    years: int
    score_years: int
    bump: float
    nbins: int


def run_member(setup: Setup, folder: Path, values: dict[str, float]) -> dict[str, Any]:
    """Run the closure with ``values`` (and the fixed ``[arch]``) from the restart; its row."""
    from mlbridge_models.evaluation.runs import read_flow
    from mlbridge_models.subgrid.truth import grid_files, run_truth

    row: dict[str, Any] = {"values": values, "folder": str(folder)}
    t0 = time.perf_counter()
    stamp = folder / "values.json"
    wanted = json.dumps(setup.fixed | values, sort_keys=True)
    if folder.exists() and (not stamp.is_file() or stamp.read_text() != wanted):
        shutil.rmtree(folder)  # another member's values: start this folder again
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    last = setup.seed_year + setup.years
    try:
        config = patched_example(
            setup.example, setup.manifest, folder / "example", setup.fixed | values
        )
        run_truth(
            config,
            folder / "run",
            last,
            write_days=5,
            seed_restart=setup.restart,
            seed_year=setup.seed_year,
            patch={"namusr_def": {"rn_bump": setup.bump}},
        )
        flow, _ = read_flow(grid_files(folder / "run", last - setup.score_years + 1, last))
    except Exception as exc:  # a blow-up or a failed job is a result here, not an error
        row.update(stable=False, error=str(exc)[:500])
        return row
    finite = all(np.isfinite(a).all() for a in (flow.u, flow.v, flow.h))
    row["stable"] = bool(finite)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if finite:
        row["G"] = statistics(flow.u, flow.v, flow.h, setup.nbins).tolist()
        row["ke_layer_PJ"] = [math.exp(g) / 1e15 for g in row["G"][: flow.u.shape[1]]]
    return row


def eki_update(
    theta: np.ndarray,
    g: np.ndarray,
    y: np.ndarray,
    gamma: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One perturbed-observation EKI step of an ensemble ``theta (J, p)`` with outputs
    ``g (J, d)`` against ``y (d,)`` and the noise covariance ``gamma (d, d)``."""
    dt = theta - theta.mean(axis=0)
    dg = g - g.mean(axis=0)
    n = theta.shape[0]
    c_tg = dt.T @ dg / (n - 1)
    c_gg = dg.T @ dg / (n - 1)
    eta = rng.multivariate_normal(np.zeros(y.size), gamma, size=n)
    gain = np.linalg.solve(c_gg + gamma, c_tg.T).T  # C_tG (C_GG + Gamma)^-1
    return theta + (y + eta - g) @ gain.T


def misfit(g: np.ndarray, y: np.ndarray, var: np.ndarray) -> float:
    """``sum (y - G)^2 / var``: the EKI's objective of one member."""
    return float(np.sum((np.asarray(g) - y) ** 2 / var))


def best_member(result: dict[str, Any]) -> dict[str, Any] | None:
    """The stable run of least misfit over every iteration (and the check run): the answer when
    the ensemble did not settle (e.g. an update that took every member past the stable range)."""
    rows = [m for it in result.get("iterations", []) for m in it["members"]]
    rows += [result["check"]] if "check" in result else []
    stable = [r for r in rows if r.get("stable") and math.isfinite(r.get("misfit", math.nan))]
    if not stable:
        return None
    best = min(stable, key=lambda r: r["misfit"])
    return {k: best[k] for k in ("values", "misfit", "ke_layer_PJ", "folder") if k in best}


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) the EKI; the result as written to ``OUT/eki.json``."""
    from mlbridge_models.evaluation.runs import parse_years
    from mlbridge_models.subgrid.truth import read_year

    params = [Param.parse(p) for p in args.param]
    fixed: dict[str, Any] = {}
    for item in args.fixed or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--fixed {item!r}: expected KEY=VALUE")
        fixed[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    y, var_truth, yearly, nbins = truth_observations(
        args.truth, parse_years(args.truth_years, "truth-years"), out / "truth_stats.npz"
    )
    var = var_truth + args.noise_floor**2
    gamma = np.diag(var)
    if args.spin_config is not None:  # make (or resume) the spin-up first
        from mlbridge_models.subgrid.truth import run_truth

        run_truth(
            args.spin_config,
            args.spin,
            args.seed_year,
            write_days=5,
            patch={"namusr_def": {"rn_bump": args.bump}},
            progress=True,
        )
    rec = read_year(args.spin, args.seed_year)
    if rec is None:
        raise ValueError(f"{args.spin}: no year {args.seed_year} recorded (give --spin-config)")
    setup = Setup(
        args.example.resolve(),
        args.manifest,
        fixed,
        (args.spin / rec.restart).resolve(),
        args.seed_year,
        args.years,
        args.score_years,
        args.bump,
        nbins,
    )
    rng = np.random.default_rng(args.seed)
    mean0 = np.array([p.prior[0] for p in params])
    sd0 = np.array([p.prior[1] for p in params])
    lo = np.log([p.low for p in params])
    hi = np.log([p.high for p in params])
    theta = np.clip(mean0 + sd0 * rng.standard_normal((args.ensemble, len(params))), lo, hi)
    result_path = out / "eki.json"
    result: dict[str, Any] = {
        "method": "EKI, perturbed observations (Iglesias, Law & Stuart 2013)",
        "G": "[ln KE_k, ln mean E_k over log-spaced bands below 2/3 Nyquist], layer by layer",
        "params": [p.__dict__ for p in params],
        "fixed": fixed,
        "truth": str(args.truth),
        "truth_years": args.truth_years,
        "spin": str(args.spin),
        "seed_year": args.seed_year,
        "years": args.years,
        "score_years": args.score_years,
        "y": y.tolist(),
        "truth_yearly": yearly,
        "gamma_diag": var.tolist(),
        "iterations": [],
    }

    def as_values(t: np.ndarray) -> dict[str, float]:
        return {p.name: round(float(math.exp(x)), 6) for p, x in zip(params, t, strict=True)}

    def run_all(tag: str, thetas: np.ndarray) -> list[dict[str, Any]]:
        jobs = [(out / f"{tag}_m{j}", as_values(t)) for j, t in enumerate(thetas)]
        with ThreadPoolExecutor(max_workers=args.streams) as pool:
            rows = list(pool.map(lambda job: run_member(setup, *job), jobs))
        for row in rows:
            if "G" in row:
                row["misfit"] = misfit(row["G"], y, var)
            print(
                json.dumps(
                    {
                        k: row.get(k)
                        for k in ("values", "stable", "error", "misfit", "ke_layer_PJ", "seconds")
                    }
                ),
                flush=True,
            )
        return rows

    for it in range(args.iterations):
        print(f"[eki] iteration {it + 1}/{args.iterations}: {args.ensemble} members", flush=True)
        rows = run_all(f"it{it}", theta)
        ok = np.array([r.get("stable", False) for r in rows])
        entry = {"iteration": it + 1, "members": rows, "stable": int(ok.sum())}
        if ok.sum() >= 2:
            g = np.array([r["G"] for r in rows if r.get("stable")])
            new = eki_update(theta[ok], g, y, gamma, rng)
            m, s = new.mean(axis=0), new.std(axis=0, ddof=1) + 1e-6
            theta = theta.copy()
            theta[ok] = new
            theta[~ok] = m + s * rng.standard_normal(((~ok).sum(), len(params)))
            theta = np.clip(theta, lo, hi)
        else:
            entry["note"] = "fewer than 2 stable members: ensemble redrawn from the prior"
            theta = np.clip(mean0 + sd0 * rng.standard_normal(theta.shape), lo, hi)
        entry["next_mean"] = as_values(theta.mean(axis=0))
        result["iterations"].append(entry)
        result["estimate"] = entry["next_mean"]
        result["best_member"] = best_member(result)
        result_path.write_text(json.dumps(result, indent=1) + "\n")
    if args.check:
        print(f"[eki] check: the estimate {result['estimate']}", flush=True)
        row = run_member(setup, out / "check", result["estimate"])
        if "G" in row:
            row["misfit"] = misfit(row["G"], y, var)
        result["check"] = row
        if args.baseline is not None:
            result["baseline"] = run_baseline(setup, args.baseline.resolve(), out / "baseline")
            if "G" in result["baseline"]:
                result["baseline"]["misfit"] = misfit(result["baseline"]["G"], y, var)
        result["best_member"] = best_member(result)
        result_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_baseline(setup: Setup, config: Path, folder: Path) -> dict[str, Any]:
    """The coarse model alone (``config``) from the same restart over the same years."""
    from mlbridge_models.evaluation.runs import read_flow
    from mlbridge_models.subgrid.truth import grid_files, run_truth

    last = setup.seed_year + setup.years
    run_truth(
        config,
        folder,
        last,
        write_days=5,
        seed_restart=setup.restart,
        seed_year=setup.seed_year,
        patch={"namusr_def": {"rn_bump": setup.bump}},
    )
    flow, _ = read_flow(grid_files(folder, last - setup.score_years + 1, last))
    g = statistics(flow.u, flow.v, flow.h, setup.nbins)
    return {"G": g.tolist(), "ke_layer_PJ": [math.exp(x) / 1e15 for x in g[: flow.u.shape[1]]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mlbridge_models.subgrid.calibrate_eki",
        description="Calibrate a closure's [arch] amplitudes online by ensemble Kalman "
        "inversion against the coarse-grained truth's layer KE and KE spectrum.",
        epilog="example: python -m mlbridge_models.subgrid.calibrate_eki --example "
        "examples/10_backscatter --manifest backscatter.toml --param nu_cap=0.2:8 "
        "--param c_back=0.1:4 --fixed smooth_passes=3 --spin runs/calib_bs/spin --seed-year 6 "
        "--years 2 --truth runs/truth --truth-years 3-7 --out runs/calib_bs/eki",
    )
    p.add_argument("--example", type=Path, required=True, help="example folder of the closure")
    p.add_argument("--manifest", required=True, help="its manifest file name")
    p.add_argument("--param", action="append", required=True, help="NAME=LOW:HIGH (prior 95 %%)")
    p.add_argument("--fixed", action="append", help="another [arch] value, KEY=VALUE (TOML)")
    p.add_argument("--spin", type=Path, required=True, help="spin-up (run_truth folder)")
    p.add_argument(
        "--spin-config", type=Path, help="coupling.toml to make the spin-up with (if missing)"
    )
    p.add_argument("--seed-year", type=int, default=5, help="restart at the end of this year")
    p.add_argument("--bump", type=float, default=0.5, help="rn_bump of the spin-up (0.5)")
    p.add_argument("--years", type=int, default=2, help="years per run (2)")
    p.add_argument("--score-years", type=int, default=1, help="last years scored (1)")
    p.add_argument("--truth", type=Path, required=True, help="fine truth (run_truth folder)")
    p.add_argument("--truth-years", default="3-7", help="truth years of y and Gamma (3-7)")
    p.add_argument("--ensemble", type=int, default=6, help="members per iteration (6)")
    p.add_argument("--iterations", type=int, default=3, help="EKI iterations (3)")
    p.add_argument("--streams", type=int, default=2, help="runs at once (2)")
    p.add_argument("--noise-floor", type=float, default=0.05, help="added to sqrt(Gamma)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the check run")
    p.add_argument("--baseline", type=Path, help="coupling.toml of the model alone, run beside")
    p.add_argument("--out", type=Path, required=True, help="work folder; eki.json goes there")
    args = p.parse_args(argv)
    if args.ensemble < 3:
        p.error("--ensemble must be at least 3")
    if not 1 <= args.score_years <= args.years:
        p.error("--score-years must be between 1 and --years")
    try:
        calibrate(args)
    except ValueError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
