"""Whole-image windows by resizing: ResizeSampler (training and inference) and ResizeAggregator.

For classification, autoencoders and GANs the network sees the whole image resized to the
window (images linear, labels nearest); the aggregator maps outputs back to the original size.

Example:
    >>> import numpy as np
    >>> from voxelflow.data.cached import CachedSubject
    >>> subject = CachedSubject("s", {"image": np.ones((1, 10, 12, 7), np.float32)}, {"image": "intensity"})
    >>> tuple(ResizeSampler((8, 8, 8)).sample(subject, np.random.default_rng(0))[0]["image"].shape)
    (1, 8, 8, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ShapeError
from voxelflow.sampling.base import Sampler, check_roles, subject_spacing
from voxelflow.sampling.window import resolve_window
from voxelflow.transforms.base import Transform


def resize_volume(
    data: torch.Tensor, size: Sequence[int], *, kind: str = "intensity"
) -> torch.Tensor:
    """Resize ``(C, *spatial)`` to ``size``: linear for images/weights, nearest for labels.

    Shape:
        data: ``(C, *spatial)``; returns ``(C, *size)`` with the input dtype.
    """
    size = tuple(int(s) for s in size)
    if tuple(data.shape[1:]) == size:
        return data
    linear = "trilinear" if len(size) == 3 else "bilinear"
    values = data[None].float()
    if kind == "label":
        out = F.interpolate(values, size=size, mode="nearest-exact")[0]
    else:
        out = F.interpolate(values, size=size, mode=linear, align_corners=False)[0]
    return out.to(data.dtype)


class ResizeSampler(Sampler):
    """The whole image resized to the window (one window per subject and draw).

    Augmentation spatial draws are applied after resizing, on the window.

    Shape:
        each role: ``(C, *spatial)`` → ``(C, *window)``.

    Example:
        >>> from voxelflow.data.cached import CachedSubject
        >>> image = np.ones((1, 20, 16, 9), np.float32)
        >>> subject = CachedSubject("s", {"image": image}, {"image": "intensity"})
        >>> window = ResizeSampler((8, 8, 8)).sample(subject, np.random.default_rng(0))[0]
        >>> tuple(window["image"].shape), window["spacing"].tolist()
        ((1, 8, 8, 8), [2.5, 2.0, 1.125])
    """

    def draw_centres(
        self, subject: CachedSubject, window: tuple[int, ...], rng: np.random.Generator
    ) -> list[np.ndarray]:
        return [np.asarray(window) // 2 for _ in range(self.windows_per_subject)]

    def sample(
        self,
        subject: CachedSubject,
        rng: np.random.Generator,
        *,
        augmentation: Transform | None = None,
    ) -> list[dict[str, Any]]:
        check_roles(subject)
        window = resolve_window(self.window, subject.spatial_shape, subject=subject.name)
        scale = np.asarray(subject.spatial_shape, dtype=np.float64) / np.asarray(window)
        spacing = tuple(float(s) for s in np.asarray(subject_spacing(subject)) * scale)
        base = {
            role: resize_volume(
                torch.from_numpy(np.array(array)),
                self.role_window(subject, role, window),
                kind=subject.kinds.get(role, "intensity"),
            )
            for role, array in subject.arrays.items()
        }
        out = []
        for _ in range(self.windows_per_subject):
            item = {
                **base,
                "subject": subject.name,
                "location": torch.zeros(len(window), dtype=torch.int64),
            }
            item["kinds"], item["spacing"] = (
                dict(subject.kinds),
                torch.tensor(spacing, dtype=torch.float64),
            )
            out.append(augmentation(item, rng=rng) if augmentation is not None else item)
        return out


class ResizeAggregator:
    """Map whole-image outputs back to the original spatial size.

    Args:
        spatial_shape: original size.
        kind: ``"intensity"`` (linear, for probabilities/images) or ``"label"`` (nearest).

    Shape:
        ``(B, C, *window)`` → ``(B, C, *spatial_shape)``; ``(B, C)`` is returned unchanged.

    Example:
        >>> aggregator = ResizeAggregator((20, 16, 9))
        >>> tuple(aggregator(torch.zeros(2, 3, 8, 8, 8)).shape)
        (2, 3, 20, 16, 9)
        >>> tuple(aggregator(torch.zeros(2, 5)).shape)  # per-image outputs pass through
        (2, 5)
    """

    def __init__(self, spatial_shape: Sequence[int], *, kind: str = "intensity") -> None:
        self.shape = tuple(int(s) for s in spatial_shape)
        self.kind = kind

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """``(B, C, *window)`` → ``(B, C, *spatial_shape)``; ``(B, C)`` (per-image) passes through."""
        if output.ndim == 2:
            return output
        if output.ndim != 2 + len(self.shape):
            raise ShapeError(
                f"expected output (B, C, *window) with {len(self.shape)} spatial axes, got {tuple(output.shape)}"
            )
        return torch.stack([resize_volume(o, self.shape, kind=self.kind) for o in output])
