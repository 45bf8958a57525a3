"""Segmentation: image → class scores, trained on windows, validated on whole subjects.

Training batches hold ``image`` ``(B, C, *window)`` and ``label`` class indices
``(B, 1, *window)`` (labels were mapped to ``0..K-1`` by preprocessing). Validation runs
sliding-window inference over each whole cached subject, takes the argmax and computes the
configured metrics per foreground class with :func:`voxelflow.metrics.segmentation.segmentation_metrics`
(spacing from the subject's affine); each metric is reported as its mean over classes
(``dice``) and per class (``dice/1``).

Example:
    >>> app = SegmentationApplication(network, build_loss("dice_ce"), num_classes=3, window=(16, 16, 16))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from voxelflow.applications.base import Application, InferenceItem, Prediction, TrainingContext
from voxelflow.errors import ConfigError, ShapeError


class SegmentationApplication(Application):
    """Per-voxel classification into ``num_classes`` classes.

    Args:
        network: maps ``(B, C_in, *window)`` to logits ``(B, num_classes, *window)``.
        loss: takes ``(logits, target indices)`` and returns a scalar.
        num_classes: number of classes including background.
        window: inference window for validation (0 or -1 = whole axis).
        overlap: sliding-window overlap fraction.
        blend: ``gaussian``, ``mean`` or ``crop``.
        inference_batch_size: windows per network call at validation.
        metrics: metric names (``dice``, ``hd95``, ``assd``, ``nsd`` ...).
        tolerance_mm: NSD tolerance.
        label_values: label value of each class (saved with checkpoints, used to write outputs).
    """

    name = "segmentation"

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
    ) -> None:
        super().__init__({"network": network})
        if num_classes < 2:
            raise ConfigError(
                f"num_classes: expected at least 2 (background + one class), got {num_classes}"
            )
        self.loss, self.num_classes = loss, num_classes
        self.window, self.overlap, self.blend = list(window), overlap, blend
        self.inference_batch_size, self.metrics, self.tolerance_mm = (
            inference_batch_size,
            list(metrics),
            tolerance_mm,
        )
        self.label_values = (
            list(label_values) if label_values is not None else list(range(num_classes))
        )
        if len(self.label_values) != num_classes:
            raise ConfigError(
                f"label_values: expected {num_classes} values, got {self.label_values}"
            )
        self._last_logits: torch.Tensor | None = None
        self.flip_tta = False  # set by inference (inference.flip_tta); validation stays plain

    @classmethod
    def from_experiment(
        cls,
        experiment: Any,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> SegmentationApplication:
        """Build network and loss from an :class:`~voxelflow.config.schema.Experiment`."""
        from voxelflow.losses import build_loss
        from voxelflow.networks import build_network

        if experiment.task:
            raise ConfigError(
                f"task.{next(iter(experiment.task))}: segmentation takes no task options, "
                f"got {sorted(experiment.task)}"
            )

        num_classes = experiment.num_classes or (
            len(label_values) if label_values is not None else None
        )
        if num_classes is None:
            raise ConfigError(
                "num_classes: expected a value or label values from the training split, got neither"
            )
        window = experiment.inference.window or experiment.sampling.window
        network = build_network(
            experiment.network,
            spatial_dims=len(window),
            in_channels=in_channels,
            out_channels=num_classes,
        )
        return cls(
            network,
            build_loss(experiment.loss.name, **experiment.loss.kwargs),
            num_classes=num_classes,
            window=window,
            overlap=experiment.inference.overlap,
            blend=experiment.inference.blend,
            inference_batch_size=experiment.inference.batch_size,
            metrics=[m for m in experiment.evaluation.metrics],
            tolerance_mm=experiment.evaluation.tolerance_mm,
            label_values=label_values,
        )

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Shape: ``image (B, C, *window)``, ``label (B, 1, *window)`` → scalar ``loss``."""
        logits = self.modules["network"](batch["image"])
        label = batch["label"]
        if logits.shape[2:] != label.shape[2:]:
            raise ShapeError(
                f"expected network output window {tuple(label.shape[2:])} (the label window), got {tuple(logits.shape[2:])}"
            )
        self._last_logits = logits.detach()
        return {"loss": self.loss(logits, label.long())}

    def predict_scores(self, image: torch.Tensor, ctx: TrainingContext) -> torch.Tensor:
        """Sliding-window logits over whole images: ``(B, C, *spatial)`` → ``(B, K, *spatial)``."""
        from voxelflow.sampling.grid import sliding_window

        network = self.modules["network"]

        def run(windows: torch.Tensor) -> torch.Tensor:
            with ctx.autocast():
                return network(windows).float()

        return sliding_window(
            run,
            image.to(ctx.device),
            self.window,
            overlap=self.overlap,
            blend=self.blend,
            batch_size=self.inference_batch_size,
            device=ctx.device,
            flip_tta=self.flip_tta,
        )

    def validation_step(self, subject: Any, ctx: TrainingContext) -> dict[str, float]:
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

    def predict(self, item: InferenceItem, ctx: TrainingContext, options: Any) -> Prediction:
        """Label map (and optionally probabilities) of one subject in its original geometry.

        Class probabilities are mapped back onto the original grid (un-crop, resample,
        un-reorient) *before* the argmax, then class indices become the original label values
        and the configured postprocessing runs.
        """
        from voxelflow.io.image import Image
        from voxelflow.transforms.preprocess import invert

        image = item.processed["image"]
        with torch.no_grad():
            scores = self.infer_step({"image": image.data[None].float()}, ctx)["probabilities"]
        back = invert(Image(scores[0].cpu(), image.affine.copy()), item.record, kind="intensity",
                      map_labels=False)
        label = self.decode(back.data[None])[0].to(torch.int16)
        source = item.original["image"]
        label = _postprocess(label, options, source.spacing)
        images = {"seg": Image(label, source.affine.copy(), kind="label", meta=dict(source.meta))}
        if options.save_probabilities:
            images["prob"] = Image(back.data.float(), source.affine.copy())
        return Prediction(item.name, images)

    def decode(self, scores: torch.Tensor) -> torch.Tensor:
        """Label values (not class indices) of the argmax. Shape: ``(B, K, *spatial)`` → ``(B, 1, *spatial)``."""
        lookup = torch.as_tensor(self.label_values, device=scores.device)
        return lookup[scores.argmax(dim=1, keepdim=True)]

    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        images = {"input": batch["image"][0], "label": batch["label"][0].float()}
        if self._last_logits is not None:
            images["prediction"] = self._last_logits[0].argmax(dim=0, keepdim=True).float()
        return images

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        return "network", batch["image"][:1]

    def state_dict(self) -> dict[str, Any]:
        return {"label_values": list(self.label_values), "num_classes": self.num_classes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes:
            raise ConfigError(
                f"checkpoint: expected {self.num_classes} classes, got {state['num_classes']}"
            )
        self.label_values = list(state["label_values"])


def _postprocess(label: torch.Tensor, options: Any, spacing: Sequence[float]) -> torch.Tensor:
    """Largest component / minimum volume / hole filling, as ``options`` (inference config) asks."""
    from voxelflow.applications.postprocess import postprocess_labels

    if not (options.keep_largest_component or options.min_component_volume_mm3 or options.fill_holes):
        return label
    cleaned = postprocess_labels(
        label.numpy(), keep_largest=options.keep_largest_component,
        min_volume_mm3=options.min_component_volume_mm3, fill_holes=options.fill_holes,
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
