"""Manifest validation: every key, every refusal names the file, the key and the value."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.closures.base import ClosureSpec, FieldSpec
from bridge.registry.manifest import (
    FieldEntry,
    Manifest,
    ManifestError,
    Normalisation,
    load_manifest,
    manifest_to_toml,
    parse_manifest,
)

MINIMAL = """
name = "cnn"
version = "1.0"
format = "torchscript"
artifact = "model.pt"
halo = 4

[[inputs]]
name = "u"
grid = "U"
units = "m s-1"

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
"""

FULL = """
name = "cnn_gz21"
version = "2.1.0"
format = "state_dict"
artifact = "weights.pt"
halo = 4
dtype = "float64"
device = "cpu"
description = "subgrid momentum forcing"
license = "Apache-2.0"
entry_point = "mlbridge_models.cnn:build_cnn"

[arch]
in_channels = 2
out_channels = 2
hidden = [16, 16, 16]
kernel_sizes = [3, 3, 3, 3]

[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
mean = 0.01
std = 0.2

[[inputs]]
name = "v"
grid = "V"
units = "m s-1"
scale = 0.2
offset = -0.5

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
scale = 1e-7
clip = 1e-5

[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"

[provenance]
training_data = "toy_nemo fine run 1/12 deg, filtered x4"
code_revision = "0123abcd"
created = "2025-01-31"
notes = "epoch 40"

[provenance.metrics]
r2_su = 0.71
"corr sv" = 0.8
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return path


def test_minimal_manifest_defaults_and_spec(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, MINIMAL))
    assert (m.name, m.version, m.ref, m.format, m.halo) == (
        "cnn",
        "1.0",
        "cnn@1.0",
        "torchscript",
        4,
    )
    assert (m.dtype, m.device, m.description, m.license, m.entry_point, m.arch) == (
        "float32",
        "auto",
        "",
        "",
        "",
        {},
    )
    assert m.inputs == (FieldEntry("u", "U", "m s-1", Normalisation(), None),)
    assert m.spec == ClosureSpec(
        "cnn", 4, (FieldSpec("u", "U", "m s-1"),), (FieldSpec("su", "U", "m s-2"),), "float32"
    )
    assert m.artifact_path() == tmp_path / "model.pt"


def test_full_manifest_values(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, FULL))
    assert m.inputs[0].norm == Normalisation(0.01, 0.2, "mean_std")
    assert m.inputs[1].norm == Normalisation(-0.5, 0.2, "scale_offset")
    assert m.outputs[0].norm.scale == 1e-7 and m.outputs[0].clip == 1e-5
    assert m.outputs[1].norm.is_identity and m.outputs[1].clip is None
    assert m.arch == {
        "in_channels": 2,
        "out_channels": 2,
        "hidden": [16, 16, 16],
        "kernel_sizes": [3] * 4,
    }
    assert m.provenance.metrics == {"r2_su": 0.71, "corr sv": 0.8}
    assert m.provenance.code_revision == "0123abcd"
    assert m.spec.dtype == "float64"


@pytest.mark.parametrize("text", [MINIMAL, FULL])
def test_written_manifest_reads_back_equal(tmp_path: Path, text: str) -> None:
    m = load_manifest(write(tmp_path, text))
    again = parse_manifest(manifest_to_toml(m), source=str(tmp_path / "again.toml"))
    assert again == m
    renamed = replace(m, artifact="other.pt")
    assert parse_manifest(manifest_to_toml(renamed)).artifact == "other.pt"


