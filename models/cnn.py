"""A small subgrid-closure CNN in the spirit of Guillaumin & Zanna (2021).

A stack of valid (unpadded) convolutions: every 2D input field of a closure is one input channel,
every output field one output channel, and the vertical levels form the batch. A ``k x k`` valid
convolution eats ``(k - 1) / 2`` cells on each side, so the network consumes a halo of
``sum((k - 1) / 2)`` cells exactly and returns the interior: no padding, hence no artificial
boundary inside a block, hence the same numbers on a block with its halo as on the global field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    """Shape of the network.

    Parameters
    ----------
    in_channels
        Number of closure inputs (each a 2D field per level).
    out_channels
        Number of closure outputs.
    hidden
        Channels of each hidden layer; one more convolution than entries.
    kernel_sizes
        Odd kernel size of each convolution, ``len(hidden) + 1`` of them.
    bias
        Whether the convolutions carry biases. Without them the network maps a field at rest
        to exactly zero (and scales with the amplitude of its input, ReLU being positively
        homogeneous), which is what a momentum closure should do: a resting ocean is not forced.

    Raises
    ------
    ValueError
        If a size is not positive, a kernel size is even, or the two lists do not fit.
    """

    in_channels: int = 2
    out_channels: int = 2
    hidden: tuple[int, ...] = (32, 32, 32)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(c) for c in self.hidden))
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
        if self.in_channels < 1 or self.out_channels < 1 or any(c < 1 for c in self.hidden):
            raise ValueError(
                f"channel counts must be >= 1, got in {self.in_channels}, out {self.out_channels}, "
                f"hidden {self.hidden}"
            )
        if len(self.kernel_sizes) != len(self.hidden) + 1:
            raise ValueError(
                f"kernel_sizes needs len(hidden) + 1 = {len(self.hidden) + 1} entries, "
                f"got {self.kernel_sizes}"
            )
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd and >= 1, got {self.kernel_sizes}")

    @property
    def halo(self) -> int:
        """Cells consumed on each side by the valid convolutions."""
        return sum((k - 1) // 2 for k in self.kernel_sizes)


class SubgridCNN(nn.Module):
    """Valid convolutions with ReLU between them, no activation after the last one.

    Input ``(nz, in_channels, ny + 2h, nx + 2h)``, output ``(nz, out_channels, ny, nx)`` with
    ``h = config.halo``.
    """

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.halo = config.halo
        widths = (config.in_channels, *config.hidden, config.out_channels)
        layers: list[nn.Module] = []
        for i, k in enumerate(config.kernel_sizes):
            layers.append(
                nn.Conv2d(widths[i], widths[i + 1], kernel_size=k, padding=0, bias=config.bias)
            )
            if i < len(config.kernel_sizes) - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_cnn(
    in_channels: int = 2,
    out_channels: int = 2,
    hidden: Sequence[int] = (32, 32, 32),
    kernel_sizes: Sequence[int] = (3, 3, 3, 3),
    bias: bool = True,
) -> SubgridCNN:
    """Build the reference CNN (the ``entry_point`` a ``state_dict`` manifest names).

    Parameters
    ----------
    in_channels, out_channels, hidden, kernel_sizes, bias
        See :class:`CNNConfig`; the defaults (four 3x3 layers) consume a halo of 4.

    Returns
    -------
    SubgridCNN
        Freshly initialised (load trained weights with ``load_state_dict``).

    Raises
    ------
    ValueError
        If the configuration is invalid.
    """
    return SubgridCNN(
        CNNConfig(in_channels, out_channels, tuple(hidden), tuple(kernel_sizes), bool(bias))
    )


class ThicknessInputCNN(nn.Module):
    """A :class:`SubgridCNN` with a layer thickness among its inputs, zero on land.

    The closure's runtime hands the network ``(h - offset) / scale`` (the manifest's
    normalisation of ``h``, ``offset`` the reference thickness), so a land point, where the model's
    thickness is 0, arrives as the large negative ``-offset / scale`` and a network would see a
    step at every coast. This wrapper sets the thickness channel to 0 wherever it is at or below
    ``floor`` (in normalised units: a thickness at or below a small fraction of the reference,
    i.e. land or the zero padding beyond a closed edge), so the thickness anomaly is 0 on land
    as ``u`` and ``v`` are. The test is per point (local), keeps a NaN (the server's checks see
    it), and leaves the other channels alone; with a network without biases an ocean at rest
    (``u = v = 0``, ``h`` = the reference) still gets exactly no forcing.

    Input ``(nz, C, ny + 2h, nx + 2h)``, output ``(nz, out_channels, ny, nx)``.
    """

    def __init__(self, cnn: SubgridCNN, channel: int, floor: float) -> None:
        super().__init__()
        in_channels = cnn.layers[0].in_channels
        if not 0 <= channel < in_channels:
            raise ValueError(f"thickness channel {channel} not in 0..{in_channels - 1}")
        if not floor < 0.0:
            raise ValueError(f"floor {floor}: the normalised thickness of land must be < 0")
        self.cnn = cnn
        self.halo = cnn.halo
        self.floor = float(floor)
        select = torch.zeros(1, in_channels, 1, 1, dtype=torch.bool)
        select[0, channel] = True
        self.register_buffer("select", select)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        land = torch.logical_and(x <= self.floor, self.select)
        return self.cnn(x.masked_fill(land, 0.0))
