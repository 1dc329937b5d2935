"""Online training through the bridge (``train = {...}`` of an exchange, docs/online_learning.md).

The coupled tests run ``examples/11_online_learning``: the toy nudged toward the rest state sends
``u, v`` and its nudging tendency ``u_nud, v_nud``, which is exactly ``-(u, v) / (tau - dt)``
(module ``nudging`` of the toy); the servers learn it from zero weights with a pointwise linear
network whose normalisation makes the exact answer the weight matrix ``-I``. The unit tests
train the same network on synthetic blocks in this process, without MPI.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.config.coupling import ConfigError, CouplingConfig, ExchangeConfig, TrainConfig
from bridge.domain.plan import Box
from bridge.launch.launcher import RunResult, launch
from bridge.registry.manifest import parse_manifest
from bridge.server.engine import Block
from bridge.server.training import (
    Learner,
    OnlineClosure,
    TrainingError,
    make_online_closures,
    training_figures,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "11_online_learning"
sys.path.insert(0, str(EXAMPLE))
import make_case  # noqa: E402  (the example's own script: its manifest and truth)

MODEL = {"kind": "generic", "executable": "x", "nx": 8, "ny": 8}


def exchange(train: dict) -> dict:
    return {
        "closure": "lin-online@1",
        "inputs": {"u": "u", "v": "v"},
        "outputs": {"su": "u_tend", "sv": "v_tend"},
        "train": train,
    }


# --- the train table --------------------------------------------------------------------------


def test_train_table_is_read_and_round_trips() -> None:
    table = {"target": {"su": "u_nud", "sv": "v_nud"}, "lr": 0.01, "batch": 2, "budget_s": 0.5}
    config = CouplingConfig.from_dict({"model": MODEL, "exchange": [exchange(table)]})
    train = config.exchanges[0].train
    assert train == TrainConfig(
        target={"su": "u_nud", "sv": "v_nud"}, lr=0.01, batch=2, budget_s=0.5
    )
    again = CouplingConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.exchanges[0] == config.exchanges[0]
    one = dict(exchange({"target": "u_nud"}), outputs={"su": "u_tend"})
    single = CouplingConfig.from_dict({"model": MODEL, "exchange": [one]})
    assert single.exchanges[0].train.target == {"su": "u_nud"}
    assert single.exchanges[0].train.budget_s == math.inf


def test_train_table_problems_are_named() -> None:
    bad = {
        "target": {"su": "u_nud", "sx": "v_nud"},
        "batch": 0,
        "optimizer": "lbfgs",
        "lr": -1.0,
        "epochs": 3,
    }
    with pytest.raises(ConfigError) as err:
        CouplingConfig.from_dict({"model": MODEL, "exchange": [exchange(bad)]})
    text = str(err.value)
    for expected in (
        "exchange[0].train.epochs: unknown key",
        "exchange[0].train.batch = 0: expected an integer >= 1",
        'exchange[0].train.optimizer = "lbfgs": expected one of "adam", "sgd"',
        "exchange[0].train.lr = -1.0: expected a number > 0",
        'exchange[0].train.target.sx = "v_nud": not a closure output of this exchange',
    ):
        assert expected in text, text
    for target, words in (
        ("u_nud", "one target for 2 closure outputs"),
        ({"su": "u_tend", "sv": "v_nud"}, "a field the model receives cannot be a target"),
    ):
        with pytest.raises(ConfigError, match=words):
            CouplingConfig.from_dict({"model": MODEL, "exchange": [exchange({"target": target})]})


# --- the learner, in this process -------------------------------------------------------------


def linear_closure(tmp_path: Path) -> OnlineClosure:
    """The example's zero-weight linear network as an online closure."""
    import torch
    from mlbridge_models.cnn import build_cnn

    manifest = parse_manifest(make_case.write_closure(tmp_path).read_text())
    module = build_cnn(in_channels=2, out_channels=2, hidden=(), kernel_sizes=(1,))
    module.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    return OnlineClosure(module, manifest, "cpu")


