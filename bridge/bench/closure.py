"""Closure forward time: the reference CNN on one block, levels batched vs one call per level.

The server runs a closure on all levels of a block at once (levels as the batch). This measures
what that buys over calling the closure once per level, through the same ``TorchClosure`` the
server uses (numpy in, numpy out), on a ``size x size`` interior plus the CNN's halo.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

EXAMPLES = (
    "  mlbridge bench closure --repeats 5\n"
    "  mlbridge bench closure --nz 1 10 30 75 --size 64 --threads 4 --device cpu\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mlbridge bench closure`` (``--repeats`` is added by ``bridge.bench``)."""
    parser.add_argument(
        "--nz", type=int, nargs="+", default=[1, 10, 30, 75], help="level counts to time"
    )
    parser.add_argument("--size", type=int, default=64, help="interior block width (cells)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--hidden", type=int, default=32, help="channels of the CNN's hidden layers (3 of them)"
    )
    parser.add_argument(
        "--levels-per-call",
        type=int,
        nargs="*",
        default=[8],
        metavar="K",
        help="also time batches of K levels per call (TorchClosure levels_per_call)",
    )


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy initialisation
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()  # returns numpy arrays, so a GPU run is finished when it returns
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_cnn(hidden: int, layers: int = 4) -> tuple[Any, int]:
    """A CNN the size of the trained subgrid closure: ``layers`` 3x3 convolutions (2 -> hidden
    -> ... -> 2 channels, ReLU between, no padding), and its halo (one cell per layer)."""
    from torch import nn

    channels = [2] + [hidden] * (layers - 1) + [2]
    parts: list[Any] = []
    for k, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        parts.append(nn.Conv2d(c_in, c_out, 3, bias=False))
        if k < layers - 1:
            parts.append(nn.ReLU())
    return nn.Sequential(*parts), layers


def run(args: argparse.Namespace) -> int:
    """Time the reference CNN and print one line per level count; return 0.

    Raises
    ------
    bridge.registry.torch_closure.ClosureLoadError
        If ``--device cuda`` is asked for without a GPU.
    """
    import numpy as np
    import torch

    from bridge.closures.base import ClosureSpec, FieldSpec
    from bridge.registry.torch_closure import TorchClosure, resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, required=args.device == "cuda")
    torch.manual_seed(0)
    module, halo = bench_cnn(args.hidden)
    module = module.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    fields = (FieldSpec("u", "U", "m s-1"), FieldSpec("v", "V", "m s-1"))
    spec = ClosureSpec(
        "bench_cnn",
        halo,
        fields,
        (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2")),
        args.dtype,
    )
    all_levels = 1 << 30  # one call on every level, whatever the device's default
    closure = TorchClosure(module, spec, device=device, levels_per_call=all_levels)
    chunked = {
        k: TorchClosure(module, spec, device=device, levels_per_call=k)
        for k in args.levels_per_call
    }
    h, n = halo, args.size
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    print(
        f"closure bench: CNN 3x3 x4 (halo {h}, hidden {args.hidden}), block {n}x{n} + halo, "
        f"{args.dtype}, device {device}{f' ({gpu})' if gpu else ''}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    print(
        f"{'nz':>4} {'batched ms':>11} {'per-level ms':>13} {'ratio':>6} "
        f"{'batched ms/level':>17} {'Mcell/s':>8}" + "".join(f" {f'by {k} ms':>9}" for k in chunked)
    )
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    for nz in args.nz:
        inputs = {
            f.name: rng.standard_normal((nz, n + 2 * h, n + 2 * h)).astype(dtype) for f in fields
        }
        levels = [{k: a[z : z + 1] for k, a in inputs.items()} for z in range(nz)]

        def per_level(levels: list[dict[str, np.ndarray]] = levels) -> None:
            for one in levels:
                closure(one)

        batched_s = _median_seconds(lambda inputs=inputs: closure(inputs), args.repeats)
        per_level_s = _median_seconds(per_level, args.repeats)
        chunk_s = [
            _median_seconds(lambda c=c, inputs=inputs: c(inputs), args.repeats)
            for c in chunked.values()
        ]
        print(
            f"{nz:>4} {batched_s * 1e3:>11.2f} {per_level_s * 1e3:>13.2f} "
            f"{per_level_s / batched_s:>6.2f} {batched_s * 1e3 / nz:>17.3f} "
            f"{nz * n * n / batched_s / 1e6:>8.2f}" + "".join(f" {t * 1e3:>9.2f}" for t in chunk_s)
        )
    print("ratio = one call per level / all levels batched (> 1: batching wins);")
    print("by K = batches of K levels per call (TorchClosure levels_per_call=K)")
    return 0
