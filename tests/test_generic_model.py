"""A model described by ``[model]`` alone (``kind = "generic"``), progress and success from the
servers, NEMO's entries named only to NEMO-kind models, and GPU placement of the server ranks.

The launches run real programs under the real ``mpirun``: the toy described generically (its
namelists staged as plain files), and the library's test driver ``mlb_driver``, which has its own
namelist given as an argument and writes no ``time.step``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_coupling_driver import BASE, _exchange, _nml, expected_received, read_received

from bridge import paths
from bridge.config.coupling import ConfigError, load_config
from bridge.launch.checks import find_problems
from bridge.launch.launcher import launch, programs_for
from bridge.registry.torch_closure import env_local_rank, place_device

REPO = Path(__file__).resolve().parents[1]

NEMO_NAMES = re.compile(
    r"ln_mlb|nammlb|nn_it000|nn_itend|namusr_def|nammpp|namrun|namdom|jpni|jpnj|namelist_cfg"
    r"|namelist_ref|ctl_stop|cn_exp"
)
"""Entries and blocks of NEMO's namelists: never in a message to a generic model."""

TOY_CFG = """
&namrun
   cn_exp = 'GENERIC'
   nn_it000 = 1
   nn_itend = 12
   nn_write = 0
   nn_stock = 0
/
&namusr_def
   nn_nx = 20
   nn_ny = 16
   nn_nz = 2
/
&nammpp
   jpni = 0
   jpnj = 0
/
&nammlb
   ln_mlb = .true.
   cn_mlb_snd = 'u', 'v', ''
   cn_mlb_rcv = 'u_tend', 'v_tend', ''
/
"""

EXCHANGE = """
[[exchange]]
closure = "laplacian"
inputs = { u = "u", v = "v" }
outputs = { lap_u = "u_tend", lap_v = "v_tend" }
params = { coefficient = 1.0e-6 }
"""


def generic_toy(tmp_path: Path, toy_exe: Path, steps: int, extra: str = "") -> Path:
    """The toy as a generic model: executable, its namelists staged as plain files, steps."""
    (tmp_path / "namelist_ref").write_text(paths.toy_namelist_ref().read_text())
    (tmp_path / "namelist_cfg").write_text(TOY_CFG)
    toml = tmp_path / "coupling.toml"
    toml.write_text(
        f'[model]\nkind = "generic"\nexecutable = "{toy_exe}"\nranks = 2\n'
        f'stage = ["namelist_ref", "namelist_cfg"]\nsteps = {steps}\nnx = 20\nny = 16\n{extra}'
        '[server]\nranks = 1\ntimeout_s = 60.0\n[run]\nworkdir = "runs"\n' + EXCHANGE
    )
    return toml


def mlbridge_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", *args],
        cwd=REPO,
        env={**os.environ, paths.BUILD_DIR_ENV: str(REPO / "build")},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dir_of(proc: subprocess.CompletedProcess[str]) -> Path:
    found = re.search(r"run directory (\S+)", proc.stdout)
    assert found, proc.stdout
    return Path(found.group(1).rstrip(")"))


# --- configuration (no MPI) -------------------------------------------------------------------


