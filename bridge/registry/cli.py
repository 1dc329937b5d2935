"""Registry sub-commands of the ``mlbridge`` console script: register, list, show, verify, remove,
compile.

Argument parsing and printing only; the work is done by :class:`bridge.registry.Registry`.
torch is imported only by ``register`` (for the dry forward pass).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.registry.manifest import ManifestError
from bridge.registry.store import (
    MANIFEST_FILE,
    Entry,
    Registry,
    RegistryError,
    code_grant,
    entry_problems,
)
from bridge.registry.trust import CodeTrust, UntrustedCodeError

EXAMPLES: dict[str, str] = {
    "register": (
        "  mlbridge register models/cnn_gz21/weights.pt --manifest models/cnn_gz21/manifest.toml\n"
        "  mlbridge register --manifest manifest.toml --force   # artifact named in the manifest\n"
        "  mlbridge register weights.pt --manifest m.toml --architecture mypkg.nets:build_unet\n"
        "  mlbridge register --manifest my_closure.toml --trust-code   # a python closure\n"
        "  mlbridge register --manifest manifest.toml --compile  # and compile it (AOTInductor)\n"
    ),
    "list": "  mlbridge list\n  mlbridge list --home /scratch/$USER/mlbridge\n",
    "show": "  mlbridge show cnn_gz21          # newest version\n  mlbridge show cnn_gz21@1.0\n",
    "verify": "  mlbridge verify                 # every registered closure\n"
    "  mlbridge verify cnn_gz21@1.0\n",
    "remove": "  mlbridge remove cnn_gz21@1.0\n",
    "compile": "  mlbridge compile cnn_gz21@1.0   # once per machine and torch version\n"
    "  mlbridge compile cnn_gz21 --home examples/07_subgrid_cnn/registry\n",
}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Add the options of sub-command ``name`` to its parser.

    Parameters
    ----------
    parser
        The sub-command's parser.
    name
        ``register``, ``list``, ``show``, ``verify``, ``remove`` or ``compile``.

    Raises
    ------
    ValueError
        If ``name`` is not a registry sub-command.
    """
    if name == "register":
        parser.add_argument(
            "artifact",
            nargs="?",
            type=Path,
            metavar="ARTIFACT",
            help="the artifact file (default: the manifest's 'artifact', beside the manifest)",
        )
        parser.add_argument(
            "--manifest", "-m", type=Path, required=True, metavar="M.toml", help="manifest TOML"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="replace name@version if registered with other content",
        )
        parser.add_argument(
            "--architecture",
            action="append",
            default=[],
            metavar="MODULE:CALLABLE",
            help="trust this architecture factory for a format 'state_dict' manifest (one not "
            "shipped in the mlbridge.architectures entry points of an installed package); it is "
            "imported and called with [arch]",
        )
        parser.add_argument(
            "--trust-code",
            action="store_true",
            help="trust the Python code the manifest's entry_point names (format 'python' "
            "closures not shipped with an installed package): it runs with your permissions at "
            "registration and in every run; the record, 'mlbridge show' and the run log say so",
        )
        parser.add_argument(
            "--compile",
            action="store_true",
            help="also compile the closure for this machine (AOTInductor, cached in the "
            "registry; the same as 'mlbridge compile REF' afterwards)",
        )
    elif name == "compile":
        parser.add_argument(
            "ref", metavar="NAME[@VERSION]", help="closure (default: newest version)"
        )
    elif name == "show":
        parser.add_argument(
            "ref", metavar="NAME[@VERSION]", help="closure (default: newest version)"
        )
    elif name == "verify":
        parser.add_argument(
            "ref", nargs="?", default=None, metavar="REF", help="closure to check (default: all)"
        )
    elif name == "remove":
        parser.add_argument("ref", metavar="NAME@VERSION", help="the version to delete")
    elif name != "list":
        raise ValueError(f"not a registry sub-command: {name!r}")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="registry directory (default: $MLBRIDGE_HOME, else $XDG_DATA_HOME/mlbridge, "
        "else ~/.local/share/mlbridge)",
    )


