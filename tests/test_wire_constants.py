"""The Fortran library and the Python server agree on the wire constants (no MPI needed)."""

from __future__ import annotations

import re
from pathlib import Path

from bridge import wire

LIBRARY = Path(__file__).resolve().parents[1] / "fortran_stubs" / "mlbridge" / "mlbridge.F90"


def fortran_parameters() -> dict[str, int]:
    """Every ``NAME = <integer>`` of the library's ``integer, parameter`` lines."""
    values: dict[str, int] = {}
    for line in LIBRARY.read_text().splitlines():
        code = line.split("!", 1)[0]
        if "parameter" not in code.lower() or "::" not in code:
            continue
        for name, value in re.findall(r"(\w+)\s*=\s*(-?\d+)\b", code.split("::", 1)[1]):
            values[name.upper()] = int(value)
    return values


def test_protocol_version_tags_and_colours_agree() -> None:
    fortran = fortran_parameters()
    names = ["PROTOCOL_VERSION", "COLOUR_MODEL", "COLOUR_SERVER", "STEPLOG_RECORD"]
    names += [name for name in dir(wire) if name.startswith("TAG_")]
    assert len(names) >= 11
    for name in names:
        assert name in fortran, f"{name} is not a parameter of {LIBRARY.name}"
        assert fortran[name] == getattr(wire, name), (
            f"{name}: {LIBRARY.name} says {fortran[name]}, bridge/wire.py says "
            f"{getattr(wire, name)}"
        )


def test_tags_are_distinct() -> None:
    tags = [getattr(wire, n) for n in dir(wire) if n.startswith("TAG_")]
    assert len(tags) == len(set(tags))
