"""Online calibration of the filtered Zanna & Bolton amplitude (examples/12_zb_backscatter).

Each candidate amplitude ``gamma`` (``kappa_BC = -gamma dx dy``, Perezhogin et al. 2024) runs
the coupled coarse toy from the restart of a coarse spin-up (never from rest, never over the
evaluation's years: the evaluation members start from rest and are scored over years 11-20 of
their own runs), for ``--years`` years, and is scored against the coarse-grained fine truth
(``mlbridge_models.evaluation.runs.coarse_truth``) with

    J(gamma) = sum_k ln(KE_k / KE_k^truth)^2 + sum_k (d_k / rms(E_k^truth))^2

over the layers ``k``: ``KE_k`` the time-mean layer kinetic energy of the scored year(s),
``d_k`` the Ross et al. (2023) spectral distance (RMSE of the linear KE spectra below 2/3 of the
Nyquist wavenumber, ``metrics.spectrum_distance``) and ``rms(E_k^truth)`` the RMS of the truth's
spectrum over the same wavenumbers (so both terms are relative). ``gamma = 0`` is the coarse model
alone (examples/01_coarse) from the same restart. A run that fails or leaves non-finite fields is
``stable: false``. The result (one row per amplitude, and the amplitude of least ``J`` among the
stable ones) goes to ``--result`` as JSON.

    python -m mlbridge_models.subgrid.calibrate_zb --spin /work/science_runs/calib/spin \\
        --truth runs/truth --out /tmp/zb_calib --amplitudes 0 0.5 1 2 4 --years 2
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The example whose manifest the candidates patch (``amplitude = ...`` in ``[arch]``).
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "12_zb_backscatter"
#: The coarse model alone (amplitude 0).
BASELINE = Path(__file__).resolve().parents[2] / "examples" / "01_coarse" / "coupling.toml"
MANIFEST = "zb_filtered.toml"


@dataclass(frozen=True)
class TruthStats:
    """Time-mean layer KE [J] and KE spectrum of the coarse-grained truth."""

    ke: np.ndarray
    spectrum: Any


def truth_stats(truth: Path, years: tuple[int, int], cache: Path) -> TruthStats:
    """Coarse-grain the truth's ``years`` onto the coarse grid (cached in ``cache`` as npz)."""
    from mlbridge_models.evaluation import metrics as ev
    from mlbridge_models.evaluation.runs import _grid_info, coarse_truth
    from mlbridge_models.subgrid.truth import grid_files

    if cache.is_file():
        z = np.load(cache)
        spec = ev.Spectrum(z["k"], z["e"], float(z["dk"]), float(z["k_nyquist"]))
        return TruthStats(z["ke"], spec)
    files = grid_files(truth, *years)
    info = _grid_info(files[0])
    n = (info["nx"] - 2) // 4 + 2  # the coarse toy: 4x coarser ocean, plus its land rim
    flow = coarse_truth(files, n, n, 32.0e3, progress=True)
    ke = ev.time_mean_ke(flow.u, flow.v, flow.h, 32.0e3, 32.0e3)
    spec = ev.ke_spectrum(flow.u, flow.v, 32.0e3, 32.0e3)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ke=ke, k=spec.k, e=spec.e, dk=spec.dk, k_nyquist=spec.k_nyquist)
    return TruthStats(ke, spec)


def _tag(arch: dict[str, str]) -> str:
    return "".join(f"_{k}{v}" for k, v in sorted(arch.items()))


