"""Uncertainty of the similarity scores: block bootstrap over members and time, and the noise floor.

A run is cut into blocks of consecutive records (``block_records``, one model year by default in
``mlbridge evaluate``); each block is summarised once (:func:`summarise`): its time-mean KE
spectrum per layer and, per layer, the histogram of each distribution of
:data:`mlbridge_models.evaluation.metrics.DISTRIBUTIONS` on common bin edges (:func:`common_edges`,
quantiles of the pooled samples, so every bin holds mass). A bootstrap replicate
(:func:`bootstrap_scores`) draws, for the model, the baseline and the truth independently,
members with replacement and then blocks with replacement within each drawn member, pools
their summaries and recomputes the Ross et al. (2023) distances and scores: the spectrum from
the record-weighted mean of the drawn blocks' spectra, the Wasserstein-1 distance from the pooled
histograms (:func:`binned_wasserstein1`, the CDF linear inside each bin: the error is at most
one bin width where the two CDFs cross). The confidence interval is the percentile interval of
the replicates.

:func:`noise_floor` is the distance of the truth to itself across two independent periods (its
first and second half): what a model indistinguishable from the truth would still score as a
distance, given the sampling. ``1 - floor / d(baseline, truth)`` is then the highest score the
sample can tell apart from a perfect one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlbridge_models.evaluation import metrics as ev

#: Bins per layer of the binned distributions.
NBINS = 1000


@dataclass(frozen=True)
class Blocks:
    """Per-block summaries of one flow (an experiment's members, or the truth).

    ``spectra``: ``(nblock, z, nk)`` time-mean spectrum of each block; ``records``: ``(nblock,)``
    records per block; ``members``: ``(nblock,)`` member of each block; ``counts``: distribution
    name -> ``(nblock, z, nbins)``; ``dk``, ``k_nyquist`` as in
    :class:`mlbridge_models.evaluation.metrics.Spectrum`.
    """

    spectra: np.ndarray
    records: np.ndarray
    members: np.ndarray
    counts: dict[str, np.ndarray]
    dk: float
    k_nyquist: float

    def spectrum(self, index: np.ndarray | None = None) -> ev.Spectrum:
        """The record-weighted mean spectrum of the blocks ``index`` (all by default)."""
        idx = np.arange(self.records.size) if index is None else index
        w = self.records[idx].astype(float)
        e = np.tensordot(w / w.sum(), self.spectra[idx], axes=1)
        return ev.Spectrum(np.arange(e.shape[-1]) * self.dk, e, self.dk, self.k_nyquist)

    def histogram(self, name: str, index: np.ndarray | None = None) -> np.ndarray:
        """Summed counts ``(z, nbins)`` of the blocks ``index`` (all by default)."""
        idx = np.arange(self.records.size) if index is None else index
        return self.counts[name][idx].sum(axis=0)


def common_edges(
    samples: list[dict[str, np.ndarray]], nbins: int = NBINS
) -> dict[str, list[np.ndarray]]:
    """Bin edges per distribution and layer: quantiles of all ``samples`` pooled (each a dict of
    ``(z, n)`` arrays from :func:`mlbridge_models.evaluation.metrics.distribution_samples`),
    from the smallest to the largest value."""
    edges: dict[str, list[np.ndarray]] = {}
    for name in ev.DISTRIBUTIONS:
        nz = samples[0][name].shape[0]
        per_layer = []
        for k in range(nz):
            pooled = np.concatenate([s[name][k] for s in samples])
            e = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, nbins + 1)))
            if e.size < 2:
                e = np.array([e[0] - 0.5, e[0] + 0.5])
            per_layer.append(e)
        edges[name] = per_layer
    return edges


def _counts(values: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    nb = max(e.size for e in edges) - 1
    out = np.zeros((len(edges), nb))
    for k, e in enumerate(edges):
        clipped = np.clip(values[k], e[0], e[-1])
        c, _ = np.histogram(clipped, bins=e)
        out[k, : c.size] = c
    return out


def summarise(
    members: list[tuple[int, ev.Flow]],
    dx: float,
    dy: float,
    block_records: int,
    edges: dict[str, list[np.ndarray]],
) -> Blocks:
    """Cut each member's ``(time, z, y, x)`` flow into blocks of ``block_records`` consecutive
    records (a shorter last block is kept) and summarise every block.

    Raises
    ------
    ValueError
        If ``block_records < 1`` or there is no record.
    """
    if block_records < 1:
        raise ValueError(f"block_records must be >= 1, got {block_records}")
    spectra, records, owner = [], [], []
    counts: dict[str, list[np.ndarray]] = {n: [] for n in ev.DISTRIBUTIONS}
    dk = k_nyq = 0.0
    for member, flow in members:
        for r0 in range(0, flow.u.shape[0], block_records):
            u = flow.u[r0 : r0 + block_records]
            v = flow.v[r0 : r0 + block_records]
            spec = ev.ke_spectrum(u, v, dx, dy)
            dk, k_nyq = spec.dk, spec.k_nyquist
            spectra.append(spec.e)
            records.append(u.shape[0])
            owner.append(member)
            for name, values in ev.distribution_samples(u, v, dx, dy).items():
                counts[name].append(_counts(values, edges[name]))
    if not records:
        raise ValueError("no record to summarise")
    return Blocks(
        np.array(spectra),
        np.array(records),
        np.array(owner),
        {n: np.array(c) for n, c in counts.items()},
        dk,
        k_nyq,
    )


def binned_wasserstein1(p: np.ndarray, q: np.ndarray, edges: np.ndarray) -> float:
    """Wasserstein-1 distance ``integral |F_p - F_q| dx`` between two histograms on ``edges``,
    each CDF linear inside a bin (trapezoid of ``|F_p - F_q|`` at the edges)."""
    nb = edges.size - 1
    fp = np.concatenate([[0.0], np.cumsum(p[:nb]) / max(p[:nb].sum(), 1e-300)])
    fq = np.concatenate([[0.0], np.cumsum(q[:nb]) / max(q[:nb].sum(), 1e-300)])
    d = np.abs(fp - fq)
    return float(np.sum(0.5 * (d[1:] + d[:-1]) * np.diff(edges)))


def distances(
    a: Blocks,
    b: Blocks,
    edges: dict[str, list[np.ndarray]],
    ia: np.ndarray | None = None,
    ib: np.ndarray | None = None,
    fraction: float = ev.SPECTRUM_FRACTION,
) -> dict[str, np.ndarray]:
    """Ross et al. distances per layer between blocks ``ia`` of ``a`` and ``ib`` of ``b`` (all by
    default): ``ke_spectrum`` and the binned Wasserstein-1 of every distribution, each ``(z,)``."""
    out = {"ke_spectrum": ev.spectrum_distance(a.spectrum(ia), b.spectrum(ib), fraction)}
    for name in ev.DISTRIBUTIONS:
        ha, hb = a.histogram(name, ia), b.histogram(name, ib)
        out[name] = np.array(
            [binned_wasserstein1(ha[k], hb[k], e) for k, e in enumerate(edges[name])]
        )
    return out


def _draw(blocks: Blocks, rng: np.random.Generator) -> np.ndarray:
    """Members with replacement, then blocks with replacement within each drawn member."""
    members = np.unique(blocks.members)
    chosen = rng.choice(members, size=members.size, replace=True)
    parts = []
    for m in chosen:
        own = np.flatnonzero(blocks.members == m)
        parts.append(rng.choice(own, size=own.size, replace=True))
    return np.concatenate(parts)


def bootstrap_scores(
    model: Blocks,
    baseline: Blocks,
    truth: Blocks,
    edges: dict[str, list[np.ndarray]],
    n_boot: int = 500,
    seed: int = 0,
    fraction: float = ev.SPECTRUM_FRACTION,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the scores ``1 - d(model, truth) / d(baseline, truth)``, each
    flow resampled independently (:func:`_draw`); name -> ``(n_boot, z)``."""
    rng = np.random.default_rng(seed)
    reps: dict[str, list[np.ndarray]] = {}
    for _ in range(n_boot):
        im, ib, it = _draw(model, rng), _draw(baseline, rng), _draw(truth, rng)
        d_m = distances(model, truth, edges, im, it, fraction)
        d_b = distances(baseline, truth, edges, ib, it, fraction)
        for name, dm in d_m.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                reps.setdefault(name, []).append(1.0 - dm / d_b[name])
    return {n: np.array(r) for n, r in reps.items()}


def confidence_interval(replicates: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile interval ``(..., 2)`` over the first axis, NaN replicates left out."""
    lo, hi = 50.0 * (1.0 - level), 50.0 * (1.0 + level)
    return np.moveaxis(np.nanpercentile(replicates, [lo, hi], axis=0), 0, -1)


def noise_floor(
    truth: Blocks, edges: dict[str, list[np.ndarray]], fraction: float = ev.SPECTRUM_FRACTION
) -> dict[str, np.ndarray]:
    """Distances per layer between the first and the second half of the truth's blocks (two
    independent periods of the same flow).

    Raises
    ------
    ValueError
        If the truth has fewer than 2 blocks.
    """
    n = truth.records.size
    if n < 2:
        raise ValueError("the noise floor needs at least 2 blocks of truth")
    first, second = np.arange(n // 2), np.arange(n // 2, n)
    return distances(truth, truth, edges, first, second, fraction)
