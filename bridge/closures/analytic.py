"""Analytic closures in NumPy: references for the coupling tests and the benchmarks.

Each closure applies one operation to each of its inputs and returns one output per input,
named ``<prefix>_<input>`` (``laplacian`` on ``u`` gives ``lap_u``). The same operations are
compiled into the toy model (``fortran_stubs/toy_nemo/infclosure.F90``) in the same operation
order, so that a coupled run and an in-process run agree to the last bit.

* ``laplacian`` (halo 1): ``coefficient * (((x[i+1] + x[i-1]) + (x[j+1] + x[j-1])) - 4 x)``.
* ``smooth3`` (halo 3): three passes of the (1-2-1) x (1-2-1) / 16 filter ``S``, each pass
  consuming one halo cell and followed by a multiplication by the ``mask`` input (1 on ocean
  points inside the domain, 0 on land and beyond a closed edge, as the model's halo exchange and
  land mask do between passes); output ``coefficient * (S3 - x)``, a relaxation toward the
  smoothed field. ``S`` sums along i first: ``r = (a[i-1] + a[i+1]) + 2 a[i]``, then
  ``((r[j-1] + r[j+1]) + 2 r[j]) * 0.0625``: symmetric, so that a mirrored input gives the
  mirrored bits (the halo across a north fold is a mirror).
* ``identity`` (halo 0): the inputs themselves (the exchange benchmark's closure).
* ``cgrid_sw`` (halo 1): the linear shallow-water tendencies of a C grid in NEMO's convention
  (``U(i)`` at ``i + 1/2``, ``V(j)`` at ``j + 1/2``), inputs ``h`` (T), ``u`` (U), ``v`` (V):
  ``du = -c (h[i+1] - h[i])`` on U, ``dv = -c (h[j+1] - h[j])`` on V and
  ``dh = -c ((u[i] - u[i-1]) + (v[j] - v[j-1]))`` on T. A stencil that pairs other physical
  points if the staggering is wrong: the staggering tests' closure (:func:`cgrid_sw_op`).
* ``surface_laplacian`` (halo 1): a closure of 3D and surface fields together. Inputs: the
  surface field ``s`` (``levels = 1``: one level, the model declares it with ``nlev = 1``) and
  any 3D fields ``x``; outputs ``slap_x = laplacian(s) * x`` on every level of ``x`` (the
  surface term broadcast over the levels; ``laplacian`` as above, with the coefficient) and the
  surface output ``lap_s = laplacian(s)`` (``levels = 1``).

The ``mask`` input of ``smooth3`` is not mapped in ``coupling.toml``: the server supplies it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.closures.base import ClosureSpec, FieldSpec, check_inputs

#: Name of the input the server fills with the domain-and-land mask (1 ocean, 0 elsewhere).
MASK_INPUT = "mask"


@dataclass(frozen=True)
class _Analytic:
    """One analytic operation applied to each input field."""

    spec: ClosureSpec
    fields: tuple[str, ...]
    prefix: str
    coefficient: float
    operation: Callable[..., np.ndarray]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.spec, inputs)
        mask = inputs.get(MASK_INPUT)
        return {
            f"{self.prefix}_{name}": np.ascontiguousarray(
                self.operation(inputs[name], self.coefficient, mask)
            )
            for name in self.fields
        }


def laplacian_op(x: np.ndarray, coefficient: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``coefficient`` times the 5-point Laplacian of a halo-1 block ``(nz, ny+2, nx+2)``."""
    east, west = x[:, 1:-1, 2:], x[:, 1:-1, :-2]
    north, south = x[:, 2:, 1:-1], x[:, :-2, 1:-1]
    return coefficient * (((east + west) + (north + south)) - 4.0 * x[:, 1:-1, 1:-1])


def smooth_pass(a: np.ndarray) -> np.ndarray:
    """One (1-2-1) x (1-2-1) / 16 pass: ``(nz, ny, nx)`` -> ``(nz, ny-2, nx-2)``."""
    r = (a[:, :, :-2] + a[:, :, 2:]) + 2.0 * a[:, :, 1:-1]
    return ((r[:, :-2, :] + r[:, 2:, :]) + 2.0 * r[:, 1:-1, :]) * 0.0625


