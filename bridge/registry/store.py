"""The closure registry: trained closures stored under ``name@version`` with their hashes.

Layout under the registry root (``$MLBRIDGE_HOME``, else ``$XDG_DATA_HOME/mlbridge``, else
``~/.local/share/mlbridge``)::

    <root>/<name>/<version>/manifest.toml   the manifest, artifact key pointing at the copy below
    <root>/<name>/<version>/<artifact>      the artifact, copied at registration
    <root>/<name>/<version>/record.json     sha256 of both files, dry-run summary, provenance

Registration copies into a hidden staging directory (``<root>/.staging-*``), runs a dry forward
pass on the copy and only then renames it into place, so a closure that disagrees with its
manifest never appears (nor does its ``<name>`` folder), and a reader never sees half a
registration. Loading re-hashes the files first. Folders are created with mode ``0o777`` and
files with ``0o666``, less the umask (``0755``/``0644`` under the usual ``022``), so that a
group can share a registry. Every failure of the file system is a :class:`RegistryIOError`
naming the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.registry.manifest import Manifest, ManifestError, load_manifest, manifest_to_toml
from bridge.registry.trust import (
    GROUPS,
    CodeTrust,
    Grant,
    UntrustedCodeError,
    grant_for,
    grant_record,
    trust_from_record,
)

if TYPE_CHECKING:
    from bridge.registry.torch_closure import ManifestClosure, TorchClosure

MANIFEST_FILE = "manifest.toml"
RECORD_FILE = "record.json"
_RESERVED = {MANIFEST_FILE, RECORD_FILE}
_CHUNK = 1 << 20


class RegistryError(Exception):
    """Base class of registry errors."""


class NotRegisteredError(RegistryError, LookupError):
    """A reference names no registered closure."""


class RegistrationError(RegistryError):
    """A closure was refused at registration (dry run failed, version taken, file missing)."""


class RegistryIOError(RegistryError):
    """The file system refused a registry operation (read-only, full, a file in the way)."""


class HashMismatchError(RegistryError):
    """A registered file no longer has the sha256 recorded at registration.

    Parameters
    ----------
    path
        The file.
    expected
        sha256 recorded at registration.
    found
        sha256 of the file now.
    """

    def __init__(self, path: Path, expected: str, found: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.found = found
        super().__init__(
            f"{path}: sha256 mismatch: recorded {expected} at registration, the file now has "
            f"{found}; it was changed after registration (register it again with --force if "
            f"the change is intended)"
        )


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """The registry root when none is given.

    Parameters
    ----------
    environ
        Environment to read (default: ``os.environ``).

    Returns
    -------
    pathlib.Path
        ``$MLBRIDGE_HOME``; else ``$XDG_DATA_HOME/mlbridge`` when that is an absolute path;
        else ``~/.local/share/mlbridge``.
    """
    env = os.environ if environ is None else environ
    home = env.get("MLBRIDGE_HOME", "")
    if home:
        return Path(home).expanduser()
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "mlbridge"
    return Path.home() / ".local" / "share" / "mlbridge"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name[@version]``.

    Parameters
    ----------
    ref
        ``"cnn"`` or ``"cnn@1.2"``.

    Returns
    -------
    tuple
        ``(name, version)``, version ``None`` when absent.

    Raises
    ------
    NotRegisteredError
        If the reference is empty or malformed.
    """
    name, sep, version = ref.partition("@")
    ok = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    if not ok.match(name) or (sep and not ok.match(version)):
        raise NotRegisteredError(
            f"malformed closure reference {ref!r}: expected name or name@version"
        )
    return name, (version if sep else None)


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Natural sort key: ``1.9 < 1.10``, ``v2 < v10``; digit runs compare as numbers.

    Parameters
    ----------
    version
        A version string.

    Returns
    -------
    tuple
        A key for ``sorted``.
    """
    parts = re.findall(r"\d+|\D+", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One registered closure.

    Parameters
    ----------
    name, version
        Its reference parts.
    directory
        ``<root>/<name>/<version>``.
    record
        Contents of ``record.json``.
    manifest
        The stored manifest (``None`` when it cannot be read; then ``problem`` says why).
    problem
        Empty, or why the manifest could not be read.
    """

    name: str
    version: str
    directory: Path
    record: dict[str, Any] = field(hash=False)
    manifest: Manifest | None = None
    problem: str = ""

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def artifact(self) -> Path | None:
        """The stored artifact (``None`` for a python closure without one)."""
        name = self.record.get("artifact")
        return self.directory / name if name else None


