"""``mlbridge evaluate``: the experiments file, the year ranges, and one small end-to-end run.

The end-to-end test makes a tiny truth (fine 34 x 34, dx = 8 km, one 365-day year) with
``run_truth`` and evaluates a baseline and a hybrid with the analytic Laplacian closure (coarse
10 x 10, dx = 32 km, 2 members, one year each) against it, under real mpirun.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlbridge_models.evaluation.runs import EvalError, load_experiments, main_evaluate, parse_years

from bridge.config.namelist import write_patched_cfg

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ year ranges


@pytest.mark.parametrize(
    "text,expected", [("10-12", (10, 12)), ("11", (11, 11)), (" 3 - 4 ", (3, 4)), ("1-1", (1, 1))]
)
def test_parse_years(text: str, expected: tuple[int, int]) -> None:
    assert parse_years(text) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("12-10", "before the first"),
        ("0-3", "start at 1"),
        ("a-b", "expected FIRST-LAST"),
        ("10-", "expected FIRST-LAST"),
        ("", "expected FIRST-LAST"),
        ("1,2", "expected FIRST-LAST"),
    ],
)
def test_parse_years_refuses(text: str, message: str) -> None:
    with pytest.raises(EvalError, match=message) as err:
        parse_years(text, "--truth-years")
    assert "--truth-years" in str(err.value)


# ------------------------------------------------------------------ experiments file


def _toml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.toml").write_text("transport = 'mpi'\n")
    (tmp_path / "sub").mkdir(exist_ok=True)
    (tmp_path / "sub" / "b.toml").write_text("transport = 'mpi'\n")
    path = tmp_path / "eval.toml"
    path.write_text(text)
    return path


def test_load_experiments(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[[experiment]]\nname = "baseline"\nconfig = "a.toml"\n'
        '[[experiment]]\nname = "zb"\nconfig = "sub/b.toml"\n',
    )
    exps = load_experiments(path)
    assert [e.name for e in exps] == ["baseline", "zb"]
    assert exps[1].config == (tmp_path / "sub" / "b.toml").resolve()


@pytest.mark.parametrize(
    "text,messages",
    [
        ("", ["no [[experiment]] table"]),
        ("experiment = 3\n", ["array of tables"]),
        ("[[experiment]\n", ["not valid TOML"]),
        (
            '[[experiment]]\nname = "baseline"\n',
            ["experiment[0] ('baseline'): missing key 'config'"],
        ),
        ('[[experiment]]\nconfig = "a.toml"\n', ["experiment[0]: missing key 'name'"]),
        (
            '[[experiment]]\nname = "baseline"\nconfig = "nothere.toml"\n',
            ["experiment[0] ('baseline').config:", "nothere.toml not found"],
        ),
        (
            '[[experiment]]\nname = "zb"\nconfig = "a.toml"\n',
            ["no experiment named 'baseline'"],
        ),
        (
            '[[experiment]]\nname = "baseline"\nconfig = "a.toml"\n'
            '[[experiment]]\nname = "baseline"\nconfig = "a.toml"\n',
            ["experiment[1] ('baseline'): duplicate name"],
        ),
        (
            '[[experiment]]\nname = "a b/c"\nconfig = "a.toml"\n',
            ["experiment[0].name = 'a b/c'"],
        ),
        (
            '[[experiment]]\nname = "baseline"\nconfig = 3\n',
            ["experiment[0] ('baseline').config = 3: must be a path"],
        ),
        (
            'other = 1\n[[experiment]]\nname = "baseline"\nconfig = "a.toml"\ncolor = "r"\n',
            ["unknown top-level key 'other'", "experiment[0] ('baseline'): unknown key 'color'"],
        ),
    ],
)
def test_load_experiments_errors(tmp_path: Path, text: str, messages: list[str]) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(EvalError) as err:
        load_experiments(path)
    assert str(path) in str(err.value)
    for message in messages:
        assert message in str(err.value)


def test_load_experiments_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="experiments file not found"):
        load_experiments(tmp_path / "none.toml")


# ------------------------------------------------------------------ end to end

TOML = """transport = "mpi"
[model]
executable = "toy_nemo"
ranks = 1
namelist_cfg = "namelist_cfg"
namelist_ref = ""
[server]
ranks = 1
device = "cpu"
threads = 1
timeout_s = 60.0
[run]
workdir = "runs"
"""

LAPLACIAN = """
[[exchange]]
closure = "laplacian"
inputs = { u = "u", v = "v" }
outputs = { lap_u = "u_tend", lap_v = "v_tend" }
params = { coefficient = 1.0e-6 }
every = 60
lag = 0
on_nan = "abort"
"""


def _config(folder: Path, src: str, patch: dict, extra: str = "") -> Path:
    folder.mkdir(parents=True)
    write_patched_cfg(REPO / src, patch, folder / "namelist_cfg")
    (folder / "coupling.toml").write_text(TOML + extra)
    return folder / "coupling.toml"


def test_evaluate_end_to_end(toy_exe: Path, tmp_path: Path) -> None:
    from mlbridge_models.subgrid.truth import run_truth

    fine = _config(
        tmp_path / "fine",
        "examples/02_fine/namelist_cfg",
        {"namusr_def": {"nn_nx": 34, "nn_ny": 34, "rn_bump": 20.0}},
    )
    run_truth(fine, tmp_path / "truth", 1, write_days=5)
    coarse = {"namusr_def": {"nn_nx": 10, "nn_ny": 10}}
    _config(tmp_path / "exp" / "base", "examples/01_coarse/namelist_cfg", coarse)
    _config(
        tmp_path / "exp" / "lap",
        "examples/03_coupled_laplacian/namelist_cfg",
        coarse | {"namrun": {"cn_exp": "LAP"}, "nammlb": {"nn_mlb_every": 60}},
        LAPLACIAN,
    )
    exps = tmp_path / "exp" / "eval.toml"
    exps.write_text(
        '[[experiment]]\nname = "baseline"\nconfig = "base/coupling.toml"\n'
        '[[experiment]]\nname = "lap"\nconfig = "lap/coupling.toml"\n'
    )
    out = tmp_path / "eval"
    settings = dict(members=2, years=1, eval_years="1", bump=5.0, block_days=73.0, n_boot=20)
    main_evaluate(tmp_path / "truth", "1", exps, out, fine_stride=2, **settings)

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["experiments"]) == {"baseline", "lap"}
    base, lap = metrics["experiments"]["baseline"], metrics["experiments"]["lap"]
    assert base["scores"] == {k: [0.0, 0.0] for k in ("ke_spectrum", "u", "v", "ke", "enstrophy")}
    for key, ci in lap["scores_ci95"].items():  # per layer: low <= high
        assert len(ci) == 2 and all(lo <= hi for lo, hi in ci), key
    assert len(lap["per_member"]) == 2 and lap["per_member"][0]["member"] == 1
    assert set(lap["fine_truth"]["scores"]) == set(lap["scores"])
    assert set(metrics["truth"]["noise_floor"]) == set(lap["scores"])
    assert base["members_used"] == lap["members_used"] == [1, 2]
    assert base["records"] == 2 * 73  # 2 members x 73 records of 5 days
    assert metrics["truth"]["records"] == 73

    def numbers(x):  # noqa: ANN001, ANN202
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x] if isinstance(x, int | float) and not isinstance(x, bool) else []

    values = numbers(metrics["experiments"]) + numbers(metrics["truth"])
    assert values and all(math.isfinite(v) for v in values)
    assert lap["scores"]["ke_spectrum"][0] != 0.0  # the closure changed the flow
    assert len(metrics["stability"]) == 4
    for st in metrics["stability"]:
        assert st["ok"] and not st["any_nan"]
        assert math.isfinite(st["max_ke"]) and st["max_over_eval_mean"] >= 1.0
    table = (out / "table.md").read_text()
    assert "| baseline | 2 |" in table and "| lap | 2 |" in table
    for name in ("ke_time_mean", "ke_spectra", "pdfs", "ke_series", "interface_maps", "snapshots"):
        png = out / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000, name

    # resumable: a second call runs nothing and gives the same numbers
    main_evaluate(tmp_path / "truth", "1", exps, out, fine_stride=2, **settings)
    again = json.loads((out / "metrics.json").read_text())
    assert again["experiments"] == metrics["experiments"]

    # the committed-summary form of the same coarse-grained truth (make demo's reference)
    from mlbridge_models.evaluation import reference
    from mlbridge_models.evaluation.runs import read_flow
    from mlbridge_models.subgrid.truth import grid_files

    like = grid_files(out / "baseline" / "member_1", 1, 1)[0]
    reference.build(tmp_path / "truth", "1", like, tmp_path / "ref")
    ref = reference.load(tmp_path / "ref")
    assert ref.ke_series.shape == (73, 2) and ref.snapshot.u.shape[-2:] == (10, 10)
    flow, _ = read_flow([like])
    c = reference.compare(flow, ref)
    assert c["ke_error"] > 0 and (c["spectrum_distance"] > 0).all()


def test_the_example_experiments_file_loads() -> None:
    """``examples/09_evaluate/eval.toml`` (``make evaluate``) names existing coupling.toml files."""
    repo = Path(__file__).resolve().parents[1]
    experiments = load_experiments(repo / "examples" / "09_evaluate" / "eval.toml")
    assert [e.name for e in experiments] == ["baseline", "zb", "cnn", "backscatter", "zb_filtered"]
    assert all(e.config.is_file() for e in experiments)


def test_set_entries_become_a_namelist_patch_for_every_member() -> None:
    from mlbridge_models.evaluation.runs import _member_patch, parse_set

    patch = parse_set(
        ["namusr_def.rn_bhm=1.5e11", "NAMUSR_DEF.nn_nz=3", "namnudge.ln_nudge=.false."]
    )
    assert patch == {
        "namusr_def": {"rn_bhm": 1.5e11, "nn_nz": 3},
        "namnudge": {"ln_nudge": False},
    }
    assert isinstance(patch["namusr_def"]["nn_nz"], int)
    member = _member_patch(patch, 2.0)
    assert member["namusr_def"] == {"rn_bhm": 1.5e11, "nn_nz": 3, "rn_bump": 2.0}
    assert "rn_bump" not in patch["namusr_def"], "the shared patch was changed"
    with pytest.raises(EvalError, match="block.entry=value"):
        parse_set(["rn_bhm=1e11"])
    with pytest.raises(EvalError, match="tells the members apart"):
        parse_set(["namusr_def.rn_bump=3"])
