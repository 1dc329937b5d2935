"""The OASIS3-MCT ``namcouple``: a structured writer and a validator (no text edits).

:class:`NamcoupleConfig` describes a namcouple completely; :func:`format_namcouple` writes it in the
format its OASIS version reads (see ``docs/oasis.md``); :func:`parse_namcouple` reads an existing
one back into the same dataclasses, and :func:`compare_namcouple` lists, field by field, where it
differs from what a configuration expects. What a version keeps (name lengths, ``$NBMODEL``, an
exported field without transformation) is an :class:`OasisLimits`: :data:`OASIS_2_0` (Debian's
``liboasis3``, reached through the shim) or :data:`OASIS_4_5` (the versions that ship ``pyoasis``).
One field link is four lines (or more, one per transformation setting) after ``$STRINGS``::

    O_U P_U 1 3600 1 rst_u.nc EXPORTED    src dst index freq_s ntransfo restart status
    100 50 100 50 ocnt ocnt LAG=0         src_nx src_ny dst_nx dst_ny src_grid dst_grid options
    R 0 R 0                               source, target grid: R(egional)/P(eriodic), overlap
    LOCTRANS                              the transformations, on one line
    INSTANT                               one line of settings per transformation

With no transformation at all OASIS3-MCT 2.0 aborts ("status must not be EXPORTED"), so the
default is ``LOCTRANS`` with ``INSTANT``, a no-op (4 and 5 accept both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FIELD_NAME_MAX",
    "GRID_NAME_MAX",
    "INSTANT",
    "MODEL_NAME_MAX",
    "OASIS_2_0",
    "OASIS_4_5",
    "OASIS_VERSIONS",
    "RESTART_NAME_MAX",
    "STATUSES",
    "FieldLink",
    "NamcoupleConfig",
    "NamcoupleError",
    "OasisLimits",
    "Transform",
    "compare_namcouple",
    "format_namcouple",
    "parse_namcouple",
    "read_namcouple",
    "write_namcouple",
]


@dataclass(frozen=True)
class OasisLimits:
    """What one OASIS3-MCT version keeps of a namcouple and of the names given to it.

    Attributes
    ----------
    version
        ``"2.0"`` or ``"4/5"``: how messages name the version.
    component_name, field_name, grid_name, restart_name
        Longest component (``oasis_init_comp``), field (``oasis_def_var`` and the namcouple),
        grid and restart file name this version keeps, in characters.
    nbmodel
        Whether the namcouple names the components (``$NBMODEL``): 2.0 reads them from there,
        4 and 5 ignore the block (obsolete) and take the names from ``oasis_init_comp``.
    exported_needs_transform
        Whether an ``EXPORTED`` field needs at least one transformation (2.0 aborts without one).
    abort_status
        The exit status ``oasis_abort`` leaves when no return code is given (2.0: 0, so an
        abort can look like a success; 4 and 5: 1).
    """

    version: str
    component_name: int
    field_name: int
    grid_name: int
    restart_name: int
    nbmodel: bool
    exported_needs_transform: bool
    abort_status: int


OASIS_2_0 = OasisLimits(
    version="2.0",
    component_name=6,
    field_name=128,
    grid_name=128,
    restart_name=64,
    nbmodel=True,
    exported_needs_transform=True,
    abort_status=0,
)
"""OASIS3-MCT 2.0 (Debian's ``liboasis3``, the shim): ``ic_lvar = 128`` of ``mod_oasis_kinds``
(fields, grids), ``namrstfil`` of ``ic_med = 64`` (restart files), the ``$NBMODEL`` reader's
``CHARACTER(len=6)`` (components: ``Name for model 1 is mlbmod`` in ``nout.000000`` for
``mlbmodel``, then ``oasis_init_comp`` aborts, "model not found in namcouple", with status 0)."""

OASIS_4_5 = OasisLimits(
    version="4/5",
    component_name=80,
    field_name=80,
    grid_name=80,
    restart_name=32,
    nbmodel=False,
    exported_needs_transform=False,
    abort_status=1,
)
"""OASIS3-MCT 4 and 5 (the versions with ``pyoasis``): ``ic_lvar = 80`` ("max length of
variable, model name, grid name"), restart file names read into ``CHARACTER(len=32)``;
``$NBMODEL`` is obsolete (a warning), an exported field may have no transformation, and
``oasis_abort`` without a return code calls ``MPI_Abort`` with 1."""

OASIS_VERSIONS: dict[str, OasisLimits] = {"2.0": OASIS_2_0, "4/5": OASIS_4_5}
"""The versions whose limits are known, by :attr:`OasisLimits.version`."""

FIELD_NAME_MAX = OASIS_2_0.field_name
"""Longest field name OASIS3-MCT 2.0 keeps (128); the most of any version (4 and 5 keep 80)."""

GRID_NAME_MAX = OASIS_2_0.grid_name
"""Longest grid name OASIS3-MCT 2.0 keeps (128); the most of any version."""

RESTART_NAME_MAX = OASIS_2_0.restart_name
"""Longest restart file name OASIS3-MCT 2.0 keeps (64); the most of any version."""

MODEL_NAME_MAX = OASIS_2_0.component_name
"""Longest component name OASIS3-MCT 2.0 keeps (6); 4 and 5 keep 80."""

STATUSES = ("EXPORTED", "EXPOUT", "INPUT", "OUTPUT", "IGNORED", "IGNOUT", "AUXILARY")
"""Field statuses the namcouple of this version knows."""


class NamcoupleError(ValueError):
    """A namcouple (or its configuration) is malformed; the message names the field or line."""


@dataclass(frozen=True)
class Transform:
    """One transformation of a field link and its line of settings.

    Parameters
    ----------
    name
        ``LOCTRANS``, ``SCRIPR``, ``MAPPING``, ``CONSERV``, ...
    settings
        The words of its settings line (``("INSTANT",)`` for ``LOCTRANS``); empty: no line.
    """

    name: str
    settings: tuple[str, ...] = ()


INSTANT = Transform("LOCTRANS", ("INSTANT",))
"""The no-op transformation OASIS3-MCT 2.0 needs on an exported field (4 and 5 accept it)."""


def _check_word(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise NamcoupleError(f"{what} must be a non-empty word without blanks, got {value!r}")
    if not value.isascii():
        raise NamcoupleError(f"{what} {value!r} must be ASCII")


def _too_long(what: str, value: str, limit: int, oasis: OasisLimits) -> str | None:
    """``field name (src) 'X...' has 81 characters; OASIS3-MCT 4/5 keeps at most 80``, or None."""
    if len(value) <= limit:
        return None
    return (
        f"{what} {value!r} has {len(value)} characters; OASIS3-MCT {oasis.version} keeps at "
        f"most {limit}"
    )


def _link_problems(link: FieldLink, oasis: OasisLimits) -> list[str]:
    """What ``oasis`` does not keep of ``link``: names too long, a missing transformation."""
    about = f"field {link.src!r} -> {link.dst!r}"
    checks = (
        ("field name (src)", link.src, oasis.field_name),
        (f"field {link.src!r}: target field name (dst)", link.dst, oasis.field_name),
        (f"{about}: source grid", link.src_grid, oasis.grid_name),
        (f"{about}: target grid", link.dst_grid, oasis.grid_name),
        (f"{about}: restart file", link.restart_file, oasis.restart_name),
    )
    problems = [p for what, v, n in checks if (p := _too_long(what, v, n, oasis)) is not None]
    if oasis.exported_needs_transform and link.status in ("EXPORTED", "EXPOUT"):
        if not link.transforms:
            problems.append(
                f"{about}: an {link.status} field needs at least one transformation in "
                f"OASIS3-MCT {oasis.version} (use LOCTRANS INSTANT)"
            )
    return problems


@dataclass(frozen=True)
class FieldLink:
    """One coupling field: ``src`` of the sending component goes to ``dst`` of the receiver.

    Parameters
    ----------
    src, dst
        Field names as the two components define them (``oasis_def_var``); how long they may
        be depends on the OASIS version (:class:`OasisLimits`, checked by
        :class:`NamcoupleConfig`).
    freq_s
        Coupling period in seconds.
    src_grid, dst_grid
        Grid names (any word; they only name grid files when a remapping needs them).
    src_nx, src_ny, dst_nx, dst_ny
        Grid dimensions; their product must be the global size of the partitions (a flat 3D field
        of ``nx * ny * nz`` points is written ``nx*ny nz``).
    restart_file
        Restart file of the field (used with a lag or by transformations).
    lag
        ``LAG=`` in seconds: a ``get`` at date ``t`` receives the ``put`` of date ``t - lag``.
    seq
        ``SEQ=`` (sequence number), or ``None`` for none.
    status
        One of :data:`STATUSES` (``EXPORTED`` between two components).
    src_overlap, dst_overlap
        Grid periodicity words of the third line: ``("R", 0)`` regional, ``("P", n)`` periodic
        with ``n`` overlapping points.
    transforms
        Transformations, in order; default :data:`INSTANT` (OASIS3-MCT 2.0 needs one on an
        exported field, 4 and 5 do not).
    index
        The third word of the first line (unused by OASIS3-MCT, kept for round trips).

    Raises
    ------
    NamcoupleError
        If a name is empty, has blanks or is not ASCII (the message names the field), or a
        number is out of range. Lengths and transformations are the version's business
        (:class:`NamcoupleConfig`).
    """

    src: str
    dst: str
    freq_s: int
    src_grid: str
    dst_grid: str
    src_nx: int
    src_ny: int
    dst_nx: int
    dst_ny: int
    restart_file: str = "rst.nc"
    lag: int = 0
    seq: int | None = None
    status: str = "EXPORTED"
    src_overlap: tuple[str, int] = ("R", 0)
    dst_overlap: tuple[str, int] = ("R", 0)
    transforms: tuple[Transform, ...] = (INSTANT,)
    index: int = 1

    def __post_init__(self) -> None:
        _check_word("field name (src)", self.src)
        _check_word(f"field {self.src!r}: target field name (dst)", self.dst)
        about = f"field {self.src!r} -> {self.dst!r}"
        _check_word(f"{about}: source grid", self.src_grid)
        _check_word(f"{about}: target grid", self.dst_grid)
        _check_word(f"{about}: restart file", self.restart_file)
        for name in ("freq_s", "src_nx", "src_ny", "dst_nx", "dst_ny"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NamcoupleError(f"{about}: {name} must be a positive integer, got {value!r}")
        if isinstance(self.lag, bool) or not isinstance(self.lag, int):
            raise NamcoupleError(f"{about}: lag must be an integer (seconds), got {self.lag!r}")
        if self.status not in STATUSES:
            raise NamcoupleError(
                f"{about}: status must be one of {', '.join(STATUSES)}, got {self.status!r}"
            )
        for side, (kind, overlap) in (("src", self.src_overlap), ("dst", self.dst_overlap)):
            if kind not in ("R", "P") or not isinstance(overlap, int) or overlap < 0:
                raise NamcoupleError(
                    f"{about}: {side}_overlap must be ('R' or 'P', points >= 0), "
                    f"got {(kind, overlap)!r}"
                )
        for t in self.transforms:
            _check_word(f"{about}: transformation", t.name)


@dataclass(frozen=True)
class NamcoupleConfig:
    """A whole namcouple.

    Parameters
    ----------
    models
        Component names, as given to ``oasis_init_comp`` (``$NBMODEL`` in OASIS3-MCT 2.0;
        empty when read from a namcouple of 4 or 5 without that block).
    runtime_s
        Length of the run in seconds (``$RUNTIME``).
    fields
        The field links (``$STRINGS``), in order.
    nlogprt
        OASIS log level (``$NLOGPRT``): 0 quiet, 1 some, 2 and more: debug.
    oasis
        The OASIS version the namcouple is for (default :data:`OASIS_2_0`): its name limits are
        checked here, and it decides whether ``$NBMODEL`` is written.

    Raises
    ------
    NamcoupleError
        If a component name is bad or repeated, the run time or the log level is negative, a
        field link appears twice, or a name is longer than ``oasis`` keeps (every such name,
        each with its length and the limit).
    """

    models: tuple[str, ...]
    runtime_s: int
    fields: tuple[FieldLink, ...] = field(default_factory=tuple)
    nlogprt: int = 1
    oasis: OasisLimits = OASIS_2_0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.models and self.oasis.nbmodel:
            raise NamcoupleError("$NBMODEL: at least one component is needed")
        for name in self.models:
            _check_word("component name", name)
        if len(set(self.models)) != len(self.models):
            raise NamcoupleError(f"$NBMODEL: a component is named twice in {self.models}")
        if isinstance(self.runtime_s, bool) or not isinstance(self.runtime_s, int):
            raise NamcoupleError(f"$RUNTIME must be an integer (seconds), got {self.runtime_s!r}")
        if self.runtime_s < 0:
            raise NamcoupleError(f"$RUNTIME must be >= 0 seconds, got {self.runtime_s}")
        if not isinstance(self.nlogprt, int) or self.nlogprt < 0:
            raise NamcoupleError(f"$NLOGPRT must be an integer >= 0, got {self.nlogprt!r}")
        seen: set[tuple[str, str]] = set()
        for link in self.fields:
            key = (link.src, link.dst)
            if key in seen:
                raise NamcoupleError(f"field {link.src!r} -> {link.dst!r} appears twice")
            seen.add(key)
        limit = self.oasis.component_name
        problems = [
            p for name in self.models if (p := _too_long("component name", name, limit, self.oasis))
        ]
        problems += [p for link in self.fields for p in _link_problems(link, self.oasis)]
        if problems:
            raise NamcoupleError("; ".join(problems))


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _block(keyword: str, lines: Sequence[str]) -> list[str]:
    return [f" ${keyword}", *(f" {line}" for line in lines), " $END"]


def _link_lines(link: FieldLink) -> list[str]:
    options = [f"LAG={link.lag}"] + ([f"SEQ={link.seq}"] if link.seq is not None else [])
    lines = [
        f"{link.src} {link.dst} {link.index} {link.freq_s} {len(link.transforms)} "
        f"{link.restart_file} {link.status}",
        f"{link.src_nx} {link.src_ny} {link.dst_nx} {link.dst_ny} {link.src_grid} "
        f"{link.dst_grid} {' '.join(options)}",
        f"{link.src_overlap[0]} {link.src_overlap[1]} {link.dst_overlap[0]} {link.dst_overlap[1]}",
    ]
    if link.transforms:
        lines.append(" ".join(t.name for t in link.transforms))
        lines += [" ".join(t.settings) for t in link.transforms if t.settings]
    return lines


def format_namcouple(config: NamcoupleConfig) -> str:
    """The namcouple text of ``config`` for its OASIS version (``$NBMODEL`` only for 2.0)."""
    lines = [
        f"# namcouple for OASIS3-MCT {config.oasis.version}, written by mlbridge "
        "(bridge/config/namcouple.py); do not edit by hand"
    ]
    lines += _block("NFIELDS", [str(len(config.fields))])
    if config.oasis.nbmodel:
        lines += _block("NBMODEL", [f"{len(config.models)} {' '.join(config.models)}"])
    lines += _block("RUNTIME", [str(config.runtime_s)])
    lines += _block("NLOGPRT", [str(config.nlogprt)])
    lines.append(" $STRINGS")
    for link in config.fields:
        lines += _link_lines(link)
    lines.append(" $END")
    return "\n".join(lines) + "\n"


def write_namcouple(config: NamcoupleConfig, directory: Path | str) -> Path:
    """Write ``<directory>/namcouple`` (where OASIS looks for it); return its path."""
    path = Path(directory) / "namcouple"
    path.write_text(format_namcouple(config), encoding="ascii")
    return path


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[int, list[str]]]:
    """Non-empty, non-comment lines as (line number, words)."""
    out: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append((number, stripped.split()))
    return out


def _int(words: list[str], pos: int, what: str, where: str) -> int:
    try:
        return int(words[pos])
    except (IndexError, ValueError):
        found = words[pos] if pos < len(words) else "nothing"
        raise NamcoupleError(f"{where}: {what} must be an integer, found {found!r}") from None


def _blocks(
    lines: list[tuple[int, list[str]]], where: str
) -> dict[str, list[tuple[int, list[str]]]]:
    blocks: dict[str, list[tuple[int, list[str]]]] = {}
    current: str | None = None
    for number, words in lines:
        head = words[0]
        if head.startswith("$") and head != "$END":
            current = head[1:].upper()
            if current in blocks:
                raise NamcoupleError(f"{where}, line {number}: ${current} appears twice")
            blocks[current] = []
        elif head == "$END":
            current = None
        elif current is None:
            raise NamcoupleError(f"{where}, line {number}: {' '.join(words)!r} is outside a $block")
        else:
            blocks[current].append((number, words))
    return blocks


def _parse_links(body: list[tuple[int, list[str]]], where: str) -> list[FieldLink]:
    links: list[FieldLink] = []
    pos = 0
    while pos < len(body):
        number, first = body[pos]
        at = f"{where}, line {number}"
        if len(first) < 7:
            raise NamcoupleError(
                f"{at}: a field's first line needs 7 words (src dst index freq ntransfo restart "
                f"status), found {len(first)}: {' '.join(first)!r}"
            )
        ntrans = _int(first, 4, "the number of transformations", at)
        if pos + 2 >= len(body):
            raise NamcoupleError(f"{at}: field {first[0]!r} is cut short (needs 3 lines at least)")
        n2, second = body[pos + 1]
        n3, third = body[pos + 2]
        at2, at3 = f"{where}, line {n2}", f"{where}, line {n3}"
        if len(second) < 6:
            raise NamcoupleError(f"{at2}: field {first[0]!r}: grid line needs 6 words or more")
        lag, seq = 0, None
        for option in second[6:]:
            key, _, value = option.partition("=")
            if key.upper() == "LAG":
                lag = _int([value], 0, "LAG", at2)
            elif key.upper() == "SEQ":
                seq = _int([value], 0, "SEQ", at2)
            else:
                raise NamcoupleError(f"{at2}: field {first[0]!r}: unknown option {option!r}")
        if len(third) != 4:
            raise NamcoupleError(f"{at3}: field {first[0]!r}: overlap line needs 4 words")
        pos += 3
        transforms: list[Transform] = []
        if ntrans:
            if pos >= len(body):
                raise NamcoupleError(f"{at}: field {first[0]!r}: transformation line missing")
            nt, names = body[pos]
            if len(names) != ntrans:
                raise NamcoupleError(
                    f"{where}, line {nt}: field {first[0]!r} announces {ntrans} transformations, "
                    f"the line lists {len(names)}: {' '.join(names)!r}"
                )
            pos += 1
            for name in names:
                if pos >= len(body):
                    raise NamcoupleError(f"{at}: field {first[0]!r}: settings of {name} missing")
                transforms.append(Transform(name, tuple(body[pos][1])))
                pos += 1
        links.append(
            FieldLink(
                src=first[0],
                dst=first[1],
                index=_int(first, 2, "the index", at),
                freq_s=_int(first, 3, "the frequency", at),
                restart_file=first[5],
                status=first[6],
                src_nx=_int(second, 0, "src_nx", at2),
                src_ny=_int(second, 1, "src_ny", at2),
                dst_nx=_int(second, 2, "dst_nx", at2),
                dst_ny=_int(second, 3, "dst_ny", at2),
                src_grid=second[4],
                dst_grid=second[5],
                lag=lag,
                seq=seq,
                src_overlap=(third[0], _int(third, 1, "source overlap", at3)),
                dst_overlap=(third[2], _int(third, 3, "target overlap", at3)),
                transforms=tuple(transforms),
            )
        )
    return links


def parse_namcouple(
    text: str, source: str = "namcouple", oasis: OasisLimits = OASIS_2_0
) -> NamcoupleConfig:
    """Read a namcouple for the OASIS version ``oasis``.

    Parameters
    ----------
    text
        The file's content.
    source
        Name used in error messages.
    oasis
        The version that will read it: ``$NBMODEL`` is required for 2.0 and optional (ignored
        by OASIS) for 4 and 5; names must fit its limits.

    Raises
    ------
    NamcoupleError
        If a block is missing or malformed (the message names the line), or a name is longer
        than ``oasis`` keeps.
    """
    try:
        blocks = _blocks(_tokens(text), source)
        required = ("NFIELDS", "NBMODEL", "RUNTIME", "STRINGS")
        for name in required if oasis.nbmodel else (n for n in required if n != "NBMODEL"):
            if name not in blocks:
                raise NamcoupleError(f"{source}: block ${name} is missing")

        def single(name: str) -> tuple[int, list[str]]:
            if len(blocks[name]) != 1:
                raise NamcoupleError(f"{source}: ${name} must hold one line")
            return blocks[name][0]

        n_nf, nf = single("NFIELDS")
        n_rt, rt = single("RUNTIME")
        models: list[str] = []
        if "NBMODEL" in blocks:
            n_nb, nb = single("NBMODEL")
            nmodels = _int(nb, 0, "the number of components", f"{source}, line {n_nb}")
            if len(nb) < 1 + nmodels:
                raise NamcoupleError(
                    f"{source}, line {n_nb}: $NBMODEL announces {nmodels} components, "
                    f"lists {len(nb) - 1}"
                )
            models = nb[1 : 1 + nmodels]
        nlogprt = 0
        if "NLOGPRT" in blocks:
            n_lp, lp = single("NLOGPRT")
            nlogprt = _int(lp, 0, "$NLOGPRT", f"{source}, line {n_lp}")
        links = _parse_links(blocks["STRINGS"], source)
        nfields = _int(nf, 0, "$NFIELDS", f"{source}, line {n_nf}")
        if nfields != len(links):
            raise NamcoupleError(
                f"{source}, line {n_nf}: $NFIELDS says {nfields}, $STRINGS holds "
                f"{len(links)} fields"
            )
        return NamcoupleConfig(
            models=tuple(models),
            runtime_s=_int(rt, 0, "$RUNTIME", f"{source}, line {n_rt}"),
            fields=tuple(links),
            nlogprt=nlogprt,
            oasis=oasis,
        )
    except NamcoupleError as err:
        if str(err).startswith(source):
            raise
        raise NamcoupleError(f"{source}: {err}") from None


def read_namcouple(path: Path | str, oasis: OasisLimits = OASIS_2_0) -> NamcoupleConfig:
    """:func:`parse_namcouple` of a file, for the OASIS version ``oasis``.

    Raises
    ------
    NamcoupleError
        If the file cannot be read or parsed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as err:
        raise NamcoupleError(f"{path}: cannot read: {err.strerror}") from None
    return parse_namcouple(text, str(path), oasis)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def compare_namcouple(expected: NamcoupleConfig, found: NamcoupleConfig) -> list[str]:
    """Every difference between the namcouple a configuration expects and one found on disk.

    Field links are matched by their ``(src, dst)`` pair; then every attribute of
    :class:`FieldLink` is compared as a value (no text matching). ``$NBMODEL`` is compared only
    when both namcouples are for a version that reads it (2.0).

    Returns
    -------
    list of str
        One line per difference, naming the block or the field and attribute with both values
        (``field O_U -> P_U: freq_s: config 3600, namcouple 1800``); empty when they agree.
    """
    problems: list[str] = []
    for attr, block in (("models", "$NBMODEL"), ("runtime_s", "$RUNTIME"), ("nlogprt", "$NLOGPRT")):
        if attr == "models" and not (expected.oasis.nbmodel and found.oasis.nbmodel):
            continue  # 4 and 5 take the component names from oasis_init_comp alone
        a, b = getattr(expected, attr), getattr(found, attr)
        if a != b:
            problems.append(f"{block}: config {a!r}, namcouple {b!r}")
    want = {(f.src, f.dst): f for f in expected.fields}
    have = {(f.src, f.dst): f for f in found.fields}
    for key, link in want.items():
        other = have.get(key)
        if other is None:
            by_src = [f.dst for f in found.fields if f.src == link.src]
            hint = f" (the namcouple sends {link.src!r} to {by_src[0]!r})" if by_src else ""
            problems.append(f"field {key[0]} -> {key[1]}: missing from the namcouple{hint}")
            continue
        for f in dataclasses.fields(FieldLink):
            a, b = getattr(link, f.name), getattr(other, f.name)
            if a != b:
                problems.append(
                    f"field {key[0]} -> {key[1]}: {f.name}: config {a!r}, namcouple {b!r}"
                )
    for key in have:
        if key not in want:
            problems.append(f"field {key[0]} -> {key[1]}: in the namcouple but not in the config")
    return problems
