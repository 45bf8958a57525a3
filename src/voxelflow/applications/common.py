"""Helpers shared by several applications (one copy, imported by each application package)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch

from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.applications.base import TrainingContext
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.image import Image

#: a network call on a batch of windows: ``(N, C, *window)`` → ``(N, C_out, *out_window)``.
WindowForward = Callable[[torch.Tensor], torch.Tensor]
#: ``inference.accumulate`` → the dtype the sliding window blends outputs in.
ACCUMULATE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def pair_cases(
    predictions: Mapping[str, Image], references: Mapping[str, Image]
) -> dict[str, tuple[Image, Image]]:
    """Subject → (prediction, reference), sorted by subject (the API's in-memory evaluations).

    Raises:
        DataError: a prediction without reference or the reverse (both lists named).
    """
    missing = sorted(set(predictions) - set(references))
    unused = sorted(set(references) - set(predictions))
    if missing or unused:
        raise DataError(
            f"expected a reference for every prediction and the reverse; "
            f"no reference for {missing or 'none'}, no prediction for {unused or 'none'}"
        )
    return {name: (predictions[name], references[name]) for name in sorted(predictions)}


def resized_affine(affine: np.ndarray, shape: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Affine of ``size`` voxels covering the field of view of a ``shape`` grid.

    Matches :func:`voxelflow.sampling.resize.resize_volume` (``align_corners=False``): voxel
    ``i`` of the resized grid is centred at ``(i + 0.5) * shape / size - 0.5`` of the original.
    ``shape`` may hold more axes than ``size`` (a channel-free prefix is used).

    Args:
        affine: 4×4 affine of the original grid.
        shape: original spatial shape (2 or 3 axes).
        size: resized spatial shape.

    Returns:
        The 4×4 affine of the resized grid.

    Example:
        >>> resized_affine(np.eye(4), (64, 64, 64), (32, 32, 32))[0].tolist()
        [2.0, 0.0, 0.0, 0.5]
    """
    dims = len(size)
    scale = np.asarray(shape, dtype=np.float64)[:dims] / np.asarray(size, dtype=np.float64)
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = out[:3, 3] + out[:3, :dims] @ ((scale - 1.0) / 2.0)
    out[:3, :dims] = out[:3, :dims] * scale
    return out


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """The middle slice along the last axis of a 3D volume (a 2D image is returned as is).

    Shape:
        ``(X, Y, Z)`` → ``(X, Y)``; ``(X, Y)`` unchanged.
    """
    array = np.asarray(volume)
    return array[..., array.shape[-1] // 2] if array.ndim == 3 else array


class WindowKeywords(TypedDict):
    """The sliding-window keywords of the applications' constructors (``**`` of a call)."""

    window: tuple[int, ...]
    overlap: float
    blend: str
    inference_batch_size: int
    accumulate: str


@dataclass(frozen=True)
class WindowedInference:
    """Sliding-window inference over whole images: the ``inference.*`` settings and their one run.

    Attributes:
        window: window size per spatial axis (0 or -1 = the whole axis).
        overlap: fraction of the window shared by neighbours.
        blend: ``gaussian``, ``mean`` or ``crop``.
        batch_size: windows per network call.
        accumulate: ``float32`` or ``float16``, the dtype outputs are blended in.

    Raises:
        ConfigError: an ``accumulate`` that is not in :data:`ACCUMULATE_DTYPES`.

    Example:
        >>> WindowedInference((8, 8, 8), blend="mean").as_keywords()["inference_batch_size"]
        4
    """

    window: tuple[int, ...]
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 4
    accumulate: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", tuple(int(size) for size in self.window))
        if self.accumulate not in ACCUMULATE_DTYPES:
            raise ConfigError(
                f"inference.accumulate: expected one of {list(ACCUMULATE_DTYPES)}, "
                f"got {self.accumulate!r}"
            )

    @classmethod
    def from_experiment(
        cls, experiment: ExperimentConfig, window: Sequence[int] | None = None
    ) -> WindowedInference:
        """The experiment's ``inference`` section; ``window`` defaults to ``inference.window``,
        else ``sampling.window``."""
        inference = experiment.inference
        return cls(
            window=tuple(window or inference.window or experiment.sampling.window),
            overlap=inference.overlap,
            blend=inference.blend,
            batch_size=inference.batch_size,
            accumulate=inference.accumulate,
        )

    def as_keywords(self) -> WindowKeywords:
        """These settings as the applications' constructor keywords (``inference_batch_size``)."""
        return WindowKeywords(
            window=self.window, overlap=self.overlap, blend=self.blend,
            inference_batch_size=self.batch_size, accumulate=self.accumulate,
        )  # fmt: skip

    def run(
        self,
        forward: WindowForward,
        image: torch.Tensor,
        ctx: TrainingContext,
        *,
        output_size: Callable[[Sequence[int]], Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """``forward`` over the windows of ``image`` (autocast, float32 outputs), blended.

        Args:
            forward: the network call on a batch of windows.
            image: whole images, moved to ``ctx.device``.
            ctx: device and precision.
            output_size: ``window -> out_window`` of a network with valid convolutions (outputs
                are centred); default ``forward.output_size`` when it has one.

        Shape:
            image ``(B, C, *spatial)`` → ``(B, C_out, *spatial)``, float32 on ``ctx.device``.
        """
        from voxelflow.sampling.grid import sliding_window

        size = output_size or getattr(forward, "output_size", None)
        call = autocast_forward(forward, ctx)
        return sliding_window(
            call if size is None else _SizedForward(call, size),
            image.to(ctx.device),
            self.window,
            overlap=self.overlap,
            blend=self.blend,
            batch_size=self.batch_size,
            device=ctx.device,
            accumulate_dtype=ACCUMULATE_DTYPES[self.accumulate],
        ).float()  # float16 accumulation (inference.accumulate) halves the blending buffers


def autocast_forward(forward: WindowForward, ctx: TrainingContext) -> WindowForward:
    """``forward`` run in the context's precision, its output as float32.

    Shape:
        ``(N, C, *window)`` → ``(N, C_out, *out_window)``.
    """

    def call(windows: torch.Tensor) -> torch.Tensor:
        with ctx.autocast():
            return forward(windows).float()

    return call


@dataclass(frozen=True)
class _SizedForward:
    """A window call with the ``output_size`` that :func:`~voxelflow.sampling.sliding_window` reads."""

    forward: WindowForward
    output_size: Callable[[Sequence[int]], Sequence[int]]

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        return self.forward(windows)