@dataclass(frozen=True)
class Verification:
    """Result of re-hashing one registered closure.

    Parameters
    ----------
    ref
        ``name@version``.
    problems
        One line per missing or changed file; empty when everything matches.
    """

    ref: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every file has its recorded hash."""
        return not self.problems


class Registry:
    """A directory of registered closures.

    Parameters
    ----------
    root
        Registry directory; default :func:`default_root` (created on first registration).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- registering --------------------------------------------------------------------------

    def register(
        self,
        artifact: str | Path | None,
        manifest: str | Path,
        *,
        force: bool = False,
        trust: CodeTrust | None = None,
    ) -> str:
        """Store a closure under ``name@version`` after a dry forward pass.

        Parameters
        ----------
        artifact
            The artifact file; ``None`` takes the manifest's ``artifact`` key (relative to the
            manifest). A ``python`` closure may have none.
        manifest
            The manifest TOML file.
        force
            Replace a registered ``name@version`` whose content differs.
        trust
            Code the user trusts (``--architecture``, ``--trust-code``): a ``state_dict``
            architecture or ``python`` closure factory not shipped by an installed package
            (:mod:`bridge.registry.trust`) is refused without it, before anything is imported.
            The grant is kept in ``record.json`` and checked again at every load.

        Returns
        -------
        str
            ``name@version``. Registering identical content (and trust) again is a no-op.

        Raises
        ------
        ManifestError
            If the manifest is invalid.
        RegistrationError
            If the artifact is missing, the manifest names untrusted code, the version is taken
            by other content (without ``force``), or the dry run on a ``(3, 8+2h, 8+2h)`` block
            fails; the message names the output and both values.
        RegistryIOError
            If the registry cannot be written (the message names the path).
        """
        src_manifest = Path(manifest)
        m = load_manifest(src_manifest)
        grant = None
        if m.format in GROUPS:
            try:
                grant = grant_for(m.format, m.entry_point, trust or CodeTrust(), str(src_manifest))
            except UntrustedCodeError as exc:
                raise RegistrationError(f"refusing to register {m.ref}: {exc}") from None
        code = grant_record(grant)
        src = Path(artifact) if artifact is not None else m.artifact_path()
        if src is None and m.format != "python":
            raise RegistrationError(f"{src_manifest}: format {m.format!r} needs an artifact file")
        if src is not None:
            if not src.is_file():
                raise RegistrationError(f"{src}: artifact not found (for {m.ref}, {src_manifest})")
            if src.name in _RESERVED:
                raise RegistrationError(f"{src}: an artifact may not be called {src.name}")
        artifact_sha = sha256_file(src) if src is not None else None
        stored = replace(m, artifact=src.name if src is not None else "")
        manifest_text = manifest_to_toml(stored)
        manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()

        dest = self.root / m.name / m.version
        if (dest / RECORD_FILE).is_file():
            try:
                old = _read_record(dest)
            except RegistryError:
                old = {}  # a damaged record: registering again repairs it
            old_sha = old.get("sha256", {})
            same = old_sha.get(MANIFEST_FILE) == manifest_sha and (
                src is None or old_sha.get(src.name) == artifact_sha
            )
            same = same and old.get("artifact") == (src.name if src else None)
            if (
                same
                and old.get("code") == code
                and not entry_problems(self._entry(m.name, m.version))
            ):
                return m.ref
            # the same content over a damaged copy is a repair, not a change: no force needed;
            # nor does a record that cannot be read prove other content
            if old and not same and not force:
                raise RegistrationError(
                    f"{m.ref} is already registered in {dest} with other content "
                    f"(artifact sha256 {_short(old_sha.get(old.get('artifact') or '', ''))} there, "
                    f"{_short(artifact_sha or '')} here; manifest "
                    f"{'identical' if old_sha.get(MANIFEST_FILE) == manifest_sha else 'differs'}); "
                    f"register a new version, or replace it with force=True (--force)"
                )

        created_root = not self.root.exists()
        created_name = not (self.root / m.name).exists()
        with _io("create the registry folder", self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        staging = _make_staging(self.root)
        try:
            if src is not None:
                with _io("copy the artifact into the registry", staging / src.name):
                    shutil.copyfile(src, staging / src.name)
                    copied = sha256_file(staging / src.name)
                if copied != artifact_sha:
                    raise RegistrationError(
                        f"{src}: the file changed while it was copied "
                        f"(sha256 {artifact_sha} before, {copied} after)"
                    )
            with _io("write the manifest", staging / MANIFEST_FILE):
                (staging / MANIFEST_FILE).write_text(manifest_text, encoding="utf-8")
            summary = self._dry_run(staging, src_manifest, src, m.ref, trust or CodeTrust())
            record = {
                "name": m.name,
                "version": m.version,
                "format": m.format,
                "artifact": src.name if src is not None else None,
                "sha256": {MANIFEST_FILE: manifest_sha}
                | ({src.name: artifact_sha} if src is not None else {}),
                "code": code,
                "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": {
                    "artifact": str(src.resolve()) if src is not None else None,
                    "manifest": str(src_manifest.resolve()),
                },
                "versions": {"mlbridge": _version("mlbridge"), "torch": _version("torch")},
                "dry_run": summary,
            }
            with _io("write the registration record", staging / RECORD_FILE):
                (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
            with _io("create the closure's folder", self.root / m.name):
                (self.root / m.name).mkdir(exist_ok=True)
            self._install(staging, dest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            if created_name:
                _remove_if_empty(self.root / m.name)  # empty unless the install succeeded
            if created_root:
                _remove_if_empty(self.root)
        return m.ref

    @staticmethod
    def _dry_run(
        staging: Path, src_manifest: Path, src: Path | None, ref: str, trust: CodeTrust
    ) -> dict[str, Any]:
        from bridge.registry.runtime import dry_run, load_closure

        staged = load_manifest(staging / MANIFEST_FILE)
        shape = (3, 8 + 2 * staged.halo, 8 + 2 * staged.halo)
        try:
            closure = load_closure(staged, device="cpu", trust=trust)
        except Exception as exc:  # any failure of foreign code refuses the registration
            text = str(exc)
            if src is not None:  # name the user's file, not the staging copy (gone by now)
                text = text.replace(str(staging / src.name), str(src))
            raise RegistrationError(
                f"refusing to register {ref} ({src_manifest}): the artifact cannot be loaded: "
                f"{text}"
            ) from exc
        try:
            outputs = dry_run(closure, staged, nz=3, interior=8)
        except Exception as exc:  # any failure of foreign code refuses the registration
            raise RegistrationError(
                f"refusing to register {ref} ({src_manifest}): the dry forward pass on random "
                f"inputs of shape {shape} (nz=3, 8x8 interior, halo {staged.halo}) failed: {exc}"
            ) from exc
        return {"input_shape": list(shape), "outputs": outputs}

    @staticmethod
    def _install(staging: Path, dest: Path) -> None:
        # rename into place, so a reader sees the old version or the new one, never half of one
        with _io("install the closure", dest):
            if dest.exists():
                trash = Path(tempfile.mkdtemp(prefix=".replaced-", dir=dest.parent))
                os.replace(dest, trash / dest.name)
                os.replace(staging, dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging, dest)

    # -- reading ------------------------------------------------------------------------------

    def list(self) -> list[Entry]:
        """All registered closures, by name then natural version order.

        Returns
        -------
        list of Entry
            Entries whose record or manifest cannot be read (a deleted ``record.json``
            included) are listed with ``problem`` set: a damaged entry never vanishes.

        Raises
        ------
        RegistryIOError
            If the registry folder cannot be read.
        """
        entries = []
        if not self.root.is_dir():
            return entries
        with _io("read the registry", self.root):
            names = sorted(p for p in self.root.iterdir() if _visible_dir(p))
        for name_dir in names:
            with _io("read the registry", name_dir):
                versions = [p for p in name_dir.iterdir() if _visible_dir(p)]
            for vdir in sorted(versions, key=lambda p: version_key(p.name)):
                try:
                    entries.append(self._entry(name_dir.name, vdir.name))
                except RegistryError as exc:  # one damaged record must not hide the others
                    entries.append(Entry(name_dir.name, vdir.name, vdir, {}, None, str(exc)))
        return entries

    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, oldest first (natural order)."""
        return [e.version for e in self.list() if e.name == name]

    def resolve(self, ref: str) -> str:
        """Turn ``name`` (newest version) or ``name@version`` into a registered ``name@version``.

        Parameters
        ----------
        ref
            The reference.

        Returns
        -------
        str
            ``name@version``.

        Raises
        ------
        NotRegisteredError
            Naming the registry and what is registered under that name.
        """
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = sorted({e.name for e in self.list()})
            raise NotRegisteredError(
                f"no closure named {name!r} in the registry {self.root} (registered: "
                f"{', '.join(known) if known else 'none'})"
            )
        if version is None:
            return f"{name}@{versions[-1]}"
        if version not in versions:
            raise NotRegisteredError(
                f"{name}@{version} is not registered in {self.root} "
                f"(versions of {name!r}: {', '.join(versions)})"
            )
        return f"{name}@{version}"

    def show(self, ref: str) -> Entry:
        """The entry of a registered closure (``name`` means its newest version).

        Raises
        ------
        NotRegisteredError
            If the reference resolves to nothing.
        """
        name, version = parse_ref(self.resolve(ref))
        assert version is not None
        return self._entry(name, version)

    def _entry(self, name: str, version: str) -> Entry:
        directory = self.root / name / version
        record = _read_record(directory)
        try:
            manifest = load_manifest(directory / MANIFEST_FILE)
        except ManifestError as exc:
            return Entry(name, version, directory, record, None, str(exc))
        return Entry(name, version, directory, record, manifest)

    # -- checking, removing, loading ----------------------------------------------------------

    def verify(self, ref: str | None = None) -> list[Verification]:
        """Re-hash registered files against their records.

        Parameters
        ----------
        ref
            One closure (``name`` means its newest version); ``None`` checks all of them.

        Returns
        -------
        list of Verification
            One per closure checked; each problem names the file and both hashes.

        Raises
        ------
        NotRegisteredError
            If ``ref`` resolves to nothing.
        """
        if ref is None:
            entries = self.list()
        else:
            name, version = parse_ref(self.resolve(ref))
            assert version is not None
            try:
                entries = [self._entry(name, version)]
            except RegistryError as exc:
                directory = self.root / name / version
                entries = [Entry(name, version, directory, {}, None, str(exc))]
        return [Verification(e.ref, tuple(str(p) for p in entry_problems(e))) for e in entries]

    def remove(self, ref: str) -> str:
        """Delete one registered version.

        Parameters
        ----------
        ref
            ``name@version``; a bare name is refused, so that no version goes by surprise.

        Returns
        -------
        str
            The removed ``name@version``.

        Raises
        ------
        NotRegisteredError
            If the version is not registered, or no version was given.
        RegistryIOError
            If the folder cannot be removed (the message names it).
        """
        name, version = parse_ref(ref)
        if version is None:
            versions = self.versions(name)
            raise NotRegisteredError(
                f"remove needs name@version, got {ref!r} (versions of {name!r}: "
                f"{', '.join(versions) if versions else 'none'})"
            )
        resolved = self.resolve(ref)
        directory = self.root / name / version
        with _io("remove the closure", directory):
            trash = Path(tempfile.mkdtemp(prefix=".removed-", dir=directory.parent))
            os.replace(directory, trash / version)
            shutil.rmtree(trash, ignore_errors=True)
        _remove_if_empty(self.root / name)
        return resolved

    def load(
        self,
        ref: str,
        *,
        device: str | None = None,
        threads: int | None = None,
        levels_per_call: int | None = None,
        engine: str | None = None,
    ) -> TorchClosure | ManifestClosure:
        """Verify the hashes of a registered closure, then load it.

        Parameters
        ----------
        ref
            ``name`` (newest version) or ``name@version``.
        device
            ``auto``, ``cpu``, ``cuda``, ``cuda:N``; ``None`` takes the manifest's preference.
        threads
            ``torch.set_num_threads`` for this process (``None``: leave as is).
        levels_per_call
            Torch formats: levels per forward call (``None``: the engine's default).
        engine
            Torch formats: ``auto``, ``eager``, ``channels_last`` or ``aoti``
            (:mod:`bridge.registry.compiled`); ``None``: ``$MLBRIDGE_ENGINE``, else ``auto`` (the
            compiled package when the cache holds one, else channels-last; eager on a GPU).

        Returns
        -------
        Closure
            A :class:`~bridge.registry.torch_closure.TorchClosure` or, for ``python`` manifests, a
            :class:`~bridge.registry.torch_closure.ManifestClosure`.

        Raises
        ------
        NotRegisteredError
            If the reference resolves to nothing.
        HashMismatchError
            If the artifact or the manifest changed since registration (file and both hashes).
        RegistryError
            If the stored manifest cannot be read.
        UntrustedCodeError
            If the manifest names code neither shipped nor trusted at registration.
        ValueError
            If the engine is unknown.
        """
        from bridge.registry.compiled import ENGINE_ENV, ENGINES, CompileCache
        from bridge.registry.runtime import load_closure

        entry = self.show(ref)
        problems = entry_problems(entry)
        if problems:
            raise problems[0]
        if entry.manifest is None:
            raise RegistryError(f"{entry.ref}: {entry.problem}")
        artifact_sha = entry.record["sha256"].get(entry.record.get("artifact") or "")
        if engine is None:
            engine = os.environ.get(ENGINE_ENV, "").strip() or "auto"
            if engine not in ENGINES:
                raise ValueError(
                    f"${ENGINE_ENV} = {engine!r}: expected one of {', '.join(ENGINES)}"
                )
        return load_closure(
            entry.manifest,
            entry.artifact,
            device=device,
            threads=threads,
            levels_per_call=levels_per_call,
            trust=trust_from_record(entry.record, entry.manifest.entry_point),
            engine=engine,
            cache=CompileCache(self.root),
            artifact_sha256=artifact_sha,  # just verified by entry_problems
        )

    def compile(self, ref: str, *, device: str = "cpu") -> TorchClosure | ManifestClosure:
        """Build (or check) the compiled package of a registered torch closure in the cache.

        Loads the closure with engine ``aoti``: a valid cached package is reused, a missing or
        invalid one is built (:mod:`bridge.registry.compiled`).

        Returns
        -------
        Closure
            The loaded closure; ``closure.engine`` is ``aoti`` when the package is in use, and
            ``closure.engine_note`` says where it came from, or why it could not be built.

        Raises
        ------
        RegistryError, HashMismatchError, UntrustedCodeError
            As :meth:`load`.
        """
        return self.load(ref, device=device, engine="aoti")


def code_grant(entry: Entry) -> Grant | None:
    """Why the entry's Python code may run (None when its format has none).

    Raises
    ------
    UntrustedCodeError
        If the code is neither shipped by an installed package nor trusted at registration.
    RegistryError
        If the entry's manifest cannot be read.
    """
    m = entry.manifest
    if m is None:
        raise RegistryError(f"{entry.ref}: {entry.problem}")
    if m.format not in GROUPS:
        return None
    trust = trust_from_record(entry.record, m.entry_point)
    return grant_for(m.format, m.entry_point, trust, str(entry.directory / MANIFEST_FILE))


def entry_problems(entry: Entry) -> list[HashMismatchError | RegistryError]:
    """Why an entry is not what was registered: its record missing or unreadable, then each
    recorded file (the artifact and the stored manifest) missing or with another sha256."""
    if not entry.record:
        return [RegistryError(entry.problem or f"{entry.directory / RECORD_FILE}: empty record")]
    problems: list[HashMismatchError | RegistryError] = []
    recorded = entry.record.get("sha256", {})
    if MANIFEST_FILE not in recorded:
        problems.append(
            RegistryError(f"{entry.directory / RECORD_FILE}: no manifest hash recorded")
        )
    for name, expected in recorded.items():
        path = entry.directory / name
        if not path.is_file():
            problems.append(RegistryError(f"{path}: missing (recorded sha256 {expected})"))
            continue
        try:
            found = sha256_file(path)
        except OSError as exc:
            problems.append(RegistryError(f"{path}: cannot be read: {exc.strerror or exc}"))
            continue
        if found != expected:
            problems.append(HashMismatchError(path, expected, found))
    return problems


def _read_record(directory: Path) -> dict[str, Any]:
    path = directory / RECORD_FILE
    if not path.exists() and directory.is_dir():
        raise RegistryError(
            f"{path}: missing: the registration record (hashes, trust) of this version is gone; "
            "it cannot be verified or loaded (register the closure again, or remove the folder)"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: unreadable registry record: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict):
        raise RegistryError(f"{path}: registry record without a sha256 table")
    return record


@contextmanager
def _io(action: str, path: Path) -> Iterator[None]:
    """Turn a file-system error into one :class:`RegistryIOError` naming the path."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or path
        other = f" -> {exc.filename2}" if exc.filename2 else ""
        raise RegistryIOError(f"{where}{other}: cannot {action}: {exc.strerror or exc}") from None


def _make_staging(root: Path) -> Path:
    """A new hidden folder below ``root``, created with the umask (mkdtemp would make it 0700:
    the version folder it becomes must be readable by the registry's group)."""
    for _ in range(100):
        staging = root / f".staging-{secrets.token_hex(6)}"
        try:
            staging.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RegistryIOError(
                f"{staging}: cannot create a staging folder in the registry: {exc.strerror or exc}"
            ) from None
        return staging
    raise RegistryIOError(f"{root}: no free staging folder name")


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty, or already gone: nothing to tidy


def _visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _short(sha: str) -> str:
    return sha[:12] if sha else "none"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
