"""How a registered closure runs (bridge/registry/compiled.py): channels-last and AOTInductor
engines equal the eager module, the compile cache is reused, and a damaged or foreign entry is
never trusted; the device path's kept host buffers (``TorchClosure(staging=True)``) on a CPU."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_registry import cnn, save_artifact, write_manifest

from bridge.cli import main
from bridge.closures.base import ClosureSpec, FieldSpec
from bridge.registry.compiled import (
    ENTRY_FILE,
    PACKAGE_FILE,
    CompileCache,
    compile_key,
    cxx_compiler,
    prepare_module,
)
from bridge.registry.store import Registry
from bridge.registry.torch_closure import TorchClosure

needs_cxx = pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler for AOTInductor")


def block(nz: int = 5, n: int = 20, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((nz, n + 8, n + 6)).astype(np.float32) for k in ("u", "v")}


def eager_reference(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([inputs["u"], inputs["v"]], axis=1))
        return module(x).numpy()


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, torch.nn.Module]:
    """An export-format CNN (hidden 8) registered without a normalisation: outputs are the
    module's own."""
    tmp = tmp_path_factory.mktemp("compiled")
    module = cnn(3)
    art = save_artifact(module, "export", tmp / "src")
    registry = Registry(tmp / "home")
    registry.register(art, write_manifest(tmp / "src", art.name, fmt="export"))
    return registry, module


