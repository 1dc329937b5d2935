"""OASIS3-MCT, server side: the fields of each coupling date in, the outputs out, through OASIS.

The same transport serves both kinds of OASIS model:

* a model that links the mlbridge library with ``transport = "oasis"`` (the handshake stays on
  MPI; the fields are ``X`` in the model and ``MLB_X`` in the servers; the model ranks' goodbye
  comes over MPI after the last date), and
* a model that couples through OASIS itself and knows nothing of mlbridge (NEMO with
  ``key_oasis3``: no handshake, no goodbye; names, grid and boxes from the ``[oasis]`` table).

Each server rank defines the sent fields on its block grown by the halo (a closed boundary: MCT
brings every halo cell from the model rank that owns it) or on its block alone (any boundary: the
servers then exchange the halo among themselves over MPI, :func:`exchange_block_halos`), and the
returned fields on its block (:class:`bridge.transport.oasis.ServerBlockFields`). OASIS waits
without a time limit: the launcher watches the progress file instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bridge.domain.plan import Box, pack, plan_routes, unpack
from bridge.transport.oasis import ServerBlockFields

HALO_TAG = 7301
"""MPI tag of the halo messages among server ranks (halo exchange ``"mpi"``)."""


def exchange_block_halos(
    comm: Any,
    routes: Any,
    rank: int,
    interior: Mapping[str, np.ndarray],
    out: Mapping[str, np.ndarray],
) -> None:
    """Fill the halos of server ``rank``'s haloed blocks from the other servers' blocks.

    Parameters
    ----------
    comm
        The servers' communicator (``mpi4py``).
    routes
        ``plan_routes(nx, ny, blocks, blocks, halo, boundary)``: the server blocks playing the
        model boxes (wrapped cells of one's own block, when periodic, are copied locally).
    rank
        This server's rank in ``comm``.
    interior
        Each field on this rank's block alone, ``(nlev, by, bx)`` (views are fine).
    out
        The same fields on the haloed block, ``(nlev, by + 2h, bx + 2h)``, filled in place.
    """
    from mpi4py import MPI

    names = list(interior)
    levels = {name: interior[name].shape[0] for name in names}
    requests = []
    recv_buffers: list[tuple[int, np.ndarray]] = []
    for src in routes.server_recv_peers(rank):
        segments = routes.sends[(src, rank)]
        if src == rank:  # wrapped cells of one's own block (periodic)
            for name in names:
                unpack(pack(interior[name], segments), segments, out[name], side="dst")
            continue
        cells = sum(seg.size for seg in segments)
        buf = np.empty(sum(levels.values()) * cells)
        requests.append(comm.Irecv(buf, source=src, tag=HALO_TAG))
        recv_buffers.append((src, buf))
    send_buffers = []  # kept alive until Waitall
    for (src, dst), segments in routes.sends.items():
        if src != rank or dst == rank:
            continue
        buf = np.concatenate([pack(interior[name], segments) for name in names])
        send_buffers.append(buf)
        requests.append(comm.Isend(buf, dest=dst, tag=HALO_TAG))
    MPI.Request.Waitall(requests)
    for src, buf in recv_buffers:
        segments = routes.sends[(src, rank)]
        cells = sum(seg.size for seg in segments)
        offset = 0
        for name in names:
            count = levels[name] * cells
            unpack(buf[offset : offset + count], segments, out[name], side="dst")
            offset += count


class OasisBlockTransport:
    """One server rank's OASIS fields (:class:`bridge.server.engine.BlockTransport`).

    Parameters
    ----------
    backend
        An OASIS binding (:func:`bridge.transport.oasis.open_backend`) after ``init``; ``enddef``
        is called here, once the fields are defined.
    servers
        The servers' communicator (the halo exchange among them).
    nx, ny
        The global grid.
    blocks
        Every server rank's block (this rank's is ``blocks[rank]``).
    rank
        This server rank.
    halo, boundary
        The closures' halo and the rule beyond the grid's edge.
    halo_mode
        ``"oasis"`` (closed boundary only) or ``"mpi"``.
    sent, returned
        Levels of each model field sent and returned, in definition order.
    prefix
        The servers' OASIS name of model field ``X`` is ``prefix + X``.
    dates
        The OASIS dates served, in order, and the step each one is named by in messages.
    goodbye
        Called after ``oasis_terminate``: the model ranks' own timing, by model rank (the
        library's goodbye over MPI), or None for a model that knows nothing of mlbridge.
    """

    def __init__(
        self,
        backend: Any,
        servers: Any,
        nx: int,
        ny: int,
        blocks: Sequence[Box],
        rank: int,
        halo: int,
        boundary: str,
        halo_mode: str,
        sent: dict[str, int],
        returned: dict[str, int],
        prefix: str,
        dates: Sequence[tuple[int, int]],
        goodbye: Callable[[], dict[int, list[float]]] | None = None,
    ) -> None:
        self.backend = backend
        self.servers = servers
        self.rank = rank
        self.halo = halo
        self.halo_mode = halo_mode
        self.box = blocks[rank]
        self.fields = ServerBlockFields(
            backend, nx, ny, self.box, halo, halo_mode, sent, returned, prefix
        )
        backend.enddef()
        self.routes = (
            plan_routes(nx, ny, blocks, blocks, halo, boundary) if halo_mode == "mpi" else None
        )
        hy, hx = self.box.ny + 2 * halo, self.box.nx + 2 * halo
        self.blocks = {name: np.zeros((nlev, hy, hx)) for name, nlev in sent.items()}
        self.dates = list(dates)
        self.next = 0
        self.date = 0
        self.outputs: Mapping[str, np.ndarray] = {}
        self.goodbye = goodbye

    def wait(self) -> int | None:
        """``oasis_get`` of every sent field at the next date; its step, None after the last."""
        if self.next >= len(self.dates):
            return None
        self.date, kt = self.dates[self.next]
        self.next += 1
        self.fields.get(self.date, self.blocks)
        return kt

    def unpack(self) -> Mapping[str, np.ndarray]:
        """The blocks, their halo exchanged among the servers when OASIS does not bring it."""
        if self.routes is not None:
            h = self.halo
            interior = {
                name: b[:, h : b.shape[1] - h, h : b.shape[2] - h]
                for name, b in self.blocks.items()
            }
            exchange_block_halos(self.servers, self.routes, self.rank, interior, self.blocks)
        return self.blocks

    def pack(self, kt: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Nothing to pack: OASIS takes the arrays as they are."""
        self.outputs = outputs

    def send(self) -> None:
        """``oasis_put`` of every returned field at this date."""
        self.fields.put(self.date, dict(self.outputs))
        self.outputs = {}

    def finish(self) -> dict[int, list[float]]:
        """``oasis_terminate``, then the model ranks' goodbye (library models only)."""
        self.backend.terminate()
        return self.goodbye() if self.goodbye is not None else {}
