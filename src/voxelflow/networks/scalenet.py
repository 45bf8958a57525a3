"""ScaleNet (Fidon et al., MICCAI 2017): modality-agnostic backbone shared by every modality."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxelflow.errors import ShapeError
from voxelflow.networks.base import Network
from voxelflow.networks.blocks import ConvNormAct, NormActOptions
from voxelflow.networks.highresnet import dilated_residual_stack
from voxelflow.networks.layers import conv


class ScaleNet(Network):
    """Shared per-modality backbone → mean/max merge across modalities → HighRes-style frontend.

    Each input channel (modality) goes through the *same* backbone (a 3×3×3 convolution and
    residual blocks), so the network accepts any number of modalities at the same parameter
    count; the per-modality features are merged by their mean and maximum over modalities
    (invariant to modality order), then a dilated residual frontend classifies. No size
    constraint. Default 3D parameter count (1 → 2 channels): about 0.53 M.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of modalities (each processed separately).
        out_channels: output channels (classes).
        backbone_features: features of the shared backbone.
        backbone_blocks: residual blocks in the backbone.
        frontend_features: features per frontend stage.
        frontend_dilations: dilation per frontend stage.
        blocks_per_stage: residual blocks per frontend stage.
        final_features: features of the 1×1 layer before the classifier.
        norm: normalisation name.
        act: activation name.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)``.
    """

    paper = "Fidon et al., Scalable multimodal CNNs for brain tumour segmentation, MICCAI 2017"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        backbone_features: int = 16,
        backbone_blocks: int = 2,
        frontend_features: Sequence[int] = (32, 64),
        frontend_dilations: Sequence[int] = (2, 4),
        blocks_per_stage: int = 2,
        final_features: int = 80,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels)
        dims = self.spatial_dims
        options: NormActOptions = {"norm_name": norm, "act_name": act}
        self.backbone = nn.Sequential(
            ConvNormAct(dims, 1, backbone_features, **options),
            dilated_residual_stack(
                dims,
                backbone_features,
                features=[backbone_features],
                dilations=[1],
                blocks_per_stage=backbone_blocks,
                norm=norm,
                act=act,
            ),
        )
        self.frontend = nn.Sequential(
            dilated_residual_stack(
                dims,
                2 * backbone_features,
                features=frontend_features,
                dilations=frontend_dilations,
                blocks_per_stage=blocks_per_stage,
                norm=norm,
                act=act,
            ),
            ConvNormAct(
                dims, frontend_features[-1], final_features, kernel_size=1, padding=0, **options
            ),
            conv(dims, final_features, out_channels, kernel_size=1, padding=0),
        )

    def _check_input(self, x: torch.Tensor) -> None:
        """Any number of modalities is accepted (the backbone is shared); checks the axes only."""
        if x.dim() != self.spatial_dims + 2:
            raise ShapeError(
                f"ScaleNet: expected input (B, modalities, {self.spatial_dims} spatial axes), "
                f"got shape {list(x.shape)}"
            )
        self.check_input_size(x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, modalities, *spatial)`` → ``(B, out_channels, *spatial)``.

        ``modalities`` may differ from ``in_channels`` (e.g. a missing sequence at inference).
        """
        self._check_input(x)
        batch, modalities, spatial = x.shape[0], x.shape[1], x.shape[2:]
        per_modality = self.backbone(x.reshape(batch * modalities, 1, *spatial))
        per_modality = per_modality.reshape(batch, modalities, -1, *spatial)
        merged = torch.cat([per_modality.mean(dim=1), per_modality.amax(dim=1)], dim=1)
        return self.frontend(merged)
