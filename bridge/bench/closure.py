"""Closure forward time: the ways to run a closure module, against the default of the engine.

Every path runs through the same ``TorchClosure`` the server uses (numpy in, numpy out, the
manifest's normalisation and clip), on a ``size x size`` interior plus the closure's halo, for
the reference CNN of this module (sized like the trained subgrid closure) and, when present, the
committed trained closure (``models/artifacts/subgrid_cnn``, or ``--artifact``):

``default``
    The eager module, contiguous batches, ``levels_per_call`` at its old default (8 levels per
    call on a CPU, all levels on a GPU), no kept buffers: how every registered closure ran
    before the engines of :mod:`bridge.registry.compiled`. Every ratio is against this row,
    measured in the same run.
``eager staged`` (GPU only)
    All levels in one call through pinned host buffers kept across calls, non-blocking copies
    and one synchronisation: a registered closure's path on a GPU.
``eager``, ``eager 1/call``, ``eager K/call``
    The eager module on all levels at once, one level per call, K levels per call.
``channels-last``, ``channels-last 8/call``
    The module and its batch channels-last (the registry's ``auto`` engine without a package).
    Any path followed by `` K/call`` runs K levels per call (``aoti channels-last 8/call``).
``torchscript``
    ``torch.jit.optimize_for_inference`` of the scripted (or traced) module: frozen, oneDNN.
``export``
    ``torch.export.export(...).module()``: what a ``.pt2`` artifact loads as.
``compile``, ``compile channels-last``
    ``torch.compile`` (Inductor; compiled at the first call of each shape).
``aoti``, ``aoti channels-last``
    An AOTInductor package (``torch._inductor.aoti_compile_and_package``, dynamic batch, height,
    width), built as the registry's compile cache builds it, then ``aoti_load_package``: the
    registry's ``auto`` engine once ``mlbridge compile`` has run.

Rounds are interleaved (one call of each path per round) so that a load change on a shared
machine hits every path alike; medians over ``--repeats`` rounds. The time a path takes to build
(scripting, export, compilation, the first call of ``torch.compile``) is printed separately.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATHS: tuple[str, ...] = (
    "default",
    "eager",
    "eager 1/call",
    "channels-last",
    "channels-last 8/call",
    "torchscript",
    "export",
    "compile",
    "compile channels-last",
    "aoti",
    "aoti channels-last",
)
COMPILED = ("compile", "compile channels-last", "aoti", "aoti channels-last")

EXAMPLES = (
    "  mlbridge bench closure                                # all paths, threads 1 and 2\n"
    "  mlbridge bench closure --nz 30 --threads 2 --repeats 20\n"
    "  mlbridge bench closure --paths default channels-last aoti\\ channels-last --nz 30\n"
    "  mlbridge bench closure --device cuda --nz 30 75      # on a GPU machine\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mlbridge bench closure`` (``--repeats`` is added by ``bridge.bench``)."""
    parser.add_argument(
        "--nz", type=int, nargs="+", default=[1, 10, 30, 75], help="level counts to time"
    )
    parser.add_argument("--size", type=int, default=64, help="interior block width (cells)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="cpu", help="torch device"
    )
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time"
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--hidden", type=int, default=32, help="channels of the CNN's hidden layers (3 of them)"
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=list(PATHS),
        metavar="PATH",
        help=f"paths to time (default: all): {', '.join(PATHS)}; any of them followed by "
        "' K/call' runs K levels per call (e.g. 'aoti channels-last 8/call')",
    )
    parser.add_argument(
        "--levels-per-call",
        type=int,
        nargs="*",
        default=[],
        metavar="K",
        help="also time the eager module on batches of K levels per call",
    )
    parser.add_argument(
        "--artifact",
        type=Path,
        default=None,
        metavar="MANIFEST",
        help="a trained closure's manifest to time beside the reference CNN (default: the "
        "committed models/artifacts/subgrid_cnn/manifest.toml of a checkout)",
    )
    parser.add_argument("--no-artifact", action="store_true", help="time the reference CNN only")


def bench_cnn(hidden: int, layers: int = 4) -> tuple[Any, int]:
    """A CNN the size of the trained subgrid closure: ``layers`` 3x3 convolutions (2 -> hidden
    -> ... -> 2 channels, ReLU between, no padding), and its halo (one cell per layer)."""
    from torch import nn

    channels = [2] + [hidden] * (layers - 1) + [2]
    parts: list[Any] = []
    for k, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        parts.append(nn.Conv2d(c_in, c_out, 3, bias=False))
        if k < layers - 1:
            parts.append(nn.ReLU())
    return nn.Sequential(*parts), layers


@dataclass
class Subject:
    """One closure to time: its module (on the device, in the dtype) and how to wrap it."""

    label: str
    module: Any
    make: Callable[..., Any]  # (module, **TorchClosure options) -> TorchClosure
    in_channels: int
    halo: int


