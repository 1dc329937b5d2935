"""``mlbridge build``: configure and build the Fortran side out of source.

Runs CMake on ``fortran_stubs/`` into a build directory (default ``build/``, or
``$MLBRIDGE_BUILD_DIR``), which is idempotent: a second call rebuilds only what changed. Reports
what CMake found: the Fortran compiler, MPI, and whether OASIS3-MCT is available.
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

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO / "fortran_stubs"

EXAMPLES = "  mlbridge build\n  mlbridge build --build-dir /tmp/mlb-build --debug\n"


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


def default_build_dir() -> Path:
    return Path(os.environ.get("MLBRIDGE_BUILD_DIR", REPO / "build")).resolve()


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
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError("cmake not found on PATH: apt-get install cmake")
    bdir = (build_dir or default_build_dir()).resolve()
    build_type = "Debug" if debug else "Release"
    cache = bdir / "CMakeCache.txt"
    configured = (
        cache.is_file() and _cache_value(cache.read_text(), "CMAKE_BUILD_TYPE") == build_type
    )
    if not configured:
        _run(
            [cmake, "-S", str(SOURCE_DIR), "-B", str(bdir), f"-DCMAKE_BUILD_TYPE={build_type}"],
            "CMake configure",
            quiet,
        )
    _run(
        [cmake, "--build", str(bdir), "-j", str(jobs or os.cpu_count() or 1)], "CMake build", quiet
    )
    return read_build_info(bdir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="build directory (default: build/ or $MLBRIDGE_BUILD_DIR)",
    )
    parser.add_argument("--debug", action="store_true", help="debug build with -Wall -fcheck=all")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel build jobs")


def run(args: argparse.Namespace) -> int:
    try:
        info = build(args.build_dir, debug=args.debug, jobs=args.jobs)
    except BuildError as err:
        print(f"mlbridge build: error: {err}", file=sys.stderr)
        return 1
    print(f"build directory : {info.build_dir} ({info.build_type})")
    print(f"Fortran compiler: {info.fortran_compiler}")
    print(f"MPI             : {info.mpi}")
    print(f"OASIS3-MCT      : {info.oasis}")
    exes = sorted(p.name for p in (info.build_dir / "bin").glob("*") if p.is_file())
    print(f"executables     : {', '.join(exes) if exes else 'none'}")
    return 0
