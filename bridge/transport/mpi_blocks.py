"""``transport = "mpi"``, server side: the fields of each exchange in, the outputs out, over MPI.

One server rank receives, from each model rank whose box meets its haloed block, one
``TAG_FIELDS`` message per sent field (``[kt, segments...]`` in plan order) and sends each model
rank that owns part of its block one ``TAG_OUTPUTS`` message (``[kt, field 1 segments, ...]``);
the model ranks end with ``TAG_DONE`` (:mod:`bridge.transport.mpi` describes the messages).

Two sets of block arrays: the fields of the next exchange are received into one while the
closures read the other (and outputs that alias a block stay valid while they go).

* Lag 0: the messages go straight between the model's arrays and the blocks / the closures'
  outputs (MPI derived datatypes, no pack copy): both sides are in MPI while they move.
* Lag 1: contiguous buffers on both sides (with Open MPI's single-copy mechanism the receiver then
  pulls a message by itself), and the outputs are copied into one of two send buffers, so that the
  next closure call never waits for the model to take them.

A wait that times out says which step it waited for and why that is likely: with a
:class:`bridge.transport.mpi.PeerWatch`, the server ranks that did not answer are named (stuck in
their closure, or dead: the model ranks wait for their outputs); when every server rank answers,
the model ranks are blocked outside the coupling (:data:`MODEL_BLOCKED`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.domain.plan import Box, Plan, apply_transforms, fill_fold
from bridge.protocol.handshake import FieldDecl
from bridge.transport import mpi as wire
from bridge.wire import DONE_LENGTH, TAG_DONE, TAG_FIELDS, TAG_OUTPUTS

MODEL_BLOCKED = (
    "a model rank is blocked outside the coupling, e.g. in a collective on MPI_COMM_WORLD, "
    "which includes the servers: use the communicator mlb_init returned; or it stopped, or "
    "its step takes longer than server.timeout_s"
)
"""The likely cause when the model ranks send nothing and every server rank answers."""


class BlockTransportError(RuntimeError):
    """A message does not fit the plan, a model rank left early, or a wait timed out."""


def boxes_datatype(header: np.ndarray, pieces: Sequence[tuple[np.ndarray, int, Box]]) -> Any:
    """A committed MPI datatype: ``header[0]``, then ``array[:nlev, box]`` for each piece.

    The message the model expects (step number, then the segments in plan order), gathered
    straight from the arrays, without a pack copy.
    """
    from mpi4py import MPI

    lengths, displacements, types = [1], [MPI.Get_address(header)], [MPI.DOUBLE]
    parts = []
    for array, nlev, b in pieces:
        part = MPI.DOUBLE.Create_subarray(list(array.shape), [nlev, b.ny, b.nx], [0, b.j0, b.i0])
        parts.append(part)
        lengths.append(1)
        displacements.append(MPI.Get_address(array))
        types.append(part)
    dtype = MPI.Datatype.Create_struct(lengths, displacements, types).Commit()
    for part in parts:
        part.Free()
    return dtype


class MpiBlockTransport:
    """One server rank's MPI messages with the model ranks (a ``BlockTransport`` of the engine).

    Parameters
    ----------
    layout
        The world layout (:func:`bridge.transport.mpi.split_world`).
    plan
        The routes between model and server ranks.
    send_fields, recv_fields
        The active fields the model sends and receives, in declaration (message) order.
    lag
        The exchanges' lag (1: buffered, see the module docstring).
    timeout_s
        Every wait gives up after this long.
    every
        Model steps between two exchanges (to name the step a timeout waited for).
    watch
        The server ranks' watch: answered while waiting, asked after a timeout.
    fold_signs
        Sign of each sent field across a north fold (``-1.0`` for vector components; absent:
        ``1.0``): applied, with the reversal, to the plan's folded segments after each receive;
        with point-independent routes (``plan_routes(point=None)``) the fold rows arrive in a
        staging array and each field's halo is filled from it by the field's point.
    """

    def __init__(
        self,
        layout: wire.WorldLayout,
        plan: Plan,
        send_fields: Sequence[FieldDecl],
        recv_fields: Sequence[FieldDecl],
        lag: int,
        timeout_s: float,
        *,
        every: int = 1,
        watch: wire.PeerWatch | None = None,
        fold_signs: Mapping[str, float] | None = None,
    ) -> None:
        from mpi4py import MPI

        self.layout = layout
        self.comm = layout.comm
        self.rank = layout.rank
        self.plan = plan
        self.timeout = timeout_s
        self.every = every
        self.watch = watch
        self.send_fields = list(send_fields)
        self.recv_fields = list(recv_fields)
        # across a north fold the cells arrive in the model's order: reversed and signed after
        signs = fold_signs or {}
        self.fold_signs = {f.name: float(signs.get(f.name, 1.0)) for f in self.send_fields}
        self.fold_fixes = [
            (f.name, segments)
            for f in self.send_fields
            for r in plan.server_recv_peers(self.rank)
            if (segments := [seg for seg in plan.sends[(r, self.rank)] if not seg.plain])
        ]
        hy, hx = plan.haloed_shape(self.rank)
        self.block_sets = [
            {f.name: np.zeros((f.nlev, hy, hx)) for f in self.send_fields} for _ in range(2)
        ]
        # point-independent fold routes: the mirror rows land in a staging array per field
        sy, sx = plan.staging_shape(self.rank)
        self.staging_sets = [
            {f.name: np.zeros((f.nlev, sy, sx)) for f in self.send_fields} if sy else {}
            for _ in range(2)
        ]
        self.in_peers = plan.server_recv_peers(self.rank)
        self.out_peers = plan.server_send_peers(self.rank)
        self.sources = [layout.model_ranks[r] for r in self.in_peers]
        levels = sum(f.nlev for f in self.recv_fields)
        self.out_sizes = {
            r: 1 + levels * sum(seg.size for seg in plan.returns[(self.rank, r)])
            for r in self.out_peers
        }
        # the fields land straight in the block arrays (no unpack): one datatype per model rank,
        # field and block set
        self.in_headers: dict[tuple[int, int, int], np.ndarray] = {}
        self.in_types: dict[tuple[int, int, int], Any] = {}
        self.in_sizes: dict[tuple[int, int], int] = {}
        self.buffered = lag > 0
        self.in_bufs: dict[tuple[int, int, int], np.ndarray] = {}
        self.unpack_copies: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [], 1: []}
        for parity in (0, 1):
            for r in self.in_peers:
                self._receive_type(r, parity)
        self.out_bufs: dict[tuple[int, int], np.ndarray] = {}
        Copy = tuple[np.ndarray, str, tuple[slice, ...]]
        self.pack_copies: dict[int, list[Copy]] = {0: [], 1: []}
        if self.buffered:
            for parity in (0, 1):
                for r in self.out_peers:
                    self._output_buffer(r, parity)
        self.parity_sends: dict[int, list[Any]] = {0: [], 1: []}
        # the outputs leave straight from the closure's arrays: one datatype per model rank,
        # cached by the arrays' addresses (closures tend to reuse their memory)
        self.out_headers = {r: np.zeros(1) for r in self.out_peers}
        self.out_types: dict[tuple[Any, ...], Any] = {}
        self.send_keep: list[Any] = []
        self.send_requests: list[Any] = []
        self.model_timing: dict[int, list[float]] = {}
        self.served: list[int] = []
        self.parity = 0
        self.requests = self._post(0)
        nf = len(self.send_fields)
        self.statuses = [[MPI.Status() for _ in range(nf)] for _ in self.in_peers]
        self.said: list[str] = []
        self.outgoing: list[Any] = []

    # --- set-up ------------------------------------------------------------------------------

    def _receive_type(self, r: int, parity: int) -> None:
        """The datatypes (lag 0) or buffers (lag 1) of model rank ``r``'s FIELDS messages."""
        from mpi4py import MPI

        if self.buffered:
            for jf, f in enumerate(self.send_fields):
                segments = self.plan.sends[(r, self.rank)]
                buf = np.zeros(1 + f.nlev * sum(seg.size for seg in segments))
                offset = 1
                for seg in segments:
                    b = seg.dst
                    block = self._target(parity, f.name, seg)
                    count = f.nlev * b.size
                    view = buf[offset : offset + count].reshape(f.nlev, b.ny, b.nx)
                    self.unpack_copies[parity].append((block[(slice(None), *b.slices())], view))
                    offset += count
                self.in_bufs[(r, jf, parity)] = buf
                self.in_types[(r, jf, parity)] = MPI.DOUBLE
                self.in_headers[(r, jf, parity)] = buf[:1]
                self.in_sizes[(r, jf)] = buf.size
            return
        for jf, f in enumerate(self.send_fields):
            header = np.zeros(1)
            segments = self.plan.sends[(r, self.rank)]
            self.in_types[(r, jf, parity)] = boxes_datatype(
                header, [(self._target(parity, f.name, seg), f.nlev, seg.dst) for seg in segments]
            )
            self.in_headers[(r, jf, parity)] = header
            self.in_sizes[(r, jf)] = 1 + sum(f.nlev * seg.dst.size for seg in segments)

    def _target(self, parity: int, name: str, seg: Any) -> np.ndarray:
        """The array a segment's cells land in: the block, or the fold staging array."""
        return (self.staging_sets if seg.staged else self.block_sets)[parity][name]

    def _output_buffer(self, r: int, parity: int) -> None:
        """Lag 1: the contiguous OUTPUTS buffer ``[kt, field 1 segments, ...]`` for model rank
        ``r`` and the views that fill it."""
        segments = self.plan.returns[(self.rank, r)]
        buf = np.zeros(self.out_sizes[r])
        offset = 1
        for f in self.recv_fields:
            for seg in segments:
                b = seg.src
                count = f.nlev * b.size
                view = buf[offset : offset + count].reshape(f.nlev, b.ny, b.nx)
                self.pack_copies[parity].append((view, f.name, (slice(None), *b.slices())))
                offset += count
        self.out_bufs[(r, parity)] = buf

    def _send_type(self, r: int, outputs: Mapping[str, np.ndarray]) -> Any:
        """The datatype of the OUTPUTS message to model rank ``r``, gathering from ``outputs``."""
        key = (r, *((outputs[f.name].ctypes.data, outputs[f.name].shape) for f in self.recv_fields))
        dtype = self.out_types.get(key)
        if dtype is not None:
            return dtype
        dtype = boxes_datatype(
            self.out_headers[r],
            [
                (outputs[f.name], f.nlev, seg.src)
                for f in self.recv_fields
                for seg in self.plan.returns[(self.rank, r)]
            ],
        )
        if len(self.out_types) >= 16 * max(1, len(self.out_peers)):  # closures that never reuse
            for old in self.out_types.values():
                old.Free()
            self.out_types = {}
        self.out_types[key] = dtype
        return dtype

    def free(self) -> None:
        """Free the datatypes (at the end, also after an error)."""
        if not self.buffered:  # lag 1 receives plain buffers (MPI.DOUBLE: nothing to free)
            for dtype in self.in_types.values():
                dtype.Free()
        for dtype in self.out_types.values():
            dtype.Free()
        self.in_types = {}
        self.out_types = {}

    def _post(self, parity: int) -> list[list[Any]]:
        """One receive per field from each model rank, matched in this order (same tag)."""
        from mpi4py import MPI

        nf = len(self.send_fields)
        return [
            [
                self.comm.Irecv(
                    [self.in_bufs[(r, jf, parity)], MPI.DOUBLE]
                    if self.buffered
                    else [MPI.BOTTOM, 1, self.in_types[(r, jf, parity)]],
                    source=src,
                    tag=TAG_FIELDS,
                )
                for jf in range(nf)
            ]
            for r, src in zip(self.in_peers, self.sources, strict=True)
        ]

    # --- one exchange ------------------------------------------------------------------------

    def wait(self) -> int | None:
        """Wait for the fields of every model rank feeding the block, or their goodbye."""
        self.said = self._wait_fields_or_goodbye()
        if all(w == "done" for w in self.said):
            return None
        kt = self._check_messages()
        self.served.append(kt)
        return kt

    def unpack(self) -> Mapping[str, np.ndarray]:
        """The block set just received; the next exchange's receives are posted into the other.

        Lag 0: the next fields cannot come before the model has the outputs, which may alias
        that set: post once those sends are done. Lag 1: post at once.
        """
        parity = self.parity
        if self.buffered:
            self.requests = self._post(1 - parity)
            for dst, src in self.unpack_copies[parity]:
                np.copyto(dst, src)
        else:
            self._wait_sends()
            self.requests = self._post(1 - parity)
        for name, segments in self.fold_fixes:
            staged = [seg for seg in segments if seg.staged]
            direct = [seg for seg in segments if not seg.staged]
            if direct:
                apply_transforms(self.block_sets[parity][name], direct, self.fold_signs[name])
            if staged:
                apply_transforms(self.staging_sets[parity][name], staged)
        for f in self.send_fields if self.staging_sets[parity] else ():
            fill_fold(
                self.block_sets[parity][f.name],
                self.staging_sets[parity][f.name],
                f.at,
                self.fold_signs[f.name],
            )
        return self.block_sets[parity]

    def pack(self, kt: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Lag 1: copy into this parity's send buffers; lag 0: the datatypes over ``outputs``."""
        from mpi4py import MPI

        parity = self.parity
        if self.buffered:
            # the buffers of this parity went two exchanges ago: long taken
            self._wait_taken(self.parity_sends[parity], "the outputs")
            for view, name, region in self.pack_copies[parity]:
                np.copyto(view, outputs[name][region])
            self.outgoing = [[self.out_bufs[(r, parity)], MPI.DOUBLE] for r in self.out_peers]
            for r in self.out_peers:
                self.out_bufs[(r, parity)][0] = kt
        else:
            types = {r: self._send_type(r, outputs) for r in self.out_peers}
            self.outgoing = [[MPI.BOTTOM, 1, types[r]] for r in self.out_peers]
            for r in self.out_peers:
                self.out_headers[r][0] = kt
            self.send_keep = list(outputs.values())  # alive until the sends complete

    def send(self) -> None:
        """Post the OUTPUTS messages; the next exchange uses the other block set."""
        requests = [
            self.comm.Isend(msg, dest=self.layout.model_ranks[r], tag=TAG_OUTPUTS)
            for r, msg in zip(self.out_peers, self.outgoing, strict=True)
        ]
        if self.buffered:
            self.parity_sends[self.parity] = requests
        else:
            self.send_requests = requests
        self.outgoing = []
        self.parity = 1 - self.parity

    def finish(self) -> dict[int, list[float]]:
        """Wait until the model ranks took the last outputs; their goodbye figures."""
        self._wait_taken(
            [*self.send_requests, *self.parity_sends[0], *self.parity_sends[1]], "the last outputs"
        )
        return dict(self.model_timing)

    # --- helpers -----------------------------------------------------------------------------

    def _wait_fields_or_goodbye(self) -> list[str]:
        """Wait until each model rank sent its fields (``"fields"``) or its goodbye (``"done"``).

        A goodbye (``TAG_DONE``, of any length: its head, then the model rank's timeline) is
        received into ``model_timing`` and the fields receives still pending for that rank are
        cancelled.
        """
        from mpi4py import MPI

        comm = self.comm
        peers, sources = self.in_peers, self.sources
        requests, statuses = self.requests, self.statuses
        said: list[str | None] = [None] * len(peers)
        probed = MPI.Status()
        testall = MPI.Request.Testall
        iprobe = comm.Iprobe
        pending = list(range(len(peers)))

        def ready() -> bool:
            for i in list(pending):
                try:
                    if testall(requests[i], statuses[i]):
                        said[i] = "fields"
                        pending.remove(i)
                        continue
                except MPI.Exception as err:
                    sizes = [self.in_sizes[(peers[i], jf)] for jf in range(len(requests[i]))]
                    raise BlockTransportError(
                        f"server rank {self.rank}: the fields of model rank {peers[i]} do not fit "
                        f"the plan ({sizes} values expected): {err.Get_error_string()}"
                    ) from None
                if iprobe(sources[i], TAG_DONE, probed):
                    goodbye = np.zeros(max(DONE_LENGTH, probed.Get_count(MPI.DOUBLE)))
                    comm.Recv([goodbye, MPI.DOUBLE], source=sources[i], tag=TAG_DONE)
                    self.model_timing[peers[i]] = [float(v) for v in goodbye]
                    for req in requests[i]:
                        if req:
                            req.Cancel()
                            req.Wait()
                    said[i] = "done"
                    pending.remove(i)
            return not pending

        try:
            wire.poll(ready, self.timeout, f"the fields of {self.next_step()}", self.watch)
        except wire.TransportTimeout as err:
            silent = [peers[i] for i in pending]
            sent = [peers[i] for i in range(len(peers)) if i not in pending]
            what = f"model ranks {silent} sent nothing" + (
                f" (model ranks {sent} did)" if sent else ""
            )
            raise self.timed_out(err, what) from None
        return [str(w) for w in said]

    def next_step(self) -> str:
        """The step the next fields belong to, in words."""
        if not self.served:
            return "the first exchange"
        return f"step {self.served[-1] + self.every}"

    def timed_out(self, err: wire.TransportTimeout, what: str) -> BlockTransportError:
        """The error of a wait on the model ranks that timed out, with its likely cause.

        The other server ranks are asked first (:meth:`bridge.transport.mpi.PeerWatch.
        silent_peers`): one that does not answer is stuck or dead, and the model ranks wait for
        its outputs; when every one answers, the model ranks are blocked outside the coupling.
        """
        last = self.served[-1] if self.served else "none yet"
        head = f"server rank {self.rank}: {err}: {what} (last step served: {last})"
        if self.watch is not None and self.watch.size > 1:
            silent, _ = self.watch.silent_peers()
            if silent:
                world = [self.layout.server_ranks[r] for r in silent]
                many = len(silent) > 1
                return BlockTransportError(
                    f"{head}: server rank{'s' if many else ''} {', '.join(map(str, silent))} "
                    f"(world rank{'s' if many else ''} {', '.join(map(str, world))}) did not "
                    f"answer the other server ranks within {wire.PEER_ANSWER_S:g} s: "
                    f"{'they are' if many else 'it is'} stuck (e.g. in a closure) or dead, and "
                    "the model ranks wait for its outputs"
                )
        return BlockTransportError(f"{head}: {MODEL_BLOCKED}")

    def _check_messages(self) -> int:
        """The step of the messages just received (the same from every model rank)."""
        from mpi4py import MPI

        steps = set()
        for r, sts, what in zip(self.in_peers, self.statuses, self.said, strict=True):
            if what != "fields":
                raise BlockTransportError(
                    f"server rank {self.rank}: model rank {r} said goodbye while other model "
                    "ranks are still exchanging (did its run stop early?)"
                )
            for jf, st in enumerate(sts):
                count = st.Get_count(MPI.DOUBLE_PRECISION)
                if count != self.in_sizes[(r, jf)]:
                    raise BlockTransportError(
                        f"server rank {self.rank}: model rank {r} sent {count} values of field "
                        f"{self.send_fields[jf].name!r}, the plan expects "
                        f"{self.in_sizes[(r, jf)]}"
                    )
                steps.add(int(self.in_headers[(r, jf, self.parity)][0]))
        if len(steps) != 1:
            raise BlockTransportError(
                f"server rank {self.rank}: model ranks {list(self.in_peers)} sent different "
                f"steps {sorted(steps)}"
            )
        return steps.pop()

    def _wait_sends(self) -> None:
        """Wait until the model ranks took the last outputs; forget their arrays."""
        self._wait_taken(self.send_requests, "the outputs")
        self.send_requests = []
        self.send_keep = []

    def _wait_taken(self, requests: Sequence[Any], outputs: str) -> None:
        """Wait until the model ranks took ``outputs`` (the OUTPUTS ``requests``)."""
        last = f"step {self.served[-1]}" if self.served else "no step"
        try:
            wire.wait_all(
                requests, self.timeout, f"the model ranks to take {outputs} of {last}",
                watch=self.watch,
            )  # fmt: skip
        except wire.TransportTimeout as err:
            peers = list(self.out_peers)
            raise self.timed_out(err, f"model ranks {peers} did not take them") from None
