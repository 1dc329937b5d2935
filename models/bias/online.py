"""The bias twin with the correction learned online, while the model runs (issue 16).

The offline twin (:mod:`mlbridge_models.bias.twin`) trains the correction after the fact on the
nudged run's output. Here the same network (:class:`mlbridge_models.bias.network.LayerAwareCNN`)
learns *while* the coarse model runs nudged toward the twin truth over the same training years,
from the nudging tendency the toy sends through the bridge (``[exchange.train]``,
``docs/online_learning.md``), and corrects the model as it learns:

1. ``bias-online@1``: the network at torch's seeded default initialisation with its last layer
   zero (:func:`mlbridge_models.bias.network.zero_output_layer`): its correction is exactly
   zero. The normalisation comes from the nudged run's last spin-up year (the year before the
   training years; data neither training uses), with the offline rules
   (:func:`mlbridge_models.bias.train.normalisation`).
2. The training years, one model year per job (:func:`mlbridge_models.subgrid.truth.run_truth`,
   resumable), from the nudged run's restart ending the spin-up: the coarse model nudged
   toward the twin truth exactly as in the ``nudged`` stage (the same nudging files), coupled
   every ``every`` steps to the online closure, which learns the nudging tendency *plus its
   own applied output* (``target_plus_output``, the total increment: the tendency alone holds
   only the error the correction left, a moving target). A registry version every
   ``save_every`` exchanges and at the end of each year; the optimizer, the buffer and the
   draws carry over the yearly jobs through the training state saved at the model's restart
   (``train.resume``).
3. The held-out years, from the same start as the offline ``corrected`` run (the nudged
   restart ending the training years): the last version coupled, inference only. Scored with
   the offline evaluation's functions (:func:`mlbridge_models.bias.evaluate.scores`, the RMSE
   of the time mean against the twin truth) beside the offline numbers of
   ``evaluation.json`` when there; the acceptance: the online RMSE within 20 % of the offline
   correction's. Written: ``online.json``, ``online.png``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from mlbridge_models.bias import evaluate, train
from mlbridge_models.bias.nudging import last_record, write_nudge_file
from mlbridge_models.subgrid.truth import (
    DAYS_PER_YEAR,
    SECONDS_PER_DAY,
    TruthError,
    grid_files,
    read_year,
    run_truth,
)

from bridge import paths

NAME = "bias-online"
"""Registry name of the online versions (``bias-online@1`` is the zero-output start)."""
EXCHANGE = "bias"
"""The coupled exchange's name (its training state files are named after it)."""
TRAIN_DIR, EVAL_DIR = "online", "online_eval"
MODEL_DIR, REGISTRY_DIR = "online_model", "online_registry"
WITHIN = 0.20
"""The acceptance: the online RMSE at most this much above the offline correction's."""
SENT = ["u", "v", "h", "u_nud", "v_nud", "h_nud"]
"""``&nammlb cn_mlb_snd``: the inputs, then the targets."""


@dataclasses.dataclass
class OnlineSettings:
    """``[exchange.train]`` of the online stage (docs/online_learning.md).

    The defaults (docs/online_learning.md, "The twin experiment online"): one Adam step of 4
    exchanges after each exchange (3650 steps a model year at 64 x 64 with ``every = 6``;
    21900 over the 6 training years, 6 times the samples the offline training sees), a buffer
    of 1825 exchanges (half a model year: with 730, the held-out loss of the year's last
    version was 4.5 times larger, the network forgetting the older flow), every 10th
    exchange held out for the metric, a version every 730 exchanges (73 days) and at each
    year's end.
    """

    optimizer: str = "adam"
    lr: float = 1.0e-3
    batch: int = 4
    steps_per_exchange: int = 1
    buffer: int = 1825
    hold_out: int = 10
    save_every: int = 730
    seed: int = 0

    def table(self, resume: str = "") -> str:
        """The ``[exchange.train]`` table (TOML)."""
        lines = [
            "[exchange.train]",
            'target = { cu = "u_nud", cv = "v_nud", ch = "h_nud" }',
            "target_plus_output = true",
            f'optimizer = "{self.optimizer}"',
            f"lr = {self.lr!r}",
            f"batch = {self.batch}",
            f"steps_per_exchange = {self.steps_per_exchange}",
            f"buffer = {self.buffer}",
            f"hold_out = {self.hold_out}",
            f"save_every = {self.save_every}",
            f"seed = {self.seed}",
            f'save_as = "{NAME}"',
            f"resume = {json.dumps(resume)}",
        ]
        return "\n".join(lines) + "\n"


