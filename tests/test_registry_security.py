"""Nothing a user downloads runs code unless the user said so.

1. ``torch.export`` archives (``.pt2``) crafted to run code, the way ``torch.export.load`` would
   (a sample-inputs pickle that runs code and then returns the real inputs, pickled weights and
   constants, a shared library, a symbolic shape that ``sympify`` evaluates, guard code that
   runs on every call, a node calling ``os.system``, a name written into generated source), and
   a TorchScript archive whose pickle names ``exec``: refused, naming the member, at register,
   by the pre-launch check and in a server; ``show`` and ``verify`` never load; the marker file
   the payload would write never appears.
2. Entry points: a ``state_dict`` architecture must be shipped (entry-point group
   ``mlbridge.architectures``) or trusted with ``--architecture``; a ``python`` closure factory
   must be shipped (``mlbridge.closure_factories``: Zanna & Bolton) or trusted with
   ``--trust-code``, and the record, ``show`` and the run log say so. Checked before any import.
3. The registry's own failures: no empty folder after a refusal, a deleted ``record.json`` is
   reported, a changed manifest makes ``show`` fail, file-system errors are one line naming the
   path, folders and files honour the umask.
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from mlbridge_models.cnn import build_cnn
from system_helpers import tmpfs

from bridge.cli import main
from bridge.config.coupling import load_config
from bridge.launch.closure_checks import inspect_closures
from bridge.launch.rundir import record_closures
from bridge.registry.resolve import ClosureResolutionError, build_closures
from bridge.registry.store import (
    RECORD_FILE,
    RegistrationError,
    Registry,
    RegistryIOError,
    sha256_file,
)
from bridge.registry.trust import UntrustedCodeError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "04_register_cnn"
HIDDEN = (8, 8, 8)

MANIFEST = """\
name = "{name}"
version = "1"
format = "{fmt}"
artifact = "{artifact}"
halo = 4
dtype = "float32"
{extra}
[[inputs]]
name = "u"
grid = "U"
units = "m s-1"

[[inputs]]
name = "v"
grid = "V"
units = "m s-1"

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"

