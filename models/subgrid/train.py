"""Train the subgrid momentum CNN and fit the Zanna & Bolton coefficient on a ``make_data`` dataset.

The CNN (:mod:`mlbridge_models.cnn`, valid convolutions, halo = sum of the kernels' half widths)
maps the coarse ``u, v`` of one layer to ``su, sv`` of that layer; layers and snapshots are the
batch.
It sees the whole coarse field padded with zeros by its halo, which is what the bridge hands a
closure at a closed edge (cells outside the grid are zero), so training and online use agree at
the walls. The loss is the mean square error over ocean points (``umask`` for ``su``, ``vmask``
for ``sv``) in normalised units. The last ``--val-frac`` of the snapshots (in time) are held
out; the offline skill (R2 on them) of the CNN and of Zanna & Bolton goes into the manifest.

The Zanna & Bolton coefficient is the least-squares fit ``kappa = <S . Z> / <Z . Z>`` over the
training snapshots' ocean points, ``Z`` the closure's forcing with ``kappa = 1``.

Written to ``--out``: ``subgrid_cnn.pt2`` (``torch.export``, float32), ``manifest.toml``
(normalisation, clip bound = ``--clip-factor`` x the largest ``|S|`` of the training data,
provenance and offline metrics), ``zanna_bolton.toml`` (python-format manifest with the fitted
``kappa``) and ``training.json`` (loss curve, fit, settings). Before anything is trained the
dataset is checked against the manifest: variables, units, grid points and the coarse grid size
must agree.

Usage::

    python -m mlbridge_models.subgrid.train data/subgrid/year_009 data/subgrid/year_010 \\
        --out models/artifacts/subgrid_cnn --epochs 60
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


@dataclass
class TrainSettings:
    """How the CNN is trained.

    ``bias = False`` builds the network without biases, so that a resting ocean gets no forcing
    (with biases a CNN returns a constant field for zero input, which spins a coarse model up
    from rest on its own). ``input_noise`` is the standard deviation of Gaussian noise added to
    the normalised ``u, v`` at ocean points of every training batch (0: none): it teaches the
    network states near, not only on, the coarse-grained truth, which the coarse model leaves
    as soon as it runs on its own.
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
    version: str = "2"