def test_python_manifest_needs_no_artifact() -> None:
    text = MINIMAL.replace('format = "torchscript"', 'format = "python"').replace(
        'artifact = "model.pt"', 'entry_point = "bridge.closures:nothing"'
    )
    m = parse_manifest(text)
    assert m.artifact == "" and m.artifact_path() is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("halo = 4", 'halo = 4\ncolour = "red"', ["'colour'", "red"]),
        ('units = "m s-1"', 'units = "m s-1"\nunit = "m"', ["'inputs[0].unit'", "'m'"]),
        ('grid = "U"\nunits = "m s-1"', 'grid = "X"\nunits = "m s-1"', ["'inputs[0].grid'", "'X'"]),
        ("halo = 4", "halo = -1", ["'halo'", "-1"]),
        ("halo = 4", "halo = 2.5", ["'halo'", "2.5"]),
        ('format = "torchscript"', 'format = "pickle"', ["'format'", "'pickle'", "torchscript"]),
        ("halo = 4", 'halo = 4\ndtype = "float16"', ["'dtype'", "'float16'"]),
        ("halo = 4", 'halo = 4\ndevice = "tpu"', ["'device'", "'tpu'"]),
        ('name = "cnn"', 'name = "a/b"', ["'name'", "'a/b'"]),
        ('version = "1.0"', 'version = "1@0"', ["'version'", "'1@0'"]),
        ('units = "m s-1"', 'units = "m s-1"\nscale = 0', ["'inputs[0].scale'", "0"]),
        ('units = "m s-1"', 'units = "m s-1"\nmean = 1.0', ["'inputs[0].mean'", "std"]),
        ('units = "m s-1"', 'units = "m s-1"\nmean = 1.0\nstd = 2.0\nscale = 3.0', ["not both"]),
        ('units = "m s-1"', 'units = "m s-1"\nscale = "big"', ["'inputs[0].scale'", "'big'"]),
        ('units = "m s-1"', 'units = "m s-1"\nclip = 1.0', ["'inputs[0].clip'"]),
        ('units = "m s-2"', 'units = "m s-2"\nclip = -1.0', ["'outputs[0].clip'", "-1.0"]),
        ("halo = 4", 'halo = 4\nentry_point = "mlbridge_models.cnn:build_cnn"', ["'entry_point'"]),
        ('name = "u"', 'name = "2u"', ["'inputs[0].name'", "'2u'"]),
        ("halo = 4", "halo = 4\n[provenance]\nauthor = 1", ["'provenance.author'"]),
        (
            "halo = 4",
            'halo = 4\n[provenance.metrics]\nr2 = "good"',
            ["'provenance.metrics.r2'", "'good'"],
        ),
    ],
)
def test_bad_values_name_file_key_and_value(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize("key", ["name", "version", "format", "halo"])
def test_missing_required_key_is_named(tmp_path: Path, key: str) -> None:
    lines = [ln for ln in MINIMAL.splitlines() if not ln.startswith(f"{key} =")]
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    # without "name =" lines the fields lose their names too: the first problem is the top level's
    assert str(info.value).startswith(f"{path}: "), info.value
    assert info.value.problems[0].startswith(f"required key(s) ['{key}'] missing"), info.value


def test_missing_keys_in_fields_and_artifact(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"\['units'\] missing in \[inputs\[0\]\]"):
        parse_manifest(MINIMAL.replace('units = "m s-1"\n', ""))
    with pytest.raises(ManifestError, match=r"\['artifact'\] missing"):
        parse_manifest(MINIMAL.replace('artifact = "model.pt"\n', ""))
    state_dict = MINIMAL.replace('"torchscript"', '"state_dict"')
    with pytest.raises(ManifestError, match=r"\['entry_point'\] missing"):
        parse_manifest(state_dict)
    with pytest.raises(ManifestError, match="'entry_point': expected 'module:callable'"):
        parse_manifest(
            state_dict.replace("halo = 4", 'halo = 4\nentry_point = "mlbridge_models.cnn"')
        )


def test_inputs_must_be_a_nonempty_array_of_unique_tables() -> None:
    with pytest.raises(ManifestError, match="'inputs': expected a non-empty array"):
        parse_manifest(tomllib.loads(MINIMAL) | {"inputs": []})
    twice = MINIMAL.replace(
        "[[outputs]]", '[[inputs]]\nname = "u"\ngrid = "U"\nunits = ""\n\n[[outputs]]'
    )
    with pytest.raises(ManifestError, match="'inputs\\[1\\].name': name 'u' appears twice"):
        parse_manifest(twice)


def test_python_closure_refuses_normalisation() -> None:
    text = (
        MINIMAL.replace('format = "torchscript"', 'format = "python"')
        .replace('artifact = "model.pt"', 'entry_point = "pkg.mod:make"')
        .replace('units = "m s-1"', 'units = "m s-1"\nscale = 2.0')
    )
    with pytest.raises(ManifestError, match="'inputs\\[0\\]': normalisation applies to torch"):
        parse_manifest(text)


def test_stateful_flag_reaches_the_spec_and_round_trips() -> None:
    plain = parse_manifest(MINIMAL)
    assert not plain.stateful and not plain.spec.stateful
    assert "stateful" not in manifest_to_toml(plain)  # stateless manifests keep their bytes
    stateful = parse_manifest(MINIMAL.replace("halo = 4", "halo = 4\nstateful = true"))
    assert stateful.spec.stateful
    assert parse_manifest(manifest_to_toml(stateful)) == stateful
    with pytest.raises(ManifestError, match="'stateful': expected true or false, got 'yes'"):
        parse_manifest(MINIMAL.replace("halo = 4", 'halo = 4\nstateful = "yes"'))


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_manifest(tmp_path / "absent.toml")
    path = write(tmp_path, "name = ")
    with pytest.raises(ManifestError, match=f"{path}: not valid TOML"):
        load_manifest(path)


def test_closure_spec_validation() -> None:
    u = FieldSpec("u", "U", "m s-1")
    with pytest.raises(ValueError, match="grid must be one of T/U/V/F, got 'W'"):
        FieldSpec("u", "W")
    with pytest.raises(ValueError, match="halo must be an integer >= 0, got -2"):
        ClosureSpec("c", -2, (u,), (u,))
    with pytest.raises(ValueError, match="inputs repeat the names \\['u'\\]"):
        ClosureSpec("c", 1, (u, u), (u,))
    with pytest.raises(ValueError, match="at least one entry in outputs"):
        ClosureSpec("c", 1, (u,), ())
    spec = ClosureSpec("c", 1, [u], [FieldSpec("s")], "float32")
    assert spec.inputs == (u,) and spec.output_names == ("s",)
    assert (
        isinstance(Manifest.__dataclass_params__.frozen, bool)
        and Manifest.__dataclass_params__.frozen
    )
