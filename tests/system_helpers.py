"""What some tests need from the machine: a small file system, a Slurm client.

Where the machine cannot give it, a test is skipped on a developer's machine and FAILS under CI
(``CI`` set, as ``.ci/run`` runs): ``make test`` installs and runs everything these tests need
as root, so a missing piece there is a broken install, never a reason to pass quietly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip (a developer's machine) or fail (CI) a test whose system requirement is missing."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (under CI this is a failure: `make test` provides it)")
    pytest.skip(reason)


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"300k"``) mounted at ``directory`` (made here); unmounted after."""
    directory.mkdir()
    if shutil.which("mount") is None:
        unavailable("no mount command: a small file system cannot be made here")
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], capture_output=True, check=False)
