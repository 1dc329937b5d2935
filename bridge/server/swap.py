"""Hot swaps: an exchange switches to another registered closure at a given model step.

``swap = [{ step = k, closure = "name@version" }]`` on an exchange (:class:`bridge.config.
coupling.SwapConfig`). Every closure swapped in is loaded and checked when the servers start,
with the checks of the closure it replaces, so that a bad swap stops the job before its first
step, not at step k:

* the registry's hash check (and the pin ``sha256`` when given) on loading;
* its inputs are the ones the exchange maps (every closure input the exchange maps exists, every
  input it needs is mapped), and it has every output the exchange maps;
* its halo is at most that of the closure it replaces (the servers' blocks were cut for that
  one), and its face convention is the same (the fields' shifts stay).

At run time :class:`ClosureSwaps` is called with each exchange's step before the closures run
(:func:`bridge.server.engine.serve_exchanges`): the first call of the exchange at a step
``>= k`` runs the new closure, and server rank 0 logs the switch. With ``lag = 0`` the model's
outputs change exactly from the first due step ``>= k``; with ``lag = 1`` one exchange later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.closures.base import Closure
from bridge.config.coupling import ExchangeConfig, SwapConfig, exchange_name
from bridge.protocol.handshake import SERVER_SUPPLIED_INPUTS
from bridge.registry.resolve import ClosureResolutionError, resolve_closure
from bridge.server.engine import Engine, ExchangeLayout, ServerError, accepts_mask, output_bounds


@dataclass
class PendingSwap:
    """One swap, loaded and checked, waiting for its step."""

    exchange: str
    swap: SwapConfig
    closure: Closure


def swap_problems(exchange: ExchangeConfig, old: Closure, new: Closure, ref: str) -> list[str]:
    """Why ``new`` cannot replace ``old`` in ``exchange`` (empty: it can)."""
    name = exchange_name(exchange)
    head = f"exchange {name!r}: swap to {ref}"
    spec, before = new.spec, old.spec
    problems = []
    missing_in = sorted(set(exchange.inputs) - set(spec.input_names))
    if missing_in:
        problems.append(f"{head}: it has no input(s) {missing_in} (its inputs: {spec.input_names})")
    unmapped = sorted(
        n for n in spec.input_names if n not in exchange.inputs and n not in SERVER_SUPPLIED_INPUTS
    )
    if unmapped:
        problems.append(f"{head}: its input(s) {unmapped} are not mapped to model fields")
    missing_out = sorted(set(exchange.outputs) - set(spec.output_names))
    if missing_out:
        problems.append(
            f"{head}: it has no output(s) {missing_out} (its outputs: {spec.output_names})"
        )
    if spec.halo > before.halo:
        problems.append(
            f"{head}: its halo {spec.halo} is larger than the halo {before.halo} of "
            f"{exchange.closure} it replaces (the server blocks were cut for that one)"
        )
    if tuple(spec.faces) != tuple(before.faces):
        problems.append(
            f"{head}: its face convention {spec.faces} differs from {before.faces} of "
            f"{exchange.closure}"
        )
    return problems


def load_swaps(
    exchanges: Sequence[ExchangeConfig],
    closures: Mapping[str, Closure],
    device: str,
    threads: int,
    registry: Path | None,
) -> list[PendingSwap]:
    """Load and check every swap of ``exchanges`` (before the handshake).

    Raises
    ------
    ServerError
        Naming the exchange, the swap's closure and what is wrong (all problems at once).
    """
    pending, problems = [], []
    for ex in exchanges:
        name = exchange_name(ex)
        for swap in ex.swap:
            try:
                new = resolve_closure(
                    swap.closure, {}, device, threads, inputs=tuple(ex.inputs),
                    registry=registry, sha256=swap.sha256,
                )  # fmt: skip
            except ClosureResolutionError as err:
                problems.append(f"exchange {name!r}: swap at step {swap.step}: {err}")
                continue
            found = swap_problems(ex, closures[name], new, swap.closure)
            problems += found
            if not found:
                pending.append(PendingSwap(name, swap, new))
    if problems:
        raise ServerError("; ".join(problems))
    return pending


class ClosureSwaps:
    """The engine's hook before the closures run: switches an exchange's closure at its step.

    Parameters
    ----------
    engine
        The engine whose closures are switched.
    pending
        The checked swaps (:func:`load_swaps`).
    points
        The C-grid point of each model field (the new closure's layout).
    log
        Whether this rank writes the log line (server rank 0).
    """

    def __init__(
        self,
        engine: Engine,
        pending: Sequence[PendingSwap],
        points: Mapping[str, str] | None = None,
        log: bool = True,
    ) -> None:
        self.engine = engine
        self.pending = sorted(pending, key=lambda p: p.swap.step)
        self.points = dict(points or {})
        self.log = log
        self.done: list[dict[str, Any]] = []

    def __call__(self, kt: int) -> None:
        """Before the closures of step ``kt``: apply the swaps due, for exchanges that run."""
        engine = self.engine
        origin = engine.origin if engine.origin is not None else kt
        for item in list(self.pending):
            ex = next(e for e in engine.exchanges if exchange_name(e) == item.exchange)
            if item.swap.step > kt or (kt - origin) % ex.every != 0:
                continue
            old = engine.closures[item.exchange]
            self._apply(ex, item.closure)
            self.pending.remove(item)
            record = {"exchange": item.exchange, "step": kt, "requested": item.swap.step,
                      "from": old.spec.name, "to": item.swap.closure}  # fmt: skip
            self.done.append(record)
            if self.log:
                print(
                    f"mlbridge server: exchange {item.exchange!r} swapped to {item.swap.closure} "
                    f"at step {kt} (swap step {item.swap.step}; was {old.spec.name})",
                    flush=True,
                )

    def _apply(self, ex: ExchangeConfig, closure: Closure) -> None:
        engine = self.engine
        name = exchange_name(ex)
        closures = engine.closures
        if not isinstance(closures, dict):
            raise ServerError(f"exchange {name!r}: the engine's closures cannot be switched")
        closures[name] = closure
        engine.takes_mask[name] = accepts_mask(closure)
        engine.layouts[name] = ExchangeLayout.of(ex, closure, self.points, engine.block.faces)
        engine.bounds = output_bounds(engine.exchanges, closures)
        engine.checked_outputs.discard(name)
        bounded = getattr(getattr(closure, "stats", None), "clipped", {})
        engine.clipped.update({mf: 0 for co, mf in ex.outputs.items() if co in bounded})
