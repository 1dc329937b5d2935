"""Loading a registered artifact into a closure, under the registry's trust rules.

TorchScript, ``torch.export`` archives (checked by :mod:`bridge.registry.safe_export` before
torch sees them), state dicts into a known architecture (``weights_only=True``) and python
closures (shipped, or registered with ``--trust-code``: :mod:`bridge.registry.trust`); the loaded
module is wrapped by :mod:`bridge.registry.torch_closure`. A dry run checks a closure against its
manifest at registration.

torch is imported inside functions only: importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.closures.base import (
    Closure,
    ClosureOutputError,
    check_outputs,
)
from bridge.registry.compiled import CompileCache, prepare_module
from bridge.registry.manifest import Manifest
from bridge.registry.safe_export import UnsafeArchiveError, load_exported_program
from bridge.registry.torch_closure import (
    ArtifactFormatError,
    ClosureLoadError,
    ManifestClosure,
    TorchClosure,
    _torch_dtype,
    resolve_device,
)
from bridge.registry.trust import (
    GROUPS,
    LEGACY_SCIENCE_PACKAGE,
    SCIENCE_PACKAGE,
    CodeTrust,
    Grant,
    grant_for,
)

if TYPE_CHECKING:
    import torch


ACCEPTED_FORMATS_HELP = (
    "accepted formats: 'torchscript' (torch.jit.script/trace + torch.jit.save), "
    "'export' (torch.export.export with dynamic batch/height/width + torch.export.save, a .pt2 "
    "archive of torch operators), 'state_dict' (torch.save(model.state_dict()) + a known "
    "architecture named by entry_point, loaded with weights_only=True), 'python' (an entry point "
    "returning a Closure: shipped with an installed package, or registered with --trust-code)"
)


def sniff_artifact(path: Path) -> str:
    """Guess what kind of torch file an artifact is from its zip members.

    Parameters
    ----------
    path
        The artifact.

    Returns
    -------
    str
        ``"torchscript"``, ``"export"``, ``"torch.save"`` (a pickle: a state_dict or a whole
        module) or ``"unknown"``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = {name.split("/", 1)[-1] for name in zf.namelist()}
    except (OSError, zipfile.BadZipFile):
        return "unknown"
    if "archive_format" in members:
        return "export"
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return "torchscript"
    if "data.pkl" in members:
        return "torch.save"
    return "unknown"


def _current_module_name(module_name: str) -> str:
    """``models.X`` -> ``mlbridge_models.X`` unless ``models`` is another, importable package."""
    from importlib.util import find_spec

    head, dot, rest = module_name.partition(".")
    if head != LEGACY_SCIENCE_PACKAGE:
        return module_name
    try:
        legacy = find_spec(LEGACY_SCIENCE_PACKAGE)
        current = find_spec(SCIENCE_PACKAGE)
    except (ImportError, ValueError):
        return module_name
    if current is None or current.origin is None:
        return module_name
    # the checkout's models/ on sys.path is the same package: import it under one name only
    same = (
        legacy is not None
        and legacy.origin is not None
        and Path(legacy.origin).resolve() == Path(current.origin).resolve()
    )
    return f"{SCIENCE_PACKAGE}{dot}{rest}" if legacy is None or same else module_name


def import_entry_point(entry_point: str, source: str = "<manifest>") -> Callable[..., Any]:
    """Import ``"package.module:callable"``: only ever the ``importable`` of a
    :class:`~bridge.registry.trust.Grant` (:func:`bridge.registry.trust.grant_for` decides first).

    A module path ``models.X`` (the science package's name before it became
    ``mlbridge_models``) is imported as ``mlbridge_models.X`` unless ``models`` is another
    importable package, so that manifests registered before the rename keep loading.

    Parameters
    ----------
    entry_point
        Module path, a colon, attribute path.
    source
        The manifest file, for messages.

    Returns
    -------
    callable

    Raises
    ------
    ClosureLoadError
        If the module cannot be imported or the attribute does not exist or is not callable.
    """
    module_name, _, attr = entry_point.partition(":")
    module_name = _current_module_name(module_name)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClosureLoadError(
            f"{source}: entry_point {entry_point!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ClosureLoadError(
                f"{source}: entry_point {entry_point!r}: {module_name!r} has no {attr!r}"
            ) from exc
    if not callable(obj):
        raise ClosureLoadError(f"{source}: entry_point {entry_point!r} is not callable")
    return obj


