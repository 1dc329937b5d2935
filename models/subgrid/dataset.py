"""The subgrid training dataset: coarse ``u, v, h`` and the forcing ``su, sv`` of a fine run.

Pipeline, one chunk of fine snapshots at a time (``build_dataset``):

1. the chunk's fine ``u, v, h`` are written to ``states.nc`` and the toy's ``&namtend`` mode on
   the fine grid gives their tendencies;
2. the states are coarse-grained (:mod:`mlbridge_models.subgrid.coarsen`) and the same mode on
   the coarse grid gives the coarse tendencies of the coarse-grained states;
3. ``su, sv`` (:func:`mlbridge_models.subgrid.forcing.subgrid_forcing`) and the coarse state go
   into ``chunk_NNNN.nc`` (CF attributes, units, provenance), written under a temporary name and
   renamed, then recorded in ``index.json`` (also replaced atomically).

A rerun skips the chunks the index lists whose file is there with the recorded sha256, so a
killed job resumes where it stopped; an index written with other settings (source, chunk size,
filter, grids) is refused rather than mixed. :func:`open_dataset` concatenates the chunks;
:func:`check_dataset` refuses a dataset whose grid or units disagree with a closure manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from mlbridge_models.subgrid.coarsen import refinement, t_mask, u_mask, v_mask
from mlbridge_models.subgrid.forcing import (
    affine_residual,
    coarsen_state,
    linear_tendency,
    perturbed_states,
    rest_thickness,
    subgrid_forcing,
    thickness_forcing,
)

from bridge import paths
from bridge.config.namelist import read_namelists, write_patched_cfg
from bridge.launch.mpiexec import Program, mpi_env, mpmd_command
from bridge.registry.manifest import Manifest, load_manifest
from bridge.registry.store import sha256_file

#: Format version of ``index.json``.
INDEX_VERSION = 1

#: Units, CF names and grid points of the dataset's variables.
VARIABLES: dict[str, dict[str, str]] = {
    "u": {
        "units": "m s-1",
        "standard_name": "sea_water_x_velocity",
        "long_name": "coarse-grained layer velocity in x",
        "grid_point": "U",
    },
    "v": {
        "units": "m s-1",
        "standard_name": "sea_water_y_velocity",
        "long_name": "coarse-grained layer velocity in y",
        "grid_point": "V",
    },
    "h": {
        "units": "m",
        "standard_name": "cell_thickness",
        "long_name": "coarse-grained isopycnal layer thickness",
        "grid_point": "T",
    },
    "su": {
        "units": "m s-2",
        "long_name": "subgrid momentum forcing in x: C(fine du/dt) - coarse du/dt(C(state))",
        "grid_point": "U",
    },
    "sv": {
        "units": "m s-2",
        "long_name": "subgrid momentum forcing in y: C(fine dv/dt) - coarse dv/dt(C(state))",
        "grid_point": "V",
    },
    "sh": {
        "units": "m s-1",
        "long_name": "subgrid thickness forcing: C(fine dh/dt) - coarse dh/dt(C(state))",
        "grid_point": "T",
    },
}

#: Fine-run attributes copied into the provenance (the namelist values the model writes).
_RUN_ATTRS = (
    "rn_Dt",
    "rn_dx",
    "rn_dy",
    "rn_rho0",
    "rn_gprime",
    "rn_f0",
    "rn_beta",
    "rn_tau0",
    "rn_ahm",
    "rn_bhm",
    "rn_rfr",
)


class DatasetError(ValueError):
    """A dataset, its index or its inputs disagree with what is expected."""


class ToyRunError(RuntimeError):
    """``toy_nemo`` failed in its tendency mode."""


@dataclass(frozen=True)
class ToyRunner:
    """Runs ``toy_nemo`` in its ``&namtend`` mode.

    Parameters
    ----------
    exe
        The ``toy_nemo`` executable.
    namelist_ref
        The toy's ``namelist_ref`` (default: :func:`bridge.paths.toy_namelist_ref`, the one of
        ``fortran_stubs/toy_nemo`` in a checkout or in the installed package).
    ranks
        MPI ranks (the decomposition is chosen by the model; results do not depend on it).
    timeout_s
        Wall-clock limit of one run [s].
    """

    exe: Path
    namelist_ref: Path = field(default_factory=paths.toy_namelist_ref)
    ranks: int = 1
    timeout_s: float = 3600.0

    def tendencies(
        self, cfg: Path, states: Path, workdir: Path, *, inviscid: bool = False
    ) -> xr.Dataset:
        """``dudt, dvdt, dhdt`` of every record of ``states`` on the grid of ``cfg``
        (with ``inviscid``, the lateral viscosities ``rn_ahm, rn_bhm`` of ``cfg`` set to 0).

        Raises
        ------
        ToyRunError
            With the model's error message if it does not end normally.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.namelist_ref, workdir / "namelist_ref")
        out = workdir / "tendencies.nc"
        patch = {
            "namtend": {
                "ln_tend": True,
                "cn_tend_in": str(states.resolve()),
                "cn_tend_out": str(out.resolve()),
            },
            "nammpp": {"jpni": 0, "jpnj": 0},
            "nammlb": {"ln_mlb": False},
        }
        if inviscid:
            patch["namusr_def"] = {"rn_ahm": 0.0, "rn_bhm": 0.0}
        write_patched_cfg(cfg, patch, workdir / "namelist_cfg")
        cmd = mpmd_command([Program(self.ranks, (str(self.exe),))])
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=mpi_env(),
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise ToyRunError(
                f"toy_nemo tendency mode in {workdir} failed "
                f"({proc.returncode}):\n{proc.stderr[-2000:]}"
            )
        with xr.open_dataset(out, decode_times=False) as ds:
            return ds.load()


