"""The committed summary of the coarse-grained truth (``mlbridge_models.evaluation.reference``):
written and read back, a flow against itself scores zero distance, a changed one does not, and a
damaged file is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlbridge_models.evaluation import metrics as ev
from mlbridge_models.evaluation import reference as ref

DX = 32.0e3


def _flow(seed: int, amp: float = 1.0) -> ev.Flow:
    rng = np.random.default_rng(seed)
    shape = (6, 2, 18, 18)
    u, v = (amp * 0.1 * rng.standard_normal(shape) for _ in range(2))
    h = 500.0 + rng.standard_normal(shape)
    for a in (u, v):  # the land rim
        a[..., 0, :] = a[..., -1, :] = a[..., :, 0] = a[..., :, -1] = 0.0
    return ev.Flow(u, v, h)


def test_summary_round_trip_and_comparison(tmp_path: Path) -> None:
    truth = _flow(0)
    time = np.arange(6) / 73.0
    ref.write(tmp_path, ref.summarise(truth, time, DX, DX), {"truth_years": [1, 1]})
    r = ref.load(tmp_path)
    np.testing.assert_allclose(r.ke_mean, ev.time_mean_ke(truth.u, truth.v, truth.h, DX, DX))
    np.testing.assert_array_equal(r.snapshot.h[0], truth.h[-1].astype(np.float32))
    same = ref.compare(truth, r)
    assert same["ke_error"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(same["spectrum_distance"], 0.0, atol=1e-12)
    weaker = ref.compare(_flow(0, amp=0.5), r)  # a quarter of the KE
    assert weaker["ke_error"] == pytest.approx(0.75, rel=1e-3)
    assert (weaker["spectrum_distance"] > 0).all()
    assert r.provenance["truth_years"] == [1, 1]


def test_damaged_summary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ref.ReferenceError, match="no such file"):
        ref.load(tmp_path)
    arrays = ref.summarise(_flow(1), np.arange(6) / 73.0, DX, DX)
    del arrays["ke_series"]
    np.savez(tmp_path / ref.NPZ, **arrays)
    with pytest.raises(
        ref.ReferenceError, match=r"coarse_truth.npz: missing arrays \['ke_series'\]"
    ):
        ref.load(tmp_path)
