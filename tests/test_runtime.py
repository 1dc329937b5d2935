"""The torch runtime: zero-copy hand-over, normalisation, mask, clip, dtypes, batching, and
offline == online (a CNN on the global field equals the same CNN on halo'd blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlbridge_models.cnn import CNNConfig, build_cnn

from bridge.closures.base import (
    Closure,
    ClosureInputError,
    ClosureOutputError,
    ClosureSpec,
    FieldSpec,
)
from bridge.registry.manifest import Normalisation, parse_manifest
from bridge.registry.runtime import load_closure
from bridge.registry.torch_closure import (
    ClosureLoadError,
    ManifestClosure,
    TorchClosure,
    resolve_device,
)
from bridge.registry.trust import CodeTrust, UntrustedCodeError

CUDA = torch.cuda.is_available()


def spec(inputs=("u",), outputs=("s",), halo=1, dtype="float32") -> ClosureSpec:
    return ClosureSpec(
        "test",
        halo,
        tuple(FieldSpec(n, "T", "") for n in inputs),
        tuple(FieldSpec(n, "T", "") for n in outputs),
        dtype,
    )


class Interior(torch.nn.Module):
    """Returns the interior of every input channel: the identity closure with a halo."""

    def __init__(self, halo: int) -> None:
        super().__init__()
        self.halo = halo
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        h = self.halo
        return x[:, :, h : x.shape[2] - h, h : x.shape[3] - h].clone()


def field(shape, seed=0, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_torch_closure_is_a_closure() -> None:
    c = TorchClosure(Interior(1), spec())
    assert isinstance(c, Closure)
    assert c.spec.halo == 1


def test_single_input_reaches_the_module_without_a_copy() -> None:
    module = Interior(1)
    c = TorchClosure(module, spec(dtype="float32"))
    u = field((4, 10, 12), dtype=np.float32)
    out = c({"u": u})["s"]
    seen = module.seen[-1]
    assert seen.shape == (4, 1, 10, 12)
    assert seen.data_ptr() == u.ctypes.data  # the module read the caller's buffer itself
    np.testing.assert_array_equal(out, u[:, 1:-1, 1:-1])
    assert out.flags.c_contiguous and out.dtype == np.float32
    assert not np.shares_memory(out, u)


def test_several_inputs_stacked_once_and_never_written() -> None:
    module = Interior(2)
    c = TorchClosure(
        module,
        spec(("u", "v"), ("a", "b"), halo=2),
        input_norm={"u": Normalisation(1.0, 2.0)},
        output_norm={"a": Normalisation(1.0, 2.0)},
    )
    u, v = field((3, 12, 9), 1, np.float32), field((3, 12, 9), 2, np.float32)
    u0, v0 = u.copy(), v.copy()
    out = c({"u": u, "v": v})
    np.testing.assert_array_equal(u, u0)
    np.testing.assert_array_equal(v, v0)
    assert module.seen[-1].shape == (3, 2, 12, 9)
    np.testing.assert_allclose(out["a"], u[:, 2:-2, 2:-2], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["b"], v[:, 2:-2, 2:-2])
    assert all(a.flags.c_contiguous and a.shape == (3, 8, 5) for a in out.values())


def test_normalisation_is_applied_in_and_undone_out() -> None:
    module = Interior(1)
    norm = Normalisation(offset=5.0, scale=0.25, style="mean_std")
    c = TorchClosure(module, spec(dtype="float64"), input_norm={"u": norm}, output_norm={"s": norm})
    u = 5.0 + 0.25 * field((2, 30, 30), 3)
    out = c({"u": u})["s"]
    seen = module.seen[-1].numpy()
    np.testing.assert_allclose(seen, (u[:, None] - 5.0) / 0.25, rtol=1e-12)
    np.testing.assert_allclose(out, u[:, 1:-1, 1:-1], rtol=1e-12)
    # and the network's own unit: output norm alone scales a raw network output
    c2 = TorchClosure(
        Interior(1), spec(dtype="float64"), output_norm={"s": Normalisation(1.0, 1e-7)}
    )
    np.testing.assert_allclose(c2({"u": u})["s"], u[:, 1:-1, 1:-1] * 1e-7 + 1.0, rtol=1e-12)


@pytest.mark.parametrize("mask_shape", ["2d", "3d", "2d_halo"])
def test_mask_zeroes_land(mask_shape: str) -> None:
    c = TorchClosure(Interior(1), spec(dtype="float64"))
    u = field((3, 8, 7), 4) + 10.0
    interior = np.ones((6, 5))
    interior[2:4, 1:3] = 0
    mask = {
        "2d": interior,
        "3d": np.broadcast_to(interior, (3, 6, 5)),
        "2d_halo": np.pad(interior, 1),
    }[mask_shape]
    out = c({"u": u}, mask=mask)["s"]
    assert np.all(out[:, interior == 0] == 0)
    np.testing.assert_array_equal(out[:, interior == 1], u[:, 1:-1, 1:-1][:, interior == 1])
    with pytest.raises(ClosureInputError, match=r"mask should be \(6, 5\)"):
        c({"u": u}, mask=np.ones((4, 4)))


def test_clip_bounds_outputs_and_counts() -> None:
    c = TorchClosure(Interior(0), spec(halo=0, dtype="float64"), clip={"s": 1.5})
    u = np.array([[[0.0, 2.0, -3.0, 1.0]]])
    out = c({"u": u})["s"]
    np.testing.assert_array_equal(out, [[[0.0, 1.5, -1.5, 1.0]]])
    assert c.stats.clipped == {"s": 2} and c.stats.calls == 1
    c({"u": u})
    assert c.stats.clipped == {"s": 4}


@pytest.mark.parametrize(
    ("closure_dtype", "caller_dtype"),
    [
        ("float32", np.float32),
        ("float32", np.float64),
        ("float64", np.float32),
        ("float64", np.float64),
    ],
)
def test_computes_in_manifest_dtype_returns_caller_dtype(closure_dtype, caller_dtype) -> None:
    module = Interior(1)
    c = TorchClosure(module, spec(("u", "v"), ("a", "b"), dtype=closure_dtype))
    u, v = field((2, 6, 6), 5, caller_dtype), field((2, 6, 6), 6, caller_dtype)
    out = c({"u": u, "v": v})
    assert module.seen[-1].dtype == getattr(torch, closure_dtype)
    assert out["a"].dtype == caller_dtype and out["b"].dtype == caller_dtype
    np.testing.assert_allclose(out["a"], u[:, 1:-1, 1:-1], rtol=1e-6)


def test_levels_batched_equals_one_level_at_a_time() -> None:
    torch.manual_seed(0)
    module = build_cnn(2, 2, hidden=(8, 8, 8)).eval()
    c = TorchClosure(module, spec(("u", "v"), ("su", "sv"), halo=4, dtype="float32"))
    u, v = field((7, 20, 18), 7, np.float32), field((7, 20, 18), 8, np.float32)
    batched = c({"u": u, "v": v})
    chunked = TorchClosure(module, c.spec, levels_per_call=3)({"u": u, "v": v})  # 3 + 3 + 1
    for name in ("su", "sv"):
        np.testing.assert_allclose(chunked[name], batched[name], rtol=1e-5, atol=1e-6)
    for k in range(7):
        one = c({"u": u[k : k + 1], "v": v[k : k + 1]})
        for name in ("su", "sv"):
            np.testing.assert_allclose(one[name][0], batched[name][k], rtol=1e-5, atol=1e-6)


def test_levels_per_call_with_dict_outputs() -> None:
    class Named(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"b": x[:, 1, 1:-1, 1:-1] * 2, "a": x[:, 0, 1:-1, 1:-1]}

    u, v = field((5, 6, 6), 15), field((5, 6, 6), 16)
    c = TorchClosure(Named(), spec(("u", "v"), ("a", "b"), dtype="float64"), levels_per_call=2)
    out = c({"u": u, "v": v})
    np.testing.assert_array_equal(out["a"], u[:, 1:-1, 1:-1])
    np.testing.assert_array_equal(out["b"], 2 * v[:, 1:-1, 1:-1])
    with pytest.raises(ValueError, match="levels_per_call must be >= 1"):
        TorchClosure(Named(), c.spec, levels_per_call=0)


def cut_blocks(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return list(zip(edges[:-1], edges[1:], strict=True))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_offline_equals_online_cnn_on_blocks_with_halo(dtype: str) -> None:
    """The core promise: a valid-convolution CNN on halo'd blocks reproduces the global result."""
    torch.manual_seed(1)
    cfg = CNNConfig(in_channels=2, out_channels=2, hidden=(16, 16, 16))
    module = build_cnn(2, 2, cfg.hidden, cfg.kernel_sizes).to(getattr(torch, dtype)).eval()
    h = cfg.halo
    assert h == 4
    c = TorchClosure(module, spec(("u", "v"), ("su", "sv"), halo=h, dtype=dtype))
    nz, ny, nx = 3, 37, 45
    np_dtype = np.dtype(dtype)
    u, v = field((nz, ny, nx), 9, np_dtype), field((nz, ny, nx), 10, np_dtype)
    # closed basin: the halo beyond the domain edge is zero, as the server fills it
    pu, pv = (np.pad(a, ((0, 0), (h, h), (h, h))) for a in (u, v))
    whole = c({"u": pu, "v": pv})
    assert whole["su"].shape == (nz, ny, nx)
    for j0, j1 in cut_blocks(ny, 3):
        for i0, i1 in cut_blocks(nx, 2):
            box = np.s_[:, j0 : j1 + 2 * h, i0 : i1 + 2 * h]
            block = c({"u": pu[box], "v": pv[box]})
            for name in ("su", "sv"):
                ref = whole[name][:, j0:j1, i0:i1]
                err = np.abs(block[name] - ref).max() / np.abs(ref).max()
                assert err <= (1e-6 if dtype == "float32" else 1e-12), (name, j0, i0, err)


