"""Train the subgrid momentum CNN and fit the Zanna & Bolton coefficient on a ``make_data`` dataset.

The CNN (:mod:`mlbridge_models.cnn`, valid convolutions, halo = sum of the kernels' half widths)
maps the coarse ``u, v`` of one layer to ``su, sv`` of that layer; layers and snapshots are the
batch. It sees the whole coarse field padded with zeros by its halo, which is what the bridge
hands a closure at a closed edge (cells outside the grid are zero), so training and online use
agree at the walls. The loss is the mean square error over ocean points (``umask`` for ``su``,
``vmask`` for ``sv``, ``tmask`` for ``sh``) in normalised units. The last ``--val-frac`` of the
snapshots (in time) are held out; the offline skill (R2 on them) of the CNN and of Zanna &
Bolton goes into the manifest.

With ``--inputs u v h --outputs su sv sh`` the CNN also takes the layer thickness ``h`` and
returns the thickness forcing ``sh`` (T points, m s-1), as the closure ``subgrid-cnn-h``. ``h``
is normalised by two constants written in the manifest, so the closure stays local (no mean
over the block a server sees): the offset is the thickness of a layer at rest ``rn_htot / nz``
of ``--coarse-cfg`` (every layer's basin mean, the layers' volumes being conserved), the scale
the RMS of ``h`` minus it over the training ocean points, one pair for every layer as for
``u, v`` (the levels are the batch, and a server may hand the network any subset of them).
On land, where the model's ``h`` is 0, the network sees a zero anomaly
(:class:`mlbridge_models.cnn.ThicknessInputCNN`), so that without biases a resting ocean
still gets exactly no forcing. ``sh`` has its own scale (its RMS) and clip bound, the T mask in
the loss and its R2 in ``training.json`` and the manifest.

The Zanna & Bolton coefficient is the least-squares fit ``kappa = <S . Z> / <Z . Z>`` over the
training snapshots' ocean points, ``Z`` the closure's forcing with ``kappa = 1``.

Written to ``--out``: ``subgrid_cnn.pt2`` (``subgrid_cnn_h.pt2`` with ``h`` or ``sh``;
``torch.export``, float32), ``manifest.toml`` (normalisation, clip bound = ``--clip-factor`` x
the largest ``|S|`` of the training data, provenance and offline metrics),
``zanna_bolton.toml`` (python-format manifest with the fitted ``kappa``) and ``training.json``
(loss curve, fit, settings, the thickness's statistics per layer). Before anything is trained
the dataset is checked against the manifest: variables, units, grid points and the coarse grid
size must agree.

Usage::

    python -m mlbridge_models.subgrid.train data/subgrid/year_009 data/subgrid/year_010 \\
        --out models/artifacts/subgrid_cnn --epochs 60
    python -m mlbridge_models.subgrid.train data/subgrid_h/year_005 --inputs u v h \\
        --outputs su sv sh --out models/artifacts/subgrid_cnn_h
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

NAME = "subgrid-cnn"
ARTIFACT = "subgrid_cnn.pt2"
NAME_H = "subgrid-cnn-h"
ARTIFACT_H = "subgrid_cnn_h.pt2"

#: The fields a subgrid CNN may take and return, in channel order: grid point, units, mask.
INPUT_FIELDS: dict[str, tuple[str, str, str]] = {
    "u": ("U", "m s-1", "umask"),
    "v": ("V", "m s-1", "vmask"),
    "h": ("T", "m", "tmask"),
}
OUTPUT_FIELDS: dict[str, tuple[str, str, str]] = {
    "su": ("U", "m s-2", "umask"),
    "sv": ("V", "m s-2", "vmask"),
    "sh": ("T", "m s-1", "tmask"),
}

LAND_FRACTION = 1.0e-3
"""A thickness at or below this fraction of the reference thickness is land (the model's land
thickness is 0, and so is the padding beyond a closed edge): the network sees a zero anomaly
there (:class:`mlbridge_models.cnn.ThicknessInputCNN`)."""


def _subsequence(names: Sequence[str], allowed: Sequence[str], required: Sequence[str]) -> bool:
    it = iter(allowed)
    return all(n in it for n in names) and all(r in names for r in required)


@dataclass
class TrainSettings:
    """How the CNN is trained.

    ``bias = False`` builds the network without biases, so that a resting ocean gets no forcing
    (with biases a CNN returns a constant field for zero input, which spins a coarse model up
    from rest on its own). ``input_noise`` is the standard deviation of Gaussian noise added to
    the normalised inputs at ocean points of every training batch (0: none): it teaches the
    network states near, not only on, the coarse-grained truth, which the coarse model leaves
    as soon as it runs on its own.

    ``inputs`` are ``u v`` (default) or ``u v h``, ``outputs`` ``su sv`` (default) or
    ``su sv sh``, in that order. ``name`` and ``version`` of the closure: empty picks
    ``subgrid-cnn@2`` for the default fields and ``subgrid-cnn-h@1`` when ``h`` or ``sh`` is
    among them.

    Raises
    ------
    ValueError
        If the inputs or outputs are not one of those choices.
    """

    hidden: tuple[int, ...] = (16, 16, 16)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)
    epochs: int = 60
    batch: int = 16
    lr: float = 2.0e-3
    val_frac: float = 0.2
    seed: int = 0
    clip_factor: float = 3.0
    bias: bool = False
    input_noise: float = 0.0
    max_minutes: float = 20.0
    threads: int = 2
    version: str = ""
    inputs: tuple[str, ...] = ("u", "v")
    outputs: tuple[str, ...] = ("su", "sv")
    name: str = ""

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(self.outputs)
        if not _subsequence(self.inputs, tuple(INPUT_FIELDS), ("u", "v")):
            raise ValueError(
                f"inputs {' '.join(self.inputs)}: expected u v or u v h (in that order)"
            )
        if not _subsequence(self.outputs, tuple(OUTPUT_FIELDS), ("su", "sv")):
            raise ValueError(
                f"outputs {' '.join(self.outputs)}: expected su sv or su sv sh (in that order)"
            )

    @property
    def thickness(self) -> bool:
        """True when ``h`` is an input or ``sh`` an output (the ``subgrid-cnn-h`` closure)."""
        return "h" in self.inputs or "sh" in self.outputs

    @property
    def closure_name(self) -> str:
        """The closure's name in its manifest."""
        return self.name or (NAME_H if self.thickness else NAME)

    @property
    def closure_version(self) -> str:
        """The closure's version in its manifest."""
        return self.version or ("1" if self.thickness else "2")

    @property
    def artifact(self) -> str:
        """The file name of the ``torch.export`` program."""
        return ARTIFACT_H if self.thickness else ARTIFACT


