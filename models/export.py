"""Saving a trained closure as a ``torch.export`` program (``.pt2``), the registry's format.

TorchScript is deprecated upstream; a ``.pt2`` archive written by ``torch.export.save`` holds
the graph of torch operators and the weights, and the registry loads it without running
anything it carries (``bridge.registry.safe_export``). The program is exported with the levels
(batch), height and width dynamic, so that one file serves every block shape a server sees.

``python -m mlbridge_models.export OLD.ts NEW.pt2 --hidden 16 16 16 --no-bias`` re-exports a
TorchScript file of :func:`mlbridge_models.cnn.build_cnn`: its weights are read into the
architecture rebuilt here, the result is exported, and both are run on the same block; the
command refuses to write a program whose outputs differ from the TorchScript module's.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bridge.registry.safe_export import load_exported_program


def example_block(in_channels: int, halo: int, nz: int = 3, seed: int = 0) -> torch.Tensor:
    """A random ``(nz, C, 12 + 2h, 10 + 2h)`` float32 block to trace and compare with."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((nz, in_channels, 12 + 2 * halo, 10 + 2 * halo), generator=gen)


def export_closure(module: torch.nn.Module, path: Path, *, in_channels: int, halo: int) -> Path:
    """Export ``module`` (levels, height and width dynamic) and save it to ``path``.

    Parameters
    ----------
    module
        The trained network, taking ``(nz, in_channels, ny + 2h, nx + 2h)``.
    path
        The ``.pt2`` file to write.
    in_channels, halo
        The closure's inputs and halo (the example block's shape).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the saved program, loaded back, does not reproduce the module's outputs exactly.
    """
    module = module.eval()
    example = example_block(in_channels, halo)
    dyn = torch.export.Dim.DYNAMIC
    program = torch.export.export(module, (example,), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},))
    for node in program.graph.nodes:  # source paths of the machine that exported it: not shipped
        node.meta.pop("stack_trace", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    other = example_block(in_channels, halo, nz=5, seed=1)[:, :, 1:, :]  # another shape too
    with torch.no_grad():
        loaded = load_exported_program(path).module()  # as the registry will read it
        for x in (example, other):
            if not torch.equal(loaded(x), module(x)):
                raise ValueError(f"{path}: the exported program does not reproduce the module")
    return path


def reexport_torchscript(
    source: Path, dest: Path, *, arch: dict[str, Any], in_channels: int, halo: int
) -> torch.nn.Module:
    """Read a TorchScript CNN's weights into :func:`~mlbridge_models.cnn.build_cnn` (``arch``
    its arguments), check it equals the TorchScript module, and export it to ``dest``.

    Returns
    -------
    torch.nn.Module
        The rebuilt module.

    Raises
    ------
    ValueError
        If the weights do not fit the architecture, or the outputs differ.
    """
    from mlbridge_models.cnn import build_cnn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        scripted = torch.jit.load(str(source), map_location="cpu").eval()
    module = build_cnn(**arch).eval()
    result = module.load_state_dict(scripted.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict raises first; kept for clarity
        raise ValueError(f"{source}: weights do not fit build_cnn({arch})")
    x = example_block(in_channels, halo, nz=4, seed=2)
    with torch.no_grad():
        if not torch.equal(scripted(x), module(x)):
            raise ValueError(f"{source}: build_cnn({arch}) with its weights gives other outputs")
    export_closure(module, dest, in_channels=in_channels, halo=halo)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlbridge_models.export``: re-export a TorchScript CNN as a ``.pt2``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlbridge_models.export",
        description="re-export a TorchScript file of mlbridge_models.cnn.build_cnn as a "
        "torch.export program (.pt2), checking that the outputs are identical",
        epilog="example:\n  python -m mlbridge_models.export models/artifacts/subgrid_cnn/"
        "subgrid_cnn.ts models/artifacts/subgrid_cnn/subgrid_cnn.pt2 --hidden 16 16 16 --no-bias",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, help="the TorchScript file")
    parser.add_argument("dest", type=Path, help="the .pt2 file to write")
    parser.add_argument("--in-channels", type=int, default=2)
    parser.add_argument("--out-channels", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32, 32])
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--no-bias", action="store_true", help="convolutions without biases")
    args = parser.parse_args(argv)
    kernels = args.kernel_sizes or [3] * (len(args.hidden) + 1)
    arch = {
        "in_channels": args.in_channels,
        "out_channels": args.out_channels,
        "hidden": tuple(args.hidden),
        "kernel_sizes": tuple(kernels),
        "bias": not args.no_bias,
    }
    halo = sum((k - 1) // 2 for k in kernels)
    try:
        reexport_torchscript(
            args.source, args.dest, arch=arch, in_channels=args.in_channels, halo=halo
        )
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"mlbridge_models.export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dest} (outputs identical to {args.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
