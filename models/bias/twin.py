"""The bias-correction twin experiment, end to end (Bretherton et al. 2022, Gregory et al. 2023).

Stages, each resumable (one model year per job, :func:`mlbridge_models.subgrid.truth.run_truth`):

1. ``truth``: the twin truth, the coarse configuration with another wind pattern (the
   asymmetric mode ``rn_tau1 = 0.02`` N m-2) and a 5 times stronger bottom drag
   (``rn_rfr = 5e-7`` s-1), written every ``--write-days``.
2. ``nudged``: the coarse model (its standard wind and drag) nudged toward the twin truth
   (``&namnudge``, ``rn_nudge_tau`` = ``--nudge-days``) up to the end of the training years,
   written every
   ``--sample-days`` with the nudging tendency averaged over each output interval.
   The nudging file of year ``y`` is the truth's grid file of year ``y`` preceded by the
   truth state at the start of the year (the last record of year ``y - 1``, the state at rest
   for year 1), so that every step of the year lies between two records.
3. ``train``: the (state, mean nudging tendency) pairs of the training years
   (:mod:`mlbridge_models.bias.dataset`) train a small CNN (:mod:`mlbridge_models.bias.train`).
4. ``evaluate``: from the nudged state at the end of the training years, the coarse model
   without and with the correction (coupled through the bridge), the trivial baselines (the
   mean nudging tendency as a constant forcing; the exact wind difference) and the truth's own
   physics (the floor) over the held-out years; RMSE of the time-mean u, v and interface depths
   against the twin truth (:mod:`mlbridge_models.bias.evaluate`).
5. ``online``: the correction learned online instead, while the model runs nudged over the
   training years (from the nudged restart ending the spin-up, zero output at first), then
   the held-out years with its last version, scored as ``evaluate`` and beside its numbers
   (:mod:`mlbridge_models.bias.online`; ``online.json``, ``online.png``).

Usage::

    python -m mlbridge_models.bias.twin --out runs/bias     # every stage but online, full size
    python -m mlbridge_models.bias.twin --out runs/bias --stage truth --stage nudged
    python -m mlbridge_models.bias.twin --out runs/bias --stage online   # after nudged, evaluate
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from mlbridge_models.bias import evaluate, online, train
from mlbridge_models.bias.nudging import last_record, rest_state, write_nudge_file
from mlbridge_models.subgrid.truth import SECONDS_PER_DAY, TruthError, grid_files, run_truth

from bridge import paths

COARSE_EXAMPLE = ("examples", "01_coarse", "coupling.toml")
"""The default coarse configuration, in a checkout of the repository (a wheel does not ship it)."""
STAGES = ("truth", "nudged", "train", "evaluate", "online")
DEFAULT_STAGES = STAGES[:4]
"""The stages run when none is named: ``online`` (another experiment on the same runs, as long
again) only when asked for."""
ROLES = ("truth", "model", "wind_oracle")


@dataclasses.dataclass
class TwinSettings:
    """Sizes and physics of the experiment (the defaults are the full-size run)."""

    nx: int = 64
    ny: int = 64
    spinup_years: int = 3
    train_years: int = 6
    eval_years: int = 10
    # the twin truth's physics: another wind pattern (the asymmetric mode rn_tau1) and a
    # stronger bottom drag; the model has the standard ones (examples/01_coarse)
    tau0_truth: float = 0.05
    tau1_truth: float = 0.02
    rfr_truth: float = 5.0e-7
    tau0_model: float = 0.05
    tau1_model: float = 0.0
    rfr_model: float = 1.0e-7
    nudge_days: float = 5.0
    write_days: float = 1.0  # truth output: brackets every step of the nudged run
    sample_days: float = 5.0  # nudged output: one training pair per interval
    eval_days: float = 5.0  # output of the evaluation runs
    every: int = 6  # exchange interval of the corrected run [steps] (2.4 h)
    epochs: int = 40
    hidden: tuple[int, ...] = (16, 16)
    kernel_sizes: tuple[int, ...] = (3, 3, 3)  # halo 3
    clip_factor: float = 2.0
    online: online.OnlineSettings = dataclasses.field(default_factory=online.OnlineSettings)
    config: Path | None = None  # None: examples/01_coarse/coupling.toml of the checkout

    def coupling_file(self) -> Path:
        """``config``, else the checkout's ``examples/01_coarse/coupling.toml``.

        Raises
        ------
        CheckoutRequiredError
            If ``config`` is None outside a checkout of the repository.
        """
        return self.config if self.config is not None else paths.checkout_file(*COARSE_EXAMPLE)

    @property
    def years(self) -> int:
        return self.spinup_years + self.train_years + self.eval_years

    @property
    def train_range(self) -> tuple[int, int]:
        return self.spinup_years + 1, self.spinup_years + self.train_years

    @property
    def eval_range(self) -> tuple[int, int]:
        return self.spinup_years + self.train_years + 1, self.years

    def grid_patch(self) -> dict[str, dict[str, Any]]:
        return {"namusr_def": {"nn_nx": self.nx, "nn_ny": self.ny}}

    def physics(self, role: str) -> dict[str, float]:
        """``&namusr_def`` wind and drag of a run: ``truth``, ``model``, or ``wind_oracle`` (the
        model's drag under the truth's wind: the exact wind difference added)."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {ROLES}")
        wind = "truth" if role in ("truth", "wind_oracle") else "model"
        drag = "truth" if role == "truth" else "model"
        return {
            "rn_tau0": getattr(self, f"tau0_{wind}"),
            "rn_tau1": getattr(self, f"tau1_{wind}"),
            "rn_rfr": getattr(self, f"rfr_{drag}"),
        }

    def namelist_patch(self, role: str, **blocks: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The namelist entries of a run of the twin: the grid, the physics of ``role``
        (:meth:`physics`), ``blocks``."""
        patch = self.grid_patch()
        patch["namusr_def"].update(self.physics(role))
        for block, entries in blocks.items():
            patch.setdefault(block, {}).update(entries)
        return patch


def run_twin_truth(out: Path, s: TwinSettings) -> list[Path]:
    """Stage 1: the twin truth, years 1..s.years; its grid files."""
    run_truth(
        s.coupling_file(),
        out / "truth",
        s.years,
        write_days=s.write_days,
        patch=s.namelist_patch("truth"),
    )
    return grid_files(out / "truth", 1, s.years)


def run_nudged(out: Path, s: TwinSettings) -> list[Path]:
    """Stage 2: the coarse model nudged toward the twin truth, from year 1 to the end of the
    training years; their grid files."""
    from bridge.config.coupling import TOY_NAMELIST_REF, load_config
    from bridge.config.namelist import read_namelists

    truth = grid_files(out / "truth", 1, s.years)
    cfg = load_config(s.coupling_file())
    nml = read_namelists(cfg.model.namelist_ref or TOY_NAMELIST_REF, cfg.model.namelist_cfg)
    if float(nml.get("namusr_def", "rn_bump") or 0.0) != 0.0:
        raise TruthError("the year-1 nudging file assumes a start at rest: rn_bump must be 0")
    h_layer = float(nml.get("namusr_def", "rn_htot")) / float(nml.get("namusr_def", "nn_nz"))
    folder = out / "nudged"
    folder.mkdir(parents=True, exist_ok=True)
    nudge_in = (folder / "nudge_in.nc").resolve()
    patch = s.namelist_patch(
        "model",
        namnudge={
            "ln_nudge": True,
            "cn_nudge_in": str(nudge_in),
            "rn_nudge_tau": s.nudge_days * SECONDS_PER_DAY,
        },
    )
    last = s.train_range[1]  # the held-out years start from here: no nudging after it
    for year in range(1, last + 1):
        start = rest_state(truth[0], h_layer) if year == 1 else last_record(truth[year - 2])
        write_nudge_file(nudge_in, truth[year - 1], start)
        run_truth(s.coupling_file(), folder, year, write_days=s.sample_days, patch=patch)
    return grid_files(folder, 1, last)


def run_all(out: Path, s: TwinSettings, stages: tuple[str, ...] = DEFAULT_STAGES) -> dict[str, Any]:
    """Run the stages asked for (in order); their timings and the evaluation's results."""

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "twin.json").write_text(
        json.dumps(dataclasses.asdict(s), indent=2, default=str, sort_keys=True) + "\n"
    )
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"timings": timings}
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        if stage == "truth":
            run_twin_truth(out, s)
        elif stage == "nudged":
            run_nudged(out, s)
        elif stage == "train":
            first, last = s.train_range
            result["train"] = train.train(grid_files(out / "nudged", first, last), out / "model", s)
        elif stage == "evaluate":
            result["evaluate"] = evaluate.evaluate(out, s)
        else:
            result["online"] = online.run_online(out, s)
        timings[stage] = time.perf_counter() - t0
        print(f"== stage {stage} done in {timings[stage]:.0f} s", flush=True)
    return result


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    d = TwinSettings()
    p = argparse.ArgumentParser(
        prog="python -m mlbridge_models.bias.twin",
        description="Bias-correction twin: twin truth, nudged model, training, evaluation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m mlbridge_models.bias.twin --out runs/bias "
        "(every stage but online, full size, resumable; --stage evaluate alone rescores "
        "finished runs; --stage online: the correction learned online)",
    )
    p.add_argument("--out", type=Path, required=True, help="experiment folder (resumable)")
    p.add_argument(
        "--stage", action="append", choices=STAGES, help="stages (default: all but online)"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=d.config,
        help="coarse coupling.toml (default: examples/01_coarse/coupling.toml of the checkout)",
    )
    p.add_argument("--nx", type=int, default=d.nx)
    p.add_argument("--ny", type=int, default=d.ny)
    p.add_argument("--spinup-years", type=int, default=d.spinup_years)
    p.add_argument("--train-years", type=int, default=d.train_years)
    p.add_argument("--eval-years", type=int, default=d.eval_years)
    for role in ("truth", "model"):
        p.add_argument(f"--tau0-{role}", type=float, default=getattr(d, f"tau0_{role}"),
                       help=f"{role} rn_tau0 [N m-2]")  # fmt: skip
        p.add_argument(f"--tau1-{role}", type=float, default=getattr(d, f"tau1_{role}"),
                       help=f"{role} rn_tau1, the asymmetric wind mode [N m-2]")  # fmt: skip
        p.add_argument(f"--rfr-{role}", type=float, default=getattr(d, f"rfr_{role}"),
                       help=f"{role} rn_rfr, the bottom drag [s-1]")  # fmt: skip
    p.add_argument("--nudge-days", type=float, default=d.nudge_days, help="rn_nudge_tau [days]")
    p.add_argument("--write-days", type=float, default=d.write_days, help="truth output [days]")
    p.add_argument("--sample-days", type=float, default=d.sample_days, help="nudged output")
    p.add_argument("--eval-days", type=float, default=d.eval_days, help="evaluation output")
    p.add_argument("--every", type=int, default=d.every, help="exchange interval [steps]")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--hidden", type=_ints, default=d.hidden, help="e.g. 16,16")
    p.add_argument("--kernel-sizes", type=_ints, default=d.kernel_sizes, help="e.g. 3,3,3")
    p.add_argument("--clip-factor", type=float, default=d.clip_factor)
    online_fields = [f.name for f in dataclasses.fields(online.OnlineSettings)]
    for name in online_fields:
        default = getattr(d.online, name)
        p.add_argument(f"--online-{name.replace('_', '-')}", type=type(default), default=default,
                       help=f"stage online: [exchange.train] {name}")  # fmt: skip
    a = p.parse_args(argv)
    s = TwinSettings(
        **{
            f.name: getattr(a, f.name)
            for f in dataclasses.fields(TwinSettings)
            if hasattr(a, f.name)
        },
        online=online.OnlineSettings(
            **{name: getattr(a, f"online_{name}") for name in online_fields}
        ),
    )
    if s.train_years < 1 or s.eval_years < 1 or s.spinup_years < 0:
        p.error("needs --train-years >= 1, --eval-years >= 1, --spinup-years >= 0")
    try:
        result = run_all(a.out, s, tuple(a.stage or DEFAULT_STAGES))
    except (TruthError, paths.CheckoutRequiredError) as exc:
        print(f"bias twin: {exc}", file=sys.stderr)
        return 1
    if "evaluate" in result:
        print(json.dumps(result["evaluate"]["rmse"], indent=2))
    if "online" in result:
        print(json.dumps(result["online"]["rmse"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
