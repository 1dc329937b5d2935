"""``coupling.toml`` -> validated, frozen dataclasses (:class:`CouplingConfig`).

The file describes one coupled job (see ``docs/architecture.md``)::

    transport = "mpi"              # mpi | oasis (the fields through OASIS3-MCT)

    [model]
    kind = "nemo"                  # nemo (the default when a namelist is named) | generic
    executable = "toy_nemo"        # a path (relative to this file), or a name found in build/bin
    args = []                      # the executable's arguments
    ranks = 1
    namelist_cfg = "namelist_cfg"  # nemo: relative to this file
    namelist_ref = ""              # nemo: empty: the toy's own fortran_stubs/toy_nemo/namelist_ref
    boundary = "closed"            # closed | periodic | periodic_x | periodic_y | north_fold_t |
                                   # north_fold_f: how halos are filled at the domain edge
    vectors = []                   # fields that are vector components (their sign changes
                                   # across a north fold), e.g. ["u", "v"]
    stage = []                     # files or folders copied into the run directory
    link = []                      # files or folders symbolically linked into the run directory
    env = {}                       # environment of the job's ranks, e.g. { OMP_NUM_THREADS = "1" }
    steps = 0                      # generic: the number of steps the model will run (progress;
                                   # 0: unknown); nemo: from the namelist
    nx = 0                         # generic: the global grid (checks before launch; 0: unknown,
    ny = 0                         # the handshake still checks); nemo: from &namusr_def

``kind = "nemo"``: the model reads NEMO-style namelists (``namelist_ref`` + ``namelist_cfg``,
``&namrun``, ``&namdom``, ``&namusr_def``, ``&nammpp``, ``&nammlb``), which the launcher reads,
checks and patches (``--steps``, ``--model-ranks``, ``ln_mlb``). ``kind = "generic"`` (the
default when neither ``namelist_cfg`` nor ``namelist_ref`` is given): the launcher knows only
what ``[model]`` says; the model's own input files are staged with ``stage``/``link``,
``--steps`` and ``[run] steps`` are refused (the launcher cannot set the run length), and
progress and success come from the servers.

    [server]
    ranks = 1
    device = "cpu"                 # auto | cpu | cuda | cuda:N; cuda (auto with a GPU): server
                                   # rank -> cuda:(node-local server rank mod visible GPUs)
    devices = []                   # optional: pin server rank r to devices[r mod len], e.g.
                                   # ["cuda:0", "cuda:1"] (overrides device)
    threads = 1                    # torch threads per server rank
    timeout_s = 120.0              # every blocking wait gives up after this, with a message
    registry = ""                  # closure registry directory (relative to this file); empty:
                                   # $MLBRIDGE_HOME, else the user's data dir

    [run]
    workdir = "runs"               # run directories are created below it (relative to this file)
    steps = 0                      # nemo: > 0: run this many steps (overrides the namelist's
                                   # nn_itend); refused for a generic model

    [diagnostics]                  # optional, written by the servers into the run directory
    timing = true                  # timing.json: seconds in transfer, inference, waiting; counts
    netcdf = false                 # diagnostics.nc: exchanged fields and closure outputs (xarray)
    every = 1                      # write the NetCDF record every this many exchanges
    fields = []                    # restrict the NetCDF file to these model fields ([] = all;
                                   # each must be a model field of an [[exchange]])

    [[exchange]]
    name = "laplacian"             # optional; default: the closure name without its @version
    closure = "laplacian"          # an analytic closure, or a registry reference name[@version]
    inputs = { u = "u" }           # closure input -> model field sent
    outputs = { lap_u = "u_tend" } # closure output -> model field received
    every = 1                      # exchange every this many model steps (>= 1)
    lag = 0                        # 0 or 1
    combine = "refuse"             # refuse | add: an output written into a model field another
                                   # exchange writes too is added to it when both say "add"
    on_nan = "abort"               # abort | zero: what to do with a NaN or Inf (either sign), and
                                   # with an output beyond its max_abs
    max_abs = { u_tend = 1.0e-3 }  # optional: the largest |value| an output may have (a number
                                   # for every output, or a table by closure output or model
                                   # field; inf: no bound); default: none, or for a registry
                                   # closure without clip the bound its manifest's scale implies
    params = { nu = 1.0e3 }        # optional, free-form: keyword arguments of the closure
    sha256 = ""                    # optional, registry closures: refuse the run unless the
                                   # registered artifact has this sha256 (the launcher pins it
                                   # in run_config.json)

With ``transport = "oasis"`` and ``[[exchange]]`` blocks, a model that links the mlbridge library
(built with OASIS3-MCT) moves its fields through OASIS instead of MPI messages; the handshake and
everything else are as with ``mpi`` (``docs/oasis.md``).

A model that couples through OASIS3-MCT itself and knows nothing of mlbridge (a NEMO built with
``key_oasis3``) is described by ``transport = "oasis"`` and an ``[oasis]`` table instead of
``[[exchange]]`` blocks (``docs/oasis.md``)::

    transport = "oasis"

    [model]
    executable = "oasis_pure_model"
    ranks = 2
    namelist_cfg = "namelist_pure" # optional: the model's own namelist, copied into the run
                                   # directory under its own name (not read by mlbridge)
    [oasis]
    nx = 12                        # ... the keys of bridge.config.oasis.OasisCouplingConfig,
    jpni = 2                       # except device and threads ([server]) and boundary ([model])
    namcouple = ""                 # optional: a namcouple of your own, checked field by field
                                   # against the one this table implies before anything starts

Every problem found in a file is reported at once, each naming the file, the table path
(``exchange[1].lag``, 0-based like the order of the ``[[exchange]]`` blocks) and the value found
and expected. Relative paths are resolved against the directory of the toml file, so that the
resolved configuration (``to_dict``) is self-contained: the launcher writes it as
``run_config.json`` into the run directory, and the servers read it back with ``from_dict``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import paths
from bridge.config.oasis import ON_NAN, OasisConfigError, OasisCouplingConfig
from bridge.config.schema import Reader, SchemaError, join, show
from bridge.domain.plan import BOUNDARIES

TOY_NAMELIST_REF = paths.toy_namelist_ref()
"""The default reference namelist of a run: the toy's own (``model.namelist_ref = ""``)."""