def initial_closure(out: Path, s: Any) -> str:
    """Register ``bias-online@1`` (zero output) in ``out/online_registry`` unless there; its
    reference."""
    import torch
    from mlbridge_models.bias.dataset import load
    from mlbridge_models.bias.network import build_layer_aware_cnn, zero_output_layer

    from bridge.registry.store import Registry

    registry = Registry(out / REGISTRY_DIR)
    if "1" in registry.versions(NAME):
        return f"{NAME}@1"
    year = s.train_range[0] - 1
    data = load(grid_files(out / "nudged", year, year))
    in_norm, out_scale, clip = train.normalisation(data, slice(None), s.clip_factor)
    arch = {
        "in_channels": 3,
        "out_channels": 3,
        "hidden": list(s.hidden),
        "kernel_sizes": list(s.kernel_sizes),
    }
    torch.manual_seed(s.online.seed)
    net = zero_output_layer(build_layer_aware_cnn(**arch))
    folder = out / MODEL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "weights.pt")
    (folder / "manifest.toml").write_text(
        train.manifest_text(
            halo=net.halo,
            in_norm=in_norm,
            out_scale=out_scale,
            clip=clip,
            files=[f"normalisation: {f}" for f in data.files],
            metrics={},
            name=NAME,
            arch=arch,
        ).replace(
            'training_data = "normalisation',
            'notes = "start of the online twin: seeded default initialisation, last layer '
            'zero (output exactly zero)"\ntraining_data = "none (learned online); normalisation',
        )
    )
    return registry.register(folder / "weights.pt", folder / "manifest.toml")


def coupled_config(path: Path, s: Any, registry: Path, closure: str, train_table: str = "") -> Path:
    """``path``: the offline corrected run's coupling (``examples/08_bias_correction``) with
    this experiment's registry, namelist and interval, the closure ``closure`` and, for the
    training years, the ``[exchange.train]`` table."""
    from bridge.config.coupling import load_config

    text = paths.checkout_file(*evaluate.EXAMPLE).read_text()
    namelist = load_config(s.coupling_file()).model.namelist_cfg
    for pattern, value in (
        (r'(?m)^registry = "[^"]*"', f"registry = {json.dumps(str(registry))}"),
        (r'(?m)^namelist_cfg = "[^"]*"', f"namelist_cfg = {json.dumps(str(namelist))}"),
        (r"(?m)^every = \d+", f"every = {s.every}"),
        (r'(?m)^workdir = "[^"]*"', f"workdir = {json.dumps(str(path.parent / 'runs'))}"),
        (r'(?m)^closure = "[^"]*"', f'name = "{EXCHANGE}"\nclosure = "{closure}"'),
    ):
        text, n = re.subn(pattern, value.replace("\\", "\\\\"), text)
        if n != 1:
            raise TruthError(f"{paths.checkout_file(*evaluate.EXAMPLE)}: no line {pattern!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n" + (f"\n{train_table}" if train_table else ""))
    return path


def run_dir_of(folder: Path, year: int) -> Path:
    """The run directory of a recorded year of the run in ``folder``."""
    record = read_year(folder, year, check=False)
    if record is None or not record.grid:
        raise TruthError(f"{folder}: year {year} is not done")
    return (folder / record.grid).parent