def _candidate(out: Path, amplitude: float, arch: dict[str, str]) -> Path:
    """The example copied to ``out/gamma_<a>[_<arch>]`` with the amplitude and the ``arch``
    entries patched (the halo follows the filter passes) and registered."""
    from mlbridge_models.zanna_bolton import required_halo

    from bridge.registry.store import Registry

    folder = out / f"gamma_{amplitude:g}{_tag(arch)}"
    if not folder.exists():
        shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("registry", "runs"))
        values = {"amplitude": repr(float(amplitude))} | arch
        lines = []
        for ln in (folder / MANIFEST).read_text().splitlines():
            key = ln.split("=")[0].strip()
            lines.append(f"{key} = {values.pop(key)}" if key in values else ln)
        if values:
            raise ValueError(f"{folder / MANIFEST}: no [arch] entry for {sorted(values)}")
        text = "\n".join(lines) + "\n"
        arch_now = tomllib.loads(text)["arch"]
        halo = required_halo(arch_now.get("vg_passes", 0), arch_now.get("stress_passes", 0))
        text = "\n".join(
            f"halo = {halo}" if ln.startswith("halo = ") else ln for ln in text.splitlines()
        )
        (folder / MANIFEST).write_text(text + "\n")
        Registry(folder / "registry").register(None, folder / MANIFEST)
    return folder / "coupling.toml"


def score(u: np.ndarray, v: np.ndarray, h: np.ndarray, truth: TruthStats) -> dict[str, Any]:
    """KE per layer, spectral distance per layer and ``J`` of ``(time, z, y, x)`` fields."""
    from mlbridge_models.evaluation import metrics as ev

    ke = ev.time_mean_ke(u, v, h, 32.0e3, 32.0e3)
    spec = ev.ke_spectrum(u, v, 32.0e3, 32.0e3)
    dist = ev.spectrum_distance(spec, truth.spectrum)
    n = ev.comparable_bins(spec, truth.spectrum)
    ref = np.sqrt(np.mean(truth.spectrum.e[..., 1:n] ** 2, axis=-1))
    j = float(np.sum(np.log(ke / truth.ke) ** 2) + np.sum((dist / ref) ** 2))
    return {
        "ke_layer_PJ": [float(x) / 1e15 for x in ke],
        "ke_truth_PJ": [float(x) / 1e15 for x in truth.ke],
        "spectrum_distance": [float(x) for x in dist],
        "spectrum_relative": [float(x) for x in dist / ref],
        "J": j,
    }


