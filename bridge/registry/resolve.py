"""Which closure an exchange names: an analytic closure or a registry entry, and its pinned hash.

The one place that turns ``closure = "..."`` (and ``sha256 = "..."``) into a callable closure, for
the servers and for the checks the launcher runs before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.closures.analytic import ANALYTIC, analytic_closure
from bridge.closures.base import Closure
from bridge.config.coupling import CouplingConfig, exchange_name
from bridge.registry.store import MANIFEST_FILE, Entry, Registry


class ClosureResolutionError(RuntimeError):
    """The closure an exchange names cannot be had; the message says why."""


def resolve_closure(
    name: str,
    params: Mapping[str, Any],
    device: str,
    threads: int,
    *,
    inputs: Sequence[str] = (),
    registry: Path | None = None,
    sha256: str = "",
) -> Closure:
    """The closure an exchange names: an analytic closure or a registry reference.

    Parameters
    ----------
    name
        ``laplacian``, ``smooth3``, ``identity`` (see :mod:`bridge.closures.analytic`), or a
        registry reference ``name[@version]`` (loaded with :meth:`bridge.registry.Registry.load`,
        which verifies the hashes).
    params
        The exchange's ``params`` table.
    device, threads
        Where the closure runs (used by torch closures).
    inputs
        The closure input names the exchange maps; analytic closures take their inputs from it.
    registry
        Registry directory (``server.registry``); None: the default registry.
    sha256
        Registry closures: the pinned sha256 (``exchange.sha256``) the entry's recorded hash
        (of its artifact, or of its manifest when it has none) must equal; empty: any.

    Returns
    -------
    Closure
        Ready to call.

    Raises
    ------
    ClosureResolutionError
        If the name is unknown or the closure cannot be built, with the reason.
    """
    if name in ANALYTIC:
        try:
            return analytic_closure(name, inputs, params)
        except (KeyError, ValueError) as err:
            raise ClosureResolutionError(f"closure {name!r}: {err}") from None
    if params:
        raise ClosureResolutionError(
            f"closure {name!r}: registry closures take no params (got {sorted(params)}); their "
            "settings live in the manifest"
        )
    try:
        reg = Registry(registry)
        if sha256:
            _check_pinned_hash(reg, name, sha256)
        return reg.load(name, device=device, threads=threads)
    except ClosureResolutionError:
        raise
    except Exception as err:  # a registry closure may fail in many ways: report, don't crash
        raise ClosureResolutionError(
            f"closure {name!r} is not an analytic closure ({', '.join(sorted(ANALYTIC))}) and "
            f"cannot be loaded from the registry: {type(err).__name__}: {err}"
        ) from None


def _check_pinned_hash(registry: Any, name: str, sha256: str) -> None:
    """The recorded hash of registry entry ``name`` equals the pinned ``sha256``.

    Raises
    ------
    ClosureResolutionError
        Naming the closure, the file and both hashes.
    """
    entry = registry.show(name)
    mismatch = pinned_hash_mismatch(entry, sha256)
    if mismatch:
        raise ClosureResolutionError(f"closure {name!r} ({entry.ref}): {mismatch}")


def recorded_hash(entry: Entry) -> tuple[Path, str]:
    """The file of a registry entry that a pin names, and its sha256 recorded at registration.

    The file is the artifact, or the stored manifest of an entry without one; the hash is empty
    when none was recorded.
    """
    artifact = entry.artifact
    path = artifact if artifact is not None else entry.directory / MANIFEST_FILE
    return path, entry.record.get("sha256", {}).get(path.name, "")


def pinned_hash_mismatch(entry: Entry, sha256: str) -> str:
    """Why registry entry ``entry`` is not the content pinned by ``sha256`` (empty: it is).

    The one check of a pin: for the servers (:func:`resolve_closure`) and for the launcher
    (:func:`bridge.launch.closure_checks.inspect_closures`).
    """
    path, recorded = recorded_hash(entry)
    if recorded == sha256:
        return ""
    return (
        f"{path} has recorded sha256 {recorded or 'none'}, the exchange pins sha256 {sha256} "
        "(pin the registered content, or register the pinned one)"
    )


def build_closures(config: CouplingConfig) -> dict[str, Closure]:
    """One closure per exchange, keyed by the exchange's name.

    Raises
    ------
    ClosureResolutionError
        If a closure cannot be resolved.
    """
    return {
        exchange_name(ex): resolve_closure(
            ex.closure,
            ex.params,
            config.server.device,
            config.server.threads,
            inputs=tuple(ex.inputs),
            registry=config.server.registry,
            sha256=ex.sha256,
        )
        for ex in config.exchanges
    }
