"""Several exchanges in one run, each on its own ``every`` and ``lag``, and two closures adding
into one model field (``combine = "add"``).

The model exchanges its fields on the finest schedule (``model_schedule``: the greatest common
divisor of the exchanges' ``every``, lag 0 as soon as one exchange has lag 0); the servers run
each closure on its own due steps and answer with the outputs each exchange's lag says the model
uses. The toy writes the tendencies it used (``u_tend``, ``v_tend``) next to the state, so every
step is checked against the closures applied offline, in sequence, to the model's own output.
The pure tests check the schedule arithmetic, the configuration and the handshake checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_coupling_toy import (
    closure_global,
    config_for,
    exchange,
    make_case,
    output,
    run,
)

from bridge.config.coupling import (
    ConfigError,
    CouplingConfig,
    ExchangeConfig,
    applied_step,
    model_schedule,
)
from bridge.domain.plan import Box
from bridge.launch.checks import check_exchange_fields, find_problems
from bridge.protocol.handshake import FieldDecl, RankReport, check_reports, check_restart

# --------------------------------------------------------------------------------------------
# pure: the schedule arithmetic, the configuration, the handshake
# --------------------------------------------------------------------------------------------


def ex(every: int, lag: int, **kw: object) -> ExchangeConfig:
    return ExchangeConfig("laplacian", {"u": "u"}, {"lap_u": "u_tend"}, every=every, lag=lag, **kw)  # type: ignore[arg-type]


def test_model_schedule_is_the_finest() -> None:
    assert model_schedule([]) == (1, 0)
    assert model_schedule([ex(3, 1)]) == (3, 1)
    assert model_schedule([ex(1, 1), ex(3, 0)]) == (1, 0)
    assert model_schedule([ex(4, 1), ex(6, 1)]) == (2, 1)
    assert model_schedule([ex(6, 0), ex(4, 1)]) == (2, 0)


def test_applied_step() -> None:
    # lag 0, every 3 from step 1: steps 1..3 use step 1, 4..6 step 4
    assert [applied_step(ex(3, 0), s, 1) for s in range(1, 8)] == [1, 1, 1, 4, 4, 4, 7]
    # lag 1, every 1: step s uses step s - 1; step 1 uses nothing (< origin: zeros)
    assert [applied_step(ex(1, 1), s, 1) for s in range(1, 5)] == [0, 1, 2, 3]
    # lag 1, every 3: steps 4..6 use step 1, 1..3 nothing
    assert [applied_step(ex(3, 1), s, 1) for s in range(1, 8)] == [-2, -2, -2, 1, 1, 1, 4]


def toml_dict(exchanges: list[dict[str, object]]) -> dict[str, object]:
    return {
        "model": {"executable": "toy_nemo", "ranks": 1, "namelist_cfg": "namelist_cfg"},
        "exchange": exchanges,
    }


def test_two_closures_into_one_field_refused_unless_both_add(tmp_path: Path) -> None:
    lap = {"closure": "laplacian", "inputs": {"u": "u"}, "outputs": {"lap_u": "u_tend"}}
    smo = {"closure": "smooth3", "inputs": {"u": "u"}, "outputs": {"smooth_u": "u_tend"}}
    with pytest.raises(ConfigError) as err:
        CouplingConfig.from_dict(toml_dict([lap, smo]), base_dir=tmp_path)
    text = str(err.value)
    assert "exchange[1].outputs.smooth_u" in text and "'u_tend'" in text
    assert 'combine = "add"' in text
    with pytest.raises(ConfigError, match="exchange\\[1\\].outputs.smooth_u"):
        CouplingConfig.from_dict(toml_dict([{**lap, "combine": "add"}, smo]), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="combine"):
        CouplingConfig.from_dict(toml_dict([{**lap, "combine": "sum"}, smo]), base_dir=tmp_path)
    config = CouplingConfig.from_dict(
        toml_dict([{**lap, "combine": "add"}, {**smo, "combine": "add"}]), base_dir=tmp_path
    )
    assert [e.combine for e in config.exchanges] == ["add", "add"]
    again = CouplingConfig.from_dict(json.loads(json.dumps(config.to_dict())), base_dir=tmp_path)
    assert again.exchanges == config.exchanges


def test_oasis_refuses_several_schedules(tmp_path: Path) -> None:
    data = toml_dict(
        [
            {"closure": "laplacian", "inputs": {"u": "u"}, "outputs": {"lap_u": "u_tend"}},
            {
                "closure": "smooth3",
                "inputs": {"v": "v"},
                "outputs": {"smooth_v": "v_tend"},
                "every": 3,
            },
        ]
    )
    with pytest.raises(ConfigError, match="exchange\\[1\\] every 3 lag 0"):
        CouplingConfig.from_dict({**data, "transport": "oasis"}, base_dir=tmp_path)


def reports(every: int) -> list[RankReport]:
    fields = tuple(
        FieldDecl(n, 3, d, every, "float64") for n, d in (("u", "send"), ("v", "send"))
    ) + tuple(FieldDecl(n, 3, "recv", every, "float64") for n in ("u_tend", "v_tend"))
    return [RankReport(0, 8, 8, Box(0, 8, 0, 8), False, fields)]


def test_handshake_checks_the_model_schedule() -> None:
    lap = ExchangeConfig("laplacian", {"u": "u"}, {"lap_u": "u_tend"}, every=2, lag=1)
    smo = ExchangeConfig("smooth3", {"u": "v"}, {"smooth_u": "v_tend"}, every=6, lag=0)
    assert check_reports(reports(2), [lap, smo], {}) == []
    problems = check_reports(reports(6), [lap, smo], {})
    assert any("declared every 6" in p and "need every 2" in p for p in problems), problems
    both = ExchangeConfig("smooth3", {"u": "v"}, {"smooth_u": "u_tend"}, every=6, combine="add")
    problems = check_reports(reports(2), [lap, both], {})
    assert any("produced by two exchanges" in p for p in problems), problems
    lap_add = ExchangeConfig(
        "laplacian", {"u": "u"}, {"lap_u": "u_tend"}, every=2, lag=1, combine="add"
    )
    assert check_reports(reports(2), [lap_add, both], {}) == []
    restarted = [RankReport(**{**reports(2)[0].__dict__, "restart_origin": 1})]
    problems = check_restart(restarted, [lap, smo], {}, "mpi")
    assert len(problems) == 1 and "own schedules" in problems[0], problems


# --------------------------------------------------------------------------------------------
# the toy under mpirun
# --------------------------------------------------------------------------------------------


def state_at(out: dict[str, np.ndarray], name: str, kt: int) -> np.ndarray:
    """The field the model sends at step ``kt``: its state after step kt - 1 (rest at kt = 1)."""
    if kt == 1:
        return np.zeros_like(out[name][0])
    return out[name][kt - 2]


def expected_tend(
    out: dict[str, np.ndarray], closure: str, field: str, kt: int, every: int, lag: int
) -> np.ndarray:
    """What the model uses at step ``kt`` from ``closure`` on ``field`` (origin step 1)."""
    due = 1 + ((kt - lag * every - 1) // every) * every
    if due < 1:
        return np.zeros_like(out[field][0])
    return closure_global(closure, state_at(out, field, due))


def timing(result: object) -> dict[str, object]:
    return json.loads((result.run_dir / "timing.json").read_text())  # type: ignore[attr-defined]


@pytest.mark.usefixtures("fortran_build")
@pytest.mark.parametrize(
    ("u_schedule", "v_schedule", "n", "m"),
    [
        ((1, 1), (3, 0), 2, 2),  # the issue's pattern: every step lag 1 + every 3 lag 0
        ((1, 1), (3, 0), 1, 3),
        ((2, 1), (3, 0), 2, 1),  # lag 1 every 2 under a model exchanging every step, lag 0
        ((4, 1), (2, 0), 4, 2),  # the model every 2, lag 0
        ((2, 1), (4, 1), 2, 2),  # both lag 1: the model every 2 with lag 1
    ],
    ids=["1l1-3l0-N2M2", "1l1-3l0-N1M3", "2l1-3l0-N2M1", "4l1-2l0-N4M2", "2l1-4l1-N2M2"],
)
def test_two_schedules_equal_closures_in_sequence(
    tmp_path: Path,
    u_schedule: tuple[int, int],
    v_schedule: tuple[int, int],
    n: int,
    m: int,
) -> None:
    """laplacian on u and smooth3 on v, each on its own (every, lag): every step of the model
    equals the closures applied offline, in sequence, to the model's own fields."""
    steps = 12
    exchanges = [
        exchange("laplacian", ("u",), every=u_schedule[0], lag=u_schedule[1]),
        exchange("smooth3", ("v",), every=v_schedule[0], lag=v_schedule[1]),
    ]
    every, lag = model_schedule(
        [ExchangeConfig("x", {}, {}, every=e, lag=g) for e, g in (u_schedule, v_schedule)]
    )
    case = make_case(tmp_path, steps=steps, nammlb={"nn_mlb_every": every})
    result = run(config_for(case, n, m, exchanges))
    out = output(result)
    assert np.abs(out["u_tend"]).max() > 0 and np.abs(out["v_tend"]).max() > 0
    for kt in range(1, steps + 1):
        want_u = expected_tend(out, "laplacian", "u", kt, *u_schedule)
        want_v = expected_tend(out, "smooth3", "v", kt, *v_schedule)
        assert np.array_equal(out["u_tend"][kt - 1], want_u), f"u_tend at step {kt}"
        assert np.array_equal(out["v_tend"][kt - 1], want_v), f"v_tend at step {kt}"
    # each output held between its own due steps, changed at them
    e_v = v_schedule[0]
    assert np.array_equal(out["v_tend"][e_v], out["v_tend"][2 * e_v - 1])
    assert not np.array_equal(out["v_tend"][2 * e_v - 1], out["v_tend"][2 * e_v])
    per = timing(result)["per_exchange"]
    assert per["laplacian"]["steps"] == list(range(1, steps + 1, u_schedule[0]))  # type: ignore[index]
    assert per["smooth3"]["steps"] == list(range(1, steps + 1, e_v))  # type: ignore[index]
    assert (per["smooth3"]["every"], per["smooth3"]["lag"]) == v_schedule  # type: ignore[index]
    assert per["laplacian"]["inference_s"] > 0  # type: ignore[index]
    assert (timing(result)["every"], timing(result)["lag"]) == (every, lag)


