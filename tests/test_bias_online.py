"""The bias twin's correction learned online (stage ``online`` of mlbridge_models.bias.twin)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

EVERY = 300  # 73 exchanges a model year (21900 steps)


def test_online_stage_learns_over_two_years_and_scores_the_held_out_year(
    toy_exe: Path, tmp_path: Path
) -> None:
    """On a 10 x 10 basin: the truth and nudged stages, then two training years coupled to the
    learning closure (the training state carried from one yearly job to the next) and a
    held-out year with the last version. The versions cover every training exchange, their
    held-out loss falls, the online correction shrinks the nudging tendency below the
    uncorrected run's, and a rerun resumes instead of running again."""
    from mlbridge_models.bias.online import NAME, OnlineSettings
    from mlbridge_models.bias.twin import TwinSettings, run_all

    from bridge.registry.store import Registry

    s = TwinSettings(
        nx=10,
        ny=10,
        spinup_years=1,
        train_years=2,
        eval_years=1,
        every=EVERY,
        hidden=(4,),
        kernel_sizes=(3, 3),
        online=OnlineSettings(
            lr=2.0e-3, batch=2, steps_per_exchange=4, buffer=32, hold_out=5, save_every=30
        ),
    )
    out = tmp_path / "bias"
    result = run_all(out, s, ("truth", "nudged", "online"))["online"]
    saved = json.loads((out / "online.json").read_text())
    assert saved["rmse"] == result["rmse"]
    assert set(saved["rmse"]) == {"online"}  # no offline evaluation.json here: nothing copied
    assert "criterion" not in saved
    online = saved["rmse"]["online"]
    assert set(online) == {"u", "v", "interface_1", "interface_2"}
    assert all(np.isfinite(v) and v > 0 for v in online.values()), online
    assert saved["per_year"]["online"]["4"] == online  # one held-out year: the same mean
    assert saved["exchanges"]["exchanges"] == 21900 // EVERY

    # versions: @1 the zero start, then every 50 exchanges and at each year's end; the last one
    # learned from every exchange of both years (the second year resumed the first's state)
    registry = Registry(out / "online_registry")
    versions = sorted(int(v) for v in registry.versions(NAME))
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 7
    assert saved["closure"] == f"{NAME}@{versions[-1]}"
    last = registry.show(saved["closure"]).manifest.provenance
    first_step, last_step = 21900 + 1, 21900 + 1 + (2 * 21900 // EVERY - 1) * EVERY
    assert f"model steps {first_step} to {last_step} ({2 * 21900 // EVERY} exchanges" in (
        last.training_data
    )
    assert "total increment" in last.notes
    start = registry.show(f"{NAME}@1").manifest
    assert start.format == "state_dict" and start.entry_point.endswith("build_layer_aware_cnn")
    held_out = [v["held_out_mse"] for v in saved["learning"]["versions"].values()]
    held_out = [v for v in held_out if v is not None]
    assert held_out[-1] < 0.7 * held_out[0], held_out

    # the correction takes over what the nudging did: its tendency is smaller than without
    years = saved["learning"]["years"]
    assert set(years) == {"2", "3"}
    for name in ("nudge_u", "nudge_v"):
        ratio = years["3"]["nudging_rms_online"][name] / years["3"]["nudging_rms_nudged"][name]
        assert ratio < 0.8, (name, ratio)
    assert (out / "online.png").stat().st_size > 1000

    # resumable: a rerun runs no year again and scores the same
    stamps = {p: p.stat().st_mtime_ns for p in (out / "online").glob("year_*.json")}
    again = run_all(out, s, ("online",))["online"]
    assert again["rmse"]["online"] == online
    assert {p: p.stat().st_mtime_ns for p in (out / "online").glob("year_*.json")} == stamps


def test_criterion_is_within_20_percent_of_the_offline_rmse() -> None:
    from mlbridge_models.bias.online import criterion

    row = criterion({"u": 1.2, "v": 1.3}, {"u": 1.0, "v": 1.0})
    assert row["fields"]["u"]["within"] and not row["fields"]["v"]["within"]
    assert row["fields"]["v"]["online_vs_offline"] == pytest.approx(0.3)
    assert not row["met"]
    assert criterion({"u": 0.5}, {"u": 1.0})["met"]


def test_online_stage_needs_a_spin_up_year(tmp_path: Path) -> None:
    from mlbridge_models.bias.online import run_online
    from mlbridge_models.bias.twin import TwinSettings
    from mlbridge_models.subgrid.truth import TruthError

    with pytest.raises(TruthError, match=re.escape("--spinup-years >= 1")):
        run_online(tmp_path, TwinSettings(spinup_years=0))
