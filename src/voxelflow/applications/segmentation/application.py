"""Segmentation: image → class scores, trained on windows, validated on whole subjects.

Training batches hold ``image`` ``(B, C, *window)`` and ``label`` class indices
``(B, 1, *window)`` (labels were mapped to ``0..K-1`` by preprocessing). Validation runs
sliding-window inference over each whole cached subject, takes the argmax and computes the
configured metrics per foreground class with :func:`voxelflow.metrics.segmentation.segmentation_metrics`
(spacing from the subject's affine); each metric is reported as its mean over classes
(``dice``) and per class (``dice/1``).

**2D training on slices of 3D volumes.** A 3D window with size 1 on exactly one axis (e.g.
``sampling.window: [64, 64, 1]``) selects 2D mode: that axis is the *slice axis* (any of the three;
more than one size-1 axis is a :class:`~voxelflow.errors.ConfigError`). The network is built with
``spatial_dims=2``; the application removes the slice axis before every network call and restores
it after, so the cache, the samplers, the augmentation and the sliding-window inference stay 3D
(inference walks the volume slice by slice with ``inference.window`` ``[X, Y, 1]``, same axis).
Spatial augmentation runs on the 3D window: rotate in-plane with a rotation about the slice axis
(``rotation: [0, 0, 15]`` for slice axis 2); a rotation about another axis reads an oblique slice
from the volume, flips of the slice axis and scaling along it do nothing.

**Sampled inference** (flip TTA, Monte-Carlo dropout) and uncertainty maps: see
:mod:`voxelflow.applications.segmentation.uncertainty`; the written probabilities are the mean softmax over
the samples and ``inference.uncertainty`` adds ``<subject>_uncertainty.nii.gz``.

Example:
    >>> app = SegmentationApplication(network, build_loss("dice_ce"), num_classes=3, window=(16, 16, 16))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from voxelflow.applications.base import (
    Application,
    EvaluationOptions,
    InferenceItem,
    PlanningRules,
    Prediction,
    TrainingContext,
)
from voxelflow.applications.common import WindowedInference
from voxelflow.applications.segmentation.task import SegmentationTask, read_decision
from voxelflow.applications.segmentation.uncertainty import (
    SoftmaxMoments,
    active_dropout,
    check_inference_options,
    flip_combinations,
    seeded,
)
from voxelflow.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig, InferenceConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.io.image import Image


def slice_axis_of(window: Sequence[int], *, key: str = "sampling.window") -> int | None:
    """The slice axis of a 2D-on-slices window (its one size-1 axis), or None for a plain window.

    Args:
        window: window size per spatial axis.
        key: config key named in errors.

    Raises:
        ConfigError: more than one size-1 axis, or a size-1 axis in a window that is not 3D.

    Example:
        >>> slice_axis_of([64, 1, 64])
        1
    """
    ones = [axis for axis, size in enumerate(window) if int(size) == 1]
    if not ones:
        return None
    if len(ones) > 1:
        raise ConfigError(
            f"{key}: expected at most one axis of size 1 (the slice axis of 2D training), "
            f"got {list(window)} (size 1 on axes {ones})"
        )
    if len(window) != 3:
        raise ConfigError(
            f"{key}: expected a 3D window for 2D training on slices (size 1 on the slice axis), "
            f"got {list(window)}"
        )
    return ones[0]


def network_window(window: Sequence[int]) -> list[int]:
    """The window the network sees: ``window`` without the slice axis of 2D training on slices.

    Example:
        >>> network_window([64, 64, 1]), network_window([32, 32, 32])
        ([64, 64], [32, 32, 32])
    """
    axis = slice_axis_of(window, key="window")
    return [int(size) for index, size in enumerate(window) if index != axis]


def experiment_slice_axis(experiment: ExperimentConfig) -> int | None:
    """The slice axis of an Experiment's windows; training, label and inference windows agree.

    Raises:
        ConfigError: the windows disagree on the slice axis (naming both keys).
    """
    axis = slice_axis_of(experiment.sampling.window, key="sampling.window")
    others = {
        "sampling.label_window": experiment.sampling.label_window,
        "inference.window": experiment.inference.window,
    }
    for key, window in others.items():
        if window is not None and slice_axis_of(window, key=key) != axis:
            raise ConfigError(
                f"{key}: expected the slice axis of sampling.window {experiment.sampling.window} "
                f"({'none' if axis is None else axis}), got {list(window)}"
            )
    return axis


class SegmentationApplication(Application):
    """Per-voxel classification into ``num_classes`` classes.

    Args:
        network: maps ``(B, C_in, *window)`` to logits ``(B, num_classes, *window)``; in 2D mode
            (``slice_axis`` set) it maps the window without its slice axis.
        loss: takes ``(logits, target indices)`` and returns a scalar.
        num_classes: number of classes including background.
        window: inference window for validation (0 or -1 = whole axis).
        overlap: sliding-window overlap fraction.
        blend: ``gaussian``, ``mean`` or ``crop``.
        inference_batch_size: windows per network call at validation.
        accumulate: ``"float32"`` or ``"float16"``: the sliding window's blending dtype.
        metrics: metric names (``dice``, ``hd95``, ``assd``, ``nsd`` ...).
        tolerance_mm: NSD tolerance.
        label_values: label value of each class (saved with checkpoints, used to write outputs).
        slice_axis: spatial axis removed before the network (2D training on slices), or None.

    Raises:
        ConfigError: fewer than 2 classes, wrong number of label values, or a ``window`` whose
            size on ``slice_axis`` is not 1.
    """

    name = "segmentation"
    decides_postprocessing = True
    training_roles = ("image", "label")
    reference_role = "label"
    reference_folders = True
    evaluates_folders = True
    ensemble_mode = "probabilities"
    output_column = "seg"
    dense_output = True
    planning = PlanningRules(network="unet", labels=True, slices=True)

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        *,
        num_classes: int,
        window: Sequence[int],
        overlap: float = 0.5,
        blend: str = "gaussian",
        inference_batch_size: int = 4,
        metrics: Sequence[str] = ("dice",),
        tolerance_mm: float = 1.0,
        label_values: Sequence[int] | None = None,
        slice_axis: int | None = None,
        accumulate: str = "float32",
    ) -> None:
        super().__init__({"network": network})
        self.windowed = WindowedInference(
            tuple(window), overlap, blend, inference_batch_size, accumulate
        )
        if num_classes < 2:
            raise ConfigError(
                f"num_classes: expected at least 2 (background + one class), got {num_classes}"
            )
        self.loss, self.num_classes = loss, num_classes
        self.metrics, self.tolerance_mm = list(metrics), tolerance_mm
        self.label_values = (
            list(label_values) if label_values is not None else list(range(num_classes))
        )
        if len(self.label_values) != num_classes:
            raise ConfigError(
                f"label_values: expected {num_classes} values, got {self.label_values}"
            )
        window = list(self.windowed.window)
        if slice_axis is not None and slice_axis_of(window, key="window") != slice_axis:
            raise ConfigError(
                f"window: expected size 1 on the slice axis {slice_axis} only, got {window}"
            )
        self.slice_axis = slice_axis
        self._last_logits: torch.Tensor | None = None

    @classmethod
    def from_experiment(
        cls,
        experiment: ExperimentConfig,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> SegmentationApplication:
        """Build network and loss from an :class:`~voxelflow.config.schema.Experiment`.

        A window with one size-1 axis builds a 2D network (see the module docstring).

        Raises:
            ConfigError: task options given, no class count, windows disagreeing on the slice
                axis, or inference options that cannot be honoured (uncertainty without samples,
                Monte-Carlo dropout without dropout layers).
        """
        from voxelflow.config.build import build_loss, build_network

        task = SegmentationTask.from_config(
            experiment.task, num_classes=experiment.num_classes, label_values=label_values
        )
        num_classes = task.num_classes
        slice_axis = experiment_slice_axis(experiment)
        windowed = WindowedInference.from_experiment(experiment)
        network = build_network(
            experiment.network,
            spatial_dims=len(network_window(windowed.window)),
            in_channels=in_channels,
            out_channels=num_classes,
        )
        check_inference_options(experiment.inference, network)
        return cls(
            network,
            build_loss(experiment.loss),
            num_classes=num_classes,
            **windowed.as_keywords(),
            metrics=[m for m in experiment.evaluation.metrics],
            tolerance_mm=experiment.evaluation.tolerance_mm,
            label_values=task.label_values,
            slice_axis=slice_axis,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Network logits of a window batch, removing and restoring the slice axis in 2D mode.

        Shape:
            ``(B, C, *window)`` → ``(B, K, *window)``
        """
        network = self.modules["network"]
        if self.slice_axis is None:
            return network(image)
        dim = 2 + self.slice_axis
        if image.shape[dim] != 1:
            raise ShapeError(
                f"expected size 1 on slice axis {self.slice_axis} of the window, got input "
                f"shape {tuple(image.shape)}"
            )
        return network(image.squeeze(dim)).unsqueeze(dim)

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Shape: ``image (B, C, *window)``, ``label (B, 1, *window)`` → scalar ``loss``."""
        logits = self.forward(batch["image"])
        label = batch["label"]
        if logits.shape[2:] != label.shape[2:]:
            raise ShapeError(
                f"expected network output window {tuple(label.shape[2:])} (the label window), got {tuple(logits.shape[2:])}"
            )
        self._last_logits = logits.detach()
        return {"loss": self.loss(logits, label.long())}

    def predict_scores(
        self, image: torch.Tensor, ctx: TrainingContext, *, flip: Sequence[int] = ()
    ) -> torch.Tensor:
        """Sliding-window logits over whole images: ``(B, C, *spatial)`` → ``(B, K, *spatial)``.

        Args:
            image: whole images.
            ctx: device and precision.
            flip: tensor dims flipped in every window before the network and back after.
        """
        flip = list(flip)

        def flipped(windows: torch.Tensor) -> torch.Tensor:
            if not flip:
                return self.forward(windows)
            return torch.flip(self.forward(torch.flip(windows, flip)), flip)

        # valid convolutions shrink the window; the 2D network's size is not the 3D window's
        network = self.modules["network"]
        size = getattr(network, "output_size", None) if self.slice_axis is None else None
        return self.windowed.run(flipped, image, ctx, output_size=size)

    def sample_probabilities(
        self, image: torch.Tensor, ctx: TrainingContext, options: InferenceConfig
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean softmax over flip-TTA / Monte-Carlo dropout samples and the uncertainty map.

        Without ``options.flip_tta`` and ``options.mc_samples`` this is the plain softmax.

        Args:
            image: whole images.
            ctx: device and precision.
            options: the inference config (``flip_tta``, ``mc_samples``, ``uncertainty``, ``seed``).

        Returns:
            ``(probabilities (B, K, *spatial), uncertainty (B, 1, *spatial) or None)``.

        Raises:
            ConfigError: see :func:`check_inference_options`.
        """
        network = self.modules["network"]
        check_inference_options(options, network)
        mc_samples = int(getattr(options, "mc_samples", 0) or 0)
        flips = (
            flip_combinations(image.ndim - 2, skip=self.slice_axis) if options.flip_tta else [()]
        )
        moments = SoftmaxMoments(class_dim=1, squares=options.uncertainty == "variance")
        with seeded(int(options.seed), ctx.device):
            for _ in range(max(mc_samples, 1)):
                with active_dropout(network) if mc_samples else contextlib.nullcontext():
                    for flip in flips:
                        moments.add(torch.softmax(self.predict_scores(image, ctx, flip=flip), 1))
        uncertainty = None
        if options.uncertainty != "none":
            uncertainty = moments.uncertainty(options.uncertainty)
        return moments.mean(), uncertainty

    def validation_step(self, subject: CachedSubject, ctx: TrainingContext) -> dict[str, float]:
        """Metrics of one whole cached subject (``arrays['image']``, ``arrays['label']``, ``affine``)."""
        from voxelflow.metrics.segmentation import segmentation_metrics

        image = torch.from_numpy(np.array(subject.arrays["image"], dtype=np.float32))[None]
        prediction = self.predict_scores(image, ctx).argmax(dim=1)[0].cpu().numpy()
        reference = np.asarray(subject.arrays["label"])[0]
        spacing = np.linalg.norm(np.asarray(subject.affine)[:3, :3], axis=0)[: reference.ndim]
        per_class = segmentation_metrics(
            prediction,
            reference,
            labels=list(range(1, self.num_classes)),
            spacing=spacing,
            metrics=self.metrics,
            tolerance=self.tolerance_mm,
        )
        return _summarise(per_class, self.metrics)

    def infer_step(self, batch: Mapping[str, Any], ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """Class probabilities of whole images. Shape: ``image (B, C, *spatial)`` → ``(B, K, *spatial)``."""
        return {"probabilities": torch.softmax(self.predict_scores(batch["image"], ctx), dim=1)}

    def predict(self, item: InferenceItem, ctx: TrainingContext, options: InferenceConfig) -> Prediction:
        """Label map (optionally probabilities and uncertainty) of one subject in its original geometry.

        Class probabilities (the mean over flip-TTA / Monte-Carlo samples when asked) are mapped
        back onto the original grid (un-crop, resample, un-reorient) *before* the argmax, then
        class indices become the original label values and the configured postprocessing runs.
        The uncertainty map is computed on the network's grid and mapped back linearly (0
        outside a foreground crop).
        """
        from voxelflow.io.image import Image

        image = item.processed["image"]
        with torch.no_grad():
            scores, uncertainty = self.sample_probabilities(image.data[None].float(), ctx, options)
        back = _to_original(scores[0], image.affine, item.record)
        label = self.decode(back.data[None])[0].to(torch.int16)
        source = item.original["image"]
        label = _postprocess(label, options, source.spacing)
        images = {"seg": Image(label, source.affine.copy(), kind="label", meta=dict(source.meta))}
        if options.save_probabilities:
            images["prob"] = Image(back.data.float(), source.affine.copy())
        if uncertainty is not None:
            mapped = _to_original(uncertainty[0], image.affine, item.record)
            images["uncertainty"] = Image(mapped.data.float(), source.affine.copy())
        return Prediction(item.name, images)

    def decode(self, scores: torch.Tensor) -> torch.Tensor:
        """Label values (not class indices) of the argmax. Shape: ``(B, K, *spatial)`` → ``(B, 1, *spatial)``."""
        lookup = torch.as_tensor(self.label_values, device=scores.device)
        return lookup[scores.argmax(dim=1, keepdim=True)]

    @classmethod
    def network_check(cls, experiment: ExperimentConfig) -> tuple[int, list[int]] | None:
        """The class count (from the config, else 2) and the window without its slice axis."""
        window = [int(size) for size in experiment.sampling.window]
        axis = slice_axis_of(window)
        classes = experiment.num_classes or len(experiment.preprocessing.label_values or []) or 2
        return classes, [size for index, size in enumerate(window) if index != axis]

    @classmethod
    def cross_validation_metric(cls, experiment: ExperimentConfig) -> tuple[str, bool, str] | None:
        """Mean foreground Dice."""
        return ("dice", True, "dice")

    @classmethod
    def evaluate(
        cls,
        experiment: ExperimentConfig,
        *,
        predictions: Path,
        rows: Sequence[Any],
        out_dir: Path,
        options: EvaluationOptions | None = None,
    ) -> dict[str, float]:
        """Overlap, surface and region metrics per subject and label; see
        :func:`voxelflow.applications.segmentation.evaluation.evaluate_run`."""
        from voxelflow.applications.segmentation.evaluation import evaluate_run

        return evaluate_run(experiment, Path(predictions), rows, Path(out_dir), options)

    @classmethod
    def evaluation_table(
        cls,
        experiment: ExperimentConfig,
        predictions: Mapping[str, Image] | Path,
        references: Mapping[str, Image] | Path,
        *,
        out_dir: Path | None = None,
        options: EvaluationOptions | None = None,
    ) -> list[dict[str, Any]]:
        """One row per subject and label (folders of label maps, or in-memory label images)."""
        from voxelflow.applications.segmentation.evaluation import evaluation_rows

        return evaluation_rows(experiment, predictions, references, out_dir, options)

    @classmethod
    def evaluate_pairs(
        cls,
        experiment: ExperimentConfig,
        predictions: Mapping[str, Path],
        references: Mapping[str, Path],
        out_dir: Path,
    ) -> bool | None:
        """The label-map evaluation of :func:`voxelflow.metrics.evaluate.evaluate_files` (one
        process), with the config's labels, metrics and tolerance."""
        from voxelflow.metrics.evaluate import evaluate_files

        evaluation = experiment.evaluation
        result = evaluate_files(
            predictions, references, out_dir, labels=evaluation.labels,
            metrics=list(evaluation.metrics), tolerance=evaluation.tolerance_mm, workers=1,
        )  # fmt: skip
        return result.ok

    @classmethod
    def postprocess_decision(cls, run_dir: Path) -> dict[str, Any] | None:
        """``<run_dir>/cv/postprocessing.json`` written by ``voxelflow cv``, or None."""
        return read_decision(run_dir)

    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        images = {"input": batch["image"][0], "label": batch["label"][0].float()}
        if self._last_logits is not None:
            images["prediction"] = self._last_logits[0].argmax(dim=0, keepdim=True).float()
        return images

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        example = batch["image"][:1]
        if self.slice_axis is not None:
            example = example.squeeze(2 + self.slice_axis)
        return "network", example

    def state_dict(self) -> dict[str, Any]:
        return {"label_values": list(self.label_values), "num_classes": self.num_classes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes:
            raise ConfigError(
                f"checkpoint: expected {self.num_classes} classes, got {state['num_classes']}"
            )
        self.label_values = list(state["label_values"])


def _to_original(data: torch.Tensor, affine: np.ndarray, record: dict[str, Any]) -> Any:
    """An image on the network's grid ``(C, *spatial)`` mapped back to the original grid (linear)."""
    from voxelflow.io.image import Image
    from voxelflow.sampling.progress import timed_stage
    from voxelflow.transforms.preprocess import invert

    with timed_stage("invert"):  # inferred.csv's seconds_invert
        return invert(Image(data.cpu(), affine.copy()), record, kind="intensity", map_labels=False)


def _postprocess(label: torch.Tensor, options: InferenceConfig, spacing: Sequence[float]) -> torch.Tensor:
    """Largest component / minimum volume / hole filling, as ``options`` (inference config) asks."""
    from voxelflow.applications.segmentation.postprocess import postprocess_labels

    if not (
        options.keep_largest_component or options.min_component_volume_mm3 or options.fill_holes
    ):
        return label
    cleaned = postprocess_labels(
        label.numpy(),
        keep_largest=options.keep_largest_component,
        min_volume_mm3=options.min_component_volume_mm3,
        fill_holes=options.fill_holes,
        spacing=spacing,
    )
    return torch.from_numpy(cleaned)


def _summarise(
    per_class: Mapping[int, Mapping[str, float]], metrics: Sequence[str]
) -> dict[str, float]:
    """Per-class metrics as ``{"dice": mean over classes (NaN left out), "dice/1": ...}``."""
    summary: dict[str, float] = {}
    for name in metrics:
        values = [
            float(per_class[label][name]) for label in sorted(per_class) if name in per_class[label]
        ]
        for label, value in zip(sorted(per_class), values):
            summary[f"{name}/{label}"] = value
        finite = [value for value in values if not math.isnan(value)]
        summary[name] = sum(finite) / len(finite) if finite else math.nan
    return summary
