"""The closure registry: register/list/show/verify/remove/load round trips, hash checks, refusals
at registration, every artifact format, and the CLI."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mlbridge_models.cnn import build_cnn

from bridge.cli import main
from bridge.registry.store import (
    HashMismatchError,
    NotRegisteredError,
    RegistrationError,
    Registry,
    default_root,
    version_key,
)
from bridge.registry.torch_closure import ManifestClosure, TorchClosure
from bridge.registry.trust import CodeTrust

HIDDEN = (8, 8, 8)

# importable by entry point once tmp_path is on sys.path (see the ``fixture_module`` fixture)
FIXTURE_MODULE = '''
import numpy as np
import torch

from bridge.closures.base import ClosureSpec, FieldSpec


class ScaledInterior:
    """A plain Python closure: s = factor * u on the interior."""

    def __init__(self, factor=2.0, halo=1):
        self.factor = factor
        self.spec = ClosureSpec(
            "scaled", halo, (FieldSpec("u", "U", "m s-1"),), (FieldSpec("s", "U", "m s-2"),),
            "float64",
        )

    def __call__(self, inputs):
        h = self.spec.halo
        u = inputs["u"]
        return {"s": self.factor * u[:, h : u.shape[1] - h, h : u.shape[2] - h]}


class Misbehaving(torch.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        y = x[:, :, 1:-1, 1:-1]
        if self.mode == "name":
            return {"su": y[:, 0], "wrong": y[:, 1]}
        return y.double()
'''


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("MLBRIDGE_HOME", str(root))
    return root


@pytest.fixture
def fixture_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    src = tmp_path / "src"
    src.mkdir()
    (src / "registry_fixture_closures.py").write_text(FIXTURE_MODULE)
    monkeypatch.syspath_prepend(str(src))
    return "registry_fixture_closures"


def cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_cnn(2, 2, HIDDEN).eval()


def save_artifact(module: torch.nn.Module, fmt: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        if fmt == "torchscript":
            path = directory / "model.ts"
            torch.jit.save(torch.jit.script(module), str(path))
        elif fmt == "export":
            path = directory / "model.pt2"
            dyn = torch.export.Dim.DYNAMIC
            program = torch.export.export(
                module, (torch.randn(3, 2, 16, 16),), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},)
            )
            torch.export.save(program, path)
        elif fmt == "state_dict":
            path = directory / "weights.pt"
            torch.save(module.state_dict(), path)
        else:  # a whole pickled module: what the registry must refuse
            path = directory / "pickled.pt"
            torch.save(module, path)
    return path


def write_manifest(
    directory: Path,
    artifact: str,
    *,
    name: str = "cnn",
    version: str = "1.0",
    fmt: str = "state_dict",
    halo: int = 4,
    outputs: tuple[str, ...] = ("su", "sv"),
    dtype: str = "float32",
    entry_point: str = "mlbridge_models.cnn:build_cnn",
    arch: str = f"in_channels = 2\nout_channels = 2\nhidden = {list(HIDDEN)}",
    extra: str = "",
) -> Path:
    head = f'name = "{name}"\nversion = "{version}"\nformat = "{fmt}"\nhalo = {halo}\n'
    head += f'dtype = "{dtype}"\ndescription = "test closure"\n'
    if artifact:
        head += f'artifact = "{artifact}"\n'
    if fmt in ("state_dict", "python"):
        head += f'entry_point = "{entry_point}"\n'
    head += extra
    if fmt in ("state_dict", "python") and arch:
        head += f"\n[arch]\n{arch}\n"
    for n, g in (("u", "U"), ("v", "V")):
        head += f'\n[[inputs]]\nname = "{n}"\ngrid = "{g}"\nunits = "m s-1"\n'
    for n in outputs:
        head += f'\n[[outputs]]\nname = "{n}"\ngrid = "U"\nunits = "m s-2"\n'
    path = directory / f"{name}-{version}.toml"
    path.write_text(head)
    return path


def sample_inputs(nz: int = 4, n: int = 20, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((nz, n, n)).astype(np.float32) for k in ("u", "v")}


def direct(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        y = module(torch.from_numpy(np.stack([inputs["u"], inputs["v"]], axis=1))).numpy()
    return {"su": y[:, 0], "sv": y[:, 1]}


# -- locations and names --------------------------------------------------------------------------


def test_default_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_root({"MLBRIDGE_HOME": str(tmp_path / "r")}) == tmp_path / "r"
    assert default_root({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "mlbridge"
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "share" / "mlbridge"
    assert default_root({"XDG_DATA_HOME": "relative/ignored"}) == expected
    assert default_root({}) == expected
    monkeypatch.setenv("MLBRIDGE_HOME", str(tmp_path / "env"))
    assert Registry().root == tmp_path / "env"


def test_versions_sort_naturally() -> None:
    versions = ["1.10", "1.2", "1.9", "0.9.1", "2", "v10", "v9"]
    assert sorted(versions, key=version_key) == ["0.9.1", "1.2", "1.9", "1.10", "2", "v9", "v10"]


# -- round trip -----------------------------------------------------------------------------------


def test_register_list_show_verify_load_remove(home: Path, tmp_path: Path) -> None:
    module = cnn()
    art = save_artifact(module, "state_dict", tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name)
    reg = Registry()
    assert reg.list() == []
    assert reg.register(art, man) == "cnn@1.0"
    stored = home / "cnn" / "1.0"
    assert sorted(p.name for p in stored.iterdir()) == [
        "manifest.toml",
        "record.json",
        "weights.pt",
    ]
    record = json.loads((stored / "record.json").read_text())
    assert set(record["sha256"]) == {"manifest.toml", "weights.pt"}
    assert record["dry_run"]["input_shape"] == [3, 16, 16]
    assert record["dry_run"]["outputs"]["su"]["shape"] == [3, 8, 8]
    [entry] = reg.list()
    assert entry.ref == "cnn@1.0" and entry.manifest is not None
    assert entry.manifest.spec.output_names == ("su", "sv")
    assert (
        reg.show("cnn").ref == "cnn@1.0" and reg.show("cnn@1.0").artifact == stored / "weights.pt"
    )
    assert [v.ok for v in reg.verify()] == [True] and reg.verify("cnn")[0].ok
    closure = reg.load("cnn", device="cpu")
    assert isinstance(closure, TorchClosure)
    inputs = sample_inputs()
    got, want = closure(inputs), direct(module, inputs)
    for k in ("su", "sv"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert reg.remove("cnn@1.0") == "cnn@1.0"
    assert reg.list() == [] and not (home / "cnn").exists()
    with pytest.raises(NotRegisteredError, match="no closure named 'cnn'"):
        reg.load("cnn")


def test_artifact_taken_from_the_manifest_when_not_given(home: Path, tmp_path: Path) -> None:
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name)
    assert Registry().register(None, man) == "cnn@1.0"


DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", ["torchscript", "export", "state_dict"])
def test_every_torch_format_gives_the_original_outputs(
    home: Path, tmp_path: Path, fmt: str, device: str
) -> None:
    module = cnn(seed=5)
    art = save_artifact(module, fmt, tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name, fmt=fmt, version=fmt)
    reg = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated upstream
        ref = reg.register(art, man)
        closure = reg.load(ref, device=device)
    assert closure.device.type == device
    inputs = sample_inputs(nz=5, n=23)
    got, want = closure(inputs), direct(module, inputs)
    for k in ("su", "sv"):
        assert got[k].shape == (5, 15, 15)
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)


def test_damaged_record_is_listed_not_fatal(home: Path, tmp_path: Path) -> None:
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    reg = Registry()
    reg.register(art, write_manifest(tmp_path / "src", art.name))
    (home / "cnn" / "1.0" / "record.json").write_text("{not json")
    [entry] = reg.list()
    assert entry.manifest is None and "unreadable registry record" in entry.problem
    assert not reg.verify()[0].ok


def test_python_closure_by_entry_point(home: Path, tmp_path: Path, fixture_module: str) -> None:
    man = tmp_path / "scaled.toml"
    man.write_text(
        textwrap.dedent(
            f"""
            name = "scaled"
            version = "0.1"
            format = "python"
            entry_point = "{fixture_module}:ScaledInterior"
            halo = 1
            dtype = "float64"
            [arch]
            factor = 3.0
            [[inputs]]
            name = "u"
            grid = "U"
            units = "m s-1"
            [[outputs]]
            name = "s"
            grid = "U"
            units = "m s-2"
            """
        )
    )
    reg = Registry()
    with pytest.raises(RegistrationError, match="register with --trust-code"):
        reg.register(None, man)  # arbitrary code: refused unless the user says so
    assert fixture_module not in sys.modules and not home.exists()
    assert reg.register(None, man, trust=CodeTrust(code=True)) == "scaled@0.1"
    assert reg.show("scaled").artifact is None
    assert reg.show("scaled").record["code"]["trust"] == "trust-code"
    closure = reg.load("scaled")
    assert isinstance(closure, ManifestClosure)
    u = np.random.default_rng(0).standard_normal((3, 7, 9))
    np.testing.assert_array_equal(closure({"u": u})["s"], 3.0 * u[:, 1:-1, 1:-1])
    assert reg.verify("scaled")[0].ok


# -- hashes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["weights.pt", "manifest.toml"])
def test_tampered_file_refused_at_load(home: Path, tmp_path: Path, victim: str) -> None:
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    reg = Registry()
    reg.register(art, write_manifest(tmp_path / "src", art.name))
    path = home / "cnn" / "1.0" / victim
    recorded = json.loads((home / "cnn" / "1.0" / "record.json").read_text())["sha256"][victim]
    with path.open("ab") as fh:
        fh.write(b"\n# tampered\n")
    with pytest.raises(HashMismatchError) as info:
        reg.load("cnn@1.0")
    message = str(info.value)
    assert str(path) in message and recorded in message and info.value.found in message
    assert info.value.found != recorded and info.value.expected == recorded
    [result] = reg.verify()
    assert not result.ok and str(path) in result.problems[0] and recorded in result.problems[0]


# -- refusals at registration ---------------------------------------------------------------------


def assert_nothing_registered(home: Path) -> None:
    assert Registry(home).list() == []
    leftovers = [p for p in home.rglob("*") if p.name.startswith(".")] if home.exists() else []
    assert leftovers == []


def test_wrong_halo_refused_with_both_shapes(home: Path, tmp_path: Path) -> None:
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name, halo=3)
    with pytest.raises(RegistrationError) as info:
        Registry().register(art, man)
    message = str(info.value)
    assert "cnn@1.0" in message and str(man) in message
    assert "output 'su' should have shape (3, 8, 8)" in message and "(3, 6, 6)" in message
    assert "consumes a halo of 4, the manifest declares 3" in message
    assert_nothing_registered(home)


def test_nan_output_refused(home: Path, tmp_path: Path) -> None:
    module = cnn()
    with torch.no_grad():
        module.layers[-1].bias[0] = float("nan")
    art = save_artifact(module, "state_dict", tmp_path / "src")
    with pytest.raises(
        RegistrationError, match=r"output 'su' should be finite.*192 NaN/inf values"
    ):
        Registry().register(art, write_manifest(tmp_path / "src", art.name))
    assert_nothing_registered(home)


def test_output_count_mismatch_refused(home: Path, tmp_path: Path) -> None:
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name, outputs=("su", "sv", "sh"))
    with pytest.raises(
        RegistrationError, match=r"return \(nz, 3, ny, nx\).*returned shape \(3, 2, 8, 8\)"
    ):
        Registry().register(art, man)


@pytest.mark.parametrize(
    ("mode", "pattern"),
    [
        ("name", r"outputs declared \['su', 'sv'\], the module returned \['su', 'wrong'\]"),
        ("dtype", "output 'su' should be float32, the module returned float64"),
    ],
)
def test_wrong_output_names_or_dtype_refused(
    home: Path, tmp_path: Path, fixture_module: str, mode: str, pattern: str
) -> None:
    art = tmp_path / "src" / "empty.pt"
    torch.save({}, art)
    man = write_manifest(
        tmp_path / "src",
        art.name,
        halo=1,
        entry_point=f"{fixture_module}:Misbehaving",
        arch=f'mode = "{mode}"',
    )
    trust = CodeTrust(architectures=frozenset({f"{fixture_module}:Misbehaving"}))
    with pytest.raises(RegistrationError, match=pattern):
        Registry().register(art, man, trust=trust)
    assert_nothing_registered(home)


def test_pickled_module_refused(home: Path, tmp_path: Path) -> None:
    art = save_artifact(cnn(), "pickle", tmp_path / "src")
    with pytest.raises(RegistrationError) as info:
        Registry().register(art, write_manifest(tmp_path / "src", art.name))
    message = str(info.value)
    assert "weights_only=True" in message and "arbitrary code" in message
    assert "accepted formats" in message and "'torchscript'" in message and "'export'" in message
    man = write_manifest(tmp_path / "src", art.name, fmt="torchscript", version="2")
    with pytest.raises(
        RegistrationError, match="declares format 'torchscript', but the file is a torch.save"
    ):
        Registry().register(art, man)
    assert_nothing_registered(home)


def test_weights_that_do_not_fit_the_architecture(home: Path, tmp_path: Path) -> None:
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name, arch="in_channels = 2\nout_channels = 2")
    with pytest.raises(RegistrationError, match="size mismatch|do not fit"):
        Registry().register(art, man)


# -- versions -------------------------------------------------------------------------------------


def test_same_version_other_content_needs_force(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    a = save_artifact(cnn(seed=1), "state_dict", tmp_path / "a")
    b = save_artifact(cnn(seed=2), "state_dict", tmp_path / "b")
    man_a, man_b = write_manifest(tmp_path / "a", a.name), write_manifest(tmp_path / "b", b.name)
    reg.register(a, man_a)
    sha_a = reg.show("cnn").record["sha256"]["weights.pt"]
    assert reg.register(a, man_a) == "cnn@1.0"  # identical content: nothing to do
    with pytest.raises(RegistrationError, match="cnn@1.0 is already registered .* other content"):
        reg.register(b, man_b)
    assert reg.show("cnn").record["sha256"]["weights.pt"] == sha_a
    assert reg.register(b, man_b, force=True) == "cnn@1.0"
    assert reg.show("cnn").record["sha256"]["weights.pt"] != sha_a
    assert [e.ref for e in reg.list()] == ["cnn@1.0"]
    assert reg.verify("cnn@1.0")[0].ok


def test_resolve_newest_and_remove_needs_a_version(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    for version in ("1.2", "1.10", "1.9"):
        reg.register(art, write_manifest(tmp_path / "src", art.name, version=version))
    assert reg.versions("cnn") == ["1.2", "1.9", "1.10"]
    assert reg.resolve("cnn") == "cnn@1.10" and reg.resolve("cnn@1.2") == "cnn@1.2"
    with pytest.raises(NotRegisteredError, match=r"cnn@3 is not registered .*1.2, 1.9, 1.10"):
        reg.resolve("cnn@3")
    with pytest.raises(NotRegisteredError, match="remove needs name@version"):
        reg.remove("cnn")
    reg.remove("cnn@1.10")
    assert reg.resolve("cnn") == "cnn@1.9"
    with pytest.raises(NotRegisteredError, match="malformed"):
        reg.resolve("../etc")


# -- command line ---------------------------------------------------------------------------------


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "cli-home"
    art = save_artifact(cnn(), "state_dict", tmp_path / "src")
    man = write_manifest(tmp_path / "src", art.name)
    h = ["--home", str(home)]
    assert main(["register", str(art), "--manifest", str(man), *h]) == 0
    assert "registered cnn@1.0" in capsys.readouterr().out
    assert main(["list", *h]) == 0
    out = capsys.readouterr().out
    assert "cnn@1.0" in out and "state_dict" in out and "u,v -> su,sv" in out
    assert main(["show", "cnn", *h]) == 0
    out = capsys.readouterr().out
    assert "sha256" in out and 'name = "cnn"' in out and "dry run: su (3, 8, 8)" in out
    assert main(["verify", *h]) == 0
    assert "1 ok, 0 changed" in capsys.readouterr().out
    (home / "cnn" / "1.0" / "weights.pt").write_bytes(b"tampered")
    assert main(["verify", "cnn@1.0", *h]) == 1
    assert "MISMATCH cnn@1.0" in capsys.readouterr().out
    # the same content again repairs the damaged copy; other content needs --force
    assert main(["register", str(art), "--manifest", str(man), *h]) == 0
    assert main(["verify", *h]) == 0
    other = save_artifact(cnn(seed=9), "state_dict", tmp_path / "other")
    other_man = write_manifest(tmp_path / "other", other.name)
    assert main(["register", str(other), "--manifest", str(other_man), *h]) == 1
    assert "already registered" in capsys.readouterr().err
    assert main(["register", str(other), "--manifest", str(other_man), "--force", *h]) == 0
    assert main(["remove", "cnn", *h]) == 1
    assert "remove needs name@version" in capsys.readouterr().err
    assert main(["remove", "cnn@1.0", *h]) == 0
    capsys.readouterr()
    assert main(["list", *h]) == 0
    assert "no closures registered" in capsys.readouterr().out
    bad = write_manifest(tmp_path / "src", art.name, halo=2, version="bad")
    assert main(["register", str(art), "--manifest", str(bad), *h]) == 1
    assert "mlbridge register: error: refusing to register cnn@bad" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["register", "list", "show", "verify", "remove"])
def test_cli_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"mlbridge {command}" in out and "--home" in out