def load_module(
    manifest: Manifest, artifact: Path, device: torch.device, trust: CodeTrust | None = None
) -> Any:
    """Load a torch artifact into a module on ``device``, cast to the manifest's dtype.

    Nothing in the artifact is unpickled beyond tensors: TorchScript archives are read by
    TorchScript's own loader (its unpickler builds tensors and TorchScript classes only, its code
    is TorchScript, not Python), ``torch.export`` archives are checked and rebuilt first
    (:mod:`bridge.registry.safe_export`), ``state_dict`` files are read with
    ``weights_only=True`` into an architecture the user trusts (:mod:`bridge.registry.trust`).

    Parameters
    ----------
    manifest
        Says the format, the entry point and its ``[arch]`` arguments.
    artifact
        The file.
    device
        Target device.
    trust
        What the user trusted at registration (``state_dict`` entry points).

    Returns
    -------
    torch.nn.Module or callable
        In eval mode where the module supports it.

    Raises
    ------
    ArtifactFormatError
        If the file is a pickled module or in another format than declared; the message lists
        the accepted formats.
    ClosureLoadError
        If the entry point fails or the weights do not fit the architecture.
    UntrustedCodeError
        If the ``state_dict`` entry point is not a known architecture (nothing is imported).
    """
    import torch

    fmt = manifest.format
    grant = None
    if fmt in GROUPS:  # before the file is read: nothing of an untrusted closure runs
        grant = grant_for(fmt, manifest.entry_point, trust or CodeTrust(), manifest.source)
    kind = sniff_artifact(artifact)
    expected = {"torchscript": "torchscript", "export": "export", "state_dict": "torch.save"}[fmt]
    if kind != expected and kind != "unknown":
        what = {
            "torch.save": "a torch.save pickle",
            "torchscript": "a TorchScript archive",
            "export": "a torch.export .pt2 archive",
        }[kind]
        raise ArtifactFormatError(
            f"{artifact}: manifest {manifest.source} declares format {fmt!r}, but the file is "
            f"{what}; {ACCEPTED_FORMATS_HELP}"
        )
    dtype = _torch_dtype(manifest.dtype)
    if fmt == "torchscript":
        try:
            module = torch.jit.load(str(artifact), map_location=device)
        except RuntimeError as exc:
            raise ArtifactFormatError(
                f"{artifact}: not a loadable TorchScript archive ({_first_line(exc)}); "
                f"{ACCEPTED_FORMATS_HELP}"
            ) from exc
    elif fmt == "export":
        try:
            program = load_exported_program(artifact)
        except UnsafeArchiveError as exc:
            raise ArtifactFormatError(str(exc)) from exc
        except (RuntimeError, ValueError, KeyError, AssertionError) as exc:
            raise ArtifactFormatError(
                f"{artifact}: not a loadable torch.export program ({_first_line(exc)}); "
                f"{ACCEPTED_FORMATS_HELP}"
            ) from exc
        module = program.module()
    else:
        assert grant is not None
        module = _load_state_dict_module(manifest, artifact, grant)
    module = module.to(device=device, dtype=dtype)
    try:
        module.eval()
    except (NotImplementedError, RuntimeError):
        pass  # exported programs are already in inference form and refuse eval()
    return module