@dataclass
class Built:
    """One path of one subject: its closure, or why it is unavailable, and its build time."""

    closure: Any = None
    seconds: float = 0.0
    problem: str = ""


def _subjects(args: argparse.Namespace, device: Any) -> list[Subject]:
    import torch

    from bridge.closures.base import ClosureSpec, FieldSpec
    from bridge.registry.torch_closure import TorchClosure

    torch.manual_seed(0)
    module, halo = bench_cnn(args.hidden)
    module = module.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    fields = (FieldSpec("u", "U", "m s-1"), FieldSpec("v", "V", "m s-1"))
    outputs = (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2"))
    spec = ClosureSpec("bench_cnn", halo, fields, outputs, args.dtype)

    def make(m: Any, **kw: Any) -> TorchClosure:
        return TorchClosure(m, spec, device=device, **kw)

    label = f"reference CNN 3x3 x4, hidden {args.hidden}"
    subjects = [Subject(label, module, make, 2, halo)]
    manifest_path = None if args.no_artifact else _artifact_manifest(args.artifact)
    if manifest_path is not None:
        subjects.append(_trained_subject(manifest_path, device))
    return subjects


def _artifact_manifest(given: Path | None) -> Path | None:
    if given is not None:
        return given
    from bridge.paths import checkout_root

    root = checkout_root()
    path = None if root is None else root / "models" / "artifacts" / "subgrid_cnn" / "manifest.toml"
    return path if path is not None and path.is_file() else None


def _trained_subject(manifest_path: Path, device: Any) -> Subject:
    from bridge.registry.manifest import load_manifest
    from bridge.registry.runtime import load_module
    from bridge.registry.torch_closure import TorchClosure

    manifest = load_manifest(manifest_path)
    artifact = manifest.artifact_path()
    if artifact is None:
        raise ValueError(f"{manifest_path}: names no artifact")
    module = load_module(manifest, artifact, device)

    def make(m: Any, **kw: Any) -> TorchClosure:
        return TorchClosure.from_manifest(m, manifest, device, **kw)

    label = f"{manifest.ref} ({manifest.format}, {artifact.name})"
    return Subject(label, module, make, len(manifest.inputs), manifest.halo)


def _split_path(path: str) -> tuple[str, int | None]:
    """``"channels-last 8/call"`` -> (``"channels-last"``, 8); all levels: ``1 << 30``."""
    base, _, last = path.rpartition(" ")
    if base and last.endswith("/call") and last[: -len("/call")].isdigit():
        return base, int(last[: -len("/call")])
    return path, None if path == "default" else 1 << 30


def _prepare(base: str, subject: Subject, device: Any, dtype: str, workdir: Path) -> Any:
    """The module of one path and whether it wants channels-last batches."""
    import torch

    from bridge.registry.compiled import CompileCache, CompileKey, example_batch

    example = example_batch(subject.in_channels, subject.halo, getattr(torch, dtype), device)
    cl = torch.channels_last
    module = subject.module
    if base in ("default", "eager", "eager staged"):
        return module, False
    if base == "channels-last":
        return copy.deepcopy(module).to(memory_format=cl), True
    if base == "torchscript":
        with torch.no_grad():
            scripted = (
                module
                if isinstance(module, torch.jit.ScriptModule)
                else torch.jit.trace(copy.deepcopy(module), example)
            )
            return torch.jit.optimize_for_inference(copy.deepcopy(scripted).eval()), False
    if base == "export":
        return _export(module, example).module(), False
    if base in ("compile", "compile channels-last", "aoti", "aoti channels-last"):
        channels_last = base.endswith("channels-last")
        m = copy.deepcopy(module)
        if channels_last:
            m, example = m.to(memory_format=cl), example.contiguous(memory_format=cl)
        if base.startswith("compile"):
            return torch.compile(m), channels_last
        key = CompileKey("bench", torch.__version__, "", "", device.type, dtype, base)
        package = CompileCache(workdir).build(m, key, example)
        return torch._inductor.aoti_load_package(str(package)), channels_last
    raise ValueError(f"unknown path {base!r}")


def _build_all(
    paths: list[str], subject: Subject, device: Any, dtype: str, workdir: Path
) -> dict[str, Built]:
    """The closure of every path, each base module prepared once and timed; a failure is
    reported, not raised."""
    prepared: dict[str, tuple[Any, bool] | Built] = {}
    built = {}
    for path in paths:
        base, per_call = _split_path(path)
        if base not in prepared:
            t0 = time.perf_counter()
            try:
                prepared[base] = _prepare(base, subject, device, dtype, workdir)
            except Exception as exc:  # a path this torch or machine cannot build is reported
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                prepared[base] = Built(problem=f"{type(exc).__name__}: {text}"[:160])
            else:
                built[base] = Built(seconds=time.perf_counter() - t0)
        ready = prepared[base]
        if isinstance(ready, Built):
            built[path] = ready
            continue
        module, channels_last = ready
        options: dict[str, Any] = {"levels_per_call": per_call}
        if base == "default":
            options["staging"] = False
        elif base == "eager staged":
            options["staging"] = True
        if channels_last:
            options["channels_last"] = True
        built[path] = Built(subject.make(module, **options), built[base].seconds)
    return {p: built[p] for p in paths}


def _export(module: Any, example: Any) -> Any:
    import torch

    if hasattr(module, "graph_signature"):  # already an ExportedProgram
        return module
    dyn = torch.export.Dim.DYNAMIC
    return torch.export.export(module, (example,), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},))


