"""Closure manifests: the TOML file beside a trained artifact, validated into frozen dataclasses.

A manifest says what a closure is (name, version, artifact format), what it needs (halo, inputs
with their grid point, units and normalisation) and what it returns (outputs, optional clip bound),
in which precision and on which device it prefers to run, and where it came from (provenance,
offline metrics, licence). ``docs/registry.md`` lists every key. Validation refuses unknown keys and
names the file, the key and the value in every error.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.closures.base import DTYPES, GRIDS, ClosureSpec, FieldSpec

FORMATS: tuple[str, ...] = ("torchscript", "export", "state_dict", "python")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ENTRY_POINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_TOP_KEYS = {
    "name": True,
    "version": True,
    "format": True,
    "artifact": False,
    "halo": True,
    "dtype": False,
    "device": False,
    "description": False,
    "entry_point": False,
    "arch": False,
    "license": False,
    "inputs": True,
    "outputs": True,
    "provenance": False,
}
_FIELD_KEYS = {"name", "grid", "units", "scale", "offset", "mean", "std"}
_OUTPUT_KEYS = _FIELD_KEYS | {"clip"}
_PROVENANCE_KEYS = {"training_data", "code_revision", "created", "notes", "metrics"}


class ManifestError(ValueError):
    """A manifest is missing a key, has an unknown one, or holds a value out of range."""


@dataclass(frozen=True)
class Normalisation:
    """Affine map between physical values and what the network sees.

    The network sees ``(x - offset) / scale``; its outputs are mapped back with
    ``y * scale + offset``. ``mean``/``std`` in a manifest are the same map (offset = mean,
    scale = std); ``style`` remembers which pair was written so the manifest round-trips.

    Parameters
    ----------
    offset, scale
        Finite numbers, ``scale != 0``.
    style
        ``"scale_offset"`` or ``"mean_std"``.
    """

    offset: float = 0.0
    scale: float = 1.0
    style: str = "scale_offset"

    @property
    def is_identity(self) -> bool:
        """True when the map changes nothing (no arithmetic needed)."""
        return self.offset == 0.0 and self.scale == 1.0


@dataclass(frozen=True)
class FieldEntry:
    """One ``[[inputs]]`` or ``[[outputs]]`` entry of a manifest.

    Parameters
    ----------
    name, grid, units
        As in :class:`bridge.closures.base.FieldSpec`.
    norm
        Normalisation of this field.
    clip
        Outputs only: the largest absolute value let through (``None``: no clipping), in
        physical units.
    """

    name: str
    grid: str
    units: str
    norm: Normalisation = Normalisation()
    clip: float | None = None

    @property
    def field_spec(self) -> FieldSpec:
        """The field as the closure interface knows it."""
        return FieldSpec(self.name, self.grid, self.units)


@dataclass(frozen=True)
class Provenance:
    """Where a closure came from.

    Parameters
    ----------
    training_data
        What it was trained on (experiment, resolution, filter), free text.
    code_revision
        Revision of the training code (a git hash).
    created
        Date of training, free text (ISO 8601 advised).
    notes
        Anything else.
    metrics
        Offline metrics, name -> number (``r2_u = 0.71``).
    """

    training_data: str = ""
    code_revision: str = ""
    created: str = ""
    notes: str = ""
    metrics: dict[str, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Manifest:
    """A validated closure manifest.

    Parameters
    ----------
    name, version
        The registry reference is ``name@version``; both are path-safe
        (letters, digits, ``_ . + -``).
    format
        ``torchscript``, ``export``, ``state_dict`` or ``python``.
    artifact
        File name of the artifact, relative to the manifest's directory (empty: none, which only
        the ``python`` format allows).
    halo
        Cells of halo the closure consumes on each side.
    inputs, outputs
        Field entries, in channel order.
    dtype
        ``float32`` or ``float64``: the precision the closure computes in.
    device
        Preferred device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    description, license
        Free text.
    entry_point
        ``"module:callable"``: for ``state_dict`` the architecture factory (called with ``arch``
        as keyword arguments), for ``python`` a callable returning a closure.
    arch
        Keyword arguments of the entry point.
    provenance
        See :class:`Provenance`.
    source
        The file the manifest was read from, for messages (not compared).
    """

    name: str
    version: str
    format: str
    artifact: str
    halo: int
    inputs: tuple[FieldEntry, ...]
    outputs: tuple[FieldEntry, ...]
    dtype: str = "float32"
    device: str = "auto"
    description: str = ""
    license: str = ""
    entry_point: str = ""
    arch: dict[str, Any] = field(default_factory=dict, hash=False)
    provenance: Provenance = Provenance()
    source: str = field(default="<manifest>", compare=False)

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def spec(self) -> ClosureSpec:
        """The closure spec this manifest declares."""
        return ClosureSpec(
            name=self.name,
            halo=self.halo,
            inputs=tuple(f.field_spec for f in self.inputs),
            outputs=tuple(f.field_spec for f in self.outputs),
            dtype=self.dtype,
        )

    def artifact_path(self) -> Path | None:
        """The artifact resolved against the manifest's directory (``None`` when there is none)."""
        if not self.artifact:
            return None
        path = Path(self.artifact)
        if path.is_absolute() or self.source.startswith("<"):
            return path
        return Path(self.source).parent / path


