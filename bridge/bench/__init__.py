"""Benchmarks: ``mlbridge bench model|exchange|coupled|closure|scaling``.

Each benchmark prints its figures and ratios against a baseline measured in the same run
(medians over repeats); none of them asserts a time.
"""

from __future__ import annotations

import argparse
import importlib

BENCHES: dict[str, tuple[str, str]] = {
    "model": ("bridge.bench.model", "toy model alone: cell-updates/s and seconds per model year"),
    "exchange": (
        "bridge.bench.exchange",
        "bridge round trip vs raw MPI ping-pong of the same bytes",
    ),
    "coupled": ("bridge.bench.coupled", "model step, closure alone, coupled step (lag 0 and 1)"),
    "closure": (
        "bridge.bench.closure",
        "closure forward time, levels batched vs one call per level",
    ),
    "scaling": (
        "bridge.bench.scaling",
        "N model ranks : M server ranks, model step cost knob: time and resource overhead",
    ),
}

EXAMPLES = "  mlbridge bench model --repeats 3\n  mlbridge bench exchange --transport mpi\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module_name, summary) in BENCHES.items():
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(_bench_module=module_name)
        p.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported")
        _bench_arguments(module_name, p)


def _bench_arguments(module_name: str, parser: argparse.ArgumentParser) -> None:
    # bench-specific options; the module is imported only when it is cheap to do so
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    extra = getattr(module, "add_arguments", None)
    if extra is not None:
        extra(parser)
    if getattr(module, "EXAMPLES", ""):
        parser.epilog = "example:\n" + module.EXAMPLES


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(args._bench_module)
    return int(module.run(args) or 0)
