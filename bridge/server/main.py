"""A server rank from start to end: ``python -m bridge.server --config RUN/run_config.json``.

Started by ``mlbridge run`` after the model ranks in one MPMD job. Every server rank

1. splits ``MPI_COMM_WORLD`` with the model (:func:`bridge.transport.mpi.split_world`), after
   waiting at most ``server.timeout_s`` for the model ranks to reach their ``mlb_init``: a model
   that never does makes the servers print why and ``MPI_Abort`` the job, never hang;
2. builds the closures of the configured exchanges (:func:`bridge.registry.resolve.build_closures`);
3. takes part in the handshake (:mod:`bridge.server.setup`);
4. serves the exchanges with the one engine (:func:`bridge.server.engine.serve_exchanges`) over
   the transport of the run: MPI messages (:class:`bridge.transport.mpi_blocks.MpiBlockTransport`)
   or OASIS (:class:`bridge.transport.oasis_blocks.OasisBlockTransport`, the goodbye over MPI);
5. writes ``RUN/timing.json`` (server rank 0; per-step figures in ``RUN/timing_steps.json``)
   and, with ``[diagnostics] netcdf``, ``RUN/diagnostics.nc`` as it goes
   (:mod:`bridge.server.diagnostics`).

A model that couples through OASIS itself (an ``[oasis]`` table, no mlbridge library, no
handshake) is served by :func:`serve_oasis_model` with the same engine and OASIS transport; the
servers check the ``namcouple`` against the table first, write the progress file after each date
and, at the end, ``RUN/server_done.json`` (with OASIS3-MCT 2.0 an abort can leave exit
status 0, so the launcher needs a marker); a server that gives up writes
``RUN/oasis_server_error.txt`` and calls ``oasis_abort``.

A server rank that gives up (a handshake mismatch, a NaN with ``on_nan = "abort"``, a closure
failure, a timeout, any unforeseen error) prints why on stderr, sends the message to every model
rank (which returns it as an error status and stops the job), and after
:data:`GIVE_UP_GRACE_S` ends the whole job with ``MPI_Abort``: a model rank that cannot hear it
(blocked in a collective on ``MPI_COMM_WORLD``, or inside ``oasis_get``) would otherwise keep
every rank alive for ever, and the server itself would block in ``MPI_Finalize``. Exit status:
0, or 1 (the job's, through mpirun).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bridge import paths
from bridge.closures.base import Closure
from bridge.config.coupling import (
    CouplingConfig,
    DiagnosticsConfig,
    ExchangeConfig,
    exchange_name,
    load_config,
)
from bridge.config.namcouple import (
    OASIS_2_0,
    NamcoupleError,
    OasisLimits,
    compare_namcouple,
    read_namcouple,
)
from bridge.config.namelist import read_namelists
from bridge.config.oasis import (
    LIBRARY_PREFIX,
    LIBRARY_SERVER_COMPONENT,
    OasisCouplingConfig,
)
from bridge.domain.plan import FOLDS, server_blocks
from bridge.registry.resolve import ClosureResolutionError, build_closures, resolve_closure
from bridge.registry.torch_closure import env_local_rank, place_device
from bridge.server.diagnostics import open_diagnostics, preload_netcdf
from bridge.server.engine import (
    Block,
    BlockTransport,
    Engine,
    ServerError,
    report_totals,
    serve_exchanges,
    write_timing,
)
from bridge.server.setup import Setup, handshake
from bridge.server.swap import ClosureSwaps, PendingSwap, load_swaps
from bridge.server.training import (
    OnlineTraining,
    RestartPlan,
    TrainingError,
    VersionWriter,
    finish_training,
    make_online_closures,
    registry_manifests,
    trained_exchanges,
)
from bridge.transport import mpi as wire
from bridge.transport.mpi_blocks import BlockTransportError, MpiBlockTransport
from bridge.transport.oasis import OasisError, OasisNotAvailableError, open_backend
from bridge.transport.oasis_blocks import OasisBlockTransport
from bridge.wire import COLOUR_SERVER, DONE_LENGTH, TAG_DONE

GIVE_UP_GRACE_S = 1.0
"""Seconds a server rank that gave up leaves the model ranks to report it before it aborts."""

EXAMPLES = (
    "  python -m bridge.server --config runs/x/run_config.json --run-dir runs/x\n"
    "  python -m bridge.server --oasis runs/x/oasis.json --run-dir runs/x   # OASIS-only model\n"
)


# --------------------------------------------------------------------------------------------
# a model that links the mlbridge library (transport mpi or oasis)
# --------------------------------------------------------------------------------------------


def _oasis_run_length(run_dir: Path, oasis: OasisLimits) -> tuple[int, int]:
    """``transport = "oasis"``: steps of the run (the namcouple's ``$RUNTIME``) and first step."""
    steps = read_namcouple(run_dir / "namcouple", oasis).runtime_s
    first = 0
    try:
        first = read_namelists(run_dir / "namelist_ref", run_dir / "namelist_cfg").it000
    except Exception:  # a model without a NEMO-style namelist: steps are named by date
        pass
    return steps, first


def _model_goodbye(layout: wire.WorldLayout, peers: Sequence[int], timeout_s: float) -> Any:
    """After the last OASIS date: each model rank's goodbye (its own timing) over MPI."""

    def receive() -> dict[int, list[float]]:
        from mpi4py import MPI

        bufs = [np.zeros(DONE_LENGTH) for _ in peers]
        requests = [
            layout.comm.Irecv(
                [buf, MPI.DOUBLE_PRECISION], source=layout.model_ranks[r], tag=TAG_DONE
            )
            for r, buf in zip(peers, bufs, strict=True)
        ]
        try:
            wire.wait_all(requests, timeout_s, "the model ranks' goodbye")
        except wire.TransportTimeout as err:
            raise ServerError(f"server rank {layout.rank}: {err}") from None
        return {r: [float(v) for v in buf] for r, buf in zip(peers, bufs, strict=True)}

    return receive


def library_transport(
    layout: wire.WorldLayout,
    config: CouplingConfig,
    setup: Setup,
    backend: Any,
    run_dir: Path,
    watch: wire.PeerWatch | None = None,
) -> tuple[BlockTransport, Block]:
    """The transport of this server rank, and its block, once the handshake is done."""
    plan = setup.plan(layout.n_server)
    box = plan.server_boxes[layout.rank]
    block = Block.from_global_mask(
        layout.rank, box, setup.halo, setup.mask, setup.boundary, setup.model_boxes, setup.faces
    )
    send, recv = setup.active_fields("send"), setup.active_fields("recv")
    if config.transport == "mpi":
        transport = MpiBlockTransport(
            layout, plan, send, recv, setup.lag, config.server.timeout_s,
            every=setup.every, watch=watch,
            fold_signs={name: -1.0 for name in config.model.vectors},
        )  # fmt: skip
        return transport, block
    if setup.boundary in FOLDS:
        raise ServerError(
            f'[model] boundary = {setup.boundary!r} needs transport = "mpi": the OASIS '
            "transport does not fill a north fold"
        )
    steps, first = _oasis_run_length(run_dir, backend.limits)
    backend.init(LIBRARY_SERVER_COMPONENT)  # collective over the whole job
    oasis = OasisBlockTransport(
        backend,
        layout.servers,
        setup.nx,
        setup.ny,
        plan.server_boxes,
        layout.rank,
        setup.halo,
        setup.boundary,
        "oasis" if setup.boundary == "closed" else "mpi",
        {f.name: f.nlev for f in send},
        {f.name: f.nlev for f in recv},
        LIBRARY_PREFIX,
        [(date, first + date) for date in range(0, steps, setup.every)],
        goodbye=_model_goodbye(
            layout, plan.server_recv_peers(layout.rank), config.server.timeout_s
        ),
    )
    return oasis, block


def end_job(watch: wire.PeerWatch | None = None, doing: str = "giving up") -> int:
    """End the whole job with ``MPI_Abort`` after :data:`GIVE_UP_GRACE_S` (never returns).

    The model ranks that were told stop the job themselves meanwhile, with their own message;
    the other server ranks' pings are answered (``doing``) until then.
    """
    from mpi4py import MPI

    deadline = time.monotonic() + GIVE_UP_GRACE_S
    while time.monotonic() < deadline:
        if watch is not None:
            watch.answer(doing)
        time.sleep(0.01)
    MPI.COMM_WORLD.Abort(1)
    return 1  # not reached


def give_up(layout: wire.WorldLayout, text: str, watch: wire.PeerWatch | None = None) -> int:
    """Print ``text``, send it to every model rank, and end the job (:func:`end_job`)."""
    print(f"mlbridge server: error: {text}", file=sys.stderr, flush=True)
    wire.send_error_to_models(layout, text)
    return end_job(watch, "giving up: " + text.splitlines()[0][:200])


def node_local_rank(comm: Any) -> int:
    """This rank's rank among the ranks of ``comm`` on its node (an MPI shared-memory split).

    The servers' communicator counts server ranks only, so the first server rank of a node gets
    0 whatever model ranks share the node; without MPI-3 the launcher's variable
    (:func:`bridge.registry.torch_closure.env_local_rank`) is the fallback.
    """
    from mpi4py import MPI

    try:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    except (MPI.Exception, NotImplementedError, AttributeError):
        return env_local_rank() or 0
    try:
        return int(node.Get_rank())
    finally:
        node.Free()


def place_server(layout: wire.WorldLayout, config: CouplingConfig) -> CouplingConfig:
    """Choose this server rank's device (:func:`place_device`) and say so; collective.

    Returns the configuration with ``server.device`` set to the device of this rank.
    """
    server = config.server
    local = node_local_rank(layout.servers)
    visible = 0
    if server.devices or server.device != "cpu":
        try:
            import torch

            visible = int(torch.cuda.device_count())
        except ImportError:
            visible = 0
    device = place_device(
        server.device,
        rank=layout.rank,
        local_rank=local,
        visible_gpus=visible,
        pinned=server.devices,
    )
    why = "pinned by [server] devices" if server.devices else f"[server] device = {server.device!r}"
    print(
        f"mlbridge server rank {layout.rank} (host {socket.gethostname()}, node-local server "
        f"rank {local}, {visible} visible GPU(s)): device {device} ({why})",
        flush=True,
    )
    return dataclasses.replace(config, server=dataclasses.replace(server, device=device))


def _progress(run_dir: Path, engine: Engine) -> Callable[[int], None]:
    """Server rank 0's progress file after each exchange: the count, the first and last step."""

    def write(served: int) -> None:
        paths.write_progress(run_dir, served, (engine.steps[0], engine.steps[-1]))

    return write


def write_done_marker(run_dir: Path, summaries: Sequence[Mapping[str, Any]], **extra: Any) -> None:
    """Server rank 0: :data:`bridge.paths.DONE_MARKER`, the servers finished serving."""
    steps = list(summaries[0]["steps"])
    done = {
        "exchanges": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "server_ranks": len(summaries),
        **extra,
    }
    try:
        (run_dir / paths.DONE_MARKER).write_text(json.dumps(done, indent=2) + "\n")
    except OSError as err:  # the launcher then reports the run as failed, naming the file
        print(f"mlbridge server: cannot write {run_dir / paths.DONE_MARKER}: {err}", flush=True)


def _in_turn(hooks: Sequence[Callable[[int], None]]) -> Callable[[int], None] | None:
    """One hook that calls ``hooks`` in turn (None when there are none)."""
    if not hooks:
        return None

    def call(kt: int) -> None:
        for hook in hooks:
            hook(kt)

    return call


def serve(layout: wire.WorldLayout, config: CouplingConfig, run_dir: Path) -> int:
    """Everything after the world split, on one server rank; return the exit status.

    Every failure ends the whole job (:func:`give_up`, :func:`end_job`): this returns 0 only.
    Server rank 0 rewrites the progress file after each exchange and writes the done marker at
    the end (:mod:`bridge.paths`), which the launcher needs to call the run a success.
    """
    start = time.perf_counter()
    config = place_server(layout, config)
    setup_problem: str | None = None
    closures: dict[str, Closure] = {}
    swaps: list[PendingSwap] = []
    backend: Any = None
    try:
        if config.transport not in ("mpi", "oasis"):
            raise ServerError(f"transport {config.transport!r}: this server speaks mpi and oasis")
        if not config.exchanges:
            raise ServerError("the configuration has no [[exchange]]: nothing to serve")
        if config.diagnostics.netcdf:
            preload_netcdf()  # before the OASIS shim (see there)
        if config.transport == "oasis":
            try:
                backend = open_backend()
            except OasisNotAvailableError as err:
                raise ServerError(str(err)) from None
        closures = build_closures(config)
        if trained_exchanges(config.exchanges):
            closures = make_online_closures(
                config.exchanges, closures,
                registry_manifests(config.exchanges, config.server.registry),
                config.server.device,
            )  # fmt: skip
        swaps = load_swaps(
            config.exchanges, closures, config.server.device, config.server.threads,
            config.server.registry,
        )  # fmt: skip
    except (ServerError, ClosureResolutionError, TrainingError) as err:
        setup_problem = str(err)
    limits = backend.limits if backend is not None else OASIS_2_0
    try:
        setup = handshake(layout, config, closures, setup_problem, run_dir, limits)
    except ServerError:
        return end_job()  # server rank 0 has reported it, to the model ranks too
    watch = wire.PeerWatch(layout.servers)  # collective over the server ranks
    transport: Any = None
    try:
        transport, block = library_transport(layout, config, setup, backend, run_dir, watch)
        engine = Engine(
            config.exchanges, closures, block, setup.points, schedule=(setup.every, setup.lag)
        )
        diagnostics = open_diagnostics(
            config.diagnostics, run_dir, layout.servers,
            server_blocks(setup.nx, setup.ny, layout.n_server), block, config.exchanges,
            closures, config.server.timeout_s,
        )  # fmt: skip
        progress = _progress(run_dir, engine) if layout.rank == 0 else None
        training = OnlineTraining.build(
            config.exchanges, closures, engine, setup.points, layout.servers,
            VersionWriter(config.server.registry, run_dir, layout.rank),
            RestartPlan.from_namelists(run_dir, layout.rank),
        )  # fmt: skip
        switch = ClosureSwaps(engine, swaps, setup.points, log=layout.rank == 0) if swaps else None
        before = [h for h in (switch, training.before_infer if training else None) if h]
        summary = serve_exchanges(
            engine, transport, progress, diagnostics, training, _in_turn(before)
        )
        if diagnostics is not None:
            diagnostics.close()
        trained = training.summary() if training is not None else None
    except (ServerError, BlockTransportError, wire.TransportError, TrainingError) as err:
        detail = str(err).removeprefix(f"server rank {layout.rank}: ")
        return give_up(layout, f"mlbridge server rank {layout.rank}: {detail}", watch)
    finally:
        if isinstance(transport, MpiBlockTransport):
            transport.free()
    summaries = layout.servers.gather(summary, root=0)
    if layout.rank == 0:
        assert summaries is not None
        if config.diagnostics.timing:
            write_timing(run_dir, summaries, setup.lag, setup.every)
        report_totals(summaries)
    if training is not None:  # after timing.json: the training figures go into it
        finish_training(layout.servers, training, trained, run_dir, config.diagnostics.timing)
    if layout.rank == 0:
        write_done_marker(
            run_dir, summaries, elapsed_s=time.perf_counter() - start, transport=config.transport
        )
    return 0


def serve_with_problem(
    layout: wire.WorldLayout, config: CouplingConfig, run_dir: Path, problem: str
) -> int:
    """Answer the handshake with ``problem`` (the configuration could not be read); end the job."""
    try:
        handshake(layout, config, {}, problem, run_dir)
    except ServerError:
        pass  # server rank 0 has reported it
    return end_job()


# --------------------------------------------------------------------------------------------
# a model that couples through OASIS itself (an [oasis] table)
# --------------------------------------------------------------------------------------------


def oasis_model_exchange(oasis: OasisCouplingConfig) -> ExchangeConfig:
    """The ``[oasis]`` table as the one exchange the engine serves (model fields: OASIS names)."""
    return ExchangeConfig(
        closure=oasis.closure,
        inputs={closure_input: name for name, closure_input in oasis.inputs.items()},
        outputs=dict(oasis.outputs),
        on_nan=oasis.on_nan,
        params=dict(oasis.params),
    )


def _fail(run_dir: Path, message: str, backend: Any = None) -> int:
    """Report, then end the whole job (``oasis_abort`` once OASIS is up, else MPI_Abort)."""
    from mpi4py import MPI

    print(f"mlbridge oasis server: error: {message}", file=sys.stderr, flush=True)
    try:
        with open(run_dir / paths.ERROR_FILE, "a") as fh:
            fh.write(message + "\n")
    except OSError:
        pass
    if backend is not None:
        backend.abort("bridge.server", message[:1000])
    MPI.COMM_WORLD.Abort(1)
    return 1


def serve_oasis_model(
    oasis: OasisCouplingConfig,
    run_dir: Path,
    *,
    prefer: Literal["auto", "pyoasis", "shim"] = "auto",
    registry: Path | None = None,
    timing: bool = True,
    diagnostics: DiagnosticsConfig | None = None,
) -> int:
    """Serve a model that couples through OASIS itself; return 0 (or the job is aborted).

    ``diagnostics``: the ``[diagnostics]`` table (None: no NetCDF, as with ``--oasis``).
    """
    if diagnostics is not None and diagnostics.netcdf:
        preload_netcdf()  # before the OASIS shim (see there)
    try:
        backend = open_backend(prefer, None)  # loads the binding; OASIS itself starts at init
    except OasisNotAvailableError as err:
        return _fail(run_dir, str(err))
    problems = oasis.version_problems(backend.limits)
    if problems:
        return _fail(run_dir, f"the {backend.kind} binding: " + "; ".join(problems))
    try:
        problems = compare_namcouple(
            oasis.namcouple(backend.limits), read_namcouple(run_dir / "namcouple", backend.limits)
        )
    except NamcoupleError as err:
        problems = [str(err)]
    if problems:
        return _fail(
            run_dir,
            f"the namcouple in {run_dir} does not match the configuration:\n  "
            + "\n  ".join(problems),
        )
    exchange = oasis_model_exchange(oasis)
    try:
        closure = resolve_closure(
            oasis.closure,
            oasis.params,
            oasis.device,
            oasis.threads,
            inputs=tuple(exchange.inputs),
            registry=registry,
        )
    except ClosureResolutionError as err:  # reported before OASIS starts: the job ends cleanly
        return _fail(run_dir, f"closure {oasis.closure!r}: {err}")
    missing = sorted(set(oasis.outputs) - {f.name for f in closure.spec.outputs})
    if missing:
        known = [f.name for f in closure.spec.outputs]
        return _fail(run_dir, f"[oasis] outputs: closure {oasis.closure!r} has no {missing} "
                     f"(it returns {known})")  # fmt: skip
    start = time.perf_counter()
    try:
        comm = backend.init(oasis.server_component)
        rank, size = comm.Get_rank(), comm.Get_size()
        blocks = server_blocks(oasis.nx, oasis.ny, size)
        halo = int(closure.spec.halo)
        transport = OasisBlockTransport(
            backend,
            comm,
            oasis.nx,
            oasis.ny,
            blocks,
            rank,
            halo,
            oasis.boundary,
            oasis.halo_mode,
            {name: oasis.nz for name in oasis.inputs},
            {name: oasis.nz for name in oasis.outputs.values()},
            oasis.server_prefix,
            [(n * oasis.period_s, n + 1) for n in range(oasis.exchanges)],
        )
        # no land mask without a handshake: 1 inside the grid, 0 beyond a closed edge
        block = Block.from_global_mask(
            rank, blocks[rank], halo, np.ones((oasis.ny, oasis.nx)), oasis.boundary,
            oasis.model_boxes,
        )  # fmt: skip
        engine = Engine(
            [exchange], {exchange_name(exchange): closure}, block,
            schedule=(exchange.every, exchange.lag),
        )  # fmt: skip
        progress = (lambda n: paths.write_progress(run_dir, n)) if rank == 0 else None
        recorder = open_diagnostics(
            diagnostics or DiagnosticsConfig(), run_dir, comm, blocks, block, [exchange],
            {exchange_name(exchange): closure},
        )  # fmt: skip
        summary = serve_exchanges(engine, transport, progress, recorder)
        if recorder is not None:
            recorder.close()
    except (ServerError, OasisError) as err:
        return _fail(run_dir, str(err), backend)
    summaries = comm.gather(summary, root=0)
    if rank == 0:
        assert summaries is not None
        if timing:
            write_timing(run_dir, summaries, 0, 1)
        report_totals(summaries)
        write_done_marker(
            run_dir,
            summaries,
            backend=backend.kind,
            oasis_version=backend.limits.version,
            halo_exchange=oasis.halo_mode,
            elapsed_s=time.perf_counter() - start,
            nan_replaced=int(sum(s["nan_replaced"] for s in summaries)),
            max_abs_replaced=int(sum(s["max_abs_replaced"] for s in summaries)),
        )
    # no collective on MPI_COMM_WORLD here: a model whose OASIS started MPI has finalised it
    return 0


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m bridge.server``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="run_config.json (or coupling.toml)")
    source.add_argument(
        "--oasis", type=Path, help="the [oasis] table as JSON (a model that couples through OASIS)"
    )
    parser.add_argument("--run-dir", type=Path, default=Path.cwd(), help="where timing.json goes")
    parser.add_argument(
        "--backend",
        choices=("auto", "pyoasis", "shim"),
        default="auto",
        help="OASIS binding (OASIS-only models)",
    )


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    A closure allocates the same large temporaries every step (numpy, torch on CPU). With glibc's
    defaults each one above the mmap threshold is a fresh ``mmap`` whose pages fault in again
    every step: measured 2.5x slower for ``smooth3`` on 30 x 70 x 70 blocks (5.3 ms vs 2.1 ms).
    Blocks below ``mmap_threshold`` (glibc's maximum, 32 MiB) come from the heap, and the heap is
    trimmed only above ``trim_threshold``. Returns False where this is not glibc (nothing done).
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(
        mallopt(m_trim_threshold, trim_threshold)
    )


def _first_server_rank() -> int:
    """World rank of the first server (the last program of Open MPI's MPMD line; else this rank)."""
    from mpi4py import MPI

    counts = os.environ.get("OMPI_APP_CTX_NUM_PROCS", "").split()
    if counts and all(c.isdigit() for c in counts):
        return sum(int(c) for c in counts[:-1])
    return MPI.COMM_WORLD.Get_rank()


def _serve_oasis(oasis: OasisCouplingConfig, run_dir: Path, **options: Any) -> int:
    """:func:`serve_oasis_model`; an unforeseen error still ends the job (:func:`_fail`)."""
    try:
        return serve_oasis_model(oasis, run_dir, **options)
    except Exception as err:
        traceback.print_exc()
        return _fail(run_dir, f"{type(err).__name__}: {err} (a bug?)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a server rank (under mpirun, after the model ranks)."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.server",
        description="mlbridge inference server (started by `mlbridge run`, after the model ranks)",
        epilog="examples:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    keep_freed_memory()
    from mpi4py import MPI

    run_dir = args.run_dir.resolve()
    if args.oasis is not None:
        try:
            oasis = OasisCouplingConfig.from_mapping(json.loads(args.oasis.read_text()))
        except (OSError, ValueError) as err:
            return _fail(run_dir, f"{args.oasis}: {err}")
        return _serve_oasis(oasis, run_dir, prefer=args.backend)
    # the configuration is read before the split, for the time to wait for the model ranks
    problem: str | None = None
    try:
        config = load_config(args.config)
    except Exception as err:  # reported through the handshake, so that the model ranks stop too
        config = CouplingConfig()
        problem = f"cannot load {args.config}: {err}"
    if problem is None and config.oasis is not None:
        return _serve_oasis(
            config.oasis,
            run_dir,
            prefer=args.backend,
            registry=config.server.registry,
            timing=config.diagnostics.timing,
            diagnostics=config.diagnostics,
        )
    try:
        layout = wire.split_world(
            MPI.COMM_WORLD,
            COLOUR_SERVER,
            join_timeout_s=config.server.timeout_s,
            join_hint=wire.NEMO_JOIN_HINT if config.model.nemo else wire.JOIN_HINT,
        )
    except wire.JoinTimeout as err:
        if MPI.COMM_WORLD.Get_rank() == _first_server_rank():
            print(f"mlbridge server: error: {err}", file=sys.stderr, flush=True)
        time.sleep(0.5)
        MPI.COMM_WORLD.Abort(1)
        return 1  # not reached
    (run_dir / f"server.{layout.rank}.pid").write_text(f"{os.getpid()}\n")
    try:
        if problem is not None:
            return serve_with_problem(layout, config, run_dir, problem)
        return serve(layout, config, run_dir)
    except Exception as err:  # unforeseen: still never leave the job hanging
        traceback.print_exc()
        return give_up(
            layout, f"mlbridge server rank {layout.rank}: {type(err).__name__}: {err} (a bug?)"
        )
