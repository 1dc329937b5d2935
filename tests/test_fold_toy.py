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
from test_coupling_toy import COEF, config_for, logs, make_case, output, run

from bridge.closures.analytic import smooth3_op
from bridge.domain.plan import Box, assemble_global_reference

pytestmark = pytest.mark.usefixtures("fortran_build")

PERIO = {"north_fold_t": 4, "north_fold_f": 6}
FIELD_POINT = {"u": "U", "v": "V"}
NX, NY = 22, 17  # even in i (the fold pairs columns), sizes that no decomposition divides


def fold_case(path: Path, boundary: str, fields: str, inproc: bool) -> Path:
    """``fields`` (``"u"``, ``"v"`` or ``"uv"``) sent and their tendencies received, folded grid."""
    names = ["u", "v", "h"]
    snd = [f if f in fields else "" for f in names]
    rcv = [f"{f}_tend" if f in fields else "" for f in names]
    return make_case(
        path,
        steps=5,
        nammlb={"cn_mlb_snd": snd, "cn_mlb_rcv": rcv},
        nammlb_test={"cn_mlb_inproc": "smooth3", "rn_mlb_coef": COEF} if inproc else None,
        extra={"namusr_def": {"nn_nx": NX, "nn_ny": NY, "nn_perio": PERIO[boundary]}},
    )


CASES = [(b, f) for b in PERIO for f in ("u", "v", "uv")]


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    """The in-process reference of each pivot and field (1 rank)."""
    refs = {}
    for boundary, field in CASES:
        case = fold_case(tmp_path_factory.mktemp(f"ref_{boundary}_{field}"), boundary, field, True)
        refs[(boundary, field)] = output(run(config_for(case, 1)))
    return refs


def fold_exchanges(fields: str) -> list[dict]:
    """One smooth3 exchange per field, on the field's point (u and v travel together)."""
    return [
        {
            "name": f"smooth_{field}",
            "closure": "smooth3",
            "inputs": {field: field},
            "outputs": {f"smooth_{field}": f"{field}_tend"},
            "params": {"coefficient": COEF, "grid": FIELD_POINT[field]},
        }
        for field in fields
    ]


def test_model_fold_is_the_plans_rule(inprocess: dict[tuple[str, str], dict]) -> None:
    """X_tend at step s+1 = smooth3 of the model's X at step s with the plan's fold halo."""
    mask = np.ones((1, NY, NX))
    mask[:, 0, :] = 0.0  # the southern land rim
    for (boundary, field), out in inprocess.items():
        if field not in FIELD_POINT:
            continue
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
    for name in ("u", "v", "h", *(f"{f}_tend" for f in field)):
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
        case, n, m, fold_exchanges(field), model={"boundary": boundary, "vectors": list(field)}
    )
    got, ref = output(run(config)), inprocess[(boundary, field)]
    assert np.abs(ref[f"{field[0]}_tend"]).max() > 0
    for name in ("u", "v", "h", *(f"{f}_tend" for f in field)):
        np.testing.assert_array_equal(got[name], ref[name], f"{boundary} N={n} M={m} {name}")


def test_vectors_must_name_declared_fields(tmp_path: Path) -> None:
    case = fold_case(tmp_path, "north_fold_t", "u", False)
    model = {"boundary": "north_fold_t", "vectors": ["u", "uu"]}
    result = run(config_for(case, 2, 1, fold_exchanges("u"), model=model))
    assert result.returncode != 0
    assert "[model] vectors names 'uu'" in logs(result)


@pytest.mark.parametrize("boundary", list(PERIO))
def test_lag1_across_the_fold(tmp_path: Path, boundary: str) -> None:
    """Lag 1 (buffered receives, staging copied): step s+1 gets smooth3 of step s-1's fields."""
    case = fold_case(tmp_path, boundary, "uv", False)
    exchanges = [dict(e, lag=1) for e in fold_exchanges("uv")]
    model = {"boundary": boundary, "vectors": ["u", "v"]}
    out = output(run(config_for(case, 2, 3, exchanges, model=model)))
    mask = np.ones((1, NY, NX))
    mask[:, 0, :] = 0.0
    box = Box(0, NX, 0, NY)
    m3 = assemble_global_reference(mask, box, 3, boundary)
    for field, point in FIELD_POINT.items():
        for s in range(2, out[field].shape[0]):
            haloed = assemble_global_reference(out[field][s - 2], box, 3, boundary, point, -1.0)
            want = smooth3_op(haloed, COEF, np.broadcast_to(m3, haloed.shape))
            got = out[f"{field}_tend"][s]
            np.testing.assert_array_equal(got, want, f"{boundary} {field} step {s + 1}")