def run_training_years(out: Path, s: Any) -> list[Path]:
    """The training years nudged and coupled to the learning closure (resumable); their grid
    files."""
    if s.spinup_years < 1:
        raise TruthError(
            "the online stage needs --spinup-years >= 1: its normalisation comes from the "
            "nudged run's last spin-up year, and it starts from that year's restart"
        )
    out = Path(out).resolve()
    first, last = s.train_range
    seed = read_year(out / "nudged", first - 1, check=False)
    if seed is None:
        raise FileNotFoundError(f"{out / 'nudged'}: year {first - 1} is not done (stage nudged)")
    truth = grid_files(out / "truth", 1, last)
    initial_closure(out, s)
    folder = out / TRAIN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    nudge_in = folder / "nudge_in.nc"
    patch = s.namelist_patch(
        "model",
        namnudge={
            "ln_nudge": True,
            "cn_nudge_in": str(nudge_in),
            "rn_nudge_tau": s.nudge_days * SECONDS_PER_DAY,
        },
        nammlb={"nn_mlb_every": s.every, "cn_mlb_snd": SENT},
    )
    config = folder / "coupling.toml"
    for year in range(first, last + 1):
        if read_year(folder, year) is not None:
            continue
        write_nudge_file(nudge_in, truth[year - 1], last_record(truth[year - 2]))
        resume = "" if year == first else str(run_dir_of(folder, year - 1) / "online")
        coupled_config(config, s, out / REGISTRY_DIR, f"{NAME}@1", s.online.table(resume))
        run_truth(
            config,
            folder,
            year,
            write_days=s.sample_days,
            patch=patch,
            seed_restart=out / "nudged" / seed.restart,
            seed_year=first - 1,
            config_changes=True,  # each year's config resumes the training from the last one
        )
    return grid_files(folder, first, last)


def _training(run_dir: Path) -> dict[str, Any]:
    timing = json.loads((run_dir / "timing.json").read_text())
    for name, figures in timing.get("training", {}).items():
        if name == EXCHANGE:
            return figures
    raise TruthError(f"{run_dir / 'timing.json'}: no training figures of exchange {EXCHANGE!r}")


def final_version(out: Path, s: Any) -> str:
    """The version written at the end of the last training year."""
    versions = _training(run_dir_of(out / TRAIN_DIR, s.train_range[1]))["versions"]
    if not versions:
        raise TruthError(f"{out / TRAIN_DIR}: the last training year wrote no version")
    return str(versions[-1])


def nudging_rms(grid: Path) -> dict[str, float]:
    """RMS over the ocean points and records of ``nudge_u, nudge_v, nudge_h`` of a grid file."""
    import netCDF4

    with netCDF4.Dataset(grid) as nc:
        out = {}
        for name, mask in (("nudge_u", "umask"), ("nudge_v", "vmask"), ("nudge_h", "tmask")):
            a = np.asarray(nc[name][:], float)
            m = np.broadcast_to(np.asarray(nc[mask][:]) != 0, a.shape)
            out[name] = float(np.sqrt(np.mean(a[m] ** 2)))
    return out