def _load_state_dict_module(manifest: Manifest, artifact: Path, grant: Grant) -> Any:
    import pickle

    import torch

    try:
        state = torch.load(artifact, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArtifactFormatError(
            f"{artifact}: refused: the file holds pickled Python objects beyond tensors (for "
            f"example a whole nn.Module saved with torch.save(model)); mlbridge loads weights with "
            f"weights_only=True only, because unpickling runs arbitrary code. Save "
            f"model.state_dict() instead, or script/export the model; {ACCEPTED_FORMATS_HELP}"
        ) from exc
    except RuntimeError as exc:
        raise ArtifactFormatError(
            f"{artifact}: not a torch.save file ({_first_line(exc)}); {ACCEPTED_FORMATS_HELP}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ArtifactFormatError(
            f"{artifact}: refused: format 'state_dict' needs a dict of name -> tensor, the file "
            f"holds {type(state).__name__}; {ACCEPTED_FORMATS_HELP}"
        )
    factory = import_entry_point(grant.importable, manifest.source)
    try:
        module = factory(**manifest.arch)
    except (TypeError, ValueError) as exc:
        raise ClosureLoadError(
            f"{manifest.source}: entry_point {manifest.entry_point!r} with [arch] "
            f"{manifest.arch}: {exc}"
        ) from exc
    result = module.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ClosureLoadError(
            f"{artifact}: weights do not fit {manifest.entry_point} with [arch] {manifest.arch}: "
            f"missing {list(result.missing_keys)}, unexpected {list(result.unexpected_keys)}"
        )
    return module


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_closure(
    manifest: Manifest,
    artifact: Path | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    levels_per_call: int | None = None,
    trust: CodeTrust | None = None,
    engine: str = "eager",
    cache: CompileCache | None = None,
    artifact_sha256: str | None = None,
) -> TorchClosure | ManifestClosure:
    """Load the closure a manifest describes.

    A manifest whose format runs Python code (``state_dict``: its architecture, ``python``: its
    closure factory) is checked by :func:`bridge.registry.trust.grant_for` before anything is
    imported: the code must be shipped by an installed package or trusted in ``trust``.

    Parameters
    ----------
    manifest
        The validated manifest.
    artifact
        The artifact file; default: the manifest's ``artifact`` beside the manifest.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``None`` takes the manifest's preference
        (which falls back to the CPU with a warning when no GPU is visible).
    threads
        ``torch.set_num_threads`` for this process (``None``: leave torch's default).
    levels_per_call
        Torch formats: levels per forward call (``None``: all at once); see :class:`TorchClosure`.
    trust
        What the user trusted at registration (``None``: nothing; shipped code only).
    engine
        Torch formats: how the module runs (:mod:`bridge.registry.compiled`): ``eager`` (the
        default here; :meth:`bridge.registry.store.Registry.load` defaults to ``auto``),
        ``channels_last``, ``aoti`` or ``auto``; a prepared engine that fails its check against
        the eager module falls back to ``eager`` (``closure.engine_note`` says why).
    cache, artifact_sha256
        The compile cache and the verified artifact's hash (engines ``aoti`` and ``auto``).

    Returns
    -------
    TorchClosure or ManifestClosure

    Raises
    ------
    ArtifactFormatError
        If the artifact is a pickle, not in the declared format, or an export archive that
        carries code (the message names the member).
    ClosureLoadError
        If the entry point, the weights or the device fail.
    UntrustedCodeError
        If the manifest names Python code that is neither shipped nor trusted.
    """
    if threads is not None:
        import torch

        if threads < 1:
            raise ClosureLoadError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    path = artifact if artifact is not None else manifest.artifact_path()
    if manifest.format == "python":
        grant = grant_for("python", manifest.entry_point, trust or CodeTrust(), manifest.source)
        return _load_python_closure(manifest, path, grant)
    if path is None or not path.is_file():
        raise ClosureLoadError(f"{manifest.source}: artifact {path} does not exist")
    dev = resolve_device(device or manifest.device, required=device is not None)
    module = load_module(manifest, path, dev, trust)
    prepared = prepare_module(
        module,
        engine=engine,
        device=dev,
        dtype=manifest.dtype,
        in_channels=len(manifest.inputs),
        halo=manifest.halo,
        cache=cache,
        artifact_sha256=artifact_sha256,
    )
    closure = TorchClosure.from_manifest(
        prepared.module, manifest, dev, levels_per_call, channels_last=prepared.channels_last
    )
    closure.engine = prepared.engine
    closure.engine_note = prepared.note
    return closure


def _load_python_closure(
    manifest: Manifest, artifact: Path | None, grant: Grant
) -> ManifestClosure:
    factory = import_entry_point(grant.importable, manifest.source)
    try:
        inner = factory(artifact, **manifest.arch) if artifact else factory(**manifest.arch)
    except (TypeError, ValueError) as exc:
        raise ClosureLoadError(
            f"{manifest.source}: entry_point {manifest.entry_point!r} with [arch] "
            f"{manifest.arch}: {exc}"
        ) from exc
    if not isinstance(inner, Closure):
        raise ClosureLoadError(
            f"{manifest.source}: entry_point {manifest.entry_point!r} returned "
            f"{type(inner).__name__}, not a Closure (an object with .spec and __call__)"
        )
    want, got = manifest.spec, inner.spec
    for what, a, b in (
        ("input names", want.input_names, got.input_names),
        ("output names", want.output_names, got.output_names),
        ("halo", want.halo, got.halo),
    ):
        if a != b:
            raise ClosureLoadError(
                f"{manifest.source}: {what}: the manifest declares {a}, the closure returned by "
                f"{manifest.entry_point!r} has {b}"
            )
    return ManifestClosure(inner, manifest)


# -- the dry run ----------------------------------------------------------------------------------


def dry_run(
    closure: Closure, manifest: Manifest, *, nz: int = 3, interior: int = 8, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Run a closure once on random inputs of the declared shape and check what comes back.

    Inputs are ``(nz, interior + 2*halo, interior + 2*halo)`` arrays in the manifest's dtype,
    drawn so that the network sees unit-variance values after normalisation.

    Parameters
    ----------
    closure
        The loaded closure.
    manifest
        What it should honour.
    nz, interior, seed
        Levels, interior width and random seed of the test block.

    Returns
    -------
    dict
        Per output: ``shape``, ``dtype``, ``max_abs``.

    Raises
    ------
    ClosureOutputError
        Naming the output and both values when names, shapes, dtype or finiteness disagree.
    """
    rng = np.random.default_rng(seed)
    n = interior + 2 * manifest.halo
    dtype = np.dtype(manifest.dtype)
    inputs = {
        e.name: (rng.standard_normal((nz, n, n)) * e.norm.scale + e.norm.offset).astype(dtype)
        for e in manifest.inputs
    }
    outputs = closure(inputs)
    shape = (nz, interior, interior)
    check_outputs(manifest.spec, outputs, shape)
    summary: dict[str, dict[str, Any]] = {}
    for e in manifest.outputs:
        y = outputs[e.name]
        if y.dtype != dtype:
            raise ClosureOutputError(
                f"closure {manifest.name!r}: output {e.name!r} should be {dtype}, got {y.dtype}"
            )
        bad = int(np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise ClosureOutputError(
                f"closure {manifest.name!r}: output {e.name!r} should be finite, the dry run gave "
                f"{bad} NaN/inf values of {y.size} on random inputs {(nz, n, n)}"
            )
        summary[e.name] = {
            "shape": list(y.shape),
            "dtype": str(y.dtype),
            "max_abs": float(np.abs(y).max()),
        }
    return summary