def test_channels_last_is_the_default_without_a_package(
    registered: tuple[Registry, torch.nn.Module],
) -> None:
    registry, module = registered
    inputs = block()
    eager = registry.load("cnn@1.0", device="cpu", engine="eager")
    auto = registry.load("cnn@1.0", device="cpu")
    assert eager.engine == "eager" and eager.levels_per_call == 8
    assert auto.engine in ("channels_last", "aoti")  # aoti once another test compiled it
    assert auto.levels_per_call == 8 and auto.channels_last
    ref = eager_reference(module, inputs)
    for closure in (eager, auto):
        out = closure(inputs)
        np.testing.assert_allclose(out["su"], ref[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["sv"], ref[:, 1], rtol=1e-5, atol=1e-6)


def test_a_module_that_breaks_on_channels_last_falls_back_to_eager(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Flat(torch.nn.Module):  # .view needs contiguous memory: fails on a channels-last batch
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            return x.view(n, c * h * w).view(n, c, h, w)[:, :, 1:-1, 1:-1]

    with caplog.at_level(logging.WARNING, logger="bridge.registry.compiled"):
        prepared = prepare_module(
            Flat(), engine="channels_last", device=torch.device("cpu"), dtype="float32",
            in_channels=2, halo=1,
        )  # fmt: skip
    assert prepared.engine == "eager" and not prepared.channels_last
    assert "channels_last" in prepared.note and "view" in prepared.note
    assert "closure runs eager" in caplog.text


@needs_cxx
def test_compile_builds_then_reuses_then_rebuilds_a_damaged_entry(
    registered: tuple[Registry, torch.nn.Module], capsys: pytest.CaptureFixture[str]
) -> None:
    registry, module = registered
    inputs = block(nz=7, n=24)  # another shape than the one exported: dynamic shapes
    ref = eager_reference(module, inputs)
    assert main(["compile", "cnn@1.0", "--home", str(registry.root)]) == 0
    assert "compiled cnn@1.0" in capsys.readouterr().out

    sha = registry.show("cnn@1.0").record["sha256"]["model.pt2"]
    cache = CompileCache(registry.root)
    entry = cache.entry_dir(compile_key(sha, torch.device("cpu"), "float32"))
    package = entry / PACKAGE_FILE
    assert package.is_file() and (entry / ENTRY_FILE).is_file()
    assert (cache.directory.stat().st_mode & 0o777) == 0o700
    built = package.stat().st_mtime_ns

    # a later load (engine auto, the default) uses the cached package without compiling again
    closure = registry.load("cnn@1.0", device="cpu")
    assert closure.engine == "aoti" and "(cache)" in closure.engine_note
    assert package.stat().st_mtime_ns == built
    out = closure(inputs)
    np.testing.assert_allclose(out["su"], ref[:, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["sv"], ref[:, 1], rtol=1e-4, atol=1e-6)

    # a damaged package: auto does not trust it (removed, channels-last); compile rebuilds it
    package.write_bytes(package.read_bytes()[:-100] + b"x" * 100)
    damaged = registry.load("cnn@1.0", device="cpu")
    assert damaged.engine == "channels_last" and "discarded" in damaged.engine_note
    assert "sha256" in damaged.engine_note and not entry.exists()
    rebuilt = registry.compile("cnn@1.0")
    assert rebuilt.engine == "aoti" and "(built)" in rebuilt.engine_note
    np.testing.assert_allclose(rebuilt(inputs)["su"], ref[:, 0], rtol=1e-4, atol=1e-6)

    # an entry for another key (another torch, say) is refused by its entry.json
    record = json.loads((entry / ENTRY_FILE).read_text())
    record["key"]["torch"] = "0.0.0"
    (entry / ENTRY_FILE).write_text(json.dumps(record))
    path, why = cache.lookup(compile_key(sha, torch.device("cpu"), "float32"))
    assert path is None and "names another key" in why and "0.0.0" in why


def test_a_cache_entry_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    """An entry whose files are consistent (key, sha256) but that others may write."""
    cache = CompileCache(tmp_path)
    key = compile_key("a" * 64, torch.device("cpu"), "float32")
    entry = cache.entry_dir(key)
    entry.mkdir(parents=True)
    os.chmod(cache.directory, 0o700)
    (entry / PACKAGE_FILE).write_bytes(b"package")
    digest = hashlib.sha256(b"package").hexdigest()
    record = {"key": dataclasses.asdict(key), "package_sha256": digest}
    (entry / ENTRY_FILE).write_text(json.dumps(record))
    for path in (entry, entry / PACKAGE_FILE, entry / ENTRY_FILE):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    assert cache.lookup(key) == (entry / PACKAGE_FILE, "")  # consistent and private: trusted
    os.chmod(entry / PACKAGE_FILE, 0o666)
    path, why = cache.lookup(key)
    assert path is None and "writable by others" in why and PACKAGE_FILE in why
    assert not entry.exists()


def test_staged_path_equals_the_plain_one_and_keeps_its_buffers() -> None:
    """The GPU path (kept host buffers, non-blocking copies, one synchronisation), on a CPU."""
    torch.manual_seed(0)
    module = cnn(1)
    fields = (FieldSpec("u", "U"), FieldSpec("v", "V"))
    spec = ClosureSpec("c", 4, fields, (FieldSpec("su", "U"), FieldSpec("sv", "V")), "float32")
    kw = {"clip": {"su": 0.05}, "device": "cpu"}
    plain = TorchClosure(module, spec, **kw)
    staged = TorchClosure(module, spec, staging=True, **kw)
    assert plain.staging is None and staged.staging is not None
    assert staged.staging.pinned == torch.cuda.is_available()
    first = block(nz=4, n=16, seed=2)
    mask = (np.random.default_rng(3).random((16, 14)) > 0.3).astype(np.float64)
    a, b = plain(first, mask), staged(first, mask)
    for name in ("su", "sv"):
        np.testing.assert_array_equal(a[name], b[name])
        assert b[name].flags.c_contiguous and b[name].dtype == np.float32
    assert staged.stats.clipped == plain.stats.clipped and plain.stats.clipped["su"] > 0
    assert staged.stats.last_clip["su"].index == plain.stats.last_clip["su"].index
    assert staged.stats.last_clip["su"].value == pytest.approx(plain.stats.last_clip["su"].value)
    allocated = staged.staging.allocations
    kept = b["su"].copy()
    c = staged(block(nz=4, n=16, seed=5), mask)
    assert staged.staging.allocations == allocated  # the same buffers, reused
    np.testing.assert_array_equal(b["su"], kept)  # a result never aliases the kept buffers
    assert not np.array_equal(c["su"], kept)


# Outputs of the committed subgrid CNN as TorchScript (subgrid_cnn.ts, sha256 0d8ffeca...489b),
# computed before it was re-exported as subgrid_cnn.pt2 and removed: the test block below,
# normalised units, output[:, :, 2, :], the sum and the sum of |output|.
TORCHSCRIPT_ROW = [
    [[-1.5166965, -1.5577641, -1.2342998, -0.4575675, 0.2163479],
     [1.9757305, 3.0349798, 3.6121354, 3.1165969, 2.3686097]],
    [[0.2483882, 0.0397533, 0.6416911, 0.7058284, -0.0600161],
     [-0.9845567, -2.2967689, -2.9354763, -1.8616936, -3.6341579]],
]  # fmt: skip
TORCHSCRIPT_SUM, TORCHSCRIPT_ABS_SUM = -1.9941377639770508, 150.97174072265625


def test_committed_artifact_reproduces_its_torchscript_outputs() -> None:
    from bridge.registry.manifest import load_manifest
    from bridge.registry.runtime import load_module

    repo = Path(__file__).resolve().parents[1]
    manifest = load_manifest(repo / "models" / "artifacts" / "subgrid_cnn" / "manifest.toml")
    assert manifest.format == "export" and manifest.artifact == "subgrid_cnn.pt2"
    module = load_module(manifest, manifest.artifact_path(), torch.device("cpu"))  # safe loader
    ny, nx = 6, 5
    i = np.arange(2 * 2 * (ny + 8) * (nx + 8), dtype=np.float64).reshape(2, 2, ny + 8, nx + 8)
    x = torch.from_numpy(np.sin(0.37 * i) + 0.5 * np.cos(0.11 * i * i / 50)).float()
    with torch.no_grad():
        y = module(x).numpy()
    assert y.shape == (2, 2, ny, nx)
    np.testing.assert_allclose(y[:, :, 2, :], TORCHSCRIPT_ROW, rtol=1e-6, atol=1e-6)
    assert float(y.sum()) == pytest.approx(TORCHSCRIPT_SUM, rel=1e-5)
    assert float(np.abs(y).sum()) == pytest.approx(TORCHSCRIPT_ABS_SUM, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_all_levels_in_one_call_through_pinned_buffers() -> None:
    module = cnn(1)
    fields = (FieldSpec("u", "U"), FieldSpec("v", "V"))
    spec = ClosureSpec("c", 4, fields, (FieldSpec("su", "U"), FieldSpec("sv", "V")), "float32")
    cpu = TorchClosure(module, spec, device="cpu", levels_per_call=1 << 30)
    gpu = TorchClosure(cnn(1).to("cuda"), spec, device="cuda")
    assert gpu.levels_per_call is None and gpu.staging is not None and gpu.staging.pinned
    inputs = block(nz=30, n=32)
    a, b = cpu(inputs), gpu(inputs)
    for name in ("su", "sv"):  # TF32 convolutions on the GPU: about 1e-4 relative
        scale = float(np.max(np.abs(a[name])))
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=2e-3 * scale)
    host = gpu.staging.buffer("in_host", (30, 2, 40, 38), torch.float32, torch.device("cpu"))
    assert host.is_pinned()


def test_engine_from_the_environment(
    registered: tuple[Registry, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, _ = registered
    monkeypatch.setenv("MLBRIDGE_ENGINE", "eager")
    assert registry.load("cnn@1.0", device="cpu").engine == "eager"
    monkeypatch.setenv("MLBRIDGE_ENGINE", "fastest")
    with pytest.raises(ValueError, match=r"\$MLBRIDGE_ENGINE = 'fastest': expected one of auto"):
        registry.load("cnn@1.0", device="cpu")


def test_channels_last_runs_8_levels_per_call_on_a_cpu_whatever_the_threads() -> None:
    """Channels-last on a CPU: 8 levels per call with one torch thread and with two (on a quiet
    2-core machine one call on 30 levels ran 0.85 x the old default, 8 per call 1.36 x)."""

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.batches.append(x.shape[0])
            return x[:, :, 4:-4, 4:-4]

    fields = (FieldSpec("u", "U"), FieldSpec("v", "V"))
    spec = ClosureSpec("c", 4, fields, (FieldSpec("su", "U"), FieldSpec("sv", "V")), "float32")
    module = Counting()
    closure = TorchClosure(module, spec, channels_last=True)
    assert closure.levels_per_call == 8
    threads = torch.get_num_threads()
    try:
        for n, expected in ((1, [8, 8, 4]), (2, [8, 8, 4])):
            torch.set_num_threads(n)
            module.batches.clear()
            out = closure(block(nz=20, n=6))
            assert module.batches == expected and out["su"].shape == (20, 6, 4)
    finally:
        torch.set_num_threads(threads)
