"""Train the bias-correction CNN on (state, mean nudging tendency) pairs; torch.export + manifest.

The network (:class:`mlbridge_models.bias.network.LayerAwareCNN`: the reference CNN with valid
convolutions, told which level is the top and which the bottom of the column) maps ``u, v, h`` of
one layer to ``cu, cv, ch`` of that layer; a batch is whole columns, the fields padded with zeros
by the halo (what the bridge hands a closure at the walls). Normalisation: ``u, v`` by their
RMS, ``h`` by its mean (offset) and standard deviation, each output by its RMS; the loss is the
masked mean square error in normalised units; the last ``val_frac`` of the samples (in time)
are held out. The clip bound of each output is ``clip_factor`` x its largest training value.
Written: ``bias_cnn.pt2``, ``manifest.toml`` (format ``export``), ``training.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from mlbridge_models.bias.dataset import GRID_POINTS, INPUTS, load

NAME = "bias-cnn"
ARTIFACT = "bias_cnn.pt2"
OUTPUTS = ("cu", "cv", "ch")
IN_UNITS = ("m s-1", "m s-1", "m")
OUT_UNITS = ("m s-2", "m s-2", "m s-1")
ARCHITECTURE = "mlbridge_models.bias.network:build_layer_aware_cnn"
"""The entry point of a ``state_dict`` manifest of the network (``mlbridge.architectures``)."""


def normalisation(
    data: Any, samples: slice, clip_factor: float
) -> tuple[list[tuple[float, float]], list[float], list[float]]:
    """Offset and scale of each input, scale and clip bound of each output, from the records
    ``samples`` of ``data`` (a :class:`mlbridge_models.bias.dataset.BiasDataset`) on the ocean
    points: ``u, v`` by their RMS, ``h`` by its mean and standard deviation, each output by
    its RMS, its clip bound ``clip_factor`` x its largest value."""
    ocean = data.mask.astype(bool)
    in_norm, out_scale, clip = [], [], []
    for c in range(3):
        vals = data.x[samples, c][..., ocean[c]]
        off = float(vals.mean()) if INPUTS[c] == "h" else 0.0
        in_norm.append((off, float(np.sqrt(np.mean((vals - off) ** 2))) or 1.0))
        t = data.y[samples, c][..., ocean[c]]
        out_scale.append(float(np.sqrt(np.mean(t**2))) or 1.0)
        clip.append(float(clip_factor * np.max(np.abs(t))) or 1.0)
    return in_norm, out_scale, clip


def manifest_text(
    *,
    halo: int,
    in_norm: list[tuple[float, float]],
    out_scale: list[float],
    clip: list[float],
    files: Sequence[str],
    metrics: dict[str, float],
    version: str = "1",
    name: str = NAME,
    arch: dict[str, Any] | None = None,
) -> str:
    """The manifest: inputs u, v, h, outputs cu, cv, ch (tendencies) with clip bounds.

    ``arch``: a ``state_dict`` manifest of the layer-aware CNN (artifact ``weights.pt``, entry
    point ``build_layer_aware_cnn`` called with ``arch``); None: the ``torch.export`` program.
    """
    if arch is None:
        head = ['format = "export"', f'artifact = "{ARTIFACT}"']
    else:
        head = [
            'format = "state_dict"',
            'artifact = "weights.pt"',
            f'entry_point = "{ARCHITECTURE}"',
        ]
    lines = [
        f'name = "{name}"',
        f'version = "{version}"',
        *head,
        f"halo = {halo}",
        'dtype = "float32"',
        'device = "auto"',
        'description = "bias correction of the toy: state -> nudging tendency (twin experiment)"',
        'license = "Apache-2.0"',
    ]
    for name, grid, units, (off, scale) in zip(INPUTS, GRID_POINTS, IN_UNITS, in_norm, strict=True):
        lines += [
            "",
            "[[inputs]]",
            f'name = "{name}"',
            f'grid = "{grid}"',
            f'units = "{units}"',
            f"offset = {off!r}",
            f"scale = {scale!r}",
        ]
    for name, grid, units, scale, bound in zip(
        OUTPUTS, GRID_POINTS, OUT_UNITS, out_scale, clip, strict=True
    ):
        lines += [
            "",
            "[[outputs]]",
            f'name = "{name}"',
            f'grid = "{grid}"',
            f'units = "{units}"',
            f"scale = {scale!r}",
            f"clip = {bound!r}",
        ]
    if arch is not None:
        lines += ["", "[arch]"] + [f"{k} = {json.dumps(v)}" for k, v in arch.items()]
    lines += [
        "",
        "[provenance]",
        f"training_data = {json.dumps(', '.join(files))}",
        f'created = "{datetime.now(UTC).isoformat(timespec="seconds")}"',
        "",
        "[provenance.metrics]",
    ]
    lines += [f"{k} = {v!r}" for k, v in sorted(metrics.items())]
    return "\n".join(lines) + "\n"


def train(
    files: Sequence[Path],
    out: Path,
    settings: Any,
    *,
    val_frac: float = 0.2,
    seed: int = 0,
    lr: float = 2.0e-3,
    batch: int = 16,
) -> dict[str, Any]:
    """Train on the records of ``files``; write the artifact, manifest and log into ``out``.

    ``settings``: epochs, hidden, kernel_sizes, clip_factor (a :class:`TwinSettings`).
    """
    import torch
    from mlbridge_models.bias.network import LayerAwareCNN
    from mlbridge_models.export import export_closure

    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = load(files)
    model = LayerAwareCNN(3, 3, tuple(settings.hidden), tuple(settings.kernel_sizes))
    halo = model.halo
    if halo > 3:
        raise ValueError(f"halo {halo} > 3: keep the closure small")
    ns, _, nz, ny, nx = data.x.shape
    nval = max(1, round(val_frac * ns))
    if ns - nval < 1:
        raise ValueError(f"{ns} samples: too few to hold {nval} out")
    ocean = data.mask.astype(bool)
    tr = slice(0, ns - nval)
    in_norm, out_scale, clip = normalisation(data, tr, settings.clip_factor)

    def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # as the bridge does: physical zeros outside the grid, then the normalisation
        xp = np.stack([x[:, c] for c in range(3)], 2).reshape(-1, 3, ny, nx)
        xp = np.pad(xp, ((0, 0), (0, 0), (halo, halo), (halo, halo)))
        xn = np.stack([(xp[:, c] - in_norm[c][0]) / in_norm[c][1] for c in range(3)], 1)
        yn = np.stack([y[:, c] / out_scale[c] for c in range(3)], 2)
        return (
            torch.from_numpy(xn.astype(np.float32)),
            torch.from_numpy(yn.reshape(-1, 3, ny, nx).astype(np.float32)),
        )

    xt, yt = tensors(data.x[tr], data.y[tr])
    xv, yv = tensors(data.x[ns - nval :], data.y[ns - nval :])
    w = torch.from_numpy(data.mask.astype(np.float32))[None]
    wsum = float(w.sum())
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_of(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((pred - y) ** 2 * w).sum() / (wsum * pred.shape[0])

    history, best = [], (float("inf"), None)
    for epoch in range(settings.epochs):
        model.train()
        order = rng.permutation(xt.shape[0] // nz)
        total = 0.0
        for i in range(0, len(order), batch):
            # whole columns: the nz levels of each sample chosen, top first
            idx = torch.from_numpy((order[i : i + batch, None] * nz + np.arange(nz)).ravel())
            opt.zero_grad()
            loss = loss_of(model.columns(xt[idx], nz), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            val = float(loss_of(model.columns(xv, nz), yv))
        history.append({"epoch": epoch + 1, "train": total / (len(order) * nz), "val": val})
        if val < best[0]:
            best = (val, {k: t.clone() for k, t in model.state_dict().items()})
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        pred = model.columns(xv, nz).numpy()
    r2 = {}
    for c, name in enumerate(OUTPUTS):
        m = np.broadcast_to(ocean[c], pred[:, c].shape)
        err = np.sum((pred[:, c][m] - yv.numpy()[:, c][m]) ** 2)
        var = np.sum((yv.numpy()[:, c][m] - yv.numpy()[:, c][m].mean()) ** 2)
        r2[f"r2_{name}"] = float(1 - err / var) if var > 0 else float("nan")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_closure(model, out / ARTIFACT, in_channels=len(INPUTS), halo=halo)
    (out / "manifest.toml").write_text(
        manifest_text(
            halo=halo,
            in_norm=in_norm,
            out_scale=out_scale,
            clip=clip,
            files=data.files,
            metrics={**r2, "val_loss": best[0]},
        )
    )
    log = {
        "samples": ns,
        "validation": nval,
        "halo": halo,
        "history": history,
        "r2": r2,
        "clip": dict(zip(OUTPUTS, clip, strict=True)),
        "seconds": time.perf_counter() - start,
    }
    (out / "training.json").write_text(json.dumps(log, indent=2) + "\n")
    return {"manifest": str(out / "manifest.toml"), "r2": r2, "samples": ns}
