"""The Fortran package as a user gets it, and the Fortran test build.

The library is built alone (``MLB_BUILD_TOY=OFF``), installed into a prefix of its own, and that
prefix is then moved: both ways a model links it must still work from the new place.
``tests/cmake_consumer`` is linked (a) with nothing but the MPI wrapper and
``pkg-config --cflags --libs mlbridge`` and (b) with ``find_package(MLBridge)``, then run coupled
to one server under mpirun (closure ``identity``, real64 and real32 fields), and once with a
coupling the handshake rejects, whose message must come back through ``mlb_error_message``.
The installed flags carry no ``-march`` or ``-fcheck``; the test build (Debug, ``MLB_STRICT=ON``:
warnings are errors) builds the whole tree and passes its ctest tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_coupling_package import _run

from bridge.config.coupling import CouplingConfig, write_config_json
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command, python_program

REPO = Path(__file__).resolve().parents[1]
CONSUMER = REPO / "tests" / "cmake_consumer"
IDENTITY = {"closure": "identity", "inputs": {"u": "u"}, "outputs": {"id_u": "u_back"}}
IDENTITY_R4 = {"closure": "identity", "inputs": {"u4": "u4"}, "outputs": {"id_u4": "u4_back"}}
FORBIDDEN = ("-march", "-fcheck", "-Werror")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} not on PATH (apt-get install {package})"
    return path


def configure_and_build(build: Path, *options: str) -> None:
    cmake = tool("cmake", "cmake")
    _run([cmake, "-S", str(REPO / "fortran_stubs"), "-B", str(build), *options])
    _run([cmake, "--build", str(build), "-j", str(os.cpu_count() or 1)])


def target_flags(build: Path, target_dir: str, target: str) -> str:
    """The Fortran flags CMake compiles ``target`` with (its flags.make)."""
    flags = build / target_dir / "CMakeFiles" / f"{target}.dir" / "flags.make"
    match = re.search(r"^Fortran_FLAGS = (.*)$", flags.read_text(), re.MULTILINE)
    assert match, f"no Fortran_FLAGS in {flags}"
    return match.group(1)


def compiler_id(build: Path) -> str:
    for path in build.glob("CMakeFiles/*/CMakeFortranCompiler.cmake"):
        match = re.search(r'CMAKE_Fortran_COMPILER_ID "(\w*)"', path.read_text())
        if match:
            return match.group(1)
    return ""


def run_coupled(
    tmp_path: Path, exe: Path, exchanges: list[dict[str, Any]], *args: str
) -> subprocess.CompletedProcess[str]:
    """``exe args`` on 2 model ranks beside 1 server rank running ``exchanges``."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": str(exe), "ranks": 2},
            "server": {"ranks": 1, "timeout_s": 30.0},
            "exchange": exchanges,
        },
        base_dir=run_dir,
    )
    write_config_json(config, run_dir / "run_config.json")
    cmd = mpmd_command(
        [
            Program(2, (str(exe), *args)),
            python_program(1, "bridge.server", "--config", "run_config.json", "--run-dir", "."),
        ]
    )
    env = mpi_env({"PYTHONPATH": str(REPO)})
    return subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library built alone (Release), installed, and the installed tree moved elsewhere."""
    root = tmp_path_factory.mktemp("package")
    configure_and_build(root / "build", "-DCMAKE_BUILD_TYPE=Release", "-DMLB_BUILD_TOY=OFF")
    assert not (root / "build" / "bin" / "toy_nemo").exists()
    first = root / "opt" / "mlbridge-0.1"
    _run([tool("cmake", "cmake"), "--install", str(root / "build"), "--prefix", str(first)])
    moved = root / "elsewhere" / "mlbridge"
    moved.parent.mkdir()
    first.rename(moved)
    return moved


@pytest.fixture(scope="module")
def consumer(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/cmake_consumer built with find_package(MLBridge) from the moved prefix."""
    cmake = tool("cmake", "cmake")
    build = tmp_path_factory.mktemp("consumer")
    _run([cmake, "-S", str(CONSUMER), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"])
    _run([cmake, "--build", str(build)])
    return build / "consumer"


def test_installed_tree(prefix: Path) -> None:
    assert (prefix / "include" / "mlbridge" / "mlbridge.mod").is_file()
    assert (prefix / "lib" / "cmake" / "MLBridge" / "MLBridgeConfig.cmake").is_file()
    assert not list(prefix.rglob("*.smod")), "submodule files are the library's own"
    pc = (prefix / "lib" / "pkgconfig" / "mlbridge.pc").read_text()
    assert "prefix=${pcfiledir}/../..\n" in pc
    assert "opt/mlbridge-0.1" not in pc, "the .pc file names the prefix it was installed to"


def test_installed_flags_have_no_march_nor_checks(prefix: Path) -> None:
    files = [prefix / "lib" / "pkgconfig" / "mlbridge.pc"]
    files += sorted((prefix / "lib" / "cmake" / "MLBridge").glob("*.cmake"))
    for path in files:
        text = path.read_text()
        for flag in FORBIDDEN:
            assert flag not in text, f"{path.name} carries {flag}"
        assert "INTERFACE_COMPILE_OPTIONS" not in text, f"{path.name} imposes compile options"
        assert "opt/mlbridge-0.1" not in text, f"{path.name} names the prefix it was installed to"


def test_release_library_flags(prefix: Path) -> None:
    build = prefix.parents[1] / "build"
    flags = target_flags(build, "mlbridge", "mlbridge")
    assert "-O3" in flags
    for flag in (*FORBIDDEN, "-Wall"):
        assert flag not in flags, f"the installed library is compiled with {flag}: {flags}"


def test_pkg_config_consumer_runs_coupled(prefix: Path, tmp_path: Path) -> None:
    pkg_config = tool("pkg-config", "pkg-config")
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = _run([pkg_config, "--cflags", "--libs", "mlbridge"], env=env).stdout.split()
    assert f"-I{prefix}/lib/pkgconfig/../../include/mlbridge" in flags
    exe = tmp_path / "consumer_pc"
    _run(
        [tool("mpif90", "libopenmpi-dev"), str(CONSUMER / "consumer.F90"), *flags, "-o", str(exe)],
        cwd=tmp_path,
    )
    proc = run_coupled(tmp_path, exe, [IDENTITY, IDENTITY_R4], "real32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "consumer: ok (real64 and real32)" in proc.stdout


def test_find_package_consumer_runs_coupled(consumer: Path, tmp_path: Path) -> None:
    proc = run_coupled(tmp_path, consumer, [IDENTITY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "consumer: ok" in proc.stdout


def test_rejected_handshake_message_reaches_the_model(consumer: Path, tmp_path: Path) -> None:
    # the exchange reads a field the consumer does not define: the server's reason must come
    # back to the model through mlb_enddef's status and mlb_error_message
    wrong = {**IDENTITY, "inputs": {"u": "salinity"}}
    proc = run_coupled(tmp_path, consumer, [wrong])
    assert proc.returncode != 0
    start = proc.stderr.find("consumer: mlb_enddef: mlbridge handshake rejected: ")
    assert start >= 0, proc.stderr[-3000:]
    assert "salinity" in proc.stderr[start:], proc.stderr[start:]  # the message spans lines


def test_strict_build_and_ctest(tmp_path: Path) -> None:
    # the test build of the whole tree: warnings are errors, run-time checks on; the library's
    # MPI-only backend (MLB_WITH_OASIS=OFF) is compiled here, the OASIS one in the default build
    build = tmp_path / "strict"
    configure_and_build(
        build, "-DCMAKE_BUILD_TYPE=Debug", "-DMLB_STRICT=ON", "-DMLB_WITH_OASIS=OFF"
    )
    for target_dir, target in (("mlbridge", "mlbridge"), ("toy_nemo", "toy_nemo")):
        flags = target_flags(build, target_dir, target)
        if compiler_id(build) == "GNU":
            for flag in ("-Wall", "-fcheck=all", "-Werror"):
                assert flag in flags, f"{target}: {flag} missing from the test build: {flags}"
        assert "-march" not in flags
    ctest = tool("ctest", "cmake")
    proc = _run([ctest, "--output-on-failure"], cwd=build)
    assert "100% tests passed" in proc.stdout
    for name in ("consumer.find_package", "consumer.pkg_config", "infmod_stub"):
        assert f"mlbridge.{name}" in proc.stdout


def test_default_build_has_no_march(fortran_build: Path) -> None:
    # `mlbridge build`: the toy keeps its speed flags in an optimised build, -march only on request
    for target_dir, target in (("mlbridge", "mlbridge"), ("toy_nemo", "toy_nemo")):
        flags = target_flags(fortran_build, target_dir, target)
        assert "-march" not in flags and "-fcheck" not in flags, f"{target}: {flags}"
