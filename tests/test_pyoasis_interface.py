"""The ``pyoasis`` path (OASIS3-MCT 4/5), pinned to pyoasis's interface: an interface check.

pyoasis is not installed here and nothing in this file couples through OASIS 4 or 5. The
binding (``bridge.transport.oasis.PyOasis``) is exercised over ``tests/pyoasis_interface_stub``,
a stand-in module that reproduces what pyoasis's source shows of its interface (return types,
argument checks, exceptions, the ``OSError`` of a missing ``liboasis.cbind.so``; see its
docstring and ``docs/oasis.md``). Also here: the fallback to the shim when importing pyoasis
raises ``OSError`` (servers and launcher), and the name limits of each OASIS version.

Only the last test needs the shim built (``fortran_build``); it runs ``open_backend`` in a
fresh interpreter, since MPI must not be initialised inside the pytest process.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bridge.config.coupling import CouplingConfig, load_config
from bridge.config.namcouple import (
    OASIS_2_0,
    OASIS_4_5,
    FieldLink,
    NamcoupleConfig,
    NamcoupleError,
    OasisLimits,
    Transform,
    compare_namcouple,
    format_namcouple,
    parse_namcouple,
)
from bridge.launch.oasis import check_oasis_only, choose_oasis_backend, oasis_backend_env
from bridge.transport.oasis import (
    BACKEND_ENV,
    SHIM_ENV,
    SHIM_NAME,
    OasisError,
    OasisNotAvailableError,
    PyOasis,
    find_shim,
    import_pyoasis,
)

REPO = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "pyoasis_interface_stub"
PRETEND = "PYOASIS_STUB_PRETEND_LIBRARY"
EXAMPLE = REPO / "examples" / "05_oasis_pure" / "coupling.toml"


@pytest.fixture
def stub_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stand-in importable as ``pyoasis`` here and in child interpreters."""
    monkeypatch.syspath_prepend(str(STUB))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(STUB), str(REPO)]))
    for name in (BACKEND_ENV, SHIM_ENV, PRETEND):
        monkeypatch.delenv(name, raising=False)
    sys.modules.pop("pyoasis", None)
    yield
    sys.modules.pop("pyoasis", None)