def run(args: argparse.Namespace) -> int:
    """Run one registry sub-command; return the exit status (0 ok, 1 error or mismatch)."""
    registry = Registry(args.home)
    command = args.command
    try:
        if command == "register":
            trust = CodeTrust(frozenset(args.architecture), args.trust_code)
            ref = registry.register(args.artifact, args.manifest, force=args.force, trust=trust)
            print(f"registered {ref} in {registry.root}")
            entry = registry.show(ref)
            grant = code_grant(entry)
            if grant is not None and grant.user_trusted:
                print(f"code: {grant.describe()}")
            return _compile(registry, ref) if args.compile else 0
        if command == "compile":
            return _compile(registry, args.ref)
        if command == "list":
            return _list(registry)
        if command == "show":
            return _show(registry, args.ref)
        if command == "verify":
            return _verify(registry, args.ref)
        if command == "remove":
            print(f"removed {registry.remove(args.ref)} from {registry.root}")
            return 0
    except (RegistryError, ManifestError, UntrustedCodeError) as exc:
        print(f"mlbridge {command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file system failure the registry did not expect: one line
        where = exc.filename or registry.root
        print(f"mlbridge {command}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    raise ValueError(f"not a registry sub-command: {command!r}")


def _compile(registry: Registry, ref: str) -> int:
    ref = registry.resolve(ref)
    entry = registry.show(ref)
    if entry.manifest is not None and entry.manifest.format == "python":
        print(f"{ref}: format 'python': nothing to compile")
        return 0
    closure = registry.compile(ref)
    engine = getattr(closure, "engine", "")
    note = getattr(closure, "engine_note", "")
    if engine == "aoti":
        print(f"compiled {ref}: {note}")
        return 0
    print(f"mlbridge compile: {ref} not compiled, it runs {engine}: {note}", file=sys.stderr)
    return 1


def _list(registry: Registry) -> int:
    entries = registry.list()
    if not entries:
        print(f"no closures registered in {registry.root}")
        return 0
    rows = [("REF", "FORMAT", "HALO", "INPUTS -> OUTPUTS", "DESCRIPTION")]
    for e in entries:
        m = e.manifest
        if m is None:
            rows.append((e.ref, "?", "?", "?", e.problem))
            continue
        io = f"{','.join(m.spec.input_names)} -> {','.join(m.spec.output_names)}"
        rows.append(
            (
                e.ref,
                m.format,
                str(m.halo),
                io,
                m.description.splitlines()[0][:60] if m.description else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    damaged = sum(e.manifest is None for e in entries)
    note = f"; {damaged} damaged: see 'mlbridge verify'" if damaged else ""
    print(f"({len(entries)} in {registry.root}{note})")
    return 0


def _show(registry: Registry, ref: str) -> int:
    """Print an entry; exit 1 when a file differs from its recorded hash or the code is refused."""
    e = registry.show(ref)
    record = e.record
    print(f"{e.ref}  ({e.directory})")
    source = record.get("source", {}).get("manifest")
    print(f"registered {record.get('registered_at', '?')} from {source}")
    for name, sha in record.get("sha256", {}).items():
        print(f"sha256 {sha}  {name} (recorded at registration)")
    dry = record.get("dry_run", {})
    for name, out in dry.get("outputs", {}).items():
        print(
            f"dry run: {name} {tuple(out['shape'])} {out['dtype']} max|.| {out['max_abs']:.3g} "
            f"(inputs {tuple(dry.get('input_shape', ()))})"
        )
    problems = [str(p) for p in entry_problems(e)]
    if e.problem and e.problem not in problems:
        problems.append(e.problem)
    print(f"code: {_code_line(e, problems)}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    changed = any("sha256 mismatch" in p and MANIFEST_FILE in p for p in problems)
    title = " (CHANGED since registration: not what was registered)" if changed else ""
    print(f"--- {MANIFEST_FILE}{title}")
    try:
        print((e.directory / MANIFEST_FILE).read_text(encoding="utf-8"), end="")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"({e.directory / MANIFEST_FILE}: cannot be read: {exc})")
    return 1 if problems else 0


def _code_line(entry: Entry, problems: list[str]) -> str:
    """What Python code the entry runs, and why it may (or a problem when it may not)."""
    if entry.manifest is None:
        return "unknown (the manifest cannot be read)"
    try:
        grant = code_grant(entry)
    except (UntrustedCodeError, RegistryError) as exc:
        problems.append(str(exc))
        return f"{entry.manifest.entry_point}: REFUSED (see below)"
    if grant is None:
        return f"none (format {entry.manifest.format!r}: no Python code is imported)"
    return grant.describe()


def _verify(registry: Registry, ref: str | None) -> int:
    results = registry.verify(ref)
    if not results:
        print(f"no closures registered in {registry.root}")
        return 0
    for v in results:
        print(f"ok       {v.ref}" if v.ok else f"MISMATCH {v.ref}")
        for problem in v.problems:
            print(f"  {problem}")
    bad = sum(not v.ok for v in results)
    print(f"{len(results) - bad} ok, {bad} changed since registration")
    return 1 if bad else 0
