"""Closure manifests: the TOML file beside a trained artifact, validated into frozen dataclasses.

A manifest says what a closure is (name, version, artifact format), what it needs (halo, inputs
with their grid point, units and normalisation) and what it returns (outputs, optional clip bound),
in which precision and on which device it prefers to run, and where it came from (provenance,
offline metrics, licence). ``docs/registry.md`` lists every key. Validation
(:class:`bridge.config.schema.Reader`) refuses unknown keys and lists every problem of the file at
once, each naming the key and the value.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.closures.base import DTYPES, GRIDS, ClosureSpec, FieldSpec
from bridge.config.coupling import DEVICES
from bridge.config.schema import MISSING, Problem, Reader, SchemaError, toml_key, toml_value
from bridge.domain.stagger import NEMO_FACES, parse_faces

FORMATS: tuple[str, ...] = ("torchscript", "export", "state_dict", "python")

_ENTRY_POINT_FORMATS = ("state_dict", "python")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ENTRY_POINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_TOP_KEYS = (
    "name", "version", "format", "artifact", "halo", "dtype", "device", "description",
    "entry_point", "arch", "license", "inputs", "outputs", "provenance", "stateful", "faces",
)  # fmt: skip
_FIELD_KEYS = ("name", "grid", "units", "levels", "scale", "offset", "mean", "std")
_OUTPUT_KEYS = (*_FIELD_KEYS, "clip")
_PROVENANCE_KEYS = ("training_data", "code_revision", "created", "notes", "metrics")


class ManifestError(SchemaError):
    """A manifest is missing a key, has an unknown one, or holds a value out of range.

    Every problem found is listed (``problems``), after the file (``source``).
    """


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


SANE_SCALES = 1.0e3
"""An output of a registry closure whose manifest gives it a normalisation and no ``clip`` may
not exceed ``|offset| + SANE_SCALES * |scale|`` (:func:`sane_bound`): a thousand standard
deviations is no prediction. The server treats a value beyond it as it treats a NaN (``on_nan``);
``max_abs`` in ``coupling.toml`` replaces the bound."""


def sane_bound(norm: Normalisation, clip: float | None) -> float | None:
    """The largest absolute value an output may take, by its manifest (None: no bound).

    None when the output has a ``clip`` (its values never exceed it) or no normalisation (the
    manifest says nothing of its size).
    """
    if clip is not None or norm.is_identity:
        return None
    return abs(norm.offset) + SANE_SCALES * abs(norm.scale)


@dataclass(frozen=True)
class FieldEntry:
    """One ``[[inputs]]`` or ``[[outputs]]`` entry of a manifest.

    Parameters
    ----------
    name, grid, units, levels
        As in :class:`bridge.closures.base.FieldSpec` (``levels = 1``: a surface field).
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
    levels: int | None = None

    @property
    def field_spec(self) -> FieldSpec:
        """The field as the closure interface knows it."""
        return FieldSpec(self.name, self.grid, self.units, self.levels)


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
    stateful
        The closure keeps state between calls that a restart cannot save (e.g. a random
        generator): the servers refuse to continue a restarted coupled run with it
        (:attr:`bridge.closures.base.ClosureSpec.stateful`).
    faces
        Where the closure expects the U and V points of index ``i``, ``j``: NEMO's
        ``("east", "north")`` unless the manifest says ``faces = "west"`` (or two words, the i
        face then the j face); the server shifts staggered fields of a model whose convention
        differs (:mod:`bridge.domain.stagger`).
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
    stateful: bool = False
    faces: tuple[str, str] = NEMO_FACES
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
            stateful=self.stateful,
            faces=self.faces,
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
        On a TOML syntax error, or listing every missing required key, unknown key and bad
        value.
    """
    if isinstance(text, str):
        try:
            data: Mapping[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(f"not valid TOML: {exc}", source) from exc
    else:
        data = text
    return _read_manifest(data, source)


def _read_manifest(data: Mapping[str, Any], source: str) -> Manifest:
    """Read every key of a manifest, then raise once with every problem found."""
    r = Reader()
    r.known_keys(data, "", _TOP_KEYS)
    path_safe = {
        "expected": "letters, digits and _ . + - (not starting with a symbol)",
        "check": _NAME_RE.match,
    }
    name = r.get(data, "", "name", str, **path_safe)
    version = r.get(data, "", "version", str, **path_safe)
    fmt = r.choice(data, "", "format", FORMATS)
    halo = r.integer(data, "", "halo", minimum=0)
    if fmt in (None, "python"):
        artifact = r.string(data, "", "artifact", "")
    else:
        needs = f"a file name (format {fmt!r} needs one)"
        artifact = r.string(data, "", "artifact", nonempty=True, expected=needs)
    if fmt in _ENTRY_POINT_FORMATS:
        entry_point = r.get(
            data,
            "",
            "entry_point",
            str,
            expected=f"'module:callable' (format {fmt!r} needs one)",
            check=_ENTRY_POINT_RE.match,
        )
    else:
        entry_point = r.string(data, "", "entry_point", "")
        if entry_point and fmt is not None:
            r.note(
                "entry_point",
                f"only formats {' and '.join(_ENTRY_POINT_FORMATS)} take an entry point, "
                f"format is {fmt!r} (got {entry_point!r})",
            )
    arch = r.get(data, "", "arch", Mapping, {}, expected="a table of keyword arguments")
    if arch and fmt is not None and fmt not in _ENTRY_POINT_FORMATS:
        r.note("arch", f"[arch] is only used with an entry point, got {dict(arch)!r}")
    inputs, outputs = (
        tuple(
            _field_entry(r, entry, path, output=where == "outputs")
            for path, entry in r.tables(data, "", where, MISSING, nonempty=True)
        )
        for where in ("inputs", "outputs")
    )
    for where, entries in (("inputs", inputs), ("outputs", outputs)):
        names = [e.name for e in entries]
        for i, n in enumerate(names):
            if n is not None and n in names[:i]:
                r.note(f"{where}[{i}].name", f"name {n!r} appears twice in {where}")
        for i, e in enumerate(entries):
            if fmt == "python" and not e.norm.is_identity:
                r.note(
                    f"{where}[{i}]",
                    "normalisation applies to torch formats only; a python closure works in "
                    f"physical units (got offset {e.norm.offset}, scale {e.norm.scale})",
                )
    dtype = r.choice(data, "", "dtype", DTYPES, "float32")
    device = r.choice(data, "", "device", DEVICES, "auto")
    description = r.string(data, "", "description", "")
    license_ = r.string(data, "", "license", "")
    provenance = _provenance(r, r.sub_table(data, "", "provenance"))
    stateful = r.get(data, "", "stateful", bool, False, expected="true or false")
    faces_text = r.get(data, "", "faces", str, "east", expected="east, west or 'west south'")
    faces = NEMO_FACES
    try:
        faces = parse_faces(faces_text, "faces")
    except ValueError as err:
        r.note("faces", str(err))
    if r.problems:
        raise ManifestError(r.texts(_wording), source)
    return Manifest(
        name=name,
        version=version,
        format=fmt,
        artifact=artifact,
        halo=halo,
        inputs=inputs,
        outputs=outputs,
        dtype=dtype,
        device=device,
        description=description,
        license=license_,
        entry_point=entry_point,
        arch=dict(arch),
        provenance=provenance,
        stateful=stateful,
        faces=faces,
        source=source,
    )


def _field_entry(r: Reader, entry: Mapping[str, Any], where: str, output: bool) -> FieldEntry:
    r.known_keys(entry, where, _OUTPUT_KEYS if output else _FIELD_KEYS)
    name = r.get(entry, where, "name", str, expected="an identifier", check=str.isidentifier)
    grid = r.choice(entry, where, "grid", GRIDS)
    units = r.string(entry, where, "units")
    levels = r.get(
        entry,
        where,
        "levels",
        int,
        None,
        expected="1 (a surface field; absent: all levels)",
        check=lambda v: v == 1,
    )
    has_so = {"scale", "offset"} & set(entry)
    has_ms = {"mean", "std"} & set(entry)
    if has_so and has_ms:
        r.note(
            f"{where}.{sorted(has_ms)[0]}",
            f"give scale/offset or mean/std, not both (found {sorted(has_so | has_ms)})",
        )
    elif len(has_ms) == 1:
        r.note(f"{where}.{sorted(has_ms)[0]}", "mean and std go together; one is missing")
    nonzero = {"expected": "a finite, non-zero number", "check": bool}
    if has_ms == {"mean", "std"} and not has_so:
        mean = r.number(entry, where, "mean")
        norm = Normalisation(mean, r.number(entry, where, "std", **nonzero), "mean_std")
    else:
        offset = r.number(entry, where, "offset", 0.0)
        norm = Normalisation(offset, r.number(entry, where, "scale", 1.0, **nonzero))
    clip = None
    if output:
        clip = r.number(entry, where, "clip", None, expected="a bound > 0", check=lambda v: v > 0)
    return FieldEntry(name, grid, units, norm, clip, levels)


def _provenance(r: Reader, raw: Mapping[str, Any]) -> Provenance:
    where = "provenance"
    r.known_keys(raw, where, _PROVENANCE_KEYS)
    metrics = r.sub_table(raw, where, "metrics")
    return Provenance(
        training_data=r.string(raw, where, "training_data", ""),
        code_revision=r.string(raw, where, "code_revision", ""),
        created=r.string(raw, where, "created", ""),
        notes=r.string(raw, where, "notes", ""),
        metrics={k: r.number(metrics, "provenance.metrics", k) for k in metrics},
    )


def _wording(p: Problem) -> str:
    """A manifest's wording of a problem: ``key 'halo': expected an integer >= 0, got -1``."""
    if p.kind == "missing":
        parent, _, key = p.path.rpartition(".")
        place = f"in [{parent}]" if parent else "at the top level"
        return f"required key(s) [{key!r}] missing {place}: expected {p.text}"
    if p.kind == "unknown":
        return f"key {p.path!r}: unknown key (value {p.value!r}); allowed here: {sorted(p.known)}"
    if p.kind == "value":
        return f"key {p.path!r}: expected {p.text}, got {p.value!r}"
    return f"key {p.path!r}: {p.text}"


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
        f"name = {toml_value(m.name)}",
        f"version = {toml_value(m.version)}",
        f"format = {toml_value(m.format)}",
    ]
    if m.artifact:
        lines.append(f"artifact = {toml_value(m.artifact)}")
    lines += [
        f"halo = {m.halo}",
        f"dtype = {toml_value(m.dtype)}",
        f"device = {toml_value(m.device)}",
        f"description = {toml_value(m.description)}",
        f"license = {toml_value(m.license)}",
    ]
    if m.stateful:  # written only when set: the manifests of stateless closures keep their bytes
        lines.append("stateful = true")
    if m.faces != NEMO_FACES:  # likewise: NEMO-convention manifests keep their bytes
        lines.append(f"faces = {toml_value(' '.join(m.faces))}")
    if m.entry_point:
        lines.append(f"entry_point = {toml_value(m.entry_point)}")
    if m.arch:
        lines += ["", "[arch]"] + [f"{toml_key(k)} = {toml_value(v)}" for k, v in m.arch.items()]
    for where, entries in (("inputs", m.inputs), ("outputs", m.outputs)):
        for e in entries:
            lines += ["", f"[[{where}]]", f"name = {toml_value(e.name)}"]
            lines += [f"grid = {toml_value(e.grid)}", f"units = {toml_value(e.units)}"]
            if e.levels is not None:
                lines.append(f"levels = {e.levels}")
            if e.norm.style == "mean_std":
                lines += [
                    f"mean = {toml_value(e.norm.offset)}",
                    f"std = {toml_value(e.norm.scale)}",
                ]
            elif not e.norm.is_identity:
                lines += [
                    f"offset = {toml_value(e.norm.offset)}",
                    f"scale = {toml_value(e.norm.scale)}",
                ]
            if e.clip is not None:
                lines.append(f"clip = {toml_value(e.clip)}")
    p = m.provenance
    lines += ["", "[provenance]"]
    for key in ("training_data", "code_revision", "created", "notes"):
        value = getattr(p, key)
        if value:
            lines.append(f"{key} = {toml_value(value)}")
    if p.metrics:
        lines += ["", "[provenance.metrics]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in p.metrics.items()]
    return "\n".join(lines) + "\n"
