"""How a loaded closure module runs: its engine, and the cache of compiled packages.

Engines (``mlbridge bench closure`` times them all, beside TorchScript, ``torch.export`` and
``torch.compile``):

``eager``
    The module as loaded, contiguous batches (on a CPU in batches of
    :data:`~bridge.registry.torch_closure.CPU_LEVELS_PER_CALL` levels).
``channels_last``
    The module and its batch in the channels-last memory format, 8 levels per call: what
    oneDNN's CPU convolutions run fastest on. No compilation, nothing written.
``aoti``
    An AOTInductor package (``torch._inductor.aoti_compile_and_package``) of the channels-last
    module, exported with dynamic batch, height and width: compiled native code, built on this
    machine by a C++ compiler, cached in the registry (below) and loaded with
    ``torch._inductor.aoti_load_package``.
``auto`` (the default)
    On a CPU: ``aoti`` when the cache holds a valid package for this artifact (``mlbridge
    register --compile`` or ``mlbridge compile`` builds it), else ``channels_last``; on a GPU:
    ``eager`` (all levels in one call, through the kept host buffers of
    :class:`~bridge.registry.torch_closure.HostStaging`).

Every engine but ``eager`` is checked against the eager module on a small block when it is
prepared; one that fails or disagrees beyond float tolerance is not used (the closure falls back
to ``eager`` and says why in ``closure.engine_note`` and a logged warning).

The cache. A package is compiled native code that the process loads and runs, so the cache must
never hold anything but what this user's mlbridge compiled, on this machine, from an artifact
whose sha256 the registry had just verified:

* entries live under ``<registry>/.compiled/<uid>/`` (created ``0700``), one directory per
  :class:`CompileKey` (artifact sha256, torch version, machine, CPU capability, device, dtype);
  a registry shared by a group shares its artifacts, never its compiled code;
* an entry is used only when its directory and files belong to the current user and nobody else
  may write them, its ``entry.json`` names the same key, and the package has the sha256 written
  there when it was built; anything else is removed and, for ``aoti``, rebuilt;
* packages arrive in the cache only through :meth:`CompileCache.build` (written to a temporary
  name, then renamed): nothing a user downloads is ever loaded as a package, and
  :mod:`bridge.registry.safe_export` refuses AOTInductor members in registered artifacts.

torch is imported inside functions only: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("auto", "eager", "channels_last", "aoti")
ENGINE_ENV = "MLBRIDGE_ENGINE"
"""Environment variable read by :meth:`bridge.registry.store.Registry.load` when no engine is
given (a server started by ``mlbridge run`` inherits it)."""

CACHE_DIR = ".compiled"
PACKAGE_FILE = "package.pt2"
ENTRY_FILE = "entry.json"
# bump when the way a package is built changes: older entries then miss and are rebuilt
PACKAGE_LAYOUT = "aoti-channels-last-dynamic-1"


class CompileUnavailableError(RuntimeError):
    """The module cannot be compiled here (no C++ compiler, export or compilation failed)."""


@dataclass(frozen=True)
class CompileKey:
    """What a compiled package depends on; its digest names the cache entry.

    Attributes
    ----------
    artifact_sha256
        The registered artifact's hash (verified by the registry before loading).
    torch
        ``torch.__version__``: a package runs only on the libtorch it was built against.
    machine, cpu
        ``platform.machine()`` and torch's CPU capability (``AVX512``, ``AVX2``, ...): the
        instructions the generated code may use.
    device, dtype
        Where and in which precision the package runs.
    layout
        How the package was built (:data:`PACKAGE_LAYOUT`).
    """

    artifact_sha256: str
    torch: str
    machine: str
    cpu: str
    device: str
    dtype: str
    layout: str = PACKAGE_LAYOUT

    def digest(self) -> str:
        """The entry's directory name: sha256 of the key's JSON, 32 hex digits."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_key(artifact_sha256: str, device: torch.device, dtype: str) -> CompileKey:
    """The key of an artifact's package on ``device`` in this process's torch and CPU."""
    import torch

    return CompileKey(
        artifact_sha256=artifact_sha256,
        torch=torch.__version__,
        machine=platform.machine(),
        cpu=str(torch.backends.cpu.get_cpu_capability()),
        device=device.type,
        dtype=dtype,
    )


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor would use (``torch._inductor.config.cpp.cxx``), or None."""
    from torch._inductor import config

    candidates = config.cpp.cxx if isinstance(config.cpp.cxx, tuple) else (config.cpp.cxx,)
    names = [c for c in candidates if c] + ["g++", "c++", "clang++"]
    if os.environ.get("CXX"):
        names.insert(0, os.environ["CXX"])
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CompileCache:
    """Compiled packages of one registry, for the current user (module docstring: the rules).

    Parameters
    ----------
    registry_root
        The registry directory; entries go to ``<root>/.compiled/<uid>/<key digest>/``.
    """

    def __init__(self, registry_root: str | Path) -> None:
        self.registry_root = Path(registry_root)
        self.directory = self.registry_root / CACHE_DIR / str(os.getuid())

    def __repr__(self) -> str:
        return f"CompileCache({str(self.directory)!r})"

    def entry_dir(self, key: CompileKey) -> Path:
        return self.directory / key.digest()

    def lookup(self, key: CompileKey) -> tuple[Path | None, str]:
        """The package of ``key`` if it may be trusted, else None and why not.

        An entry that exists but fails a check is removed (and the reason returned).
        """
        path, _, why = self.read(key)
        return path, why

    def read(self, key: CompileKey) -> tuple[Path | None, bytes, str]:
        """The package of ``key``, its bytes (read once, then checked: what is loaded is what
        was checked) and why not when it may not be trusted (the entry is then removed)."""
        entry = self.entry_dir(key)
        if not entry.exists():
            why = f"no compiled package in {self.directory} for this artifact and torch"
            return None, b"", why
        data = b""
        problem = self._entry_problem(entry, key)
        if not problem:
            data = (entry / PACKAGE_FILE).read_bytes()
            problem = self._package_problem(entry, data)
        if problem:
            shutil.rmtree(entry, ignore_errors=True)
            return None, b"", f"compiled package {entry} discarded: {problem}"
        return entry / PACKAGE_FILE, data, ""

    def _package_problem(self, entry: Path, data: bytes) -> str:
        try:
            record = json.loads((entry / ENTRY_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"{ENTRY_FILE} unreadable: {exc}"
        found = hashlib.sha256(data).hexdigest()
        if record.get("package_sha256") != found:
            return (
                f"{PACKAGE_FILE} has sha256 {found}, {ENTRY_FILE} recorded "
                f"{record.get('package_sha256')}"
            )
        return ""

    def _entry_problem(self, entry: Path, key: CompileKey) -> str:
        uid = os.getuid()
        for path in (self.directory, entry, entry / ENTRY_FILE, entry / PACKAGE_FILE):
            try:
                st = path.lstat()
            except OSError:
                return f"{path.name} is missing"
            if stat.S_ISLNK(st.st_mode):
                return f"{path} is a symbolic link"
            if st.st_uid != uid:
                return f"{path} belongs to uid {st.st_uid}, not to this user ({uid})"
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return f"{path} is writable by others (mode {stat.filemode(st.st_mode)})"
        try:
            record = json.loads((entry / ENTRY_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"{ENTRY_FILE} unreadable: {exc}"
        if not isinstance(record, dict) or record.get("key") != asdict(key):
            named = record.get("key") if isinstance(record, dict) else record
            return f"{ENTRY_FILE} names another key: {named!r}"
        return ""

    def build(self, module: Any, key: CompileKey, example: torch.Tensor) -> Path:
        """Export ``module`` (channels-last, dynamic batch/height/width), compile it with
        AOTInductor and store the package under ``key``, replacing any entry there.

        Raises
        ------
        CompileUnavailableError
            If no C++ compiler is found, or the export or the compilation fails.
        """
        import torch

        if cxx_compiler() is None:
            raise CompileUnavailableError(
                "no C++ compiler found (g++, c++, clang++ or $CXX): AOTInductor needs one "
                "(Debian: apt-get install g++)"
            )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = self.directory.lstat()
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            raise CompileUnavailableError(
                f"{self.directory} is a symbolic link or belongs to uid {st.st_uid}: this "
                "user's compiled code is not written there"
            )
        os.chmod(self.directory, 0o700)  # this user's compiled code: nobody else writes here
        dyn = torch.export.Dim.DYNAMIC
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=self.directory))
        try:
            t0 = time.perf_counter()
            try:
                program = torch.export.export(
                    module, (example,), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},)
                )
                package = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(staging / PACKAGE_FILE)
                )
            except Exception as exc:  # export or compiler failure: the caller falls back
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise CompileUnavailableError(
                    f"AOTInductor compilation failed: {type(exc).__name__}: {first}"
                ) from exc
            record = {
                "key": asdict(key),
                "package_sha256": sha256_of(Path(package)),
                "compile_seconds": round(time.perf_counter() - t0, 2),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (staging / ENTRY_FILE).write_text(json.dumps(record, indent=2) + "\n")
            for path in (staging / ENTRY_FILE, staging / PACKAGE_FILE):
                os.chmod(path, 0o600)
            dest = self.entry_dir(key)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.info("compiled %s in %.1f s", dest / PACKAGE_FILE, record["compile_seconds"])
        return dest / PACKAGE_FILE


# -- preparing a module ---------------------------------------------------------------------------


@dataclass
class Prepared:
    """A module ready for :class:`~bridge.registry.torch_closure.TorchClosure`.

    Attributes
    ----------
    module
        What to call.
    engine
        ``eager``, ``channels_last`` or ``aoti``.
    channels_last
        Whether the module wants its batch channels-last.
    note
        Why a faster engine was not used, or where the package came from.
    """

    module: Callable[..., Any]
    engine: str
    channels_last: bool
    note: str = ""


def example_batch(
    in_channels: int, halo: int, dtype: torch.dtype, device: torch.device, nz: int = 3
) -> torch.Tensor:
    """A random ``(nz, C, 12+2h, 10+2h)`` block (not square: a transposition would show)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn((nz, in_channels, 12 + 2 * halo, 10 + 2 * halo), generator=gen)
    return x.to(device=device, dtype=dtype)


