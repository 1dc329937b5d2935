"""``docs/reliability.md`` stays true: its tests exist, and every fault test has its row.

Pure (reads files), so it runs in milliseconds; the fault tests themselves run the real job.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
FAULT_MODULES = (
    "test_no_hang.py",
    "test_bad_values.py",
    "test_registry_security.py",
    "test_coupling_restart.py",
    "test_pyoasis_interface.py",
    "test_online_learning.py",
)
REFERENCE = re.compile(r"`tests/(test_\w+\.py)::(test_\w+)`")


def defined_tests(module: str) -> set[str]:
    tree = ast.parse((REPO / "tests" / module).read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def table_rows() -> list[str]:
    return [
        line
        for line in DOC.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| fault")
    ]


def test_every_row_names_a_test_that_exists() -> None:
    rows = table_rows()
    assert len(rows) >= 30, f"{DOC}: only {len(rows)} rows"
    for row in rows:
        refs = REFERENCE.findall(row)
        assert refs, f"{DOC}: a row names no test: {row[:80]}"
        for module, name in refs:
            assert (REPO / "tests" / module).is_file(), f"{DOC}: tests/{module} does not exist"
            assert name in defined_tests(module), f"{DOC}: tests/{module} has no {name}"


def test_every_fault_test_has_a_row() -> None:
    named = set(REFERENCE.findall(DOC.read_text()))
    for module in FAULT_MODULES:
        missing = sorted(n for n in defined_tests(module) if (module, n) not in named)
        assert not missing, f"{DOC} has no row for tests/{module}: {missing}"


def test_rows_have_five_columns() -> None:
    for row in table_rows():
        cells = row.strip().strip("|").split(" | ")
        assert len(cells) == 5, f"{DOC}: expected 5 columns, got {len(cells)}: {row[:80]}"