def test_input_errors_name_the_field() -> None:
    c = TorchClosure(Interior(2), spec(("u", "v"), ("a", "b"), halo=2))
    good = field((2, 9, 9))
    with pytest.raises(ClosureInputError, match=r"missing \['v'\]"):
        c({"u": good})
    with pytest.raises(ClosureInputError, match=r"unexpected \['w'\]"):
        c({"u": good, "v": good, "w": good})
    with pytest.raises(ClosureInputError, match=r"input 'v' has shape \(2, 9, 8\)"):
        c({"u": good, "v": good[:, :, :8]})
    with pytest.raises(ClosureInputError, match="leaves no interior with halo 2"):
        c({"u": good[:, :4, :4], "v": good[:, :4, :4]})
    with pytest.raises(ClosureInputError, match="input 'u' must be 3D"):
        c({"u": good[0], "v": good[0]})
    with pytest.raises(ClosureInputError, match="input 'u' must be float32 or float64"):
        c({"u": good.astype(int), "v": good})


def test_output_errors_name_the_output_and_both_values() -> None:
    class Wrong(torch.nn.Module):
        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

        def forward(self, x: torch.Tensor):
            y = x[:, :, 1:-1, 1:-1]
            if self.mode == "dtype":
                return y.double()
            if self.mode == "name":
                return {"wrong": y[:, 0]}
            if self.mode == "halo":
                return x
            return y[:, :1]

    u = field((2, 6, 6), dtype=np.float32)
    s2 = spec(("u", "v"), ("a", "b"))
    with pytest.raises(
        ClosureOutputError, match="output 'a' should be float32, the module returned float64"
    ):
        TorchClosure(Wrong("dtype"), s2)({"u": u, "v": u})
    with pytest.raises(
        ClosureOutputError, match=r"declared \['a', 'b'\], the module returned \['wrong'\]"
    ):
        TorchClosure(Wrong("name"), s2)({"u": u, "v": u})
    with pytest.raises(
        ClosureOutputError,
        match=r"'a' should have shape \(2, 4, 4\).*returned \(2, 6, 6\).*consumes a halo of 0",
    ):
        TorchClosure(Wrong("halo"), s2)({"u": u, "v": u})
    with pytest.raises(ClosureOutputError, match=r"should return \(nz, 2, ny, nx\)"):
        TorchClosure(Wrong("count"), s2)({"u": u, "v": u})