def agree(reference: Any, candidate: Any, dtype: torch.dtype) -> str:
    """Empty when two module outputs (tensors or dicts of tensors) are equal within float
    tolerance (relative to the reference's largest value); else what differs."""
    import torch

    if isinstance(reference, torch.Tensor):
        reference, candidate = {"output": reference}, {"output": candidate}
    if not isinstance(candidate, dict) or set(candidate) != set(reference):
        return f"outputs {sorted(reference)} expected, got {type(candidate).__name__}"
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    for name, ref in reference.items():
        got = candidate[name]
        if not isinstance(got, torch.Tensor) or got.shape != ref.shape:
            return f"output {name!r}: shape {tuple(ref.shape)} expected"
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        diff = float((got.float() - ref.float()).abs().max()) if ref.numel() else 0.0
        if not diff <= rtol * max(scale, 1e-30):
            return (
                f"output {name!r}: differs from eager by {diff:.3g} (largest |value| {scale:.3g})"
            )
    return ""


def prepare_module(
    module: Any,
    *,
    engine: str,
    device: torch.device,
    dtype: str,
    in_channels: int,
    halo: int,
    cache: CompileCache | None = None,
    artifact_sha256: str | None = None,
) -> Prepared:
    """Prepare a loaded module for ``engine`` (see the module docstring), checking it against
    the eager module on :func:`example_batch`; fall back to ``eager`` with a note otherwise.

    Raises
    ------
    ValueError
        If ``engine`` is not one of :data:`ENGINES`.
    """
    import torch

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "eager" if device.type != "cpu" else "auto"
    if engine == "eager":
        return Prepared(module, "eager", False)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    example = example_batch(in_channels, halo, tdtype, device)
    try:
        with torch.inference_mode():
            reference = module(example)
    except Exception as exc:  # the module's own failure shows at its first real call
        return Prepared(module, "eager", False, f"no check block: {type(exc).__name__}: {exc}")
    cl_example = example.contiguous(memory_format=torch.channels_last)
    notes = []
    if engine in ("auto", "aoti"):
        package, note = _aoti_package(
            module, engine, device, dtype, cl_example, cache, artifact_sha256
        )
        if package is not None:
            problem = _check(package, cl_example, reference, tdtype)
            if not problem:
                return Prepared(package, "aoti", True, note)
            notes.append(f"aoti: {problem}")
        elif note:
            notes.append(note)
    try:
        cl_module = module.to(memory_format=torch.channels_last)
    except (RuntimeError, TypeError, AttributeError) as exc:  # not an nn.Module, say
        cl_module, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = _check(cl_module, cl_example, reference, tdtype)
    if cl_module is not None and not problem:
        return Prepared(cl_module, "channels_last", True, "; ".join(notes))
    if cl_module is not None:
        module = module.to(memory_format=torch.contiguous_format)
    notes.append(f"channels_last: {problem}")
    text = "; ".join(notes)
    log.warning("closure runs eager: %s", text)
    return Prepared(module, "eager", False, text)