@pytest.mark.usefixtures("fortran_build")
def test_two_closures_add_into_one_field(tmp_path: Path) -> None:
    """laplacian (every 1, lag 0) and smooth3 (every 2, lag 0) both into u_tend, added."""
    steps = 6
    lap = exchange("laplacian", ("u",), combine="add")
    smo = exchange("smooth3", ("u",), every=2, combine="add")
    result = run(config_for(make_case(tmp_path, steps=steps), 2, 2, [lap, smo]))
    out = output(result)
    for kt in range(1, steps + 1):
        want = expected_tend(out, "laplacian", "u", kt, 1, 0) + expected_tend(
            out, "smooth3", "u", kt, 2, 0
        )
        assert np.array_equal(out["u_tend"][kt - 1], want), f"u_tend at step {kt}"
    assert not out["v_tend"].any()  # nothing writes it
    assert np.abs(out["u_tend"]).max() > 0


def test_model_on_the_wrong_schedule_refused(tmp_path: Path) -> None:
    """nn_mlb_every = 3 for exchanges every 1 and 3: refused before launch, naming both."""
    case = make_case(tmp_path, steps=6, nammlb={"nn_mlb_every": 3})
    exchanges = [exchange("laplacian", ("u",)), exchange("smooth3", ("v",), every=3)]
    problems = find_problems(config_for(case, 1, 1, exchanges), checks=(check_exchange_fields,))
    text = "\n".join(problems)
    assert "exchange[0].every = 1, exchange[1].every = 3" in text, text
    assert "every 1 steps" in text and "nn_mlb_every = 3" in text, text


