"""Online training: closures that keep learning from targets the model sends.

An exchange with ``train = { target = ..., ... }`` (:class:`bridge.config.coupling.TrainConfig`)
names a registry closure whose artifact is a trainable torch module (format ``state_dict`` or
``torchscript``). On every server rank

1. :class:`OnlineClosure` runs the current network as the exchange's closure (the engine calls
   it like any registry closure: manifest normalisation, outputs zero on land) and keeps the
   normalised inputs of its last call;
2. after the outputs of an exchange went to the model (:func:`bridge.server.engine.
   serve_exchanges` calls :meth:`Learner.after_exchange`), the :class:`Learner` puts the
   (inputs, targets) block of that exchange in its replay buffer (the targets: the model fields
   ``train.target`` on the block's interior, normalised with the output's manifest scale), then
   runs ``steps_per_exchange`` optimizer steps on batches drawn from the buffer, within
   ``budget_s``. The model is meanwhile in its own step: training costs the model nothing as long
   as it fits in that gap, and at most ``budget_s`` (plus one optimizer step) when it does not;
3. with M server ranks the gradients are summed over the servers' communicator (one
   ``Allreduce`` of the flattened gradients and of the ocean points counted), so the loss is the
   mean over the ocean points of the whole grid: M ranks train one model, the same one as a
   single rank given the same data order, to float round-off (:func:`masked_loss_sum`).

Determinism: the draws from the buffer come from a generator seeded by ``train.seed`` on every
rank; with ``budget_s = inf`` the number of steps is fixed, so a run is repeatable on one machine.
With a finite budget the steps done depend on the clock (the count is agreed over the ranks).

The server's figures (training seconds per exchange, steps, loss) go to ``timing.json``
under ``training`` (:func:`add_training_to_timing`); the weights of each trained exchange to
``RUN/online/<exchange>.pt`` (a state_dict: tensors only, loaded with ``weights_only=True``).
torch is imported inside functions only.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.closures.base import Closure, ClosureSpec
from bridge.config.coupling import ExchangeConfig, TrainConfig, exchange_name
from bridge.registry.manifest import Manifest

if TYPE_CHECKING:
    import torch

    from bridge.server.engine import Block, Engine

ONLINE_DIR = "online"
"""Folder of the run directory with the trained weights (``<exchange>.pt``)."""


class TrainingError(RuntimeError):
    """An exchange cannot be trained online; the message says which and why."""


# --------------------------------------------------------------------------------------------
# the network as a closure
# --------------------------------------------------------------------------------------------


class OnlineClosure:
    """A trainable torch module as a closure, with its manifest's normalisation.

    Parameters
    ----------
    module
        The network: ``(levels, inputs, ny + 2h, nx + 2h) -> (levels, outputs, ny, nx)`` in
        normalised units.
    manifest
        Its manifest (spec, normalisation of each input and output, dtype).
    device
        Where it runs and trains (``cpu``, ``cuda``, ``cuda:N``).

    Attributes
    ----------
    last_inputs
        The normalised input tensor of the last call, ``(nz, C, ny + 2h, nx + 2h)`` on the device
        (a copy: the transport's buffers change at the next exchange).
    last_outputs
        The network's output of the last call, normalised, ``(nz, Cout, ny, nx)`` on the device.
    """

    def __init__(self, module: Any, manifest: Manifest, device: str = "cpu") -> None:
        import torch

        self.spec: ClosureSpec = manifest.spec
        self.manifest = manifest
        self.device = torch.device(device)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[manifest.dtype]
        self.module = module.to(device=self.device, dtype=self.dtype)
        self.module.train(False)
        for p in self.module.parameters():
            p.requires_grad_(True)
        self.in_norm = [(e.norm.offset, e.norm.scale) for e in manifest.inputs]
        self.out_norm = [(e.norm.offset, e.norm.scale) for e in manifest.outputs]
        self.last_inputs: torch.Tensor | None = None
        self.last_outputs: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"OnlineClosure({self.manifest.ref}, device={self.device})"

    def normalised_inputs(self, inputs: Mapping[str, np.ndarray]) -> torch.Tensor:
        """The inputs as the network sees them: ``(nz, C, ny + 2h, nx + 2h)``."""
        import torch

        names = self.spec.input_names
        nz = max(np.shape(inputs[n])[0] for n in names)
        planes = []
        for name, (offset, scale) in zip(names, self.in_norm, strict=True):
            a = torch.as_tensor(np.asarray(inputs[name]), device=self.device).to(self.dtype)
            planes.append(((a - offset) / scale).expand(nz, *a.shape[1:]))
        return torch.stack(planes, dim=1).contiguous()

    def __call__(
        self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The outputs of the current network, in physical units, zero where ``mask`` is 0."""
        import torch

        x = self.normalised_inputs(inputs)
        self.last_inputs = x
        with torch.no_grad():
            y = self.module(x)
        self.last_outputs = y
        h = self.spec.halo
        ny, nx = x.shape[-2] - 2 * h, x.shape[-1] - 2 * h
        if tuple(y.shape[-2:]) != (ny, nx):
            raise TrainingError(
                f"closure {self.manifest.ref}: the network returns {tuple(y.shape)}, expected "
                f"(levels, {len(self.spec.output_names)}, {ny}, {nx}) for halo {h}"
            )
        out = {}
        land = None
        if mask is not None:
            m = np.asarray(mask)
            if m.shape[-2:] == (ny + 2 * h, nx + 2 * h) and h > 0:
                m = m[..., h : h + ny, h : h + nx]
            land = m == 0
        for c, (name, (offset, scale)) in enumerate(
            zip(self.spec.output_names, self.out_norm, strict=True)
        ):
            a = (y[:, c] * scale + offset).to(torch.float64).cpu().numpy()
            if land is not None:
                a[..., land] = 0.0
            out[name] = np.ascontiguousarray(a)
        return out


def online_closure(closure: Closure, manifest: Manifest, device: str) -> OnlineClosure:
    """The trainable form of registry closure ``closure`` (its torch module).

    Raises
    ------
    TrainingError
        If the closure has no torch module with parameters (an analytic closure, a
        ``torch.export`` program, a Python closure).
    """
    import torch

    module = getattr(closure, "module", None)
    if not isinstance(module, torch.nn.Module) or not any(True for _ in module.parameters()):
        raise TrainingError(
            f"closure {manifest.ref} (format {manifest.format!r}) cannot be trained online: it "
            "needs a torch module with parameters (register a 'state_dict' or 'torchscript' "
            "artifact)"
        )
    return OnlineClosure(module, manifest, device)


# --------------------------------------------------------------------------------------------
# the loss and the data-parallel step
# --------------------------------------------------------------------------------------------


def masked_loss_sum(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str
) -> torch.Tensor:
    """Sum over all points of ``weight * (prediction - target)**2`` (``mse``) or ``|..|``
    (``mae``); divided by the ocean points of every rank it is the mean loss."""
    diff = prediction - target
    per_point = diff * diff if kind == "mse" else diff.abs()
    return (per_point * weight).sum()


class GradientAverager:
    """Sums gradients and point counts over the server ranks (nothing to do on one rank).

    Parameters
    ----------
    comm
        The servers' communicator (mpi4py), or None for a single rank.
    """

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None

    def reduce(self, params: Sequence[torch.Tensor], count: float) -> float:
        """Replace each gradient by its sum over the ranks, divided by the total ``count``;
        return the total."""
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(torch.float64).cpu().numpy()
        flat = np.append(flat, count)
        if self.comm is not None:
            from mpi4py import MPI

            total = np.empty_like(flat)
            self.comm.Allreduce(flat, total, op=MPI.SUM)
            flat = total
        n = max(float(flat[-1]), 1.0)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            size = g.numel()
            chunk = torch.from_numpy(flat[offset : offset + size] / n).reshape(g.shape)
            p.grad = chunk.to(device=p.device, dtype=p.dtype)
            offset += size
        return n

    def all_agree(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (the budget: all ranks take the same steps)."""
        if self.comm is None:
            return flag
        from mpi4py import MPI

        return bool(self.comm.allreduce(int(flag), op=MPI.MIN))

    def total(self, value: float) -> float:
        """``value`` summed over the ranks."""
        if self.comm is None:
            return value
        from mpi4py import MPI

        return float(self.comm.allreduce(float(value), op=MPI.SUM))


@dataclass
class Sample:
    """One exchange in the replay buffer: its step, inputs, targets and weights."""

    kt: int
    inputs: Any  # torch.Tensor (nz, C, ny + 2h, nx + 2h), normalised
    target: Any  # torch.Tensor (nz, Cout, ny, nx), normalised
    weight: Any  # torch.Tensor (1, Cout, ny, nx): 1 ocean, 0 land (the output's point)


@dataclass
class TrainingRecord:
    """What one server rank's learner did (gathered by server rank 0)."""

    steps: list[int] = field(default_factory=list)  # exchange steps trained after
    train_s: list[float] = field(default_factory=list)  # seconds of training after each
    optimizer_steps: list[int] = field(default_factory=list)  # steps done after each
    loss: list[float] = field(default_factory=list)  # mean loss of the last step (all ranks)
    held_out_loss: list[float] = field(default_factory=list)


class Learner:
    """The replay buffer and the optimizer of one trained exchange on one server rank.

    Parameters
    ----------
    exchange
        The exchange (its ``train`` table, ``outputs``).
    closure
        Its :class:`OnlineClosure`.
    block
        This server rank's block (the targets are read on its interior).
    points
        The C-grid point of each model field (the loss counts each output's ocean points).
    comm
        The servers' communicator (None: one rank).
    """

    def __init__(
        self,
        exchange: ExchangeConfig,
        closure: OnlineClosure,
        block: Block,
        points: Mapping[str, str] | None = None,
        comm: Any = None,
    ) -> None:
        import torch

        assert exchange.train is not None
        self.exchange = exchange
        self.name = exchange_name(exchange)
        self.config: TrainConfig = exchange.train
        self.closure = closure
        self.block = block
        self.reducer = GradientAverager(comm)
        self.params = [p for p in closure.module.parameters() if p.requires_grad]
        optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[self.config.optimizer]
        self.optimizer = optimizer(self.params, lr=self.config.lr)
        self.rng = np.random.default_rng(self.config.seed)
        self.buffer: deque[Sample] = deque(maxlen=self.config.buffer)
        self.held_out: deque[Sample] = deque(maxlen=self.config.buffer)
        self.exchanges_seen = 0
        self.optimizer_steps = 0
        self.record = TrainingRecord()
        self.weight = self._weights(points or {})
        self.first_kt: int | None = None  # the steps of the exchanges trained on
        self.last_kt: int | None = None
        self.saved_at = 0  # exchanges seen when the last version was written
        self.versions: list[str] = []  # the registry versions written (server rank 0)
        # target_plus_output: the network's outputs of the last lag + 1 exchanges (normalised);
        # the model applies the oldest of them until the next exchange
        self.outputs_held: deque[torch.Tensor] = deque(maxlen=exchange.lag + 1)

    def _weights(self, points: Mapping[str, str]) -> torch.Tensor:
        """``(1, Cout, ny, nx)``: 1 on the ocean points of each output's own grid point."""
        import torch

        h, box = self.block.halo, self.block.box
        t_mask = self.block.mask[0, h : h + box.ny, h : h + box.nx]
        planes = []
        for output in self.closure.spec.output_names:
            point = points.get(self.exchange.outputs.get(output, ""), "T")
            masks = self.block.point_masks
            m = masks[point] if point != "T" and masks is not None else t_mask
            planes.append(np.asarray(m != 0, dtype=np.float64))
        w = torch.from_numpy(np.stack(planes)[None])
        return w.to(device=self.closure.device, dtype=self.closure.dtype)

    def _targets(self, blocks: Mapping[str, np.ndarray]) -> torch.Tensor:
        """The normalised targets on the block's interior, ``(nz, Cout, ny, nx)``."""
        import torch

        h, box = self.block.halo, self.block.box
        planes = []
        for output, (offset, scale) in zip(
            self.closure.spec.output_names, self.closure.out_norm, strict=True
        ):
            field_name = self.config.target[output]
            a = np.asarray(blocks[field_name][:, h : h + box.ny, h : h + box.nx])
            t = torch.as_tensor(a, device=self.closure.device).to(self.closure.dtype)
            planes.append((t - offset) / scale)
        return torch.stack(planes, dim=1).contiguous()

    def applied_output(self) -> torch.Tensor | None:
        """The closure output (normalised) the model applies from the last exchange to the next
        one: the output of that exchange with ``lag = 0``, of the one before with ``lag = 1``
        (None: none yet, the model adds zero)."""
        lag = self.exchange.lag
        return self.outputs_held[0] if len(self.outputs_held) > lag else None

    def total_increment(self, target: torch.Tensor) -> torch.Tensor:
        """``target`` (normalised) plus the closure output the model applied in the step the
        target comes from, in the output's normalised units.

        The model sends at an exchange the target of the step before it (the toy: the nudging
        tendency of step ``kt - 1``), a step that ran with the output of an earlier exchange
        (:meth:`applied_output`, called before this exchange's output is kept). In physical
        units the total is ``t + c`` with ``c = s y + o`` (``y`` the network's output, ``o``
        and ``s`` the output's offset and scale); normalised, ``(t + c - o) / s = (t - o) / s
        + y + o / s``. Before any output the model added zero: the target alone.
        """
        import torch

        applied = self.applied_output()
        if applied is None:
            return target
        shift = torch.tensor(
            [o / s for o, s in self.closure.out_norm], device=target.device, dtype=target.dtype
        )
        return target + applied + shift[None, :, None, None]

    # -- one exchange

    def after_exchange(self, kt: int, blocks: Mapping[str, np.ndarray], ran: bool) -> None:
        """Keep the exchange of step ``kt`` (when the closure ran at it), then train."""
        clock = time.perf_counter
        t0 = clock()
        if ran and self.closure.last_inputs is not None:
            target = self._targets(blocks)
            if self.config.target_plus_output:
                target = self.total_increment(target)
                if self.closure.last_outputs is not None:
                    self.outputs_held.append(self.closure.last_outputs)
            sample = Sample(kt, self.closure.last_inputs, target, self.weight)
            self.exchanges_seen += 1
            self.first_kt = kt if self.first_kt is None else self.first_kt
            self.last_kt = kt
            hold = self.config.hold_out
            if hold and self.exchanges_seen % hold == 0:
                self.held_out.append(sample)
            else:
                self.buffer.append(sample)
        done, loss = self.train(t0)
        self.record.steps.append(kt)
        self.record.optimizer_steps.append(done)
        self.record.loss.append(loss)
        self.record.train_s.append(clock() - t0)

    def train(self, t0: float) -> tuple[int, float]:
        """Up to ``steps_per_exchange`` optimizer steps within ``budget_s`` of ``t0``; the steps
        done and the last step's mean loss (NaN: none)."""
        clock = time.perf_counter
        budget = self.config.budget_s
        done, loss, last = 0, math.nan, 0.0
        for _ in range(self.config.steps_per_exchange if self.buffer else 0):
            if math.isfinite(budget):
                fits = clock() - t0 + last <= budget
                if not self.reducer.all_agree(fits):
                    break
            s0 = clock()
            loss = self.step()
            last = clock() - s0
            done += 1
        return done, loss

    def step(self) -> float:
        """One optimizer step on a batch drawn from the buffer; the batch's mean loss."""
        n = len(self.buffer)
        picks = self.rng.choice(n, size=min(self.config.batch, n), replace=False)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        count = 0.0
        for index in sorted(int(i) for i in picks):
            sample = self.buffer[index]
            loss = masked_loss_sum(
                self.closure.module(sample.inputs), sample.target, sample.weight, self.config.loss
            )
            loss.backward()
            total += float(loss.detach())
            count += float(sample.weight.sum()) * sample.target.shape[0]
        n_points = self.reducer.reduce(self.params, count)
        self.optimizer.step()
        self.optimizer_steps += 1
        return self.reducer.total(total) / n_points

    def held_out_loss(self) -> float:
        """The mean loss of the current network on the held-out exchanges (all ranks; NaN:
        none held out)."""
        import torch

        total, count = 0.0, 0.0
        with torch.no_grad():
            for sample in self.held_out:
                pred = self.closure.module(sample.inputs)
                total += float(masked_loss_sum(pred, sample.target, sample.weight, "mse"))
                count += float(sample.weight.sum()) * sample.target.shape[0]
        count = self.reducer.total(count)
        return self.reducer.total(total) / count if count else math.nan

    def summary(self) -> dict[str, Any]:
        """This rank's figures (gathered by server rank 0)."""
        r = self.record
        return {
            "steps": list(r.steps),
            "train_s": list(r.train_s),
            "optimizer_steps": list(r.optimizer_steps),
            "loss": list(r.loss),
            "held_out_mse": self.held_out_loss(),
            "buffer": len(self.buffer),
            "held_out": len(self.held_out),
            "versions": list(self.versions),
        }

    # -- restarts

    def save_state(self, path: Path) -> None:
        """Everything a restarted run needs to continue as if uninterrupted: weights, optimizer
        state, the buffer and held-out exchanges, the generator of the draws, the counters
        (tensors, numbers and strings only: read back with ``weights_only=True``)."""
        import torch

        def rows(samples: Sequence[Sample]) -> list[dict[str, Any]]:
            return [
                {"kt": x.kt, "inputs": x.inputs.cpu(), "target": x.target.cpu()} for x in samples
            ]

        state = {
            "exchange": self.name,
            "weights": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": rows(self.buffer),
            "held_out": rows(self.held_out),
            "rng": json.dumps(self.rng.bit_generator.state),
            "counters": [self.exchanges_seen, self.optimizer_steps, self.saved_at],
            "steps": [-1 if v is None else v for v in (self.first_kt, self.last_kt)],
            "versions": list(self.versions),
            "outputs_held": [y.cpu() for y in self.outputs_held],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)

    def load_state(self, path: Path) -> None:
        """Continue from a state written by :meth:`save_state`.

        Raises
        ------
        TrainingError
            If the file cannot be read or is another exchange's.
        """
        import torch

        try:
            state = torch.load(path, map_location=self.closure.device, weights_only=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise TrainingError(
                f"exchange {self.name!r}: cannot resume from {path}: {err}"
            ) from None
        if state.get("exchange") != self.name:
            raise TrainingError(
                f"exchange {self.name!r}: {path} holds the training state of exchange "
                f"{state.get('exchange')!r}"
            )
        self.closure.module.load_state_dict(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        device, dtype = self.closure.device, self.closure.dtype
        for rows, queue in ((state["buffer"], self.buffer), (state["held_out"], self.held_out)):
            queue.clear()
            for row in rows:
                queue.append(Sample(int(row["kt"]), row["inputs"].to(device, dtype),
                                    row["target"].to(device, dtype), self.weight))  # fmt: skip
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.exchanges_seen, self.optimizer_steps, self.saved_at = state["counters"]
        first, last = state["steps"]
        self.first_kt, self.last_kt = (None if first < 0 else first), (None if last < 0 else last)
        self.versions = list(state["versions"])
        self.outputs_held.clear()
        for y in state.get("outputs_held", []):
            self.outputs_held.append(y.to(device, dtype))

    def state_dict(self) -> dict[str, Any]:
        """The network's weights on the CPU (tensors only)."""
        return {k: v.detach().cpu().clone() for k, v in self.closure.module.state_dict().items()}


# --------------------------------------------------------------------------------------------
# the server's side: building the learners, the hook, the figures
# --------------------------------------------------------------------------------------------


def trained_exchanges(exchanges: Sequence[ExchangeConfig]) -> list[ExchangeConfig]:
    """The exchanges with a ``train`` table."""
    return [ex for ex in exchanges if ex.train is not None]


def registry_manifests(
    exchanges: Sequence[ExchangeConfig], registry: Path | None
) -> dict[str, Manifest]:
    """The stored manifest of each trained exchange's registry closure, by exchange name
    (exchanges whose closure is not in the registry are left out)."""
    from bridge.registry.store import Registry, RegistryError

    reg = Registry(registry)
    found = {}
    for ex in trained_exchanges(exchanges):
        try:
            entry = reg.show(ex.closure)
        except (RegistryError, ValueError):
            continue
        if entry.manifest is not None:
            found[exchange_name(ex)] = entry.manifest
    return found


def make_online_closures(
    exchanges: Sequence[ExchangeConfig],
    closures: Mapping[str, Closure],
    manifests: Mapping[str, Manifest],
    device: str,
) -> dict[str, Closure]:
    """``closures`` with each trained exchange's closure replaced by its :class:`OnlineClosure`.

    ``manifests``: the registry manifest of each trained exchange's closure, by exchange name.

    Raises
    ------
    TrainingError
        If a trained exchange's closure is not trainable.
    """
    result = dict(closures)
    for ex in trained_exchanges(exchanges):
        name = exchange_name(ex)
        if name not in manifests:
            raise TrainingError(
                f"exchange {name!r}: train needs a registry closure (name@version) with a "
                f"trainable torch module, not {ex.closure!r}"
            )
        result[name] = online_closure(closures[name], manifests[name], device)
    return result


class OnlineTraining:
    """Every learner of one server rank, as the engine's hook after each exchange.

    Parameters
    ----------
    learners
        One :class:`Learner` per trained exchange.
    engine
        The engine (which exchanges ran at a step: ``engine.calls``).
    """

    def __init__(
        self,
        learners: Sequence[Learner],
        engine: Engine,
        versions: VersionWriter | None = None,
        restarts: RestartPlan | None = None,
    ) -> None:
        self.learners = list(learners)
        self.engine = engine
        self.versions = versions
        self.restarts = restarts or RestartPlan()
        self.resumed = False
        self.calls_at: list[float] = []  # perf_counter at each exchange: the coupled step time

    @classmethod
    def build(
        cls,
        exchanges: Sequence[ExchangeConfig],
        closures: Mapping[str, Closure],
        engine: Engine,
        points: Mapping[str, str] | None,
        comm: Any,
        versions: VersionWriter | None = None,
        restarts: RestartPlan | None = None,
    ) -> OnlineTraining | None:
        """The hook for the trained exchanges (None when no exchange trains).

        ``versions``: where the weights go as registry versions (``train.save_as``).

        Raises
        ------
        TrainingError
            If a trained exchange's closure shifts its fields (faces differ: not supported), or
            asks for versions of a closure that is not a ``state_dict``.
        """
        learners = []
        for ex in trained_exchanges(exchanges):
            name = exchange_name(ex)
            if any(engine.layouts[name].extend):
                raise TrainingError(
                    f"exchange {name!r}: online training needs the closure's face convention to "
                    "be the model's (its fields are not shifted)"
                )
            closure = closures[name]
            assert isinstance(closure, OnlineClosure)
            if (
                ex.train is not None
                and ex.train.save_as
                and closure.manifest.format != "state_dict"
            ):
                raise TrainingError(
                    f"exchange {name!r}: train.save_as needs a 'state_dict' closure (the versions "
                    f"are weights for its architecture); {closure.manifest.ref} is "
                    f"{closure.manifest.format!r}"
                )
            learners.append(Learner(ex, closure, engine.block, points, comm))
        return cls(learners, engine, versions, restarts) if learners else None

    def __call__(self, kt: int, blocks: Mapping[str, np.ndarray]) -> None:
        """After the outputs of step ``kt`` went: collect and train each trained exchange, and
        write a version every ``save_every`` exchanges."""
        self.calls_at.append(time.perf_counter())
        for learner in self.learners:
            calls = self.engine.calls[learner.name]
            learner.after_exchange(kt, blocks, bool(calls) and calls[-1] == kt)
            every = learner.config.save_every
            if every and learner.exchanges_seen % every == 0 and learner.exchanges_seen:
                self.save(learner)
            # the model's restart steps up to the next exchange: the state after this one is
            # the state there (nothing trains between two exchanges)
            for step in range(kt, kt + self.engine.schedule[0]):
                if self.restarts.is_restart(step):
                    learner.save_state(self.restarts.state_file(learner.name, step))

    def before_infer(self, kt: int) -> None:
        """Before the first closures run: a restarted run takes the training state saved at
        the model's restart step, ``kt - 1``."""
        if self.resumed:
            return
        self.resumed = True
        for learner in self.learners:
            if learner.config.resume:
                path = RestartPlan(Path(learner.config.resume), rank=self.restarts.rank)
                learner.load_state(path.find(learner.name, kt - 1))

    def save(self, learner: Learner) -> None:
        """Write the current weights as a new registry version (collective: the held-out
        metric; server rank 0 writes), unless this exchange's are already written."""
        if self.versions is None or not learner.config.save_as:
            return
        if learner.saved_at == learner.exchanges_seen:
            return
        held_out = learner.held_out_loss()
        learner.saved_at = learner.exchanges_seen
        ref = self.versions.write(learner, held_out)
        if ref:
            learner.versions.append(ref)

    def finish(self) -> None:
        """After the last exchange (collective): the last version of each learner."""
        for learner in self.learners:
            self.save(learner)

    def summary(self) -> dict[str, Any]:
        """By exchange name, this rank's figures; each with the median seconds between two
        exchanges (with ``every = 1``, the coupled model step with training)."""
        interval = float(np.median(np.diff(self.calls_at))) if len(self.calls_at) > 1 else 0.0
        return {
            learner.name: {**learner.summary(), "exchange_interval_median_s": interval}
            for learner in self.learners
        }

    def write_weights(self, run_dir: Path) -> dict[str, Path]:
        """``RUN/online/<exchange>.pt``, the current weights of each trained exchange."""
        import torch

        folder = run_dir / ONLINE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for learner in self.learners:
            path = folder / f"{learner.name}.pt"
            torch.save(learner.state_dict(), path)
            written[learner.name] = path
        return written


def training_figures(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """By exchange: training seconds per exchange (max over ranks, median and total),
    optimizer steps, the loss of the first and last steps, the held-out metric."""
    result: dict[str, Any] = {}
    for name, first in summaries[0].items():
        rows = [s[name] for s in summaries]
        per_exchange = np.max([r["train_s"] for r in rows], axis=0) if first["train_s"] else []
        losses = [v for v in first["loss"] if math.isfinite(v)]
        result[name] = {
            "exchanges": len(first["steps"]),
            "optimizer_steps": int(np.sum(first["optimizer_steps"])),
            "train_s": float(np.sum(per_exchange)),
            "train_per_exchange_median_s": float(np.median(per_exchange))
            if len(per_exchange)
            else 0.0,
            "train_per_exchange_max_s": float(np.max(per_exchange)) if len(per_exchange) else 0.0,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss": [v if math.isfinite(v) else None for v in first["loss"]],
            "held_out_mse": first["held_out_mse"] if math.isfinite(first["held_out_mse"]) else None,
            "versions": list(first.get("versions", [])),
            "exchange_interval_median_s": max(
                r.get("exchange_interval_median_s", 0.0) for r in rows
            ),
        }
    return result


def add_training_to_timing(run_dir: Path, summaries: Sequence[Mapping[str, Any]]) -> None:
    """Add ``training`` (:func:`training_figures`) to ``RUN/timing.json`` (written first)."""
    path = run_dir / "timing.json"
    timing = json.loads(path.read_text()) if path.exists() else {}
    timing["training"] = training_figures(summaries)
    path.write_text(json.dumps(timing, indent=2) + "\n")


@dataclass(frozen=True)
class RestartPlan:
    """Where and when a server rank saves its training state: at the model's restart steps.

    Attributes
    ----------
    folder
        ``RUN/online`` (the states go to its ``state/`` folder).
    every, last
        The model writes a restart when ``kt % every == 0`` or ``kt == last`` (NEMO's
        ``nn_stock`` and ``nn_itend``; ``every = 0``: never).
    rank
        This server rank (one file per rank: each holds its block's buffer).
    """

    folder: Path = Path(ONLINE_DIR)
    every: int = 0
    last: int = -1
    rank: int = 0

    @classmethod
    def from_namelists(cls, run_dir: Path, rank: int) -> RestartPlan:
        """The model's restart steps from the run directory's NEMO-style namelists (none when
        they cannot be read: a generic model)."""
        from bridge.config.namelist import read_namelists

        folder = run_dir / ONLINE_DIR
        try:
            nml = read_namelists(run_dir / "namelist_ref", run_dir / "namelist_cfg")
            every = nml.get_int("namrun", "nn_stock", 0)
            return cls(folder, max(every, 0), nml.itend, rank)
        except Exception:  # no namelist: no restart steps known
            return cls(folder, 0, -1, rank)

    def is_restart(self, kt: int) -> bool:
        """Whether the model writes a restart at step ``kt``."""
        return self.every > 0 and (kt % self.every == 0 or kt == self.last)

    def state_file(self, exchange: str, kt: int) -> Path:
        """``state/<exchange>_<kt:08d>_r<rank>.pt``."""
        return self.folder / "state" / f"{exchange}_{kt:08d}_r{self.rank}.pt"

    def find(self, exchange: str, kt: int) -> Path:
        """The state saved at step ``kt`` by this rank.

        Raises
        ------
        TrainingError
            Naming the file looked for and the states there are.
        """
        path = self.state_file(exchange, kt)
        if path.is_file():
            return path
        there = sorted(p.name for p in (self.folder / "state").glob(f"{exchange}_*.pt"))
        raise TrainingError(
            f"exchange {exchange!r}: train.resume: no training state of step {kt} (the step "
            f"before this run's first) for server rank {self.rank}: {path} is missing (found: "
            f"{', '.join(there) or 'none'}; a restarted run needs the restart step's state and "
            "as many server ranks)"
        )


class VersionWriter:
    """Writes a learner's weights as the next version of ``train.save_as`` in the registry.

    Parameters
    ----------
    registry
        The registry directory (``[server] registry``; None: the default).
    run_dir
        The run directory (named in the provenance; the files are staged under it).
    rank
        This server rank: rank 0 writes, the others return at once.
    """

    def __init__(self, registry: Path | None, run_dir: Path, rank: int) -> None:
        self.registry = registry
        self.run_dir = run_dir
        self.rank = rank

    def write(self, learner: Learner, held_out_mse: float) -> str:
        """Register the weights; the new ``name@version`` (empty on ranks other than 0).

        The version is one more than the largest integer version of the name (1 if none). The
        manifest is the starting closure's with the name, version, and the provenance: the
        model steps trained on, the closure it started from, the run, the optimizer, and the
        metrics (``held_out_mse``: the mean squared error, normalised units, on the held-out
        exchanges; ``train_loss_last``).
        """
        if self.rank != 0:
            return ""
        import dataclasses
        import datetime

        import torch

        from bridge.registry.manifest import Provenance, manifest_to_toml
        from bridge.registry.store import Registry

        reg = Registry(self.registry)
        name = learner.config.save_as
        numbers = [int(v) for v in reg.versions(name) if v.isdigit()]
        version = str(max(numbers, default=0) + 1)
        start = learner.closure.manifest
        cfg = learner.config
        losses = [v for v in learner.record.loss if math.isfinite(v)]
        metrics = {
            "exchanges_trained": float(learner.exchanges_seen),
            "optimizer_steps": float(learner.optimizer_steps),
        }
        if math.isfinite(held_out_mse):
            metrics["held_out_mse"] = float(held_out_mse)
        if losses:
            metrics["train_loss_last"] = float(losses[-1])
        targets = ", ".join(f"{o} <- {f}" for o, f in cfg.target.items())
        inputs = ", ".join(f"{c} <- {f}" for c, f in learner.exchange.inputs.items())
        provenance = Provenance(
            training_data=(
                f"online, exchange {learner.name!r} of run {self.run_dir}: model steps "
                f"{learner.first_kt} to {learner.last_kt} ({learner.exchanges_seen} exchanges; "
                f"every {cfg.hold_out or 0}th held out); inputs {inputs}; targets {targets}"
            ),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            notes=(
                f"started from {start.ref}; {cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch}, "
                f"{cfg.steps_per_exchange} step(s) per exchange, buffer {cfg.buffer}, loss "
                f"{cfg.loss}, seed {cfg.seed}"
                + (
                    "; target: the field plus the closure's own applied output (total increment)"
                    if cfg.target_plus_output
                    else ""
                )
            ),
            metrics=metrics,
        )
        manifest = dataclasses.replace(
            start, name=name, version=version, artifact="weights.pt", provenance=provenance
        )
        folder = self.run_dir / ONLINE_DIR / f"{name}@{version}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(learner.state_dict(), folder / "weights.pt")
        (folder / "manifest.toml").write_text(manifest_to_toml(manifest))
        ref = reg.register(folder / "weights.pt", folder / "manifest.toml")
        print(f"mlbridge server: online training wrote {ref} ({provenance.training_data})",
              flush=True)  # fmt: skip
        return ref


def finish_training(
    comm: Any, training: OnlineTraining, summary: Any, run_dir: Path, timing: bool
) -> None:
    """After the last exchange, on every server rank (collective): the last versions, then
    rank 0 writes the weights and adds the training figures to ``timing.json``."""
    training.finish()
    for name, versions in ((ln.name, ln.versions) for ln in training.learners):
        if summary is not None and name in summary:
            summary[name]["versions"] = list(versions)
    summaries = comm.gather(summary, root=0)
    if comm.Get_rank() != 0:
        return
    training.write_weights(run_dir)
    if timing:
        add_training_to_timing(run_dir, summaries)
