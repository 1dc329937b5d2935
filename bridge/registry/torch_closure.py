"""A torch module as a ``Closure``: the hot path of a registry closure on a server.

``TorchClosure.__call__`` takes C-ordered ``(nz, ny+2h, nx+2h)`` numpy blocks (the memory of
Fortran ``(i, j, k)`` blocks), hands them to torch without a copy where layout, dtype and device
allow (at most one copy otherwise, fused with the cast and the normalisation), runs every level at
once as the batch ``(nz, C, ny+2h, nx+2h)`` under ``torch.inference_mode``, undoes the output
normalisation, applies the clip bound and the land mask, and returns C-contiguous ``(nz, ny, nx)``
arrays in the caller's dtype. :class:`ManifestClosure` gives any other closure the same contract.

Loading artifacts is :mod:`bridge.registry.runtime`'s job. torch is imported inside functions
only: importing this module costs nothing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from bridge.closures.base import (
    Closure,
    ClosureInputError,
    ClosureOutputError,
    ClosureSpec,
    check_inputs,
    check_outputs,
)
from bridge.registry.manifest import Manifest, Normalisation, sane_bound

if TYPE_CHECKING:
    import torch


# Levels per forward call on a CPU, for a module in the default (contiguous) memory format: with
# the reference CNN on a 64x64 block, batches of 8 levels ran faster than one call on all 30-75
# levels (activations stay in cache). A channels-last module (the registry's default on a CPU,
# bridge.registry.compiled) runs every level in one call. See `mlbridge bench closure`.
CPU_LEVELS_PER_CALL = 8


class ArtifactFormatError(ValueError):
    """An artifact is not in the format its manifest declares, or in no accepted format."""


class ClosureLoadError(RuntimeError):
    """An artifact could not be turned into a closure (entry point, weights, device)."""


# -- device and threads ---------------------------------------------------------------------------


LOCAL_RANK_ENV = (
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
)
"""Where launchers put a process's rank among the processes of its node (first found wins)."""


def env_local_rank(environ: Mapping[str, str] | None = None) -> int | None:
    """The node-local rank the launcher exported (:data:`LOCAL_RANK_ENV`), or None."""
    env = os.environ if environ is None else environ
    for name in LOCAL_RANK_ENV:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def place_device(
    preference: str,
    *,
    rank: int,
    local_rank: int,
    visible_gpus: int,
    pinned: Sequence[str] = (),
) -> str:
    """The device of one server rank: pinned, else its node-local share of the GPUs.

    Pure (no torch, no MPI), so that the mapping is tested anywhere.

    Parameters
    ----------
    preference
        ``[server] device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    rank
        The server rank (0-based among the server ranks).
    local_rank
        Its rank among the server ranks on its node.
    visible_gpus
        GPUs this process sees (``torch.cuda.device_count()``, which honours
        ``CUDA_VISIBLE_DEVICES``).
    pinned
        ``[server] devices``: server rank ``r`` uses ``pinned[r % len(pinned)]``.

    Returns
    -------
    str
        ``cuda:(local_rank mod visible_gpus)`` for ``cuda`` (and ``auto`` with a GPU); ``cpu``
        for ``auto`` without one; ``cuda`` without a visible GPU (refused when the closure is
        loaded); anything else as given.
    """
    if pinned:
        return pinned[rank % len(pinned)]
    if preference in ("cuda", "auto") and visible_gpus > 0:
        return f"cuda:{local_rank % visible_gpus}"
    if preference == "auto":
        return "cpu"
    return preference