def test_kind_defaults_and_generic_keys(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    toml = tmp_path / "coupling.toml"
    toml.write_text(
        '[model]\nexecutable = "bin/model"\nargs = ["params.in", "-v"]\nstage = ["input"]\n'
        'link = ["forcing"]\nenv = { MY_VAR = "1" }\nsteps = 300\nnx = 40\nny = 30\n'
    )
    config = load_config(toml)
    model = config.model
    assert model.kind == "generic" and not model.nemo
    assert model.namelist_cfg is None and model.namelist_ref is None
    assert model.args == ("params.in", "-v") and model.env == {"MY_VAR": "1"}
    assert model.stage == ((tmp_path / "input").resolve(),)
    assert model.link == ((tmp_path / "forcing").resolve(),)
    assert (model.steps, model.grid) == (300, (40, 30))
    assert programs_for(config, tmp_path)[0].argv == (model.executable, "params.in", "-v")
    # the resolved configuration the servers read keeps all of it
    again = load_config(_json(tmp_path, config.to_dict()))
    assert again.model == model
    # a named namelist keeps today's NEMO behaviour
    toml.write_text('[model]\nexecutable = "m"\nnamelist_cfg = "cfg"\n')
    assert load_config(toml).model.kind == "nemo"


def _json(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run_config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('kind = "generic"\nnamelist_cfg = "x"', ["model.namelist_cfg", "stage"]),
        ('kind = "nemo"\nsteps = 3', ["model.steps", "nn_itend", 'kind = "generic"']),
        ('stage = ["a/run_config.json"]', ["model.stage[0]", "mlbridge writes"]),
        ('stage = ["a/p.in", "b/p.in"]', ["model.stage[1]", "already staged"]),
        ("env = { A = 1 }", ["model.env.A", "a string"]),
    ],
)
def test_model_table_problems(tmp_path: Path, text: str, words: list[str]) -> None:
    toml = tmp_path / "coupling.toml"
    toml.write_text(f'[model]\nexecutable = "m"\n{text}\n')
    with pytest.raises(ConfigError) as err:
        load_config(toml)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_steps_refused_for_a_generic_model(tmp_path: Path) -> None:
    toml = tmp_path / "coupling.toml"
    toml.write_text('[model]\nexecutable = "m"\nsteps = 10\n')
    config = load_config(toml)
    with pytest.raises(ConfigError) as err:
        config.with_overrides(steps=5)
    text = str(err.value)
    assert "--steps" in text and 'model.kind = "generic"' in text and "[model] steps" in text
    assert not NEMO_NAMES.search(text), text
    toml.write_text('[model]\nexecutable = "m"\n[run]\nsteps = 10\n')
    with pytest.raises(ConfigError, match=r"run\.steps.*cannot set the length"):
        load_config(toml)


def test_generic_checks_name_no_nemo_entry(tmp_path: Path) -> None:
    """What can be checked is checked (executable, staged files, ranks, every), in its words."""
    toml = tmp_path / "coupling.toml"
    toml.write_text(
        '[model]\nexecutable = "./nowhere/model"\nranks = 5\nstage = ["params.in"]\n'
        'link = ["forcing"]\nsteps = 4\nnx = 2\nny = 2\n[run]\nworkdir = "runs"\n'
        + EXCHANGE
        + "every = 6\n"
    )
    problems = find_problems(load_config(toml), build_dir=tmp_path)
    text = "\n".join(problems)
    assert "model.executable" in text and "does not exist" in text
    assert "model.stage[0] = " in text and "params.in" in text and "not found" in text
    assert "model.link[0] = " in text
    assert "model.ranks = 5: more ranks than the 2 x 2 = 4 grid columns of [model] nx, ny" in text
    assert "exchange[0].every = 6: longer than the run (4 steps)" in text
    assert not NEMO_NAMES.search(text), text


# --- GPU placement (pure) ---------------------------------------------------------------------


def test_place_device_shares_the_node_gpus() -> None:
    got = [place_device("cuda", rank=r, local_rank=r % 3, visible_gpus=2) for r in range(6)]
    assert got == ["cuda:0", "cuda:1", "cuda:0", "cuda:0", "cuda:1", "cuda:0"]
    assert place_device("auto", rank=1, local_rank=3, visible_gpus=4) == "cuda:3"
    assert place_device("auto", rank=1, local_rank=3, visible_gpus=0) == "cpu"
    assert place_device("cuda", rank=0, local_rank=0, visible_gpus=0) == "cuda"  # refused later
    assert place_device("cpu", rank=5, local_rank=5, visible_gpus=8) == "cpu"
    assert place_device("cuda:1", rank=0, local_rank=0, visible_gpus=2) == "cuda:1"
    pinned = ("cuda:1", "cuda:0", "cpu")
    got = [
        place_device("cuda", rank=r, local_rank=0, visible_gpus=2, pinned=pinned) for r in range(4)
    ]
    assert got == ["cuda:1", "cuda:0", "cpu", "cuda:1"]


def test_local_rank_from_the_launcher() -> None:
    assert env_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "3", "SLURM_LOCALID": "1"}) == 3
    assert env_local_rank({"SLURM_LOCALID": "2"}) == 2
    assert env_local_rank({}) is None


def test_server_devices_in_the_config(tmp_path: Path) -> None:
    toml = tmp_path / "coupling.toml"
    toml.write_text('[model]\nexecutable = "m"\n[server]\ndevice = "cuda:1"\n')
    assert load_config(toml).server.device == "cuda:1"
    toml.write_text('[model]\nexecutable = "m"\n[server]\ndevices = ["cuda:0", "cuda:1"]\n')
    assert load_config(toml).server.devices == ("cuda:0", "cuda:1")
    toml.write_text('[model]\nexecutable = "m"\n[server]\ndevices = ["gpu0"]\n')
    with pytest.raises(ConfigError, match=r"server\.devices\[0\]"):
        load_config(toml)


