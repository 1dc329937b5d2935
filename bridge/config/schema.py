"""One reader for mlbridge's TOML documents: every problem of a document, each with its key path.

``coupling.toml`` (:mod:`bridge.config.coupling`), its ``[oasis]`` table
(:mod:`bridge.config.oasis`) and closure manifests (:mod:`bridge.registry.manifest`) are read with
a :class:`Reader`. A check never stops the reading: a value that fails is recorded as a
:class:`Problem` (the key path, the value found, what was expected) and the key's default takes its
place, so that one pass finds every problem of a document. Each caller words the problems its own
way (a function of a :class:`Problem`; :func:`describe` is the house style) and raises its own
subclass of :class:`SchemaError`, which lists them all.

Conventions: a key path joins table keys with ``.`` and array indices with ``[i]``, 0-based
(``exchange[1].lag``); ``""`` is the document itself. A TOML boolean is never a number. Values are
shown as they would be written in TOML (:func:`show`). Pure: no import of the package.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""As a default: the key is required. As :attr:`Problem.value`: there is no value to show."""


@dataclass(frozen=True)
class Problem:
    """One problem of a document.

    Attributes
    ----------
    kind : str
        ``"value"`` (wrong type or out of range), ``"missing"`` (a required key is absent),
        ``"unknown"`` (a key the table does not know) or ``"note"`` (anything else, in words).
    path : str
        The key path (``exchange[1].lag``; ``""``: the document as a whole).
    text : str
        value, missing: what was expected (``an integer >= 1``); note: what is wrong.
    value : Any
        The value found; :data:`MISSING` when there is none to show.
    known : tuple of str
        unknown: the keys the table knows, in the caller's order.
    bound : str
        value: the limit crossed when the type was right (``at least 1``); empty otherwise.
    """

    kind: str
    path: str
    text: str = ""
    value: Any = MISSING
    known: tuple[str, ...] = ()
    bound: str = ""


