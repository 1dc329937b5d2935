"""NEMO 4.2 arrays handed to the library as they are: halo 2 (``nn_hls = 2``) and ``jpk`` levels.

With ``&nammlb_test ln_mlb_hls2`` the toy copies its fields into ``(jpi+2, jpj+2, jpk)`` arrays
(``jpk`` = layers + 1, the last level land) before ``mlb_put`` and receives into such arrays with
``mlb_get``, the halo width deduced from the shape. The halo ring and the land level hold NaN:
a library that read them would send a NaN (the servers stop the run). ``mlb_get`` must set the
land level to zero (the toy stops otherwise). The run must give the halo-1, ``nz``-level run's
bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_coupling_toy import config_for, exchange, make_case, output, run
from test_surface_fields import surface_case, surface_exchange

pytestmark = pytest.mark.usefixtures("fortran_build")

FIELDS = ("u", "v", "h", "u_tend", "v_tend", "h_tend")


def pair(tmp_path: Path, case_of: Any, ex: dict[str, Any], n: int, m: int, lag: int = 0) -> None:
    ex = {**ex, "lag": lag}
    runs = {}
    for hls2 in (False, True):
        case = case_of(tmp_path / f"hls2_{hls2}", nammlb_test={"ln_mlb_hls2": hls2})
        runs[hls2] = output(run(config_for(case, n, m, [ex])))
    assert np.abs(runs[False]["u_tend"]).max() > 0, "the closure did nothing"
    for name in FIELDS:
        np.testing.assert_array_equal(runs[True][name], runs[False][name], f"{name} N={n} M={m}")


@pytest.mark.parametrize(
    ("closure", "n", "m", "lag"), [("laplacian", 4, 1, 0), ("smooth3", 2, 3, 1)]
)
def test_halo2_jpk_arrays_equal_halo1(
    tmp_path: Path, closure: str, n: int, m: int, lag: int
) -> None:
    pair(tmp_path, make_case, exchange(closure), n, m, lag)


def test_halo2_jpk_arrays_with_a_surface_field(tmp_path: Path) -> None:
    """A one-level field (``h`` top layer) taken from a halo-2 ``jpk`` array."""
    pair(tmp_path, surface_case, surface_exchange(), 2, 2)