def learning_record(out: Path, s: Any) -> dict[str, Any]:
    """Per training year: the nudging tendency's RMS with the online correction and without
    (the ``nudged`` run), the mean training loss, the optimizer steps and training seconds;
    per version: its step range end and its held-out MSE."""
    from bridge.registry.store import Registry

    first, last = s.train_range
    years: dict[str, Any] = {}
    for year in range(first, last + 1):
        run_dir = run_dir_of(out / TRAIN_DIR, year)
        t = _training(run_dir)
        losses = [v for v in t["loss"] if v is not None]
        server = json.loads((run_dir / "timing.json").read_text()).get("server", {})
        years[str(year)] = {
            "nudging_rms_online": nudging_rms(grid_files(out / TRAIN_DIR, year, year)[0]),
            "nudging_rms_nudged": nudging_rms(grid_files(out / "nudged", year, year)[0]),
            "loss_mean": float(np.mean(losses)) if losses else None,
            "loss_last_quarter": float(np.mean(losses[-max(1, len(losses) // 4) :]))
            if losses
            else None,
            "optimizer_steps": t["optimizer_steps"],
            "train_s": t["train_s"],
            "exchanges": t["exchanges"],
            "exchanges_server": server.get("exchanges"),
            "seconds": read_year(out / TRAIN_DIR, year, check=False).seconds,
            "versions": t["versions"],
        }
    registry = Registry(out / REGISTRY_DIR)
    versions = {}
    for v in sorted(registry.versions(NAME), key=lambda x: int(x) if x.isdigit() else -1):
        manifest = registry.show(f"{NAME}@{v}").manifest
        prov = manifest.provenance if manifest is not None else None
        metrics = dict(prov.metrics) if prov is not None else {}
        found = re.search(r"model steps (\d+) to (\d+)", prov.training_data if prov else "")
        versions[v] = {
            "last_step": int(found.group(2)) if found else 0,
            "held_out_mse": metrics.get("held_out_mse"),
            "train_loss_last": metrics.get("train_loss_last"),
            "exchanges_trained": metrics.get("exchanges_trained"),
        }
    return {"years": years, "versions": versions}


def run_held_out(out: Path, s: Any, closure: str) -> None:
    """The held-out years with ``closure`` coupled, inference only, from the offline
    corrected run's start (resumable; refused if an earlier run used another closure)."""
    folder = out / EVAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "closure.txt"
    if stamp.is_file() and stamp.read_text().strip() != closure:
        raise TruthError(
            f"{folder} holds held-out years run with {stamp.read_text().strip()}, not "
            f"{closure}: remove it to rerun them"
        )
    stamp.write_text(closure + "\n")
    config = coupled_config(folder / "coupling.toml", s, out / REGISTRY_DIR, closure)
    run_truth(
        config,
        folder,
        s.years,
        patch=s.namelist_patch("model", nammlb={"nn_mlb_every": s.every}),
        **evaluate.held_out_start(out, s),
    )


def steps_per_year(s: Any) -> int:
    """Model steps in a 365-day year of the coarse configuration (its ``rn_Dt``)."""
    from bridge.config.coupling import TOY_NAMELIST_REF, load_config
    from bridge.config.namelist import read_namelists

    cfg = load_config(s.coupling_file())
    nml = read_namelists(cfg.model.namelist_ref or TOY_NAMELIST_REF, cfg.model.namelist_cfg)
    return round(DAYS_PER_YEAR * SECONDS_PER_DAY / float(nml.get("namdom", "rn_dt")))


def criterion(online: dict[str, float], offline: dict[str, float]) -> dict[str, Any]:
    """Per field: online RMSE / offline corrected RMSE - 1 and whether it is within
    :data:`WITHIN`; ``met``: for every field."""
    fields = {
        name: {
            "online_vs_offline": online[name] / offline[name] - 1.0,
            "within": bool(online[name] <= (1.0 + WITHIN) * offline[name]),
        }
        for name in online
    }
    return {"within": WITHIN, "fields": fields, "met": all(f["within"] for f in fields.values())}


def score(out: Path, s: Any, closure: str) -> dict[str, Any]:
    """``online.json`` (and ``online.png``): the held-out RMSE, per year too, the learning
    record, the offline numbers of ``evaluation.json`` (when there) and the criterion."""
    first, last = s.eval_range
    truth = evaluate._mean(grid_files(out / "truth", first, last))
    rmse = evaluate.scores(evaluate._mean(grid_files(out / EVAL_DIR, first, last)), truth)
    per_year = {
        str(y): evaluate.scores(
            evaluate._mean(grid_files(out / EVAL_DIR, y, y)),
            evaluate._mean(grid_files(out / "truth", y, y)),
        )
        for y in range(first, last + 1)
    }
    result: dict[str, Any] = {
        "closure": closure,
        "years": [first, last],
        "steps_per_year": steps_per_year(s),
        "training_years": list(s.train_range),
        "every": s.every,
        "train": dataclasses.asdict(s.online),
        "target": "nudging tendency + the closure's own applied output (total increment)",
        "rmse": {"online": rmse},
        "per_year": {"online": per_year},
        "exchanges": evaluate.exchange_counts(out / EVAL_DIR, first, last),
        "learning": learning_record(out, s),
    }
    offline_path = out / "evaluation.json"
    if offline_path.is_file():
        offline = json.loads(offline_path.read_text())
        result["offline_source"] = str(offline_path)
        for key in ("corrected", "free", *evaluate.BASELINES, evaluate.FLOOR):
            if key in offline["rmse"]:
                result["rmse"][key] = offline["rmse"][key]
        for key in ("corrected", "free"):
            if key in offline.get("per_year", {}):
                result["per_year"][key] = offline["per_year"][key]
        if "corrected" in offline["rmse"]:
            result["criterion"] = criterion(rmse, offline["rmse"]["corrected"])
    (out / "online.json").write_text(json.dumps(result, indent=2) + "\n")
    figure(out / "online.png", result)
    for key, values in result["rmse"].items():
        line = ", ".join(f"{n} {v:.4g}" for n, v in values.items())
        print(f"RMSE of the time mean, {key:13s}: {line}", flush=True)
    if "criterion" in result:
        for name, row in result["criterion"]["fields"].items():
            print(
                f"{name}: online {100 * row['online_vs_offline']:+.0f} % vs the offline "
                f"correction ({'within' if row['within'] else 'not within'} 20 %)",
                flush=True,
            )
    return result


def figure(path: Path, result: dict[str, Any]) -> None:
    """The error over time as it learns: the nudging tendency per training year (online /
    uncorrected), the training and held-out losses per version, the RMSE of each held-out
    year's mean (online, offline, free) for u and the top interface."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learning = result["learning"]
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    years = sorted(learning["years"], key=int)
    for name in ("nudge_u", "nudge_v", "nudge_h"):
        ratio = [
            learning["years"][y]["nudging_rms_online"][name]
            / (learning["years"][y]["nudging_rms_nudged"][name] or 1.0)
            for y in years
        ]
        axes[0].plot([int(y) for y in years], ratio, marker="o", label=name)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set_xlabel("training year")
    axes[0].set_title("RMS nudging tendency, online / uncorrected")
    axes[0].legend(fontsize=8)
    versions = [v for v in learning["versions"].values() if v["last_step"]]
    per_year = result["steps_per_year"]
    for key, label in (("train_loss_last", "training loss"), ("held_out_mse", "held-out MSE")):
        pts = [(v["last_step"] / per_year, v[key]) for v in versions if v[key]]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), marker=".", label=label)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("model year (end of the steps trained on)")
    axes[1].set_title("loss of each version (normalised units)")
    axes[1].legend(fontsize=8)
    for ax, name in zip(axes[2:], ("u", "interface_1"), strict=True):
        for key in ("online", "corrected", "free"):
            rows = result["per_year"].get(key)
            if rows:
                ys = sorted(rows, key=int)
                label = "offline" if key == "corrected" else key
                ax.plot([int(y) for y in ys], [rows[y][name] for y in ys], marker="o", label=label)
        ax.set_xlabel("held-out year")
        ax.set_yscale("log")
        ax.set_title(f"RMSE of each year's mean, {name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_online(out: Path, s: Any) -> dict[str, Any]:
    """The stage: the training years (resumable), the held-out years with the last version,
    the scores."""
    out = Path(out).resolve()
    run_training_years(out, s)
    closure = final_version(out, s)
    run_held_out(out, s, closure)
    return score(out, s, closure)
