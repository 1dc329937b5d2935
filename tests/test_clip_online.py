"""The online report of clip bounds: a registry closure's output beyond its ``clip`` in a run.

The closure is the analytic Zanna & Bolton closure (``models/zanna_bolton.py``, ``format =
"python"``) registered in a temporary registry with a tiny ``clip`` on ``su`` only, coupled to
the toy model (1 model rank, 1 server rank) for more steps than the server reports: the server
rank's log names the step, the field, the global point and the value before clipping, at most
:data:`bridge.server.engine.CLIP_REPORT_LIMIT` times, and the totals per field reach ``timing.json``
and the printed summary.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlbridge_models.zanna_bolton import manifest_toml
from toy_helpers import COARSE_CFG, SMALL_BASIN, merge, read_nc

from bridge.config.coupling import CouplingConfig
from bridge.config.namelist import write_patched_cfg
from bridge.launch.launcher import RunResult, launch
from bridge.registry.torch_closure import ClipRecord, ManifestClosure
from bridge.server.engine import CLIP_REPORT_LIMIT, global_point, merged_clipped

REPO = Path(__file__).resolve().parents[1]
NX, NY, NZ = 23, 17, 2
STEPS = 30  # more clip events than CLIP_REPORT_LIMIT
CLIP = 1.0e-20  # m s-2: every non-zero forcing is beyond it
LINE = re.compile(
    r"mlbridge server rank 0: clip at step (\d+): 'u_tend' \(closure output 'su'\) = (\S+) "
    r"before clipping to \+-1e-20 at model rank 0, global \(i, j, k\) = \((\d+), (\d+), (\d+)\) "
    r"\(1-based, Fortran order; the largest of (\d+) value\(s\) clipped"
)


# --- the block index -> global point translation ----------------------------------------------


def test_global_point_is_one_based_fortran_order() -> None:
    shape = (3, 4, 5)  # (nz, ny, nx)
    block = np.zeros(shape)
    block[2, 1, 3] = 7.0
    index = int(np.argmax(block))
    assert global_point(index, shape, 0, 0) == (4, 2, 3)
    assert global_point(index, shape, 10, 20) == (14, 22, 3)
    assert global_point(0, shape, 10, 20) == (11, 21, 1)


def test_merged_clipped_sums_over_server_ranks() -> None:
    summaries = [{"clipped": {"u_tend": 3, "v_tend": 0}}, {"clipped": {"u_tend": 4}}, {}]
    assert merged_clipped(summaries) == {"u_tend": 7, "v_tend": 0}


def test_last_clip_records_worst_value_and_resets(tmp_path: Path) -> None:
    from bridge.registry.store import Registry

    home = register(tmp_path)
    closure = Registry(home).load("zanna_bolton@1", device="cpu")
    assert isinstance(closure, ManifestClosure)
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(2, 12, 12)), rng.normal(size=(2, 12, 12))
    raw = closure.inner({"u": u, "v": v})["su"]
    out = closure({"u": u, "v": v})
    record = closure.stats.last_clip["su"]
    assert isinstance(record, ClipRecord) and "sv" not in closure.stats.last_clip
    worst = int(np.argmax(np.abs(raw)))
    assert record == (raw.reshape(-1)[worst], worst, int(np.count_nonzero(raw)), CLIP)
    assert closure.stats.clipped["su"] == record.count
    assert np.abs(out["su"]).max() == CLIP
    closure({"u": np.zeros_like(u), "v": np.zeros_like(v)})  # nothing beyond the bound
    assert closure.stats.last_clip == {}


def test_torch_last_clip_on_a_channel_view_skips_nan() -> None:
    torch = pytest.importorskip("torch")
    from bridge.closures.base import ClosureSpec, FieldSpec
    from bridge.registry.torch_closure import TorchClosure

    class Channels(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x  # (nz, 2, ny, nx): the outputs are strided views of one tensor

    fields = tuple(FieldSpec(n, "T", "") for n in ("a", "b"))
    spec = ClosureSpec("two", 0, fields, fields, "float64")
    c = TorchClosure(Channels(), spec, clip={"b": 1.5})
    a = np.full((2, 3, 4), 9.0)
    b = np.zeros((2, 3, 4))
    b[0, 0, 0] = np.nan
    b[1, 2, 1], b[0, 1, 3] = -4.0, 2.0
    out = c({"a": a, "b": b})
    assert c.stats.last_clip == {"b": (-4.0, int(np.ravel_multi_index((1, 2, 1), b.shape)), 2, 1.5)}
    assert out["b"][1, 2, 1] == -1.5 and (out["a"] == 9.0).all()
    c({"a": a, "b": np.zeros_like(b)})
    assert c.stats.last_clip == {} and c.stats.clipped == {"b": 2}


# --- a coupled run ----------------------------------------------------------------------------


def register(tmp_path: Path) -> Path:
    """A registry holding zanna_bolton@1 with ``clip = CLIP`` on ``su``."""
    text = manifest_toml().replace('units = "m s-2"\n', f'units = "m s-2"\nclip = {CLIP!r}\n', 1)
    assert text.count("clip =") == 1
    manifest = tmp_path / "zanna_bolton.toml"
    manifest.write_text(text)
    home = tmp_path / "registry"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "register", "--manifest", str(manifest)]
        + ["--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return home


def logs(result: RunResult) -> str:
    parts = []
    for log in result.rank_logs:
        for f in (log.stdout, log.stderr):
            if f.is_file():
                parts.append(f"--- {log.label} {f.name}\n{f.read_text(errors='replace')}")
    return "\n".join(parts)


def server_log(result: RunResult) -> str:
    (log,) = (log for log in result.rank_logs if log.program == "server")
    return log.stdout.read_text() if log.stdout.is_file() else ""


def test_clip_reported_online_and_counted(tmp_path: Path, fortran_build: Path) -> None:
    home = register(tmp_path)
    case = tmp_path / "case"
    case.mkdir()
    patch = merge(
        SMALL_BASIN,
        {
            "namrun": {"cn_exp": "TOY", "nn_itend": STEPS, "nn_write": 1, "nn_stock": 0},
            "namusr_def": {"nn_nz": NZ},
            "nammlb": {"cn_mlb_snd": ["u", "v", ""], "cn_mlb_rcv": ["u_tend", "v_tend", ""]},
        },
    )
    write_patched_cfg(COARSE_CFG, patch, case / "namelist_cfg")
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": "toy_nemo", "ranks": 1, "namelist_cfg": "namelist_cfg"},
            "server": {"ranks": 1, "timeout_s": 30.0, "registry": str(home), "device": "cpu"},
            "run": {"workdir": str(case / "runs")},
            "exchange": [
                {
                    "closure": "zanna_bolton@1",
                    "inputs": {"u": "u", "v": "v"},
                    "outputs": {"su": "u_tend", "sv": "v_tend"},
                }
            ],
        },
        base_dir=case,
    )
    result = launch(config, quiet=True, build_dir=fortran_build)
    assert result.returncode == 0, logs(result)[-4000:]

    text = server_log(result)
    found = [m.groups() for m in LINE.finditer(text)]
    assert found, text[-3000:]
    # at most one line per field per step, CLIP_REPORT_LIMIT in all, then one "not shown" line
    steps = [int(g[0]) for g in found]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert len(found) == CLIP_REPORT_LIMIT, text[-3000:]
    assert text.count("further clip events not shown") == 1
    assert "'v_tend'" not in text  # sv has no clip bound
    nc = read_nc(result.run_dir / "TOY_grid.nc", ("u_tend",))["u_tend"]
    for kt, value, i, j, k, count in found[:5]:
        gi, gj, gk = int(i), int(j), int(k)
        assert 1 <= gi <= NX and 1 <= gj <= NY and 1 <= gk <= NZ
        assert abs(float(value)) > CLIP and int(count) >= 1
        # what the model received there is the value clipped to the bound, with its sign
        received = nc[int(kt) - 1, gk - 1, gj - 1, gi - 1]
        assert received == pytest.approx(np.sign(float(value)) * CLIP, rel=1e-12), (kt, received)

    timing = result.timing
    assert timing is not None
    assert timing["clipped"]["u_tend"] > 0 and "v_tend" not in timing["clipped"]
    assert timing["clipped"]["u_tend"] >= sum(int(g[5]) for g in found)
    total = timing["clipped"]["u_tend"]
    assert f"clipped {total} value(s) to the closures' clip bounds (u_tend {total})" in logs(result)
