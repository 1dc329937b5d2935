"""The closure interface: what a closure consumes and produces, and the contract it honours.

A closure maps a dict of 3D fields with a halo to a dict of 3D fields on the interior. Arrays are
C-ordered ``(nz, ny + 2*halo, nx + 2*halo)`` on input (the same memory as a Fortran
``(nx+2h, ny+2h, nz)`` block) and ``(nz, ny, nx)`` on output. A surface field (``levels=1`` in
its :class:`FieldSpec`: SSH, wind stress) has one level whatever ``nz``: ``(1, ny+2h, nx+2h)``
on input, ``(1, ny, nx)`` on output; the closure broadcasts it over the levels itself.
Everything here is pure Python and NumPy, so analytic closures, the torch runtime and the
server can share it without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from bridge.domain.stagger import NEMO_FACES, parse_faces

#: Arakawa C-grid points a field may live on.
GRIDS: tuple[str, ...] = ("T", "U", "V", "F")

#: Floating-point types a closure may compute in.
DTYPES: tuple[str, ...] = ("float32", "float64")


class ClosureInputError(ValueError):
    """Inputs handed to a closure do not match its spec (names, rank, shape, dtype)."""


class ClosureOutputError(RuntimeError):
    """A closure produced outputs that disagree with its spec (names, shape, dtype)."""


def _check_identifier(kind: str, value: object) -> None:
    if not isinstance(value, str) or not value or not value.isidentifier():
        raise ValueError(f"{kind} must be a non-empty identifier-like string, got {value!r}")


@dataclass(frozen=True)
class FieldSpec:
    """One 3D field a closure reads or writes.

    Parameters
    ----------
    name
        Field name as the closure knows it (``"u"``, ``"lap_u"``); an identifier.
    grid
        Arakawa C-grid point: ``"T"``, ``"U"``, ``"V"`` or ``"F"``.
    units
        Physical units, free text (``"m s-1"``, ``"m s-2"``); informative only.
    levels
        ``None`` (the default): a 3D field with the exchange's ``nz`` levels. ``1``: a surface
        field, one level whatever ``nz`` (the model declares it with ``nlev = 1``).

    Raises
    ------
    ValueError
        If the name is not an identifier, the grid is not one of T/U/V/F, or levels is not
        None or 1.
    """

    name: str
    grid: str = "T"
    units: str = ""
    levels: int | None = None

    @property
    def surface(self) -> bool:
        """A one-level field (``levels == 1``)."""
        return self.levels == 1

    def __post_init__(self) -> None:
        _check_identifier("field name", self.name)
        if self.grid not in GRIDS:
            raise ValueError(
                f"field {self.name!r}: grid must be one of {'/'.join(GRIDS)}, got {self.grid!r}"
            )
        if not isinstance(self.units, str):
            raise ValueError(f"field {self.name!r}: units must be a string, got {self.units!r}")
        if self.levels is not None and (isinstance(self.levels, bool) or self.levels != 1):
            raise ValueError(
                f"field {self.name!r}: levels must be absent (all levels) or 1 (a surface "
                f"field), got {self.levels!r}"
            )


@dataclass(frozen=True)
class ClosureSpec:
    """What a closure needs and returns.

    Parameters
    ----------
    name
        Closure name (a registry name or an analytic closure's name).
    halo
        Cells of halo needed on each side of the block, >= 0. Inputs carry it, outputs do not.
    inputs, outputs
        The fields read and written, in order (for torch closures the order is the channel order).
    dtype
        ``"float32"`` or ``"float64"``: the precision the closure computes in.
    stateful
        The closure keeps state from one call to the next (a random generator, a running
        mean) that mlbridge cannot save in the model's restart: a restarted run would differ
        from one done in one go, so the servers refuse to continue one with it. The analytic
        closures and the torch closures of the registry are stateless at inference.
    faces
        Where the closure expects the U and V points of index ``i``, ``j``
        (:mod:`bridge.domain.stagger`): ``("east", "north")``, NEMO's convention (the default),
        or ``("west", "south")``; the server shifts staggered fields where the model's differs.

    Raises
    ------
    ValueError
        If the halo is negative, a list is empty, names repeat, or the dtype is unknown.
    """

    name: str
    halo: int
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    dtype: str = "float64"
    stateful: bool = False
    faces: tuple[str, str] = NEMO_FACES

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"closure name must be a non-empty string, got {self.name!r}")
        if isinstance(self.halo, bool) or not isinstance(self.halo, int) or self.halo < 0:
            raise ValueError(
                f"closure {self.name!r}: halo must be an integer >= 0, got {self.halo!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"closure {self.name!r}: dtype must be one of {'/'.join(DTYPES)}, "
                f"got {self.dtype!r}"
            )
        object.__setattr__(self, "faces", parse_faces(self.faces, f"closure {self.name!r}: faces"))
        # tuples keep the spec hashable and immutable even when lists are passed in
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        for kind, fields in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not fields:
                raise ValueError(f"closure {self.name!r}: at least one entry in {kind} is needed")
            names = [f.name for f in fields]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"closure {self.name!r}: {kind} repeat the names {repeated}")

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names in channel order."""
        return tuple(f.name for f in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names in channel order."""
        return tuple(f.name for f in self.outputs)

    def field(self, role: str, name: str) -> FieldSpec | None:
        """The input (``role="input"``) or output field ``name``; None if there is none."""
        fields = self.inputs if role == "input" else self.outputs
        return next((f for f in fields if f.name == name), None)


@runtime_checkable
class Closure(Protocol):
    """A callable from a dict of 3D fields with halo to a dict of 3D fields on the interior.

    Inputs are C-ordered ``(nz, ny + 2*halo, nx + 2*halo)`` arrays keyed by the names in
    ``spec.inputs``; the result holds one C-contiguous ``(nz, ny, nx)`` array per name in
    ``spec.outputs``, in the caller's floating dtype.
    """

    spec: ClosureSpec

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_inputs(spec: ClosureSpec, inputs: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """Check inputs against a spec and return the interior shape ``(nz, ny, nx)``.

    Parameters
    ----------
    spec
        The closure's spec.
    inputs
        Arrays keyed by input name, each ``(nz, ny + 2*halo, nx + 2*halo)``, all the same shape;
        a surface input (``levels = 1``) is ``(1, ny + 2*halo, nx + 2*halo)``.

    Returns
    -------
    tuple of int
        ``(nz, ny, nx)``, the shape every output must have.

    Raises
    ------
    ClosureInputError
        If names are missing or unexpected, an array is not 3D, shapes differ, the block is not
        larger than twice the halo, or an array is not of a real floating type.
    """
    expected = set(spec.input_names)
    given = set(inputs)
    if given != expected:
        missing = sorted(expected - given)
        extra = sorted(given - expected)
        raise ClosureInputError(
            f"closure {spec.name!r}: inputs expected {sorted(expected)}, got {sorted(given)}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {extra})" if extra else "")
        )
    shape: tuple[int, ...] | None = None  # (nz, ny+2h, nx+2h) of the 3D inputs
    plane: tuple[int, ...] | None = None  # (ny+2h, nx+2h) of every input
    first = ""
    for f in spec.inputs:
        name = f.name
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            raise ClosureInputError(
                f"closure {spec.name!r}: input {name!r} must be a numpy array, "
                f"got {type(arr).__name__}"
            )
        if arr.dtype.kind != "f":
            raise ClosureInputError(
                f"closure {spec.name!r}: input {name!r} must be float32 or float64, got {arr.dtype}"
            )
        if arr.ndim != 3:
            raise ClosureInputError(
                f"closure {spec.name!r}: input {name!r} must be 3D (nz, ny+2h, nx+2h), "
                f"got shape {arr.shape}"
            )
        if f.surface and arr.shape[0] != 1:
            raise ClosureInputError(
                f"closure {spec.name!r}: input {name!r} is a surface field (levels = 1), "
                f"got {arr.shape[0]} levels (shape {arr.shape}); the model declares it with "
                "nlev = 1"
            )
        if plane is None:
            plane, first = arr.shape[1:], name
        elif arr.shape[1:] != plane:
            raise ClosureInputError(
                f"closure {spec.name!r}: input {name!r} has shape {arr.shape}, "
                f"input {first!r} has (ny+2h, nx+2h) = {plane}; all inputs must share "
                "one (ny+2h, nx+2h)"
            )
        if f.surface:
            continue
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise ClosureInputError(
                f"closure {spec.name!r}: input {name!r} has shape {arr.shape}, another 3D "
                f"input has {shape}; all 3D inputs must share one shape"
            )
    assert plane is not None
    nz = 1 if shape is None else shape[0]
    nyh, nxh = plane
    h = spec.halo
    if nyh <= 2 * h or nxh <= 2 * h or nz < 1:
        raise ClosureInputError(
            f"closure {spec.name!r}: input block {(nz, nyh, nxh)} leaves no interior with "
            f"halo {h} (need nz >= 1 and ny+2h, nx+2h > {2 * h})"
        )
    return nz, nyh - 2 * h, nxh - 2 * h


def check_outputs(
    spec: ClosureSpec, outputs: Mapping[str, np.ndarray], shape: tuple[int, int, int]
) -> None:
    """Check a closure's result against its spec and the expected interior shape.

    Parameters
    ----------
    spec
        The closure's spec.
    outputs
        What the closure returned.
    shape
        ``(nz, ny, nx)`` from :func:`check_inputs`; a surface output (``levels = 1``) has
        ``(1, ny, nx)``.

    Raises
    ------
    ClosureOutputError
        Naming the output and both values if names or shapes disagree.
    """
    expected = set(spec.output_names)
    given = set(outputs)
    if given != expected:
        raise ClosureOutputError(
            f"closure {spec.name!r}: outputs declared {sorted(expected)}, "
            f"the closure returned {sorted(given)}"
        )
    for f in spec.outputs:
        name = f.name
        got = tuple(np.shape(outputs[name]))
        want = (1, *shape[1:]) if f.surface else tuple(shape)
        if got != want:
            raise ClosureOutputError(
                f"closure {spec.name!r}: output {name!r} should have shape {want} "
                f"(interior of a halo-{spec.halo} block), the closure returned {got}"
            )