def test_non_contiguous_and_byteswapped_inputs() -> None:
    c = TorchClosure(Interior(1), spec(dtype="float64"))
    base = field((4, 10, 10), 11)
    strided = base[::2, ::-1, :]
    np.testing.assert_array_equal(c({"u": strided})["s"], strided[:, 1:-1, 1:-1])
    swapped = base.astype(">f8")
    np.testing.assert_array_equal(c({"u": swapped})["s"], base[:, 1:-1, 1:-1])


class Doubler:
    """A plain Python closure: s = 2 u on the interior."""

    def __init__(self, halo: int = 1) -> None:
        u = FieldSpec("u", "T", "m")
        self.spec = ClosureSpec("doubler", halo, (u,), (FieldSpec("s", "T", "m"),), "float64")

    def __call__(self, inputs):
        h = self.spec.halo
        return {"s": 2.0 * inputs["u"][:, h:-h, h:-h]}


def make_doubler(halo: int = 1) -> Doubler:
    return Doubler(halo)


PYTHON_MANIFEST = f"""
name = "doubler"
version = "1"
format = "python"
entry_point = "{__name__}:make_doubler"
halo = 1
dtype = "float64"
[arch]
halo = 1
[[inputs]]
name = "u"
grid = "T"
units = "m"
[[outputs]]
name = "s"
grid = "T"
units = "m"
clip = 3.0
"""


