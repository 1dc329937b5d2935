"""Surface (one-level) fields next to 3D fields in one exchange, through the real toy.

The toy sends ``u`` on all its layers and ``h`` on its top layer only (``&nammlb nn_mlb_lev``:
``nlev = 1``, a surface field such as SSH); the ``surface_laplacian`` closure takes ``h`` as
its surface input ``s`` (``levels = 1``) and returns ``u_tend = laplacian(s) * u`` on every
layer. The tendencies the model used are in its output: they must equal the closure applied
with NumPy to the model's own output, bit for bit, for any number of model and server ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_coupling_toy import config_for, logs, make_case, output, run

from bridge.closures.analytic import analytic_closure, laplacian_op
from bridge.closures.base import (
    ClosureInputError,
    ClosureOutputError,
    ClosureSpec,
    FieldSpec,
    check_inputs,
    check_outputs,
)
from bridge.registry.manifest import ManifestError, manifest_to_toml, parse_manifest
from bridge.registry.torch_closure import TorchClosure

COEF = 1.0e-7  # m-1 s-1: lap(h) ~ 500 m at the rim, a damping of 5e-5 s-1 there


def surface_exchange() -> dict[str, object]:
    return {
        "closure": "surface_laplacian",
        "inputs": {"u": "u", "s": "h"},
        "outputs": {"slap_u": "u_tend"},
        "params": {"coefficient": COEF},
    }


def surface_case(path: Path, steps: int = 5, **options: Any) -> Path:
    """The small basin sending ``u`` (all layers) and ``h`` (top layer only), receiving u_tend."""
    return make_case(
        path,
        steps=steps,
        **options,
        nammlb={
            "cn_mlb_snd": ["u", "", "h"],
            "nn_mlb_lev": [0, 0, 1],
            "cn_mlb_rcv": ["u_tend", "", ""],
        },
    )


def reference(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``laplacian(h[top]) * u`` on whole closed-basin fields (zero beyond the edge)."""
    pad = ((0, 0), (1, 1), (1, 1))
    return laplacian_op(np.pad(h[:1], pad), COEF) * u


@pytest.mark.usefixtures("fortran_build")
@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (4, 2)])
def test_surface_and_3d_fields_coupled(tmp_path: Path, n: int, m: int) -> None:
    result = run(config_for(surface_case(tmp_path), n, m, [surface_exchange()]))
    out = output(result)
    assert out["u"].shape[1] == 3, "the toy should run 3 layers"
    assert np.abs(out["u_tend"]).max() > 0, "the closure did nothing"
    for s in range(1, out["u"].shape[0]):  # inputs of step s+1 are the outputs of step s
        expected = reference(out["u"][s - 1], out["h"][s - 1])
        np.testing.assert_array_equal(out["u_tend"][s], expected, f"N={n} M={m} step {s + 1}")
    assert not out["v_tend"].any() and not out["h_tend"].any()


@pytest.mark.usefixtures("fortran_build")
def test_surface_input_declared_with_all_levels_is_refused(tmp_path: Path) -> None:
    """``h`` sent with all 3 layers to a closure that takes it as a surface field."""
    case = make_case(
        tmp_path,
        nammlb={"cn_mlb_snd": ["u", "", "h"], "cn_mlb_rcv": ["u_tend", "", ""]},
    )
    result = run(config_for(case, 2, 1, [surface_exchange()]))
    text = logs(result)
    assert result.returncode != 0, text[-3000:]
    assert "model field 'h' has 3 levels" in text and "nlev = 1" in text, text[-3000:]


def test_closure_contract_of_surface_fields() -> None:
    closure = analytic_closure("surface_laplacian", ["u", "s"], {"coefficient": 2.0})
    rng = np.random.default_rng(0)
    u, s = rng.random((4, 6, 7)), rng.random((1, 6, 7))
    assert check_inputs(closure.spec, {"u": u, "s": s}) == (4, 4, 5)
    out = closure({"u": u, "s": s})
    check_outputs(closure.spec, out, (4, 4, 5))
    assert out["lap_s"].shape == (1, 4, 5) and out["slap_u"].shape == (4, 4, 5)
    np.testing.assert_array_equal(out["slap_u"][2], out["lap_s"][0] * u[2, 1:-1, 1:-1])
    with pytest.raises(ClosureInputError, match=r"'s' is a surface field.*4 levels"):
        check_inputs(closure.spec, {"u": u, "s": u})
    with pytest.raises(ClosureInputError, match=r"input .s. has .ny.2h, nx.2h. = .5, 7."):
        check_inputs(closure.spec, {"u": u, "s": s[:, 1:]})
    with pytest.raises(ClosureOutputError, match=r"'lap_s' should have shape \(1, 4, 5\)"):
        check_outputs(closure.spec, {**out, "lap_s": out["slap_u"]}, (4, 4, 5))


class _Channels(torch.nn.Module):
    """Returns the interior of every input channel (halo 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:-1, 1:-1].clone()


def test_torch_closure_broadcasts_a_surface_input_over_levels() -> None:
    spec = ClosureSpec(
        "both",
        1,
        (FieldSpec("u"), FieldSpec("ssh", levels=1)),
        (FieldSpec("a"), FieldSpec("b")),
        "float64",
    )
    rng = np.random.default_rng(1)
    u, ssh = rng.random((3, 6, 7)), rng.random((1, 6, 7))
    out = TorchClosure(_Channels(), spec)({"u": u, "ssh": ssh})
    np.testing.assert_array_equal(out["a"], u[:, 1:-1, 1:-1])
    for k in range(3):  # the surface channel is the same on every level
        np.testing.assert_array_equal(out["b"][k], ssh[0, 1:-1, 1:-1])
    surface_out = ClosureSpec("s", 1, spec.inputs, (FieldSpec("b", levels=1),), "float64")
    with pytest.raises(ValueError, match=r"outputs \['b'\] have levels = 1"):
        TorchClosure(_Channels(), surface_out)


MANIFEST = """
name = "surf"
version = "1.0"
format = "torchscript"
artifact = "model.pt"
halo = 1

[[inputs]]
name = "u"
grid = "U"
units = "m s-1"

[[inputs]]
name = "tau_x"
grid = "U"
units = "N m-2"
levels = 1

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
"""


def test_manifest_declares_surface_inputs() -> None:
    m = parse_manifest(MANIFEST)
    assert [f.levels for f in m.spec.inputs] == [None, 1]
    assert parse_manifest(manifest_to_toml(m)).spec == m.spec  # written back as read
    with pytest.raises(ManifestError, match=r"levels"):
        parse_manifest(MANIFEST.replace("levels = 1", "levels = 2"))