def resolve_device(preference: str, *, required: bool = False) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a torch device.

    Parameters
    ----------
    preference
        ``auto`` picks CUDA when a GPU is visible, else the CPU.
    required
        When true, asking for CUDA without a GPU is an error; when false (a manifest's
        preference) it falls back to the CPU with a warning.

    Returns
    -------
    torch.device

    Raises
    ------
    ClosureLoadError
        If CUDA is required but not available, or the name is unknown.
    """
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" or preference.startswith("cuda:"):
        if torch.cuda.is_available():
            return torch.device(preference)
        if required:
            raise ClosureLoadError(f"device {preference!r} asked for, but torch sees no CUDA GPU")
        warnings.warn(
            f"the manifest prefers device {preference!r} but torch sees no CUDA GPU; using the CPU",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.device("cpu")
    raise ClosureLoadError(f"unknown device {preference!r}: expected auto, cpu, cuda or cuda:N")


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


# -- the torch closure ----------------------------------------------------------------------------


class ClipRecord(NamedTuple):
    """The worst exceedance of an output's clip bound in one call.

    Attributes
    ----------
    value
        The value before clipping with the largest magnitude, in physical units.
    index
        Its flat (C-order) index in the ``(nz, ny, nx)`` output.
    count
        How many values of the output the bound cut in that call.
    bound
        The clip bound.
    """

    value: float
    index: int
    count: int
    bound: float


@dataclass
class ClosureStats:
    """Running counters of one closure instance (read by the server for its summary).

    Attributes
    ----------
    calls
        Forward calls so far.
    clipped
        Per output, how many values the clip bound has cut so far.
    last_clip
        Per output whose bound the last call exceeded, its :class:`ClipRecord` (reset by every
        call: outputs within their bound are absent).
    """

    calls: int = 0
    clipped: dict[str, int] = field(default_factory=dict)
    last_clip: dict[str, ClipRecord] = field(default_factory=dict)


class TorchClosure:
    """A torch module wrapped into a :class:`~bridge.closures.base.Closure`.

    The module takes ``(nz, C_in, ny+2h, nx+2h)`` (inputs as channels in ``spec.inputs`` order,
    levels as the batch; a surface input, ``levels = 1``, is the same channel on every level) and
    returns either one tensor ``(nz, C_out, ny, nx)`` (channels in ``spec.outputs`` order) or a
    dict ``output name -> (nz, ny, nx)``.

    Parameters
    ----------
    module
        A torch module (or any callable on tensors), already on ``device`` and in ``spec.dtype``.
    spec
        Names, halo and dtype.
    input_norm, output_norm
        Normalisation per field name (missing names: identity).
    clip
        Largest absolute value per output name, in physical units (missing: no clipping).
    device
        Where the module lives (``"cpu"``, ``"cuda"``, a ``torch.device``).
    levels_per_call
        Run the module on at most this many levels at a time. ``None`` (default): all levels in
        one call on a GPU, where that is fastest; on a CPU ``CPU_LEVELS_PER_CALL``, where the
        activations of many levels overflow the caches (every engine, channels-last included:
        ``mlbridge bench closure`` measures them).
    channels_last
        Hand the module its batch in the channels-last memory format (``(nz, C, H, W)`` with the
        channels innermost), the layout oneDNN's CPU convolutions run fastest on; the module
        should have been converted with ``module.to(memory_format=torch.channels_last)``.
    staging
        Move inputs and outputs through host buffers kept across calls (pinned when CUDA is
        available), with non-blocking copies and one synchronisation before the numpy results
        are handed back. ``None`` (default): on a CUDA device only.

    Raises
    ------
    ValueError
        If a normalisation or clip names no field of the spec, or ``levels_per_call < 1``.

    Notes
    -----
    Inputs are never written to. With a single input whose dtype is ``spec.dtype``, identity
    normalisation and a CPU device, the module sees the caller's memory itself.
    ``sane_bounds`` holds, per output with a normalisation and no clip, the bound its scale
    implies (:func:`bridge.registry.manifest.sane_bound`); the server enforces it with ``on_nan``.
    """

    def __init__(
        self,
        module: Callable[..., Any],
        spec: ClosureSpec,
        *,
        input_norm: Mapping[str, Normalisation] | None = None,
        output_norm: Mapping[str, Normalisation] | None = None,
        clip: Mapping[str, float] | None = None,
        device: str | torch.device = "cpu",
        levels_per_call: int | None = None,
        channels_last: bool = False,
        staging: bool | None = None,
    ) -> None:
        import torch

        if levels_per_call is not None and levels_per_call < 1:
            raise ValueError(f"levels_per_call must be >= 1 or None, got {levels_per_call}")
        self.device = torch.device(device)
        if levels_per_call is None and self.device.type == "cpu":
            levels_per_call = CPU_LEVELS_PER_CALL
        self.levels_per_call = levels_per_call
        self.channels_last = channels_last
        if staging is None:
            staging = self.device.type == "cuda"
        self.staging = HostStaging() if staging else None
        #: how the module was prepared (``eager``, ``channels_last``, ``aoti``; set by the loader)
        self.engine = "eager"
        #: why the loader did not use a faster engine (empty when it did)
        self.engine_note = ""
        surface = [f.name for f in spec.outputs if f.surface]
        if surface:
            raise ValueError(
                f"closure {spec.name!r}: outputs {surface} have levels = 1; a torch closure "
                "computes each level as one batch item, so its outputs have all levels (its "
                "inputs may be surface fields: they are broadcast over the levels)"
            )
        self.spec = spec
        self.module = module
        self.dtype = _torch_dtype(spec.dtype)
        input_norm = dict(input_norm or {})
        output_norm = dict(output_norm or {})
        clip = dict(clip or {})
        for kind, names, table in (
            ("input_norm", spec.input_names, input_norm),
            ("output_norm", spec.output_names, output_norm),
            ("clip", spec.output_names, clip),
        ):
            unknown = sorted(set(table) - set(names))
            if unknown:
                raise ValueError(f"closure {spec.name!r}: {kind} names {unknown}, not in {names}")
        ident = Normalisation()
        self._in_norm = tuple(input_norm.get(n, ident) for n in spec.input_names)
        self._out_norm = tuple(output_norm.get(n, ident) for n in spec.output_names)
        self._clip = tuple(clip.get(n) for n in spec.output_names)
        self.stats = ClosureStats(clipped={n: 0 for n in spec.output_names if n in clip})
        # read by the server's output checks (outputs with a normalisation and no clip)
        self.sane_bounds = {
            n: b
            for n, norm, c in zip(spec.output_names, self._out_norm, self._clip, strict=True)
            if (b := sane_bound(norm, c)) is not None
        }

    @classmethod
    def from_manifest(
        cls,
        module: Callable[..., Any],
        manifest: Manifest,
        device: str | torch.device = "cpu",
        levels_per_call: int | None = None,
        channels_last: bool = False,
        staging: bool | None = None,
    ) -> TorchClosure:
        """Wrap a module with the spec, normalisation and clip bounds of a manifest.

        Parameters
        ----------
        module
            The loaded module, on ``device`` and in the manifest's dtype.
        manifest
            Its manifest.
        device
            Where the module lives.
        levels_per_call, channels_last, staging
            See the class.

        Returns
        -------
        TorchClosure
        """
        return cls(
            module,
            manifest.spec,
            input_norm={e.name: e.norm for e in manifest.inputs},
            output_norm={e.name: e.norm for e in manifest.outputs},
            clip={e.name: e.clip for e in manifest.outputs if e.clip is not None},
            device=device,
            levels_per_call=levels_per_call,
            channels_last=channels_last,
            staging=staging,
        )

    def __repr__(self) -> str:
        return (
            f"TorchClosure({self.spec.name!r}, halo={self.spec.halo}, device={self.device}, "
            f"engine={self.engine!r})"
        )

    def __call__(
        self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Run the closure on one block, every level at once.

        Parameters
        ----------
        inputs
            ``(nz, ny+2h, nx+2h)`` float arrays keyed by input name.
        mask
            Optional land mask: ``(ny, nx)``, ``(nz, ny, nx)`` or the same with the halo;
            outputs are zero where it is 0.

        Returns
        -------
        dict of str to numpy.ndarray
            C-contiguous ``(nz, ny, nx)`` arrays in the inputs' dtype.

        Raises
        ------
        ClosureInputError
            If the inputs or the mask do not fit the spec.
        ClosureOutputError
            If the module's outputs have other names, shapes or dtype than the spec says.
        """
        import torch

        self.stats.last_clip = {}
        shape = check_inputs(self.spec, inputs)
        arrays = [inputs[n] for n in self.spec.input_names]
        caller_dtype = np.result_type(*arrays)
        with torch.inference_mode():
            x = self._stack_inputs(arrays)
            raw = self._forward(x)
            outs = self._split_outputs(raw, shape)
            mask_t = self._mask_tensor(mask, shape)
            if self.staging is not None:
                result = self._finish_staged(outs, mask_t, shape, caller_dtype)
            else:
                result = {}
                for k, name in enumerate(self.spec.output_names):
                    y = self._finish_output(k, outs[k], mask_t)
                    arr = np.ascontiguousarray(y.cpu().numpy(), dtype=caller_dtype)
                    if any(np.may_share_memory(arr, a) for a in arrays):
                        arr = arr.copy()  # an output must never alias the caller's input buffers
                    result[name] = arr
        self.stats.calls += 1
        return result

    def _finish_output(self, k: int, y: torch.Tensor, mask_t: torch.Tensor | None) -> torch.Tensor:
        """De-normalise, clip (recording the worst value) and mask output ``k``."""
        import torch

        norm = self._out_norm[k]
        if not norm.is_identity:
            y = y * norm.scale + norm.offset
        bound = self._clip[k]
        if bound is not None:
            over = int(torch.count_nonzero(y.abs() > bound))
            if over:
                name = self.spec.output_names[k]
                self.stats.clipped[name] += over
                mag = torch.nan_to_num(y.abs(), nan=0.0, posinf=float("inf"))
                worst = int(torch.argmax(mag))  # flat, C order, as numpy's
                value = float(y.reshape(-1)[worst])
                self.stats.last_clip[name] = ClipRecord(value, worst, over, bound)
            y = y.clamp(-bound, bound)
        if mask_t is not None:
            y = y.masked_fill(~mask_t, 0.0)
        return y

    def _finish_staged(
        self,
        outs: list[torch.Tensor],
        mask_t: torch.Tensor | None,
        shape: tuple[int, int, int],
        caller_dtype: np.dtype,
    ) -> dict[str, np.ndarray]:
        """The device path: every output finished on the device into one tensor, the clip
        records into another, one non-blocking copy of each into host buffers kept across calls,
        one synchronisation, then the numpy results (copies: the buffers are written again by
        the next call)."""
        import torch

        assert self.staging is not None
        names = self.spec.output_names
        dev = self.staging.buffer("out_device", (len(names), *shape), self.dtype, self.device)
        # per output: values cut by the bound, flat index and value of the worst one
        clip_dev = torch.zeros((len(names), 3), dtype=torch.float64, device=self.device)
        for k in range(len(names)):
            y = outs[k]
            norm = self._out_norm[k]
            if not norm.is_identity:
                y = y * norm.scale + norm.offset
            bound = self._clip[k]
            if bound is not None:
                mag = y.abs()
                worst = torch.argmax(torch.nan_to_num(mag, nan=0.0, posinf=float("inf")))
                clip_dev[k, 0] = torch.count_nonzero(mag > bound)
                clip_dev[k, 1] = worst
                clip_dev[k, 2] = y.reshape(-1)[worst]
                y = y.clamp(-bound, bound)
            if mask_t is not None:
                y = y.masked_fill(~mask_t, 0.0)
            dev[k] = y
        host = self.staging.buffer("out_host", dev.shape, self.dtype, torch.device("cpu"))
        host_clip = self.staging.buffer(
            "clip_host", clip_dev.shape, torch.float64, torch.device("cpu")
        )
        host.copy_(dev, non_blocking=True)
        host_clip.copy_(clip_dev, non_blocking=True)
        self.staging.synchronize(self.device)  # the one wait of the call
        result: dict[str, np.ndarray] = {}
        for k, name in enumerate(names):
            over, worst, value = host_clip[k].tolist()
            if over:
                self.stats.clipped[name] += int(over)
                record = ClipRecord(value, int(worst), int(over), float(self._clip[k] or 0.0))
                self.stats.last_clip[name] = record
            result[name] = np.array(host[k].numpy(), dtype=caller_dtype, order="C", copy=True)
        return result

    def _forward(self, x: torch.Tensor) -> Any:
        import torch

        k = self.levels_per_call
        if k is None or x.shape[0] <= k:
            return self.module(x)
        parts = [self.module(x[i : i + k]) for i in range(0, x.shape[0], k)]
        if isinstance(parts[0], Mapping):
            return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        return torch.cat(parts)

    def _stack_inputs(self, arrays: list[np.ndarray]) -> torch.Tensor:
        import torch

        tensors = [_from_numpy(a) for a in arrays]
        if (
            len(tensors) == 1
            and tensors[0].dtype == self.dtype
            and self.device.type == "cpu"
            and self._in_norm[0].is_identity
            and self.staging is None
            and not self.channels_last
        ):
            return tensors[0].unsqueeze(1)  # a view: the module reads the caller's memory
        nz = max(a.shape[0] for a in arrays)  # a surface input (1 level) is broadcast
        nyh, nxh = arrays[0].shape[1:]
        shape = (nz, len(tensors), nyh, nxh)
        if self.staging is not None:
            # host copy into the kept (pinned) buffer, one non-blocking move, the
            # normalisation on the device
            host = self.staging.buffer("in_host", shape, self.dtype, torch.device("cpu"))
            for c, t in enumerate(tensors):
                host[:, c].copy_(t)
            x = self.staging.buffer(
                "in_device", shape, self.dtype, self.device, self._memory_format
            )
            x.copy_(host, non_blocking=True)
        else:
            x = torch.empty(shape, dtype=self.dtype, device=self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for c, t in enumerate(tensors):
                x[:, c].copy_(t)  # one copy, fused with the dtype cast (and the move)
        for c, norm in enumerate(self._in_norm):
            if not norm.is_identity:
                x[:, c].sub_(norm.offset).div_(norm.scale)
        return x

    @property
    def _memory_format(self) -> Any:
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _split_outputs(self, raw: Any, shape: tuple[int, int, int]) -> list[torch.Tensor]:
        import torch

        names = self.spec.output_names
        if isinstance(raw, torch.Tensor):
            if raw.dim() != 4 or raw.shape[1] != len(names):
                raise ClosureOutputError(
                    f"closure {self.spec.name!r}: the module should return "
                    f"(nz, {len(names)}, ny, nx) for outputs {list(names)}, "
                    f"it returned shape {tuple(raw.shape)}"
                )
            outs = [raw[:, k] for k in range(len(names))]
        elif isinstance(raw, Mapping):
            if set(raw) != set(names):
                raise ClosureOutputError(
                    f"closure {self.spec.name!r}: outputs declared {sorted(names)}, "
                    f"the module returned {sorted(raw)}"
                )
            outs = [raw[n] for n in names]
        else:
            raise ClosureOutputError(
                f"closure {self.spec.name!r}: the module must return a tensor or a dict of "
                f"tensors, it returned {type(raw).__name__}"
            )
        for name, y in zip(names, outs, strict=True):
            if tuple(y.shape) != shape:
                raise ClosureOutputError(
                    f"closure {self.spec.name!r}: output {name!r} should have shape {shape} "
                    f"(interior of a halo-{self.spec.halo} block), the module returned "
                    f"{tuple(y.shape)}" + _halo_hint(self.spec.halo, shape, tuple(y.shape))
                )
            if y.dtype != self.dtype:
                raise ClosureOutputError(
                    f"closure {self.spec.name!r}: output {name!r} should be {self.spec.dtype}, "
                    f"the module returned {str(y.dtype).removeprefix('torch.')}"
                )
        return outs

    def _mask_tensor(
        self, mask: np.ndarray | None, shape: tuple[int, int, int]
    ) -> torch.Tensor | None:
        import torch

        if mask is None:
            return None
        m = _interior_mask(np.asarray(mask), shape, self.spec)
        return torch.from_numpy(np.ascontiguousarray(m != 0)).to(self.device)


class HostStaging:
    """Buffers kept across calls, one per role and side (host or device), reallocated only
    when the block's shape or dtype changes.

    Host buffers are pinned (page-locked) when CUDA is available, so that host-device copies
    can be non-blocking; on a machine without CUDA they are plain memory and the same code runs
    (``TorchClosure(..., staging=True)`` on a CPU, as the tests do).
    """

    def __init__(self) -> None:
        import torch

        self.pinned = torch.cuda.is_available()
        self._buffers: dict[tuple[str, str], torch.Tensor] = {}
        #: buffers allocated so far (a reused buffer does not count)
        self.allocations = 0

    def buffer(
        self,
        role: str,
        shape: Sequence[int],
        dtype: torch.dtype,
        device: torch.device,
        memory_format: Any = None,
    ) -> torch.Tensor:
        """The buffer of ``role`` on ``device`` (``cpu``: the host side), of this shape."""
        import torch

        fmt = memory_format or torch.contiguous_format
        key = (role, str(device))  # roles name their side: "in_host", "in_device", ...
        buf = self._buffers.get(key)
        if (
            buf is None
            or tuple(buf.shape) != tuple(shape)
            or buf.dtype != dtype
            or not buf.is_contiguous(memory_format=fmt)
        ):
            pin = self.pinned and device.type == "cpu"
            buf = torch.empty(tuple(shape), dtype=dtype, device=device, pin_memory=pin)
            if fmt is not torch.contiguous_format:
                buf = buf.contiguous(memory_format=fmt)
            self._buffers[key] = buf
            self.allocations += 1
        return buf

    @staticmethod
    def synchronize(device: torch.device) -> None:
        """Wait for the copies queued on ``device`` (nothing to wait for on a CPU)."""
        import torch

        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    import torch

    try:
        return torch.from_numpy(a)
    except (TypeError, ValueError):
        # negative strides or non-native byte order: torch needs a plain copy
        return torch.from_numpy(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")))


def _interior_mask(mask: np.ndarray, shape: tuple[int, int, int], spec: ClosureSpec) -> np.ndarray:
    nz, ny, nx = shape
    h = spec.halo
    if mask.shape[-2:] == (ny + 2 * h, nx + 2 * h) and h > 0:
        mask = mask[..., h : h + ny, h : h + nx]
    if mask.shape not in ((ny, nx), (nz, ny, nx)):
        raise ClosureInputError(
            f"closure {spec.name!r}: mask should be {(ny, nx)} or {(nz, ny, nx)} (or the same "
            f"with the halo of {h}), got {mask.shape}"
        )
    return mask


def _halo_hint(halo: int, want: tuple[int, ...], got: tuple[int, ...]) -> str:
    if len(got) != 3 or got[0] != want[0]:
        return ""
    dy, dx = got[1] - want[1], got[2] - want[2]
    if dy == dx and dy % 2 == 0 and dy != 0:
        return f"; the module consumes a halo of {halo - dy // 2}, the manifest declares {halo}"
    return ""


# -- python closures ------------------------------------------------------------------------------


class ManifestClosure:
    """A plain Python closure held to its manifest: dtype, clip bound and mask applied around it.

    Parameters
    ----------
    inner
        The closure the entry point returned.
    manifest
        Its manifest (``format = "python"``).
    """

    def __init__(self, inner: Closure, manifest: Manifest) -> None:
        self.inner = inner
        self.spec = manifest.spec
        self._dtype = np.dtype(manifest.dtype)
        self._clip = {e.name: e.clip for e in manifest.outputs if e.clip is not None}
        self.stats = ClosureStats(clipped=dict.fromkeys(self._clip, 0))

    def __repr__(self) -> str:
        return f"ManifestClosure({self.spec.name!r}, {self.inner!r})"

    def __call__(
        self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Run the inner closure; see :meth:`TorchClosure.__call__` for arguments and errors."""
        self.stats.last_clip = {}
        shape = check_inputs(self.spec, inputs)
        caller_dtype = np.result_type(*inputs.values())
        cast = {n: np.asarray(a, dtype=self._dtype) for n, a in inputs.items()}
        outputs = self.inner(cast)
        check_outputs(self.spec, outputs, shape)
        m = None if mask is None else _interior_mask(np.asarray(mask), shape, self.spec) != 0
        result = {}
        for name in self.spec.output_names:
            y = np.asarray(outputs[name])
            if y.dtype != self._dtype:
                raise ClosureOutputError(
                    f"closure {self.spec.name!r}: output {name!r} should be {self._dtype}, "
                    f"the closure returned {y.dtype}"
                )
            bound = self._clip.get(name)
            if bound is not None:
                over = int(np.count_nonzero(np.abs(y) > bound))
                if over:
                    self.stats.clipped[name] += over
                    worst = int(np.nanargmax(np.abs(y)))  # a NaN is no exceedance
                    value = float(y.reshape(-1)[worst])
                    self.stats.last_clip[name] = ClipRecord(value, worst, over, bound)
                    y = np.clip(y, -bound, bound)
            if m is not None:
                y = np.where(m, y, 0.0)
            result[name] = np.ascontiguousarray(y, dtype=caller_dtype)
        self.stats.calls += 1
        return result


# -- loading artifacts ----------------------------------------------------------------------------