def _check(fn: Callable[..., Any], example: Any, reference: Any, dtype: torch.dtype) -> str:
    import torch

    try:
        with torch.inference_mode():
            return agree(reference, fn(example), dtype)
    except Exception as exc:  # any failure of the prepared module means: do not use it
        return f"{type(exc).__name__}: {exc}"


def _aoti_package(
    module: Any,
    engine: str,
    device: torch.device,
    dtype: str,
    example: torch.Tensor,
    cache: CompileCache | None,
    artifact_sha256: str | None,
) -> tuple[Any, str]:
    """The loaded package, or None and why; ``auto`` never compiles, ``aoti`` builds on a miss."""
    import torch

    if cache is None or artifact_sha256 is None:
        return None, "aoti: no compile cache (a closure loaded outside a registry)"
    key = compile_key(artifact_sha256, device, dtype)
    path, data, why = cache.read(key)
    source = "cache"
    if path is None:
        if engine == "auto":
            if "discarded" in why:
                log.warning("%s", why)
            return None, f"aoti: {why} (mlbridge compile builds it)"
        if "discarded" in why:
            log.warning("%s; rebuilding it", why)
        try:
            cl_module = module.to(memory_format=torch.channels_last)
            path = cache.build(cl_module, key, example)
            path, data, why = cache.read(key)
            if path is None:
                raise CompileUnavailableError(why)
        except CompileUnavailableError as exc:
            log.warning("closure not compiled: %s", exc)
            return None, f"aoti: {exc}"
        finally:
            module.to(memory_format=torch.contiguous_format)
        source = "built"
    # loaded from a private copy of the bytes just checked, so that nothing can swap the file
    # between the check and the load (a group-writable registry folder above the cache)
    with tempfile.TemporaryDirectory(prefix="mlbridge-aoti-") as private:
        copy = Path(private) / PACKAGE_FILE
        copy.write_bytes(data)
        try:
            package = torch._inductor.aoti_load_package(str(copy))
        except Exception as exc:  # a package that does not load is discarded like a corrupt one
            shutil.rmtree(path.parent, ignore_errors=True)
            return None, f"aoti: {path} does not load ({type(exc).__name__}: {exc}); removed"
    return package, f"aoti package {path} ({source})"