@dataclass
class TrainResult:
    """What training produced."""

    out: Path
    kappa: float
    r2_cnn: dict[str, float]
    r2_zb: dict[str, float]
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def manifest_text(
    settings: TrainSettings,
    *,
    u_scale: float,
    s_scale: float,
    clip: float,
    provenance: dict[str, str],
    metrics: dict[str, float],
    halo: int,
) -> str:
    """The CNN's manifest (export format, float32)."""
    metric_lines = "".join(f"{k} = {v!r}\n" for k, v in sorted(metrics.items()))
    prov = "".join(f"{k} = {json.dumps(v)}\n" for k, v in provenance.items())
    return f"""name = "{NAME}"
version = "{settings.version}"
format = "export"
artifact = "{ARTIFACT}"
halo = {halo}
dtype = "float32"
device = "auto"
description = "subgrid momentum forcing of the 32-km toy, CNN on the coarse-grained 8-km truth"
license = "Apache-2.0"

[[inputs]]
name = "u"
grid = "U"
units = "m s-1"
scale = {u_scale!r}

[[inputs]]
name = "v"
grid = "V"
units = "m s-1"
scale = {u_scale!r}

[[outputs]]
name = "su"
grid = "U"
units = "m s-2"
scale = {s_scale!r}
clip = {clip!r}

[[outputs]]
name = "sv"
grid = "V"
units = "m s-2"
scale = {s_scale!r}
clip = {clip!r}

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


def train(
    data_dirs: Sequence[Path],
    out: Path,
    settings: TrainSettings,
    *,
    coarse_cfg: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Check the dataset, fit Zanna & Bolton, train the CNN, write the artifacts into ``out``.

    Raises
    ------
    mlbridge_models.subgrid.dataset.DatasetError
        If a dataset is missing or changed, or disagrees with the manifest (units, grid
        points, variables, coarse grid size).
    """
    import torch
    import xarray as xr
    from mlbridge_models.cnn import CNNConfig, build_cnn
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
    cfg = CNNConfig(2, 2, settings.hidden, settings.kernel_sizes, settings.bias)
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

    u, v, su, sv = (np.asarray(ds[n].values, dtype=np.float64) for n in ("u", "v", "su", "sv"))
    umask = np.asarray(ds["umask"].values if "umask" in ds else (np.abs(u).sum((0, 1)) > 0))
    vmask = np.asarray(ds["vmask"].values if "vmask" in ds else (np.abs(v).sum((0, 1)) > 0))
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

    def tensors(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.stack([u[sl], v[sl]], axis=2).reshape(-1, 2, ny, nx) / u_scale
        y = np.stack([su[sl], sv[sl]], axis=2).reshape(-1, 2, ny, nx) / s_scale
        x = np.pad(x, ((0, 0), (0, 0), (halo, halo), (halo, halo)))
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))

    xt, yt = tensors(tr)
    xv, yv = tensors(va)
    w = torch.from_numpy(np.stack([umask, vmask]).astype(np.float32))[None]
    wsum = float(w.sum())

    model = build_cnn(2, 2, settings.hidden, settings.kernel_sizes, settings.bias)
    noise_mask = torch.nn.functional.pad(w, (halo, halo, halo, halo))  # ocean points, padded
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
        pred = model(xv).numpy().astype(np.float64) * s_scale
    pred = pred.reshape(nval, nz, 2, ny, nx)
    r2_cnn = {"su": _r2(pred[:, :, 0], su[va], umask), "sv": _r2(pred[:, :, 1], sv[va], vmask)}

    out.mkdir(parents=True, exist_ok=True)
    export_closure(model, out / ARTIFACT, in_channels=2, halo=halo)
    provenance = {
        "training_data": "; ".join(
            f"{Path(d).name}: {p.attrs.get('fine_run_file', '?')}"
            for d, p in zip(data_dirs, parts, strict=True)
        )
        + f" (coarse-grained with {ds.attrs.get('coarse_graining', '?')}); forcing: "
        + str(ds.attrs.get("forcing_definition", "?")),
        "code_revision": code_revision(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "notes": f"mlbridge_models.cnn.build_cnn(2, 2, hidden={settings.hidden}, "
        f"kernel_sizes={settings.kernel_sizes}, bias={settings.bias}); input noise "
        f"{settings.input_noise}; {epochs} epochs, seed {settings.seed}, "
        f"{nt - nval} training / {nval} validation snapshots x {nz} layers; clip = "
        f"{settings.clip_factor} x max |S| of the training data",
    }
    metrics = {
        "r2_su_validation": r2_cnn["su"],
        "r2_sv_validation": r2_cnn["sv"],
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
    )
    parse_manifest(text)  # refuse to write a manifest the registry would refuse
    (out / "manifest.toml").write_text(text)
    from mlbridge_models.zanna_bolton import manifest_toml

    (out / "zanna_bolton.toml").write_text(manifest_toml(dx, dy, kappa, version="fit"))
    seconds = time.perf_counter() - start
    record = {
        "settings": asdict(settings),
        "data": [str(Path(d).resolve()) for d in data_dirs],
        "snapshots": {"train": nt - nval, "validation": nval},
        "kappa": kappa,
        "r2_cnn": r2_cnn,
        "r2_zb": r2_zb,
        "u_scale": u_scale,
        "s_scale": s_scale,
        "clip": clip,
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
        epilog="example:\n  python -m mlbridge_models.subgrid.train data/subgrid/year_009 "
        "data/subgrid/year_010 \\\n      --out models/artifacts/subgrid_cnn --epochs 60\n",
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
    args = parser.parse_args(argv)
    settings = TrainSettings(
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
    )
    from mlbridge_models.subgrid.dataset import DatasetError

    try:
        result = train(args.data, args.out, settings, coarse_cfg=args.coarse_cfg)
    except (DatasetError, ValueError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result.out}: {result.epochs} epochs in {result.seconds:.0f} s; validation R2 "
        f"CNN su {result.r2_cnn['su']:.3f} sv {result.r2_cnn['sv']:.3f}; Zanna & Bolton "
        f"(kappa {result.kappa:.3e} m2) su {result.r2_zb['su']:.3f} sv {result.r2_zb['sv']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