[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
"""


def write_manifest(
    directory: Path, artifact: str, fmt: str, name: str = "crafted", extra: str = ""
) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(MANIFEST.format(name=name, fmt=fmt, artifact=artifact, extra=extra))
    return path


def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_cnn(2, 2, HIDDEN).eval()


# -- crafting archives ----------------------------------------------------------------------------


class RunsCode:
    """Unpickles by running ``exec`` (what a hostile pickle does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class RunsCodeThenReturns:
    """Unpickles by running code, then returns ``real``: the archive still loads normally."""

    def __init__(self, marker: Path, real: object) -> None:
        self.marker, self.real = marker, real

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (operator.getitem, ((RunsCode(self.marker), self.real), 1))


def hostile_pickle(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine ``torch.export`` archive of the reference CNN (dynamic levels and sizes)."""
    path = tmp_path_factory.mktemp("export") / "model.pt2"
    dyn = torch.export.Dim.DYNAMIC
    program = torch.export.export(
        cnn(), (torch.randn(3, 2, 16, 16),), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},)
    )
    torch.export.save(program, path)
    return path


def rewrite(
    src: Path,
    dest: Path,
    *,
    program: Callable[[dict], None] | None = None,
    replace: dict[str, bytes] | None = None,
    add: dict[str, bytes] | None = None,
) -> Path:
    """A copy of an archive with members edited (paths below the archive's root folder)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            rest = info.filename.split("/", 1)[1]
            data = zin.read(info)
            if rest == "models/model.json" and program is not None:
                edited = json.loads(data)
                program(edited)
                data = json.dumps(edited).encode()
            data = (replace or {}).get(rest, data)
            zout.writestr(info.filename, data)
        for rest, data in (add or {}).items():
            zout.writestr(f"{root}/{rest}", data)
    return dest


def read_member(archive: Path, rest: str) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        root = zf.namelist()[0].split("/", 1)[0]
        return zf.read(f"{root}/{rest}")


def poisoned_sample_inputs(src: Path, dest: Path, marker: Path) -> Path:
    real = torch.load(io.BytesIO(read_member(src, "data/sample_inputs/model.pt")))
    payload = hostile_pickle(RunsCodeThenReturns(marker, real))
    return rewrite(src, dest, replace={"data/sample_inputs/model.pt": payload})


def pickled_weight(src: Path, dest: Path, marker: Path) -> Path:
    config = json.loads(read_member(src, "data/weights/model_weights_config.json"))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    return rewrite(
        src,
        dest,
        replace={
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{first['path_name']}": hostile_pickle(RunsCode(marker)),
        },
    )


def opaque_constant(src: Path, dest: Path, marker: Path) -> Path:
    import pickle

    return rewrite(
        src, dest, add={"data/constants/opaque_obj_0": pickle.dumps(RunsCode(marker), 2)}
    )


def shared_library(src: Path, dest: Path, marker: Path) -> Path:
    return rewrite(src, dest, add={"data/aotinductor/model/model.so": b"\x7fELF"})


def guard_code(src: Path, dest: Path, marker: Path) -> Path:
    code = f"L['x'].size()[0] >= 0 and open({str(marker)!r}, 'w').write('ran') > 0"
    return rewrite(src, dest, program=lambda p: p["guards_code"].append(code))


def symbolic_shape(src: Path, dest: Path, marker: Path) -> Path:
    def edit(program: dict) -> None:
        size = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]
        size["as_expr"]["expr_str"] += f" + 0*len(open({str(marker)!r}, 'w').write('ran'))"

    return rewrite(src, dest, program=edit)


def os_system_node(src: Path, dest: Path, marker: Path) -> Path:
    node = {
        "target": "torch.os.system",
        "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
        "outputs": [{"as_none": True}],
        "metadata": {},
        "is_hop_single_tensor_return": None,
        "name": "evil",
    }
    return rewrite(src, dest, program=lambda p: p["graph_module"]["graph"]["nodes"].insert(0, node))


def source_injection(src: Path, dest: Path, marker: Path) -> Path:
    def edit(program: dict) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"x=open({str(marker)!r}, 'w')"]

    return rewrite(src, dest, program=edit)


def carriage_return(src: Path, dest: Path, marker: Path) -> Path:
    def edit(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["metadata"]["stack_trace"] = (
            f"File 'x', line 1, in f\rimport os; os.system('{marker}')"
        )

    return rewrite(src, dest, program=edit)


def leaf_function_node(src: Path, dest: Path, marker: Path) -> Path:
    def edit(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.ops.higher_order.invoke_leaf_function"

    return rewrite(src, dest, program=edit)


# name -> (crafting, the member and words the refusal names, when plain torch runs the payload)
CRAFTED = {
    "sample_inputs_pickle": (
        poisoned_sample_inputs,
        ("data/sample_inputs/model.pt", "weights_only=True", "_operator.getitem"),
        "load",
    ),
    "pickled_weight": (pickled_weight, ("data/weights/weight_0", "pickle"), None),
    "opaque_constant": (opaque_constant, ("data/constants/opaque_obj_0", "pickle"), None),
    "shared_library": (shared_library, ("data/aotinductor/model/model.so", "native"), None),
    "guard_code": (guard_code, ("models/model.json", "guards_code[", "open"), "call"),
    "symbolic_shape": (symbolic_shape, ("models/model.json", "expr_str", "'len'"), "load"),
    "os_system_node": (os_system_node, ("models/model.json", "torch.os.system"), None),
    "source_injection": (source_injection, ("models/model.json", "forward_arg_names"), None),
    "carriage_return": (carriage_return, ("models/model.json", "stack_trace", "control"), None),
    "leaf_function_node": (leaf_function_node, ("models/model.json", "invoke_leaf_function"), None),
}


def plain_torch_runs(archive: Path, when: str) -> None:
    """What ``torch.export.load`` (and a call) does with the archive: the payload runs."""
    with contextlib.suppress(Exception):
        program = torch.export.load(archive)
        if when == "call":
            program.module()(torch.randn(2, 2, 12, 12))


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_export_archive_refused_at_register(
    exported: Path, tmp_path: Path, case: str
) -> None:
    craft, words, torch_runs = CRAFTED[case]
    marker = tmp_path / "MARKER"
    archive = craft(exported, tmp_path / "crafted.pt2", marker)
    if torch_runs:  # the archive is hostile indeed: torch alone runs it
        plain_torch_runs(archive, torch_runs)
        assert marker.read_text() == "ran"
        marker.unlink()
    home = tmp_path / "home"
    with pytest.raises(RegistrationError) as info:
        Registry(home).register(archive, write_manifest(tmp_path, archive.name, "export"))
    message = str(info.value)
    assert str(archive) in message and ".staging" not in message
    for word in words:
        assert word in message, message
    assert "refused: member" in message or "not an operator" in message
    assert not marker.exists()
    assert not home.exists()  # nothing left behind, not even an empty folder


def test_genuine_export_archive_registers_and_matches(exported: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ref = Registry(home).register(exported, write_manifest(tmp_path, exported.name, "export"))
    closure = Registry(home).load(ref, device="cpu")
    rng = np.random.default_rng(0)
    u, v = (rng.standard_normal((3, 17, 19)).astype(np.float32) for _ in range(2))
    with torch.no_grad():
        want = cnn()(torch.from_numpy(np.stack([u, v], axis=1))).numpy()
    got = closure({"u": u, "v": v})
    np.testing.assert_allclose(got["su"], want[:, 0], rtol=1e-5, atol=1e-6)


def plant(home: Path, ref_dir: Path, archive: Path) -> None:
    """Put ``archive`` in place of a registered artifact, its hash recorded, as an older mlbridge
    (one that loaded export archives with torch.export.load) would have registered it."""
    record_path = ref_dir / RECORD_FILE
    record = json.loads(record_path.read_text())
    target = ref_dir / record["artifact"]
    shutil.copyfile(archive, target)
    record["sha256"][target.name] = sha256_file(target)
    record_path.write_text(json.dumps(record))


@pytest.fixture()
def poisoned_case(exported: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """examples/04 coupled to ``crafted@1``: an export closure whose sample inputs run code."""
    case = tmp_path / "case"
    shutil.copytree(EXAMPLE, case, ignore=shutil.ignore_patterns("registry", "closure", "runs"))
    home = case / "registry"
    ref = Registry(home).register(exported, write_manifest(tmp_path, exported.name, "export"))
    assert ref == "crafted@1"
    marker = tmp_path / "MARKER"
    archive = poisoned_sample_inputs(exported, tmp_path / "poisoned.pt2", marker)
    plant(home, home / "crafted" / "1", archive)
    toml = case / "coupling.toml"
    toml.write_text(toml.read_text().replace('closure = "gz-toy@1"', 'closure = "crafted@1"'))
    return case, home, marker


def test_poisoned_registry_never_runs_the_payload(
    poisoned_case: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    case, home, marker = poisoned_case
    member = "data/sample_inputs/model.pt"
    h = ["--home", str(home)]
    assert main(["verify", *h]) == 0  # the hashes are as recorded: verify reads, never loads
    assert main(["show", "crafted", *h]) == 0
    capsys.readouterr()
    assert not marker.exists()
    # the pre-launch check, as `mlbridge run` runs it, and the servers' own loading
    config = load_config(case / "coupling.toml")
    problems = "\n".join(inspect_closures(config, (23, 17)).problems)
    assert member in problems and "weights_only=True" in problems
    with pytest.raises(ClosureResolutionError, match="sample_inputs/model.pt"):
        build_closures(config)  # what every server rank calls before the handshake
    assert not marker.exists()


def test_poisoned_registry_refused_by_mlbridge_run(poisoned_case: tuple[Path, Path, Path]) -> None:
    case, _, marker = poisoned_case
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", str(case / "coupling.toml")],
        cwd=case,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "data/sample_inputs/model.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (case / "runs").exists() or not any((case / "runs").iterdir())


def test_torchscript_pickle_cannot_run_code(tmp_path: Path) -> None:
    """TorchScript's own unpickler knows tensors and TorchScript classes only."""
    good = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(cnn()), str(good))
    marker = tmp_path / "MARKER"
    crafted = tmp_path / "crafted.ts"
    import pickle

    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(crafted, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(RunsCode(marker), protocol=2)
            zout.writestr(info.filename, data)
    with pytest.raises(RegistrationError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
        Registry(tmp_path / "home").register(
            crafted, write_manifest(tmp_path, crafted.name, "torchscript")
        )
    assert "exec" in str(info.value) and "not a loadable TorchScript archive" in str(info.value)
    assert not marker.exists()


# -- 2: entry points ------------------------------------------------------------------------------

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def build(**kwargs):
    Path({marker!r}).write_text("called")
    raise SystemExit("never")
"""


@pytest.fixture()
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module that writes a marker when imported and when its ``build`` is called."""
    src = tmp_path / "src"
    src.mkdir()
    marker = tmp_path / "MARKER"
    (src / "evil_arch.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(src))
    return "evil_arch", marker


@pytest.mark.parametrize("entry_point", ["os:system", "evil_arch:build"])
def test_unknown_architecture_refused_before_import(
    tmp_path: Path, evil_module: tuple[str, Path], entry_point: str
) -> None:
    _, marker = evil_module
    weights = tmp_path / "weights.pt"
    torch.save(cnn().state_dict(), weights)
    extra = f'entry_point = "{entry_point}"\n'
    man = write_manifest(tmp_path, weights.name, "state_dict", extra=extra)
    home = tmp_path / "home"
    with pytest.raises(RegistrationError) as info:
        Registry(home).register(weights, man)
    message = str(info.value)
    assert f"entry_point {entry_point!r} is not a known architecture" in message
    assert "mlbridge_models.cnn:build_cnn" in message and "--architecture" in message
    assert "evil_arch" not in sys.modules and not marker.exists() and not home.exists()


def test_architecture_trusted_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--architecture`` trusts one callable; the record keeps it, load and show check it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "my_nets.py").write_text(
        "from mlbridge_models.cnn import build_cnn\n\ndef unet(**kw):\n    return build_cnn(**kw)\n"
    )
    sys.path.insert(0, str(src))
    try:
        weights = tmp_path / "weights.pt"
        torch.save(cnn().state_dict(), weights)
        extra = 'entry_point = "my_nets:unet"\n\n[arch]\nin_channels = 2\nout_channels = 2\n'
        extra += f"hidden = {list(HIDDEN)}\n"
        man = write_manifest(tmp_path, weights.name, "state_dict", extra=extra)
        home = tmp_path / "home"
        h = ["--home", str(home)]
        assert main(["register", str(weights), "--manifest", str(man), *h]) == 1
        assert "--architecture my_nets:unet" in capsys.readouterr().err
        args = ["register", str(weights), "--manifest", str(man), *h]
        assert main([*args, "--architecture", "my_nets:unet"]) == 0
        assert "TRUSTED CODE" in capsys.readouterr().out
        record = json.loads((home / "crafted" / "1" / RECORD_FILE).read_text())
        assert record["code"] == {
            "entry_point": "my_nets:unet",
            "trust": "architecture",
            "shipped_by": "",
        }
        Registry(home).load("crafted", device="cpu")
        assert main(["show", "crafted", *h]) == 0
        assert "my_nets:unet, TRUSTED CODE" in capsys.readouterr().out
        # a record that trusts nothing (as an older mlbridge wrote it): refused at load
        del record["code"]
        (home / "crafted" / "1" / RECORD_FILE).write_text(json.dumps(record))
        with pytest.raises(UntrustedCodeError, match="my_nets:unet' is not a known"):
            Registry(home).load("crafted", device="cpu")
        assert main(["show", "crafted", *h]) == 1
        assert "REFUSED" in capsys.readouterr().out
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("my_nets", None)


PYTHON_CLOSURE = """
from pathlib import Path
from bridge.closures.base import ClosureSpec, FieldSpec

class Halver:
    spec = ClosureSpec("halver", 1, (FieldSpec("u", "U", "m s-1"), FieldSpec("v", "V", "m s-1")),
                       (FieldSpec("su", "U", "m s-2"), FieldSpec("sv", "V", "m s-2")), "float64")

    def __call__(self, inputs):
        return {"su": 0.5 * inputs["u"][:, 1:-1, 1:-1], "sv": 0.5 * inputs["v"][:, 1:-1, 1:-1]}

def build():
    Path(MARKER).write_text("called")
    return Halver()
"""


def test_python_closure_needs_trust_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    marker = tmp_path / "MARKER"
    (src / "halver_closure.py").write_text(PYTHON_CLOSURE.replace("MARKER", repr(str(marker))))
    monkeypatch.syspath_prepend(str(src))
    man = tmp_path / "halver.toml"
    head = 'format = "python"\nentry_point = "halver_closure:build"\nhalo = 1\ndtype = "float64"'
    text = MANIFEST.format(name="halver", fmt="python", artifact="", extra="")
    man.write_text(
        text.replace('format = "python"\nartifact = ""\nhalo = 4\ndtype = "float32"', head)
    )
    home = tmp_path / "home"
    h = ["--home", str(home)]
    assert main(["register", "--manifest", str(man), *h]) == 1
    err = capsys.readouterr().err
    assert "--trust-code" in err and "halver_closure:build" in err and err.count("\n") == 1
    assert not marker.exists() and "halver_closure" not in sys.modules and not home.exists()

    assert main(["register", "--manifest", str(man), "--trust-code", *h]) == 0
    assert "TRUSTED CODE" in capsys.readouterr().out and marker.read_text() == "called"
    record = json.loads((home / "halver" / "1" / RECORD_FILE).read_text())
    assert record["code"]["trust"] == "trust-code"
    assert record["code"]["entry_point"] == "halver_closure:build"
    assert main(["show", "halver", *h]) == 0
    assert "halver_closure:build, TRUSTED CODE" in capsys.readouterr().out

    # the run log and closures.json of a run say so
    case = tmp_path / "case"
    shutil.copytree(EXAMPLE, case, ignore=shutil.ignore_patterns("registry", "closure", "runs"))
    toml = case / "coupling.toml"
    toml.write_text(
        toml.read_text()
        .replace('closure = "gz-toy@1"', 'closure = "halver@1"')
        .replace('registry = "registry"', f'registry = "{home}"')
    )
    check = inspect_closures(load_config(toml), (23, 17))
    assert check.problems == ()
    [closure] = check.closures
    assert closure.trusted_code and "TRUSTED CODE" in closure.code
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record_closures(check, run_dir)
    log = capsys.readouterr().out
    assert "closure halver@1 (python, halo 1)" in log and "runs Python code" in log
    assert "halver_closure:build, TRUSTED CODE" in log
    saved = json.loads((run_dir / "closures.json").read_text())["closures"][0]
    assert saved["trusted_code"] is True

    # trust removed from the record: the load (every rank) and the pre-launch check refuse
    record["code"] = None
    (home / "halver" / "1" / RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(UntrustedCodeError, match="register with --trust-code"):
        Registry(home).load("halver")
    problems = inspect_closures(load_config(toml), (23, 17)).problems
    assert any("--trust-code" in p for p in problems)


def test_shipped_closure_factory_needs_no_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zanna & Bolton ships with mlbridge (``mlbridge.closure_factories``): no flag needed."""
    home = tmp_path / "home"
    zb = REPO / "models" / "artifacts" / "subgrid_cnn" / "zanna_bolton.toml"
    h = ["--home", str(home)]
    assert main(["register", "--manifest", str(zb), *h]) == 0
    assert "TRUSTED" not in capsys.readouterr().out
    record = json.loads((home / "zanna_bolton" / "fit" / RECORD_FILE).read_text())
    assert record["code"]["trust"] == "shipped"
    assert main(["show", "zanna_bolton", *h]) == 0
    out = capsys.readouterr().out
    assert "shipped by mlbridge (mlbridge.closure_factories: zanna_bolton)" in out


def test_legacy_entry_point_registers_as_the_shipped_architecture(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(cnn().state_dict(), weights)
    extra = 'entry_point = "models.cnn:build_cnn"\n\n[arch]\nin_channels = 2\nout_channels = 2\n'
    extra += f"hidden = {list(HIDDEN)}\n"
    man = write_manifest(tmp_path, weights.name, "state_dict", extra=extra)
    home = tmp_path / "home"
    assert Registry(home).register(weights, man) == "crafted@1"
    code = Registry(home).show("crafted").record["code"]
    assert code["trust"] == "shipped" and code["entry_point"] == "models.cnn:build_cnn"
    assert "mlbridge.architectures: cnn" in code["shipped_by"]
    Registry(home).load("crafted", device="cpu")


# -- 3: the registry's own failures ---------------------------------------------------------------


@pytest.fixture()
def registered(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A registry holding ``crafted@1`` (a state_dict CNN); the artifact and manifest sources."""
    weights = tmp_path / "weights.pt"
    torch.save(cnn().state_dict(), weights)
    extra = 'entry_point = "mlbridge_models.cnn:build_cnn"\n\n[arch]\nin_channels = 2\n'
    extra += f"out_channels = 2\nhidden = {list(HIDDEN)}\n"
    man = write_manifest(tmp_path, weights.name, "state_dict", extra=extra)
    home = tmp_path / "home"
    Registry(home).register(weights, man)
    return home, weights, man


def test_refused_registration_leaves_no_folder(registered: tuple[Path, Path, Path]) -> None:
    home, weights, man = registered
    bad = man.parent / "other.toml"
    text = man.read_text().replace('name = "crafted"', 'name = "other"')
    bad.write_text(text.replace("halo = 4", "halo = 3"))
    with pytest.raises(RegistrationError, match="refusing to register other@1"):
        Registry(home).register(weights, bad)
    assert sorted(p.name for p in home.iterdir()) == ["crafted"]


def test_deleted_record_is_reported(
    registered: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    home, weights, man = registered
    record = home / "crafted" / "1" / RECORD_FILE
    record.unlink()
    h = ["--home", str(home)]
    [entry] = Registry(home).list()
    assert entry.ref == "crafted@1" and "record.json: missing" in entry.problem
    [result] = Registry(home).verify()
    assert not result.ok and str(record) in result.problems[0]
    assert main(["list", *h]) == 0
    assert "crafted@1" in capsys.readouterr().out
    assert main(["verify", *h]) == 1
    assert "MISMATCH crafted@1" in capsys.readouterr().out
    assert main(["show", "crafted", *h]) == 1
    err = capsys.readouterr().err
    assert str(record) in err and "missing" in err and err.count("\n") == 1
    assert Registry(home).register(weights, man) == "crafted@1"  # registering again repairs
    assert Registry(home).verify()[0].ok


def test_show_says_a_changed_manifest(
    registered: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    home, _, _ = registered
    stored = home / "crafted" / "1" / "manifest.toml"
    recorded = json.loads((stored.parent / RECORD_FILE).read_text())["sha256"]["manifest.toml"]
    stored.write_text(stored.read_text().replace("halo = 4", "halo = 2"))
    assert main(["show", "crafted", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert f"sha256 {recorded}  manifest.toml" in out
    assert f"PROBLEM: {stored}: sha256 mismatch: recorded {recorded}" in out
    assert "manifest.toml (CHANGED since registration" in out


def test_file_in_the_way_is_one_line(
    tmp_path: Path, registered: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, man = registered
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the registry should be")
    assert main(["register", str(weights), "--manifest", str(man), "--home", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlbridge register: error:") and str(blocker) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    home = tmp_path / "home2"
    (home).mkdir()
    (home / "crafted").write_text("a file where the closure's folder goes")
    with pytest.raises(RegistryIOError, match=str(home / "crafted")):
        Registry(home).register(weights, man)
    assert [p.name for p in home.iterdir()] == ["crafted"]  # no staging folder left


def test_full_disk_is_one_line(
    tmp_path: Path, registered: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, man = registered
    big = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(64 * 1024)}, big)  # 256 kB
    torch.save(cnn().state_dict(), weights)
    with tmpfs(tmp_path / "small", "64k") as home:
        args = ["register", str(big), "--manifest", str(man), "--home", str(home)]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "No space left on device" in err and str(home) in err and err.count("\n") == 1
        assert list(home.iterdir()) == []  # the staging folder is gone


def test_read_only_registry_is_one_line(
    tmp_path: Path, registered: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, man = registered
    with tmpfs(tmp_path / "ro", "4m") as home:
        Registry(home).register(weights, man)
        subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
        h = ["--home", str(home)]
        other = man.parent / "v2.toml"
        other.write_text(man.read_text().replace('version = "1"', 'version = "2"'))
        assert main(["register", str(weights), "--manifest", str(other), *h]) == 1
        err = capsys.readouterr().err
        assert "Read-only file system" in err and str(home) in err and err.count("\n") == 1
        assert main(["remove", "crafted@1", *h]) == 1
        err = capsys.readouterr().err
        assert "Read-only file system" in err and err.count("\n") == 1
        assert main(["verify", *h]) == 0  # reading still works
        Registry(home).load("crafted", device="cpu")


@pytest.mark.parametrize(("umask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_modes_honour_the_umask(tmp_path: Path, umask: int, dirs: int, files: int) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(cnn().state_dict(), weights)
    extra = 'entry_point = "mlbridge_models.cnn:build_cnn"\n\n[arch]\nin_channels = 2\n'
    extra += f"out_channels = 2\nhidden = {list(HIDDEN)}\n"
    man = write_manifest(tmp_path, weights.name, "state_dict", extra=extra)
    old = os.umask(umask)
    try:
        Registry(tmp_path / "home").register(weights, man)
    finally:
        os.umask(old)
    version = tmp_path / "home" / "crafted" / "1"
    for folder in (tmp_path / "home", version.parent, version):
        assert folder.stat().st_mode & 0o777 == dirs, folder
    for path in version.iterdir():
        assert path.stat().st_mode & 0o777 == files, path


def test_torch_load_inside_the_export_loader_is_weights_only(tmp_path: Path) -> None:
    # the guard around torch.export.load: even weights_only=False (what torch.export.load asks
    # for on weights, constants and its sample-inputs fallback) cannot run the pickle's code
    from bridge.registry.safe_export import weights_only_torch_load

    marker = tmp_path / "marker"
    raw = hostile_pickle(RunsCode(marker))
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    with weights_only_torch_load():
        with pytest.raises(Exception, match="[Ww]eights only load failed"):
            torch.load(io.BytesIO(raw), weights_only=False)
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == before  # restored
