"""The coarse model without and with the bias correction, and two trivial baselines, against
the twin truth.

Every run starts from the nudged model's restart at the end of the training years and runs the
held-out years (:func:`mlbridge_models.subgrid.truth.run_truth`, resumable):

- ``free``: the model alone (its own wind and drag);
- ``mean_forcing``: the model plus the time-mean nudging tendency of the training years as a
  constant forcing (``&namnudge ln_nudge_frc``, the file ``mean_forcing.nc``);
- ``wind_oracle``: the model with the truth's wind (the exact wind difference added; its drag
  stays the model's): the oracle for the wind part of the error;
- ``corrected``: the model plus the trained closure, coupled through the bridge
  (``examples/08_bias_correction/coupling.toml`` of the checkout, with the experiment's own
  registry);
- ``perfect_model``: the truth's own physics from the same start: no correction can be closer to
  the truth than this (the noise floor: intrinsic variability and the start).

Scores: RMSE of the time-mean ``u``, ``v`` over the ocean points (``umask``, ``vmask``) and of
each interface depth of the time-mean ``h``
(:func:`mlbridge_models.evaluation.metrics.interface_rmse`) over the held-out years, against the
twin truth's time means over the same years. Written: ``evaluation.json`` and
``evaluation.png``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from mlbridge_models.evaluation.metrics import interface_depths, interface_rmse, rmse
from mlbridge_models.subgrid.truth import grid_files, read_year, run_truth

from bridge import paths

EXAMPLE = ("examples", "08_bias_correction", "coupling.toml")
"""The coupled example the corrected runs start from, in a checkout of the repository."""


def coupled_config(out: Path, registry: Path, every: int, namelist_cfg: Path) -> Path:
    """``out/coupling.toml``: the example with this experiment's registry, namelist, interval."""
    text = paths.checkout_file(*EXAMPLE).read_text()
    text = re.sub(r'(?m)^registry = "[^"]*"', f'registry = "{registry}"', text)
    text = re.sub(r'(?m)^namelist_cfg = "[^"]*"', f'namelist_cfg = "{namelist_cfg}"', text)
    text = re.sub(r"(?m)^every = \d+", f"every = {every}", text)
    text = re.sub(r'(?m)^workdir = "[^"]*"', f'workdir = "{out / "runs"}"', text)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "coupling.toml"
    path.write_text(text)
    return path


RUNS = ("free", "mean_forcing", "wind_oracle", "corrected")
FLOOR = "perfect_model"
BASELINES = ("mean_forcing", "wind_oracle")


def write_mean_forcing(target: Path, files: list[Path]) -> dict[str, float]:
    """``target``: the time mean of ``nudge_u, nudge_v, nudge_h`` over every record of ``files``
    as one record (with ``kt``), the file ``&namnudge ln_nudge_frc`` reads; its RMS per field."""
    import netCDF4

    sums: dict[str, Any] = {}
    n = 0
    for path in files:
        with netCDF4.Dataset(path) as nc:
            for name in ("nudge_u", "nudge_v", "nudge_h"):
                sums[name] = sums.get(name, 0.0) + np.asarray(nc[name][:], float).sum(axis=0)
            n += len(nc.dimensions["time_counter"])
            dims = {d: len(nc.dimensions[d]) for d in ("x", "y", "z")}
    if n == 0:
        raise ValueError(f"no record in {files}")
    tmp = target.with_name(target.name + ".tmp")
    with netCDF4.Dataset(tmp, "w") as dst:
        for name, size in dims.items():
            dst.createDimension(name, size)
        dst.createDimension("time_counter", None)
        dst.createVariable("kt", "i4", ("time_counter",))[0] = 0
        for name, total in sums.items():
            var = dst.createVariable(name, "f8", ("time_counter", "z", "y", "x"))
            var[0] = total / n
        dst.source = f"time mean of the nudging tendencies of {n} records of " + ", ".join(
            str(f) for f in files
        )
    tmp.replace(target)
    return {k: float(np.sqrt(np.mean((v / n) ** 2))) for k, v in sums.items()}


