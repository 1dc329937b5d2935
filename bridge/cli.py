"""The ``mlbridge`` console script.

Each sub-command lives in its own module, which provides ``add_arguments(parser)``,
``run(args) -> int`` and the module docstring's first line as the summary; the module also
defines ``EXAMPLES`` (shown at the end of ``--help``). Modules are imported only for the
sub-command that runs, so ``mlbridge --help`` stays fast (no torch, no MPI).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module providing add_arguments/run/EXAMPLES
COMMANDS: dict[str, str] = {
    "build": "bridge.launch.build",
    "run": "bridge.launch.launcher",
    "submit": "bridge.launch.submit",
    "bench": "bridge.bench",
    "plot": "bridge.plots",
    "register": "bridge.registry.cli",
    "list": "bridge.registry.cli",
    "show": "bridge.registry.cli",
    "verify": "bridge.registry.cli",
    "remove": "bridge.registry.cli",
    "compile": "bridge.registry.cli",
}

PLUGIN_GROUP = "mlbridge.commands"
"""Entry-point group of sub-commands other distributions add (``name = "module"``): the
closures' evaluation (``mlbridge evaluate``, in ``mlbridge_models``) comes this way, so that the
coupling core never imports the science."""

SUMMARIES: dict[str, str] = {
    "build": "configure and build the Fortran side (toy model, coupling library)",
    "run": "run a coupled Fortran + Python job described by a coupling.toml",
    "submit": "write a Slurm batch script for a coupling.toml and submit it with sbatch",
    "bench": "benchmarks: model, exchange, coupled, closure, scaling",
    "plot": "figures of a run: the per-step timeline of a coupled run",
    "register": "register a trained closure in the registry",
    "list": "list registered closures",
    "show": "show a registered closure's manifest",
    "verify": "re-hash registered artifacts",
    "remove": "remove a registered closure",
    "compile": "compile a registered closure for this machine (AOTInductor, cached)",
}


def plugin_commands() -> dict[str, str]:
    """Sub-commands registered in :data:`PLUGIN_GROUP` (name -> module), without importing them."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in COMMANDS}


def _load(module_name: str):  # noqa: ANN202 - returns a module
    return importlib.import_module(module_name)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlbridge",
        description="Deploy trained PyTorch closures inside Fortran ocean models.",
        epilog=(
            "examples:\n"
            "  mlbridge build\n"
            "  mlbridge run examples/01_coarse/coupling.toml --model-ranks 2\n"
            "  mlbridge submit examples/03_coupled_laplacian/coupling.toml --time 00:20:00\n"
            "  mlbridge register model.pt --manifest manifest.toml\n"
            "  mlbridge bench model\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # only the chosen sub-command's module is imported; the others get a summary line
    chosen = next((a for a in argv if not a.startswith("-")), None)
    plugins = plugin_commands()
    summaries = {**SUMMARIES, **{name: f"(from {module})" for name, module in plugins.items()}}
    for name, module_name in {**COMMANDS, **plugins}.items():
        if name == chosen:
            module = _load(module_name)
            examples = getattr(module, "EXAMPLES", {})
            if isinstance(examples, dict):
                examples = examples.get(name, "")
            p = sub.add_parser(
                name,
                help=summaries[name],
                description=getattr(module, "SUMMARY", summaries[name]),
                epilog=("example:\n" + examples) if examples else None,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            adder = module.add_arguments
            try:
                adder(p, name)
            except TypeError:
                adder(p)
            p.set_defaults(_module=module)
        else:
            sub.add_parser(name, help=summaries[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = args._module
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("mlbridge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
