"""Which Python code a closure may run: the one place that decides, before anything is imported.

Two manifest formats name Python code by ``entry_point = "module:callable"``:

* ``state_dict``: an *architecture*, called with ``[arch]`` to build the module the weights go
  into. It must be a known architecture: one shipped by an installed package in the entry-point
  group ``mlbridge.architectures`` (``cnn = "mlbridge_models.cnn:build_cnn"``), or one the user
  trusted by name when registering (``mlbridge register --architecture MODULE:CALLABLE``).
* ``python``: a *closure factory*, arbitrary code by nature. It must be shipped by an installed
  package in the entry-point group ``mlbridge.closure_factories`` (the Zanna & Bolton closure),
  or the user must have said ``mlbridge register --trust-code`` for it.

Installing a package is the user's explicit act of trusting its code; a manifest, an artifact or
a ``coupling.toml`` that someone else wrote is not. The groups are read with
:mod:`importlib.metadata` (the packages' metadata, no import). What the user trusted at
registration is kept in the entry's ``record.json`` (:func:`grant_record`) and read back at every
load (:func:`trust_from_record`); loading re-checks it against the manifest's entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

#: Entry-point group of the architectures a ``state_dict`` manifest may name.
ARCHITECTURES_GROUP = "mlbridge.architectures"
#: Entry-point group of the closure factories a ``python`` manifest may name without trust.
CLOSURE_FACTORIES_GROUP = "mlbridge.closure_factories"
#: The group each format's entry point is looked up in.
GROUPS: dict[str, str] = {"state_dict": ARCHITECTURES_GROUP, "python": CLOSURE_FACTORIES_GROUP}

#: ``record.json`` values of ``code.trust``: how an entry point came to be allowed.
SHIPPED, ARCHITECTURE, TRUST_CODE = "shipped", "architecture", "trust-code"

LEGACY_SCIENCE_PACKAGE = "models"
"""The import name of ``mlbridge_models`` before the rename: manifests registered then name
entry points ``models.X:Y``."""
SCIENCE_PACKAGE = "mlbridge_models"


class UntrustedCodeError(PermissionError):
    """A manifest names Python code that is neither shipped nor trusted by the user."""


@dataclass(frozen=True)
class CodeTrust:
    """What the user has said may run, for one closure.

    Parameters
    ----------
    architectures
        ``module:callable`` entry points trusted as architectures (``--architecture``).
    code
        True when the user trusts the manifest's entry point whatever it is (``--trust-code``).
    """

    architectures: frozenset[str] = field(default_factory=frozenset)
    code: bool = False


@dataclass(frozen=True)
class Grant:
    """Why an entry point may run.

    Parameters
    ----------
    entry_point
        The entry point as the manifest names it.
    importable
        The entry point to import (a legacy ``models.X`` name mapped to the shipped one).
    trust
        :data:`SHIPPED`, :data:`ARCHITECTURE` or :data:`TRUST_CODE`.
    shipped_by
        For shipped code: ``"<distribution> (<group>: <name>)"``.
    """

    entry_point: str
    importable: str
    trust: str
    shipped_by: str = ""

    @property
    def user_trusted(self) -> bool:
        """True when the code runs because the user said so, not because it was installed."""
        return self.trust != SHIPPED

    def describe(self) -> str:
        """One line for ``mlbridge show`` and the run log."""
        if self.trust == SHIPPED:
            return f"{self.entry_point}, shipped by {self.shipped_by}"
        flag = "--trust-code" if self.trust == TRUST_CODE else "--architecture"
        return f"{self.entry_point}, TRUSTED CODE: the user trusted it at registration ({flag})"


def shipped_entry_points(group: str) -> dict[str, str]:
    """The entry points installed packages declare in ``group``, without importing any.

    Returns
    -------
    dict
        ``"module:callable"`` -> ``"<distribution> (<group>: <name>)"``.
    """
    shipped: dict[str, str] = {}
    for ep in metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        shipped.setdefault(ep.value.replace(" ", ""), f"{dist} ({group}: {ep.name})")
    return shipped


def legacy_equivalent(entry_point: str) -> str:
    """``models.X:Y`` -> ``mlbridge_models.X:Y`` (empty for any other entry point)."""
    head, dot, rest = entry_point.partition(".")
    if head == LEGACY_SCIENCE_PACKAGE and dot:
        return f"{SCIENCE_PACKAGE}.{rest}"
    return ""


def grant_for(fmt: str, entry_point: str, trust: CodeTrust, source: str = "<manifest>") -> Grant:
    """Decide whether the entry point of a ``fmt`` manifest may be imported and called.

    Nothing is imported: only the installed packages' metadata and ``trust`` are read.

    Parameters
    ----------
    fmt
        ``state_dict`` or ``python``.
    entry_point
        The manifest's ``entry_point``.
    trust
        What the user trusted for this closure.
    source
        The manifest file, for messages.

    Returns
    -------
    Grant

    Raises
    ------
    UntrustedCodeError
        Naming the manifest, the entry point, the shipped entry points and the flag that
        would trust it.
    ValueError
        If ``fmt`` names no code.
    """
    if fmt not in GROUPS:
        raise ValueError(f"format {fmt!r} names no code (formats with code: {sorted(GROUPS)})")
    group = GROUPS[fmt]
    shipped = shipped_entry_points(group)
    for candidate in (entry_point, legacy_equivalent(entry_point)):
        if candidate and candidate in shipped:
            return Grant(entry_point, candidate, SHIPPED, shipped[candidate])
    if trust.code:
        return Grant(entry_point, entry_point, TRUST_CODE)
    if fmt == "state_dict" and entry_point in trust.architectures:
        return Grant(entry_point, entry_point, ARCHITECTURE)
    known = ", ".join(sorted(shipped)) or "none installed"
    given = ""
    if trust.architectures:
        given = f"; trusted with --architecture: {', '.join(sorted(trust.architectures))}"
        if fmt == "python":
            given += " (architectures are for format 'state_dict')"
    if fmt == "state_dict":
        how = (
            f"if you trust it, register with --architecture {entry_point} "
            f"(Registry.register(..., trust=CodeTrust(architectures={{{entry_point!r}}})))"
        )
        what = "is not a known architecture"
    else:
        how = (
            "if you trust it, register with --trust-code "
            "(Registry.register(..., trust=CodeTrust(code=True)))"
        )
        what = "is a python closure factory that is not shipped with an installed package"
    raise UntrustedCodeError(
        f"{source}: entry_point {entry_point!r} {what} (entry-point group {group}: "
        f"{known}{given}); nothing was imported. A format {fmt!r} manifest runs this code: {how}"
    )


def grant_record(grant: Grant | None) -> dict[str, Any] | None:
    """The ``code`` entry of ``record.json`` (None for formats without code)."""
    if grant is None:
        return None
    return {"entry_point": grant.entry_point, "trust": grant.trust, "shipped_by": grant.shipped_by}


def trust_from_record(record: Mapping[str, Any], entry_point: str) -> CodeTrust:
    """What the user trusted at registration, for the manifest's ``entry_point``.

    Trust is given to one entry point: a record whose trusted entry point differs from the
    manifest's (a hand-edited record) trusts nothing.
    """
    code = record.get("code")
    if not isinstance(code, Mapping) or code.get("entry_point") != entry_point:
        return CodeTrust()
    if code.get("trust") == TRUST_CODE:
        return CodeTrust(code=True)
    if code.get("trust") == ARCHITECTURE:
        return CodeTrust(architectures=frozenset({entry_point}))
    return CodeTrust()