def _mean(files: list[Path]) -> dict[str, np.ndarray]:
    import netCDF4

    sums: dict[str, Any] = {}
    n = 0
    for path in files:
        with netCDF4.Dataset(path) as nc:
            for name in ("u", "v", "h"):
                sums[name] = sums.get(name, 0.0) + np.asarray(nc[name][:], float).sum(axis=0)
            n += len(nc.dimensions["time_counter"])
            for name in ("umask", "vmask", "tmask"):
                sums[name] = np.asarray(nc[name][:], float)
    return {k: (v / n if k in ("u", "v", "h") else v) for k, v in sums.items()}


def scores(model: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    """RMSE of the time-mean u, v [m s-1] and interface depths [m]."""
    out = {
        "u": rmse(model["u"], truth["u"], np.broadcast_to(truth["umask"], truth["u"].shape)),
        "v": rmse(model["v"], truth["v"], np.broadcast_to(truth["vmask"], truth["v"].shape)),
    }
    for k, value in enumerate(interface_rmse(model["h"][None], truth["h"][None])):
        out[f"interface_{k + 1}"] = float(value)
    return out


def figure(path: Path, means: dict[str, dict[str, np.ndarray]], result: dict[str, Any]) -> None:
    """Time-mean top interface depth: truth, the error of every run, RMSE ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = means["truth"]["tmask"] == 0
    depth = {k: np.ma.masked_where(mask, interface_depths(m["h"])[0]) for k, m in means.items()}
    runs = [k for k in RUNS if k in means]
    drift = "per_year" in result
    ncol = len(runs) + 2 + drift
    fig, axes = plt.subplots(1, ncol, figsize=(4 * ncol, 3.8))
    if drift:  # the last panel: RMSE of each year's mean of interface 1
        for key in runs:
            years = sorted(result["per_year"][key], key=int)
            rmse_1 = [result["per_year"][key][y]["interface_1"] for y in years]
            axes[-1].plot([int(y) for y in years], rmse_1, marker="o", label=key)
        axes[-1].set_xlabel("held-out year")
        axes[-1].set_title("RMSE of each year's mean, interface 1 [m]")
        axes[-1].legend(fontsize=8)
        axes = axes[:-1]
    im = axes[0].pcolormesh(depth["truth"], cmap="viridis")
    axes[0].set_title("twin truth: mean depth of interface 1 [m]")
    fig.colorbar(im, ax=axes[0])
    lim = float(max(np.abs(depth[k] - depth["truth"]).max() for k in runs)) or 1.0
    for ax, key in zip(axes[1:-1], runs, strict=True):
        im = ax.pcolormesh(depth[key] - depth["truth"], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"{key} - truth [m]")
        fig.colorbar(im, ax=ax)
    names = list(result["rmse"]["free"])
    x = np.arange(len(names))
    bars = runs + [FLOOR] * (FLOOR in means)
    width = 0.8 / len(bars)
    for i, key in enumerate(bars):
        ratio = [result["rmse"][key][n] / (result["rmse"]["free"][n] or 1.0) for n in names]
        axes[-1].bar(x + width * i, ratio, width=width, label=key)
    axes[-1].set_xticks(x + 0.4 - width / 2, names, rotation=30)
    axes[-1].set_title("RMSE of the time mean / uncorrected")
    axes[-1].legend(fontsize=8)
    for ax in axes[:-1]:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(rmse: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per field: the corrected run's RMSE change against the uncorrected run and against the
    best trivial baseline of that field (negative: smaller), and whether the targets hold
    (at least 30 % and 20 % smaller)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in rmse["corrected"].items():
        best = min(BASELINES, key=lambda b: rmse[b][name])
        vs_free = value / rmse["free"][name] - 1.0
        vs_best = value / rmse[best][name] - 1.0
        out[name] = {
            "vs_free": vs_free,
            "best_baseline": best,
            "vs_best_baseline": vs_best,
            "target_met": bool(vs_free <= -0.30 and vs_best <= -0.20),
        }
    return out


def held_out_start(out: Path, s: Any) -> dict[str, Any]:
    """The options every held-out run starts with: the nudged restart ending the training."""
    seed_year = s.eval_range[0] - 1
    seed = read_year(out / "nudged", seed_year, check=False)
    if seed is None:
        raise FileNotFoundError(f"{out / 'nudged'}: year {seed_year} is not done (stage nudged)")
    return {
        "write_days": s.eval_days,
        "seed_restart": out / "nudged" / seed.restart,
        "seed_year": seed_year,
    }


def run_baselines(out: Path, s: Any) -> dict[str, float]:
    """Run (or resume) the held-out years of ``free``, ``wind_oracle``, ``mean_forcing`` and
    ``perfect_model`` (the toy alone: no closure, no training needed); the RMS of the mean
    forcing per field."""
    out = Path(out).resolve()
    common = held_out_start(out, s)
    run_truth(s.coupling_file(), out / "free", s.years, patch=s.namelist_patch("model"), **common)
    run_truth(
        s.coupling_file(),
        out / "wind_oracle",
        s.years,
        patch=s.namelist_patch("wind_oracle"),
        **common,
    )
    run_truth(s.coupling_file(), out / FLOOR, s.years, patch=s.namelist_patch("truth"), **common)
    forcing = out / "mean_forcing.nc"
    forcing_rms = write_mean_forcing(forcing, grid_files(out / "nudged", *s.train_range))
    nudge = {"ln_nudge": True, "ln_nudge_frc": True, "cn_nudge_in": str(forcing)}
    run_truth(
        s.coupling_file(),
        out / "mean_forcing",
        s.years,
        patch=s.namelist_patch("model", namnudge=nudge),
        **common,
    )
    return forcing_rms


def exchange_counts(folder: Path, first: int, last: int) -> dict[str, int]:
    """Exchanges, NaN and clip events of a coupled run over years ``first..last``, summed
    over the ``timing.json`` of every year (written by the server)."""
    total = {"exchanges": 0, "nan_replaced": 0, "max_abs_replaced": 0, "clipped": 0}
    for grid in grid_files(folder, first, last):
        timing = json.loads((grid.parent / "timing.json").read_text())
        total["exchanges"] += int(timing["server"]["exchanges"])
        total["nan_replaced"] += int(timing.get("nan_replaced", 0))
        total["max_abs_replaced"] += int(timing.get("max_abs_replaced", 0))
        total["clipped"] += sum(int(n) for n in timing.get("clipped", {}).values())
    return total


def evaluate(out: Path, s: Any) -> dict[str, Any]:
    """Run (or resume) the held-out years of every run of :data:`RUNS`; score them."""

    from bridge.config.coupling import load_config
    from bridge.registry.store import Registry

    out = Path(out).resolve()
    first, last = s.eval_range
    t0, t1 = s.train_range
    forcing_rms = run_baselines(out, s)
    common = held_out_start(out, s)
    registry = out / "registry"
    ref = Registry(registry).register(None, out / "model" / "manifest.toml", force=True)
    cfg = coupled_config(
        out / "corrected_config",
        registry,
        s.every,
        load_config(s.coupling_file()).model.namelist_cfg,
    )
    run_truth(
        cfg,
        out / "corrected",
        s.years,
        patch=s.namelist_patch("model", nammlb={"nn_mlb_every": s.every}),
        **common,
    )
    means = {"truth": _mean(grid_files(out / "truth", first, last))}
    for key in (*RUNS, FLOOR):
        means[key] = _mean(grid_files(out / key, first, last))
    rmse_all = {k: scores(means[k], means["truth"]) for k in (*RUNS, FLOOR)}
    result = {
        "closure": ref,
        "years": [first, last],
        "training_years": [t0, t1],
        "truth": s.physics("truth"),
        "model": s.physics("model"),
        "every": s.every,
        "mean_forcing_rms": forcing_rms,
        "rmse": rmse_all,
        "summary": summary(rmse_all),
        "corrected_exchanges": exchange_counts(out / "corrected", first, last),
        # the drift: RMSE of each held-out year's own mean
        "per_year": {
            k: {
                str(year): scores(
                    _mean(grid_files(out / k, year, year)),
                    _mean(grid_files(out / "truth", year, year)),
                )
                for year in range(first, last + 1)
            }
            for k in RUNS
        },
    }
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    figure(out / "evaluation.png", means, result)
    result["figure"] = str(out / "evaluation.png")
    for key in (*RUNS, FLOOR):
        line = ", ".join(f"{n} {v:.4g}" for n, v in result["rmse"][key].items())
        print(f"RMSE of the time mean, {key:12s}: {line}", flush=True)
    for name, row in result["summary"].items():
        print(
            f"{name}: corrected {100 * row['vs_free']:+.0f} % vs free, "
            f"{100 * row['vs_best_baseline']:+.0f} % vs {row['best_baseline']}"
            f"{'' if row['target_met'] else ' (target missed)'}",
            flush=True,
        )
    return result
