"""Installable: ``pip install .`` (not editable) into a fresh virtual environment outside the
repository, then ``mlbridge build`` from the Fortran sources shipped in the wheel into the user's
data directory, and ``mlbridge run`` of a copy of ``examples/03_coupled_laplacian``.

Nothing is downloaded for the environment: the wheel is installed with ``--no-deps --no-index``
and a ``.pth`` file points at the site-packages that hold this session's third-party
dependencies (torch, numpy, mpi4py, ...), which must not hold ``bridge`` or ``mlbridge_models``.
Every command runs in a temporary folder with a clean environment (no ``PYTHONPATH``, no
``MLBRIDGE_*``, ``HOME`` in the temporary folder).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEPENDENCIES = ("torch", "numpy", "mpi4py", "f90nml", "xarray", "netCDF4", "tqdm", "matplotlib")
PROJECT_PACKAGES = ("bridge", "mlbridge_models", "models")
STEPS = 20

# what `pip install .` of a checkout does not need: VCS, environments, build and run outputs
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "build",
    "build-*",
    "runs",
    "runs-*",
    "data",
    ".whl",
    ".gl",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
)

pytestmark = pytest.mark.slow


def _run(cmd: list[str], what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, (
        f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def _can_build_wheels_offline() -> bool:
    """setuptools >= 70.1 (its own bdist_wheel) or the ``wheel`` package beside it."""
    probe = (
        "import importlib.util as u, sys; "
        "sys.exit(0 if u.find_spec('setuptools.command.bdist_wheel') or u.find_spec('wheel') "
        "else 1)"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the working tree (pip builds in the tree it is given)."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=NOT_COPIED, symlinks=True)
    # a checkout's CMake build puts libraries in build/lib, setuptools' default staging folder:
    # they must stay out of the wheel (pyproject.toml moves the staging to build/python)
    (src / "build" / "lib").mkdir(parents=True)
    (src / "build" / "lib" / "libmlbridge.a").write_bytes(b"!<arch>\n")
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    if _can_build_wheels_offline():
        cmd.append("--no-build-isolation")
    _run(cmd, "pip wheel", 300, cwd=tmp_path)
    (wheel,) = dist.glob("mlbridge-*.whl")
    return wheel


def dependency_dirs() -> list[Path]:
    """The site-packages folders of the third-party dependencies (never the project's)."""
    dirs: list[Path] = []
    for name in DEPENDENCIES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not installed"
        origin = Path(spec.origin).resolve()
        site = origin.parents[1] if spec.submodule_search_locations else origin.parent
        if site not in dirs:
            dirs.append(site)
    for site in dirs:  # (it may lie inside the checkout, as make's .venv does: not its source)
        assert site != REPO, site
        for package in PROJECT_PACKAGES:
            assert not (site / package).exists(), f"{site / package}: the project is there"
    return dirs


def clean_env(home: Path, venv: Path) -> dict[str, str]:
    """The environment of a user with a fresh shell: no PYTHONPATH, no MLBRIDGE_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLBRIDGE_", "PYTHON", "VIRTUAL_ENV", "XDG_"))
    }
    env["HOME"] = str(home)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env


def test_wheel_installs_builds_and_runs_the_example(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)

    # the wheel: the package, the science package and the complete Fortran tree, nothing else
    names = set(zipfile.ZipFile(wheel).namelist())
    assert all(n.startswith(("bridge/", "mlbridge_models/", "mlbridge-")) for n in names), sorted(
        n for n in names if not n.startswith(("bridge/", "mlbridge_models/", "mlbridge-"))
    )
    shipped = [
        p
        for top in ("fortran_stubs", "cmake", "tests/fortran")
        for p in (REPO / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    missing = [
        str(p.relative_to(REPO))
        for p in shipped
        if f"bridge/_sources/{p.relative_to(REPO).as_posix()}" not in names
    ]
    assert not missing, f"not in the wheel: {missing}"
    assert "bridge/_sources/fortran_stubs/toy_nemo/namelist_ref" in names

    # a fresh environment outside the repository, the wheel installed without its dependencies,
    # then the dependencies made visible (after the install: pip must not see another mlbridge)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], "python -m venv", 120)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        "pip install",
        120,
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            "sysconfig",
            30,
        ).stdout.strip()
    )
    (site / "_mlbridge_test_dependencies.pth").write_text(
        "".join(f"{d}\n" for d in dependency_dirs())
    )
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(home, venv)

    probe = (
        "import json, bridge, mlbridge_models, bridge.paths as p; print(json.dumps(["
        "bridge.__file__, mlbridge_models.__file__, str(p.checkout_root()), "
        "str(p.fortran_sources()), str(p.default_build_dir())]))"
    )
    out = _run([str(python), "-c", probe], "import bridge", 60, cwd=work, env=env).stdout
    bridge_init, models_init, checkout, sources, build_dir = json.loads(out)
    assert Path(bridge_init).is_relative_to(site), bridge_init
    assert Path(models_init).is_relative_to(site), models_init
    assert checkout == "None"
    assert Path(sources) == site / "bridge" / "_sources" / "fortran_stubs"
    assert Path(build_dir) == home / ".local" / "share" / "mlbridge" / "build"
    no_models = subprocess.run(
        [str(python), "-c", "import models"], cwd=work, env=env, capture_output=True, text=True
    )
    assert no_models.returncode != 0 and "No module named 'models'" in no_models.stderr

    # mlbridge build: the shipped sources, into the user's data directory
    mlbridge = str(venv / "bin" / "mlbridge")
    proc = _run([mlbridge, "build"], "mlbridge build", 420, cwd=work, env=env)
    assert f"build directory : {build_dir} " in proc.stdout, proc.stdout
    assert (Path(build_dir) / "bin" / "toy_nemo").is_file()
    cache = (Path(build_dir) / "CMakeCache.txt").read_text()
    assert f"CMAKE_HOME_DIRECTORY:INTERNAL={sources}" in cache
    prefix = tmp_path / "prefix"  # the build is up to date: this only installs
    cmd = [mlbridge, "build", "--prefix", str(prefix)]
    _run(cmd, "mlbridge build --prefix", 120, cwd=work, env=env)
    for installed in (
        "bin/toy_nemo",
        "lib/libmlbridge.a",
        "lib/cmake/MLBridge/MLBridgeConfig.cmake",
    ):
        assert (prefix / installed).is_file(), installed

    # what needs a checkout says so
    demo = subprocess.run(
        [str(python), "-m", "mlbridge_models.demo"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert demo.returncode != 0 and "checkout of the mlbridge repository" in demo.stderr

    # mlbridge run: a copy of the example, the executable by its bare name, namelist_ref shipped
    case = work / "coupled_laplacian"
    shutil.copytree(REPO / "examples" / "03_coupled_laplacian", case)
    proc = _run(
        [mlbridge, "run", "coupling.toml", "--steps", str(STEPS), "--quiet"],
        "mlbridge run",
        300,
        cwd=case,
        env=env,
    )
    match = re.search(r"run directory (\S+)", proc.stdout)
    assert match, proc.stdout
    run_dir = Path(match.group(1))
    assert run_dir.is_relative_to(case / "runs"), run_dir
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["server"]["exchanges"] == STEPS
    (grid,) = run_dir.glob("*_grid.nc")
    with netCDF4.Dataset(grid) as nc:
        assert len(nc.dimensions["time_counter"]) >= 1
        assert np.abs(np.asarray(nc["u_tend"][:])).max() > 0  # the closure's output came back