# --- real runs --------------------------------------------------------------------------------


def test_toy_as_a_generic_model(tmp_path: Path, toy_exe: Path) -> None:
    """No namelist read by the launcher: progress and the real step count come from the
    servers (the toy runs its own 12 steps while [model] steps says 20)."""
    toml = generic_toy(tmp_path, toy_exe, steps=20)
    refused = mlbridge_run(str(toml), "--steps", "5")
    assert refused.returncode == 2
    assert "--steps" in refused.stderr and 'model.kind = "generic"' in refused.stderr
    assert not NEMO_NAMES.search(refused.stderr), refused.stderr

    proc = mlbridge_run(str(toml))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = run_dir_of(proc)
    assert run_dir.name.startswith("toy_nemo_")  # no cn_exp read: the executable's name
    assert "finished 12 steps (12 exchanges) ([model] steps expected 20)" in proc.stdout
    assert re.search(r"mlbridge run: step \d+/20 \(\d+%\)", proc.stderr), proc.stderr[-2000:]
    assert paths.read_progress(run_dir) == 12
    assert paths.read_served_steps(run_dir) == (1, 12)
    done = json.loads((run_dir / paths.DONE_MARKER).read_text())
    assert (done["exchanges"], done["first_step"], done["last_step"]) == (12, 1, 12)
    # staged as plain files, untouched (the launcher patched nothing)
    assert (run_dir / "namelist_cfg").read_text() == TOY_CFG
    assert "device cpu" in (run_dir / "logs" / "1" / "rank.2" / "stdout").read_text()


def test_a_model_without_time_step_succeeds(tmp_path: Path, fortran_build: Path) -> None:
    """``mlb_driver`` (its own namelist as an argument, no time.step): success and the count
    come from the servers, and what it received is exact."""
    exe = fortran_build / "bin" / "mlb_driver"
    steps = 7
    (tmp_path / "driver.nml").write_text(_nml({**BASE, "nit000": 3, "nitend": 3 + steps - 1}))
    exchange = _exchange("laplacian")
    toml = tmp_path / "coupling.toml"
    toml.write_text(
        f'[model]\nexecutable = "{exe}"\nranks = 2\nargs = ["driver.nml"]\n'
        'stage = ["driver.nml"]\nnx = 23\nny = 17\n'
        '[server]\nranks = 2\ntimeout_s = 60.0\n[run]\nworkdir = "runs"\n'
        f'[[exchange]]\nclosure = "{exchange["closure"]}"\n'
        f"inputs = {{ u = 'u', v = 'v' }}\n"
        f"outputs = {{ lap_u = 'u_tend', lap_v = 'v_tend' }}\nparams = {{ coefficient = 0.25 }}\n"
    )
    result = launch(toml, progress=False, quiet=True)
    assert result.ok, result.problems
    assert not (result.run_dir / "time.step").exists()
    assert result.reached_step == steps
    assert paths.read_served_steps(result.run_dir) == (3, 3 + steps - 1)
    got = read_received(result.run_dir, 2, 23, 17, 3, 2, steps)
    want = expected_received("laplacian", 23, 17, 3, 3, steps, 1, 0, 0.25)
    np.testing.assert_array_equal(got, want)
    proc = mlbridge_run(str(toml))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"finished {steps} steps ({steps} exchanges)" in proc.stdout
    assert re.search(r"mlbridge run: step \d+, [\d.]+ s elapsed", proc.stderr)  # no total


def test_a_model_that_never_joins_hears_no_nemo_entry(tmp_path: Path, toy_exe: Path) -> None:
    """A generic model that never calls mlb_init (the toy staged with its coupling off): the
    servers' hint names no NEMO entry."""
    toml = generic_toy(tmp_path, toy_exe, steps=12)
    cfg = tmp_path / "namelist_cfg"
    cfg.write_text(TOY_CFG.replace("ln_mlb = .true.", "ln_mlb = .false."))
    toml.write_text(toml.read_text().replace("timeout_s = 60.0", "timeout_s = 3.0"))
    proc = mlbridge_run(str(toml), timeout=120)
    assert proc.returncode != 0
    report = (run_dir_of(proc) / "failure_report.txt").read_text()
    assert "did not call mlb_init within 3 s" in report, report
    assert "every model rank call mlb_init" in report
    assert not NEMO_NAMES.search(report), report
