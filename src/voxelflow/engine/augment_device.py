"""Where training augments: per window in the DataLoader workers, or batched on the device.

``training.augmentation_device`` (also written ``augmentation.device``):

- ``cpu``: workers resample and augment every window (:class:`~voxelflow.transforms.compose.Compose`
  through the sampler, the fused numba kernel).
- ``cuda``: workers only read each window with a margin (:func:`~voxelflow.transforms.gpu.augmentation_margin`)
  from the cache; the trainer applies :class:`~voxelflow.transforms.gpu.BatchAugmentation` to the
  batch on the GPU before the forward pass and crops it to the window. Without CUDA: ConfigError.
- ``batched``: the same batched path on whatever device trains (CPU included): what tests and
  CPU debugging use, the code being the one that runs on the GPU.
- ``auto``: ``cuda`` when training runs on a CUDA device and the augmentation can be batched,
  else ``cpu``.

Example:
    >>> import torch
    >>> choice = resolve_augmentation_path("auto", torch.device("cpu"), [], window=(8, 8, 8))
    >>> choice.batched, choice.reason
    (False, 'augmentation_device auto: training runs on cpu')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voxelflow.errors import ConfigError
from voxelflow.transforms.base import Transform
from voxelflow.transforms.gpu import BatchAugmentation, augmentation_margin, unsupported_reason

KEY = "training.augmentation_device"


@dataclass(frozen=True)
class AugmentationPath:
    """The resolved choice: ``batched`` on ``device`` or per window in workers, and why."""

    batched: bool
    device: torch.device
    reason: str

    def describe(self) -> str:
        """One line for ``voxelflow profile`` and the training log."""
        where = f"batched on {self.device.type}" if self.batched else "per window in the workers"
        return f"augmentation runs {where} ({self.reason})"


def resolve_augmentation_path(
    setting: str,
    device: torch.device,
    transforms: Sequence[Transform],
    *,
    window: Sequence[int],
    label_window: Sequence[int] | None = None,
) -> AugmentationPath:
    """Resolve ``training.augmentation_device`` for the training device.

    Raises:
        ConfigError: ``cuda`` without a CUDA training device, or ``cuda``/``batched`` with an
            augmentation or window the batched path cannot handle (naming the key and why).
    """
    if setting not in ("auto", "cpu", "cuda", "batched"):
        raise ConfigError(f"{KEY}: expected auto, cpu, cuda or batched, got {setting!r}")
    if setting == "cpu":
        return AugmentationPath(False, device, f"augmentation_device {setting}")
    if setting == "cuda" and device.type != "cuda":
        raise ConfigError(
            f"{KEY}: expected a CUDA training device for 'cuda', got {device.type!r} "
            f"(system.device, CUDA available: {torch.cuda.is_available()}); use auto or cpu"
        )
    if setting == "auto" and device.type != "cuda":
        return AugmentationPath(False, device, f"augmentation_device auto: training runs on {device.type}")
    problem = _batching_problem(transforms, window, label_window)
    if problem is not None:
        if setting == "auto":
            return AugmentationPath(False, device, f"augmentation_device auto: {problem}")
        raise ConfigError(f"{KEY}: {setting!r} cannot batch this augmentation: {problem}")
    if not transforms:
        return AugmentationPath(False, device, f"augmentation_device {setting}: no augmentation")
    return AugmentationPath(True, device, f"augmentation_device {setting}")


def _batching_problem(
    transforms: Sequence[Transform], window: Sequence[int], label_window: Sequence[int] | None
) -> str | None:
    if label_window is not None:
        return "sampling.label_window differs from the window (one batched resampling needs one size)"
    if any(int(w) <= 0 for w in window):
        return f"sampling.window {list(window)} has whole-axis entries (no margin can be read)"
    return unsupported_reason(transforms)


class DeviceAugmentation:
    """The trainer's batch transform: :class:`BatchAugmentation` of margin windows, cropped.

    Args:
        transforms: the augmentation (spatial transforms first).
        window: the training window (the output size).
        seed: seed of the per-sample parameter draws.

    Shape:
        batch roles ``(B, C, *(window + 2 * margin))`` in, ``(B, C, *window)`` out.
    """

    def __init__(self, transforms: Sequence[Transform], *, window: Sequence[int], seed: int) -> None:
        self.augment = BatchAugmentation(
            list(transforms), output_window=tuple(int(w) for w in window), seed=seed,
            padding_mode="border",
        )  # fmt: skip

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.augment(batch)


def read_margin(
    transforms: Sequence[Transform], window: Sequence[int], spacings: Sequence[Sequence[float]]
) -> tuple[int, ...]:
    """The widest margin over the training subjects' spacings (one size per batch)."""
    margins = np.array([augmentation_margin(transforms, window, s) for s in spacings])
    return tuple(int(m) for m in margins.max(axis=0))
