"""The coarse model without and with the bias correction against the twin truth.

Both runs start from the nudged model's restart at the end of the training years and run the
held-out years (:func:`mlbridge_models.subgrid.truth.run_truth`, resumable); the corrected one
couples the trained closure through the bridge (``examples/08_bias_correction/coupling.toml`` of
the checkout, with the experiment's own registry). Scores: RMSE of the time-mean ``u``, ``v``
over the ocean points (``umask``, ``vmask``) and of each interface depth of the time-mean ``h``
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
    """Time-mean top interface depth: truth, and the errors without and with the correction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = means["truth"]["tmask"] == 0
    depth = {k: np.ma.masked_where(mask, interface_depths(m["h"])[0]) for k, m in means.items()}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    im = axes[0].pcolormesh(depth["truth"], cmap="viridis")
    axes[0].set_title("twin truth: mean depth of interface 1 [m]")
    fig.colorbar(im, ax=axes[0])
    lim = float(max(np.abs(depth[k] - depth["truth"]).max() for k in ("free", "corrected"))) or 1.0
    for ax, key in zip(axes[1:3], ("free", "corrected"), strict=True):
        im = ax.pcolormesh(depth[key] - depth["truth"], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"{key} - truth [m]")
        fig.colorbar(im, ax=ax)
    names = list(result["rmse"]["free"])
    x = np.arange(len(names))
    for i, key in enumerate(("free", "corrected")):
        ratio = [result["rmse"][key][n] / (result["rmse"]["free"][n] or 1.0) for n in names]
        axes[3].bar(x + 0.4 * i, ratio, width=0.4, label=key)
    axes[3].set_xticks(x + 0.2, names, rotation=30)
    axes[3].set_title("RMSE of the time mean / uncorrected")
    axes[3].legend()
    for ax in axes[:3]:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(out: Path, s: Any) -> dict[str, Any]:
    """Run (or resume) the held-out years without and with the correction; score them."""

    from bridge.config.coupling import load_config
    from bridge.registry.store import Registry

    out = Path(out).resolve()
    first, last = s.eval_range
    seed_year = first - 1
    seed = read_year(out / "nudged", seed_year, check=False)
    if seed is None:
        raise FileNotFoundError(f"{out / 'nudged'}: year {seed_year} is not done (stage nudged)")
    seed_restart = out / "nudged" / seed.restart
    patch = s.namelist_patch(s.tau0_model)
    run_truth(
        s.coupling_file(),
        out / "free",
        s.years,
        write_days=s.eval_days,
        patch=patch,
        seed_restart=seed_restart,
        seed_year=seed_year,
    )
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
        write_days=s.eval_days,
        patch=s.namelist_patch(s.tau0_model, nammlb={"nn_mlb_every": s.every}),
        seed_restart=seed_restart,
        seed_year=seed_year,
    )
    means = {
        "truth": _mean(grid_files(out / "truth", first, last)),
        "free": _mean(grid_files(out / "free", first, last)),
        "corrected": _mean(grid_files(out / "corrected", first, last)),
    }
    result = {
        "closure": ref,
        "years": [first, last],
        "rmse": {k: scores(means[k], means["truth"]) for k in ("free", "corrected")},
    }
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    figure(out / "evaluation.png", means, result)
    result["figure"] = str(out / "evaluation.png")
    for key in ("free", "corrected"):
        line = ", ".join(f"{n} {v:.4g}" for n, v in result["rmse"][key].items())
        print(f"RMSE of the time mean, {key:9s}: {line}", flush=True)
    return result
