"""Where things are: the Fortran sources, the build directory, and the files of a run directory.

The bottom layer of the package with :mod:`bridge.wire`: it imports nothing from ``bridge``.

* The Fortran sources (``fortran_stubs/``, ``cmake/``) are those of the repository in a checkout
  (an editable install) and the copy shipped as package data in an installed wheel.
* The build directory is ``$MLBRIDGE_BUILD_DIR``, else ``build/`` of the repository in a
  checkout, else ``mlbridge/build`` under the user's data directory (``$XDG_DATA_HOME`` or
  ``~/.local/share``).
* A run directory holds what the launcher and the servers exchange through files.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILD_DIR_ENV = "MLBRIDGE_BUILD_DIR"

RUN_CONFIG = "run_config.json"
"""The resolved configuration the servers read (``python -m bridge.server --config``)."""

OASIS_CONFIG = "oasis.json"
"""The ``[oasis]`` table alone, for a server started by hand on an OASIS-only model."""

DONE_MARKER = "server_done.json"
"""Written by server rank 0 when the servers finished serving (every kind of coupled run): the
exchanges served, the first and last model step served, the server ranks. Success of a coupled
run needs it besides every rank's exit status 0 (an ``oasis_abort`` of OASIS3-MCT 2.0 can end
every rank with status 0)."""

ERROR_FILE = "oasis_server_error.txt"
"""Written by the server that gives up on an OASIS-only model, before ``oasis_abort``."""

PROGRESS_FILE = "server.step"
"""Server rank 0's progress, rewritten after each exchange (every kind of coupled run): the
exchanges served, then (models linking the library) the first and the last model step served.
The launcher's progress when the model writes no ``time.step``, and its evidence that an OASIS
job is not stuck in an ``oasis_get`` (which has no time limit)."""

_PACKAGE = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The repository this package runs from (an editable install), or None (a wheel)."""
    root = _PACKAGE.parent
    if (root / "fortran_stubs" / "CMakeLists.txt").is_file() and (root / "cmake").is_dir():
        return root
    return None


class CheckoutRequiredError(FileNotFoundError):
    """A file only a checkout of the repository has (``examples/``, ``models/artifacts/``) was
    needed by an installed package, which does not ship those folders."""


def checkout_file(*parts: str) -> Path:
    """``parts`` below the repository checkout, e.g. ``checkout_file("examples", "01_coarse")``.

    Raises
    ------
    CheckoutRequiredError
        Outside a checkout (an installed wheel): the message names the file and what to do.
    """
    root = checkout_root()
    if root is None:
        relative = "/".join(parts)
        raise CheckoutRequiredError(
            f"{relative} is part of a checkout of the mlbridge repository, and this mlbridge is "
            f"an installed package ({_PACKAGE}) that does not ship it: clone the repository and "
            f"run from there (pip install -e .), or pass your own copy of {relative} explicitly"
        )
    return root.joinpath(*parts)


def source_root() -> Path:
    """The folder holding ``fortran_stubs/`` and ``cmake/`` (the checkout, or package data)."""
    root = checkout_root()
    return root if root is not None else _PACKAGE / "_sources"


def fortran_sources() -> Path:
    """The top of the Fortran build (``cmake -S``)."""
    return source_root() / "fortran_stubs"


def toy_namelist_ref() -> Path:
    """The toy model's ``namelist_ref`` (the default reference namelist of a run)."""
    return fortran_sources() / "toy_nemo" / "namelist_ref"


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/mlbridge`` (default ``~/.local/share/mlbridge``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlbridge"


def default_build_dir() -> Path:
    """``$MLBRIDGE_BUILD_DIR``, else ``build/`` of the checkout, else the user's data dir."""
    override = os.environ.get(BUILD_DIR_ENV)
    if override:
        return Path(override).resolve()
    root = checkout_root()
    return (root / "build").resolve() if root is not None else user_data_dir() / "build"


def write_progress(run_dir: Path, served: int, steps: tuple[int, int] | None = None) -> None:
    """Rewrite :data:`PROGRESS_FILE` (atomically: the launcher reads it while it changes).

    ``served``: exchanges served so far; ``steps``: the first and the last model step served.
    """
    path = run_dir / PROGRESS_FILE
    tmp = path.with_name(path.name + ".tmp")
    text = f"{served}" if steps is None else f"{served} {steps[0]} {steps[1]}"
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # progress is a convenience: never a reason to stop serving


def read_progress(run_dir: Path) -> int | None:
    """Exchanges served so far (:data:`PROGRESS_FILE`); None before the first one."""
    try:
        return int((run_dir / PROGRESS_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_served_steps(run_dir: Path) -> tuple[int, int] | None:
    """The first and the last model step the servers served (:data:`PROGRESS_FILE`), or None."""
    try:
        words = (run_dir / PROGRESS_FILE).read_text().split()
        return int(words[1]), int(words[2])
    except (OSError, ValueError, IndexError):
        return None


def check_outcome(run_dir: Path, returncode: int) -> list[str]:
    """Why a finished OASIS-only job failed, or an empty list when it did not.

    The exit status alone is not enough: an ``oasis_abort`` of OASIS3-MCT 2.0 can end every rank
    with status 0. The job succeeded only if the done marker exists and no error file does.
    """
    problems: list[str] = []
    if returncode != 0:
        problems.append(f"the job ended with exit status {returncode}")
    error = run_dir / ERROR_FILE
    if error.is_file():
        problems.append(f"server error: {error.read_text().strip()}")
    if not (run_dir / DONE_MARKER).is_file():
        problems.append(
            f"the servers did not finish ({DONE_MARKER} missing in {run_dir}); see the nout.* "
            "and debug.* files of OASIS there"
        )
    return problems