TRANSPORTS = ("mpi", "oasis")
MODEL_KINDS = ("nemo", "generic")
DEVICES = ("auto", "cpu", "cuda")
RUN_DIR_NAMES = (
    "run_config.json", "coupling.toml", "command.txt", "mpirun.log", "logs", "closures.json",
    "failure_report.txt", "timing.json", "timing_steps.json", "diagnostics.nc", "namcouple",
    paths.PROGRESS_FILE, paths.DONE_MARKER,
)  # fmt: skip
"""Files of the run directory that the launcher or the servers write: never staged over."""
LAGS = (0, 1)
COMBINE = ("refuse", "add")
MODEL_KEYS = (
    "kind", "executable", "args", "ranks", "namelist_cfg", "namelist_ref", "boundary", "stage",
    "link", "env", "steps", "nx", "ny", "vectors",
)  # fmt: skip
FROM_ELSEWHERE = {"device": "server", "threads": "server", "boundary": "model"}
"""Keys of the OASIS server's configuration that ``coupling.toml`` sets in another table."""


class ConfigError(SchemaError):
    """A configuration (or anything checked before launch) is invalid.

    Attributes
    ----------
    problems : list of str
        One line per problem, each naming the file, the field and the value.
    source : Path or None
        The file the problems are about, when there is one.
    """

    def __init__(self, problems: list[str] | str, source: Path | str | None = None) -> None:
        super().__init__(problems, Path(source) if source is not None else None)


@dataclass(frozen=True)
class ModelConfig:
    """The Fortran model: what the launcher must know to start it.

    Attributes
    ----------
    kind : str
        ``nemo``: the model reads NEMO-style namelists, which the launcher reads, checks and
        patches. ``generic``: the launcher knows only this table (``steps``, ``nx``, ``ny``).
    executable : str
        Absolute path, or a bare name looked up in ``<build>/bin`` then on PATH
        (see :meth:`resolve_executable`).
    ranks : int
        Number of model MPI ranks (>= 1).
    namelist_cfg : Path or None
        The configuration namelist (absolute once loaded from a file). None only for a model
        that couples through OASIS itself and has no namelist mlbridge should copy.
    namelist_ref : Path or None
        The reference namelist; defaults to the toy model's ``namelist_ref`` (None, the default,
        for an OASIS-only model: nothing to copy).
    boundary : str
        ``closed`` (halo beyond the edge is zero), ``periodic`` (wrapped in x and y),
        ``periodic_x``, ``periodic_y``, or a north fold ``north_fold_t`` / ``north_fold_f`` (NEMO's
        ORCA grids, T- or F-point pivot: see :mod:`bridge.domain.plan`).
    vectors : tuple of str
        Model fields that are components of a vector (U and V velocities, wind stress): across a
        north fold their halo takes the mirror value with the opposite sign (NEMO's ``psgn =
        -1``). Other fields keep the sign. Ignored by the other boundaries.
    args : tuple of str
        The executable's arguments.
    stage : tuple of Path
        Files or folders copied into the run directory under their own names (absolute once
        loaded from a file).
    link : tuple of Path
        Files or folders symbolically linked into the run directory under their own names.
    env : dict of str to str
        Environment variables of the job's ranks (set for every rank of the MPMD job).
    steps : int
        ``generic``: the number of model steps to expect (progress only; 0: unknown). The
        ``nemo`` kind takes it from the namelist.
    nx, ny : int
        ``generic``: the global grid, for the checks before launch (0: unknown). The ``nemo``
        kind takes it from ``&namusr_def``. The handshake checks the model's grid either way.
    """

    executable: str = "toy_nemo"
    ranks: int = 1
    namelist_cfg: Path | None = Path("namelist_cfg")
    namelist_ref: Path | None = TOY_NAMELIST_REF
    boundary: str = "closed"
    kind: str = "nemo"
    args: tuple[str, ...] = ()
    stage: tuple[Path, ...] = ()
    link: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    nx: int = 0
    ny: int = 0
    vectors: tuple[str, ...] = ()

    @property
    def nemo(self) -> bool:
        """True for a model with NEMO-style namelists (``kind = "nemo"``)."""
        return self.kind == "nemo"

    @property
    def grid(self) -> tuple[int, int] | None:
        """``(nx, ny)`` of a generic model when ``[model]`` gives both, else None."""
        return (self.nx, self.ny) if self.nx > 0 and self.ny > 0 else None

    def resolve_executable(self, build_dir: Path | None = None) -> Path:
        """Return the executable's path: as given, else ``build_dir/bin/NAME``, else on PATH.

        ``build_dir`` defaults to :func:`bridge.paths.default_build_dir` (where ``mlbridge build``
        puts the toy model: ``$MLBRIDGE_BUILD_DIR``, else ``build/`` of a checkout, else the
        user's data directory), the same place for a checkout and an installed package.
        A bare name that is found nowhere resolves to ``build_dir/bin/NAME`` (which does not
        exist), so that the error message names where it was expected.
        """
        if "/" in self.executable:
            return Path(self.executable)
        bdir = Path(build_dir) if build_dir is not None else paths.default_build_dir()
        in_build = bdir / "bin" / self.executable
        if in_build.exists():
            return in_build
        on_path = shutil.which(self.executable)
        return Path(on_path) if on_path else in_build


@dataclass(frozen=True)
class ServerConfig:
    """The Python inference servers.

    Attributes
    ----------
    ranks : int
        Number of server MPI ranks (>= 1).
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. With ``cuda`` (and
        ``auto`` on a GPU node) the server ranks of a node share its GPUs: server rank ->
        ``cuda:(node-local server rank mod visible GPUs)``
        (:func:`bridge.registry.torch_closure.place_device`).
    devices : tuple of str
        Pinned devices: server rank ``r`` uses ``devices[r % len(devices)]`` (empty: ``device``).
    threads : int
        Torch intra-op threads per server rank.
    timeout_s : float
        Seconds after which any blocking wait gives up with a message.
    registry : Path or None
        Closure registry directory (absolute once loaded from a file); None: the default
        registry (``$MLBRIDGE_HOME``, else the user's data directory).
    """

    ranks: int = 1
    device: str = "cpu"
    threads: int = 1
    timeout_s: float = 120.0
    registry: Path | None = None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """Where and how long to run.

    Attributes
    ----------
    workdir : Path
        Directory below which each run gets its own directory.
    steps : int
        Number of model steps to run; 0 keeps the namelist's ``nn_it000 .. nn_itend``.
    """

    workdir: Path = Path("runs")
    steps: int = 0


SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
"""Slurm's time limit formats: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""


@dataclass(frozen=True)
class SlurmConfig:
    """The ``[slurm]`` table: how the job is placed on a Slurm cluster (``docs/slurm.md``).

    Attributes
    ----------
    partition : str
        Partition of the job (of the model's component in a heterogeneous job); empty: the
        cluster's default.
    nodes : int
        Nodes of the job (of the model's component in a heterogeneous job).
    time : str
        Time limit of a submitted job, in Slurm's format (``HH:MM:SS``, ``D-HH:MM``...).
    gpus_per_node : int
        GPUs per node for the servers (the whole job unless the servers have their own nodes).
    account : str
        Account a submitted job is charged to; empty: the user's default.
    server_nodes : int
        0: the servers share the model's nodes (one ``srun --multi-prog`` step); N >= 1: the
        servers run on N nodes of their own, as the second component of a heterogeneous job.
    server_partition : str
        Partition of the servers' nodes in a heterogeneous job (e.g. a GPU partition); empty:
        ``partition``.
    srun_args, sbatch_args : tuple of str
        Further options given as they are to ``srun`` and (as ``#SBATCH`` lines) to ``sbatch``.
    """

    partition: str = ""
    nodes: int = 1
    time: str = "01:00:00"
    gpus_per_node: int = 0
    account: str = ""
    server_nodes: int = 0
    server_partition: str = ""
    srun_args: tuple[str, ...] = ()
    sbatch_args: tuple[str, ...] = ()

    @property
    def heterogeneous(self) -> bool:
        """True when the servers run on nodes of their own (a heterogeneous job)."""
        return self.server_nodes > 0


@dataclass(frozen=True)
class DiagnosticsConfig:
    """What the servers write into the run directory.

    Attributes
    ----------
    timing : bool
        Write ``timing.json`` at the end (seconds in transfer, inference and waiting; counts).
    netcdf : bool
        Write ``diagnostics.nc`` (:mod:`bridge.server.diagnostics`): the model fields the
        servers received and the closure outputs, on the global grid, one record appended per
        ``every`` exchanges (a failed run keeps the records written before).
    every : int
        Write a NetCDF record every this many exchanges (>= 1): the ``every``-th, ``2 every``-th...
    fields : tuple of str
        Model fields to write to NetCDF (each a model field of an exchange, checked when the
        configuration is read); empty means all exchanged fields.
    """

    timing: bool = True
    netcdf: bool = False
    every: int = 1
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    """Online training of an exchange's closure (``train = { ... }``, docs/online_learning.md).

    The model sends each target field beside the closure's inputs, on the exchange's schedule;
    the servers keep the last ``buffer`` exchanges of (inputs, targets), run
    ``steps_per_exchange`` optimizer steps after each exchange's outputs went (in the gap while
    the model steps), and the next exchange uses the updated network.

    Attributes
    ----------
    target : dict of str to str
        Closure output -> the model field it learns (``target = "u_nud"`` for an exchange with
        one output).
    optimizer : str
        ``adam`` or ``sgd``.
    lr : float
        Learning rate (> 0).
    batch : int
        Exchanges (each: all levels of the block) drawn from the buffer per optimizer step.
    loss : str
        ``mse`` or ``mae``, on the normalised outputs (the manifest's output ``scale``), over the
        ocean points of every server's block (one sum, so M servers are one model).
    steps_per_exchange : int
        Optimizer steps after each exchange (0: only collect).
    buffer : int
        Exchanges kept in the replay buffer (the oldest goes first).
    budget_s : float
        Most seconds of training after one exchange (inf: no limit); the steps then stop early,
        the same count on every server rank.
    seed : int
        Seed of the draws from the buffer (the same on every server rank).
    hold_out : int
        Every ``hold_out``-th exchange is kept out of training for the offline metric
        (0: none).
    save_every : int
        Register the current weights every this many exchanges (0: at the end only).
    save_as : str
        The registry name of the versions written (empty: no versions written).
    resume : str
        A restarted run: the ``RUN/online`` folder of the run whose model restart it starts
        from; the servers take the training state (weights, optimizer, buffer, draws) saved
        there at the step before their first (empty: start from the closure's weights).
    target_plus_output : bool
        Learn the target field *plus* the closure's own output that the model applied in the
        step the target comes from (the total increment), instead of the field alone. For a
        nudging or assimilation increment computed while the closure corrects the model: the
        increment then holds only the error the correction left, and learning it alone chases
        a moving target (docs/online_learning.md, "The twin experiment online").
    """

    target: dict[str, str]
    optimizer: str = "adam"
    lr: float = 1.0e-3
    batch: int = 4
    loss: str = "mse"
    steps_per_exchange: int = 1
    buffer: int = 64
    budget_s: float = math.inf
    seed: int = 0
    hold_out: int = 0
    save_every: int = 0
    save_as: str = ""
    resume: str = ""
    target_plus_output: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The table as ``coupling.toml`` writes it (``inf`` kept as a float)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SwapConfig:
    """A switch of an exchange to another registered closure at a model step (``swap``).

    Attributes
    ----------
    step : int
        The model step from which the closure runs instead (its first call at a due step
        ``>= step``).
    closure : str
        The registry reference ``name@version`` switched to.
    sha256 : str
        Optional pin of its artifact's hash (empty: any).
    """

    step: int
    closure: str
    sha256: str = ""


OPTIMIZERS = ("adam", "sgd")
LOSSES = ("mse", "mae")


@dataclass(frozen=True)
class ExchangeConfig:
    """One closure coupled to the model.

    Attributes
    ----------
    name : str
        Unique name of the exchange (diagnostics, timing); default: the closure's name.
    closure : str
        Analytic closure name, or registry reference ``name[@version]``.
    inputs : dict of str to str
        Closure input name -> model field sent.
    outputs : dict of str to str
        Closure output name -> model field received.
    every : int
        Exchange every this many model steps (>= 1). Exchanges may differ: the model exchanges
        its fields on the finest schedule (:func:`model_schedule`), the servers run each closure
        on its own due steps and hold its outputs in between.
    lag : int
        0: outputs of step kt come back at kt; 1: at kt + every (this exchange's every).
    combine : str
        ``refuse`` (default) or ``add``: outputs of two exchanges written into one model field
        are added (in the order of the ``[[exchange]]`` blocks) when both say ``add``; refused
        otherwise.
    on_nan : str
        ``abort`` the run, or replace by ``zero``, the non-finite values (NaN, +-Inf) of the
        fields and outputs and the outputs beyond their ``max_abs``.
    max_abs : dict of str to float
        Closure output name -> the largest absolute value it may take (``inf``: no bound, not
        even the one a registry manifest implies). Outputs not listed: the bound of the
        closure's manifest (:func:`bridge.registry.manifest.sane_bound`), else none.
    params : dict
        Free-form closure parameters (keyword arguments of the closure).
    sha256 : str
        Registry closures: the sha256 the registered artifact must have (empty: any). The
        launcher fills it in ``run_config.json`` with the hash it checked, and ``closure`` with
        the resolved ``name@version``, so that the servers load exactly what was checked.
    train : TrainConfig or None
        Online training of the closure (None: inference only).
    swap : tuple of SwapConfig
        Switches to other registered closures at given steps (in increasing step order).
    """

    closure: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    name: str = ""
    every: int = 1
    lag: int = 0
    on_nan: str = "abort"
    params: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    max_abs: dict[str, float] = field(default_factory=dict)
    combine: str = "refuse"
    train: TrainConfig | None = None
    swap: tuple[SwapConfig, ...] = ()


def sent_fields(exchange: ExchangeConfig) -> list[str]:
    """The model fields the model sends for ``exchange``: the inputs, then the training
    targets."""
    targets = list(exchange.train.target.values()) if exchange.train is not None else []
    return list(dict.fromkeys([*exchange.inputs.values(), *targets]))


def exchange_name(exchange: ExchangeConfig) -> str:
    """The name an exchange goes by in messages, timing and diagnostics."""
    return exchange.name or exchange.closure


def model_schedule(exchanges: Sequence[ExchangeConfig]) -> tuple[int, int]:
    """``(every, lag)`` the model exchanges its fields on.

    All exchanges on one schedule: that schedule. Otherwise the finest one: every = the greatest
    common divisor of the exchanges' ``every``, lag = the smallest lag (0 as soon as one
    exchange has lag 0). The servers run each closure on its own due steps and answer the
    other steps with the outputs it holds (:func:`applied_step`). No exchange: ``(1, 0)``.
    """
    if not exchanges:
        return 1, 0
    return math.gcd(*(ex.every for ex in exchanges)), min(ex.lag for ex in exchanges)


def schedules_differ(exchanges: Sequence[ExchangeConfig]) -> bool:
    """Whether the exchanges are on more than one ``(every, lag)``."""
    return len({(ex.every, ex.lag) for ex in exchanges}) > 1


def applied_step(exchange: ExchangeConfig, step: int, origin: int) -> int:
    """The due step of ``exchange`` whose fields give the outputs the model uses at ``step``.

    Due steps are ``origin + n * every``; with lag 0 the model uses the outputs of the last due
    step ``<= step``, with lag 1 those of the last due step ``<= step - every``. Before the
    first (a result ``< origin``) the outputs are zero.
    """
    last = step - exchange.lag * exchange.every
    return origin + ((last - origin) // exchange.every) * exchange.every


@dataclass(frozen=True)
class CouplingConfig:
    """A whole ``coupling.toml``, validated, with paths resolved.

    Attributes
    ----------
    transport : str
        ``mpi`` or ``oasis``.
    model, server, run, diagnostics, slurm
        The tables of the same name.
    exchanges : tuple of ExchangeConfig
        The ``[[exchange]]`` blocks in file order; empty: the model runs alone.
    oasis : OasisCouplingConfig or None
        The ``[oasis]`` table: a model that couples through OASIS itself (``transport =
        "oasis"``), served by :func:`bridge.server.main.serve_oasis_model`; ``device`` and
        ``threads`` come from ``[server]``, ``boundary`` from ``[model]``.
    namcouple : Path or None
        ``[oasis] namcouple``: a namcouple supplied by the user (checked against ``oasis`` field
        by field before launch, then used as is); None: generated from ``oasis``.
    source : Path or None
        The file this was read from (None when built in code).
    """

    model: ModelConfig = ModelConfig()
    server: ServerConfig = ServerConfig()
    run: RunConfig = RunConfig()
    exchanges: tuple[ExchangeConfig, ...] = ()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    transport: str = "mpi"
    slurm: SlurmConfig = SlurmConfig()
    oasis: OasisCouplingConfig | None = None
    namcouple: Path | None = None
    source: Path | None = field(default=None, compare=False)

    @property
    def coupled(self) -> bool:
        """True when servers are started: an exchange, or an OASIS-only model to serve."""
        return bool(self.exchanges) or self.oasis_only

    @property
    def oasis_only(self) -> bool:
        """True for a model that couples through OASIS itself (an ``[oasis]`` table)."""
        return self.oasis is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (paths as absolute strings), read back by ``from_dict``."""
        data = {
            "transport": self.transport,
            "model": self._model_dict(),
            "server": {
                "ranks": self.server.ranks,
                "device": self.server.device,
                "devices": list(self.server.devices),
                "threads": self.server.threads,
                "timeout_s": self.server.timeout_s,
                "registry": str(self.server.registry) if self.server.registry else "",
            },
            "run": {"workdir": str(self.run.workdir), "steps": self.run.steps},
            "diagnostics": {
                "timing": self.diagnostics.timing,
                "netcdf": self.diagnostics.netcdf,
                "every": self.diagnostics.every,
                "fields": list(self.diagnostics.fields),
            },
            "slurm": {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self.slurm).items()
            },
            "exchange": [
                {
                    "name": ex.name,
                    "closure": ex.closure,
                    "inputs": dict(ex.inputs),
                    "outputs": dict(ex.outputs),
                    "every": ex.every,
                    "lag": ex.lag,
                    "on_nan": ex.on_nan,
                    "params": json.loads(json.dumps(ex.params)),
                    "sha256": ex.sha256,
                    "max_abs": dict(ex.max_abs),
                    "combine": ex.combine,
                    **({"train": ex.train.to_dict()} if ex.train is not None else {}),
                    **({"swap": [dataclasses.asdict(w) for w in ex.swap]} if ex.swap else {}),
                }
                for ex in self.exchanges
            ],
        }
        if self.oasis is not None:
            table = {k: v for k, v in self.oasis.to_mapping().items() if k not in FROM_ELSEWHERE}
            if self.namcouple is not None:
                table["namcouple"] = str(self.namcouple)
            data["oasis"] = table
        return data

    def _model_dict(self) -> dict[str, Any]:
        model = self.model
        data: dict[str, Any] = {"executable": model.executable, "ranks": model.ranks}
        if model.nemo or self.oasis_only:
            data["namelist_cfg"] = str(model.namelist_cfg or "")
            data["namelist_ref"] = str(model.namelist_ref or "")
        if not self.oasis_only:
            data["kind"] = model.kind
        data.update(
            boundary=model.boundary,
            args=list(model.args),
            stage=[str(p) for p in model.stage],
            link=[str(p) for p in model.link],
            env=dict(model.env),
        )
        if not model.nemo:
            data.update(steps=model.steps, nx=model.nx, ny=model.ny)
        if model.vectors:
            data["vectors"] = list(model.vectors)
        return data

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        base_dir: Path | None = None,
        source: Path | str | None = None,
    ) -> CouplingConfig:
        """Validate a parsed ``coupling.toml`` (or ``run_config.json``) and build the config.

        Parameters
        ----------
        data
            The parsed document.
        base_dir
            Directory relative paths are resolved against (default: that of ``source``, else
            the current directory).
        source
            The file ``data`` came from, named in error messages.

        Raises
        ------
        ConfigError
            Listing every unknown key, wrong type and out-of-range value found.
        """
        src = Path(source).resolve() if source is not None else None
        if base_dir is None:
            base_dir = src.parent if src is not None else Path.cwd()
        parser = _Parser(Path(base_dir).resolve())
        config = parser.coupling(data)
        if parser.problems:
            raise ConfigError(parser.texts(), src)
        return dataclasses.replace(config, source=src)

    def with_overrides(
        self,
        *,
        model_ranks: int | None = None,
        server_ranks: int | None = None,
        steps: int | None = None,
        workdir: Path | str | None = None,
    ) -> CouplingConfig:
        """Return a copy with command-line overrides applied (None keeps the value).

        Raises
        ------
        ConfigError
            If a rank count or the number of steps is below 1.
        """
        problems = []
        for flag, value in (
            ("--model-ranks", model_ranks),
            ("--server-ranks", server_ranks),
            ("--steps", steps),
        ):
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                problems.append(f"{flag}: expected an integer >= 1, got {value!r}")
        if steps is not None and not self.oasis_only and not self.model.nemo:
            problems.append(
                f'--steps: model.kind = "{self.model.kind}": the launcher cannot set the length '
                "of this model's run (its own input files do); [model] steps is the number of "
                "steps to expect"
            )
        if steps is not None and self.oasis_only:
            problems.append(
                "--steps: the model couples through OASIS itself and its own namelist sets its "
                "length ([oasis] runtime_s is the coupled part)"
            )
        if (
            model_ranks is not None
            and self.oasis is not None
            and int(model_ranks) != len(self.oasis.model_boxes)
        ):
            problems.append(
                f"--model-ranks {model_ranks}: [oasis] describes {len(self.oasis.model_boxes)} "
                "model boxes (jpni x jpnj or boxes): change them there, and in the model's "
                "namelist"
            )
        if problems:
            raise ConfigError(problems, self.source)
        model = self.model
        if model_ranks is not None:
            model = dataclasses.replace(model, ranks=int(model_ranks))
        server = self.server
        if server_ranks is not None:
            server = dataclasses.replace(server, ranks=int(server_ranks))
        run = self.run
        if steps is not None:
            run = dataclasses.replace(run, steps=int(steps))
        if workdir is not None:
            run = dataclasses.replace(run, workdir=Path(workdir).resolve())
        return dataclasses.replace(self, model=model, server=server, run=run)


def load_config(path: Path | str) -> CouplingConfig:
    """Read and validate a ``coupling.toml`` (or a ``run_config.json`` written by the launcher).

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML/JSON, or does not follow the schema; the
        message names the file, the table path and the value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", path) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"not valid {kind}: {err}", path) from None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table at the top level, got {type(data).__name__}", path)
    return CouplingConfig.from_dict(data, source=path)


def write_config_json(config: CouplingConfig, path: Path) -> Path:
    """Write ``config.to_dict()`` as indented JSON to ``path``; return the path.

    Raises
    ------
    OSError
        If the file cannot be written.
    """
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


# --- validation -----------------------------------------------------------------------------


class _Parser(Reader):
    """Collects every problem of a document instead of stopping at the first."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__()
        self.base_dir = base_dir

    def path(self, value: str) -> Path:
        return (self.base_dir / Path(value).expanduser()).resolve()

    # -- tables

    def coupling(self, data: Mapping[str, Any]) -> CouplingConfig:
        self.known_keys(
            data,
            "",
            ("transport", "model", "server", "run", "diagnostics", "exchange", "oasis", "slurm"),
        )
        transport = self.choice(data, "", "transport", TRANSPORTS, "mpi")
        raw_oasis = self.sub_table(data, "", "oasis") if "oasis" in data else None
        oasis_only = raw_oasis is not None
        if oasis_only and transport != "oasis":
            self.note(
                "oasis",
                "an [oasis] table describes a model that couples through OASIS itself; "
                f'it needs transport = "oasis" (got {show(transport)})',
            )
        model = self.model(self.sub_table(data, "", "model"), oasis_only=oasis_only)
        server = self.server(self.sub_table(data, "", "server"))
        run = self.run(self.sub_table(data, "", "run"))
        if run.steps and not oasis_only and not model.nemo:
            self.note(
                "run.steps",
                f'model.kind = "{model.kind}": the launcher cannot set the length of this '
                "model's run (its own input files do); give the number of steps to expect as "
                "[model] steps",
                run.steps,
            )
        diagnostics = self.diagnostics(self.sub_table(data, "", "diagnostics"))
        slurm = self.slurm(self.sub_table(data, "", "slurm"))
        exchanges = [self.exchange(raw, where) for where, raw in self.tables(data, "", "exchange")]
        exchanges = self.unique_names(exchanges)
        self.check_received_fields(exchanges)
        for index, ex in enumerate(exchanges):
            if transport == "oasis" and (ex.train is not None or ex.swap):
                self.note(
                    f"exchange[{index}]",
                    'online training and swaps need transport = "mpi" (the OASIS transport '
                    "moves the closure inputs only)",
                )
        if transport == "oasis" and schedules_differ(exchanges):
            self.note(
                "exchange",
                'transport = "oasis" runs every exchange on one schedule: the exchanges differ '
                f'in every or lag ({_schedules(exchanges)}); use transport = "mpi"',
            )
        if transport == "oasis" and not oasis_only and not exchanges:
            self.note(
                "",
                'transport = "oasis" needs [[exchange]] blocks (a model linking the mlbridge '
                "library, built with OASIS3-MCT) or an [oasis] table (a model that couples "
                "through OASIS itself)",
            )
        oasis, namcouple = None, None
        if raw_oasis is not None:
            if exchanges:
                self.note(
                    "exchange",
                    "[[exchange]] blocks and an [oasis] table: with [oasis] the model couples "
                    "through OASIS itself and the table names the closure; remove one",
                )
            if run.steps:
                self.note(
                    "run.steps",
                    "the model couples through OASIS itself and its own namelist sets its "
                    "length (set [oasis] runtime_s and the model's namelist instead)",
                    run.steps,
                )
            oasis, namcouple = self.oasis(raw_oasis, model, server)
        if raw_oasis is None or oasis is not None:  # else the [oasis] table's problems suffice
            self.check_diagnostic_fields(diagnostics, exchanges, oasis)
        return CouplingConfig(
            transport=transport,
            model=model,
            server=server,
            run=run,
            exchanges=tuple(exchanges),
            diagnostics=diagnostics,
            oasis=oasis,
            namcouple=namcouple,
            slurm=slurm,
        )

    def oasis(
        self, data: Mapping[str, Any], model: ModelConfig, server: ServerConfig
    ) -> tuple[OasisCouplingConfig | None, Path | None]:
        """The ``[oasis]`` table (device, threads: ``[server]``; boundary: ``[model]``)."""
        table = dict(data)
        for key, where in FROM_ELSEWHERE.items():
            if key in table:
                self.note(f"oasis.{key}", f"set it in [{where}], not in [oasis]")
                del table[key]
        namcouple = None
        if "namcouple" in table:
            value = table.pop("namcouple")
            if not isinstance(value, str):
                self.bad("oasis.namcouple", value, "a file path (empty: generated)")
            elif value.strip():
                namcouple = self.path(value)
        table.update(device=server.device, threads=server.threads, boundary=model.boundary)
        try:
            oasis = OasisCouplingConfig.from_mapping(table)
        except OasisConfigError as err:
            for problem in err.problems:
                self.note("", problem)
            return None, namcouple
        if len(oasis.model_boxes) != model.ranks:
            self.note(
                "model.ranks",
                f"expected one rank per model box, but [oasis] describes {len(oasis.model_boxes)} "
                "(jpni x jpnj, or boxes)",
                model.ranks,
            )
        return oasis, namcouple

    def model(self, data: Mapping[str, Any], *, oasis_only: bool = False) -> ModelConfig:
        where = "model"
        self.known_keys(data, where, MODEL_KEYS)
        exe = self.string(data, where, "executable", "toy_nemo", nonempty=True)
        if "/" in exe:
            exe = str(self.path(exe))
        named = "namelist_cfg" in data or "namelist_ref" in data
        kind = "nemo" if named and not oasis_only else "generic"
        kind = self.choice(data, where, "kind", MODEL_KINDS, kind)
        if oasis_only:
            if "kind" in data:
                self.note("model.kind", "not used with an [oasis] table (remove it)", kind)
            # the model's own namelists, if any: copied into the run directory, never read
            optional = {"expected": "a file path (empty: none)"}
            cfg = self.string(data, where, "namelist_cfg", "", **optional)
            ref = self.string(data, where, "namelist_ref", "", **optional)
            namelist_cfg = self.path(cfg) if cfg.strip() else None
            namelist_ref = self.path(ref) if ref.strip() else None
        elif kind == "nemo":
            cfg = self.string(data, where, "namelist_cfg", "namelist_cfg", nonempty=True)
            ref = self.string(
                data, where, "namelist_ref", "", expected="a string (empty: the toy's)"
            )
            namelist_cfg = self.path(cfg)
            namelist_ref = self.path(ref) if ref.strip() else TOY_NAMELIST_REF
            for key, source in (("steps", "nn_it000, nn_itend"), ("nx", "&namusr_def"),
                                ("ny", "&namusr_def")):  # fmt: skip
                if key in data:
                    self.note(
                        f"model.{key}",
                        f'with kind = "nemo" the namelist gives it ({source}); remove it, or '
                        'set kind = "generic"',
                        data[key],
                    )
        else:
            namelist_cfg = namelist_ref = None
            for key in ("namelist_cfg", "namelist_ref"):
                if key in data:
                    self.note(
                        f"model.{key}",
                        'kind = "generic" reads no namelist: stage the model\'s input files '
                        'with stage = [...] (or set kind = "nemo")',
                        data[key],
                    )
        stage = tuple(self.path(p) for p in self.strings(data, where, "stage"))
        link = tuple(self.path(p) for p in self.strings(data, where, "link"))
        self.check_staged(stage, link, nemo=kind == "nemo" and not oasis_only)
        generic = kind == "generic" and not oasis_only
        return ModelConfig(
            executable=exe,
            ranks=self.integer(data, where, "ranks", 1),
            namelist_cfg=namelist_cfg,
            namelist_ref=namelist_ref,
            boundary=self.choice(data, where, "boundary", BOUNDARIES, "closed"),
            kind=kind,
            args=self.strings(data, where, "args", nonempty=False),
            stage=stage,
            link=link,
            env=self.string_table(data, where, "env"),
            steps=self.integer(data, where, "steps", 0, minimum=0) if generic else 0,
            nx=self.integer(data, where, "nx", 0, minimum=0) if generic else 0,
            ny=self.integer(data, where, "ny", 0, minimum=0) if generic else 0,
            vectors=self.strings(data, where, "vectors"),
        )

    def check_staged(self, stage: tuple[Path, ...], link: tuple[Path, ...], *, nemo: bool) -> None:
        """Staged names are unique and not those the launcher or the servers write."""
        taken: dict[str, str] = {}
        if nemo:  # the launcher writes the run's namelists
            taken.update(namelist_ref="model.namelist_ref", namelist_cfg="model.namelist_cfg")
        for key, items in (("stage", stage), ("link", link)):
            for index, item in enumerate(items):
                here = f"model.{key}[{index}]"
                if item.name in RUN_DIR_NAMES:
                    self.note(here, f"{item.name!r} is a file mlbridge writes in the run directory",
                              str(item))  # fmt: skip
                elif item.name in taken:
                    self.note(here, f"{item.name!r} is already staged by {taken[item.name]}",
                              str(item))  # fmt: skip
                taken.setdefault(item.name, here)

    def server(self, data: Mapping[str, Any]) -> ServerConfig:
        where = "server"
        self.known_keys(
            data, where, ("ranks", "device", "devices", "threads", "timeout_s", "registry")
        )
        expected = "one of " + ", ".join(f'"{d}"' for d in DEVICES) + ' or "cuda:N"'
        device = self.get(data, where, "device", str, "cpu", expected=expected, check=_is_device)
        devices = self.strings(data, where, "devices", expected='an array of "cpu" or "cuda:N"')
        for index, name in enumerate(devices):
            if not _is_device(name) or name == "auto":
                self.bad(f"server.devices[{index}]", name, '"cpu", "cuda" or "cuda:N"')
        registry = self.string(
            data, where, "registry", "", expected="a directory path (empty: the default)"
        )
        return ServerConfig(
            ranks=self.integer(data, where, "ranks", 1),
            device=device,
            devices=devices,
            threads=self.integer(data, where, "threads", 1),
            timeout_s=self.get(
                data,
                where,
                "timeout_s",
                (int, float),
                120.0,
                expected="a number of seconds > 0",
                check=lambda v: v > 0,
            ),
            registry=self.path(registry) if registry.strip() else None,
        )

    def run(self, data: Mapping[str, Any]) -> RunConfig:
        where = "run"
        self.known_keys(data, where, ("workdir", "steps"))
        workdir = self.string(data, where, "workdir", "runs", nonempty=True)
        steps = self.get(
            data,
            where,
            "steps",
            int,
            0,
            expected="an integer >= 0 (0: the namelist's)",
            check=lambda v: v >= 0,
        )
        return RunConfig(workdir=self.path(workdir), steps=steps)

    def slurm(self, data: Mapping[str, Any]) -> SlurmConfig:
        where = "slurm"
        fields = [f.name for f in dataclasses.fields(SlurmConfig)]
        self.known_keys(data, where, fields)

        def args(key: str) -> tuple[str, ...]:
            value = self.get(
                data,
                where,
                key,
                list,
                [],
                expected="a list of options (strings)",
                check=lambda v: all(isinstance(a, str) and a.strip() for a in v),
            )
            return tuple(value)

        return SlurmConfig(
            partition=self.string(data, where, "partition", ""),
            nodes=self.integer(data, where, "nodes", 1),
            time=self.get(
                data,
                where,
                "time",
                str,
                SlurmConfig.time,
                expected="a Slurm time limit (MM, HH:MM:SS, D-HH, D-HH:MM:SS)",
                check=lambda v: SLURM_TIME.match(v.strip()),
            ).strip(),
            gpus_per_node=self.integer(data, where, "gpus_per_node", 0, minimum=0),
            account=self.string(data, where, "account", ""),
            server_nodes=self.integer(data, where, "server_nodes", 0, minimum=0),
            server_partition=self.string(data, where, "server_partition", ""),
            srun_args=args("srun_args"),
            sbatch_args=args("sbatch_args"),
        )

    def diagnostics(self, data: Mapping[str, Any]) -> DiagnosticsConfig:
        where = "diagnostics"
        self.known_keys(data, where, ("timing", "netcdf", "every", "fields"))
        fields = self.get(
            data,
            where,
            "fields",
            list,
            [],
            expected="an array of model field names",
            check=lambda v: all(isinstance(x, str) for x in v),
        )
        return DiagnosticsConfig(
            timing=self.get(data, where, "timing", bool, True, expected="true or false"),
            netcdf=self.get(data, where, "netcdf", bool, False, expected="true or false"),
            every=self.integer(data, where, "every", 1),
            fields=tuple(fields),
        )

    def exchange(self, data: Mapping[str, Any], where: str) -> ExchangeConfig:
        self.known_keys(
            data,
            where,
            (
                "name",
                "closure",
                "inputs",
                "outputs",
                "every",
                "lag",
                "on_nan",
                "max_abs",
                "params",
                "sha256",
                "combine",
                "train",
                "swap",
            ),
        )
        closure = self.string(
            data,
            where,
            "closure",
            nonempty=True,
            expected="a closure name or registry reference name[@version]",
        )
        mapping = {"expected": "a table of closure name -> model field name"}
        inputs = self.names(data, where, "inputs", **mapping)
        outputs = self.names(data, where, "outputs", **mapping)
        name = self.string(data, where, "name", "", nonempty=True)
        sha256 = self.get(
            data,
            where,
            "sha256",
            str,
            "",
            expected="64 hexadecimal digits (empty: any)",
            check=lambda v: v == "" or re.fullmatch(r"[0-9a-f]{64}", v.lower()) is not None,
        )
        return ExchangeConfig(
            name=name,  # empty: given a default by unique_names
            closure=closure or "",
            inputs=inputs,
            outputs=outputs,
            every=self.integer(data, where, "every", 1),
            lag=self.choice(data, where, "lag", LAGS, 0),
            on_nan=self.choice(data, where, "on_nan", ON_NAN, "abort"),
            params=dict(
                self.get(
                    data,
                    where,
                    "params",
                    dict,
                    {},
                    expected="a table of JSON-like values (no dates)",
                    check=_json_like,
                )
            ),
            sha256=sha256.lower(),
            max_abs=self.max_abs(data, where, outputs),
            combine=self.choice(data, where, "combine", COMBINE, "refuse"),
            train=self.train(data, where, inputs, outputs),
            swap=self.swaps(data, where),
        )

    def swaps(self, data: Mapping[str, Any], where: str) -> tuple[SwapConfig, ...]:
        """``swap = [{ step = k, closure = "name@v" }, ...]``: steps in increasing order."""
        found: list[SwapConfig] = []
        for path, table in self.tables(data, where, "swap"):
            self.known_keys(table, path, ("step", "closure", "sha256"))
            step = self.integer(table, path, "step", minimum=0)
            closure = self.string(
                table, path, "closure", nonempty=True, expected="a registry reference name@version"
            )
            sha256 = self.get(
                table, path, "sha256", str, "", expected="64 hexadecimal digits (empty: any)",
                check=lambda v: v == "" or re.fullmatch(r"[0-9a-f]{64}", v.lower()) is not None,
            )  # fmt: skip
            if step is None or closure is None:
                continue
            if found and step <= found[-1].step:
                self.note(join(path, "step"), f"must be after the step of the swap before it "
                          f"({found[-1].step})", step)  # fmt: skip
                continue
            found.append(SwapConfig(step, closure, sha256.lower()))
        if found and "train" in data:
            self.note(
                join(where, "swap"),
                "an exchange that trains online cannot also swap its closure (its versions are "
                "written to the registry; swap another exchange, or start a run from a version)",
            )
        return tuple(found)

    def train(
        self,
        data: Mapping[str, Any],
        where: str,
        inputs: Mapping[str, str],
        outputs: Mapping[str, str],
    ) -> TrainConfig | None:
        """``train = { target = ..., ... }``: online training of the exchange's closure."""
        if "train" not in data:
            return None
        table = self.sub_table(data, where, "train")
        here = join(where, "train")
        self.known_keys(table, here, [f.name for f in dataclasses.fields(TrainConfig)])
        target = self.targets(table, here, outputs)
        budget = self.get(
            table, here, "budget_s", (int, float), math.inf,
            expected="a number of seconds > 0 (inf: no limit)",
            check=lambda v: v > 0 and not math.isnan(v),
        )  # fmt: skip
        return TrainConfig(
            target=target,
            optimizer=self.choice(table, here, "optimizer", OPTIMIZERS, "adam"),
            lr=self.number(table, here, "lr", 1.0e-3, expected="a number > 0", check=_positive),
            batch=self.integer(table, here, "batch", 4),
            loss=self.choice(table, here, "loss", LOSSES, "mse"),
            steps_per_exchange=self.integer(table, here, "steps_per_exchange", 1, minimum=0),
            buffer=self.integer(table, here, "buffer", 64),
            budget_s=budget,
            seed=self.integer(table, here, "seed", 0, minimum=0),
            hold_out=self.integer(table, here, "hold_out", 0, minimum=0),
            save_every=self.integer(table, here, "save_every", 0, minimum=0),
            save_as=self.get(
                table, here, "save_as", str, "",
                expected="a registry name (letters, digits, . _ -; empty: no versions)",
                check=lambda v: v == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v),
            ),
            resume=str(self.path(resume)) if (resume := self.string(
                table, here, "resume", "", expected="a folder (RUN/online of an earlier run)"
            )) else "",
            target_plus_output=self.get(
                table, here, "target_plus_output", bool, False, expected="true or false"
            ),
        )  # fmt: skip

    def targets(
        self, table: Mapping[str, Any], where: str, outputs: Mapping[str, str]
    ) -> dict[str, str]:
        """``target``: a model field (the exchange's one output learns it), or a table of
        closure output -> model field; every closure output needs one."""
        raw = table.get("target")
        path = join(where, "target")
        if raw is None:
            self.missing(
                path, "a model field the model sends, or a table of closure output -> model field"
            )
            return {}
        if isinstance(raw, str):
            if not raw.strip():
                self.bad(path, raw, "a model field name")
                return {}
            if len(outputs) != 1:
                self.note(
                    path,
                    f"one target for {len(outputs)} closure outputs ({', '.join(outputs)}): give "
                    "a table of closure output -> model field",
                    raw,
                )
                return {}
            return {next(iter(outputs)): raw}
        found = self.names(
            table, where, "target", expected="a table of closure output -> model field"
        )
        for output in list(found):
            if output not in outputs:
                self.note(
                    join(path, output),
                    f"not a closure output of this exchange (its outputs: {', '.join(outputs)})",
                    found.pop(output),
                )
        for output in outputs:
            if found and output not in found:
                self.note(path, f"closure output {output!r} has no target (each output learns one)")
        received = set(outputs.values())
        for output, model_field in found.items():
            if model_field in received:
                self.note(
                    join(path, output),
                    "a field the model receives cannot be a target (the target is a field the "
                    "model sends)",
                    model_field,
                )
        return found

    def max_abs(
        self, data: Mapping[str, Any], where: str, outputs: Mapping[str, str]
    ) -> dict[str, float]:
        """``max_abs``: a bound for every output, or a table by closure output or model field.

        Returns the bounds by closure output name.
        """
        expected = (
            "a number > 0 (every output), or a table of closure output or model field -> "
            "number > 0 (inf: no bound)"
        )
        raw = data.get("max_abs", {})
        if not isinstance(raw, Mapping):
            if not _is_bound(raw):
                self.bad(join(where, "max_abs"), raw, expected)
                return {}
            return dict.fromkeys(outputs, float(raw))
        by_field = {model_field: output for output, model_field in outputs.items()}
        bounds: dict[str, float] = {}
        for key, value in raw.items():
            path = join(join(where, "max_abs"), key)
            output = key if key in outputs else by_field.get(key)
            if output is None:
                known = ", ".join([*outputs, *by_field]) or "none"
                self.note(
                    path,
                    f"names no output of this exchange (its closure outputs and model fields: "
                    f"{known})",
                    value,
                )
            elif output in bounds:
                self.note(path, f"closure output {output!r} is bounded twice", value)
            elif not _is_bound(value):
                self.bad(path, value, "a number > 0 (inf: no bound)")
            else:
                bounds[output] = float(value)
        return bounds

    def unique_names(self, exchanges: list[ExchangeConfig]) -> list[ExchangeConfig]:
        """Refuse repeated explicit names; name the others after their closure (``_2``...)."""
        taken: dict[str, int] = {}
        for index, ex in enumerate(exchanges):
            if not ex.name:
                continue
            if ex.name in taken:
                self.note(
                    f"exchange[{index}].name",
                    f"already the name of exchange[{taken[ex.name]}] (give each exchange its "
                    "own name)",
                    ex.name,
                )
            taken.setdefault(ex.name, index)
        named = []
        for index, ex in enumerate(exchanges):
            if not ex.name:
                base = ex.closure.split("@", 1)[0] or f"exchange{index}"
                name, n = base, 1
                while name in taken:
                    n += 1
                    name = f"{base}_{n}"
                taken[name] = index
                ex = dataclasses.replace(ex, name=name)
            named.append(ex)
        return named

    def check_diagnostic_fields(
        self,
        diagnostics: DiagnosticsConfig,
        exchanges: list[ExchangeConfig],
        oasis: OasisCouplingConfig | None,
    ) -> None:
        """``diagnostics.fields`` names model fields that an exchange moves."""
        if oasis is not None:
            known = [*oasis.inputs, *oasis.outputs.values()]
        else:
            known = [f for ex in exchanges for f in (*ex.inputs.values(), *ex.outputs.values())]
        known = list(dict.fromkeys(known))
        for index, name in enumerate(diagnostics.fields):
            if name not in known:
                self.note(
                    f"diagnostics.fields[{index}]",
                    "not a model field of any exchange (the exchanged model fields: "
                    f"{', '.join(known) or 'none'})",
                    name,
                )

    def check_received_fields(self, exchanges: list[ExchangeConfig]) -> None:
        """One closure output per model field, unless the exchanges writing it all say
        ``combine = "add"`` (one output per model field within an exchange)."""
        receiver: dict[str, tuple[str, int]] = {}
        for index, ex in enumerate(exchanges):
            for output, model_field in ex.outputs.items():
                here = f"exchange[{index}].outputs.{output}"
                if model_field not in receiver:
                    receiver[model_field] = (here, index)
                    continue
                there, other = receiver[model_field]
                if other == index:
                    why = "an exchange writes a model field from one closure output only"
                elif ex.combine == "add" and exchanges[other].combine == "add":
                    continue
                else:
                    why = (
                        f'set combine = "add" in exchange[{other}] and exchange[{index}] to add '
                        "the two outputs, or write another model field"
                    )
                self.note(
                    here,
                    f"model field {model_field!r} is already received by {there} ({why})",
                    model_field,
                )


def _schedules(exchanges: Sequence[ExchangeConfig]) -> str:
    """``exchange[0] every 1 lag 1, exchange[1] every 3 lag 0``."""
    return ", ".join(
        f"exchange[{i}] every {ex.every} lag {ex.lag}" for i, ex in enumerate(exchanges)
    )


def _positive(value: float) -> bool:
    return value > 0


def _is_device(value: str) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return value in DEVICES or re.fullmatch(r"cuda:\d+", value) is not None


def _is_bound(value: Any) -> bool:
    """A max_abs: a number > 0 (``inf`` included; NaN and booleans not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value > 0 and not math.isnan(value)


def _json_like(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