def test_learner_fits_a_known_linear_map_on_ocean_points_only(tmp_path: Path) -> None:
    """Targets ``A @ (u, v)`` on the ocean, garbage on land: the learner finds ``A``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a server rank (threads = 1); tiny tensors, no thread start-up
    try:
        _fit_linear_map(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _fit_linear_map(tmp_path: Path) -> None:
    closure = linear_closure(tmp_path)
    ny, nx, nz = 6, 7, 2
    mask = np.ones((1, ny, nx))
    mask[0, 0, :] = 0.0  # a land row: its targets must not count
    box = Box(0, nx, 0, ny)
    block = Block(0, box, 0, mask, (box,))
    a = np.array([[0.5, -2.0], [1.5, 0.25]])
    train = TrainConfig(
        target={"su": "u_nud", "sv": "v_nud"}, lr=0.05, batch=4, buffer=16, steps_per_exchange=4
    )
    learner = Learner(ExchangeConfig("lin", {}, {"su": "u_tend", "sv": "v_tend"}, train=train),
                      closure, block)  # fmt: skip
    s_in, s_out = closure.in_norm[0][1], closure.out_norm[0][1]
    rng = np.random.default_rng(1)
    for kt in range(1, 61):
        u, v = (rng.normal(size=(nz, ny, nx)) * s_in for _ in range(2))
        closure({"u": u, "v": v}, mask=mask[0])
        su = (a[0, 0] * u + a[0, 1] * v) * s_out / s_in
        sv = (a[1, 0] * u + a[1, 1] * v) * s_out / s_in
        su[:, 0, :] = sv[:, 0, :] = 1.0e3  # land
        learner.after_exchange(kt, {"u": u, "v": v, "u_nud": su, "v_nud": sv}, ran=True)
    # the network, its optimizer and the buffer live on the server's device (cuda:N on a GPU)
    assert {str(x.inputs.device) for x in learner.buffer} == {"cpu"} == {str(closure.device)}
    weight = closure.module.layers[0].weight.detach().numpy()[:, :, 0, 0]
    np.testing.assert_allclose(weight, a, atol=1e-3)
    figures = training_figures([{"lin": learner.summary()}])["lin"]
    assert figures["optimizer_steps"] == 240
    assert figures["loss_last"] < 1e-6 < figures["loss_first"]


def test_target_plus_output_learns_the_total_increment(tmp_path: Path) -> None:
    """The model sends the error its correction left, ``A x - c`` (``c``: the closure output it
    applied): with ``target_plus_output`` the learner adds ``c`` back and finds ``A`` (also with
    an output offset); learning the field alone chases a moving target and does not. The held
    output survives a save/load of the training state; the option is read from the table."""
    import torch

    text = make_case.write_closure(tmp_path).read_text()
    offset = text.replace('name = "sv"\n', 'name = "sv"\noffset = 1.0e-6\n')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = {}
        for case, manifest_text, plus in (
            ("total", text, True),
            ("offset", offset, True),
            ("residual", text, False),
        ):
            found[case] = _fit_total_increment(tmp_path / case, manifest_text, plus)
    finally:
        torch.set_num_threads(threads)
    a = np.array([[0.5, -2.0], [1.5, 0.25]])
    np.testing.assert_allclose(found["total"], a, atol=2e-3)
    np.testing.assert_allclose(found["offset"], a, atol=2e-3)
    assert np.max(np.abs(found["residual"] - a)) > 0.2, found["residual"]
    table = {"target": {"su": "u_nud", "sv": "v_nud"}, "target_plus_output": True}
    config = CouplingConfig.from_dict({"model": MODEL, "exchange": [exchange(table)]})
    assert config.exchanges[0].train.target_plus_output is True
    with pytest.raises(ConfigError, match=r"exchange\[0\]\.train\.target_plus_output"):
        table["target_plus_output"] = "yes"
        CouplingConfig.from_dict({"model": MODEL, "exchange": [exchange(table)]})


def _fit_total_increment(folder: Path, manifest_text: str, plus: bool) -> np.ndarray:
    import torch
    from mlbridge_models.cnn import build_cnn

    folder.mkdir()
    manifest = parse_manifest(manifest_text)
    module = build_cnn(in_channels=2, out_channels=2, hidden=(), kernel_sizes=(1,))
    with torch.no_grad():
        for w in module.parameters():
            w.zero_()
    closure = OnlineClosure(module, manifest, "cpu")
    ny, nx, nz = 5, 6, 2
    mask = np.ones((1, ny, nx))
    box = Box(0, nx, 0, ny)
    block = Block(0, box, 0, mask, (box,))
    a = np.array([[0.5, -2.0], [1.5, 0.25]])
    train = TrainConfig(target={"su": "u_nud", "sv": "v_nud"}, lr=0.05, batch=4, buffer=16,
                        steps_per_exchange=4, target_plus_output=plus)  # fmt: skip
    ex = ExchangeConfig("lin", {}, {"su": "u_tend", "sv": "v_tend"}, train=train)
    learner = Learner(ex, closure, block)
    s_in, s_out = closure.in_norm[0][1], closure.out_norm[0][1]
    rng = np.random.default_rng(2)
    applied = {"su": np.zeros((nz, ny, nx)), "sv": np.zeros((nz, ny, nx))}
    for kt in range(1, 81):
        u, v = (rng.normal(size=(nz, ny, nx)) * s_in for _ in range(2))
        out = closure({"u": u, "v": v}, mask=mask[0])
        # the error the correction applied before this exchange left
        su = (a[0, 0] * u + a[0, 1] * v) * s_out / s_in - applied["su"]
        sv = (a[1, 0] * u + a[1, 1] * v) * s_out / s_in - applied["sv"]
        learner.after_exchange(kt, {"u": u, "v": v, "u_nud": su, "v_nud": sv}, ran=True)
        applied = out
    if plus:
        state = folder / "state.pt"
        learner.save_state(state)
        again = Learner(ex, closure, block)
        again.load_state(state)
        held = again.applied_output()
        assert held is not None
        torch.testing.assert_close(held, learner.applied_output())
    return closure.module.layers[0].weight.detach().numpy()[:, :, 0, 0].copy()


def test_budget_bounds_the_training_after_an_exchange(tmp_path: Path) -> None:
    """No optimizer step starts once the budget would be passed; without one, all are taken."""
    closure = linear_closure(tmp_path)
    box = Box(0, 4, 0, 3)
    block = Block(0, box, 0, np.ones((1, 3, 4)), (box,))
    counts = {}
    for budget in (1e-9, math.inf):
        train = TrainConfig(target={"su": "a", "sv": "b"}, steps_per_exchange=3, budget_s=budget)
        ex = ExchangeConfig("lin", {}, {"su": "u_tend", "sv": "v_tend"}, train=train)
        learner = Learner(ex, closure, block)
        for kt in (1, 2):
            fields = {n: np.ones((2, 3, 4)) for n in ("u", "v", "a", "b")}
            closure({"u": fields["u"], "v": fields["v"]})
            learner.after_exchange(kt, fields, ran=True)
        counts[budget] = learner.record.optimizer_steps
    assert counts == {1e-9: [0, 0], math.inf: [3, 3]}


def test_untrainable_closure_is_refused_naming_the_exchange() -> None:
    from bridge.closures.analytic import analytic_closure

    ex = ExchangeConfig("laplacian", {"u": "u"}, {"lap_u": "u_tend"}, name="lap",
                        train=TrainConfig(target={"lap_u": "u"}))  # fmt: skip
    closures = {"lap": analytic_closure("laplacian", ("u",), {})}
    with pytest.raises(TrainingError, match="exchange 'lap': train needs a registry closure"):
        make_online_closures([ex], closures, {}, "cpu")


# --- through the real toy under mpirun --------------------------------------------------------


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, fortran_build: Path) -> Path:
    """A copy of the example with its truth and registry made by its own script."""
    dest = tmp_path_factory.mktemp("online") / "case"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("registry", "closure", "runs"))
    proc = subprocess.run(
        [sys.executable, str(dest / "make_case.py"), "--home", str(dest / "registry"),
         "--out", str(dest / "closure"), "--truth", str(dest / "truth_rest.nc")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "registered lin-online@1" in proc.stdout
    return dest


def run_case(case: Path, server_ranks: int) -> RunResult:
    result = launch(
        case / "coupling.toml", workdir=case / "runs", quiet=True, server_ranks=server_ranks
    )
    assert result.ok, f"{result.problems}\n" + (result.run_dir / "mpirun.log").read_text()[-3000:]
    return result


def learned(run_dir: Path) -> dict[str, np.ndarray]:
    import torch

    state = torch.load(run_dir / "online" / "lin-online.pt", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


@pytest.fixture(scope="module")
def one_server(case: Path) -> RunResult:
    return run_case(case, 1)


def test_example_learns_the_nudging_tendency(one_server: RunResult) -> None:
    weights = learned(one_server.run_dir)
    np.testing.assert_allclose(weights["layers.0.weight"][:, :, 0, 0], -np.eye(2), atol=1e-3)
    np.testing.assert_allclose(weights["layers.0.bias"], 0.0, atol=1e-4)
    timing = json.loads((one_server.run_dir / "timing.json").read_text())
    figures = timing["training"]["lin-online"]
    assert figures["exchanges"] == 60
    assert figures["optimizer_steps"] == 60 * 4
    assert figures["loss_last"] < 1e-6 < max(v for v in figures["loss"] if v is not None)
    assert 0 < figures["train_per_exchange_median_s"] <= figures["train_per_exchange_max_s"]
    assert figures["exchange_interval_median_s"] > figures["train_per_exchange_median_s"]


@pytest.fixture(scope="module")
def sgd_case(case: Path) -> Path:
    """The example with plain SGD: Adam's first steps are about lr * sign(gradient), so the
    round-off of a gradient that is nearly zero (the bias here) would become a difference of
    lr in the weights; SGD keeps a round-off difference a round-off difference."""
    dest = case.parent / "sgd"
    shutil.copytree(case, dest, ignore=shutil.ignore_patterns("runs"))
    toml = dest / "coupling.toml"
    text = toml.read_text()
    assert 'optimizer = "adam"\nlr = 0.05' in text
    toml.write_text(text.replace('optimizer = "adam"\nlr = 0.05', 'optimizer = "sgd"\nlr = 0.5'))
    return dest


def test_versions_are_registered_with_their_provenance(case: Path, one_server: RunResult) -> None:
    from bridge.registry.store import Registry

    registry = Registry(case / "registry")
    assert registry.versions("lin-online") == ["1", "2", "3", "4"]
    timing = json.loads((one_server.run_dir / "timing.json").read_text())
    assert timing["training"]["lin-online"]["versions"] == [f"lin-online@{v}" for v in "234"]
    for version, last in (("2", 20), ("4", 60)):
        provenance = registry.show(f"lin-online@{version}").manifest.provenance
        assert f"model steps 1 to {last} ({last} exchanges" in provenance.training_data
        assert str(one_server.run_dir) in provenance.training_data
        assert "started from lin-online@1; adam lr 0.05" in provenance.notes
        assert provenance.metrics["exchanges_trained"] == last
    metrics = registry.show("lin-online@4").manifest.provenance.metrics
    assert metrics["held_out_mse"] < 1e-6  # on the 10 exchanges never trained on
    assert (
        registry.show("lin-online@2").manifest.provenance.metrics["held_out_mse"]
        > 10 * metrics["held_out_mse"]
    )
    closure = registry.load("lin-online@4", device="cpu")  # hash checked: a later run starts here
    weight = closure.module.layers[0].weight.detach().numpy()[:, :, 0, 0]
    np.testing.assert_allclose(weight, -np.eye(2), atol=1e-3)


def test_two_servers_train_the_same_weights_as_one(sgd_case: Path) -> None:
    one, two = run_case(sgd_case, 1), run_case(sgd_case, 2)
    one_w, two_w = learned(one.run_dir), learned(two.run_dir)
    assert np.abs(one_w["layers.0.weight"]).max() > 0.1  # it learned something
    for key, value in one_w.items():
        np.testing.assert_allclose(two_w[key], value, rtol=0, atol=1e-5, err_msg=key)
    losses = [json.loads((r.run_dir / "timing.json").read_text())["training"]["lin-online"]["loss"]
              for r in (one, two)]  # fmt: skip
    np.testing.assert_allclose(
        [v or 0.0 for v in losses[1]], [v or 0.0 for v in losses[0]], rtol=1e-4, atol=1e-12
    )


SWAP_TOML = """\
transport = "mpi"