@pytest.fixture
def stub(stub_on_path: None, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh import of the stand-in, pretending ``liboasis.cbind.so`` loads."""
    monkeypatch.setenv(PRETEND, "1")
    return importlib.import_module("pyoasis")


def fake_shim(tmp_path: Path) -> Path:
    """A build directory with a file named like the shim (the launcher only looks for it)."""
    (tmp_path / "build" / "lib").mkdir(parents=True)
    path = tmp_path / "build" / "lib" / SHIM_NAME
    path.write_bytes(b"")
    return path


# --------------------------------------------------------------------------------------------
# the contract the stand-in reproduces, and the binding over it
# --------------------------------------------------------------------------------------------


def test_stand_in_reproduces_what_broke_the_old_binding(stub: ModuleType) -> None:
    part = stub.OrangePartition([0], [4], global_size=8)
    var = stub.Var("O_U", part, stub.OasisParameters.OASIS_OUT)
    result = var.put(0, np.zeros(4))
    assert result is stub.OasisParameters.OASIS_SENT
    with pytest.raises(TypeError):
        int(result or 0)  # what the binding did after the first transfer
    with pytest.raises(stub.PyOasisException):
        stub.pyoasis_abort("a string")  # it takes an exception
    with pytest.raises(stub.PyOasisException):
        var.put(np.int64(0), np.zeros(4))  # dates are checked with isinstance(date, int)
    with pytest.raises(stub.PyOasisException):
        stub.OrangePartition([np.int64(0)], [4])  # list elements must be exactly int


def test_put_and_get_return_info_codes(stub: ModuleType) -> None:
    backend = PyOasis(stub)
    assert backend.limits is OASIS_4_5
    assert backend.info_codes["Sent"] == stub.OasisParameters.OASIS_SENT.value
    assert backend.info_codes["Recvd"] == stub.OasisParameters.OASIS_RECVD.value
    comm = backend.init("mlbsrv")
    assert comm.Get_size() == 1
    part = backend.def_partition([(0, 4), (10, 4)], np.int64(40))
    sent = backend.def_var("MLB_u", part, "out", 8)
    got = backend.def_var("O_U", part, "in", 8)
    backend.enddef()
    out = np.zeros(8)
    for date in (0, 3600, 7200):  # every transfer, not only the first
        assert backend.put(sent, np.int64(date), np.full(8, 1.5)) == backend.info_codes["Sent"]
        assert backend.get(got, date, out) == backend.info_codes["Recvd"]
        assert np.array_equal(out, date + np.arange(8.0))
    assert backend.put(sent, 1800, np.zeros(8)) == backend.info_codes["Ok"]
    backend.terminate()
    calls = [name for name, _ in stub.CALLS]
    assert calls[0] == "init_comp" and calls[-1] == "terminate"
    assert calls.count("put") == 4 and calls.count("get") == 3


def test_pyoasis_errors_become_oasis_errors_naming_the_call(stub: ModuleType) -> None:
    backend = PyOasis(stub)
    backend.init("mlbsrv")
    part = backend.def_partition([(0, 4)], 8)
    var = backend.def_var("MLB_u", part, "out", 4)
    stub.FAIL_AT_DATE = 7200
    backend.put(var, 3600, np.zeros(4))
    with pytest.raises(OasisError, match=r"oasis_put \(MLB_u at date 7200\): OasisException"):
        backend.put(var, 7200, np.zeros(4))
    with pytest.raises(OasisError, match="the partition has 4 points, the array 3"):
        backend.put(var, 3600, np.zeros(3))
    with pytest.raises(OasisError, match=r"oasis_def_partition .*PyOasisException"):
        backend.def_partition([(-1, 4)], 8)


def test_abort_asks_oasis_for_status_1_and_keeps_the_message(
    stub: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    hard: list[int] = []
    backend = PyOasis(stub, hard_abort=hard.append)
    backend.init("mlbsrv")
    with pytest.raises(stub.JobAborted) as ended:
        backend.abort("bridge.server", "NaN in u at step 3")
    assert ended.value.code == 1
    name, args = stub.CALLS[-1]
    assert name == "oasis_abort"
    assert (args[1], args[2], args[5]) == ("bridge.server", "NaN in u at step 3", 1)
    assert "NaN in u at step 3" in capsys.readouterr().err
    assert hard == []  # oasis_abort did not return


def test_abort_falls_back_to_mpi_abort_when_oasis_abort_fails(
    stub: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    hard: list[int] = []
    backend = PyOasis(stub, hard_abort=hard.append)
    stub.ABORT_BINDING_ARGS = 5
    backend.abort("bridge.server", "the closure failed")
    assert hard == [1]
    err = capsys.readouterr().err
    assert "the closure failed" in err and "TypeError" in err


# --------------------------------------------------------------------------------------------
# no pyoasis library: the servers and the launcher fall back to the shim
# --------------------------------------------------------------------------------------------


def test_import_pyoasis_turns_oserror_into_not_available(stub_on_path: None) -> None:
    assert importlib.util.find_spec("pyoasis") is not None  # all the old check looked at
    with pytest.raises(OasisNotAvailableError, match=r"OSError: .*liboasis\.cbind\.so"):
        import_pyoasis()


def test_launcher_falls_back_to_the_shim_when_pyoasis_raises_oserror(
    stub_on_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim = fake_shim(tmp_path)
    build = tmp_path / "build"
    assert oasis_backend_env(build) == {BACKEND_ENV: "shim", SHIM_ENV: str(shim)}
    choice = choose_oasis_backend(build)
    assert choice.limits is OASIS_2_0
    assert choice.why_not_pyoasis is not None and "OSError" in choice.why_not_pyoasis
    monkeypatch.setenv(PRETEND, "1")  # now the child interpreter imports it
    assert oasis_backend_env(build) == {BACKEND_ENV: "pyoasis"}
    assert choose_oasis_backend(build).limits is OASIS_4_5
    monkeypatch.setenv(BACKEND_ENV, "shim")
    assert oasis_backend_env(build)[BACKEND_ENV] == "shim"
    monkeypatch.setenv(BACKEND_ENV, "pyoasis")
    monkeypatch.delenv(PRETEND)
    with pytest.raises(OasisNotAvailableError, match=f"{BACKEND_ENV}=pyoasis, but .*OSError"):
        choose_oasis_backend(build)


# --------------------------------------------------------------------------------------------
# name limits per OASIS version
# --------------------------------------------------------------------------------------------


def namcouple_of(oasis: OasisLimits = OASIS_2_0, **changes: object) -> NamcoupleConfig:
    link = FieldLink(
        src="O_U", dst="P_U", freq_s=3600, src_grid="ocnt", dst_grid="ocnt",
        src_nx=100, src_ny=50, dst_nx=100, dst_ny=50, restart_file="rst_u.nc",
    )  # fmt: skip
    models = tuple(changes.pop("models", ("ocnmod", "pymod")))  # type: ignore[call-overload]
    link = dataclasses.replace(link, **changes)
    return NamcoupleConfig(models=models, runtime_s=7200, fields=(link,), oasis=oasis)


@pytest.mark.parametrize(
    ("changes", "refused_by", "kept_by", "message"),
    [
        ({"src": "U" * 81}, OASIS_4_5, OASIS_2_0, "field name (src) '{v}' has 81 characters; "
         "OASIS3-MCT 4/5 keeps at most 80"),
        ({"src": "U" * 129}, OASIS_2_0, None, "field name (src) '{v}' has 129 characters; "
         "OASIS3-MCT 2.0 keeps at most 128"),
        ({"restart_file": "r" * 30 + ".nc"}, OASIS_4_5, OASIS_2_0, "restart file '{v}' has 33 "
         "characters; OASIS3-MCT 4/5 keeps at most 32"),
        ({"dst_grid": "g" * 81}, OASIS_4_5, OASIS_2_0, "target grid '{v}' has 81 characters; "
         "OASIS3-MCT 4/5 keeps at most 80"),
        ({"models": ("oceanmod", "pymod")}, OASIS_2_0, OASIS_4_5, "component name '{v}' has 8 "
         "characters; OASIS3-MCT 2.0 keeps at most 6"),
    ],
)  # fmt: skip
def test_name_limits_follow_the_version(
    changes: dict[str, object],
    refused_by: OasisLimits,
    kept_by: OasisLimits | None,
    message: str,
) -> None:
    value = next(iter(changes.values()))
    value = value[0] if isinstance(value, tuple) else value
    if kept_by is not None:
        namcouple_of(kept_by, **dict(changes))
    with pytest.raises(NamcoupleError) as err:
        namcouple_of(refused_by, **dict(changes))
    assert message.format(v=value) in str(err.value)


def test_namcouple_of_4_5_has_no_nbmodel_and_may_have_no_transformation() -> None:
    bare = namcouple_of(OASIS_4_5, transforms=())
    text = format_namcouple(bare)
    assert "$NBMODEL" not in text
    back = parse_namcouple(text, "run/namcouple", OASIS_4_5)
    assert back.models == () and back.fields == bare.fields
    assert compare_namcouple(namcouple_of(OASIS_4_5, transforms=()), back) == []
    with pytest.raises(NamcoupleError, match=r"block \$NBMODEL is missing"):
        parse_namcouple(text, "run/namcouple", OASIS_2_0)
    with pytest.raises(NamcoupleError, match="needs at least one transformation in OASIS3-MCT 2.0"):
        namcouple_of(OASIS_2_0, transforms=())
    namcouple_of(OASIS_4_5, transforms=(Transform("LOCTRANS", ("INSTANT",)),))


def test_oasis_table_is_checked_with_the_limits_of_a_version() -> None:
    table = load_config(EXAMPLE).oasis
    assert table is not None
    long_comp = dataclasses.replace(table, model_component="oceanmod")  # loads: 4/5 keep 80
    assert long_comp.version_problems(OASIS_4_5) == []
    assert long_comp.version_problems(OASIS_2_0) == [
        "[oasis] model_component = 'oceanmod' has 8 characters; OASIS3-MCT 2.0 keeps 6 of a "
        "component name ($NBMODEL), so oasis_init_comp would not find it in the namcouple"
    ]
    name = "U" * 77  # 81 characters with the servers' prefix MLB_
    long_field = dataclasses.replace(table, inputs={name: "u", "O_V": "v"})
    assert long_field.version_problems(OASIS_2_0) == []
    assert long_field.version_problems(OASIS_4_5) == [
        f"[oasis] inputs: field {name!r} (77 characters, 81 with the server prefix 'MLB_') is "
        "longer than the 80 characters OASIS3-MCT 4/5 keeps"
    ]


def test_launcher_checks_names_with_the_limits_of_the_binding_it_will_use(
    stub_on_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_shim(tmp_path)
    config = load_config(EXAMPLE)
    assert config.oasis is not None
    oasis = dataclasses.replace(config.oasis, model_component="oceanmod")
    config = dataclasses.replace(config, oasis=oasis)
    shim_message = "[oasis] model_component = 'oceanmod' has 8 characters; OASIS3-MCT 2.0 keeps 6"

    def problems_with(cfg: CouplingConfig) -> tuple[str, list[str]]:
        backend, problems = check_oasis_only(cfg, tmp_path / "build")
        assert backend is not None
        return backend.kind, problems

    kind, problems = problems_with(config)  # pyoasis raises OSError: the shim, OASIS 2.0
    assert kind == "shim"
    assert any(p.startswith(shim_message) and p.endswith("(the shim binding)") for p in problems)
    monkeypatch.setenv(PRETEND, "1")  # pyoasis imports: OASIS 4/5 keeps 80
    kind, problems = problems_with(config)
    assert kind == "pyoasis"
    assert not any("oceanmod" in p for p in problems), problems
    name = "U" * 77
    longer = dataclasses.replace(config, oasis=dataclasses.replace(oasis, inputs={name: "u"}))
    kind, problems = problems_with(longer)
    assert any(
        f"field {name!r} (77 characters, 81 with the server prefix 'MLB_') is longer than the 80 "
        "characters OASIS3-MCT 4/5 keeps (the pyoasis binding)" in p
        for p in problems
    ), problems


# --------------------------------------------------------------------------------------------
# the servers' open_backend, in a fresh interpreter, with the real shim
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "shim 2.0"),  # importing pyoasis raises OSError: the shim
        ({PRETEND: "1"}, "pyoasis 4/5"),
        ({PRETEND: "1", BACKEND_ENV: "shim"}, "shim 2.0"),  # the launcher's pin wins
    ],
)
def test_open_backend_auto_falls_back_to_the_shim(
    fortran_build: Path, stub_on_path: None, env: dict[str, str], expected: str
) -> None:
    shim = find_shim(fortran_build)
    code = (
        "from bridge.transport.oasis import open_backend; b = open_backend(); "
        "print(b.kind, b.limits.version)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, SHIM_ENV: str(shim), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == expected, proc.stdout
