"""Losses by name: segmentation, regression, classification and generative.

Every loss is an ``nn.Module`` built with keyword options and called as
``loss(prediction, target, weight=None) -> scalar tensor``. Look them up in :data:`LOSSES`
(``voxelflow list losses`` prints them) or build one with :func:`build_loss`.

Example:
    >>> from voxelflow.losses import build_loss
    >>> loss = build_loss("dice_ce", include_background=False)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from voxelflow.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` (or a plugin ``pkg.mod:Name``) with ``kwargs``.

    Raises:
        RegistryError: unknown name (with suggestions).
        ConfigError: an option the loss does not take (with suggestions), a missing or
            wrongly typed one (``loss.option: ...``).

    Shape:
        segmentation losses take logits ``(B, C, *spatial)`` and class indices
        ``(B, 1, *spatial)`` and return a scalar.

    Example:
        >>> import torch
        >>> loss = build_loss("dice_ce")
        >>> loss(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)).shape
        torch.Size([])
    """
    return LOSSES.build(name, kwargs, key="loss")


# Import the modules so that they register their losses (explicit, no scanning).
from voxelflow.losses import (  # noqa: E402
    classification,
    deep_supervision,
    generative,
    regression,
    segmentation,
    segmentation_ce,
    wasserstein,
)
from voxelflow.losses.classification import ClassificationCrossEntropyLoss, ClassificationFocalLoss  # noqa: E402
from voxelflow.losses.deep_supervision import DeepSupervisionLoss  # noqa: E402
from voxelflow.losses.generative import (  # noqa: E402
    GANLeastSquaresLoss,
    GANNonSaturatingLoss,
    GANWassersteinLoss,
    VAELoss,
    gradient_penalty,
)
from voxelflow.losses.regression import HuberLoss, L1Loss, L2Loss, RMSELoss, SmoothL1Loss  # noqa: E402
from voxelflow.losses.segmentation import (  # noqa: E402
    DiceLoss,
    GeneralizedDiceLoss,
    SensitivitySpecificityLoss,
    TverskyLoss,
)
from voxelflow.losses.segmentation_ce import CrossEntropyLoss, DiceCELoss, FocalLoss  # noqa: E402
from voxelflow.losses.wasserstein import WassersteinDiceLoss  # noqa: E402

__all__ = [
    "LOSSES",
    "ClassificationCrossEntropyLoss",
    "ClassificationFocalLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "GANLeastSquaresLoss",
    "GANNonSaturatingLoss",
    "GANWassersteinLoss",
    "GeneralizedDiceLoss",
    "HuberLoss",
    "L1Loss",
    "L2Loss",
    "RMSELoss",
    "SensitivitySpecificityLoss",
    "SmoothL1Loss",
    "TverskyLoss",
    "VAELoss",
    "WassersteinDiceLoss",
    "build_loss",
    "classification",
    "deep_supervision",
    "generative",
    "gradient_penalty",
    "regression",
    "segmentation",
    "segmentation_ce",
    "wasserstein",
]
