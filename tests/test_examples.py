"""Every example is a numbered folder with a README, and some test runs it (FTorch's habit).

The examples themselves are run by the tests named in :data:`RUN_BY` (real model, real mpirun);
this file checks that none is left out, so that an example added without a test fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TESTS = Path(__file__).resolve().parent

# the test module that runs each example (its configuration, end to end)
RUN_BY = {
    "01_coarse": "test_toy_model.py",
    "02_fine": "test_toy_model.py",
    "03_coupled_laplacian": "test_coupling_toy.py",
    "04_register_cnn": "test_registry_coupling.py",
    "05_oasis_pure": "test_oasis_coupling.py",
    "06_subgrid_zb": "test_demo.py",
    "07_subgrid_cnn": "test_demo.py",
    "08_bias_correction": "test_bias.py",  # through mlbridge_models.bias.evaluate
    "09_evaluate": "test_evaluate_runs.py",
    "10_backscatter": "test_backscatter.py",
    "11_online_learning": "test_online_learning.py",
    "12_zb_backscatter": "test_zb_backscatter.py",
    "13_subgrid_cnn_h": "test_cnn_h.py",
}


def example_dirs() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_examples_are_numbered_in_order() -> None:
    names = [p.name for p in example_dirs()]
    assert names, "no examples"
    for index, name in enumerate(names, start=1):
        assert re.fullmatch(rf"{index:02d}_[a-z0-9_]+", name), (
            f"{name}: expected {index:02d}_<name>"
        )


@pytest.mark.parametrize("name", sorted(RUN_BY))
def test_each_example_has_a_readme_and_a_test(name: str) -> None:
    folder = EXAMPLES / name
    assert folder.is_dir(), f"{folder} is gone: update RUN_BY"
    readme = folder / "README.md"
    assert readme.is_file() and readme.stat().st_size > 200, f"{readme}: missing or empty"
    text = (TESTS / RUN_BY[name]).read_text()
    source = text
    if name == "08_bias_correction":  # the test runs the pipeline that couples this example
        source = (REPO / "models" / "bias" / "evaluate.py").read_text()
    assert name in source, f"{RUN_BY[name]} does not name examples/{name}"


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in example_dirs()) == sorted(RUN_BY)
