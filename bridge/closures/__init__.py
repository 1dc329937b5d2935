"""Closures: the interface every closure honours (``base``) and the analytic closures.

A closure maps a dict of 3D fields with halo to a dict of 3D fields on the interior; see
``bridge.closures.base`` for the contract and ``docs/architecture.md`` for the array layout.
"""

from __future__ import annotations

from bridge.closures.base import (
    DTYPES,
    GRIDS,
    Closure,
    ClosureInputError,
    ClosureOutputError,
    ClosureSpec,
    FieldSpec,
    check_inputs,
    check_outputs,
)

__all__ = [
    "DTYPES",
    "GRIDS",
    "Closure",
    "ClosureInputError",
    "ClosureOutputError",
    "ClosureSpec",
    "FieldSpec",
    "check_inputs",
    "check_outputs",
]
