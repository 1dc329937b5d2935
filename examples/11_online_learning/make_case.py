"""Make the online-learning example's inputs: a truth to nudge toward, and a zero network.

The truth (``truth_rest.nc``) is the ocean at rest: ``u = v = 0`` and each layer at its rest
thickness, for every step. Nudged toward it, the toy's nudging tendency of a step is exactly
linear in the state it leaves (module ``nudging`` of the toy)::

    u_nud = -u / (tau - dt),   v_nud = -v / (tau - dt)

which is the target the servers learn online, from zero weights, with a network that is a
pointwise linear map (``mlbridge_models.cnn.build_cnn`` with one 1x1 convolution). Its
normalisation (input scale ``S``, output scale ``S / (tau - dt)``) makes the exact answer the
weight matrix ``-I`` and a zero bias::

    python examples/11_online_learning/make_case.py              # registry/ and truth beside it
    python examples/11_online_learning/make_case.py --home DIR   # another registry
    mlbridge run examples/11_online_learning/coupling.toml       # learn while the toy runs

Registers ``lin-online@1`` (state_dict, zero weights); the weights learned are in
``RUN/online/lin-online.pt`` and ``timing.json`` has the loss and the training time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "lin-online"
NX, NY, NZ = 20, 20, 2  # &namusr_def of namelist_cfg
HTOT = 1000.0  # rn_htot: split equally over the layers at rest
DT, TAU = 1440.0, 28800.0  # rn_Dt, rn_nudge_tau of namelist_cfg
INPUT_SCALE = 5.0e-3  # m s-1: the size of u, v in the example's 60 steps

MANIFEST = """\
name = "{name}"
version = "1"
format = "state_dict"
artifact = "weights.pt"
entry_point = "mlbridge_models.cnn:build_cnn"
halo = 0
dtype = "float32"
device = "cpu"
description = "pointwise linear map (u, v) -> (su, sv), zero weights: trained online"
license = "Apache-2.0"

[arch]
in_channels = 2
out_channels = 2
hidden = []
kernel_sizes = [1]

[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
scale = {s_in!r}

[[inputs]]
name = "v"
grid = "V"
units = "m s-1"
scale = {s_in!r}

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
scale = {s_out!r}

[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
scale = {s_out!r}

[provenance]
training_data = "none: zero weights, learned online from the toy's nudging tendency"
"""


def write_truth(path: Path, records: tuple[int, int] = (0, 1000000)) -> Path:
    """The rest state as a nudging truth (``*_grid.nc`` layout: u, v, h (record, z, y, x), kt)."""
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time_counter", None)
        for name, size in (("z", NZ), ("y", NY), ("x", NX)):
            nc.createDimension(name, size)
        dims = ("time_counter", "z", "y", "x")
        for name in ("u", "v", "h"):
            nc.createVariable(name, "f8", dims)
        nc.createVariable("kt", "i4", ("time_counter",))
        zero = np.zeros((len(records), NZ, NY, NX))
        nc["u"][:] = zero
        nc["v"][:] = zero
        nc["h"][:] = zero + HTOT / NZ
        nc["kt"][:] = np.asarray(records, dtype=np.int32)
    return path


def write_closure(out_dir: Path) -> Path:
    """The zero-weight linear network and its manifest in ``out_dir``; the manifest's path."""
    import torch
    from mlbridge_models.cnn import build_cnn

    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_cnn(in_channels=2, out_channels=2, hidden=(), kernel_sizes=(1,))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    torch.save(model.state_dict(), out_dir / "weights.pt")
    manifest = out_dir / "manifest.toml"
    s_out = INPUT_SCALE / (TAU - DT)
    manifest.write_text(MANIFEST.format(name=NAME, s_in=INPUT_SCALE, s_out=s_out))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Write the truth and the closure, register the closure; print the reference."""
    from bridge.registry.store import Registry

    parser = argparse.ArgumentParser(
        description="Make the online-learning example: the truth file and lin-online@1.",
        epilog="example:\n  python examples/11_online_learning/make_case.py --home /tmp/registry",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--home", type=Path, default=HERE / "registry", help="registry directory (default: "
        "registry/ beside this script, as coupling.toml says)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "closure", help="closure files")
    parser.add_argument(
        "--truth", type=Path, default=HERE / "truth_rest.nc", help="the nudging truth written"
    )
    args = parser.parse_args(argv)
    write_truth(args.truth)
    ref = Registry(args.home).register(None, write_closure(args.out))
    print(f"wrote {args.truth}; registered {ref} in {args.home.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
