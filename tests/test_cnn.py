"""The reference CNN of models/cnn.py: halo, and the forcing of a fluid at rest."""

from __future__ import annotations

import pytest
import torch
from mlbridge_models.cnn import CNNConfig, build_cnn


def test_halo_is_what_the_valid_convolutions_consume() -> None:
    net = build_cnn(2, 2, (4, 4), (5, 3, 3)).eval()
    assert net.halo == CNNConfig(2, 2, (4, 4), (5, 3, 3)).halo == 4
    with torch.no_grad():
        out = net(torch.randn(3, 2, 10 + 8, 12 + 8))
    assert out.shape == (3, 2, 10, 12)


def test_without_biases_rest_gives_zero_and_forcing_scales_with_the_flow() -> None:
    torch.manual_seed(0)
    net = build_cnn(2, 2, (8, 8, 8), bias=False).eval()
    assert all(not name.endswith("bias") for name, _ in net.named_parameters())
    x = torch.randn(2, 2, 20, 20)
    with torch.no_grad():
        assert torch.count_nonzero(net(torch.zeros_like(x))) == 0
        # ReLU networks without biases are positively homogeneous: f(a x) = a f(x), a > 0
        torch.testing.assert_close(net(3.0 * x), 3.0 * net(x), rtol=1e-5, atol=1e-6)


def test_with_biases_rest_is_forced() -> None:
    """Why the subgrid closure is trained without them: a constant field for zero input."""
    torch.manual_seed(0)
    net = build_cnn(2, 2, (8, 8, 8), bias=True).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 2, 20, 20))
    assert out.abs().max() > 0
    assert torch.allclose(out, out[..., :1, :1].expand_as(out))


@pytest.mark.parametrize("kernels", [(3, 3), (3, 4, 3, 3)])
def test_bad_shapes_refused(kernels: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="kernel"):
        CNNConfig(2, 2, (8, 8, 8), kernels)