@dataclass
class TrainResult:
    """What training produced (``r2_cnn`` has one entry per output)."""

    out: Path
    kappa: float
    r2_cnn: dict[str, float]
    r2_zb: dict[str, float]
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class ThicknessNorms:
    """The manifest's constants of ``h`` and ``sh``: numbers of the training data, none
    computed from the block a server sees (so the closure is local).

    ``h_ref``: the reference thickness (offset of ``h``), ``h_scale``: the RMS of ``h - h_ref``;
    ``sh_scale``: RMS of ``sh``, ``sh_clip`` its bound (unused without ``h`` / ``sh``).
    """

    h_ref: float = 1.0
    h_scale: float = 1.0
    sh_scale: float = 1.0
    sh_clip: float = 1.0


def manifest_text(
    settings: TrainSettings,
    *,
    u_scale: float,
    s_scale: float,
    clip: float,
    provenance: dict[str, str],
    metrics: dict[str, float],
    halo: int,
    norms: ThicknessNorms | None = None,
) -> str:
    """The CNN's manifest (export format, float32).

    ``u_scale``, ``s_scale``, ``clip`` are those of ``u, v`` and ``su, sv``; ``norms`` gives the
    thickness's (``h_ref``, ``h_scale``, ``sh_scale``, ``sh_clip``) when the settings use them.
    """
    n = norms or ThicknessNorms()
    metric_lines = "".join(f"{k} = {v!r}\n" for k, v in sorted(metrics.items()))
    prov = "".join(f"{k} = {json.dumps(v)}\n" for k, v in provenance.items())
    norm_lines = {
        "u": f"scale = {u_scale!r}\n",
        "v": f"scale = {u_scale!r}\n",
        "h": f"offset = {n.h_ref!r}\nscale = {n.h_scale!r}\n",
        "su": f"scale = {s_scale!r}\nclip = {clip!r}\n",
        "sv": f"scale = {s_scale!r}\nclip = {clip!r}\n",
        "sh": f"scale = {n.sh_scale!r}\nclip = {n.sh_clip!r}\n",
    }
    fields = ""
    for where, names, table in (
        ("inputs", settings.inputs, INPUT_FIELDS),
        ("outputs", settings.outputs, OUTPUT_FIELDS),
    ):
        for name in names:
            grid, units, _ = table[name]
            fields += (
                f'\n[[{where}]]\nname = "{name}"\ngrid = "{grid}"\nunits = "{units}"\n'
                + norm_lines[name]
            )
    description = (
        "subgrid momentum and thickness forcing of the 32-km toy, CNN of u, v, h on the "
        "coarse-grained 8-km truth"
        if settings.thickness
        else "subgrid momentum forcing of the 32-km toy, CNN on the coarse-grained 8-km truth"
    )
    return f"""name = "{settings.closure_name}"
version = "{settings.closure_version}"
format = "export"
artifact = "{settings.artifact}"
halo = {halo}
dtype = "float32"
device = "auto"
description = "{description}"
license = "Apache-2.0"
{fields}
[provenance]
{prov}
[provenance.metrics]
{metric_lines}"""


