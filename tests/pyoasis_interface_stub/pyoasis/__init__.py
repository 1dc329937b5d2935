"""An interface stand-in for ``pyoasis``, OASIS3-MCT 4/5's Python API. It is NOT OASIS.

It reproduces only the surface ``bridge.transport.oasis.PyOasis`` relies on, as read in pyoasis's
own source (the revision is named in ``docs/oasis.md``): signatures, argument checks, return
types and exceptions. Nothing is coupled and nothing here has been compared with a running
OASIS 5; ``tests/test_pyoasis_interface.py`` uses it to pin the binding to that contract.

What it reproduces:

- importing it loads ``liboasis.cbind.so`` with ctypes, as pyoasis's modules do while they are
  imported, so it raises ``OSError`` (not ``ImportError``) where that library is not on the
  loader path; ``PYOASIS_STUB_PRETEND_LIBRARY=1`` skips the load;
- ``Var.put`` and ``Var.get`` return a member of ``OasisParameters``, a plain ``Enum``;
- wrong arguments raise ``PyOasisException`` (``isinstance`` checks: a numpy integer is not an
  ``int``; list elements must be exactly ``int``); OASIS errors raise ``OasisException``;
- ``oasis_abort(component_id, routine, message, filename, line, error)`` and
  ``pyoasis_abort(exception)`` (an exception, not a string) never return: here they record the
  call and raise :class:`JobAborted` with the status MPI_Abort would leave (``error``, and 0
  for ``pyoasis_abort``, which passes 0);
- a component's ``localcomm`` is a small stand-in, so that the tests keep MPI out of their
  process.

Knobs for the tests (module attributes): :data:`PERIOD`, :data:`FAIL_AT_DATE`,
:data:`ABORT_BINDING_ARGS`; every call is appended to :data:`CALLS`.
"""

from __future__ import annotations

import ctypes
import os
from enum import Enum
from typing import Any

import numpy as np

if os.environ.get("PYOASIS_STUB_PRETEND_LIBRARY") != "1":
    ctypes.CDLL("liboasis.cbind.so")  # OSError where the library is not on the loader path

CALLS: list[tuple[str, tuple[Any, ...]]] = []
"""Every call that would reach OASIS, in order: (name, arguments)."""

PERIOD = 3600
"""The coupling period the stand-in pretends the namcouple gives, in seconds."""

FAIL_AT_DATE: int | None = None
"""A date at which ``Var.put``/``Var.get`` raise ``OasisException`` (None: never)."""

ABORT_BINDING_ARGS = 6
"""5 emulates a release whose C binding of ``oasis_abort`` takes one argument fewer than its
Python layer passes: ``oasis_abort`` then raises ``TypeError``."""


class OasisException(Exception):
    """An OASIS call failed: ``text (code)``."""

    def __init__(self, text: str, error: int) -> None:
        super().__init__(f"{text} ({error})")


class PyOasisException(Exception):
    """A wrong argument."""


class JobAborted(SystemExit):
    """Stands for MPI_Abort: the job would end here with :attr:`code` as its status."""


class OasisParameters(Enum):
    """A plain ``Enum`` (no ``__int__``): ``int(member)`` raises ``TypeError``."""

    OASIS_OK = 0
    OASIS_VAR_UNCPL = -1
    OASIS_NOTDEF = -2
    OASIS_ERROR = -10
    OASIS_INOUT = 2
    OASIS_RECVD = 3
    OASIS_SENT = 4
    OASIS_LOCTRANS = 5
    OASIS_TOREST = 6
    OASIS_OUTPUT = 7
    OASIS_SENTOUT = 8
    OASIS_TORESTOUT = 9
    OASIS_FROMREST = 10
    OASIS_INPUT = 11
    OASIS_RECVOUT = 12
    OASIS_FROMRESTOUT = 13
    OASIS_WAITGROUP = 14
    OASIS_OUT = 20
    OASIS_IN = 21


def _require(types: list[type], args: list[Any]) -> None:
    for i, (kind, arg) in enumerate(zip(types, args, strict=True)):
        if kind is list:
            if not isinstance(arg, list) or any(type(x) is not int for x in arg):
                raise PyOasisException(f"argument {i} must be a list of int")
        elif arg is not None and not isinstance(arg, kind):
            raise PyOasisException(f"argument {i} must be of type {kind}")


