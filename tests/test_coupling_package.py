"""The installed package: ``find_package(MLBridge)`` from a project outside the repository.

Installs the build into a temporary prefix, builds ``tests/cmake_consumer`` against it with
nothing but ``CMAKE_PREFIX_PATH``, and runs it coupled to one server (closure ``identity``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bridge.config.coupling import CouplingConfig, write_config_json
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command, python_program

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def test_find_package_consumer_runs_coupled(tmp_path: Path, fortran_build: Path) -> None:
    cmake = shutil.which("cmake")
    assert cmake is not None, "cmake not on PATH (apt-get install cmake)"
    prefix = tmp_path / "prefix"
    _run([cmake, "--install", str(fortran_build), "--prefix", str(prefix)])
    assert (prefix / "lib" / "cmake" / "MLBridge" / "MLBridgeConfig.cmake").is_file()
    assert (prefix / "lib" / "cmake" / "MLBridge" / "MLBridgeConfigVersion.cmake").is_file()
    assert (prefix / "include" / "mlbridge" / "mlbridge.mod").is_file()
    assert (prefix / "lib" / "pkgconfig" / "mlbridge.pc").is_file()
    build = tmp_path / "consumer"
    _run(
        [
            cmake,
            "-S",
            str(REPO / "tests" / "cmake_consumer"),
            "-B",
            str(build),
            f"-DCMAKE_PREFIX_PATH={prefix}",
        ]
    )
    _run([cmake, "--build", str(build)])
    exe = build / "consumer"
    config = CouplingConfig.from_dict(
        {
            "model": {"executable": str(exe), "ranks": 2},
            "server": {"ranks": 1, "timeout_s": 30.0},
            "exchange": [
                {"closure": "identity", "inputs": {"u": "u"}, "outputs": {"id_u": "u_back"}}
            ],
        },
        base_dir=tmp_path,
    )
    write_config_json(config, tmp_path / "run_config.json")
    cmd = mpmd_command(
        [
            Program(2, (str(exe),)),
            python_program(1, "bridge.server", "--config", "run_config.json", "--run-dir", "."),
        ]
    )
    proc = _run(cmd, cwd=tmp_path, env=mpi_env({"PYTHONPATH": str(REPO)}))
    assert "consumer: ok" in proc.stdout