[model]
executable = "toy_nemo"
ranks = 1
namelist_cfg = "namelist_cfg"
stage = ["truth_rest.nc"]

[server]
ranks = 1
device = "cpu"
registry = "registry"

[diagnostics]
netcdf = true
fields = ["u", "u_tend"]

[[exchange]]
closure = "lin-online@1"
inputs = { u = "u", v = "v" }
outputs = { su = "u_tend", sv = "v_tend" }
swap = [{ step = 31, closure = "lin-online@4" }]
"""


def test_hot_swap_changes_the_outputs_exactly_from_its_step(
    case: Path, one_server: RunResult
) -> None:
    """From zero weights to the version learned online (lin-online@4) at step 31."""
    import xarray as xr

    (case / "swap.toml").write_text(SWAP_TOML)
    result = launch(case / "swap.toml", workdir=case / "runs", quiet=True)
    assert result.ok, result.problems
    log = (result.run_dir / "mpirun.log").read_text()
    assert "exchange 'lin-online' swapped to lin-online@4 at step 31" in log
    with xr.open_dataset(result.run_dir / "diagnostics.nc") as ds:
        kt = ds["kt"].values
        u, tend = ds["u"].values, ds["u_tend"].values
    before, after = kt < 31, kt >= 31
    assert before.sum() == 30 and after.sum() == 30
    assert np.all(tend[before] == 0.0)
    assert np.all(np.abs(tend[kt == 31]).max() > 0)
    exact = -u[after] / (make_case.TAU - make_case.DT)  # what lin-online@4 learned
    scale = np.abs(exact).max()
    assert scale > 0
    assert np.abs(tend[after] - exact).max() <= 2e-3 * scale


def test_bad_swap_is_refused_before_the_first_step(case: Path) -> None:
    text = SWAP_TOML.replace('closure = "lin-online@4"', 'closure = "lin-online@99"')
    (case / "bad_swap.toml").write_text(text)
    result = launch(case / "bad_swap.toml", workdir=case / "runs", quiet=True)
    assert not result.ok
    report = "\n".join(result.problems)
    assert "exchange 'lin-online': swap at step 31" in report and "lin-online@99" in report
    assert not (result.run_dir / "diagnostics.nc").exists()


def test_restarted_run_trains_as_if_uninterrupted(case: Path, one_server: RunResult) -> None:
    """Steps 1-30, then 31-60 from the model's restart and the servers' training state: the
    same weights and losses as steps 1-60 in one go, bit for bit (same machine and threads)."""
    dest = case.parent / "restart"
    shutil.copytree(case, dest, ignore=shutil.ignore_patterns("runs"))
    nml = (dest / "namelist_cfg").read_text()
    first_nml = nml.replace("nn_itend    =      60", "nn_itend    =      30").replace(
        "nn_stock    =       0", "nn_stock    =      30"
    )
    assert first_nml.count("30") >= 2
    (dest / "namelist_cfg").write_text(first_nml)
    first = launch(dest / "coupling.toml", workdir=dest / "runs", quiet=True)
    assert first.ok, first.problems
    state = first.run_dir / "online" / "state" / "lin-online_00000030_r0.pt"
    assert state.is_file()
    restart = first.run_dir / "ONLINE_00000030_restart.nc"
    (dest / "namelist_cfg").write_text(
        nml.replace("nn_it000    =       1", "nn_it000    =      31").replace(
            "nn_stock    =       0",
            f'nn_stock    =       0\n   ln_rstart = .true.\n   cn_ocerst_in = "{restart}"',
        )
    )
    toml = dest / "coupling.toml"
    text = toml.read_text()
    resume = f'save_as = "lin-online"\nresume = "{first.run_dir / "online"}"'
    toml.write_text(text.replace('save_as = "lin-online"', resume))
    second = launch(toml, workdir=dest / "runs", quiet=True)
    assert second.ok, second.problems
    whole, resumed = learned(one_server.run_dir), learned(second.run_dir)
    for key, value in whole.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    loss = [json.loads((r.run_dir / "timing.json").read_text())["training"]["lin-online"]["loss"]
            for r in (one_server, second)]  # fmt: skip
    assert loss[1] == loss[0][30:]


def test_resume_without_a_state_names_the_file(case: Path) -> None:
    from bridge.server.training import RestartPlan

    plan = RestartPlan(case / "nowhere", rank=1)
    with pytest.raises(
        TrainingError,
        match=r"no training state of step 30 \(the step before this run.s first\) for server "
        r"rank 1",
    ):
        plan.find("lin-online", 30)
