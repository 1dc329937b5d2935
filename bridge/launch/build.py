"""``mlbridge build``: configure and build the Fortran side out of source.

Runs CMake on the Fortran sources (:func:`bridge.paths.fortran_sources`: ``fortran_stubs/`` of a
checkout, else the copy shipped in the installed package) into a build directory (default
:func:`bridge.paths.default_build_dir`: ``$MLBRIDGE_BUILD_DIR``, else ``build/`` of a checkout,
else ``~/.local/share/mlbridge/build``), which is idempotent: a second call rebuilds only what
changed. With ``--prefix`` it then installs the coupling library (``find_package(MLBridge)``) and
copies the executables to ``PREFIX/bin``. Reports where it built and what CMake found: the
Fortran compiler, MPI, and whether OASIS3-MCT is available.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bridge import paths
from bridge.paths import default_build_dir

EXAMPLES = (
    "  mlbridge build\n"
    "  mlbridge build --build-dir /tmp/mlb-build --debug\n"
    "  mlbridge build --prefix ~/.local   # then: mlbridge run CONFIG.toml --build-dir ~/.local\n"
)


class BuildError(RuntimeError):
    """Raised when CMake fails to configure or build; the message holds the tail of its log."""


@dataclass(frozen=True)
class BuildInfo:
    """What a configured build directory contains."""

    build_dir: Path
    fortran_compiler: str
    mpi: str
    oasis: str
    build_type: str

    def bin(self, name: str) -> Path:
        return self.build_dir / "bin" / name


def _cache_value(cache: str, key: str) -> str:
    match = re.search(rf"^{re.escape(key)}:[A-Z]+=(.*)$", cache, re.MULTILINE)
    return match.group(1).strip() if match else ""


def read_build_info(build_dir: Path) -> BuildInfo:
    """Summarise a configured build directory from its CMakeCache.txt."""
    cache_file = build_dir / "CMakeCache.txt"
    cache = cache_file.read_text(errors="replace") if cache_file.is_file() else ""
    compiler = _cache_value(cache, "CMAKE_Fortran_COMPILER") or "not found"
    mpi = _cache_value(cache, "MPI_Fortran_COMPILER") or _cache_value(cache, "MPIEXEC_EXECUTABLE")
    oasis_dir = _cache_value(cache, "OASIS3MCT_LIBRARY") or _cache_value(cache, "OASIS_LIBRARY")
    oasis = oasis_dir if oasis_dir and not oasis_dir.endswith("NOTFOUND") else "not found"
    return BuildInfo(
        build_dir=build_dir,
        fortran_compiler=compiler,
        mpi=mpi or "not found",
        oasis=oasis,
        build_type=_cache_value(cache, "CMAKE_BUILD_TYPE") or "Release",
    )


def _run(cmd: list[str], what: str, quiet: bool) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BuildError(f"{what} failed ({' '.join(cmd)}):\n{tail}")
    if not quiet and proc.stdout.strip():
        lines = [ln for ln in proc.stdout.splitlines() if "Error" in ln or "Warning" in ln]
        for line in lines[-10:]:
            print(line)


def build(
    build_dir: Path | None = None,
    *,
    debug: bool = False,
    jobs: int | None = None,
    quiet: bool = True,
) -> BuildInfo:
    """Configure (if needed) and build the Fortran side; return what was found.

    Raises
    ------
    BuildError
        If ``cmake`` is missing or the configure or build step fails.
    """
    cmake = _cmake()
    bdir = (build_dir or default_build_dir()).expanduser().resolve()
    sources = paths.fortran_sources()
    build_type = "Debug" if debug else "Release"
    cache_file = bdir / "CMakeCache.txt"
    cache = cache_file.read_text(errors="replace") if cache_file.is_file() else ""
    configured_from = _cache_value(cache, "CMAKE_HOME_DIRECTORY")
    if configured_from and Path(configured_from).resolve() != sources.resolve():
        # CMake refuses a second source tree in one build directory: say so before it does
        raise BuildError(
            f"{bdir} was configured from {configured_from}, but the sources are now {sources} "
            "(another checkout or installation): remove it, or build elsewhere with --build-dir"
        )
    if not cache or _cache_value(cache, "CMAKE_BUILD_TYPE") != build_type:
        _run(
            [cmake, "-S", str(sources), "-B", str(bdir), f"-DCMAKE_BUILD_TYPE={build_type}"],
            "CMake configure",
            quiet,
        )
    _run(
        [cmake, "--build", str(bdir), "-j", str(jobs or os.cpu_count() or 1)], "CMake build", quiet
    )
    return read_build_info(bdir)


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError("cmake not found on PATH: apt-get install cmake")
    return cmake


def install(info: BuildInfo, prefix: Path, *, quiet: bool = True) -> list[Path]:
    """Install a build under ``prefix``; return the executables copied to ``prefix/bin``.

    ``cmake --install`` puts the coupling library, its ``.mod`` file, the CMake package
    (``find_package(MLBridge)`` with ``-DCMAKE_PREFIX_PATH=prefix``) and the pkg-config file
    there; the executables (the toy model, the exchange driver) and the OASIS shim, which CMake
    does not install, are copied to ``prefix/bin`` and ``prefix/lib``, so that
    ``mlbridge run --build-dir PREFIX`` finds them as in a build directory.

    Raises
    ------
    BuildError
        If ``cmake --install`` fails or a file cannot be copied.
    """
    prefix = prefix.expanduser().resolve()
    _run([_cmake(), "--install", str(info.build_dir), "--prefix", str(prefix)], "install", quiet)
    copied: list[Path] = []
    try:
        for sub in ("bin", "lib"):
            for src in sorted((info.build_dir / sub).glob("*")):
                is_exe = sub == "bin" and src.is_file() and os.access(src, os.X_OK)
                if is_exe or src.name.startswith("libmlb_oasis_shim"):
                    (prefix / sub).mkdir(parents=True, exist_ok=True)
                    copied.append(Path(shutil.copy2(src, prefix / sub / src.name)))
    except OSError as err:
        raise BuildError(f"copying the executables to {prefix}: {err}") from err
    return copied


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="build directory (default: $MLBRIDGE_BUILD_DIR, else build/ of a checkout, else "
        "~/.local/share/mlbridge/build)",
    )
    parser.add_argument(
        "--prefix",
        type=Path,
        default=None,
        metavar="DIR",
        help="then install the library, its CMake package and the executables under DIR "
        "(DIR/lib, DIR/include, DIR/bin)",
    )
    parser.add_argument("--debug", action="store_true", help="debug build with -Wall -fcheck=all")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel build jobs")


def run(args: argparse.Namespace) -> int:
    print(f"mlbridge build: sources {paths.fortran_sources()}", flush=True)
    try:
        info = build(args.build_dir, debug=args.debug, jobs=args.jobs)
        installed = install(info, args.prefix) if args.prefix is not None else []
    except BuildError as err:
        print(f"mlbridge build: error: {err}", file=sys.stderr)
        return 1
    print(f"build directory : {info.build_dir} ({info.build_type})")
    print(f"Fortran compiler: {info.fortran_compiler}")
    print(f"MPI             : {info.mpi}")
    print(f"OASIS3-MCT      : {info.oasis}")
    exes = sorted(p.name for p in (info.build_dir / "bin").glob("*") if p.is_file())
    print(f"executables     : {', '.join(exes) if exes else 'none'}")
    if args.prefix is not None:
        prefix = args.prefix.expanduser().resolve()
        print(f"installed in    : {prefix} ({len(installed)} executables and libraries copied)")
        print(f"next            : mlbridge run CONFIG.toml --build-dir {prefix}")
    elif info.build_dir != default_build_dir():
        print(f"next            : mlbridge run CONFIG.toml --build-dir {info.build_dir}")
    else:
        print("next            : mlbridge run CONFIG.toml (finds the executables here)")
    return 0