# -- reading --------------------------------------------------------------------------------------


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file.

    Parameters
    ----------
    path
        The TOML file.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        If the file is missing, is not valid TOML, or fails validation (the message names the
        file, the key and the value).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from exc
    return parse_manifest(text, source=str(path))


def parse_manifest(text: str | Mapping[str, Any], source: str = "<manifest>") -> Manifest:
    """Validate manifest text (or an already parsed TOML table).

    Parameters
    ----------
    text
        TOML text, or the dict ``tomllib`` would produce from it.
    source
        Name used in messages and to resolve a relative ``artifact``.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        On a TOML syntax error, a missing required key, an unknown key or a bad value.
    """
    if isinstance(text, str):
        try:
            data: Mapping[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(f"{source}: not valid TOML: {exc}") from exc
    else:
        data = text
    return _Reader(source).manifest(data)


class _Reader:
    """Validation helpers that carry the file name into every message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ManifestError:
        return ManifestError(f"{self.source}: key {key!r}: {message}")

    def keys(self, table: Mapping[str, Any], where: str, allowed: set[str], required: set[str]):
        unknown = sorted(set(table) - allowed)
        if unknown:
            prefix = f"{where}." if where else ""
            raise self.error(
                prefix + unknown[0],
                f"unknown key (value {table[unknown[0]]!r}); allowed here: {sorted(allowed)}",
            )
        missing = sorted(required - set(table))
        if missing:
            place = f"in [{where}]" if where else "at the top level"
            raise ManifestError(
                f"{self.source}: required key(s) {missing} missing {place}"
                + (f" (found {sorted(table)})" if table else "")
            )

    def string(self, table: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self.error(_join(where, key), f"expected a string, got {value!r}")
        return value

    def choice(
        self, table: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.string(table, key, where, default)
        if value not in choices:
            raise self.error(
                _join(where, key), f"expected one of {'/'.join(choices)}, got {value!r}"
            )
        return value

    def number(self, table: Mapping[str, Any], key: str, where: str) -> float:
        value = table[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.error(_join(where, key), f"expected a finite number, got {value!r}")
        return float(value)

    def manifest(self, data: Mapping[str, Any]) -> Manifest:
        self.keys(data, "", set(_TOP_KEYS), {k for k, req in _TOP_KEYS.items() if req})
        name = self.string(data, "name", "")
        version = self.string(data, "version", "")
        for key, value in (("name", name), ("version", version)):
            if not _NAME_RE.match(value):
                raise self.error(
                    key,
                    f"expected letters, digits and _ . + - (not starting with a symbol), "
                    f"got {value!r}",
                )
        fmt = self.choice(data, "format", "", FORMATS, "")
        halo = data["halo"]
        if isinstance(halo, bool) or not isinstance(halo, int) or halo < 0:
            raise self.error("halo", f"expected an integer >= 0, got {halo!r}")
        artifact = self.string(data, "artifact", "")
        if fmt != "python" and not artifact:
            raise ManifestError(
                f"{self.source}: required key ['artifact'] missing (format {fmt!r} needs a file)"
            )
        entry_point = self.string(data, "entry_point", "")
        if fmt in ("state_dict", "python"):
            if not entry_point:
                raise ManifestError(
                    f"{self.source}: required key ['entry_point'] missing "
                    f"(format {fmt!r} needs 'module:callable')"
                )
            if not _ENTRY_POINT_RE.match(entry_point):
                raise self.error("entry_point", f"expected 'module:callable', got {entry_point!r}")
        elif entry_point:
            raise self.error(
                "entry_point",
                f"only formats state_dict and python take an entry point, format is {fmt!r} "
                f"(got {entry_point!r})",
            )
        arch = data.get("arch", {})
        if not isinstance(arch, dict):
            raise self.error("arch", f"expected a table of keyword arguments, got {arch!r}")
        if arch and not entry_point:
            raise self.error("arch", f"[arch] is only used with an entry point, got {arch!r}")
        inputs = self.fields(data["inputs"], "inputs", output=False)
        outputs = self.fields(data["outputs"], "outputs", output=True)
        for where, entries in (("inputs", inputs), ("outputs", outputs)):
            names = [e.name for e in entries]
            for i, n in enumerate(names):
                if n in names[:i]:
                    raise self.error(f"{where}[{i}].name", f"name {n!r} appears twice in {where}")
        if fmt == "python":
            for where, entries in (("inputs", inputs), ("outputs", outputs)):
                for i, e in enumerate(entries):
                    if not e.norm.is_identity:
                        raise self.error(
                            f"{where}[{i}]",
                            "normalisation applies to torch formats only; a python closure "
                            f"works in physical units (got offset {e.norm.offset}, "
                            f"scale {e.norm.scale})",
                        )
        return Manifest(
            name=name,
            version=version,
            format=fmt,
            artifact=artifact,
            halo=halo,
            inputs=inputs,
            outputs=outputs,
            dtype=self.choice(data, "dtype", "", DTYPES, "float32"),
            device=self.choice(data, "device", "", DEVICES, "auto"),
            description=self.string(data, "description", ""),
            license=self.string(data, "license", ""),
            entry_point=entry_point,
            arch=dict(arch),
            provenance=self.provenance(data.get("provenance", {})),
            source=self.source,
        )

    def fields(self, raw: Any, where: str, output: bool) -> tuple[FieldEntry, ...]:
        if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
            raise self.error(
                where, f"expected a non-empty array of tables ([[{where}]]), got {raw!r}"
            )
        return tuple(self.field_entry(e, f"{where}[{i}]", output) for i, e in enumerate(raw))

    def field_entry(self, entry: Mapping[str, Any], where: str, output: bool) -> FieldEntry:
        self.keys(entry, where, _OUTPUT_KEYS if output else _FIELD_KEYS, {"name", "grid", "units"})
        name = self.string(entry, "name", where)
        if not name.isidentifier():
            raise self.error(f"{where}.name", f"expected an identifier, got {name!r}")
        grid = self.choice(entry, "grid", where, GRIDS, "")
        units = self.string(entry, "units", where)
        has_so = {"scale", "offset"} & set(entry)
        has_ms = {"mean", "std"} & set(entry)
        if has_so and has_ms:
            raise self.error(
                f"{where}.{sorted(has_ms)[0]}",
                f"give scale/offset or mean/std, not both (found {sorted(has_so | has_ms)})",
            )
        if has_ms:
            if has_ms != {"mean", "std"}:
                raise self.error(
                    f"{where}.{sorted(has_ms)[0]}", "mean and std go together; one is missing"
                )
            norm = Normalisation(
                self.number(entry, "mean", where), self.number(entry, "std", where), "mean_std"
            )
            scale_key = "std"
        else:
            norm = Normalisation(
                self.number(entry, "offset", where) if "offset" in entry else 0.0,
                self.number(entry, "scale", where) if "scale" in entry else 1.0,
            )
            scale_key = "scale"
        if norm.scale == 0.0:
            raise self.error(f"{where}.{scale_key}", "must be non-zero, got 0")
        clip = None
        if "clip" in entry:
            clip = self.number(entry, "clip", where)
            if clip <= 0:
                raise self.error(f"{where}.clip", f"expected a bound > 0, got {entry['clip']!r}")
        return FieldEntry(name, grid, units, norm, clip)

    def provenance(self, raw: Any) -> Provenance:
        if not isinstance(raw, dict):
            raise self.error("provenance", f"expected a table, got {raw!r}")
        self.keys(raw, "provenance", _PROVENANCE_KEYS, set())
        metrics = raw.get("metrics", {})
        if not isinstance(metrics, dict):
            raise self.error("provenance.metrics", f"expected a table, got {metrics!r}")
        values = {k: self.number(metrics, k, "provenance.metrics") for k in metrics}
        return Provenance(
            training_data=self.string(raw, "training_data", "provenance"),
            code_revision=self.string(raw, "code_revision", "provenance"),
            created=self.string(raw, "created", "provenance"),
            notes=self.string(raw, "notes", "provenance"),
            metrics=values,
        )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# -- writing --------------------------------------------------------------------------------------


def manifest_to_toml(manifest: Manifest) -> str:
    """Write a manifest as TOML that :func:`parse_manifest` reads back to an equal manifest.

    Parameters
    ----------
    manifest
        The manifest.

    Returns
    -------
    str
        TOML text (keys with default values are still written, so the file is self-describing).
    """
    m = manifest
    lines = [
        f"name = {_toml_value(m.name)}",
        f"version = {_toml_value(m.version)}",
        f"format = {_toml_value(m.format)}",
    ]
    if m.artifact:
        lines.append(f"artifact = {_toml_value(m.artifact)}")
    lines += [
        f"halo = {m.halo}",
        f"dtype = {_toml_value(m.dtype)}",
        f"device = {_toml_value(m.device)}",
        f"description = {_toml_value(m.description)}",
        f"license = {_toml_value(m.license)}",
    ]
    if m.entry_point:
        lines.append(f"entry_point = {_toml_value(m.entry_point)}")
    if m.arch:
        lines += ["", "[arch]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in m.arch.items()]
    for where, entries in (("inputs", m.inputs), ("outputs", m.outputs)):
        for e in entries:
            lines += ["", f"[[{where}]]", f"name = {_toml_value(e.name)}"]
            lines += [f"grid = {_toml_value(e.grid)}", f"units = {_toml_value(e.units)}"]
            if e.norm.style == "mean_std":
                lines += [
                    f"mean = {_toml_value(e.norm.offset)}",
                    f"std = {_toml_value(e.norm.scale)}",
                ]
            elif not e.norm.is_identity:
                lines += [
                    f"offset = {_toml_value(e.norm.offset)}",
                    f"scale = {_toml_value(e.norm.scale)}",
                ]
            if e.clip is not None:
                lines.append(f"clip = {_toml_value(e.clip)}")
    p = m.provenance
    lines += ["", "[provenance]"]
    for key in ("training_data", "code_revision", "created", "notes"):
        value = getattr(p, key)
        if value:
            lines.append(f"{key} = {_toml_value(value)}")
    if p.metrics:
        lines += ["", "[provenance.metrics]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in p.metrics.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    # a small writer for the value types a manifest holds; JSON string escapes are valid TOML
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML")