TRUSTED = CodeTrust(code=True)  # this module's closure factory: the test trusts its own code


def test_python_closure_wrapped_with_clip_mask_and_dtype() -> None:
    with pytest.raises(UntrustedCodeError, match="not shipped with an installed package"):
        load_closure(parse_manifest(PYTHON_MANIFEST))
    c = load_closure(parse_manifest(PYTHON_MANIFEST), trust=TRUSTED)
    assert isinstance(c, ManifestClosure) and isinstance(c, Closure)
    u = field((2, 5, 5), 12, np.float32)
    mask = np.ones((3, 3))
    mask[0, 0] = 0
    out = c({"u": u}, mask=mask)["s"]
    expected = np.clip(2.0 * u[:, 1:-1, 1:-1], -3.0, 3.0)
    expected[:, 0, 0] = 0
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(
        ClosureLoadError, match="halo: the manifest declares 1, the closure .* has 2"
    ):
        load_closure(
            parse_manifest(PYTHON_MANIFEST.replace("[arch]\nhalo = 1", "[arch]\nhalo = 2")),
            trust=TRUSTED,
        )


def test_device_resolution_and_threads() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    if not CUDA:
        with pytest.raises(ClosureLoadError, match="no CUDA GPU"):
            resolve_device("cuda", required=True)
        with pytest.warns(RuntimeWarning, match="using the CPU"):
            assert resolve_device("cuda").type == "cpu"
    with pytest.raises(ClosureLoadError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    before = torch.get_num_threads()
    try:
        load_closure(parse_manifest(PYTHON_MANIFEST), threads=1, trust=TRUSTED)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_numbers() -> None:
    torch.manual_seed(2)
    module = build_cnn(2, 2, hidden=(16, 16, 16)).eval()
    s = spec(("u", "v"), ("su", "sv"), halo=4, dtype="float64")
    norm = {"u": Normalisation(0.1, 2.0), "v": Normalisation(-0.1, 3.0)}
    cpu = TorchClosure(module, s, input_norm=norm, clip={"su": 0.05})
    gpu = TorchClosure(
        build_cnn(2, 2, hidden=(16, 16, 16)).to("cuda", torch.float64).eval(),
        s,
        input_norm=norm,
        clip={"su": 0.05},
        device="cuda",
    )
    gpu.module.load_state_dict(module.state_dict())
    cpu.module.double()
    u, v = field((5, 40, 40), 13), field((5, 40, 40), 14)
    mask = np.ones((32, 32))
    mask[:4] = 0
    a, b = cpu({"u": u, "v": v}, mask=mask), gpu({"u": u, "v": v}, mask=mask)
    for name in ("su", "sv"):
        np.testing.assert_allclose(b[name], a[name], rtol=1e-9, atol=1e-12)
    assert gpu.stats.clipped == cpu.stats.clipped


def test_cpu_default_runs_levels_in_cache_sized_batches() -> None:
    from bridge.registry.torch_closure import CPU_LEVELS_PER_CALL

    torch.manual_seed(0)
    module = build_cnn(2, 2, hidden=(8, 8, 8)).eval()
    s = spec(("u", "v"), ("su", "sv"), halo=4, dtype="float64")
    default = TorchClosure(module.double(), s)
    assert default.levels_per_call == CPU_LEVELS_PER_CALL
    one_call = TorchClosure(module, s, levels_per_call=1 << 30)
    nz = 2 * CPU_LEVELS_PER_CALL + 3
    u, v = field((nz, 17, 16), 1, np.float64), field((nz, 17, 16), 2, np.float64)
    a, b = default({"u": u, "v": v}), one_call({"u": u, "v": v})
    for name in ("su", "sv"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)


LEGACY_MANIFEST = """
name = "legacy-cnn"
version = "1"
format = "state_dict"
artifact = "weights.pt"
entry_point = "models.cnn:build_cnn"
halo = 2
dtype = "float32"
device = "cpu"
[arch]
in_channels = 2
out_channels = 2
hidden = [4]
kernel_sizes = [3, 3]
[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
[[inputs]]
name = "v"
grid = "V"
units = "m s-1"
[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
"""


@pytest.mark.parametrize("models_importable", [False, True], ids=["installed", "checkout"])
def test_legacy_models_entry_point_loads_from_mlbridge_models(
    tmp_path, monkeypatch: pytest.MonkeyPatch, models_importable: bool
) -> None:
    """A manifest registered before the rename names ``models.cnn:build_cnn``: it still loads,
    from ``mlbridge_models`` (an installed wheel has no ``models``; in a checkout ``models/`` is
    the same package, imported under one name only)."""
    import sys
    from pathlib import Path

    from mlbridge_models.cnn import SubgridCNN

    if models_importable:
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    else:
        monkeypatch.setitem(sys.modules, "models", None)  # `import models` raises ImportError
    torch.manual_seed(0)
    reference = build_cnn(2, 2, hidden=(4,), kernel_sizes=(3, 3)).eval()
    weights = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), weights)
    closure = load_closure(parse_manifest(LEGACY_MANIFEST), weights, device="cpu")
    assert isinstance(closure, TorchClosure)
    assert type(closure.module) is SubgridCNN  # the class of mlbridge_models, not a second copy
    u, v = field((2, 9, 9), 20, np.float32), field((2, 9, 9), 21, np.float32)
    out = closure({"u": u, "v": v})
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.stack([u, v], axis=1))).numpy()
    np.testing.assert_allclose(out["su"], expected[:, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["sv"], expected[:, 1], rtol=1e-5, atol=1e-7)