def _r2(pred: np.ndarray, true: np.ndarray, mask: np.ndarray) -> float:
    m = np.broadcast_to(mask, true.shape).astype(bool)
    err = np.sum((pred[m] - true[m]) ** 2)
    var = np.sum((true[m] - true[m].mean()) ** 2)
    return float(1.0 - err / var) if var > 0 else float("nan")


def fit_kappa(u, v, su, sv, umask, vmask, dx: float, dy: float) -> float:
    """Least-squares ``kappa`` of Zanna & Bolton on ocean points (NaN stencil points dropped)."""
    from mlbridge_models.zanna_bolton import zanna_bolton_forcing

    zx, zy = zanna_bolton_forcing(u, v, dx, dy, 1.0)
    num = den = 0.0
    for z, s, mask in ((zx, su, umask), (zy, sv, vmask)):
        m = np.broadcast_to(mask.astype(bool), z.shape) & np.isfinite(z)
        num += float(np.sum(z[m] * s[m]))
        den += float(np.sum(z[m] * z[m]))
    if den == 0:
        raise ValueError("Zanna & Bolton forcing is zero on the whole dataset: no fit possible")
    return num / den


def _rest_thickness(coarse_cfg: Path) -> float:
    """``rn_htot / nn_nz`` of a namelist: the thickness of every layer at rest."""
    from bridge.config.coupling import TOY_NAMELIST_REF
    from bridge.config.namelist import read_namelists

    nml = read_namelists(TOY_NAMELIST_REF, coarse_cfg)
    return float(nml.get("namusr_def", "rn_htot")) / int(nml.get("namusr_def", "nn_nz"))


