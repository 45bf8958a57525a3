"""Layer factories and blocks against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from voxelflow.errors import ConfigError, RegistryError
from voxelflow.networks.blocks import ConvNormAct, ResidualUnit, SqueezeExcitation, center_crop
from voxelflow.networks.layers import (
    act,
    as_tuple,
    conv,
    conv_transpose,
    dropout,
    norm,
    pool,
    upsample,
)


def test_same_conv_matches_scipy_correlate_with_anisotropic_kernel_and_dilation() -> None:
    layer = conv(3, 1, 1, kernel_size=[1, 3, 5], dilation=[1, 2, 1], bias=False)
    x = torch.randn(1, 1, 5, 9, 7, generator=torch.Generator().manual_seed(0))
    weight = layer.weight.detach()[0, 0].numpy()
    dilated = np.zeros((1, 5, 5))  # dilation 2 along axis 1: taps at -2, 0, +2
    dilated[:, ::2, :] = weight
    expected = ndimage.correlate(x[0, 0].numpy().astype(np.float64), dilated, mode="constant")
    np.testing.assert_allclose(layer(x)[0, 0].detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_valid_conv_and_transposed_conv_sizes() -> None:
    assert conv(2, 1, 2, kernel_size=3, padding="valid")(torch.zeros(1, 1, 7, 6)).shape == (
        1,
        2,
        5,
        4,
    )
    up = conv_transpose(3, 2, 1, kernel_size=[1, 2, 2], stride=[1, 2, 2])
    assert up(torch.zeros(1, 2, 3, 4, 5)).shape == (1, 1, 3, 8, 10)
    with pytest.raises(ConfigError, match="padding"):
        conv(2, 1, 1, padding="full")


def reference_norm(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch = x.shape[0]
    grouped = x.reshape(batch, groups, -1).double()
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.var(-1, unbiased=False, keepdim=True)
    return ((grouped - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape).float()


@pytest.mark.parametrize("name, groups", [("instance", 4), ("group", 2), ("layer", 1)])
def test_norms_match_hand_computation(name: str, groups: int) -> None:
    x = torch.randn(2, 4, 3, 5, 6) * 3 + 1
    layer = norm(name, 3, 4, groups=2)
    torch.testing.assert_close(layer(x), reference_norm(x, groups), rtol=1e-4, atol=1e-4)


def test_batch_norm_training_statistics_and_none() -> None:
    x = torch.randn(3, 2, 4, 4)
    out = norm("batch", 2, 2)(x)
    per_channel = x.transpose(0, 1).reshape(2, -1)
    expected = (x - per_channel.mean(1).view(1, 2, 1, 1)) / torch.sqrt(
        per_channel.var(1, unbiased=False).view(1, 2, 1, 1) + 1e-5
    )
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(norm("none", 2, 2)(x), x)
    with pytest.raises(ConfigError, match="divisible by groups=4"):
        norm("group", 3, 6, groups=4)


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(RegistryError, match="Did you mean: 'instance'"):
        norm("instanse", 3, 4)
    with pytest.raises(RegistryError, match="Did you mean: 'leaky_relu'"):
        act("leakyrelu")
    with pytest.raises(RegistryError, match="Did you mean: 'max'"):
        pool("maxx", 2)
    with pytest.raises(ConfigError, match="Did you mean: 'linear'"):
        upsample(3, mode="lineer")


def test_activations_match_formulas() -> None:
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(act("leaky_relu")(x), torch.where(x > 0, x, 0.01 * x))
    torch.testing.assert_close(
        act("leaky_relu", negative_slope=0.2)(x), torch.where(x > 0, x, 0.2 * x)
    )
    torch.testing.assert_close(act("elu")(x), torch.where(x > 0, x, torch.exp(x) - 1))
    erf = torch.tensor([math.erf(v / math.sqrt(2)) for v in x.tolist()])
    torch.testing.assert_close(act("gelu")(x), 0.5 * x * (1 + erf))
    torch.testing.assert_close(act("silu")(x), x / (1 + torch.exp(-x)))
    torch.testing.assert_close(act("prelu")(x), torch.where(x > 0, x, 0.25 * x))
    assert torch.equal(act("none")(x), x)


def test_pools_match_numpy() -> None:
    x = torch.randn(1, 2, 4, 6, 8)
    blocks = x.numpy().reshape(1, 2, 2, 2, 3, 2, 4, 2)
    np.testing.assert_allclose(pool("max", 3)(x).numpy(), blocks.max(axis=(3, 5, 7)))
    np.testing.assert_allclose(pool("avg", 3)(x).numpy(), blocks.mean(axis=(3, 5, 7)), rtol=1e-5)
    np.testing.assert_allclose(
        pool("adaptive_avg", 3, kernel_size=1)(x).numpy().ravel(),
        x.numpy().mean(axis=(2, 3, 4)).ravel(),
        rtol=1e-5,
    )


def test_upsample_nearest_repeats_and_linear_keeps_constants() -> None:
    x = torch.randn(1, 1, 2, 3, 2)
    expected = x.numpy().repeat(1, axis=2).repeat(2, axis=3).repeat(3, axis=4)
    np.testing.assert_array_equal(upsample(3, scale_factor=[1, 2, 3])(x).numpy(), expected)
    constant = torch.full((1, 2, 3, 3), 4.0)
    torch.testing.assert_close(upsample(2, mode="linear")(constant), torch.full((1, 2, 6, 6), 4.0))


def test_dropout_probability_and_channelwise() -> None:
    with pytest.raises(ConfigError, match=r"probability in \[0, 1\)"):
        dropout(3, 1.5)
    assert isinstance(dropout(3, 0.0), torch.nn.Identity)
    torch.manual_seed(0)
    out = dropout(3, 0.5, channelwise=True).train()(torch.ones(1, 64, 2, 2, 2))
    per_channel = out.reshape(64, -1)
    assert ((per_channel == 0).all(1) | (per_channel == 2).all(1)).all()


def test_as_tuple_errors_name_the_option() -> None:
    assert as_tuple(2, 3) == (2, 2, 2)
    with pytest.raises(ConfigError, match=r"strides: expected an int or 3 ints .* got \[1, 2\]"):
        as_tuple([1, 2], 3, name="strides")


def test_residual_unit_shortcut_and_projection() -> None:
    unit = ResidualUnit(2, 3, 3, norm_name="none", act_name="relu")
    assert isinstance(unit.shortcut, torch.nn.Identity)
    for parameter in unit.residual.parameters():
        torch.nn.init.zeros_(parameter)
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(unit(x), torch.relu(x))  # zero residual branch: act(x + 0)
    strided = ResidualUnit(3, 2, 4, stride=[1, 2, 2])
    assert strided(torch.randn(1, 2, 4, 4, 4)).shape == (1, 4, 4, 2, 2)


def test_conv_norm_act_orders() -> None:
    post = ConvNormAct(2, 1, 2, norm_name="batch", act_name="relu")
    pre = ConvNormAct(2, 1, 2, norm_name="batch", act_name="relu", preactivation=True)
    assert [type(m).__name__ for m in post] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert [type(m).__name__ for m in pre] == ["BatchNorm2d", "ReLU", "Conv2d"]


def test_squeeze_excitation_matches_hand_computation() -> None:
    block = SqueezeExcitation(2, 4, reduction=2)
    x = torch.randn(2, 4, 3, 3)
    first, second = block.excite[0], block.excite[2]
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ first.weight[:, :, 0, 0].T + first.bias)
    gate = torch.sigmoid(hidden @ second.weight[:, :, 0, 0].T + second.bias)
    torch.testing.assert_close(block(x), x * gate[:, :, None, None])


def test_center_crop() -> None:
    x = torch.arange(7.0).reshape(1, 1, 7)
    assert center_crop(x, [3]).flatten().tolist() == [2.0, 3.0, 4.0]
