"""Staggering without MPI: face conventions, shifts, point masks, the report's new words."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.closures.analytic import analytic_closure
from bridge.config.coupling import CouplingConfig
from bridge.domain.stagger import input_shift, parse_faces, point_masks
from bridge.protocol.handshake import check_reports, parse_report
from bridge.registry.manifest import manifest_to_toml, parse_manifest

REPORT = """mlbridge-report 2
rank 0
grid 8 6
box 0 0 8 6
mask 0
{faces}field h 1 send 1 float64{h}
field u 1 send 1 float64{u}
field v 1 send 1 float64 V
field dh 1 recv 1 float64
field du 1 recv 1 float64 U
field dv 1 recv 1 float64 V
"""


def test_faces_parse_and_refuse() -> None:
    assert parse_faces("east") == ("east", "north")
    assert parse_faces("WEST") == ("west", "south")
    assert parse_faces("west north") == ("west", "north")
    with pytest.raises(ValueError, match="'up' is not a face convention"):
        parse_faces("up")


def test_shift_only_where_staggered_and_conventions_differ() -> None:
    west, east = ("west", "south"), ("east", "north")
    assert input_shift("T", west, east) == (0, 0)
    assert input_shift("U", west, east) == (0, 1)  # NEMO's U(i) is the west model's U(i+1)
    assert input_shift("V", west, east) == (1, 0)
    assert input_shift("F", east, west) == (-1, -1)
    assert input_shift("U", east, east) == (0, 0)


def test_point_masks_follow_nemo_rule_for_each_convention() -> None:
    t = np.ones((4, 5))
    t[1, 2] = 0
    east = point_masks(t, ("east", "north"))
    west = point_masks(t, ("west", "south"))
    # umask(i, j) = tmask(i, j) tmask(i+1, j), 0 beyond the closed east edge
    assert east["U"][1, 1] == 0 and east["U"][1, 2] == 0 and east["U"][1, 3] == 1
    assert (east["U"][:, -1] == 0).all() and (west["U"][:, 0] == 0).all()
    # the same physical faces, indexed one apart
    assert np.array_equal(east["U"][:, :-1], west["U"][:, 1:])
    assert np.array_equal(east["F"][:-1, :-1], west["F"][1:, 1:])
    assert east["F"][0, 1] == 0 and east["F"][0, 0] == 1
    periodic = point_masks(np.ones((3, 4)), ("east", "north"), "periodic")
    assert (periodic["F"] == 1).all()


def _config() -> CouplingConfig:
    return CouplingConfig.from_dict(
        {
            "model": {"executable": "m", "ranks": 1},
            "exchange": [
                {
                    "closure": "cgrid_sw",
                    "inputs": {"h": "h", "u": "u", "v": "v"},
                    "outputs": {"dh": "dh", "du": "du", "dv": "dv"},
                }
            ],
        }
    )


def test_report_carries_points_and_faces_and_old_reports_still_parse() -> None:
    new = parse_report(REPORT.format(faces="faces west south\n", h=" T", u=" U"))
    assert new.faces == ("west", "south")
    assert [f.point for f in new.fields] == ["T", "U", "V", "", "U", "V"]
    old = parse_report(REPORT.format(faces="", h="", u=""))
    assert old.faces == ("east", "north") and old.fields[1].point == ""
    assert old.fields[1].at == "T"
    # not declared: taken as T, not checked against the closure's U
    spec = analytic_closure("cgrid_sw", ["h", "u", "v"]).spec
    assert check_reports([old], _config().exchanges, {"cgrid_sw": spec}) == []


def test_handshake_names_a_point_mismatch() -> None:
    spec = analytic_closure("cgrid_sw", ["h", "u", "v"]).spec
    report = parse_report(REPORT.format(faces="faces west south\n", h=" T", u=" T"))
    problems = check_reports([report], _config().exchanges, {"cgrid_sw": spec})
    assert len(problems) == 1
    assert "model field 'u' is on the T point" in problems[0]
    assert "closure 'cgrid_sw' takes its input 'u' on the U point" in problems[0]
    assert "(west south)" in problems[0] and "(east north)" in problems[0]
    good = parse_report(REPORT.format(faces="faces west south\n", h=" T", u=" U"))
    assert check_reports([good], _config().exchanges, {"cgrid_sw": spec}) == []


def test_manifest_faces_round_trip() -> None:
    text = """name = "m"
version = "1"
format = "python"
entry_point = "pkg.mod:make"
halo = 1
faces = "west"
[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
[[outputs]]
name = "du"
grid = "U"
units = "m s-2"
"""
    manifest = parse_manifest(text)
    assert manifest.faces == ("west", "south") and manifest.spec.faces == ("west", "south")
    assert parse_manifest(manifest_to_toml(manifest)).faces == ("west", "south")
    with pytest.raises(ValueError, match="not a face convention"):
        parse_manifest(text.replace('faces = "west"', 'faces = "diagonal"'))
