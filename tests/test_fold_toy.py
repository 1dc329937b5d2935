"""The toy on a zonally periodic grid with a north fold: coupled == in process, bit for bit.

With ``&namusr_def nn_perio = 4`` (T-point pivot) or ``6`` (F-point pivot) the toy is cyclic
east-west and folded at the north, and its ``lbc_lnk`` fills the fold as NEMO's does
(``fortran_stubs/toy_nemo/lbclnk.F90``). The in-process ``smooth3`` closure fills the halo between
its passes with that ``lbc_lnk``; the coupled one receives its halo of 3 from the plan's fold
(``[model] boundary = "north_fold_t"`` / ``"north_fold_f"``, ``vectors = ["u", "v"]``). Both must
give the same bits for every number of model ranks N and server ranks M; and the model's own fold
must be the plan's rule (the in-process tendency is the Python closure on the model's output with
the halo built by :func:`bridge.domain.plan.assemble_global_reference`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_coupling_toy import COEF, config_for, make_case, output, run

from bridge.closures.analytic import smooth3_op
from bridge.domain.plan import Box, assemble_global_reference

pytestmark = pytest.mark.usefixtures("fortran_build")

PERIO = {"north_fold_t": 4, "north_fold_f": 6}
FIELD_POINT = {"u": "U", "v": "V"}
NX, NY = 22, 17  # even in i (the fold pairs columns), sizes that no decomposition divides


def fold_case(path: Path, boundary: str, field: str, inproc: bool) -> Path:
    """``field`` sent and its tendency received (the other fields not), on the folded grid."""
    names = ["u", "v", "h"]
    snd = [f if f == field else "" for f in names]
    rcv = [f"{f}_tend" if f == field else "" for f in names]
    return make_case(
        path,
        steps=5,
        nammlb={"cn_mlb_snd": snd, "cn_mlb_rcv": rcv},
        nammlb_test={"cn_mlb_inproc": "smooth3", "rn_mlb_coef": COEF} if inproc else None,
        extra={"namusr_def": {"nn_nx": NX, "nn_ny": NY, "nn_perio": PERIO[boundary]}},
    )


CASES = [(b, f) for b in PERIO for f in FIELD_POINT]


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    """The in-process reference of each pivot and field (1 rank)."""
    refs = {}
    for boundary, field in CASES:
        case = fold_case(tmp_path_factory.mktemp(f"ref_{boundary}_{field}"), boundary, field, True)
        refs[(boundary, field)] = output(run(config_for(case, 1)))
    return refs


def fold_exchange(field: str) -> dict:
    return {
        "closure": "smooth3",
        "inputs": {field: field},
        "outputs": {f"smooth_{field}": f"{field}_tend"},
        "params": {"coefficient": COEF, "grid": FIELD_POINT[field]},
    }


def test_model_fold_is_the_plans_rule(inprocess: dict[tuple[str, str], dict]) -> None:
    """X_tend at step s+1 = smooth3 of the model's X at step s with the plan's fold halo."""
    mask = np.ones((1, NY, NX))
    mask[:, 0, :] = 0.0  # the southern land rim
    for (boundary, field), out in inprocess.items():
        tend = out[f"{field}_tend"]
        assert np.abs(tend).max() > 0, f"{boundary} {field}: the closure did nothing"
        box = Box(0, NX, 0, NY)
        point = FIELD_POINT[field]
        m3 = assemble_global_reference(mask, box, 3, boundary)
        for s in range(1, tend.shape[0]):
            x = out[field][s - 1]
            haloed = assemble_global_reference(x, box, 3, boundary, point, -1.0)
            want = smooth3_op(haloed, COEF, np.broadcast_to(m3, haloed.shape))
            np.testing.assert_array_equal(tend[s], want, f"{boundary} {field} step {s + 1}")


@pytest.mark.parametrize(("boundary", "field"), CASES)
def test_inprocess_fold_is_decomposition_independent(
    tmp_path: Path, inprocess: dict[tuple[str, str], dict], boundary: str, field: str
) -> None:
    case = fold_case(tmp_path, boundary, field, True)
    got = output(run(config_for(case, 4)))
    for name in ("u", "v", "h", f"{field}_tend"):
        np.testing.assert_array_equal(got[name], inprocess[(boundary, field)][name], name)


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize(("boundary", "field"), CASES)
def test_coupled_equals_inprocess_across_the_fold(
    tmp_path: Path,
    inprocess: dict[tuple[str, str], dict],
    boundary: str,
    field: str,
    n: int,
    m: int,
) -> None:
    case = fold_case(tmp_path, boundary, field, False)
    config = config_for(
        case, n, m, [fold_exchange(field)], model={"boundary": boundary, "vectors": ["u", "v"]}
    )
    got, ref = output(run(config)), inprocess[(boundary, field)]
    for name in ("u", "v", "h", f"{field}_tend"):
        np.testing.assert_array_equal(got[name], ref[name], f"{boundary} N={n} M={m} {name}")