# --------------------------------------------------------------------------------------------
# the trained closures: subgrid CNN every step (lag 1) + bias-correction CNN every 6 (lag 0)
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
HTOT = 1000.0  # rn_htot of the toy's namelist_ref


@pytest.fixture(scope="module")
def cnn_registry(fortran_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with the committed subgrid CNN and a bias CNN trained here (a 10 x 10 twin,
    one year of truth and nudged runs, 3 epochs: seconds)."""
    from mlbridge_models.bias.twin import TwinSettings, run_all

    from bridge.registry.store import Registry

    work = tmp_path_factory.mktemp("bias")
    settings = TwinSettings(
        nx=10, ny=10, spinup_years=0, train_years=1, eval_years=1, sample_days=5.0,
        eval_days=5.0, every=60, epochs=3, hidden=(4,), kernel_sizes=(3, 3),
    )  # fmt: skip
    run_all(work, settings, stages=("truth", "nudged", "train"))
    home = work / "registry"
    registry = Registry(home)
    registry.register(None, REPO / "models" / "artifacts" / "subgrid_cnn" / "manifest.toml")
    registry.register(None, work / "model" / "manifest.toml")
    return home


def offline_closure(home: Path, ref: str, out: dict[str, np.ndarray], kt: int) -> dict:
    """The registered closure applied here to the model's fields sent at step ``kt``, on the
    whole closed basin (zero beyond the edge, the toy's land rim as the mask)."""
    from bridge.registry.store import Registry

    closure = Registry(home).load(ref, device="cpu")
    h = closure.spec.halo
    pad = ((0, 0), (h, h), (h, h))
    mask = np.zeros(out["u"].shape[2:])
    mask[1:-1, 1:-1] = 1.0
    # at rest (rn_bump = 0): u = v = 0, equal layers of rn_htot / nn_nz on the ocean points
    rest = {"h": np.broadcast_to(HTOT / out["h"].shape[1] * mask, out["h"].shape[1:])}
    inputs = {
        name: np.pad(
            rest[name] if kt == 1 and name in rest else state_at(out, name, kt), pad
        ).astype(np.float32)
        for name in closure.spec.input_names
    }
    result = closure(inputs, mask=np.pad(mask, h).astype(np.float32))
    return {k: np.asarray(v, dtype=np.float64) for k, v in result.items()}


def diff(got: np.ndarray, want: np.ndarray) -> str:
    """Where and how much ``got`` differs from ``want`` (for messages)."""
    d = np.abs(got - want)
    k, j, i = np.unravel_index(int(np.argmax(d)), d.shape)
    return (
        f"largest difference {d.max():.3g} at (k, j, i) = ({k}, {j}, {i}) of max |want| "
        f"{np.abs(want).max():.3g}; {int((d > 0).sum())} points differ"
    )


def test_subgrid_cnn_every_step_and_bias_cnn_every_6(cnn_registry: Path, tmp_path: Path) -> None:
    steps = 12
    case = make_case(
        tmp_path,
        steps=steps,
        nammlb={
            "cn_mlb_snd": ["u", "v", "h"],
            "cn_mlb_rcv": ["u_tend", "v_tend", "h_tend"],
        },
        extra={"namusr_def": {"rn_bump": 0.0, "rn_htot": HTOT}},
    )
    subgrid = {
        "closure": "subgrid-cnn",
        "inputs": {"u": "u", "v": "v"},
        "outputs": {"su": "u_tend", "sv": "v_tend"},
        "every": 1,
        "lag": 1,
        "combine": "add",
    }
    bias = {
        "closure": "bias-cnn",
        "inputs": {"u": "u", "v": "v", "h": "h"},
        "outputs": {"cu": "u_tend", "cv": "v_tend", "ch": "h_tend"},
        "every": 6,
        "lag": 0,
        "combine": "add",
    }
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": "toy_nemo", "ranks": 2, "namelist_cfg": "namelist_cfg"},
            "server": {"ranks": 1, "timeout_s": 60.0, "registry": str(cnn_registry)},
            "run": {"workdir": str(case / "runs")},
            "exchange": [subgrid, bias],
        },
        base_dir=case,
    )
    result = run(config)
    out = output(result)
    cache: dict[tuple[str, int], dict] = {}

    def used(ref: str, kt: int, every: int, lag: int) -> dict | None:
        due = 1 + ((kt - lag * every - 1) // every) * every
        if due < 1:
            return None
        if (ref, due) not in cache:
            cache[(ref, due)] = offline_closure(cnn_registry, ref, out, due)
        return cache[(ref, due)]

    zero = np.zeros_like(out["u"][0])
    for kt in range(1, steps + 1):
        sub = used("subgrid-cnn", kt, 1, 1)
        cor = used("bias-cnn", kt, 6, 0)
        assert cor is not None
        want_u = (zero if sub is None else sub["su"]) + cor["cu"]
        want_v = (zero if sub is None else sub["sv"]) + cor["cv"]
        for name, want in (("u_tend", want_u), ("v_tend", want_v), ("h_tend", cor["ch"])):
            got = out[name][kt - 1]
            assert np.array_equal(got, want), f"{name} at step {kt}: {diff(got, want)}"
    assert np.abs(out["h_tend"][6]).max() > 0 and np.abs(out["u_tend"][11]).max() > 0
    per = timing(result)["per_exchange"]
    assert per["subgrid-cnn"]["steps"] == list(range(1, steps + 1))  # type: ignore[index]
    assert per["bias-cnn"]["steps"] == [1, 7]  # type: ignore[index]


@pytest.mark.usefixtures("fortran_build")
def test_restart_with_own_schedules_refused(tmp_path: Path) -> None:
    """A restarted run with exchanges on their own schedules: the handshake refuses it (the
    held outputs of each exchange live in the server), naming both and how to start cold."""
    from test_coupling_restart import coupled_case, laplacian_run, restart_file
    from test_coupling_toy import assert_failed_fast

    first = laplacian_run(coupled_case(tmp_path / "first", 1, 1, 4), (1, 1), 0, 1)
    case = coupled_case(tmp_path / "second", 1, 5, 8, restart_file(first, 4))
    exchanges = [
        exchange("laplacian", ("u",), every=1, lag=1),
        exchange("smooth3", ("v",), every=3, lag=0),
    ]
    result = run(config_for(case, 2, 1, exchanges))
    text = assert_failed_fast(
        result,
        20.0,
        "exchanges on their own schedules ('laplacian' every 1 lag 1, 'smooth3' every 3 lag 0)",
        "ln_mlb_rst = .false.",
    )
    assert "nemo_init: initialisation done" not in text