class _LocalComm:
    """Stands for the mpi4py communicator pyoasis returns (one rank)."""

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's name)
        return 0

    def Get_size(self) -> int:  # noqa: N802 (mpi4py's name)
        return 1


class Component:
    """``Component(name, coupled=True, communicator=None)``: one per process; deleting it is
    ``oasis_terminate``."""

    _count = 0

    def __init__(self, name: str, coupled: bool = True, communicator: Any = None) -> None:
        self._alive = False
        _require([str, bool], [name, coupled])
        if Component._count > 0:
            raise PyOasisException("only one component per process")
        if not name:
            raise PyOasisException("empty component name")
        Component._count += 1
        self._name = name
        self._alive = True
        self.localcomm = _LocalComm()
        CALLS.append(("init_comp", (name, coupled)))

    @property
    def name(self) -> str:
        return self._name

    def enddef(self) -> None:
        CALLS.append(("enddef", ()))

    def __del__(self) -> None:
        if self._alive:
            self._alive = False
            CALLS.append(("terminate", (self._name,)))


class Partition:
    """Base of the partitions: ``local_size`` points on this rank."""

    local_size = 0


class OrangePartition(Partition):
    """``OrangePartition(offsets, extents, global_size=-1, name="")``."""

    def __init__(
        self, offsets: list[int], extents: list[int], global_size: int = -1, name: str = ""
    ) -> None:
        _require([list, list, int, str], [offsets, extents, global_size, name])
        if len(offsets) != len(extents):
            raise PyOasisException("as many offsets as extents are needed")
        if any(o < 0 for o in offsets):
            raise PyOasisException("an offset is negative")
        if any(e <= 0 for e in extents):
            raise PyOasisException("an extent is not positive")
        self.local_size = sum(extents)
        CALLS.append(("def_partition", (list(offsets), list(extents), global_size)))


class Var:
    """``Var(name, partition, inout, bundle_size=1)``."""

    def __init__(
        self, name: str, partition: Partition, inout: OasisParameters, bundle_size: int = 1
    ) -> None:
        _require([str, Partition, OasisParameters, int], [name, partition, inout, bundle_size])
        if inout not in (OasisParameters.OASIS_IN, OasisParameters.OASIS_OUT):
            raise PyOasisException("inout must be OASIS_IN or OASIS_OUT")
        if not name:
            raise PyOasisException("empty field name")
        self._name = name
        self._size = partition.local_size * bundle_size
        self.direction = inout
        CALLS.append(("def_var", (name, inout)))

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_active(self) -> bool:
        return True

    def _check(self, time: Any, field: Any) -> None:
        if field.size != self._size:
            raise PyOasisException(f"field of {field.size} points, partition of {self._size}")
        if field.dtype not in (np.float32, np.float64):
            raise PyOasisException("fields are float32 or float64")
        if time == FAIL_AT_DATE:
            raise OasisException(f"OASIS refused {self._name} at {time}", -10)

    def put(self, time: int, field: np.ndarray, write_restart: bool = False) -> OasisParameters:
        _require([int, np.ndarray, bool], [time, field, write_restart])
        self._check(time, field)
        CALLS.append(("put", (self._name, time, field.copy())))
        if time % PERIOD:
            return OasisParameters.OASIS_OK
        return OasisParameters.OASIS_SENT

    def get(self, time: int, field: np.ndarray) -> OasisParameters:
        _require([int, np.ndarray], [time, field])
        self._check(time, field)
        CALLS.append(("get", (self._name, time)))
        if time % PERIOD:
            return OasisParameters.OASIS_OK
        field.reshape(-1)[:] = time + np.arange(field.size)
        return OasisParameters.OASIS_RECVD


def oasis_abort(
    component_id: int, routine: str, message: str, filename: str, line: int, error: int
) -> None:
    """Never returns: the job ends with status ``error``."""
    if ABORT_BINDING_ARGS != 6:
        raise TypeError("oasis_abort() takes 5 positional arguments but 6 were given")
    args = [component_id, routine, message, filename, line, error]
    _require([int, str, str, str, int, int], args)
    CALLS.append(("oasis_abort", tuple(args)))
    raise JobAborted(error)


def pyoasis_abort(exception: Exception) -> None:
    """Never returns: takes an exception and ends the job with status 0."""
    _require([Exception], [exception])
    CALLS.append(("pyoasis_abort", (str(exception),)))
    raise JobAborted(0)
