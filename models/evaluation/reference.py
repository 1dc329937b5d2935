"""A small, committed summary of the coarse-grained fine truth, so that runs can be held against
the truth where the fine run itself is not at hand (``make demo`` on a fresh machine).

The fine truth (``make truth``: 12 model years of the 1/4-size grid, about 2.6 GB) is
coarse-grained to the coarse model's grid exactly as ``mlbridge evaluate`` does
(:func:`mlbridge_models.evaluation.runs.coarse_truth`) and reduced to what a comparison needs:

* ``spectrum_e`` ``(z, nk)``, ``spectrum_dk``, ``spectrum_k_nyquist``: the time-mean isotropic KE
  spectrum per layer (:func:`mlbridge_models.evaluation.metrics.ke_spectrum`), from which Ross et
  al. (2023)'s spectral distance of any coarse run follows
  (:func:`mlbridge_models.evaluation.metrics.spectrum_distance`);
* ``ke_series`` ``(time, z)`` [J] and ``time`` [model years]: the basin KE per layer of every
  record (:func:`mlbridge_models.evaluation.metrics.layer_ke`);
* ``snapshot_u``, ``snapshot_v``, ``snapshot_h``: the last record's coarse-grained fields (for
  maps beside a run's), float32.

Written as an ``.npz`` of plain arrays (read back with ``allow_pickle=False``: a downloaded summary
runs no code) plus a JSON of its provenance.

Usage::

    python -m mlbridge_models.evaluation.reference --truth runs/truth --truth-years 8-12 \\
        --like runs/eval/baseline/member_1/year_001/*/COARSE_grid.nc \\
        --out models/artifacts/truth_reference
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlbridge_models.evaluation import metrics as ev

#: Arrays a reference holds (all required when one is read).
ARRAYS = (
    "spectrum_e",
    "spectrum_dk",
    "spectrum_k_nyquist",
    "ke_series",
    "time",
    "snapshot_u",
    "snapshot_v",
    "snapshot_h",
    "dx",
    "dy",
)
MODULE = "mlbridge_models.evaluation.reference"
NPZ = "coarse_truth.npz"
PROVENANCE = "provenance.json"


class ReferenceError(ValueError):
    """A reference that cannot be built or read (names the file and what is wrong)."""


@dataclass
class Reference:
    """The coarse-grained truth, reduced (see the module docstring)."""

    spectrum: ev.Spectrum
    ke_series: np.ndarray
    time: np.ndarray
    snapshot: ev.Flow
    dx: float
    dy: float
    provenance: dict[str, Any]

    @property
    def ke_mean(self) -> np.ndarray:
        """Time-mean basin KE per layer [J]."""
        return self.ke_series.mean(axis=0)


def summarise(flow: ev.Flow, time: np.ndarray, dx: float, dy: float) -> dict[str, np.ndarray]:
    """The arrays of a reference from a coarse-grained flow ``(time, z, y, x)``."""
    spec = ev.ke_spectrum(flow.u, flow.v, dx, dy)
    ke = ev.layer_ke(flow.u, flow.v, flow.h, dx, dy)
    return {
        "spectrum_e": spec.e,
        "spectrum_dk": np.float64(spec.dk),
        "spectrum_k_nyquist": np.float64(spec.k_nyquist),
        "ke_series": ke,
        "time": np.asarray(time, dtype=np.float64),
        "snapshot_u": flow.u[-1].astype(np.float32),
        "snapshot_v": flow.v[-1].astype(np.float32),
        "snapshot_h": flow.h[-1].astype(np.float32),
        "dx": np.float64(dx),
        "dy": np.float64(dy),
    }


def write(out: Path, arrays: dict[str, np.ndarray], provenance: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / NPZ, **arrays)
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n")
    return out / NPZ


def load(folder: Path) -> Reference:
    """Read a reference folder (``coarse_truth.npz`` + ``provenance.json``).

    Raises
    ------
    ReferenceError
        If a file or an array is missing or the shapes do not agree.
    """
    npz = Path(folder) / NPZ
    if not npz.is_file():
        raise ReferenceError(f"{npz}: no such file (build it: python -m {MODULE} --help)")
    with np.load(npz, allow_pickle=False) as data:
        missing = [a for a in ARRAYS if a not in data.files]
        if missing:
            raise ReferenceError(f"{npz}: missing arrays {missing}")
        a = {k: np.array(data[k]) for k in ARRAYS}
    nz = a["spectrum_e"].shape[0]
    if a["ke_series"].shape != (a["time"].size, nz) or a["snapshot_h"].shape[0] != nz:
        raise ReferenceError(
            f"{npz}: shapes disagree: spectrum_e {a['spectrum_e'].shape}, ke_series "
            f"{a['ke_series'].shape}, time {a['time'].shape}, snapshot_h {a['snapshot_h'].shape}"
        )
    prov_path = Path(folder) / PROVENANCE
    provenance = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    nk = a["spectrum_e"].shape[-1]
    spectrum = ev.Spectrum(
        np.arange(nk) * float(a["spectrum_dk"]),
        a["spectrum_e"],
        float(a["spectrum_dk"]),
        float(a["spectrum_k_nyquist"]),
    )
    snap = ev.Flow(*(a[f"snapshot_{k}"].astype(np.float64)[None] for k in ("u", "v", "h")))
    return Reference(
        spectrum, a["ke_series"], a["time"], snap, float(a["dx"]), float(a["dy"]), provenance
    )


def compare(flow: ev.Flow, reference: Reference) -> dict[str, Any]:
    """A coarse run ``flow`` ``(time, z, y, x)`` against the reference: its time-mean KE per
    layer [J], the relative error of the total against the truth's, and Ross et al. (2023)'s
    spectral distance per layer [m3 s-2]."""
    spec = ev.ke_spectrum(flow.u, flow.v, reference.dx, reference.dy)
    ke = ev.time_mean_ke(flow.u, flow.v, flow.h, reference.dx, reference.dy)
    truth = float(reference.ke_mean.sum())
    return {
        "ke": ke,
        "ke_error": float(abs(ke.sum() - truth) / truth),
        "spectrum": spec,
        "spectrum_distance": ev.spectrum_distance(spec, reference.spectrum),
    }


def build(truth: Path, truth_years: str, like: Path, out: Path, u_filter: str = "face") -> Path:
    """Coarse-grain ``truth``'s years onto the grid of the coarse grid file ``like`` and write
    the reference into ``out``."""
    from mlbridge_models.evaluation import runs
    from mlbridge_models.subgrid.truth import grid_files

    first, last = runs.parse_years(truth_years, "--truth-years")
    files = grid_files(Path(truth), first, last)
    info = runs._grid_info(like)
    flow = runs.coarse_truth(files, info["ny"], info["nx"], info["dx"], u_filter)
    times = (
        np.concatenate([runs._read_vars(f, ("time_counter",))[0] for f in files])
        / runs.SECONDS_PER_YEAR
    )
    arrays = summarise(flow, times, info["dx"], info["dy"])
    provenance = {
        "truth": str(truth),
        "truth_years": [first, last],
        "records": int(times.size),
        "coarse_grid": {k: info[k] for k in ("nz", "ny", "nx", "dx", "dy")},
        "u_filter": u_filter,
        "ke_mean_pj": [float(x) / 1e15 for x in arrays["ke_series"].mean(axis=0)],
        "command": f"python -m {MODULE} --truth {truth} --truth-years {truth_years} "
        f"--like {like} --out {out}",
    }
    return write(Path(out), arrays, provenance)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Write the committed summary of the coarse-grained fine truth (KE spectra "
        "and KE per layer, a snapshot) used where the fine run is not at hand.",
        epilog="example:\n  python -m mlbridge_models.evaluation.reference --truth runs/truth "
        "--truth-years 8-12 \\\n      --like runs/eval/baseline/member_1/year_001/COARSE_*/"
        "COARSE_grid.nc --out models/artifacts/truth_reference\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--truth", type=Path, required=True, help="the fine run's folder")
    p.add_argument("--truth-years", required=True, help="FIRST-LAST")
    p.add_argument("--like", type=Path, required=True, help="a grid file of the coarse model")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--u-filter", choices=("face", "box"), default="face")
    a = p.parse_args(argv)
    from mlbridge_models.evaluation.runs import EvalError
    from mlbridge_models.subgrid.truth import TruthError

    try:
        path = build(a.truth, a.truth_years, a.like, a.out, a.u_filter)
    except (ReferenceError, EvalError, TruthError, ValueError, OSError) as exc:
        print(f"reference: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
