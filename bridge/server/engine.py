"""The one server engine: closures on a block, the NaN and clip policy, the output checks, timing.

Every transport (:mod:`bridge.transport.mpi_blocks` for ``transport = "mpi"``,
:mod:`bridge.transport.oasis_blocks` for OASIS, through the library or a model that couples
through OASIS itself) hands the engine the same thing each exchange: the model fields on this
server rank's block grown by the halo, C-ordered ``(nlev, ny + 2h, nx + 2h)`` float64 arrays
keyed by model field. The engine

1. applies the NaN policy to the inputs (``on_nan``: ``abort`` names the field, step, model rank
   and global point of the first bad value; ``zero`` replaces it and counts),
2. runs the closure of every exchange due at the step (``every`` of the exchange, counted from
   the first step served; the model exchanges on the finest schedule,
   :func:`bridge.config.coupling.model_schedule`) on all levels at once (levels are the batch),
   handing each the
   window of the block its halo needs and the land mask when it asks for one; where the model's
   face convention differs from the closure's, the window of a staggered field is shifted by one
   cell (the closure's ``U(i)`` is the model's ``U(i+1)`` for a west-face model and a NEMO-
   convention closure), the closure runs on a window one cell wider on that side, and its
   outputs shift back (:class:`ExchangeLayout`),
3. checks each closure's outputs once (names, shapes), applies the NaN policy to them and to
   their values beyond the output's bound (:class:`OutputBound`: ``max_abs`` of the exchange,
   else the bound a registry manifest implies), counts and reports the values cut by a
   manifest's clip bound,
4. masks each U, V or F output with its own point's mask (umask, vmask, fmask derived from the
   T mask by NEMO's rule, :func:`bridge.domain.stagger.point_masks`),
5. answers with the outputs each exchange's own lag and every say the model uses
   (:func:`bridge.config.coupling.applied_step`: held between due steps, those of the previous
   due step with lag 1, zeros before the first), adding those of exchanges that write one model
   field (``combine = "add"``, in exchange order), keyed by model field, on the block alone.

:func:`serve_exchanges` is the step loop around it; the transport says when the fields of an
exchange are in (``wait``), moves them into place (``unpack``), and sends the outputs
(``pack``, ``send``). The timing of each phase goes to ``timing.json`` (:func:`write_timing`).

"NaN" here means any non-finite value: NaN, +Inf or -Inf. A finite value beyond an output's bound
is a bad value too, with the same policy and a message that names the bound and where it comes
from.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bridge.closures.base import Closure, check_outputs
from bridge.config.coupling import ExchangeConfig, applied_step, exchange_name
from bridge.domain.plan import Box, assemble_global_reference
from bridge.domain.stagger import NEMO_FACES, input_shift, point_masks
from bridge.protocol.handshake import SERVER_SUPPLIED_INPUTS
from bridge.registry.manifest import SANE_SCALES

CLIP_REPORT_LIMIT = 20  # clip lines a server rank writes in a run; then one "not shown" line

STEP_KEYS = ("recv_wait_s", "unpack_s", "inference_s", "pack_s", "send_s")
"""The phases of one exchange on a server rank, in order (``timing_steps.json``)."""

MODEL_TIMELINE_KEYS = ("kt", "put_start_s", "put_end_s", "get_start_s", "get_end_s", "step_wait_s")
"""A model rank's timeline record (``STEPLOG_RECORD`` reals after the goodbye's head, transport
mpi): start and end of the step's puts and gets on the monotonic clock the servers' ``start_s``
use, and the seconds it waited for the servers in them (``timing_steps.json``)."""


class ServerError(RuntimeError):
    """The server gives up: the message is reported to the user and to every model rank."""


def global_point(index: int, shape: Sequence[int], i0: int, j0: int) -> tuple[int, int, int]:
    """Global ``(i, j, k)``, 1-based (Fortran order), of flat index ``index`` of a block.

    ``shape`` is the block's ``(nz, ny, nx)`` (C order), ``(i0, j0)`` the 0-based global indices
    of its first point: the same convention as the NaN messages.
    """
    k, j, i = np.unravel_index(index, tuple(shape))
    return int(i0 + i) + 1, int(j0 + j) + 1, int(k) + 1


@dataclass(frozen=True)
class Block:
    """One server rank's share of the grid.

    Attributes
    ----------
    rank
        The server rank.
    box
        Its block (global, 0-based, half-open).
    halo
        Cells around the block the closures need (the largest of their halos).
    mask
        ``(1, ny + 2h, nx + 2h)``: 1 ocean, 0 land or beyond a closed edge, on the haloed block.
    model_boxes
        Every model rank's box: messages name the model rank that owns a point.
    faces
        The model's face convention (where its ``U(i)``, ``V(j)`` sit).
    point_masks
        ``{"U": (ny, nx), "V": ..., "F": ...}`` on the block's interior, in the model's
        convention (None: the T mask alone is known, outputs on U/V/F are not masked).
    """

    rank: int
    box: Box
    halo: int
    mask: np.ndarray
    model_boxes: tuple[Box, ...]
    faces: tuple[str, str] = NEMO_FACES
    point_masks: Mapping[str, np.ndarray] | None = None

    @classmethod
    def from_global_mask(
        cls,
        rank: int,
        box: Box,
        halo: int,
        mask: np.ndarray,
        boundary: str,
        model_boxes: Sequence[Box],
        faces: tuple[str, str] = NEMO_FACES,
    ) -> Block:
        """The block of ``box`` with its haloed mask cut from the global ``(ny, nx)`` ``mask``,
        and the U, V and F masks of its interior (model convention ``faces``)."""
        haloed = assemble_global_reference(mask[None], box, halo, boundary)
        points = {
            p: m[box.slices()] for p, m in point_masks(mask, faces, boundary).items() if p != "T"
        }
        return cls(rank, box, halo, haloed, tuple(model_boxes), faces, points)

    @property
    def haloed_shape(self) -> tuple[int, int]:
        """``(ny + 2h, nx + 2h)``."""
        return self.box.ny + 2 * self.halo, self.box.nx + 2 * self.halo

    def owner(self, i: int, j: int) -> int:
        """The model rank owning global point ``(i, j)`` (0-based), or -1."""
        for r, box in enumerate(self.model_boxes):
            if box.contains(i, j):
                return r
        return -1


def accepts_mask(closure: Closure) -> bool:
    """Whether ``closure`` is called with ``mask=`` (registry closures; analytic ones are not)."""
    try:
        params = inspect.signature(closure.__call__).parameters  # type: ignore[operator]
    except (TypeError, ValueError):
        return False
    return "mask" in params


@dataclass(frozen=True)
class OutputBound:
    """The largest absolute value a closure output may take.

    Attributes
    ----------
    value
        The bound (finite, > 0).
    output, exchange
        The closure output and its exchange (for messages).
    source
        Where the bound comes from, in words (``max_abs`` of the exchange, or the manifest).
    """

    value: float
    output: str
    exchange: str
    source: str


def output_bounds(
    exchanges: Sequence[ExchangeConfig], closures: Mapping[str, Closure]
) -> dict[str, OutputBound]:
    """The bound of each received model field: ``max_abs`` of its exchange, else the closure's.

    A registry closure tells its bounds in ``sane_bounds`` (by output: outputs with a
    normalisation and no clip in the manifest, :func:`bridge.registry.manifest.sane_bound`);
    ``max_abs = inf`` removes a bound.
    """
    bounds: dict[str, OutputBound] = {}
    for ex in exchanges:
        name = exchange_name(ex)
        closure = closures[name]
        implied = getattr(closure, "sane_bounds", {})
        for output, model_field in ex.outputs.items():
            if output in ex.max_abs:
                value = ex.max_abs[output]
                source = "max_abs of the exchange in coupling.toml"
            elif output in implied:
                value = implied[output]
                source = (
                    f"|offset| + {SANE_SCALES:g} x |scale| of output {output!r} in the manifest "
                    f"of closure {closure.spec.name!r}, which has no clip; set max_abs to change it"
                )
            else:
                continue
            if np.isfinite(value):
                bounds[model_field] = OutputBound(float(value), output, name, source)
    return bounds


def nan_policies(exchanges: Sequence[ExchangeConfig]) -> dict[str, str]:
    """``on_nan`` of each model field (``abort`` wins when several exchanges use a field)."""
    policy: dict[str, str] = {}
    for ex in exchanges:
        for model_field in (*ex.inputs.values(), *ex.outputs.values()):
            if policy.get(model_field) != "abort":
                policy[model_field] = ex.on_nan
    return policy


@dataclass(frozen=True)
class ExchangeLayout:
    """Where one exchange's closure reads and writes on the haloed block.

    Attributes
    ----------
    extend
        ``(south, north, west, east)``: cells the closure's interior reaches beyond the block
        (1 on the side a shift comes from, so that the shifted outputs cover the block).
    shifts
        ``(dj, di)`` of each closure input and output (:func:`bridge.domain.stagger.input_shift`):
        the closure's value at index ``c`` is the model's at ``c + d``.
    points
        The C-grid point of each model field the exchange maps.
    """

    extend: tuple[int, int, int, int]
    shifts: Mapping[str, tuple[int, int]]
    points: Mapping[str, str]

    @classmethod
    def of(
        cls,
        exchange: ExchangeConfig,
        closure: Closure,
        points: Mapping[str, str],
        faces: tuple[str, str],
    ) -> ExchangeLayout:
        """The layout of ``exchange`` for a model whose fields sit on ``points`` (by model
        field; absent: T) in the convention ``faces``."""
        mapped = {**exchange.inputs, **exchange.outputs}
        shifts = {
            cn: input_shift(points.get(mf, "T"), faces, closure.spec.faces)
            for cn, mf in mapped.items()
        }
        dj = {d[0] for d in shifts.values()} - {0}
        di = {d[1] for d in shifts.values()} - {0}
        extend = (int(1 in dj), int(-1 in dj), int(1 in di), int(-1 in di))
        return cls(extend, shifts, {mf: points.get(mf, "T") for mf in mapped.values()})

    @property
    def widening(self) -> int:
        """Extra halo the block needs for this exchange (0 or 1)."""
        return int(any(self.extend))


def exchange_halo(
    exchanges: Sequence[ExchangeConfig],
    closures: Mapping[str, Closure],
    points: Mapping[str, str],
    faces: tuple[str, str],
) -> int:
    """The block halo: the largest closure halo, one wider for an exchange that shifts."""
    halo = 0
    for ex in exchanges:
        closure = closures[exchange_name(ex)]
        layout = ExchangeLayout.of(ex, closure, points, faces)
        halo = max(halo, closure.spec.halo + layout.widening)
    return halo


class Engine:
    """The closures of every exchange on one server rank's block.

    Parameters
    ----------
    exchanges
        The exchanges served (closure inputs and outputs mapped to model fields, ``on_nan``).
    closures
        The closure of each exchange, by :func:`bridge.protocol.handshake.exchange_name`.
    block
        This server rank's block.
    points
        The C-grid point of each model field (``mlb_def_field``'s grid; absent: T).
    schedule
        ``(every, lag)`` the model exchanges on (:func:`bridge.config.coupling.model_schedule`).
    """

    def __init__(
        self,
        exchanges: Sequence[ExchangeConfig],
        closures: Mapping[str, Closure],
        block: Block,
        points: Mapping[str, str] | None = None,
        schedule: tuple[int, int] = (1, 0),
    ) -> None:
        self.exchanges = tuple(exchanges)
        self.schedule = schedule
        self.uniform = all((ex.every, ex.lag) == schedule for ex in self.exchanges)
        self.origin: int | None = None  # the first step served: every schedule counts from it
        # per exchange: the outputs of its last two due steps, [(step, outputs by model field)]
        self.held: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {
            exchange_name(ex): [] for ex in self.exchanges
        }
        # per exchange: the steps its closure ran and the seconds each call took
        self.calls: dict[str, list[int]] = {exchange_name(ex): [] for ex in self.exchanges}
        self.call_s: dict[str, list[float]] = {exchange_name(ex): [] for ex in self.exchanges}
        self.closures = closures
        self.block = block
        self.layouts = {
            exchange_name(ex): ExchangeLayout.of(
                ex, closures[exchange_name(ex)], points or {}, block.faces
            )
            for ex in self.exchanges
        }
        self.rank = block.rank
        self.takes_mask = {n: accepts_mask(c) for n, c in closures.items()}
        self.nan_policy = nan_policies(self.exchanges)
        self.bounds = output_bounds(self.exchanges, closures)
        self.nan_replaced = 0
        self.max_abs_replaced = 0  # values beyond an output's bound replaced (on_nan = "zero")
        # values cut by the closures' clip bounds, per model field (fields with a bound only)
        self.clipped: dict[str, int] = {}
        for ex in self.exchanges:
            bounded = getattr(getattr(closures[exchange_name(ex)], "stats", None), "clipped", {})
            self.clipped.update({mf: 0 for co, mf in ex.outputs.items() if co in bounded})
        self.clip_lines = 0
        self.checked_outputs: set[str] = set()
        self.steps: list[int] = []
        self.times: dict[str, list[float]] = {k: [] for k in STEP_KEYS}
        self.starts: list[float] = []  # when each exchange's wait began (time.perf_counter)

    # --- NaN policy --------------------------------------------------------------------------

    def _nan_check(
        self,
        kt: int,
        name: str,
        interior: np.ndarray,
        full: np.ndarray,
        what: str,
        bound: OutputBound | None = None,
    ) -> None:
        """Abort or zero the bad values of ``full`` (counting those of ``interior``).

        Bad: not finite (NaN, +-Inf) or, with ``bound`` (outputs: ``interior`` is ``full``),
        beyond it.
        """
        if full.size == 0:
            return
        limit = bound.value if bound is not None else np.inf
        if not np.isfinite(limit):
            if np.isfinite(np.add.reduce(full, axis=None)):
                return  # one read: a sum is finite only if every term is (an overflow re-checked)
        elif -limit <= full.min() and full.max() <= limit:
            return  # a NaN fails both comparisons
        bad = ~np.isfinite(interior)
        over = None if not np.isfinite(limit) else np.abs(np.where(bad, 0.0, interior)) > limit
        if not bad.any() and (over is None or not over.any()):
            if np.isfinite(full).all():
                return
        policy = self.nan_policy.get(name, "abort")
        if policy == "abort":
            if bad.any():
                k, j, i = (int(v) for v in np.argwhere(bad)[0])
                value = float(interior[k, j, i])
                kind = "NaN" if np.isnan(value) else "Inf"
                raise ServerError(
                    f"{kind} in {what} {name!r} at {self._point(kt, k, j, i)} (1-based, Fortran "
                    f"order; value {value}; {self._origin(bound)}{int(bad.sum())} non-finite in "
                    f"server rank {self.rank}'s block; on_nan = 'abort')"
                )
            if over is not None and over.any():
                assert bound is not None
                flat = int(np.argmax(np.abs(np.where(over, interior, 0.0))))
                k, j, i = np.unravel_index(flat, interior.shape)
                value = float(interior[k, j, i])
                raise ServerError(
                    f"value beyond max_abs in {what} {name!r} at {self._point(kt, k, j, i)} "
                    f"(1-based, Fortran order): {value:.6g}, |value| > {bound.value:.6g} "
                    f"({bound.source}; {self._origin(bound)}the largest of {int(over.sum())} "
                    f"value(s) beyond the bound in server rank {self.rank}'s block; "
                    "on_nan = 'abort')"
                )
            return  # the NaN is in the halo: the server owning it reports it
        self.nan_replaced += int(bad.sum())
        full[~np.isfinite(full)] = 0.0
        if over is not None and over.any():
            self.max_abs_replaced += int(over.sum())
            interior[over] = 0.0

    def _point(self, kt: int, k: int, j: int, i: int) -> str:
        """``step kt, model rank r, global (i, j, k) = (..)`` of block point ``(k, j, i)``."""
        gi, gj = self.block.box.i0 + int(i), self.block.box.j0 + int(j)
        return (
            f"step {kt}, model rank {self.block.owner(gi, gj)}, global (i, j, k) = "
            f"({gi + 1}, {gj + 1}, {int(k) + 1})"
        )

    def _origin(self, bound: OutputBound | None) -> str:
        """``closure output 'x' of exchange 'e'; `` for a bounded output (else empty)."""
        if bound is None:
            return ""
        return f"closure output {bound.output!r} of exchange {bound.exchange!r}; "

    def check_inputs(self, kt: int, blocks: Mapping[str, np.ndarray]) -> None:
        """The NaN policy on the received fields (in place: ``zero`` replaces them)."""
        h = self.block.halo
        for name, block in blocks.items():
            interior = block[:, h : block.shape[1] - h, h : block.shape[2] - h]
            self._nan_check(kt, name, interior, block, "model field")

    # --- inference ---------------------------------------------------------------------------

    def infer(self, kt: int, blocks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the closures due at step ``kt`` on the block; return the outputs the model uses
        from this exchange on (each exchange's own lag and every), keyed by model field.

        Raises
        ------
        ServerError
            If a closure fails or returns what its spec does not promise, or on a NaN with
            ``on_nan = "abort"``.
        """
        if self.origin is None:
            self.origin = kt
        clock = time.perf_counter
        every, lag = self.schedule
        used_at = kt + lag * every  # the step from which the model uses these outputs
        outputs: dict[str, np.ndarray] = {}
        for ex in self.exchanges:
            name = exchange_name(ex)
            held = self.held[name]
            if (kt - self.origin) % ex.every == 0:
                t0 = clock()
                held.append((kt, self._run(kt, ex, blocks)))
                self.call_s[name].append(clock() - t0)
                self.calls[name].append(kt)
                del held[:-2]
            step = applied_step(ex, used_at, self.origin)
            chosen = next((out for d, out in reversed(held) if d == step), None)
            if chosen is None and step >= self.origin:
                raise ServerError(
                    f"exchange {name!r}: the outputs of step {step} the model uses from step "
                    f"{used_at} on are no longer held (held: {[d for d, _ in held]})"
                )
            if chosen is None:  # before the first outputs of the exchange: zeros
                chosen = {f: np.zeros_like(a) for f, a in held[-1][1].items()}
            for model_field, out in chosen.items():
                if model_field in outputs:  # combine = "add" (checked with the configuration)
                    outputs[model_field] = outputs[model_field] + out
                else:
                    outputs[model_field] = out
        return outputs

    def _run(
        self, kt: int, ex: ExchangeConfig, blocks: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The closure of ``ex`` on the block: its outputs keyed by model field."""
        outputs: dict[str, np.ndarray] = {}
        ny, nx = self.block.box.ny, self.block.box.nx
        big = self.block.halo
        mask_block = self.block.mask
        name = exchange_name(ex)
        closure = self.closures[name]
        spec = closure.spec
        layout = self.layouts[name]
        south, north, west, east = layout.extend
        h = spec.halo
        interior = (ny + south + north, nx + west + east)

        corner = (big - h - south, big - h - west)
        window = _window(corner, interior, h, (0, 0))
        inputs: dict[str, np.ndarray] = {}
        nz = 1
        for closure_input, model_field in ex.inputs.items():
            shift = layout.shifts[closure_input]
            arr = blocks[model_field][_window(corner, interior, h, shift)]
            field = spec.field("input", closure_input)
            if field is None or not field.surface:  # a surface input has 1 level, not nz
                nz = arr.shape[0]
            inputs[closure_input] = arr if spec.dtype == "float64" else arr.astype(spec.dtype)
        for extra in SERVER_SUPPLIED_INPUTS:
            if extra in spec.input_names:
                mask = mask_block[window].astype(spec.dtype, copy=False)
                inputs[extra] = np.broadcast_to(mask, (nz, *mask.shape[1:]))
        try:
            if self.takes_mask[name]:  # registry closures: outputs are zero on land
                result = closure(inputs, mask=mask_block[0][window[1:]])
            else:
                result = closure(inputs)
            if name not in self.checked_outputs:
                check_outputs(spec, result, (nz, *interior))
                self.checked_outputs.add(name)
        except Exception as err:
            raise ServerError(
                f"closure {spec.name!r} of exchange {name!r} failed at step {kt} on server "
                f"rank {self.rank}: {type(err).__name__}: {err}"
            ) from None
        for closure_output, model_field in ex.outputs.items():
            out = result[closure_output]
            if any(layout.extend):  # back to the model's convention, on the block
                dj, di = layout.shifts[closure_output]
                out = out[:, south - dj : south - dj + ny, west - di : west - di + nx]
            out = np.ascontiguousarray(out, dtype=np.float64)
            point = layout.points[model_field]
            if point != "T" and self.block.point_masks is not None:
                out = np.where(self.block.point_masks[point] != 0, out, 0.0)
            bound = self.bounds.get(model_field)
            passed_through = _inside_any(out, blocks.values())
            if bound is not None and passed_through:
                out = out.copy()  # an input passed through: zeroing must not touch it
            if bound is not None or not passed_through:
                origin = bound or OutputBound(np.inf, closure_output, name, "")
                self._nan_check(kt, model_field, out, out, "closure output for", origin)
            # else an input passed through, without a bound: its NaNs were handled with the
            # inputs
            if passed_through and not self.uniform:
                out = out.copy()  # held beyond this step: not a view of the next fields
            self._clip_report(kt, closure, closure_output, model_field, out.shape)
            outputs[model_field] = out
        return outputs

    def _clip_report(
        self, kt: int, closure: Closure, output: str, field: str, shape: Sequence[int]
    ) -> None:
        """Count and report (one line, the worst value) the clipping of the last closure call."""
        stats = getattr(closure, "stats", None)
        record = getattr(stats, "last_clip", {}).get(output)
        if record is None:
            return
        self.clipped[field] = self.clipped.get(field, 0) + record.count
        self.clip_lines += 1
        if self.clip_lines > CLIP_REPORT_LIMIT:
            if self.clip_lines == CLIP_REPORT_LIMIT + 1:
                print(
                    f"mlbridge server rank {self.rank}: further clip events not shown (the totals "
                    "per field are in the run's summary)",
                    flush=True,
                )
            return
        box = self.block.box
        gi, gj, k = global_point(record.index, shape, box.i0, box.j0)
        print(
            f"mlbridge server rank {self.rank}: clip at step {kt}: {field!r} (closure output "
            f"{output!r}) = {record.value:.6g} before clipping to +-{record.bound:.6g} at "
            f"model rank {self.block.owner(gi - 1, gj - 1)}, global (i, j, k) = ({gi}, {gj}, "
            f"{k}) (1-based, Fortran order; the largest of {record.count} value(s) clipped in "
            f"server rank {self.rank}'s block)",
            flush=True,
        )

    # --- timing ------------------------------------------------------------------------------

    def record(self, kt: int, seconds: Sequence[float], start: float = float("nan")) -> None:
        """Keep the step, the seconds of each phase of :data:`STEP_KEYS` and when the first
        began (``start``: ``time.perf_counter``, the monotonic clock on Linux)."""
        self.steps.append(kt)
        self.starts.append(start)
        for key, value in zip(STEP_KEYS, seconds, strict=True):
            self.times[key].append(value)

    def summary(self, model_timing: Mapping[int, Sequence[float]]) -> dict[str, Any]:
        """This rank's figures (gathered by server rank 0)."""
        return {
            "rank": self.rank,
            "steps": list(self.steps),
            "times": {k: list(v) for k, v in self.times.items()},
            "starts": list(self.starts),
            "model": {int(r): list(v) for r, v in model_timing.items()},
            "nan_replaced": self.nan_replaced,
            "max_abs_replaced": self.max_abs_replaced,
            "clipped": dict(self.clipped),
            "exchanges": {
                exchange_name(ex): {
                    "every": ex.every,
                    "lag": ex.lag,
                    "steps": list(self.calls[exchange_name(ex)]),
                    "inference_s": list(self.call_s[exchange_name(ex)]),
                }
                for ex in self.exchanges
            },
        }


def _window(
    corner: tuple[int, int], interior: tuple[int, int], halo: int, shift: tuple[int, int]
) -> tuple[slice, slice, slice]:
    """The slices of a closure's haloed window on the block: ``corner`` is its first ``(j, i)``
    unshifted, ``interior`` its ``(ny, nx)``, ``shift`` the field's ``(dj, di)``."""
    j0, i0 = corner[0] + shift[0], corner[1] + shift[1]
    return (
        slice(None),
        slice(j0, j0 + interior[0] + 2 * halo),
        slice(i0, i0 + interior[1] + 2 * halo),
    )


def _inside_any(arr: np.ndarray, blocks: Any) -> bool:
    """Whether C-contiguous ``arr`` lies inside one of the ``blocks`` arrays (a pass-through)."""
    lo = arr.ctypes.data
    hi = lo + arr.nbytes
    for block in blocks:
        b0 = block.ctypes.data
        if b0 <= lo and hi <= b0 + block.nbytes:
            return True
    return False


# --------------------------------------------------------------------------------------------
# the step loop
# --------------------------------------------------------------------------------------------


class BlockTransport(Protocol):
    """What a transport does for the engine on one server rank, each exchange in this order."""

    def wait(self) -> int | None:
        """Wait for the fields of the next exchange; its step, or None once the model is done."""

    def unpack(self) -> Mapping[str, np.ndarray]:
        """The fields on the haloed block, by model field (in place, ready for the closures)."""

    def pack(self, kt: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Make the outputs of step ``kt`` ready to go."""

    def send(self) -> None:
        """Send them (non-blocking where the transport allows)."""

    def finish(self) -> dict[int, list[float]]:
        """After the last exchange: the model ranks' own timing, by model rank (may be empty)."""


class StepRecorder(Protocol):
    """Keeps what an exchange moved (:class:`bridge.server.diagnostics.DiagnosticsWriter`)."""

    def record(
        self, kt: int, blocks: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> None:
        """Called after the outputs of step ``kt`` went (the blocks are valid until ``wait``)."""


PROGRESS_EVERY_S = 0.25
"""Least seconds between two calls of ``on_step`` (``$MLBRIDGE_PROGRESS_EVERY_S`` overrides; 0:
after every exchange). Server rank 0's progress file is a write and a rename: on a busy
filesystem that took up to 50 ms, between the send of the outputs and the next wait, where
neither the outputs nor the next fields move (docs/performance.md)."""


def progress_every_s() -> float:
    """:data:`PROGRESS_EVERY_S`, or ``$MLBRIDGE_PROGRESS_EVERY_S`` when it is a number >= 0."""
    import os

    try:
        value = float(os.environ.get("MLBRIDGE_PROGRESS_EVERY_S", PROGRESS_EVERY_S))
    except ValueError:
        return PROGRESS_EVERY_S
    return value if value >= 0 else PROGRESS_EVERY_S


def serve_exchanges(
    engine: Engine,
    transport: BlockTransport,
    on_step: Callable[[int], None] | None = None,
    diagnostics: StepRecorder | None = None,
    after_exchange: Callable[[int, Mapping[str, np.ndarray]], None] | None = None,
    before_infer: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Serve every exchange until the transport says the model is done; return the summary.

    ``on_step`` is called with the number of exchanges served after the first one, then at most
    every :func:`progress_every_s` seconds, and once more at the end with the final count
    (progress).
    ``diagnostics`` (``[diagnostics] netcdf``) gets the fields and outputs once the outputs went,
    outside the timed phases (it keeps its own time).
    ``after_exchange`` (online training, :class:`bridge.server.training.OnlineTraining`) gets the
    step and the fields last, while the model is in its step; it keeps its own time.
    ``before_infer`` (closure swaps, :class:`bridge.server.swap.ClosureSwaps`) gets the step
    before the closures run.

    Raises
    ------
    ServerError
        As :meth:`Engine.infer`, or from the transport (a timeout, a message off the plan).
    """
    clock = time.perf_counter
    every_s = progress_every_s()
    reported, last_report = 0, -np.inf
    while True:
        t0 = clock()
        kt = transport.wait()
        t1 = clock()
        if kt is None:
            if on_step is not None and reported != len(engine.steps):
                on_step(len(engine.steps))
            break
        blocks = transport.unpack()
        t2 = clock()
        if before_infer is not None:
            before_infer(kt)
        engine.check_inputs(kt, blocks)
        outputs = engine.infer(kt, blocks)
        t3 = clock()
        transport.pack(kt, outputs)
        t4 = clock()
        transport.send()
        t5 = clock()
        engine.record(kt, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), start=t0)
        if diagnostics is not None:
            diagnostics.record(kt, blocks, outputs)
        if after_exchange is not None:
            after_exchange(kt, blocks)
        if on_step is not None and (t5 - last_report >= every_s or not reported):
            reported, last_report = len(engine.steps), t5
            on_step(reported)
    return engine.summary(transport.finish())


# --------------------------------------------------------------------------------------------
# what server rank 0 writes at the end
# --------------------------------------------------------------------------------------------


def merged_clipped(summaries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Values cut by the clip bounds per model field, summed over the server ranks."""
    total: dict[str, int] = {}
    for s in summaries:
        for name, n in s.get("clipped", {}).items():
            total[name] = total.get(name, 0) + int(n)
    return total


def write_timing(
    run_dir: Path, summaries: Sequence[Mapping[str, Any]], lag: int, every: int
) -> dict[str, Any]:
    """``timing.json`` (totals, max over server ranks) and ``timing_steps.json`` (per step).

    ``lag`` and ``every`` are the model's schedule; ``timing.json`` ``per_exchange`` has each
    exchange's own ``every``, ``lag``, closure ``calls`` and the seconds of its closure
    (``inference_s`` in all, ``inference_per_call_median_s``: max over server ranks), part of
    the server's ``inference_s``.
    """
    server: dict[str, Any] = {"ranks": len(summaries), "exchanges": len(summaries[0]["steps"])}
    for key in STEP_KEYS:
        server[key] = max(float(np.sum(s["times"][key])) for s in summaries)
    per_step = [
        float(np.median(np.sum([s["times"][k] for k in STEP_KEYS[1:]], axis=0)))
        for s in summaries
        if s["steps"]
    ]
    server["busy_per_exchange_median_s"] = max(per_step) if per_step else 0.0
    model_rows: dict[int, list[float]] = {}
    for s in summaries:
        model_rows.update({int(r): v for r, v in s["model"].items()})
    model = {
        "ranks": len(model_rows),
        "wait_s_max": max((v[1] for v in model_rows.values()), default=0.0),
        "put_s_max": max((v[2] for v in model_rows.values()), default=0.0),
        "get_s_max": max((v[3] for v in model_rows.values()), default=0.0),
    }
    timing = {
        "server": server,
        "model": model,
        "lag": lag,
        "every": every,
        "nan_replaced": int(sum(s["nan_replaced"] for s in summaries)),
        "max_abs_replaced": int(sum(s.get("max_abs_replaced", 0) for s in summaries)),
        "clipped": merged_clipped(summaries),
        "per_exchange": _per_exchange(summaries),
        "per_step_file": "timing_steps.json",
    }
    steps = {
        "clock": "monotonic seconds (CLOCK_MONOTONIC on Linux), the same on both sides",
        "servers": [
            {"rank": s["rank"], "kt": s["steps"], "start_s": s.get("starts", []), **s["times"]}
            for s in summaries
        ],
        "model": {str(r): _model_steps(v) for r, v in sorted(model_rows.items())},
    }
    (run_dir / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    (run_dir / "timing_steps.json").write_text(json.dumps(steps) + "\n")
    return timing


def _model_steps(goodbye: Sequence[float]) -> dict[str, Any]:
    """A model rank's goodbye as ``timing_steps.json`` has it: its totals, and its timeline
    (:data:`MODEL_TIMELINE_KEYS`, transport mpi) when the goodbye carries one."""
    row: dict[str, Any] = dict(
        zip(("exchanges", "wait_s", "put_s", "get_s"), goodbye[:4], strict=True)
    )
    tail = list(goodbye[4:])
    if tail:
        n = int(tail[0])
        width = len(MODEL_TIMELINE_KEYS)
        records = np.asarray(tail[1 : 1 + n * width], dtype=float).reshape(n, width)
        for j, key in enumerate(MODEL_TIMELINE_KEYS):
            column = records[:, j]
            row[key] = [int(v) for v in column] if key == "kt" else [float(v) for v in column]
    return row


def _per_exchange(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each exchange's schedule, calls and closure seconds (max over server ranks)."""
    result: dict[str, Any] = {}
    for name, first in summaries[0].get("exchanges", {}).items():
        rows = [s["exchanges"][name] for s in summaries]
        result[name] = {
            "every": first["every"],
            "lag": first["lag"],
            "calls": len(first["steps"]),
            "steps": list(first["steps"]),
            "inference_s": max(float(np.sum(r["inference_s"])) for r in rows),
            "inference_per_call_median_s": max(
                (float(np.median(r["inference_s"])) for r in rows if r["inference_s"]),
                default=0.0,
            ),
        }
    return result


def report_totals(summaries: Sequence[Mapping[str, Any]]) -> None:
    """Server rank 0: a line for the NaN and for the values beyond max_abs replaced, and one
    for the values clipped, if any."""
    replaced = sum(s["nan_replaced"] for s in summaries)
    if replaced:
        print(
            f"mlbridge server: replaced {replaced} NaN value(s) by zero (on_nan = 'zero')",
            flush=True,
        )
    beyond = sum(s.get("max_abs_replaced", 0) for s in summaries)
    if beyond:
        print(
            f"mlbridge server: replaced {beyond} value(s) beyond max_abs by zero (on_nan = 'zero')",
            flush=True,
        )
    clipped = merged_clipped(summaries)
    if any(clipped.values()):
        counts = ", ".join(f"{name} {n}" for name, n in clipped.items())
        print(
            f"mlbridge server: clipped {sum(clipped.values())} value(s) to the closures' "
            f"clip bounds ({counts})",
            flush=True,
        )