def smooth3_op(x: np.ndarray, coefficient: float, mask: np.ndarray | None = None) -> np.ndarray:
    """``coefficient * (S3 - x)`` on a halo-3 block, masked between passes (see module doc)."""
    a = x
    for width in (2, 1, 0):
        a = smooth_pass(a)
        if mask is not None:
            m = mask[
                :, 3 - width : mask.shape[1] - 3 + width, 3 - width : mask.shape[2] - 3 + width
            ]
            a = a * m
    return coefficient * (a - x[:, 3:-3, 3:-3])


def identity_op(x: np.ndarray, coefficient: float, mask: np.ndarray | None = None) -> np.ndarray:
    """The input itself (halo 0); ``coefficient`` is ignored."""
    return x


#: The surface input of ``surface_laplacian``.
SURFACE_INPUT = "s"


@dataclass(frozen=True)
class _Surface:
    """``surface_laplacian``: a surface field's Laplacian times each 3D field, and itself."""

    spec: ClosureSpec
    fields: tuple[str, ...]
    coefficient: float

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.spec, inputs)
        lap = laplacian_op(inputs[SURFACE_INPUT], self.coefficient)  # (1, ny, nx)
        out = {
            f"slap_{f}": np.ascontiguousarray(lap * inputs[f][:, 1:-1, 1:-1]) for f in self.fields
        }
        out[f"lap_{SURFACE_INPUT}"] = np.ascontiguousarray(lap)
        return out


#: The inputs and outputs of ``cgrid_sw``, with their C-grid points.
CGRID_INPUTS: tuple[tuple[str, str], ...] = (("h", "T"), ("u", "U"), ("v", "V"))
CGRID_OUTPUTS: tuple[tuple[str, str], ...] = (("dh", "T"), ("du", "U"), ("dv", "V"))


def cgrid_sw_op(
    h: np.ndarray, u: np.ndarray, v: np.ndarray, coefficient: float
) -> dict[str, np.ndarray]:
    """``cgrid_sw`` on halo-1 blocks ``(nz, ny+2, nx+2)`` in NEMO's convention (module doc)."""
    c = coefficient
    du = -c * (h[:, 1:-1, 2:] - h[:, 1:-1, 1:-1])
    dv = -c * (h[:, 2:, 1:-1] - h[:, 1:-1, 1:-1])
    dh = -c * ((u[:, 1:-1, 1:-1] - u[:, 1:-1, :-2]) + (v[:, 1:-1, 1:-1] - v[:, :-2, 1:-1]))
    return {"dh": dh, "du": du, "dv": dv}


@dataclass(frozen=True)
class _CGrid:
    """``cgrid_sw``: one stencil on three staggered inputs."""

    spec: ClosureSpec
    coefficient: float

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.spec, inputs)
        out = cgrid_sw_op(inputs["h"], inputs["u"], inputs["v"], self.coefficient)
        return {k: np.ascontiguousarray(a) for k, a in out.items()}


def _cgrid_op(x: np.ndarray, coefficient: float, mask: np.ndarray | None = None) -> np.ndarray:
    raise TypeError("cgrid_sw acts on h, u and v together: build it with analytic_closure")


# name -> (halo, output prefix, operation, uses the mask, default coefficient)
ANALYTIC: dict[str, tuple[int, str, Callable[..., np.ndarray], bool, float]] = {
    "laplacian": (1, "lap", laplacian_op, False, 1.0),
    "smooth3": (3, "smooth", smooth3_op, True, 1.0),
    "identity": (0, "id", identity_op, False, 1.0),
    "cgrid_sw": (1, "", _cgrid_op, False, 1.0),
    "surface_laplacian": (1, "slap", laplacian_op, False, 1.0),
}