@dataclass(frozen=True)
class DatasetSettings:
    """What a dataset is made from; an index written with other settings is not resumed.

    Parameters
    ----------
    fine_run
        The fine run's ``<cn_exp>_grid.nc``.
    fine_cfg, coarse_cfg
        The ``namelist_cfg`` of the fine run and of the coarse model.
    chunk
        Snapshots per chunk file.
    u_filter
        ``"face"`` or ``"box"`` (:func:`mlbridge_models.subgrid.coarsen.coarsen_u`).
    first_record
        First snapshot used (0-based), e.g. to drop the spin-up.
    inviscid
        Compute both tendencies without lateral viscosity, so that the forcing holds the
        unresolved eddy fluxes only and not minus the coarse model's own viscosity (which a
        closure would then learn to cancel, removing the dissipation the coarse grid needs).
    subtract_affine
        Subtract from ``su, sv, sh`` the part that is affine in the state
        (:func:`mlbridge_models.subgrid.forcing.affine_residual`: the filters' commutation error
        of the linear operators, from the models' own tendencies linearised about rest, without
        viscosity), so that the forcing holds the nonlinear (eddy) terms only.
    """

    fine_run: Path
    fine_cfg: Path
    coarse_cfg: Path
    chunk: int = 8
    u_filter: str = "face"
    first_record: int = 0
    inviscid: bool = False
    subtract_affine: bool = False

    def as_record(self) -> dict[str, Any]:
        """JSON-able form kept in the index (``subtract_affine`` only when set, so that the
        indexes written before it existed still resume)."""
        extra = {"subtract_affine": True} if self.subtract_affine else {}
        return extra | {
            "inviscid": self.inviscid,
            "fine_run": str(self.fine_run.resolve()),
            "fine_cfg": str(self.fine_cfg.resolve()),
            "coarse_cfg": str(self.coarse_cfg.resolve()),
            "chunk": self.chunk,
            "u_filter": self.u_filter,
            "first_record": self.first_record,
        }


@dataclass
class BuildReport:
    """What :func:`build_dataset` did: chunks written now, chunks found done, total records."""

    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    records: int = 0
    index: Path = Path()


