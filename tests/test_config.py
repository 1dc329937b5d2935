"""coupling.toml loading: schema, error messages naming file/key/value, round trip, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.config.coupling import (
    TOY_NAMELIST_REF,
    ConfigError,
    CouplingConfig,
    load_config,
    write_config_json,
)

GOOD = """
transport = "mpi"

[model]
executable = "toy_nemo"
ranks = 2
namelist_cfg = "namelist_cfg"
boundary = "periodic"

[server]
ranks = 1
device = "cpu"
threads = 2
timeout_s = 30

[run]
workdir = "runs"

[diagnostics]
netcdf = true
fields = ["u_tend"]

[[exchange]]
closure = "laplacian"
inputs = { u = "u" }
outputs = { lap_u = "u_tend" }
every = 2
lag = 1
on_nan = "zero"
params = { nu = 1.0e3, scheme = "five-point" }

[[exchange]]
closure = "zanna_bolton@2"
inputs = { u = "u", v = "v" }
outputs = { su = "v_tend" }
"""


def write(tmp_path: Path, text: str, name: str = "coupling.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path.resolve()) in str(info.value), "the message must name the file"
    return str(info.value), info.value.problems


def test_good_file_loads_with_resolved_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.transport == "mpi"
    assert config.model.ranks == 2
    assert config.model.executable == "toy_nemo"  # a bare name stays a name (build/bin lookup)
    assert config.model.namelist_cfg == (tmp_path / "namelist_cfg").resolve()
    assert config.model.namelist_ref == TOY_NAMELIST_REF  # empty/absent: the toy's own
    assert config.model.boundary == "periodic"
    assert config.server.timeout_s == 30.0 and isinstance(config.server.timeout_s, float)
    assert config.run.workdir == (tmp_path / "runs").resolve()
    assert config.run.steps == 0
    assert config.diagnostics.netcdf and config.diagnostics.fields == ("u_tend",)
    first, second = config.exchanges
    assert (first.name, first.every, first.lag, first.on_nan) == ("laplacian", 2, 1, "zero")
    assert first.params == {"nu": 1.0e3, "scheme": "five-point"}
    assert second.name == "zanna_bolton"  # default name: the closure without its version
    assert second.params == {} and second.lag == 0 and second.on_nan == "abort"
    assert config.coupled
    assert config.source == (tmp_path / "coupling.toml").resolve()


def test_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[model]\nexecutable = 'bin/model'\n"))
    assert config.model.executable == str((tmp_path / "bin" / "model").resolve())
    assert config.model.boundary == "closed"
    assert config.server.device == "cpu" and config.server.ranks == 1
    assert config.exchanges == () and not config.coupled


def test_round_trip_through_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    path = write_config_json(config, tmp_path / "run_config.json")
    again = load_config(path)
    assert again == config
    assert CouplingConfig.from_dict(json.loads(path.read_text())) == config
    # absolute paths: the JSON means the same from any directory
    assert json.loads(path.read_text())["model"]["namelist_cfg"].startswith("/")


@pytest.mark.parametrize(
    ("text", "where", "value", "expected"),
    [
        ("transport = 'tcp'", "transport", '"tcp"', '"mpi", "oasis"'),
        ("[model]\nranks = 0", "model.ranks", "0", "an integer >= 1"),
        ("[model]\nranks = true", "model.ranks", "true", "an integer >= 1"),
        ("[model]\nranks = '2'", "model.ranks", '"2"', "an integer >= 1"),
        ("[model]\nboundary = 'open'", "model.boundary", '"open"', '"closed", "periodic"'),
        ("[server]\ndevice = 'gpu'", "server.device", '"gpu"', '"auto", "cpu", "cuda"'),
        ("[server]\nranks = -1", "server.ranks", "-1", "an integer >= 1"),
        ("[server]\ntimeout_s = 0", "server.timeout_s", "0", "> 0"),
        ("[run]\nsteps = -3", "run.steps", "-3", ">= 0"),
        ("[diagnostics]\ntiming = 1", "diagnostics.timing", "1", "true or false"),
    ],
)
def test_bad_values_name_key_value_and_expectation(
    tmp_path: Path, text: str, where: str, value: str, expected: str
) -> None:
    message, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{where} = {value}: expected"), problems[0]
    assert expected in problems[0]


EXCHANGE = """
[[exchange]]
closure = "laplacian"
inputs = { u = "u" }
outputs = { lap_u = "u_tend" }
"""


@pytest.mark.parametrize(
    ("extra", "where", "expected"),
    [
        ("lag = 2", "exchange[1].lag = 2", "one of 0, 1"),
        ("every = 0", "exchange[1].every = 0", "an integer >= 1"),
        ("on_nan = 'ignore'", 'exchange[1].on_nan = "ignore"', '"abort", "zero"'),
        ("params = 3", "exchange[1].params = 3", "a table"),
    ],
)
def test_bad_exchange_values_name_the_block(
    tmp_path: Path, extra: str, where: str, expected: str
) -> None:
    text = EXCHANGE + EXCHANGE.replace("u_tend", "v_tend") + extra + "\n"
    _, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(where) and expected in problems[0]


def test_unknown_keys_are_refused_with_their_path(tmp_path: Path) -> None:
    text = "colour = 1\n[model]\nrank = 2\n" + EXCHANGE + "laggg = 1\n"
    _, problems = problems_of(tmp_path, text)
    assert any(p.startswith("colour: unknown key") for p in problems)
    assert any(p.startswith("model.rank: unknown key") and "ranks" in p for p in problems)
    assert any(p.startswith("exchange[0].laggg: unknown key") for p in problems)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message, problems = problems_of(tmp_path, "[model]\nranks = 0\n[server]\ndevice = 'tpu'\n")
    assert len(problems) == 2
    assert "2 problems" in message and "model.ranks" in message and "server.device" in message


def test_missing_exchange_keys(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, "[[exchange]]\nclosure = 'x'\n")
    assert "exchange[0].inputs: missing" in problems[0]
    assert "exchange[0].outputs: missing" in problems[1]


def test_model_field_received_twice_is_refused(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, EXCHANGE + EXCHANGE.replace("laplacian", "other"))
    assert len(problems) == 1
    assert problems[0].startswith('exchange[1].outputs.lap_u = "u_tend"')
    assert "exchange[0].outputs.lap_u" in problems[0]


def test_default_exchange_names_are_unique(tmp_path: Path) -> None:
    text = EXCHANGE + EXCHANGE.replace("u_tend", "v_tend") + "name = 'laplacian_2'\n"
    text += EXCHANGE.replace("u_tend", "h_tend")
    names = [ex.name for ex in load_config(write(tmp_path, text)).exchanges]
    assert names == ["laplacian", "laplacian_2", "laplacian_3"]


def test_duplicate_exchange_names_are_refused(tmp_path: Path) -> None:
    text = EXCHANGE + "name = 'lap'\n" + EXCHANGE.replace("u_tend", "v_tend") + "name = 'lap'\n"
    _, problems = problems_of(tmp_path, text)
    assert problems == [
        'exchange[1].name = "lap": already the name of exchange[0] '
        "(give each exchange its own name)"
    ]


def test_params_must_be_json_like(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, EXCHANGE + "params = { when = 2024-01-01 }\n")
    assert problems[0].startswith("exchange[0].params")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    message, _ = problems_of(tmp_path, "[model\n")
    assert "not valid TOML" in message
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    changed = config.with_overrides(model_ranks=4, server_ranks=3, steps=10, workdir=tmp_path)
    assert (changed.model.ranks, changed.server.ranks, changed.run.steps) == (4, 3, 10)
    assert changed.run.workdir == tmp_path.resolve()
    assert config.model.ranks == 2, "the original is unchanged"
    assert config.with_overrides() == config
    with pytest.raises(ConfigError, match="--model-ranks: expected an integer >= 1, got 0"):
        config.with_overrides(model_ranks=0)


def test_resolve_executable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[model]\nexecutable = 'my_model'\n"))
    (tmp_path / "bin").mkdir()
    missing = config.model.resolve_executable(tmp_path)
    assert missing == tmp_path / "bin" / "my_model"  # where it was expected, for the message
    (tmp_path / "bin" / "my_model").write_text("")
    assert config.model.resolve_executable(tmp_path) == tmp_path / "bin" / "my_model"