def analytic_closure(
    name: str, fields: Sequence[str], params: Mapping[str, Any] | None = None
) -> _Analytic | _CGrid | _Surface:
    """Build the analytic closure ``name`` acting on ``fields``.

    Parameters
    ----------
    name
        One of :data:`ANALYTIC` (``laplacian``, ``smooth3``, ``identity``, ``cgrid_sw``,
        ``surface_laplacian``).
    fields
        Input names (the closure inputs ``coupling.toml`` maps), e.g. ``["u", "v"]``.
    params
        ``{"coefficient": float}`` (default 1.0) and, except for ``cgrid_sw``, ``{"grid": point}``:
        the C-grid point (``T``, ``U``, ``V``, ``F``; default ``T``) the fields and outputs sit on
        (the stencils do not depend on it; the ``mask`` of ``smooth3`` stays the T mask).
        Nothing else is accepted.

    Returns
    -------
    Closure
        A closure whose spec lists ``fields`` (plus ``mask`` for ``smooth3``) as inputs and
        ``<prefix>_<field>`` as outputs, in float64.

    Raises
    ------
    KeyError
        If ``name`` is not an analytic closure.
    ValueError
        If ``fields`` is empty or names ``mask``, or ``params`` holds an unknown key or a
        non-numeric coefficient.
    """
    if name not in ANALYTIC:
        raise KeyError(f"no analytic closure {name!r} (known: {', '.join(sorted(ANALYTIC))})")
    halo, prefix, operation, uses_mask, default = ANALYTIC[name]
    params = dict(params or {})
    accepted = {"coefficient"} if name == "cgrid_sw" else {"coefficient", "grid"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"closure {name!r}: unknown parameter(s) {unknown} "
            f"(accepted: {', '.join(sorted(accepted))})"
        )
    grid = params.get("grid", "T")
    if grid not in ("T", "U", "V", "F"):
        raise ValueError(f"closure {name!r}: grid must be T, U, V or F, got {grid!r}")
    coefficient = params.get("coefficient", default)
    if isinstance(coefficient, bool) or not isinstance(coefficient, int | float):
        raise ValueError(f"closure {name!r}: coefficient must be a number, got {coefficient!r}")
    fields = tuple(fields)
    if name == "cgrid_sw":
        wanted = [n for n, _ in CGRID_INPUTS]
        if sorted(fields) != sorted(wanted):
            raise ValueError(f"closure {name!r}: takes the inputs {wanted}, got {list(fields)}")
        spec = ClosureSpec(
            name=name,
            halo=halo,
            inputs=tuple(FieldSpec(n, g) for n, g in CGRID_INPUTS),
            outputs=tuple(FieldSpec(n, g) for n, g in CGRID_OUTPUTS),
            dtype="float64",
        )
        return _CGrid(spec, float(coefficient))
    if name == "surface_laplacian":
        full = tuple(f for f in fields if f != SURFACE_INPUT)
        if SURFACE_INPUT not in fields or not full or MASK_INPUT in fields:
            raise ValueError(
                f"closure {name!r}: takes the surface input {SURFACE_INPUT!r} and at least one "
                f"3D input (not {MASK_INPUT!r}), got {list(fields)}"
            )
        spec = ClosureSpec(
            name=name,
            halo=halo,
            inputs=(FieldSpec(SURFACE_INPUT, levels=1), *(FieldSpec(f) for f in full)),
            outputs=(
                *(FieldSpec(f"slap_{f}") for f in full),
                FieldSpec(f"lap_{SURFACE_INPUT}", levels=1),
            ),
            dtype="float64",
        )
        return _Surface(spec, full, float(coefficient))
    if not fields:
        raise ValueError(f"closure {name!r}: needs at least one input field")
    if MASK_INPUT in fields:
        raise ValueError(f"closure {name!r}: {MASK_INPUT!r} is supplied by the server, not mapped")
    inputs = tuple(FieldSpec(f, grid) for f in fields) + (
        (FieldSpec(MASK_INPUT),) if uses_mask else ()
    )
    spec = ClosureSpec(
        name=name,
        halo=halo,
        inputs=inputs,
        outputs=tuple(FieldSpec(f"{prefix}_{f}", grid) for f in fields),
        dtype="float64",
    )
    return _Analytic(spec, fields, prefix, float(coefficient), operation)
