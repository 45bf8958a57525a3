"""Device, mixed-precision and seeding choices for training and inference.

``amp="auto"`` means bf16 autocast on a CUDA device that supports it (fp16 with a gradient
scaler otherwise) and no autocast on the CPU, where mixed precision is slower than float32.

Example:
    >>> device = select_device("cpu")
    >>> resolve_precision("auto", device).enabled
    False
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from voxelflow.errors import ConfigError

logger = logging.getLogger(__name__)

AMP_MODES = ("auto", "off", "fp16", "bf16")


@dataclass(frozen=True)
class Precision:
    """How forward passes run: autocast on/off, its dtype and whether a grad scaler is needed."""

    device_type: str
    enabled: bool
    dtype: torch.dtype = torch.float32
    use_scaler: bool = False

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Context manager running the enclosed forward pass in this precision."""
        if not self.enabled:
            yield
            return
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            yield


def select_device(spec: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """Turn a config device string into a ``torch.device``.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        local_rank: under ``torchrun`` the process's GPU index; overrides the index of ``cuda``.

    Returns:
        The device to train or infer on.

    Raises:
        ConfigError: an unknown string, or CUDA asked for where none is available.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(
            f"system.device: expected auto, cpu, cuda or cuda:N, got {spec!r}"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"system.device: expected a CUDA device to be available for {spec!r}, got none"
            )
        if local_rank is not None:
            device = torch.device("cuda", local_rank)
    return device


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """Choose autocast dtype and scaler from the ``training.amp`` setting.

    Args:
        mode: one of ``auto``, ``off``, ``fp16``, ``bf16``.
        device: the training device; on CPU ``auto`` means off.

    Returns:
        The precision settings; fp16 on CUDA uses a gradient scaler, bf16 never does.

    Raises:
        ConfigError: unknown mode.
    """
    if mode not in AMP_MODES:
        raise ConfigError(f"training.amp: expected one of {AMP_MODES}, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return Precision(device.type, enabled=False)
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    use_scaler = dtype == torch.float16 and device.type == "cuda"
    return Precision(device.type, enabled=True, dtype=dtype, use_scaler=use_scaler)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic algorithms.

    Args:
        seed: the run's seed (recorded in the checkpoint and the resolved config).
        deterministic: use deterministic kernels (slower; errors on ops that have none).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        logger.info("deterministic mode: deterministic algorithms on, cudnn benchmark off")


def move_to_device(value: object, device: torch.device, *, non_blocking: bool = True) -> object:
    """Move every tensor inside nested dicts, lists and tuples to ``device``; leave the rest."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking and device.type == "cuda")
    if isinstance(value, dict):
        return {
            key: move_to_device(item, device, non_blocking=non_blocking)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        moved = [move_to_device(item, device, non_blocking=non_blocking) for item in value]
        return type(value)(moved) if isinstance(value, list) else tuple(moved)
    return value
