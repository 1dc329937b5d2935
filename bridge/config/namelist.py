"""NEMO-style namelists: ``namelist_ref`` + ``namelist_cfg`` read with f90nml, merged, patched.

NEMO reads every block (``&namrun``, ``&namdom``, ...) first from ``namelist_ref``, which holds
every entry with its default, then from ``namelist_cfg``, which overrides some of them. An entry
of ``namelist_cfg`` unknown to the reference makes NEMO stop, and :func:`read_namelists` too.
Names are case-insensitive (f90nml lowercases them): ``rn_Dt`` and ``rn_dt`` are one entry.

An entry of ``namelist_cfg`` must also have the type of the reference's
(:meth:`NemoNamelist.type_problems`): the model would stop on ``nn_write = 'ten'`` or
``nn_write = 2.5`` with a message that names neither.

The merged view (:class:`NemoNamelist`) answers what a coupler needs: the time step, the run
length, the global grid and the requested decomposition. :func:`write_patched_cfg` writes a
``namelist_cfg`` with a few entries changed (run length, decomposition) into a run directory,
keeping the user's file as it is otherwise (comments included).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import f90nml

# &namusr_def entries giving the global grid, first match wins (the toy's names first)
GRID_ENTRIES: dict[str, tuple[str, ...]] = {
    "nx": ("nn_nx", "jpiglo", "nn_jpiglo", "nn_i"),
    "ny": ("nn_ny", "jpjglo", "nn_jpjglo", "nn_j"),
    "nz": ("nn_nz", "jpkglo", "nn_jpkglo", "nn_k", "nn_layers"),
}


FORTRAN_TYPES = ("integer", "real", "logical", "character", "complex")
"""The types of namelist values, as f90nml reads them (int, float, bool, str, complex)."""

ARTICLES = {"integer": "an integer", "real": "a real", "logical": "a logical",
            "character": "a character string (in quotes)", "complex": "a complex"}  # fmt: skip

# NEMO's naming convention: a reference written 0 for a real rn_ entry is still a real
_PREFIX_TYPES = {"rn_": "real"}


class NamelistError(ValueError):
    """A namelist file is missing, unreadable, or lacks or misuses an entry.

    The message names the file and the block/entry (``namelist_cfg: &namdom rn_dt ...``).
    """


@dataclass(frozen=True)
class Grid:
    """Global model grid: ``nx`` x ``ny`` horizontal points, ``nz`` levels (or layers)."""

    nx: int
    ny: int
    nz: int

    @property
    def columns(self) -> int:
        """Number of horizontal grid points (water columns)."""
        return self.nx * self.ny


@dataclass(frozen=True)
class NemoNamelist:
    """The merged ``namelist_ref`` + ``namelist_cfg``.

    Attributes
    ----------
    ref_path, cfg_path : Path
        The two files read.
    groups : dict
        Block name -> entry name -> value, all names lowercase, cfg values over ref values.
    origin : dict
        ``(block, entry)`` -> the file the value comes from (cfg or ref), for error messages.
    reference : dict
        Block -> entry -> value as ``namelist_ref`` has it (the types cfg values must have).
    patch : dict
        Block -> entry -> value changed by :meth:`with_patch` relative to the files (what
        :func:`write_patched_cfg` writes into a run's ``namelist_cfg``).
    """

    ref_path: Path
    cfg_path: Path
    groups: dict[str, dict[str, Any]]
    origin: dict[tuple[str, str], Path] = field(default_factory=dict, compare=False)
    patch: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    # -- generic access

    def where(self, group: str, entry: str | None = None) -> str:
        """``FILE: &group entry`` naming where a value comes from."""
        group = group.lower()
        path = self.origin.get((group, entry.lower()), self.cfg_path) if entry else self.cfg_path
        return f"{path}: &{group}" + (f" {entry}" if entry else "")

    def has(self, group: str, entry: str) -> bool:
        """True when ``&group entry`` is set in either file."""
        return entry.lower() in self.groups.get(group.lower(), {})

    def get(self, group: str, entry: str, default: Any = ...) -> Any:
        """Value of ``&group entry`` (case-insensitive).

        Raises
        ------
        NamelistError
            If the block or the entry is absent from both files and no default was given.
        """
        block = self.groups.get(group.lower())
        if block is None or entry.lower() not in block:
            if default is not ...:
                return default
            missing = f"block &{group.lower()}" if block is None else f"&{group.lower()} {entry}"
            raise NamelistError(f"{self.ref_path} (+ {self.cfg_path.name}): {missing} not found")
        return block[entry.lower()]

    def get_int(self, group: str, entry: str, default: Any = ...) -> int:
        """Integer value of ``&group entry``.

        Raises
        ------
        NamelistError
            If absent (without default) or not an integer.
        """
        value = self.get(group, entry, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise NamelistError(f"{self.where(group, entry)} = {value!r}: expected an integer")
        return value

    def get_float(self, group: str, entry: str, default: Any = ...) -> float:
        """Real value of ``&group entry`` (an integer is accepted).

        Raises
        ------
        NamelistError
            If absent (without default) or not a number.
        """
        value = self.get(group, entry, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NamelistError(f"{self.where(group, entry)} = {value!r}: expected a real number")
        return float(value)

    def type_problems(self) -> list[str]:
        """Every entry set in ``namelist_cfg`` whose type is not the reference's, in words.

        Types are integer, real, logical, character (and complex), of a scalar or of each element
        of an array (a NEMO structure, an array of mixed types, element by element). A real
        entry may be given as an integer (Fortran converts it); an integer entry given as a real,
        or a logical given as a number, is a problem. A reference written ``0`` for an entry
        named ``rn_...`` is taken as a real (NEMO's naming convention). Each line names the
        file, the block, the entry (and element), the value and the expected type.
        """
        problems = []
        for group, entries in self.groups.items():
            for entry, value in entries.items():
                if self.origin.get((group, entry)) != self.cfg_path:
                    continue
                ref = self.reference.get(group, {}).get(entry)
                for where, found, expected in _type_mismatches(entry, value, ref):
                    problems.append(
                        f"{self.cfg_path}: &{group} {where} = {fortran_value(found)}: expected "
                        f"{ARTICLES[expected]} (as in {self.ref_path}: {entry} = "
                        f"{fortran_value(ref)})"
                    )
        return problems

    # -- what a coupler needs

    @property
    def experiment(self) -> str:
        """``&namrun cn_exp``, the experiment name (``"run"`` when absent)."""
        value = self.get("namrun", "cn_exp", "run")
        return str(value).strip() or "run"

    @property
    def dt(self) -> float:
        """Model time step ``&namdom rn_Dt`` in seconds."""
        return self.get_float("namdom", "rn_dt")

    @property
    def it000(self) -> int:
        """First time step ``&namrun nn_it000``."""
        return self.get_int("namrun", "nn_it000")

    @property
    def itend(self) -> int:
        """Last time step ``&namrun nn_itend``."""
        return self.get_int("namrun", "nn_itend")

    @property
    def steps(self) -> int:
        """Number of time steps of the run, ``nn_itend - nn_it000 + 1``."""
        return self.itend - self.it000 + 1

    @property
    def jpni(self) -> int:
        """Subdomains along i, ``&nammpp jpni`` (< 1: the model chooses)."""
        return self.get_int("nammpp", "jpni", 0)

    @property
    def jpnj(self) -> int:
        """Subdomains along j, ``&nammpp jpnj`` (< 1: the model chooses)."""
        return self.get_int("nammpp", "jpnj", 0)

    @property
    def decomposition(self) -> tuple[int, int] | None:
        """``(jpni, jpnj)`` when both are set (>= 1), else None (the model chooses)."""
        jpni, jpnj = self.jpni, self.jpnj
        return (jpni, jpnj) if jpni >= 1 and jpnj >= 1 else None

    @property
    def grid(self) -> Grid:
        """Global grid from ``&namusr_def`` (see ``GRID_ENTRIES`` for the names looked up).

        Raises
        ------
        NamelistError
            If ``&namusr_def`` lacks one of the sizes, or one is not a positive integer.
        """
        sizes = {}
        for dim, names in GRID_ENTRIES.items():
            name = next((n for n in names if self.has("namusr_def", n)), None)
            if name is None:
                raise NamelistError(
                    f"{self.ref_path}: &namusr_def: no global grid size {dim} "
                    f"(looked for {', '.join(names)})"
                )
            value = self.get_int("namusr_def", name)
            if value < 1:
                raise NamelistError(f"{self.where('namusr_def', name)} = {value}: expected >= 1")
            sizes[dim] = value
        return Grid(**sizes)

    def with_patch(self, patch: Mapping[str, Mapping[str, Any]]) -> NemoNamelist:
        """A copy with ``patch`` (block -> entry -> value) applied, as :func:`write_patched_cfg`."""
        groups = copy.deepcopy(self.groups)
        origin = dict(self.origin)
        applied = copy.deepcopy(self.patch)
        for group, entries in patch.items():
            block = groups.setdefault(group.lower(), {})
            for entry, value in entries.items():
                block[entry.lower()] = value
                origin[(group.lower(), entry.lower())] = self.cfg_path
                applied.setdefault(group.lower(), {})[entry.lower()] = value
        return NemoNamelist(self.ref_path, self.cfg_path, groups, origin, applied, self.reference)


def fortran_type(value: Any, entry: str = "") -> str | None:
    """The Fortran type of one f90nml value (None: an empty value, or a derived type).

    ``entry`` names the entry: an integer for an ``rn_`` entry is a real.
    """
    if isinstance(value, bool):
        return "logical"
    if isinstance(value, int):
        return _PREFIX_TYPES.get(entry[:3].lower(), "integer")
    if isinstance(value, float):
        return "real"
    if isinstance(value, complex):
        return "complex"
    if isinstance(value, str):
        return "character"
    return None


def accepts(expected: str, value: Any) -> bool:
    """Whether a Fortran variable of type ``expected`` reads ``value`` (an f90nml scalar)."""
    if value is None:
        return True  # an empty value leaves the variable as it is
    found = fortran_type(value)
    if expected == "real":
        return found in ("real", "integer")
    if expected == "complex":
        return found in ("complex", "real", "integer")
    return found == expected


def _type_mismatches(entry: str, value: Any, ref: Any) -> list[tuple[str, Any, str]]:
    """``(entry or entry(i) or entry%part, value found, expected type)`` of each mismatch."""
    if isinstance(value, Mapping) or isinstance(ref, Mapping):  # a derived type: part by part
        if not (isinstance(value, Mapping) and isinstance(ref, Mapping)):
            return []
        found = []
        for key, part in value.items():
            if key in ref:
                found += [
                    (f"{entry}%{where}", v, t)
                    for where, v, t in _type_mismatches(key, part, ref[key])
                ]
        return found
    refs = ref if isinstance(ref, list) else [ref]
    types = [fortran_type(r, entry) for r in refs]
    known = {t for t in types if t is not None}
    values = value if isinstance(value, list) else [value]
    found = []
    for index, item in enumerate(values):
        if index < len(types) and types[index] is not None:
            expected = types[index]  # element by element: arrays of mixed types (structures)
        elif len(known) == 1:
            expected = next(iter(known))
        else:
            continue  # nothing to compare with
        if isinstance(item, list | Mapping) or not accepts(expected, item):
            where = f"{entry}({index + 1})" if isinstance(value, list) else entry
            found.append((where, item, expected))
    return found


def fortran_value(value: Any) -> str:
    """A value as a namelist file writes it (``'ten'``, ``2.5``, ``.true.``, ``1, 2``)."""
    if isinstance(value, list):
        return ", ".join(fortran_value(v) for v in value)
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, complex):
        return f"({value.real!r}, {value.imag!r})"
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"%{k} = {fortran_value(v)}" for k, v in value.items()) + ")"
    return repr(value)


def _read(path: Path, what: str) -> f90nml.Namelist:
    if not path.is_file():
        raise NamelistError(f"{path}: {what} not found")
    try:
        return f90nml.read(str(path))
    except OSError as err:
        raise NamelistError(f"{path}: cannot read {what}: {err.strerror}") from None
    except (ValueError, IndexError, TypeError, StopIteration) as err:
        raise NamelistError(f"{path}: {what} is not a valid Fortran namelist: {err}") from None


def _as_dict(group: Any) -> dict[str, Any]:
    # a block repeated in one file comes back as a list: Fortran reads the first one
    if isinstance(group, list):
        group = group[0]
    return {key.lower(): value for key, value in group.items()}


def read_namelists(ref_path: Path | str, cfg_path: Path | str) -> NemoNamelist:
    """Read ``namelist_ref`` then ``namelist_cfg`` and merge them, cfg over ref, entry by entry.

    Raises
    ------
    NamelistError
        If a file is missing or not a valid namelist, or if ``namelist_cfg`` has a block or an
        entry that ``namelist_ref`` does not (the model would stop on it); the message names
        the file and the block/entry.
    """
    ref_path, cfg_path = Path(ref_path), Path(cfg_path)
    ref = _read(ref_path, "namelist_ref")
    cfg = _read(cfg_path, "namelist_cfg")
    groups: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], Path] = {}
    for name, group in ref.items():
        groups[name.lower()] = _as_dict(group)
        origin.update({(name.lower(), key): ref_path for key in groups[name.lower()]})
    problems = []
    for name, group in cfg.items():
        name = name.lower()
        if name not in groups:
            problems.append(
                f"{cfg_path}: block &{name} does not exist in {ref_path} "
                f"(known blocks: {', '.join('&' + g for g in groups)})"
            )
            continue
        for key, value in _as_dict(group).items():
            if key not in groups[name]:
                problems.append(
                    f"{cfg_path}: &{name} {key}: no such entry in {ref_path} "
                    f"(entries of &{name}: {', '.join(groups[name]) or 'none'})"
                )
                continue
            groups[name][key] = value
            origin[(name, key)] = cfg_path
    if problems:
        raise NamelistError("\n".join(problems))
    reference = {name.lower(): _as_dict(group) for name, group in ref.items()}
    return NemoNamelist(ref_path, cfg_path, groups, origin, reference=reference)


def restart_file(namelist: NemoNamelist) -> Path | None:
    """The restart file the model will read (``&namrun cn_ocerst_in``, ``.nc`` added), or None.

    None when ``ln_rstart`` is false. A relative name is taken relative to ``namelist_cfg``'s
    directory (the model itself runs in the run directory: :func:`run_patch` makes it absolute).
    """
    if not namelist.get("namrun", "ln_rstart", False):
        return None
    name = str(namelist.get("namrun", "cn_ocerst_in", "restart")).strip()
    path = Path(name if name.endswith(".nc") else name + ".nc")
    return path if path.is_absolute() else (namelist.cfg_path.parent / path).resolve()


def run_patch(
    namelist: NemoNamelist,
    *,
    steps: int | None = None,
    model_ranks: int | None = None,
    coupled: bool | None = None,
) -> dict[str, dict[str, Any]]:
    """Entries to change in ``namelist_cfg`` for a run (block -> entry -> value).

    Parameters
    ----------
    namelist
        The merged namelists.
    steps
        Run this many steps from ``nn_it000``: sets ``&namrun nn_itend``.
        A relative restart file (``cn_ocerst_in`` with ``ln_rstart``) is always made absolute.
    model_ranks
        Number of model ranks; when the namelist fixes a decomposition ``jpni x jpnj`` with
        another number of subdomains, both are set to 0 so that the model chooses one.
    coupled
        Whether inference servers run beside the model: sets ``&nammlb ln_mlb`` to match
        (when the model has that entry), so that the coupling file alone decides.

    Raises
    ------
    NamelistError
        If an entry needed to compute the patch is missing or mistyped.
    """
    patch: dict[str, dict[str, Any]] = {}
    restart = restart_file(namelist)
    if restart is not None and restart != Path(str(namelist.get("namrun", "cn_ocerst_in"))):
        # the model runs in the run directory: point it at the file next to namelist_cfg
        patch["namrun"] = {"cn_ocerst_in": str(restart)}
    if steps is not None:
        patch.setdefault("namrun", {})["nn_itend"] = namelist.it000 + int(steps) - 1
    if coupled is not None and namelist.has("nammlb", "ln_mlb"):
        if bool(namelist.get("nammlb", "ln_mlb")) != coupled:
            patch.setdefault("nammlb", {})["ln_mlb"] = coupled
    if model_ranks is not None:
        decomposition = namelist.decomposition
        if decomposition is not None and decomposition[0] * decomposition[1] != model_ranks:
            patch.setdefault("nammpp", {}).update({"jpni": 0, "jpnj": 0})
    return patch


def parse_value(text: str) -> Any:
    """A namelist value written as in a namelist file (``1.5e11``, ``3``, ``.false.``, ``'x'``),
    typed by f90nml exactly as it types the files.

    Raises
    ------
    NamelistError
        If f90nml cannot read it.
    """
    try:
        return f90nml.reads(f"&value v = {text} /")["value"]["v"]
    except (ValueError, IndexError, KeyError) as err:
        raise NamelistError(f"{text!r}: not a namelist value ({err})") from None


def write_patched_cfg(
    cfg_path: Path | str, patch: Mapping[str, Mapping[str, Any]], out_path: Path | str
) -> Path:
    """Write ``cfg_path`` with ``patch`` applied to ``out_path`` (comments kept); return it.

    Entries (and blocks) absent from the cfg file are added to it.

    Raises
    ------
    NamelistError
        If the file cannot be read or written.
    """
    cfg_path, out_path = Path(cfg_path), Path(out_path)
    patch_nml = f90nml.Namelist({g: f90nml.Namelist(dict(e)) for g, e in patch.items()})
    try:
        if not patch:
            out_path.write_bytes(cfg_path.read_bytes())
        else:
            f90nml.patch(str(cfg_path), patch_nml, str(out_path))
    except OSError as err:
        raise NamelistError(f"{cfg_path} -> {out_path}: {err.strerror}") from None
    return out_path
