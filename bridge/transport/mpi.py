"""The MPI wire protocol between the Fortran ``mlbridge`` library and the servers.

Both sides split ``MPI_COMM_WORLD`` by colour (model 1, servers 2), then duplicate it for the
bridge's own messages and all-gather the colours so that each rank knows which world ranks are
model and which are servers. The constants below are mirrored in
``fortran_stubs/mlbridge/mlbridge.F90``; change them together.

Messages (tag: direction, type, content):

* ``TAG_REPORT``: model -> server 0, characters, the handshake report
  (see :mod:`bridge.protocol.handshake`).
* ``TAG_MASK``: model -> server 0, integers, the land mask of the rank's box (when it has one).
* ``TAG_REPLY``: server 0 -> model, integers: ``[0, version, timeout_ms, every, lag, nfields,
  active(nfields), nroutes, routes...]`` or ``[status != 0]`` followed by ``TAG_REPLY_TEXT``.
* ``TAG_FIELDS``: model -> server, float64: ``[kt, segments of one field]``, one message per sent
  field in definition order.
* ``TAG_OUTPUTS``: server -> model, float64: ``[kt, received field 1 segments, ...]``, one message
  per (server, model rank).
* ``TAG_DONE``: model -> server, float64 ``[exchanges, wait_s, put_s, get_s]``: goodbye.
* ``TAG_ERROR``: server -> model, characters: the server gives up; the model returns the text
  as its error.

Every wait polls with a deadline (:func:`wait_all`, :func:`probe`), so a dead peer gives a
:class:`TransportTimeout` naming what was awaited, never a hang. While they wait, the server ranks
answer each other's pings (:class:`PeerWatch`, on a communicator of their own): a server rank
that times out can tell a server rank that does not answer (stuck in its closure, or dead) from
model ranks that send nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.wire import (
    COLOUR_MODEL,
    COLOUR_SERVER,
    DEFAULT_JOIN_TIMEOUT_S,
    JOIN_MAGIC,
    TAG_ERROR,
)

# Waits poll busily for SPIN_S (yielding the core after TIGHT_S), then sleep between polls: a large
# message moves in fragments that need both sides to poll, so sleeping early would stall transfers.
SPIN_S = 0.5
# The first TIGHT_S of a wait do not even yield: on a busy node a yield can hand the core away for
# a whole time slice, in the middle of a transfer that needs both sides.
TIGHT_S = 2e-3
YIELD_AFTER_ENV = "MLBRIDGE_YIELD_AFTER_S"  # overrides TIGHT_S, on both sides (docs/performance.md)
MAX_SLEEP_S = 1e-4
# Server to server, on PeerWatch's own communicator (no clash with the tags shared with the model)
PING_TAG = 1
PONG_TAG = 2
PEER_ANSWER_S = 3.0  # how long a server rank that gives up waits for the others to answer


class TransportError(RuntimeError):
    """A message broke the protocol (wrong length, wrong step, unexpected tag)."""


class TransportTimeout(TransportError):
    """A peer did not answer within the timeout."""


@dataclass(frozen=True)
class WorldLayout:
    """Who is who in ``MPI_COMM_WORLD``, seen from one server rank.

    Attributes
    ----------
    comm
        Duplicate of ``MPI_COMM_WORLD`` carrying the bridge's messages.
    servers
        Communicator of the server ranks (from the split).
    model_ranks
        World rank of each model rank, in model-rank order.
    server_ranks
        World rank of each server rank, in server-rank order.
    rank
        This process's rank among the servers.
    """

    comm: Any
    servers: Any
    model_ranks: tuple[int, ...]
    server_ranks: tuple[int, ...]
    rank: int

    @property
    def n_model(self) -> int:
        """Number of model ranks."""
        return len(self.model_ranks)

    @property
    def n_server(self) -> int:
        """Number of server ranks."""
        return len(self.server_ranks)


class JoinTimeout(TransportTimeout):
    """Some rank of the job did not reach the world split in time (the model never joined)."""


JOIN_HINT = (
    "is the model built with mlbridge, and does every model rank call mlb_init before any "
    "other use of MPI_COMM_WORLD?"
)
"""What to check when the model ranks do not join (any model)."""

NEMO_JOIN_HINT = "is the model built with mlbridge and run with ln_mlb = .true. (&nammlb)?"
"""The same for a model with NEMO-style namelists (``[model] kind = "nemo"``)."""


def wait_world_joined(world: Any, timeout_s: float, hint: str = JOIN_HINT) -> float:
    """Wait until every rank of ``world`` reached its split; return the seconds waited.

    A non-blocking all-reduce (maximum) of ``[JOIN_MAGIC, -JOIN_MAGIC]`` over ``world``, polled
    with the timeout; ``mlb_init`` enters the same one before its split. A model that never calls
    ``mlb_init`` (built without mlbridge, or run with ``ln_mlb = .false.``) would otherwise leave
    the servers blocked for ever in the collective split. A model rank in some other collective
    on ``MPI_COMM_WORLD`` shows up as an MPI error or a wrong result, never as a match.

    Raises
    ------
    JoinTimeout
        After ``timeout_s`` seconds, or when the reduction did not come from ``mlb_init``, with a
        message saying what to check.
    """
    from mpi4py import MPI

    hint = f"{hint} (server.timeout_s sets this wait)"
    mine = np.array([JOIN_MAGIC, -JOIN_MAGIC], dtype=np.int32)
    result = np.zeros(2, dtype=np.int32)
    try:
        request = world.Iallreduce([mine, MPI.INTEGER], [result, MPI.INTEGER], op=MPI.MAX)
        waited = _poll(request.Test, timeout_s, "the model ranks to call mlb_init")
    except TransportTimeout:
        raise JoinTimeout(
            f"model ranks did not call mlb_init within {timeout_s:g} s: {hint}"
        ) from None
    except MPI.Exception as err:
        raise JoinTimeout(
            f"model ranks entered another MPI_COMM_WORLD collective instead of mlb_init "
            f"({err.Get_error_string()}): {hint}"
        ) from None
    if not np.array_equal(result, mine):
        raise JoinTimeout(
            f"model ranks entered another MPI_COMM_WORLD collective instead of mlb_init: {hint}"
        )
    return waited


def split_world(
    world: Any,
    colour: int = COLOUR_SERVER,
    join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S,
    join_hint: str = JOIN_HINT,
) -> WorldLayout:
    """Split ``world`` by colour, exactly as ``mlb_init`` does on the model side (collective).

    Parameters
    ----------
    world
        ``MPI.COMM_WORLD``.
    colour
        This side's colour.
    join_timeout_s
        How long to wait for every rank to reach the split (:func:`wait_world_joined`, which
        ``mlb_init`` matches on the model side: never skip it).
    join_hint
        What to check when they do not (:data:`NEMO_JOIN_HINT` for NEMO-kind models).

    Returns
    -------
    WorldLayout
        The communicators and the world ranks of both sides.

    Raises
    ------
    JoinTimeout
        If some rank did not come in time.
    """
    from mpi4py import MPI

    wait_world_joined(world, join_timeout_s, join_hint)
    rank = world.Get_rank()
    local = world.Split(colour, rank)
    comm = world.Dup()
    colours = np.empty(world.Get_size(), dtype=np.int32)
    comm.Allgather([np.array([colour], dtype=np.int32), MPI.INTEGER], [colours, MPI.INTEGER])
    model = tuple(int(r) for r in np.flatnonzero(colours == COLOUR_MODEL))
    servers = tuple(int(r) for r in np.flatnonzero(colours == COLOUR_SERVER))
    return WorldLayout(comm, local, model, servers, local.Get_rank())


def _poll(
    ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    interrupt: Callable[[], None] | None = None,
) -> float:
    """Call ``ready`` until it returns True; return the seconds waited.

    ``interrupt`` is called every 64 polls, and at every poll once the wait sleeps.

    Raises
    ------
    TransportTimeout
        After ``timeout_s`` seconds, naming ``what``.
    """
    t0 = time.perf_counter()
    sleep = 5e-6
    polls = 0
    tight = yield_after_s()
    while not ready():
        elapsed = time.perf_counter() - t0
        polls += 1
        if interrupt is not None and (polls % 64 == 0 or elapsed > SPIN_S):
            interrupt()
        if elapsed > timeout_s:
            raise TransportTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        if elapsed > SPIN_S:
            time.sleep(sleep)
            sleep = min(2 * sleep, MAX_SLEEP_S)
        elif elapsed > tight:
            os.sched_yield()
    return time.perf_counter() - t0


def yield_after_s() -> float:
    """Seconds a wait spins before it yields the core: :data:`TIGHT_S`, or
    ``$MLBRIDGE_YIELD_AFTER_S`` (the Fortran library reads the same variable)."""
    try:
        value = float(os.environ.get(YIELD_AFTER_ENV, TIGHT_S))
    except ValueError:
        return TIGHT_S
    return value if value >= 0 else TIGHT_S


def _answering(watch: PeerWatch | None, what: str) -> Callable[[], None] | None:
    return None if watch is None else lambda: watch.answer(what)


def poll(
    ready: Callable[[], bool], timeout_s: float, what: str, watch: PeerWatch | None = None
) -> float:
    """Call ``ready`` until it returns True, as every wait here does; return the seconds waited.

    With ``watch``, the other server ranks' pings are answered meanwhile (saying ``what``).

    Raises
    ------
    TransportTimeout
        After ``timeout_s`` seconds, naming ``what``.
    """
    return _poll(ready, timeout_s, what, _answering(watch, what))


def wait_all(
    requests: Sequence[Any],
    timeout_s: float,
    what: str,
    statuses: list[Any] | None = None,
    watch: PeerWatch | None = None,
) -> float:
    """Wait for every request, at most ``timeout_s``; return the seconds waited.

    Parameters
    ----------
    requests
        mpi4py requests (completed ones are fine).
    timeout_s
        Deadline in seconds.
    what
        What is awaited, for the error message.
    statuses
        Optional list of ``MPI.Status`` filled for each request.
    watch
        The server ranks' :class:`PeerWatch`: their pings are answered while this waits.

    Raises
    ------
    TransportTimeout
        If the requests are not all complete in time.
    """
    from mpi4py import MPI

    if not requests:
        return 0.0
    reqs = list(requests)
    interrupt = _answering(watch, what)
    if statuses is None:
        return _poll(lambda: MPI.Request.Testall(reqs), timeout_s, what, interrupt)
    return _poll(lambda: MPI.Request.Testall(reqs, statuses), timeout_s, what, interrupt)


def probe(comm: Any, source: int, tag: int, timeout_s: float, what: str) -> Any:
    """Wait until a message ``(source, tag)`` is there; return its ``MPI.Status``.

    Raises
    ------
    TransportTimeout
        If none arrives within ``timeout_s``.
    """
    from mpi4py import MPI

    status = MPI.Status()
    _poll(lambda: comm.Iprobe(source, tag, status), timeout_s, what)
    return status


def recv_text(comm: Any, source: int, tag: int, timeout_s: float, what: str) -> tuple[str, int]:
    """Receive a character message; return ``(text, source world rank)``.

    Raises
    ------
    TransportTimeout
        If none arrives within ``timeout_s``.
    """
    from mpi4py import MPI

    status = probe(comm, source, tag, timeout_s, what)
    buf = bytearray(status.Get_count(MPI.CHARACTER))
    comm.Recv([buf, MPI.CHARACTER], source=status.Get_source(), tag=tag)
    return buf.decode("utf-8", errors="replace"), status.Get_source()


def recv_ints(comm: Any, source: int, tag: int, timeout_s: float, what: str) -> np.ndarray:
    """Receive an integer (Fortran ``MPI_INTEGER``) message.

    Raises
    ------
    TransportTimeout
        If none arrives within ``timeout_s``.
    """
    from mpi4py import MPI

    status = probe(comm, source, tag, timeout_s, what)
    buf = np.empty(status.Get_count(MPI.INTEGER), dtype=np.int32)
    comm.Recv([buf, MPI.INTEGER], source=status.Get_source(), tag=tag)
    return buf


def isend_text(comm: Any, text: str, dest: int, tag: int) -> tuple[Any, bytes]:
    """Start sending a character message; return the request and the buffer to keep alive."""
    from mpi4py import MPI

    data = text.encode("utf-8")
    return comm.Isend([data, MPI.CHARACTER], dest=dest, tag=tag), data


def isend_ints(comm: Any, values: np.ndarray, dest: int, tag: int) -> tuple[Any, np.ndarray]:
    """Start sending an integer message; return the request and the buffer to keep alive."""
    from mpi4py import MPI

    data = np.ascontiguousarray(values, dtype=np.int32)
    return comm.Isend([data, MPI.INTEGER], dest=dest, tag=tag), data


def send_error_to_models(
    layout: WorldLayout, text: str, tag: int = TAG_ERROR, grace_s: float = 2.0
) -> None:
    """Tell every model rank that the servers give up, waiting at most ``grace_s`` for delivery.

    The model's ``mlbridge`` picks the text up in its next wait and returns it as an error status.
    Delivery is best effort: a model rank that is gone does not block this.
    """
    keep = [isend_text(layout.comm, text, dest, tag) for dest in layout.model_ranks]
    try:
        wait_all([req for req, _ in keep], grace_s, "the model ranks to take the error message")
    except TransportTimeout:
        pass


class PeerWatch:
    """The server ranks answer each other while they wait, on a communicator of their own.

    A server rank that times out waiting for the model ranks cannot tell by itself whether the
    model ranks are blocked outside the coupling or are waiting for the outputs of another server
    rank that is stuck (in its closure) or dead. :meth:`silent_peers` pings every other server
    rank; the ones waiting in a poll of this module answer at once (:meth:`answer`, called from
    the polls), with what they are waiting for.

    Parameters
    ----------
    servers
        The server ranks' communicator (duplicated here: a collective over the server ranks).
    """

    def __init__(self, servers: Any) -> None:
        self.comm = servers.Dup()
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self.round = 0
        self._keep: list[tuple[Any, Any]] = []

    def answer(self, doing: str) -> None:
        """Answer every ping that came in: ``"<round> <doing>"`` to its sender."""
        from mpi4py import MPI

        status = MPI.Status()
        while self.comm.Iprobe(MPI.ANY_SOURCE, PING_TAG, status):
            ping = np.zeros(1, dtype=np.int32)
            self.comm.Recv([ping, MPI.INTEGER], source=status.Get_source(), tag=PING_TAG)
            self._keep = [(r, b) for r, b in self._keep if not r.Test()]
            self._keep.append(
                isend_text(self.comm, f"{int(ping[0])} {doing}", status.Get_source(), PONG_TAG)
            )

    def silent_peers(
        self, grace_s: float = PEER_ANSWER_S, doing: str = "giving up"
    ) -> tuple[list[int], dict[int, str]]:
        """Ping every other server rank; those that did not answer within ``grace_s``, and what
        the others said they were doing (by server rank).

        The pings of others are answered meanwhile (with ``doing``).
        """
        from mpi4py import MPI

        self.round += 1
        peers = [r for r in range(self.size) if r != self.rank]
        ping = np.array([self.round], dtype=np.int32)
        pings = [self.comm.Isend([ping, MPI.INTEGER], dest=r, tag=PING_TAG) for r in peers]
        answers: dict[int, str] = {}
        status = MPI.Status()

        def all_answered() -> bool:
            self.answer(doing)
            while self.comm.Iprobe(MPI.ANY_SOURCE, PONG_TAG, status):
                text, source = recv_text(self.comm, status.Get_source(), PONG_TAG, 1.0, "a pong")
                number, _, said = text.partition(" ")
                if number == str(self.round):
                    answers[source] = said
            return len(answers) == len(peers)

        try:
            _poll(all_answered, grace_s, "the other server ranks to answer")
        except TransportTimeout:
            pass
        self._keep += [(r, ping) for r in pings]  # a silent peer may never take its ping
        return [r for r in peers if r not in answers], answers
