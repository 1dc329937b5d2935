"""Build a small CNN closure, save it as a torch.export program with its manifest, register it.

The network is the reference CNN of ``models/cnn.py`` (four valid 3x3 convolutions, so a halo
of 4) with random weights drawn from a fixed seed: it stands for a trained closure. It maps the
model's ``u`` and ``v`` to two tendencies ``su`` and ``sv``::

    python examples/04_register_cnn/make_closure.py                # registry/ beside this file
    python examples/04_register_cnn/make_closure.py --home DIR     # another registry directory
    mlbridge run examples/04_register_cnn/coupling.toml            # couple it to mlb_driver

Writes ``<out>/gz_toy.pt2`` (``torch.export``) and ``<out>/manifest.toml``, then registers them as
``gz-toy@1`` (``--version``, ``--seed``: another version with other weights; registering the
same content again changes nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "gz-toy"
VERSION = "1"
SEED = 1234
HIDDEN = (8, 8, 8)

MANIFEST = """\
name = "{name}"
version = "{version}"
format = "export"
artifact = "gz_toy.pt2"
halo = 4
dtype = "float32"
device = "cpu"
description = "example subgrid momentum closure: reference CNN, random weights (seed {seed})"
license = "Apache-2.0"

[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
offset = 250.0    # the synthetic driver's fields lie in [0, 500)
scale = 150.0

[[inputs]]
name = "v"
grid = "V"
units = "m s-1"
offset = 250.0
scale = 150.0

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
scale = 1.0e-3

[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
scale = 1.0e-3

[provenance]
training_data = "none: random weights, for the coupling example and tests"
notes = "mlbridge_models.cnn.build_cnn(2, 2, hidden={hidden}), torch.manual_seed({seed})"
"""


def write_closure(out_dir: Path, *, seed: int = SEED, version: str = VERSION) -> Path:
    """Save the seeded CNN as a ``.pt2`` program and write its manifest into ``out_dir``.

    Parameters
    ----------
    out_dir
        Directory to write ``gz_toy.pt2`` and ``manifest.toml`` into (created).
    seed
        Seed of the random weights.
    version
        The version to register it under.

    Returns
    -------
    Path
        The manifest.
    """
    import torch
    from mlbridge_models.cnn import build_cnn
    from mlbridge_models.export import export_closure

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_cnn(in_channels=2, out_channels=2, hidden=HIDDEN).eval()
    export_closure(model, out_dir / "gz_toy.pt2", in_channels=2, halo=4)
    manifest = out_dir / "manifest.toml"
    manifest.write_text(
        MANIFEST.format(name=NAME, version=version, seed=seed, hidden=list(HIDDEN)),
        encoding="utf-8",
    )
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Write the closure files and register them; print the reference."""
    from bridge.registry.store import Registry

    parser = argparse.ArgumentParser(
        description="Build, save and register the example CNN closure gz-toy@1.",
        epilog="example:\n  python examples/04_register_cnn/make_closure.py --home /tmp/registry",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "closure", help="where the artifact and manifest go"
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=HERE / "registry",
        help="registry directory (default: registry/ beside this script, as coupling.toml says)",
    )
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the random weights")
    parser.add_argument("--version", default=VERSION, help=f"version (default {VERSION})")
    args = parser.parse_args(argv)
    manifest = write_closure(args.out, seed=args.seed, version=args.version)
    ref = Registry(args.home).register(None, manifest)
    print(f"registered {ref} in {args.home.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
