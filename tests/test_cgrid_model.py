"""A model that is not NEMO-shaped, coupled: ``cgrid_west_model`` (tests/fortran) and ``cgrid_sw``.

The model keeps its U points on the WEST face of the T cell (V on the south face), reads its own
``parameters.in`` and decomposes the grid its own way; the closure ``cgrid_sw`` is written for
NEMO's convention (U on the east face). The server shifts the staggered fields between the two,
so the closure acts on the physically same points in both: what the model receives equals the
closure's stencil written in the model's own convention (:func:`west_reference`), bit for bit,
whatever the numbers of model and server ranks.

The job is started by ``mlbridge run`` alone (:func:`run_cgrid`), from a ``[model]`` of kind
``generic``: the executable, its argument, the input file to stage, the grid and the steps; no
NEMO namelist, no wrapper.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.domain.stagger import point_masks

REPO = Path(__file__).resolve().parents[1]
NX, NY, STEPS = 24, 16, 4
EXCHANGE: dict[str, Any] = {
    "closure": "cgrid_sw",
    "inputs": {"h": "h", "u": "u", "v": "v"},
    "outputs": {"dh": "dh", "du": "du", "dv": "dv"},
}


@pytest.fixture(scope="module")
def cgrid_exe(fortran_build: Path) -> Path:
    exe = fortran_build / "bin" / "cgrid_west_model"
    assert exe.is_file(), f"{exe} was not built"
    return exe


def run_cgrid(
    case: Path, exe: Path, n: int, m: int, **params: Any
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``mlbridge run`` of the model described generically in ``case`` (its own ``parameters.in``
    staged, no namelist, no wrapper) with ``n`` model and ``m`` server ranks: the command's
    result and the run directory."""
    case.mkdir(parents=True, exist_ok=True)
    values = {"nx": NX, "ny": NY, "nsteps": STEPS, "out": "cgrid", **params}
    (case / "parameters.in").write_text(
        "# cgrid_west_model input\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    )
    (case / "coupling.toml").write_text(
        "[model]\n"
        'kind = "generic"\n'
        f'executable = "{exe}"\n'
        'args = ["parameters.in"]\n'
        'stage = ["parameters.in"]\n'
        f"ranks = {n}\nsteps = {STEPS}\nnx = {NX}\nny = {NY}\n\n"
        f"[server]\nranks = {m}\ntimeout_s = 60.0\n\n"
        '[run]\nworkdir = "runs"\n\n'
        "[[exchange]]\n"
        'closure = "cgrid_sw"\n'
        'inputs = { h = "h", u = "u", v = "v" }\n'
        'outputs = { dh = "dh", du = "du", dv = "dv" }\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", str(case / "coupling.toml"), "--progress"],
        cwd=case,
        capture_output=True,
        text=True,
        timeout=240,
    )
    found = re.search(r"run directory (\S+)", proc.stdout)
    assert found, f"no run directory in the output:\n{proc.stdout}\n{proc.stderr}"
    return proc, Path(found.group(1))


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"rc {proc.returncode}\n{tail}"


def read_records(run_dir: Path, n: int) -> np.ndarray:
    """Global ``(steps, 6, ny, nx)``: h, u, v as sent and dh, du, dv as received, each step."""
    out = np.full((STEPS, 6, NY, NX), np.nan)
    for r in range(n):
        i0, j0, nxl, nyl = (int(w) for w in (run_dir / f"cgrid_r{r}.txt").read_text().split())
        raw = np.fromfile(run_dir / f"cgrid_r{r}.bin", dtype=np.float64)
        out[:, :, j0 : j0 + nyl, i0 : i0 + nxl] = raw.reshape(STEPS, 6, nyl, nxl)
    assert not np.isnan(out).any(), "some points were written by no rank"
    return out


def tmask() -> np.ndarray:
    """The model's T mask: a closed basin with a rectangular island (its ``ocean`` function)."""
    gi = np.arange(1, NX + 1)[None, :]
    gj = np.arange(1, NY + 1)[:, None]
    island = (gi > NX // 3) & (gi <= NX // 2) & (gj > NY // 3) & (gj <= (2 * NY) // 3)
    return (~island).astype(np.float64)


def west_reference(h: np.ndarray, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """``cgrid_sw`` written in the west-face convention (``U(i)`` at ``i - 1/2``), zero beyond
    the closed edge, U and V outputs masked by umask, vmask of NEMO's rule on west faces."""
    hp, up, vp = (np.pad(a, ((1, 1), (1, 1))) for a in (h, u, v))
    masks = point_masks(tmask(), ("west", "south"), "closed")
    du = -1.0 * (hp[1:-1, 1:-1] - hp[1:-1, :-2])
    dv = -1.0 * (hp[1:-1, 1:-1] - hp[:-2, 1:-1])
    dh = -1.0 * ((up[1:-1, 2:] - up[1:-1, 1:-1]) + (vp[2:, 1:-1] - vp[1:-1, 1:-1]))
    return {
        "dh": dh,
        "du": np.where(masks["U"] != 0, du, 0.0),
        "dv": np.where(masks["V"] != 0, dv, 0.0),
    }


@pytest.fixture(scope="module")
def baseline(cgrid_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The records of a 2-model-rank, 2-server run."""
    proc, run_dir = run_cgrid(tmp_path_factory.mktemp("cgrid") / "n2m2", cgrid_exe, 2, 2)
    _ok(proc)
    # progress and the count come from the servers: the model writes no time.step
    assert not (run_dir / "time.step").exists()
    assert f"finished {STEPS} steps" in proc.stdout, proc.stdout[-2000:]
    assert f"{STEPS}/{STEPS}" in proc.stderr  # the progress bar reached the total
    return read_records(run_dir, 2)


def test_west_face_model_gets_the_physically_same_stencil(baseline: np.ndarray) -> None:
    for step in range(STEPS):
        h, u, v, dh, du, dv = baseline[step]
        ref = west_reference(h, u, v)
        for name, got in (("dh", dh), ("du", du), ("dv", dv)):
            assert np.array_equal(got, ref[name]), (
                f"step {step + 1}, {name}: largest difference "
                f"{np.abs(got - ref[name]).max()} from the closure on the same physical points"
            )
    # the closure is not symmetric: had the server not shifted, du would be another field
    h, u, v = baseline[0, :3]
    hp = np.pad(h, 1)
    unshifted = -1.0 * (hp[1:-1, 2:] - hp[1:-1, 1:-1])
    assert not np.array_equal(baseline[0, 4], unshifted)


def test_u_output_is_zero_exactly_where_umask_is_zero(baseline: np.ndarray) -> None:
    masks = point_masks(tmask(), ("west", "south"), "closed")
    umask, t = masks["U"], masks["T"]
    du = baseline[0, 4]
    assert np.array_equal(du == 0.0, umask == 0.0)
    # U points whose own T point is ocean but whose west neighbour is land: the T mask would keep
    # them, the U mask zeroes them
    coast = (t == 1.0) & (umask == 0.0)
    assert coast.sum() >= NY // 3
    dv = baseline[0, 5]
    assert np.array_equal(dv == 0.0, masks["V"] == 0.0)


def test_bit_identical_across_model_and_server_ranks(
    cgrid_exe: Path, baseline: np.ndarray, tmp_path: Path
) -> None:
    for n, m in ((1, 1), (1, 2), (2, 1), (4, 1), (4, 2)):
        proc, run_dir = run_cgrid(tmp_path / f"n{n}m{m}", cgrid_exe, n, m)
        _ok(proc)
        records = read_records(run_dir, n)
        assert np.array_equal(records, baseline), (
            f"{n} model x {m} server ranks differ from 2 x 2: largest difference "
            f"{np.abs(records - baseline).max()}"
        )


def test_handshake_refuses_a_point_mismatch(cgrid_exe: Path, tmp_path: Path) -> None:
    proc, _ = run_cgrid(tmp_path, cgrid_exe, 2, 1, u_grid="T")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "model field 'u' is on the T point" in text, text[-3000:]
    assert "closure 'cgrid_sw' takes its input 'u' on the U point" in text
    assert "U at i-1/2, V at j-1/2 (west south)" in text  # the model's convention
    assert "U at i+1/2, V at j+1/2 (east north)" in text  # the closure's
    assert "cgrid_west_model (world rank" in text  # the model said it, then ended every rank
