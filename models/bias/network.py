"""The bias-correction network: the reference CNN told which layer of the column it works on.

The model errors of the twin act on one layer each (the wind on the top layer, the bottom drag
on the deepest one), and a CNN that sees the levels as a batch of independent 2D fields cannot
tell them apart. :class:`LayerAwareCNN` adds two constant channels to every level, ``top``
(1 on the first level of the column) and ``bottom`` (1 on the last), and runs the reference CNN
(:func:`mlbridge_models.cnn.build_cnn`, valid convolutions) on the five channels.

The column is the batch the bridge hands a torch closure (``(nz, C, ny+2h, nx+2h)``, levels top
first), so the levels must come in one call: a server on a CPU batches at most
``bridge.registry.torch_closure.CPU_LEVELS_PER_CALL`` (8) levels per call, a GPU all of them.
The toy's 2 layers are far below that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mlbridge_models.cnn import build_cnn
from torch import nn

FLAGS = ("top", "bottom")


def with_layer_flags(x: torch.Tensor, nz: int) -> torch.Tensor:
    """``x`` ``(columns * nz, C, H, W)`` (levels top first) with the ``top`` and ``bottom``
    channels appended: ``(columns * nz, C + 2, H, W)``."""
    k = torch.arange(x.shape[0], device=x.device) % nz
    flags = torch.stack([(k == 0).to(x.dtype), (k == nz - 1).to(x.dtype)], 1)
    return torch.cat([x, flags[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], 1)


class LayerAwareCNN(nn.Module):
    """``(nz, C, ny+2h, nx+2h)`` (one column, top first) -> ``(nz, C_out, ny, nx)``."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden: tuple[int, ...], kernels: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.cnn = build_cnn(in_channels + len(FLAGS), out_channels, hidden, kernels)
        self.halo = self.cnn.halo

    def columns(self, x: torch.Tensor, nz: int) -> torch.Tensor:
        """Several columns of ``nz`` levels at once (training)."""
        return self.cnn(with_layer_flags(x, nz))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(with_layer_flags(x, x.shape[0]))


def build_layer_aware_cnn(
    in_channels: int = 3,
    out_channels: int = 3,
    hidden: Sequence[int] = (16, 16),
    kernel_sizes: Sequence[int] = (3, 3, 3),
) -> LayerAwareCNN:
    """Build :class:`LayerAwareCNN` (the ``entry_point`` of a ``state_dict`` manifest, declared
    in the ``mlbridge.architectures`` entry-point group as ``layer_aware_cnn``).

    Freshly initialised (torch's default, from the current seed): load weights with
    ``load_state_dict``, or :func:`zero_output_layer` for a network whose output is zero.

    Raises
    ------
    ValueError
        If the configuration is invalid (:class:`mlbridge_models.cnn.CNNConfig`).
    """
    return LayerAwareCNN(int(in_channels), int(out_channels), tuple(hidden), tuple(kernel_sizes))


def zero_output_layer(net: LayerAwareCNN) -> LayerAwareCNN:
    """``net`` with the weights and bias of its last convolution set to zero (in place).

    Its output is then exactly zero for every input, while the hidden layers keep their random
    initialisation: the gradients of the last layer are not zero (its inputs are the hidden
    activations), so the network can learn. With *all* weights zero it could not: every
    activation is zero, so every gradient except the last bias's is zero too.
    """
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return net