def code_revision(repo: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the repository (default: the checkout this package runs from),
    or ``"unknown"`` outside a git checkout (an installed package)."""
    repo = repo if repo is not None else paths.checkout_root()
    if repo is None:
        return "unknown"
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _grid_of(cfg: Path, ref: Path) -> dict[str, Any]:
    nml = read_namelists(ref, cfg)
    return {
        "nx": nml.get_int("namusr_def", "nn_nx"),
        "ny": nml.get_int("namusr_def", "nn_ny"),
        "nz": nml.get_int("namusr_def", "nn_nz"),
        "dx": float(nml.get("namusr_def", "rn_dx")),
        "dy": float(nml.get("namusr_def", "rn_dy")),
    }


def _htot(cfg: Path, ref: Path) -> float:
    return float(read_namelists(ref, cfg).get("namusr_def", "rn_htot"))


def check_pair(fine: dict[str, Any], coarse: dict[str, Any]) -> int:
    """Refinement factor of a fine/coarse grid pair sharing one basin.

    Raises
    ------
    DatasetError
        If the sizes are not an integer refinement, the factor differs in x and y, the spacings
        are not in the same ratio, or the layers differ.
    """
    try:
        fx, fy = refinement(fine["nx"], coarse["nx"]), refinement(fine["ny"], coarse["ny"])
    except ValueError as err:
        raise DatasetError(f"fine/coarse grids: {err}") from None
    problems = []
    if min(fx, fy) < 2:
        problems.append(f"refinement {fx} x {fy}: the coarse grid is not coarser than the fine one")
    if fx != fy:
        problems.append(f"refinement {fx} in x but {fy} in y")
    for d, f in (("dx", fx), ("dy", fy)):
        if not np.isclose(fine[d] * f, coarse[d], rtol=1e-9):
            problems.append(
                f"fine {d} = {fine[d]} m times {f} is not the coarse {d} = {coarse[d]} m"
            )
    if fine["nz"] != coarse["nz"]:
        problems.append(f"fine run has {fine['nz']} layers, the coarse model {coarse['nz']}")
    if problems:
        raise DatasetError("fine/coarse grids do not share one basin: " + "; ".join(problems))
    return fx


def _states_file(path: Path, u: np.ndarray, v: np.ndarray, h: np.ndarray, time: np.ndarray) -> Path:
    """Write states as the toy's &namtend mode reads them: (time_counter, z, y, x)."""
    dims = ("time_counter", "z", "y", "x")
    ds = xr.Dataset(
        {"u": (dims, u), "v": (dims, v), "h": (dims, h)},
        coords={"time_counter": ("time_counter", time)},
    )
    ds.to_netcdf(path, format="NETCDF3_64BIT", unlimited_dims=["time_counter"])
    return path


def _positions(n: int, d: float) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(1, n + 1, dtype=np.float64)
    return (i - 1.5) * d, (i - 1.0) * d


def _chunk_dataset(
    coarse: Any,
    su: np.ndarray,
    sv: np.ndarray,
    time: np.ndarray,
    time_attrs: dict[str, Any],
    grid_c: dict[str, Any],
    attrs: dict[str, Any],
    sh: np.ndarray | None = None,
) -> xr.Dataset:
    dims = ("time_counter", "z", "y", "x")
    ny, nx = grid_c["ny"], grid_c["nx"]
    x_t, x_u = _positions(nx, grid_c["dx"])
    y_t, y_v = _positions(ny, grid_c["dy"])
    data = {"u": coarse.u, "v": coarse.v, "h": coarse.h, "su": su, "sv": sv}
    if sh is not None:
        data["sh"] = sh
    ds = xr.Dataset(
        {name: (dims, arr, dict(VARIABLES[name])) for name, arr in data.items()},
        coords={
            "time_counter": ("time_counter", time, time_attrs),
            "z": (
                "z",
                np.arange(1, coarse.u.shape[1] + 1, dtype=np.int32),
                {"long_name": "isopycnal layer (1 at the top)", "positive": "down"},
            ),
            "x_t": (
                "x",
                x_t,
                {"units": "m", "long_name": "x of T and V points from the western wall"},
            ),
            "x_u": (
                "x",
                x_u,
                {"units": "m", "long_name": "x of U and F points from the western wall"},
            ),
            "y_t": (
                "y",
                y_t,
                {"units": "m", "long_name": "y of T and U points from the southern wall"},
            ),
            "y_v": (
                "y",
                y_v,
                {"units": "m", "long_name": "y of V and F points from the southern wall"},
            ),
        },
    )
    ds["tmask"] = (("y", "x"), t_mask(ny, nx), {"long_name": "land mask at T points (1 ocean)"})
    ds["umask"] = (("y", "x"), u_mask(ny, nx), {"long_name": "land mask at U points (1 ocean)"})
    ds["vmask"] = (("y", "x"), v_mask(ny, nx), {"long_name": "land mask at V points (1 ocean)"})
    ds.attrs.update(attrs)
    return ds


def _tendency_tuple(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(ds[n].values, dtype=np.float64) for n in ("dudt", "dvdt", "dhdt"))


def _affine(
    runner: ToyRunner,
    settings: DatasetSettings,
    fine: tuple[np.ndarray, np.ndarray, np.ndarray],
    coarse: Any,
    time: np.ndarray,
    htot: tuple[float, float],
    factor: int,
    work: Path,
) -> Any:
    """The affine residual of one chunk from six more tendency runs: the rest state and the
    states ``rest +- eps d`` on each grid, all without viscosity."""
    tend: dict[str, Any] = {}
    for grid, cfg, (u, v, h), total in (
        ("fine", settings.fine_cfg, fine, htot[0]),
        ("coarse", settings.coarse_cfg, (coarse.u, coarse.v, coarse.h), htot[1]),
    ):
        h_rest = rest_thickness(h, total)
        plus, minus = perturbed_states(u, v, h, h_rest)
        zero = np.zeros_like(u[:1])
        runs = {}
        for name, st in (
            ("rest", (zero, zero, h_rest[:1])),
            ("plus", (plus.u, plus.v, plus.h)),
            ("minus", (minus.u, minus.v, minus.h)),
        ):
            t = time[:1] if name == "rest" else time
            states = _states_file(work / f"{grid}_{name}.nc", *st, t)
            runs[name] = _tendency_tuple(
                runner.tendencies(cfg, states, work / f"{grid}_{name}", inviscid=True)
            )
        lin = tuple(linear_tendency(p, m) for p, m in zip(runs["plus"], runs["minus"], strict=True))
        tend[grid] = (runs["rest"], lin)
    return affine_residual(
        tend["fine"][0],
        tend["fine"][1],
        tend["coarse"][0],
        tend["coarse"][1],
        factor,
        settings.u_filter,
    )


def build_dataset(
    settings: DatasetSettings,
    out_dir: Path,
    runner: ToyRunner,
    *,
    max_chunks: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Write (or complete) the dataset of ``settings`` in ``out_dir``.

    Parameters
    ----------
    settings
        Fine run, namelists, chunk size, filter.
    out_dir
        Directory of ``index.json`` and the ``chunk_NNNN.nc`` files (created).
    runner
        Runs ``toy_nemo`` in its tendency mode.
    max_chunks
        Write at most this many new chunks, then return (``None``: all).
    progress
        Called with one line per chunk.

    Returns
    -------
    BuildReport
        Chunks written and skipped, records in the dataset, the index path.

    Raises
    ------
    DatasetError
        If the grids do not pair, the fine run disagrees with its namelist, or ``out_dir`` holds
        an index written with other settings.
    ToyRunError
        If a tendency run fails.
    """
    if settings.chunk < 1:
        raise DatasetError(f"chunk must be >= 1 snapshot, got {settings.chunk}")
    ref = runner.namelist_ref
    grid_f = _grid_of(settings.fine_cfg, ref)
    grid_c = _grid_of(settings.coarse_cfg, ref)
    factor = check_pair(grid_f, grid_c)
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.json"
    record = settings.as_record() | {"factor": factor, "fine_grid": grid_f, "coarse_grid": grid_c}

    with xr.open_dataset(settings.fine_run, decode_times=False) as fine:
        shape = (fine.sizes["z"], fine.sizes["y"], fine.sizes["x"])
        if shape != (grid_f["nz"], grid_f["ny"], grid_f["nx"]):
            raise DatasetError(
                f"{settings.fine_run}: grid (z, y, x) = {shape}, but {settings.fine_cfg} gives "
                f"{(grid_f['nz'], grid_f['ny'], grid_f['nx'])}"
            )
        nrec = fine.sizes["time_counter"] - settings.first_record
        if nrec < 1:
            raise DatasetError(
                f"{settings.fine_run}: {fine.sizes['time_counter']} snapshots, "
                f"none after first_record = {settings.first_record}"
            )
        run_attrs = {f"fine_{k}": fine.attrs[k] for k in _RUN_ATTRS if k in fine.attrs}
        time_attrs = {
            k: v
            for k, v in fine["time_counter"].attrs.items()
            if k in ("units", "calendar", "standard_name", "axis")
        }

        if index_path.exists():
            index = json.loads(index_path.read_text())
            if index.get("version") != INDEX_VERSION or index.get("settings") != record:
                raise DatasetError(
                    f"{index_path} was written with other settings:\n  found    "
                    f"{index.get('settings')}\n  expected {record}\nuse another output directory "
                    "or remove it"
                )
        else:
            index = {"version": INDEX_VERSION, "settings": record, "chunks": {}}
        attrs = {
            "Conventions": "CF-1.8",
            "title": "toy_nemo subgrid momentum forcing: coarse-grained truth and its forcing",
            "forcing_definition": "su = C_u(fine du/dt) - coarse du/dt(C(u, v, h)); adding su to "
            "the coarse tendency gives the tendency of the filtered truth"
            + ("; both tendencies without lateral viscosity" if settings.inviscid else "")
            + (
                "; minus the affine residual C(T_f(rest) + L_f d) - (T_c(rest) + L_c C d) "
                "(linear operators' commutation error, L without viscosity)"
                if settings.subtract_affine
                else ""
            ),
            "inviscid": int(settings.inviscid),
            "subtract_affine": int(settings.subtract_affine),
            "coarse_graining": f"box filter of one coarse cell, factor {factor}, "
            f"u_filter = {settings.u_filter} (models/subgrid/coarsen.py)",
            "fine_run_file": str(settings.fine_run.resolve()),
            "fine_namelist_cfg": str(settings.fine_cfg.resolve()),
            "coarse_namelist_cfg": str(settings.coarse_cfg.resolve()),
            "code_revision": code_revision(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **run_attrs,
            "coarse_rn_dx": grid_c["dx"],
            "coarse_rn_dy": grid_c["dy"],
            "factor": factor,
        }

        report = BuildReport(records=nrec, index=index_path)
        nchunks = -(-nrec // settings.chunk)
        for ichunk in range(nchunks):
            name = f"chunk_{ichunk:04d}.nc"
            done = index["chunks"].get(str(ichunk))
            if done and (out_dir / name).exists() and sha256_file(out_dir / name) == done["sha256"]:
                report.skipped.append(ichunk)
                continue
            if max_chunks is not None and len(report.written) >= max_chunks:
                break
            r0 = settings.first_record + ichunk * settings.chunk
            r1 = min(r0 + settings.chunk, settings.first_record + nrec)
            sel = fine.isel(time_counter=slice(r0, r1))
            u, v, h = (np.asarray(sel[n].values, dtype=np.float64) for n in ("u", "v", "h"))
            time = np.asarray(sel["time_counter"].values, dtype=np.float64)

            work = out_dir / "work" / name.removesuffix(".nc")
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            fine_states = _states_file(work / "fine_states.nc", u, v, h, time)
            tf = runner.tendencies(
                settings.fine_cfg, fine_states, work / "fine", inviscid=settings.inviscid
            )
            coarse = coarsen_state(u, v, h, factor, settings.u_filter)
            coarse_states = _states_file(
                work / "coarse_states.nc", coarse.u, coarse.v, coarse.h, time
            )
            tc = runner.tendencies(
                settings.coarse_cfg, coarse_states, work / "coarse", inviscid=settings.inviscid
            )
            su, sv = subgrid_forcing(
                tf["dudt"].values,
                tf["dvdt"].values,
                tc["dudt"].values,
                tc["dvdt"].values,
                factor,
                settings.u_filter,
            )
            sh = thickness_forcing(tf["dhdt"].values, tc["dhdt"].values, factor)
            if settings.subtract_affine:
                res = _affine(
                    runner,
                    settings,
                    (u, v, h),
                    coarse,
                    time,
                    (_htot(settings.fine_cfg, ref), _htot(settings.coarse_cfg, ref)),
                    factor,
                    work,
                )
                su, sv, sh = su - res.u, sv - res.v, sh - res.h
            ds = _chunk_dataset(
                coarse,
                su,
                sv,
                time,
                time_attrs,
                grid_c,
                attrs | {"fine_records": f"{r0} to {r1 - 1} (0-based)"},
                sh,
            )
            tmp = out_dir / f".{name}.tmp"
            ds.to_netcdf(tmp, unlimited_dims=["time_counter"])
            os.replace(tmp, out_dir / name)
            shutil.rmtree(work)
            index["chunks"][str(ichunk)] = {
                "file": name,
                "records": [r0, r1],
                "sha256": sha256_file(out_dir / name),
            }
            _write_json(index_path, index)
            report.written.append(ichunk)
            if progress:
                progress(f"{name}: fine snapshots {r0}..{r1 - 1} written")
    work_root = out_dir / "work"
    if work_root.exists() and not any(work_root.iterdir()):
        work_root.rmdir()
    return report


def open_dataset(out_dir: Path) -> xr.Dataset:
    """The chunks of ``out_dir`` listed in its index, concatenated in time (loaded in memory).

    Raises
    ------
    DatasetError
        If there is no index, or a listed chunk is missing or was changed since it was written.
    """
    index_path = out_dir / "index.json"
    if not index_path.exists():
        raise DatasetError(f"{out_dir}: no index.json (not a dataset written by make_data)")
    index = json.loads(index_path.read_text())
    parts = []
    for key in sorted(index["chunks"], key=int):
        entry = index["chunks"][key]
        path = out_dir / entry["file"]
        if not path.exists():
            raise DatasetError(f"{path}: listed in {index_path} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise DatasetError(f"{path}: sha256 differs from the one in {index_path}")
        with xr.open_dataset(path, decode_times=False) as ds:
            parts.append(ds.load())
    if not parts:
        raise DatasetError(f"{index_path}: no chunk written yet")
    return xr.concat(
        parts,
        dim="time_counter",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )


def check_dataset(
    ds: xr.Dataset, manifest: Manifest | Path | str, grid: tuple[int, int] | None = None
) -> None:
    """Refuse a dataset whose variables, grid points, units or grid disagree with a manifest.

    Parameters
    ----------
    ds
        The dataset (e.g. from :func:`open_dataset`).
    manifest
        The closure's manifest (or its path): each input and output must be a variable of
        ``ds`` with the same ``units`` and ``grid_point``.
    grid
        Expected horizontal size ``(ny, nx)`` of the coarse model, rim included (``None``: any).

    Raises
    ------
    DatasetError
        Listing every disagreement, each naming the variable and both values.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    problems = []
    for kind, entries in (("input", manifest.inputs), ("output", manifest.outputs)):
        for entry in entries:
            if entry.name not in ds.variables:
                problems.append(
                    f"manifest {kind} {entry.name!r}: no such variable in the dataset "
                    f"(variables: {sorted(ds.data_vars)})"
                )
                continue
            var = ds[entry.name]
            units = var.attrs.get("units")
            if units != entry.units:
                problems.append(
                    f"{entry.name}: units {units!r} in the dataset, {entry.units!r} in the manifest"
                )
            point = var.attrs.get("grid_point")
            if point != entry.grid:
                problems.append(
                    f"{entry.name}: grid point {point!r} in the dataset, "
                    f"{entry.grid!r} in the manifest"
                )
            if var.ndim != 4:
                problems.append(
                    f"{entry.name}: dimensions {var.dims}, expected (time_counter, z, y, x)"
                )
    if grid is not None:
        got = (ds.sizes.get("y"), ds.sizes.get("x"))
        if got != tuple(grid):
            problems.append(f"grid (y, x) = {got} in the dataset, {tuple(grid)} expected")
    if problems:
        raise DatasetError(
            f"dataset refused for manifest {manifest.name}@{manifest.version}:\n  - "
            + "\n  - ".join(problems)
        )