def train(
    data_dirs: Sequence[Path],
    out: Path,
    settings: TrainSettings,
    *,
    coarse_cfg: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Check the dataset, fit Zanna & Bolton, train the CNN, write the artifacts into ``out``.

    With ``h`` among the inputs its offset is the rest thickness ``rn_htot / nn_nz`` of
    ``coarse_cfg`` (each layer's basin mean, the layers' volumes being conserved), or without
    it the mean of ``h`` over the training snapshots' ocean points; its scale is the RMS of
    ``h`` minus that offset. Both are constants of the training data written in the manifest.

    Raises
    ------
    mlbridge_models.subgrid.dataset.DatasetError
        If a dataset is missing or changed, or disagrees with the manifest (units, grid
        points, variables, coarse grid size).
    """
    import torch
    import xarray as xr
    from mlbridge_models.cnn import CNNConfig, ThicknessInputCNN, build_cnn
    from mlbridge_models.export import export_closure
    from mlbridge_models.subgrid.dataset import (
        DatasetError,
        check_dataset,
        code_revision,
        open_dataset,
    )
    from mlbridge_models.zanna_bolton import zanna_bolton_forcing

    from bridge.registry.manifest import parse_manifest

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rng = np.random.default_rng(settings.seed)
    n_in, n_out = len(settings.inputs), len(settings.outputs)
    cfg = CNNConfig(n_in, n_out, settings.hidden, settings.kernel_sizes, settings.bias)
    halo = cfg.halo
    if halo > 5:
        raise ValueError(f"halo {halo} > 5: the closure must stay cheap to exchange")

    parts = [open_dataset(Path(d)) for d in data_dirs]
    if not parts:
        raise DatasetError("no dataset given")
    ds = (
        xr.concat(
            parts,
            dim="time_counter",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            combine_attrs="override",
        )
        if len(parts) > 1
        else parts[0]
    )
    grid = None
    if coarse_cfg is not None:
        from bridge.config.coupling import TOY_NAMELIST_REF
        from bridge.config.namelist import read_namelists

        nml = read_namelists(TOY_NAMELIST_REF, coarse_cfg)
        grid = (int(nml.get("namusr_def", "nn_ny")), int(nml.get("namusr_def", "nn_nx")))
    # the manifest's fields, checked before any work (placeholder numbers)
    check_dataset(
        ds,
        parse_manifest(
            manifest_text(
                settings, u_scale=1.0, s_scale=1.0, clip=1.0, provenance={}, metrics={}, halo=halo
            )
        ),
        grid=grid,
    )
    dx = float(ds.attrs.get("coarse_rn_dx", 0.0))
    dy = float(ds.attrs.get("coarse_rn_dy", 0.0))
    if not (dx > 0 and dy > 0):
        raise DatasetError("dataset has no coarse_rn_dx / coarse_rn_dy attributes (make_data)")

    names = (*settings.inputs, *settings.outputs)
    arrays = {n: np.asarray(ds[n].values, dtype=np.float64) for n in names}
    u, v, su, sv = (arrays[n] for n in ("u", "v", "su", "sv"))
    masks = {
        "umask": np.asarray(ds["umask"].values if "umask" in ds else (np.abs(u).sum((0, 1)) > 0)),
        "vmask": np.asarray(ds["vmask"].values if "vmask" in ds else (np.abs(v).sum((0, 1)) > 0)),
    }
    if "h" in names or "sh" in names:
        if "tmask" in ds:
            masks["tmask"] = np.asarray(ds["tmask"].values)
        else:
            masks["tmask"] = np.abs(arrays.get("h", arrays.get("sh"))).sum((0, 1)) > 0
    umask, vmask = masks["umask"], masks["vmask"]
    nt, nz, ny, nx = u.shape
    nval = max(1, round(settings.val_frac * nt))
    if nt - nval < 1:
        raise DatasetError(f"{nt} snapshots: too few to hold {nval} out for validation")
    tr, va = slice(0, nt - nval), slice(nt - nval, nt)

    # Zanna & Bolton, fitted on the training snapshots only
    kappa = fit_kappa(u[tr], v[tr], su[tr], sv[tr], umask, vmask, dx, dy)
    zx, zy = zanna_bolton_forcing(u[va], v[va], dx, dy, kappa)
    zx, zy = np.nan_to_num(zx), np.nan_to_num(zy)
    r2_zb = {"su": _r2(zx, su[va], umask), "sv": _r2(zy, sv[va], vmask)}

    ocean_u, ocean_v = umask.astype(bool), vmask.astype(bool)
    u_scale = float(
        np.sqrt(
            np.mean(
                np.concatenate([u[tr][..., ocean_u].ravel() ** 2, v[tr][..., ocean_v].ravel() ** 2])
            )
        )
    )
    s_all = np.concatenate([su[tr][..., ocean_u].ravel(), sv[tr][..., ocean_v].ravel()])
    s_scale = float(np.sqrt(np.mean(s_all**2)))
    clip = float(settings.clip_factor * np.max(np.abs(s_all)))
    thickness_stats: dict[str, object] = {}
    h_ref = h_scale = sh_scale = sh_clip = 1.0
    if "h" in settings.inputs:
        ocean_t = masks["tmask"].astype(bool)
        h_ocean = arrays["h"][tr][..., ocean_t]  # (time, layer, point)
        if coarse_cfg is not None:
            h_ref, ref_from = _rest_thickness(coarse_cfg), f"rn_htot / nn_nz of {coarse_cfg}"
        else:
            h_ref, ref_from = float(h_ocean.mean()), "mean of h over the training ocean points"
        h_scale = float(np.sqrt(np.mean((h_ocean - h_ref) ** 2)))
        if not (h_ref > 0 and h_scale > 0):
            raise DatasetError(
                f"h: reference thickness {h_ref} m and RMS anomaly {h_scale} m must be > 0"
            )
        thickness_stats = {
            "h_ref": h_ref,
            "h_ref_from": ref_from,
            "h_scale": h_scale,
            "h_mean_per_layer": [float(x) for x in h_ocean.mean(axis=(0, 2))],
            "h_rms_anomaly_per_layer": [
                float(x) for x in np.sqrt(np.mean((h_ocean - h_ref) ** 2, axis=(0, 2)))
            ],
            "land_thickness": LAND_FRACTION * h_ref,
        }
    if "sh" in settings.outputs:
        sh_ocean = arrays["sh"][tr][..., masks["tmask"].astype(bool)]
        sh_scale = float(np.sqrt(np.mean(sh_ocean**2)))
        sh_clip = float(settings.clip_factor * np.max(np.abs(sh_ocean)))
        if not sh_scale > 0:
            raise DatasetError("sh is zero at every ocean point of the training snapshots")
        thickness_stats |= {"sh_scale": sh_scale, "sh_clip": sh_clip}
    norms = ThicknessNorms(h_ref, h_scale, sh_scale, sh_clip)
    in_off = {"u": 0.0, "v": 0.0, "h": h_ref}
    in_scale = {"u": u_scale, "v": u_scale, "h": h_scale}
    out_scale = {"su": s_scale, "sv": s_scale, "sh": sh_scale}

    def tensors(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        # zero padding in physical units (what the bridge hands a closure beyond a closed
        # edge), then the manifest's normalisation, as the runtime applies it online
        pad = ((0, 0), (0, 0), (halo, halo), (halo, halo))
        x = np.stack(
            [(np.pad(arrays[n][sl], pad) - in_off[n]) / in_scale[n] for n in settings.inputs],
            axis=2,
        ).reshape(-1, n_in, ny + 2 * halo, nx + 2 * halo)
        y = np.stack([arrays[n][sl] / out_scale[n] for n in settings.outputs], axis=2).reshape(
            -1, n_out, ny, nx
        )
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))

    xt, yt = tensors(tr)
    xv, yv = tensors(va)
    out_masks = [masks[OUTPUT_FIELDS[n][2]] for n in settings.outputs]
    w = torch.from_numpy(np.stack(out_masks).astype(np.float32))[None]
    wsum = float(w.sum())

    model: torch.nn.Module = build_cnn(
        n_in, n_out, settings.hidden, settings.kernel_sizes, settings.bias
    )
    if "h" in settings.inputs:
        floor = (LAND_FRACTION * h_ref - h_ref) / h_scale
        model = ThicknessInputCNN(model, settings.inputs.index("h"), floor)
    in_masks = np.stack([masks[INPUT_FIELDS[n][2]] for n in settings.inputs]).astype(np.float32)
    noise_mask = torch.nn.functional.pad(  # ocean points of each input, padded
        torch.from_numpy(in_masks)[None], (halo, halo, halo, halo)
    )
    noise_gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)

    def loss_of(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((pred - y) ** 2 * w).sum() / (wsum * pred.shape[0])

    history: list[dict[str, float]] = []
    best = (float("inf"), None)
    epochs = 0
    for epoch in range(settings.epochs):
        model.train()
        order = rng.permutation(xt.shape[0])
        total = 0.0
        for i in range(0, len(order), settings.batch):
            idx = torch.from_numpy(order[i : i + settings.batch])
            opt.zero_grad()
            xb = xt[idx]
            if settings.input_noise > 0:
                noise = torch.randn(xb.shape, generator=noise_gen) * settings.input_noise
                xb = xb + noise * noise_mask
            loss = loss_of(model(xb), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        model.eval()
        with torch.no_grad():
            val = float(loss_of(model(xv), yv))
        epochs = epoch + 1
        history.append({"epoch": epochs, "train": total / xt.shape[0], "val": val})
        if val < best[0]:
            best = (val, {k: t.clone() for k, t in model.state_dict().items()})
        if progress:
            print(
                f"epoch {epochs:3d}/{settings.epochs}: train {total / xt.shape[0]:.4f}, "
                f"validation {val:.4f} (normalised MSE)",
                flush=True,
            )
        if time.perf_counter() - start > 60 * settings.max_minutes:
            print(f"stopping after {epochs} epochs: --max-minutes {settings.max_minutes} reached")
            break
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        pred = model(xv).numpy().astype(np.float64)
    pred = pred.reshape(nval, nz, n_out, ny, nx)
    r2_cnn = {
        n: _r2(pred[:, :, k] * out_scale[n], arrays[n][va], masks[OUTPUT_FIELDS[n][2]])
        for k, n in enumerate(settings.outputs)
    }

    out.mkdir(parents=True, exist_ok=True)
    export_closure(model, out / settings.artifact, in_channels=n_in, halo=halo)
    h_note = (
        f"; h normalised by offset {h_ref!r} m ({thickness_stats['h_ref_from']}) and scale "
        f"{h_scale!r} m, zero at or below {LAND_FRACTION} x the offset (land)"
        if "h" in settings.inputs
        else ""
    )
    provenance = {
        "training_data": "; ".join(
            f"{Path(d).name}: {p.attrs.get('fine_run_file', '?')}"
            for d, p in zip(data_dirs, parts, strict=True)
        )
        + f" (coarse-grained with {ds.attrs.get('coarse_graining', '?')}); forcing: "
        + str(ds.attrs.get("forcing_definition", "?")),
        "code_revision": code_revision(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "notes": f"mlbridge_models.cnn.build_cnn({n_in}, {n_out}, hidden={settings.hidden}, "
        f"kernel_sizes={settings.kernel_sizes}, bias={settings.bias})"
        + (" in ThicknessInputCNN" if "h" in settings.inputs else "")
        + f"; inputs {' '.join(settings.inputs)}, outputs {' '.join(settings.outputs)}; "
        f"input noise {settings.input_noise}; {epochs} epochs, seed {settings.seed}, "
        f"{nt - nval} training / {nval} validation snapshots x {nz} layers; clip = "
        f"{settings.clip_factor} x max |S| of the training data" + h_note,
    }
    metrics = {f"r2_{n}_validation": r for n, r in r2_cnn.items()} | {
        "zb_r2_su_validation": r2_zb["su"],
        "zb_r2_sv_validation": r2_zb["sv"],
        "zb_kappa_fit": kappa,
        "best_val_mse": best[0],
    }
    text = manifest_text(
        settings,
        u_scale=u_scale,
        s_scale=s_scale,
        clip=clip,
        provenance=provenance,
        metrics=metrics,
        halo=halo,
        norms=norms,
    )
    parse_manifest(text)  # refuse to write a manifest the registry would refuse
    (out / "manifest.toml").write_text(text)
    from mlbridge_models.zanna_bolton import manifest_toml

    # "fit" for the default CNN's data; "fit-<closure name>" otherwise, so that two fits on
    # different forcings (e.g. make train and make train-h) never share a registry reference
    zb_version = "fit" if settings.closure_name == NAME else f"fit-{settings.closure_name}"
    (out / "zanna_bolton.toml").write_text(manifest_toml(dx, dy, kappa, version=zb_version))
    seconds = time.perf_counter() - start
    resolved = asdict(settings) | {
        "name": settings.closure_name,
        "version": settings.closure_version,
    }
    record = {
        "settings": resolved,
        "data": [str(Path(d).resolve()) for d in data_dirs],
        "snapshots": {"train": nt - nval, "validation": nval},
        "kappa": kappa,
        "r2_cnn": r2_cnn,
        "r2_zb": r2_zb,
        "u_scale": u_scale,
        "s_scale": s_scale,
        "clip": clip,
        **thickness_stats,
        "seconds": seconds,
        "history": history,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(out, kappa, r2_cnn, r2_zb, epochs, seconds, history)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlbridge_models.subgrid.train",
        description="Train the subgrid CNN and fit the Zanna & Bolton coefficient on make_data "
        "datasets; write the artifact and manifests.",
        epilog="examples:\n  python -m mlbridge_models.subgrid.train data/subgrid/year_009 "
        "data/subgrid/year_010 \\\n      --out models/artifacts/subgrid_cnn --epochs 60\n"
        "  python -m mlbridge_models.subgrid.train data/subgrid_h/year_005 --inputs u v h "
        "\\\n      --outputs su sv sh --out models/artifacts/subgrid_cnn_h\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", type=Path, nargs="+", help="make_data output folders")
    parser.add_argument("--out", type=Path, required=True, help="folder of the artifacts")
    parser.add_argument(
        "--coarse-cfg",
        type=Path,
        default=Path("examples/01_coarse/namelist_cfg"),
        help="namelist_cfg of the coarse model: its grid size is required",
    )
    d = TrainSettings()
    parser.add_argument("--hidden", type=_ints, default=d.hidden, help="e.g. 16,16,16")
    parser.add_argument("--kernels", type=_ints, default=d.kernel_sizes, help="e.g. 3,3,3,3")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--val-frac", type=float, default=d.val_frac)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--clip-factor", type=float, default=d.clip_factor)
    parser.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=d.bias,
        help="biases in the convolutions (default: none, so a fluid at rest is not forced)",
    )
    parser.add_argument(
        "--input-noise",
        type=float,
        default=d.input_noise,
        help="std of the noise added to the normalised inputs while training (default 0)",
    )
    parser.add_argument("--max-minutes", type=float, default=d.max_minutes)
    parser.add_argument("--threads", type=int, default=d.threads)
    parser.add_argument(
        "--inputs",
        nargs="+",
        choices=tuple(INPUT_FIELDS),
        default=list(d.inputs),
        help="closure inputs: u v (default) or u v h",
    )
    parser.add_argument(
        "--outputs",
        nargs="+",
        choices=tuple(OUTPUT_FIELDS),
        default=list(d.outputs),
        help="closure outputs: su sv (default) or su sv sh",
    )
    parser.add_argument(
        "--name", default="", help="closure name (default subgrid-cnn, with h/sh subgrid-cnn-h)"
    )
    parser.add_argument("--version", default="", help="closure version (default 2, with h/sh 1)")
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        parser.error(str(exc))
    from mlbridge_models.subgrid.dataset import DatasetError

    try:
        result = train(args.data, args.out, settings, coarse_cfg=args.coarse_cfg)
    except (DatasetError, ValueError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    r2 = " ".join(f"{n} {r:.3f}" for n, r in result.r2_cnn.items())
    print(
        f"{result.out}: {result.epochs} epochs in {result.seconds:.0f} s; validation R2 "
        f"CNN {r2}; Zanna & Bolton "
        f"(kappa {result.kappa:.3e} m2) su {result.r2_zb['su']:.3f} sv {result.r2_zb['sv']:.3f}"
    )
    return 0


def _settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        hidden=args.hidden,
        kernel_sizes=args.kernels,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        val_frac=args.val_frac,
        seed=args.seed,
        clip_factor=args.clip_factor,
        bias=args.bias,
        input_noise=args.input_noise,
        max_minutes=args.max_minutes,
        threads=args.threads,
        version=args.version,
        inputs=tuple(args.inputs),
        outputs=tuple(args.outputs),
        name=args.name,
    )


if __name__ == "__main__":
    sys.exit(main())