def _interleaved_medians(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, repeats)):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()  # returns numpy arrays, so a GPU run is finished when it returns
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def run(args: argparse.Namespace) -> int:
    """Time every path of every subject and print the tables; return 0.

    Raises
    ------
    bridge.registry.torch_closure.ClosureLoadError
        If ``--device cuda`` is asked for without a GPU.
    """
    import numpy as np
    import torch

    from bridge.registry.torch_closure import resolve_device

    device = resolve_device(args.device, required=args.device == "cuda")
    for path in args.paths:
        base, _ = _split_path(path)
        if base not in PATHS:
            raise SystemExit(f"mlbridge bench closure: unknown path {path!r}; paths: {PATHS}")
    paths = list(dict.fromkeys(["default", *args.paths]))
    if device.type == "cuda":  # the device path: kept pinned buffers, one synchronisation
        paths.insert(1, "eager staged")
    paths += [f"eager {k}/call" for k in args.levels_per_call if f"eager {k}/call" not in paths]
    n = args.size
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"closure bench: block {n}x{n} + halo, {args.dtype}, device {device}{gpu}, "
        f"torch {torch.__version__}, threads {' '.join(map(str, args.threads))}, "
        f"medians of {args.repeats} interleaved rounds; x default = default ms / path ms "
        f"(> 1: faster than the default path, measured in the same rounds)"
    )
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="mlbridge-bench-closure-") as tmp:
        for subject in _subjects(args, device):
            torch.set_num_threads(max(args.threads))
            built = _build_all(paths, subject, device, args.dtype, Path(tmp))
            print(f"\n{subject.label}")
            for p, b in built.items():
                if b.problem:
                    print(f"  {p}: unavailable: {b.problem}")
            ready = {p: b.closure for p, b in built.items() if b.closure is not None}
            print(
                f"{'threads':>7} {'nz':>4} {'path':<22} {'ms':>9} {'ms/level':>9} "
                f"{'x default':>9} {'max|diff|':>10}"
            )
            for threads in args.threads:
                torch.set_num_threads(threads)
                for nz in args.nz:
                    shape = (nz, n + 2 * subject.halo, n + 2 * subject.halo)
                    names = [f.name for f in ready["default"].spec.inputs]
                    inputs = {k: rng.standard_normal(shape).astype(args.dtype) for k in names}
                    _first_calls(ready, inputs, built)
                    ref = ready["default"](inputs)
                    diffs = {p: _max_diff(ref, c(inputs)) for p, c in ready.items()}
                    calls = {p: (lambda c=c, x=inputs: c(x)) for p, c in ready.items()}
                    med = _interleaved_medians(calls, args.repeats)
                    for p in ready:
                        print(
                            f"{threads:>7} {nz:>4} {p:<22} {med[p] * 1e3:>9.2f} "
                            f"{med[p] * 1e3 / nz:>9.3f} {med['default'] / med[p]:>9.2f} "
                            f"{diffs[p]:>10.2e}"
                        )
            costs = {_split_path(p)[0]: b.seconds for p, b in built.items() if b.closure}
            print("build cost (s; torch.compile: with its first call of each shape): ", end="")
            print(", ".join(f"{p} {seconds:.1f}" for p, seconds in costs.items()))
    print(
        "\nmax|diff| = largest |output - default output| / largest |default output| "
        "(float tolerance: the paths agree)"
    )
    return 0


def _first_calls(ready: dict[str, Any], inputs: dict[str, Any], built: dict[str, Built]) -> None:
    """Warm every path up on this shape; torch.compile's compilation goes to its build cost."""
    for p, closure in ready.items():
        t0 = time.perf_counter()
        closure(inputs)
        if p.startswith("compile"):
            built[p].seconds += time.perf_counter() - t0


def _max_diff(ref: dict[str, Any], out: dict[str, Any]) -> float:
    import numpy as np

    scale = max(float(np.max(np.abs(a))) for a in ref.values()) or 1.0
    return max(float(np.max(np.abs(out[k] - ref[k]))) for k in ref) / scale
