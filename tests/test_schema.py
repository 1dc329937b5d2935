"""The schema reader: every problem of a document, with its key path, value and expectation."""

from __future__ import annotations

import datetime
import math
import tomllib

import pytest

from bridge.config.schema import (
    MISSING,
    Problem,
    Reader,
    SchemaError,
    describe,
    show,
    toml_value,
)


def test_typed_get_with_default_and_missing() -> None:
    r = Reader()
    data = {"a": 2, "b": "x", "flag": True}
    assert r.get(data, "t", "a", int, expected="an integer") == 2
    assert r.get(data, "t", "absent", int, 7, expected="an integer") == 7
    assert r.get(data, "t", "b", int, 7, expected="an integer") == 7  # bad: the default
    assert r.get(data, "t", "flag", int, expected="an integer") is None  # a bool is no int
    assert r.get(data, "t", "absent", int, expected="an integer") is None
    assert r.get(data, "t", "flag", bool, expected="true or false") is True
    assert r.texts() == [
        't.b = "x": expected an integer',
        "t.flag = true: expected an integer",
        "t.absent: missing (expected an integer)",
    ]


def test_every_problem_of_a_document_is_collected() -> None:
    data = tomllib.loads('ranks = 0\ndevice = "gpu"\ncolour = 1\n[model]\nsteps = -1\n')
    r = Reader()
    r.known_keys(data, "", ("ranks", "device", "model"))
    assert r.integer(data, "", "ranks", 1) == 1
    assert r.choice(data, "", "device", ("auto", "cpu"), "cpu") == "cpu"
    model = r.sub_table(data, "", "model")
    assert r.integer(model, "model", "steps", 0, minimum=0) == 0
    assert [(p.kind, p.path) for p in r.problems] == [
        ("unknown", "colour"),
        ("value", "ranks"),
        ("value", "device"),
        ("value", "model.steps"),
    ]
    assert r.texts() == [
        "colour: unknown key (known keys: ranks, device, model)",
        "ranks = 0: expected an integer >= 1",
        'device = "gpu": expected one of "auto", "cpu"',
        "model.steps = -1: expected an integer >= 0",
    ]


def test_positive_int_words_the_bound_it_crossed() -> None:
    r = Reader()
    r.integer({"n": 0}, "", "n")
    r.integer({"n": "2"}, "", "n")
    assert r.problems[0] == Problem("value", "n", "an integer >= 1", 0, bound="at least 1")
    assert r.problems[1].bound == ""  # the type was wrong: no bound crossed


def test_finite_number_and_its_condition() -> None:
    r = Reader()
    data = {"x": 3, "nan": math.nan, "inf": math.inf, "zero": 0.0, "yes": True}
    value = r.number(data, "", "x")
    assert value == 3.0 and isinstance(value, float)
    assert r.number(data, "", "nan", 1.0) == 1.0
    assert r.number(data, "", "inf") is None
    assert r.number(data, "", "zero", 1.0, expected="a non-zero number", check=bool) == 1.0
    assert r.number(data, "", "yes") is None
    assert [p.path for p in r.problems] == ["nan", "inf", "zero", "yes"]
    assert r.texts()[:3] == [
        "nan = nan: expected a finite number",
        "inf = inf: expected a finite number",
        "zero = 0.0: expected a non-zero number",
    ]


def test_strings() -> None:
    r = Reader()
    data = {"s": "a", "blank": "  ", "n": 1}
    assert r.string(data, "", "s") == "a"
    assert r.string(data, "", "blank", "d", nonempty=True) == "d"
    assert r.string(data, "", "blank") == "  "
    assert r.string(data, "", "n", "", expected="a path") == ""
    assert r.texts() == ['blank = "  ": expected a non-empty string', "n = 1: expected a path"]


def test_name_tables() -> None:
    r = Reader()
    data = {"ok": {"u": "U"}, "empty": {}, "bad": {"u": "", "v": "V", "w": 3}, "no": "u"}
    assert r.names(data, "x", "ok") == {"u": "U"}
    assert r.names(data, "x", "empty") == {}
    assert r.names(data, "x", "bad") == {"v": "V"}
    assert r.names(data, "x", "no") == {}
    assert r.names(data, "x", "absent") == {}
    assert r.texts() == [
        "x.empty = {}: expected a non-empty table of names",
        'x.bad.u = "": expected a name (a non-empty string)',
        "x.bad.w = 3: expected a name (a non-empty string)",
        'x.no = "u": expected a non-empty table of names',
        "x.absent: missing (expected a non-empty table of names)",
    ]


def test_sub_tables_and_arrays_of_tables() -> None:
    r = Reader()
    data = tomllib.loads("run = 3\n[[block]]\na = 1\n[[block]]\nb = 2\n")
    assert r.sub_table(data, "", "run") == {}
    assert r.sub_table(data, "", "absent") == {}
    assert r.tables(data, "", "block") == [("block[0]", {"a": 1}), ("block[1]", {"b": 2})]
    assert r.tables({"block": [1, {}]}, "doc", "block") == [("doc.block[1]", {})]
    assert r.tables({}, "", "inputs", MISSING, nonempty=True) == []
    assert r.tables({"inputs": []}, "", "inputs", MISSING, nonempty=True) == []
    assert r.texts() == [
        "run = 3: expected a table",
        "doc.block[0] = 1: expected a table",
        "inputs: missing (expected a non-empty array of tables ([[inputs]]))",
        "inputs = []: expected a non-empty array of tables ([[inputs]])",
    ]


def test_notes_and_their_wording() -> None:
    r = Reader()
    r.note("", "a rule of the whole document")
    r.note("exchange", "blocks and a table: remove one")
    r.note("exchange[1].name", "already taken", "lap")
    assert r.texts() == [
        "a rule of the whole document",
        "exchange: blocks and a table: remove one",
        'exchange[1].name = "lap": already taken',
    ]
    # a caller's own wording
    assert r.texts(lambda p: f"[{p.kind}] {p.path}") == [
        "[note] ",
        "[note] exchange",
        "[note] exchange[1].name",
    ]
    assert describe(r.problems[2]) == r.texts()[2]


def test_values_are_shown_as_toml_writes_them() -> None:
    assert show("gpu") == '"gpu"' and show(True) == "true" and show(2) == "2"
    assert show(1.0e3) == "1000.0" and show(math.inf) == "inf" and show(math.nan) == "nan"
    assert show([1, "a"]) == '[1, "a"]'
    assert show({"a": 1, "b c": {}}) == '{ a = 1, "b c" = {} }'
    assert show(datetime.date(2024, 1, 1)) == "2024-01-01"
    assert show(object).startswith("<class")  # no TOML for it: its repr
    with pytest.raises(TypeError, match="cannot write"):
        toml_value(None)
    text = "v = " + toml_value({"x": [1.5, -2], "when": datetime.date(2024, 1, 1), "s": 'q"'})
    assert tomllib.loads(text)["v"] == {
        "x": [1.5, -2],
        "when": datetime.date(2024, 1, 1),
        "s": 'q"',
    }


def test_schema_error_lists_every_problem_after_the_source() -> None:
    one = SchemaError("ranks = 0: expected an integer >= 1", "c.toml")
    assert str(one) == "c.toml: ranks = 0: expected an integer >= 1"
    assert one.problems == ["ranks = 0: expected an integer >= 1"] and one.source == "c.toml"
    two = SchemaError(["a: x", "b: y"])
    assert str(two) == "2 problems:\n  - a: x\n  - b: y"
    assert isinstance(two, ValueError)