def run_candidate(
    amplitude: float,
    out: Path,
    restart: Path,
    seed_year: int,
    years: int,
    truth: TruthStats,
    arch: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one amplitude ``years`` years from the restart; its row of the table."""
    from mlbridge_models.evaluation.runs import read_flow
    from mlbridge_models.subgrid.truth import grid_files, run_truth

    arch = dict(arch or {})
    config = BASELINE if amplitude == 0 else _candidate(out, amplitude, arch)
    folder = out / f"run_{amplitude:g}{_tag(arch) if amplitude else ''}"
    last = seed_year + years
    t0 = time.perf_counter()
    row: dict[str, Any] = {"amplitude": amplitude, "years": [seed_year + 1, last]}
    if arch and amplitude:
        row["arch"] = arch
    try:
        run_truth(
            config,
            folder,
            last,
            write_days=5,
            seed_restart=restart,
            seed_year=seed_year,
            patch={"namusr_def": {"rn_bump": 1.0}},
        )
        flow, _ = read_flow(grid_files(folder, last, last))
    except Exception as exc:  # a blow-up or a failed job is a result here, not an error
        row.update(stable=False, error=str(exc)[:500])
        return row
    finite = all(np.isfinite(a).all() for a in (flow.u, flow.v, flow.h))
    row["stable"] = bool(finite)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if finite:
        row["scored_year"] = last
        row.update(score(flow.u, flow.v, flow.h, truth))
    return row


def _best_row(rows: list[dict[str, Any]], closure_on: bool = False) -> dict[str, Any] | None:
    stable = [
        r
        for r in rows
        if r.get("stable")
        and math.isfinite(r.get("J", math.nan))
        and not (closure_on and r["amplitude"] == 0)
    ]
    return min(stable, key=lambda r: r["J"]) if stable else None


def _best(rows: list[dict[str, Any]]) -> float | None:
    row = _best_row(rows)
    return None if row is None else row["amplitude"]


def _chosen(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The least ``J`` with the closure on (amplitude != 0): amplitude and ``[arch]`` changes."""
    row = _best_row(rows, closure_on=True)
    if row is None:
        return None
    return {"amplitude": row["amplitude"], "arch": row.get("arch", {}), "J": row["J"]}


def merge(parts: list[Path], result: Path) -> dict[str, Any]:
    """One result from several (same settings, different amplitudes), rows sorted by amplitude.

    Raises
    ------
    ValueError
        If the parts were not run against the same truth, spin-up and restart year.
    """
    loaded = [json.loads(Path(x).read_text()) for x in parts]
    keys = ("objective", "truth", "truth_years", "spin", "seed_year", "example")
    for other, path in zip(loaded[1:], parts[1:], strict=True):
        diff = [k for k in keys if other.get(k) != loaded[0].get(k)]
        if diff:
            raise ValueError(f"{path}: {diff} differ from {parts[0]}")
    rows = sorted((r for x in loaded for r in x["rows"]), key=lambda r: r["amplitude"])
    out = {k: loaded[0][k] for k in keys} | {
        "rows": rows,
        "best_amplitude": _best(rows),
        "chosen": _chosen(rows),
    }
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(out, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    from mlbridge_models.evaluation.runs import parse_years
    from mlbridge_models.subgrid.truth import read_year

    p = argparse.ArgumentParser(
        prog="python -m mlbridge_models.subgrid.calibrate_zb",
        description=(
            "Calibrate the filtered Zanna & Bolton amplitude online: coupled runs from a coarse "
            "spin-up restart, scored on layer KE and the KE spectrum against the coarse-grained "
            "truth (see the module docstring)."
        ),
    )
    p.add_argument("--spin", type=Path, help="coarse spin-up (run_truth folder)")
    p.add_argument("--seed-year", type=int, default=5, help="restart at the end of this year (5)")
    p.add_argument("--truth", type=Path, help="fine truth (run_truth folder)")
    p.add_argument("--truth-years", default="8-12", help="truth years to compare with (8-12)")
    p.add_argument("--out", type=Path, help="work folder for the runs")
    p.add_argument(
        "--amplitudes",
        type=float,
        nargs="+",
        default=[0.0, 0.5, 1.0, 2.0, 4.0],
        help="candidate gamma (0: the coarse model alone)",
    )
    p.add_argument("--years", type=int, default=2, help="years per candidate; the last is scored")
    p.add_argument(
        "--arch",
        action="append",
        metavar="KEY=VALUE",
        help="another [arch] value of the candidates (e.g. stress_passes=4), TOML syntax",
    )
    p.add_argument("--result", type=Path, help="JSON result (default OUT/calibration.json)")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="only merge the rows of these results (runs done in parallel) into --result",
    )
    args = p.parse_args(argv)
    if args.merge:
        if args.result is None:
            p.error("--merge needs --result")
        merge(args.merge, args.result)
        return 0
    missing = [o for o in ("spin", "truth", "out") if getattr(args, o) is None]
    if missing:
        p.error("the following arguments are required: " + ", ".join(f"--{o}" for o in missing))
    truth = truth_stats(
        args.truth, parse_years(args.truth_years, "truth-years"), args.out / "truth_coarse.npz"
    )
    arch = {}
    for item in args.arch or []:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--arch {item!r}: expected KEY=VALUE")
        arch[key.strip()] = value.strip()
    rec = read_year(args.spin, args.seed_year)
    restart = args.spin / rec.restart
    result_path = args.result or args.out / "calibration.json"
    rows = []
    for a in args.amplitudes:
        row = run_candidate(a, args.out, restart, args.seed_year, args.years, truth, arch)
        rows.append(row)
        print(json.dumps(row), flush=True)
        best = _best(rows)
        result = {
            "objective": "J = sum_k ln(KE_k/KE_k^truth)^2 + sum_k (d_k/rms(E_k^truth))^2",
            "truth": str(args.truth),
            "truth_years": args.truth_years,
            "spin": str(args.spin),
            "seed_year": args.seed_year,
            "example": "examples/12_zb_backscatter",
            "rows": rows,
            "best_amplitude": best,
            "chosen": _chosen(rows),
        }
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
