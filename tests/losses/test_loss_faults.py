"""Negative class weights refused; dice_ce weighted like MONAI on request; reduction='none'."""

from __future__ import annotations

import pytest
import torch

from voxelflow.errors import ConfigError
from voxelflow.losses import build_loss

monai_losses = pytest.importorskip("monai.losses")


def _case(channels: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, channels, 5, 6, 4, generator=generator, dtype=torch.float64)
    target = torch.randint(0, channels, (2, 1, 5, 6, 4), generator=generator)
    return logits, target


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("focal", {"alpha": [1, 1, -1]}),
        ("focal", {"alpha": -0.25}),
        ("cross_entropy", {"class_weights": [1, -2, 1]}),
        ("dice_ce", {"class_weights": [1, 1, -1]}),
        ("classification_ce", {"class_weights": [1, -1]}),
        ("classification_focal", {"alpha": [-1, 1]}),
    ],
)
def test_negative_class_weights_are_refused(name: str, options: dict) -> None:
    with pytest.raises(ConfigError, match=r"expected non-negative values, got -"):
        build_loss(name, **options)


@pytest.mark.parametrize("include_background", [True, False])
def test_dice_ce_weighted_dice_matches_monai(include_background: bool) -> None:
    logits, target = _case()
    weights = [0.2, 1.0, 3.0]
    reference = monai_losses.DiceCELoss(
        softmax=True,
        to_onehot_y=True,
        include_background=include_background,
        weight=torch.tensor(weights, dtype=torch.float64),
    )(logits, target)
    ours = build_loss(
        "dice_ce",
        class_weights=weights,
        weighted_dice=True,
        include_background=include_background,
    )(logits, target)
    assert torch.allclose(ours, reference.to(ours.dtype), atol=1e-6)
    default = build_loss(
        "dice_ce", class_weights=weights, include_background=include_background
    )(logits, target)
    assert not torch.allclose(default, reference, atol=1e-4)  # default: CE weights only


def test_dice_ce_default_unchanged_without_weights() -> None:
    logits, target = _case()
    reference = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True)(logits, target)
    for weighted_dice in (False, True):
        ours = build_loss("dice_ce", weighted_dice=weighted_dice)(logits, target)
        assert torch.allclose(ours, reference.to(ours.dtype), atol=1e-6)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_tversky_reduction_matches_monai(reduction: str, batch: bool) -> None:
    logits, target = _case()
    reference = monai_losses.TverskyLoss(
        softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, batch=batch, reduction=reduction
    )(logits, target)
    ours = build_loss("tversky", alpha=0.3, beta=0.7, batch=batch, reduction=reduction)(
        logits, target
    )
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference.to(ours.dtype), atol=1e-6)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_focal_reduction_matches_monai(reduction: str, activation: str) -> None:
    logits, target = _case()
    one_hot = torch.zeros_like(logits).scatter_(1, target, 1.0)
    reference = monai_losses.FocalLoss(
        gamma=2.0,
        use_softmax=activation == "softmax",
        reduction=reduction,
        alpha=0.25 if activation == "sigmoid" else None,
    )(logits, one_hot)
    ours = build_loss(
        "focal",
        gamma=2.0,
        activation=activation,
        reduction=reduction,
        alpha=0.25 if activation == "sigmoid" else None,
    )(logits, one_hot)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference.to(ours.dtype), atol=1e-6)


def test_unknown_reduction_is_refused() -> None:
    for name in ("focal", "tversky"):
        with pytest.raises(ConfigError, match="reduction"):
            build_loss(name, reduction="max")
