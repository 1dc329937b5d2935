"""NEMO-style namelist_ref + namelist_cfg: merging, errors naming file and entry, patching."""

from __future__ import annotations

from pathlib import Path

import f90nml
import pytest

from bridge.config.namelist import (
    Grid,
    NamelistError,
    read_namelists,
    restart_file,
    run_patch,
    write_patched_cfg,
)

REF = """\
!! reference namelist: every entry with its default
&namrun        !   parameters of the run
   cn_exp    = "TOY"
   nn_it000  = 1
   nn_itend  = 100
/
&namdom        !   time and space domain
   rn_Dt     = 900.
/
&namusr_def    !   user defined configuration
   nn_nx     = 32
   nn_ny     = 24
   nn_nz     = 3
   rn_dx     = 32.e3
/
&nammpp        !   massively parallel processing
   jpni      = 0
   jpnj      = 0
/
"""

CFG = """\
!! configuration namelist: what differs from the reference
&namrun
   CN_EXP    = "COARSE"   ! upper case on purpose: names are case-insensitive
   nn_itend  = 50
/
&namdom
   rn_dt     = 600.
/
&nammpp
   jpni      = 2
   jpnj      = 1
/
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    ref, cfg = tmp_path / "namelist_ref", tmp_path / "namelist_cfg"
    ref.write_text(REF)
    cfg.write_text(CFG)
    return ref, cfg


def test_cfg_overrides_ref_entry_by_entry(files: tuple[Path, Path]) -> None:
    nml = read_namelists(*files)
    assert nml.experiment == "COARSE"
    assert nml.it000 == 1 and nml.itend == 50 and nml.steps == 50
    assert nml.dt == 600.0  # rn_Dt in ref, rn_dt in cfg: one entry
    assert nml.get("NAMDOM", "RN_DT") == 600.0
    assert nml.grid == Grid(32, 24, 3) and nml.grid.columns == 32 * 24
    assert (nml.jpni, nml.jpnj) == (2, 1) and nml.decomposition == (2, 1)
    assert nml.get("namusr_def", "rn_dx") == 32.0e3  # from ref only


def test_where_names_the_file_the_value_comes_from(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    nml = read_namelists(ref, cfg)
    assert nml.where("namdom", "rn_Dt") == f"{cfg}: &namdom rn_Dt"
    assert nml.where("namusr_def", "nn_nx") == f"{ref}: &namusr_def nn_nx"


def test_unknown_cfg_entry_is_refused_naming_it(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    cfg.write_text(CFG.replace("nn_itend  = 50", "nn_itend  = 50\n   nn_bogus = 3"))
    with pytest.raises(NamelistError) as info:
        read_namelists(ref, cfg)
    message = str(info.value)
    assert f"{cfg}: &namrun nn_bogus: no such entry in {ref}" in message
    assert "nn_itend" in message  # lists what the block does have


def test_unknown_cfg_block_is_refused(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    cfg.write_text(CFG + "&namnope\n  x = 1\n/\n")
    with pytest.raises(NamelistError, match=r"block &namnope does not exist"):
        read_namelists(ref, cfg)


def test_missing_and_invalid_files(files: tuple[Path, Path], tmp_path: Path) -> None:
    ref, cfg = files
    with pytest.raises(NamelistError, match=r"namelist_cfg not found"):
        read_namelists(ref, tmp_path / "nope")
    with pytest.raises(NamelistError, match=r"nope: namelist_ref not found"):
        read_namelists(tmp_path / "nope", cfg)


def test_missing_and_mistyped_entries(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    cfg.write_text(CFG.replace("rn_dt     = 600.", "rn_dt = 'fast'"))
    nml = read_namelists(ref, cfg)
    with pytest.raises(NamelistError, match=r"namelist_cfg: &namdom rn_dt = 'fast': expected"):
        _ = nml.dt
    with pytest.raises(NamelistError, match=r"&namrun nn_nothing not found"):
        nml.get("namrun", "nn_nothing")
    assert nml.get("namrun", "nn_nothing", 7) == 7


def test_grid_needs_namusr_def(tmp_path: Path) -> None:
    ref, cfg = tmp_path / "ref", tmp_path / "cfg"
    ref.write_text("&namrun\n nn_it000 = 1\n/\n")
    cfg.write_text("")
    with pytest.raises(NamelistError, match=r"&namusr_def: no global grid size nx"):
        _ = read_namelists(ref, cfg).grid


def test_patch_steps_and_decomposition(files: tuple[Path, Path]) -> None:
    nml = read_namelists(*files)
    assert run_patch(nml) == {}
    assert run_patch(nml, steps=10) == {"namrun": {"nn_itend": 10}}
    # 2 x 1 subdomains: 2 ranks keep it, 3 ranks let the model choose
    assert run_patch(nml, model_ranks=2) == {}
    assert run_patch(nml, model_ranks=3) == {"nammpp": {"jpni": 0, "jpnj": 0}}
    patched = nml.with_patch(run_patch(nml, steps=10, model_ranks=3))
    assert patched.itend == 10 and patched.decomposition is None
    assert patched.patch == {"namrun": {"nn_itend": 10}, "nammpp": {"jpni": 0, "jpnj": 0}}
    assert nml.itend == 50, "the original view is unchanged"


def test_patch_switches_coupling_to_match_the_config(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    assert run_patch(read_namelists(ref, cfg), coupled=True) == {}  # no &nammlb: nothing
    ref.write_text(REF + "&nammlb\n   ln_mlb = .false.\n/\n")
    nml = read_namelists(ref, cfg)
    assert run_patch(nml, coupled=False) == {}
    assert run_patch(nml, coupled=True) == {"nammlb": {"ln_mlb": True}}


def test_patch_follows_nn_it000(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    cfg.write_text(CFG.replace("nn_itend  = 50", "nn_it000 = 101\n   nn_itend = 200"))
    nml = read_namelists(ref, cfg)
    assert run_patch(nml, steps=5) == {"namrun": {"nn_itend": 105}}


def test_relative_restart_file_is_made_absolute(files: tuple[Path, Path]) -> None:
    ref, cfg = files
    ref.write_text(
        REF.replace(
            "nn_itend  = 100", 'nn_itend = 100\n   ln_rstart = .false.\n   cn_ocerst_in = "restart"'
        )
    )
    assert restart_file(read_namelists(ref, cfg)) is None
    cfg.write_text(
        CFG.replace(
            "nn_itend  = 50",
            'nn_itend = 50\n   ln_rstart = .true.\n   cn_ocerst_in = "rst/TOY_00000100_restart"',
        )
    )
    nml = read_namelists(ref, cfg)
    expected = cfg.parent / "rst" / "TOY_00000100_restart.nc"
    assert restart_file(nml) == expected
    assert run_patch(nml) == {"namrun": {"cn_ocerst_in": str(expected)}}
    assert run_patch(nml.with_patch(run_patch(nml))) == {}  # already absolute


def test_write_patched_cfg_keeps_comments_and_adds_entries(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    ref, cfg = files
    out = tmp_path / "run" / "namelist_cfg"
    out.parent.mkdir()
    patch = {"namrun": {"nn_itend": 10, "nn_it000": 1}, "namusr_def": {"nn_nz": 5}}
    write_patched_cfg(cfg, patch, out)
    text = out.read_text()
    assert "upper case on purpose" in text  # the user's comments survive
    written = f90nml.read(str(out))
    assert written["namrun"]["nn_itend"] == 10 and written["namrun"]["nn_it000"] == 1
    assert written["namusr_def"]["nn_nz"] == 5  # a block absent from cfg is added
    merged = read_namelists(ref, out)
    assert merged.itend == 10 and merged.grid.nz == 5 and merged.experiment == "COARSE"


def test_write_without_patch_copies(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, cfg = files
    out = write_patched_cfg(cfg, {}, tmp_path / "copy")
    assert out.read_text() == CFG