class SchemaError(ValueError):
    """Every problem found in a document, one line each, after the source they are about.

    Attributes
    ----------
    problems : list of str
        One line per problem, each naming the key and the value.
    source : Any
        What the problems are about (a file), or None.
    """

    def __init__(self, problems: Sequence[str] | str, source: Any = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source is not None else ""
        if len(self.problems) == 1:
            message = head + self.problems[0]
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{head}{len(self.problems)} problems:\n{listed}"
        super().__init__(message)


def describe(problem: Problem) -> str:
    """The house wording: ``exchange[1].lag = 2: expected one of 0, 1``."""
    p = problem
    if p.kind == "missing":
        return f"{p.path}: missing (expected {p.text})"
    if p.kind == "unknown":
        return f"{p.path}: unknown key (known keys: {', '.join(p.known)})"
    head = p.path if p.value is MISSING else f"{p.path} = {show(p.value)}"
    if p.kind == "value":
        return f"{head}: expected {p.text}"
    return f"{head}: {p.text}" if head else p.text


def join(where: str, key: str) -> str:
    """The path of ``key`` in the table at ``where``."""
    return f"{where}.{key}" if where else key


class Reader:
    """Reads the tables of a parsed document, recording every problem in :attr:`problems`.

    Each ``data, where, key`` method reads ``data[key]`` (``data`` is the table at path
    ``where``): a key that is absent gives ``default`` (with ``default=MISSING``: a "missing"
    problem and None); a value that fails gives ``default`` (None when required) and a problem.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def texts(self, wording: Callable[[Problem], str] = describe) -> list[str]:
        """The problems in words, in the order found."""
        return [wording(p) for p in self.problems]

    # -- recording

    def bad(self, path: str, value: Any, expected: str, *, bound: str = "") -> None:
        """A value that is not what was ``expected``."""
        self.problems.append(Problem("value", path, expected, value, bound=bound))

    def missing(self, path: str, expected: str) -> None:
        """A required key that is absent."""
        self.problems.append(Problem("missing", path, expected))

    def note(self, path: str, text: str, value: Any = MISSING) -> None:
        """Any other problem, in words (a clash between keys, a rule of the document)."""
        self.problems.append(Problem("note", path, text, value))

    # -- tables

    def known_keys(self, data: Mapping[str, Any], where: str, known: Iterable[str]) -> None:
        """Every key of ``data`` not in ``known`` is a problem."""
        known = tuple(known)
        for key, value in data.items():
            if key not in known:
                self.problems.append(Problem("unknown", join(where, key), value=value, known=known))

    def sub_table(self, data: Mapping[str, Any], where: str, key: str) -> Mapping[str, Any]:
        """The table at ``key`` (empty when absent or not a table)."""
        return self.get(data, where, key, Mapping, {}, expected="a table")

    def tables(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        default: Any = (),
        *,
        nonempty: bool = False,
    ) -> list[tuple[str, Mapping[str, Any]]]:
        """The ``[[key]]`` blocks as ``(path, table)``; an entry not a table is a problem."""
        some = "a non-empty" if nonempty else "an"
        raw = self.get(
            data,
            where,
            key,
            list,
            default,
            expected=f"{some} array of tables ([[{key}]])",
            check=bool if nonempty else None,
        )
        found = []
        for index, item in enumerate(raw or ()):
            path = f"{join(where, key)}[{index}]"
            if isinstance(item, Mapping):
                found.append((path, item))
            else:
                self.bad(path, item, "a table")
        return found

    # -- values

    def get(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = MISSING,
        *,
        expected: str,
        check: Callable[[Any], Any] | None = None,
        bound: str = "",
    ) -> Any:
        """``data[key]`` if an instance of ``kind`` passing ``check`` (ints become floats where
        ``kind`` has float); ``bound`` words a failed ``check``."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        path = join(where, key)
        fallback = None if default is MISSING else default
        value = data.get(key, MISSING)
        if value is MISSING:
            if default is MISSING:
                self.missing(path, expected)
            return fallback
        # bool is an int in Python, but `ranks = true` is a mistake
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.bad(path, value, expected)
            return fallback
        if check is not None and not check(value):
            self.bad(path, value, expected, bound=bound)
            return fallback
        if float in kinds and not isinstance(value, bool):
            value = float(value)
        return value

    def string(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        default: Any = MISSING,
        *,
        nonempty: bool = False,
        expected: str = "",
    ) -> Any:
        """A string (``nonempty``: with more than blanks)."""
        expected = expected or ("a non-empty string" if nonempty else "a string")
        check = str.strip if nonempty else None
        return self.get(data, where, key, str, default, expected=expected, check=check)

    def integer(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        default: Any = MISSING,
        *,
        minimum: int = 1,
    ) -> Any:
        """An integer >= ``minimum`` (by default a positive one)."""
        return self.get(
            data,
            where,
            key,
            int,
            default,
            expected=f"an integer >= {minimum}",
            check=lambda v: v >= minimum,
            bound=f"at least {minimum}",
        )

    def number(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        default: Any = MISSING,
        *,
        expected: str = "a finite number",
        check: Callable[[float], Any] | None = None,
    ) -> Any:
        """A finite number, as a float (``check``: a further condition, worded in ``expected``)."""
        return self.get(
            data,
            where,
            key,
            (int, float),
            default,
            expected=expected,
            check=lambda v: math.isfinite(v) and (check is None or check(v)),
        )

    def choice(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        choices: Sequence[Any],
        default: Any = MISSING,
    ) -> Any:
        """One of ``choices`` (all of one type)."""
        return self.get(
            data,
            where,
            key,
            type(choices[0]),
            default,
            expected="one of " + ", ".join(show(c) for c in choices),
            check=lambda v: v in choices,
        )

    def names(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        default: Any = MISSING,
        *,
        expected: str = "a non-empty table of names",
    ) -> dict[str, str]:
        """A non-empty table of name -> name (each entry that is not is a problem)."""
        table = self.get(data, where, key, Mapping, default, expected=expected, check=bool)
        found = {}
        for name, value in (table or {}).items():
            if isinstance(value, str) and value and name:
                found[name] = value
            else:
                self.bad(join(join(where, key), name), value, "a name (a non-empty string)")
        return found

    def strings(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        default: Sequence[str] = (),
        *,
        nonempty: bool = True,
        expected: str = "an array of strings",
    ) -> tuple[str, ...]:
        """An array of strings (``nonempty``: each more than blanks); bad items are problems."""
        items = self.get(data, where, key, list, list(default), expected=expected)
        found = []
        for index, value in enumerate(items or []):
            if isinstance(value, str) and (value.strip() or not nonempty):
                found.append(value)
            else:
                what = "a non-empty string" if nonempty else "a string"
                self.bad(f"{join(where, key)}[{index}]", value, what)
        return tuple(found)

    def string_table(
        self,
        data: Mapping[str, Any],
        where: str,
        key: str,
        *,
        expected: str = "a table of name -> string",
    ) -> dict[str, str]:
        """A table of name -> string (may be empty); entries of another type are problems."""
        table = self.get(data, where, key, Mapping, {}, expected=expected)
        found = {}
        for name, value in (table or {}).items():
            if isinstance(value, str):
                found[str(name)] = value
            else:
                self.bad(join(join(where, key), name), value, "a string")
        return found


# -- values as TOML writes them ---------------------------------------------------------------


def show(value: Any) -> str:
    """A value as it would be written in a TOML file (``true``, ``"gpu"``, ``{ a = 1 }``)."""
    try:
        return toml_value(value)
    except TypeError:
        return repr(value)


def toml_key(key: str) -> str:
    """A TOML key: bare when it can be, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A TOML value (the types a parsed document holds; JSON string escapes are valid TOML).

    Raises
    ------
    TypeError
        If TOML has no such value.
    """
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
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML")
