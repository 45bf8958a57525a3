"""Classification and image-level regression: one class (or one value) per image.

The target is a table column (``task.target_column``), not an image. ``task.kind: class``:
class names found in the training split are sorted (as numbers when every name is a number)
and mapped to indices ``0..K-1``; the network outputs logits ``(B, K)`` trained with
``classification_ce`` or ``classification_focal``. ``task.kind: value``: targets are
standardised with the training split's mean and standard deviation; the network outputs
``(B, 1)`` trained with ``l1``, ``l2``, ``rmse``, ``huber`` or ``smooth_l1``, and predictions are
mapped back to the column's units. The fitted names / statistics are the run's task state
(``preprocessing.json`` under ``"task"``).

Training windows come from the ``resize`` sampler (the whole image resized to the window) or a
cropping sampler (``uniform`` ...). Inference (and validation) takes the same view of each
image: one resized window, or a grid of windows over the whole image (``inference.overlap``)
whose class probabilities (or values) are averaged. ``task.class_balanced`` draws training
subjects with probability ∝ 1 / frequency of their class.

Example config::

    application: classification
    dataset: {csv: subjects.csv, inputs: {image: [t1]}}
    task: {target_column: sex, kind: class, class_balanced: true}
    network: {name: resnet, features: [16, 32, 64, 128]}
    loss: {name: classification_ce}
    sampling: {sampler: {name: resize}, window: [64, 64, 64]}
"""

from __future__ import annotations

import logging
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
from voxelflow.applications.classification.task import (
    ClassificationTask,
    TargetEncoding,
    fit_class_names,
    fit_value_statistics,
    target_cell,
)
from voxelflow.applications.common import WindowedInference
from voxelflow.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig, InferenceConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.data.dataset import PreprocessedDataset

log = logging.getLogger(__name__)

CLASS_LOSSES = ("classification_ce", "classification_focal")
VALUE_LOSSES = ("l1", "l2", "rmse", "huber", "smooth_l1")


class ClassificationApplication(Application):
    """Image → class probabilities ``(K,)`` or one value per subject.

    Args:
        network: maps ``(B, C, *window)`` to ``(B, K)`` (``K = 1`` for values).
        loss: ``loss(output, target)``: target class indices ``(B,)`` or standardised values
            ``(B, 1)``.
        encoding: the fitted target encoding (class names or mean/std).
        window: network input window (``0``/``-1`` = whole axis).
        resize: whole images resized to ``window`` (else a grid of windows, averaged).
        overlap: grid overlap fraction (``resize=False``).
        batch_size: windows per network call at inference.
        class_balanced: weight training subjects by 1 / class frequency.

    Shape:
        batch ``image (B, C, *window)``, ``target (B,)`` (classes) or ``(B, 1)`` (values).
    """

    name = "classification"
    task_model = ClassificationTask
    per_subject_table = "per_subject.csv"
    prediction_table = "predictions.csv"
    inference_modes = ("predict",)
    ensemble_mode = "class_probabilities"
    output_column = "prediction"
    planning = PlanningRules(
        network="template",
        from_dataset="the target column is not in a dataset; plan with -c CONFIG (its task "
        "section names it)",
    )

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        *,
        encoding: TargetEncoding,
        window: Sequence[int],
        resize: bool = True,
        overlap: float = 0.5,
        batch_size: int = 4,
        class_balanced: bool = False,
    ) -> None:
        super().__init__({"network": network})
        self.loss, self.encoding = loss, encoding
        self.window, self.resize, self.overlap = tuple(int(w) for w in window), resize, overlap
        self.batch_size, self.class_balanced = int(batch_size), class_balanced
        self._last_output: torch.Tensor | None = None

    @property
    def num_outputs(self) -> int:
        """Network outputs: the number of classes, or 1 for values."""
        return len(self.encoding.classes) if self.encoding.kind == "class" else 1

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def fit_task(
        cls, experiment: ExperimentConfig, dataset: PreprocessedDataset, train_indices: Sequence[int]
    ) -> dict[str, Any]:
        """Class names (sorted) or target mean/std from the training rows of the table.

        Raises:
            DataError: training subjects without a target (all listed), values that are not
                numbers (``kind: value``), a class of another subject unseen in training.
        """
        task = ClassificationTask.from_config(experiment.task)
        rows = list(dataset.rows)
        training = [rows[i] for i in train_indices]
        if task.kind == "class":
            classes = fit_class_names(training, task.target_column, configured=task.classes)
            encoding = TargetEncoding(task.target_column, "class", classes=tuple(classes))
            for row in rows:  # validation/test subjects: refuse unseen classes before training
                value = target_cell(row, task.target_column)
                if value is not None:
                    encoding.encode(value, subject=row.name)
            return encoding.state()
        mean, std = fit_value_statistics(training, task.target_column)
        return TargetEncoding(task.target_column, "value", mean=mean, std=std).state()

    @classmethod
    def from_experiment(
        cls,
        experiment: ExperimentConfig,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> ClassificationApplication:
        """Network and loss from the Experiment; target encoding from the fitted task state."""
        from voxelflow.config.build import build_loss, build_network

        task = ClassificationTask.from_config(experiment.task)
        encoding = _encoding_for(task, task_state)
        _check_loss_name(experiment.loss.name, task.kind)
        outputs = len(encoding.classes) if task.kind == "class" else 1
        if task.kind == "class" and experiment.num_classes not in (None, outputs):
            raise ConfigError(
                f"num_classes: expected {outputs} (classes {list(encoding.classes)}), "
                f"got {experiment.num_classes}"
            )
        windowed = WindowedInference.from_experiment(experiment)  # windows: no blending
        network = build_network(
            experiment.network,
            spatial_dims=len(windowed.window),
            in_channels=in_channels,
            out_channels=outputs,
        )
        return cls(
            network,
            build_loss(experiment.loss),
            encoding=encoding,
            window=windowed.window,
            resize=experiment.sampling.sampler.name == "resize",
            overlap=windowed.overlap,
            batch_size=windowed.batch_size,
            class_balanced=task.class_balanced,
        )

    def window_fields(self) -> TargetEncoding:
        """The encoding itself: ``CachedSubject -> {"target": tensor}``."""
        return self.encoding

    def subject_weights(self, fields: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """``1 / count(class)`` per training subject when ``task.class_balanced``, else None."""
        if not self.class_balanced:
            return None
        indices = [
            self.encoding.encode(f.get(self.encoding.column), subject=str(f.get("subject", i)))
            for i, f in enumerate(fields)
        ]
        counts = np.bincount(indices, minlength=self.num_outputs)
        return [1.0 / float(counts[index]) for index in indices]

    # --- training -----------------------------------------------------------------------------
    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Shape: ``image (B, C, *window)`` → output ``(B, K)``; ``target`` ``(B,)`` or ``(B, 1)``."""
        output = self.modules["network"](batch["image"])
        self._check_output(output, batch["image"].shape[0])
        target = batch["target"]
        loss = self.loss(output, target)
        self._last_output = output.detach()
        terms = {"loss": loss}
        if self.encoding.kind == "class":
            terms["accuracy"] = (output.detach().argmax(dim=1) == target).float().mean()
        return terms

    def _check_output(self, output: torch.Tensor, batch: int) -> None:
        if tuple(output.shape) != (batch, self.num_outputs):
            raise ShapeError(
                f"expected network output (B, K) = ({batch}, {self.num_outputs}), got "
                f"{tuple(output.shape)}: use a classifier network (resnet, se_resnet, densenet)"
            )

    # --- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_output(self, image: torch.Tensor, ctx: TrainingContext) -> torch.Tensor:
        """Class probabilities ``(K,)`` or the standardised value ``(1,)`` of one image,
        averaged over its windows.

        Shape:
            image: ``(C, *spatial)`` on the preprocessed grid.
        """
        from voxelflow.applications.classification.task import image_windows

        network, outputs = self.modules["network"], []
        for windows in image_windows(
            image, self.window, resize=self.resize, overlap=self.overlap, batch_size=self.batch_size
        ):
            with ctx.autocast():
                output = network(windows.to(ctx.device)).float()
            self._check_output(output, windows.shape[0])
            outputs.append(
                torch.softmax(output, dim=1) if self.encoding.kind == "class" else output
            )
        return torch.cat(outputs).mean(dim=0).cpu()

    def validation_step(self, subject: CachedSubject, ctx: TrainingContext) -> dict[str, float]:
        """``accuracy`` and ``nll`` (classes), or ``mae`` and ``mse`` in target units (values)."""
        value = target_cell(subject, self.encoding.column)
        if value is None:
            return {}
        image = torch.from_numpy(np.array(subject.arrays["image"], dtype=np.float32))
        output = self.predict_output(image, ctx)
        if self.encoding.kind == "class":
            index = self.encoding.encode(value, subject=subject.name)
            probability = max(float(output[index]), 1e-12)
            return {"accuracy": float(int(output.argmax()) == index), "nll": -math.log(probability)}
        error = self.encoding.decode_value(float(output[0])) - self.encoding.parse_value(
            value, subject=subject.name
        )
        return {"mae": abs(error), "mse": error * error}

    def predict(self, item: InferenceItem, ctx: TrainingContext, options: InferenceConfig) -> Prediction:
        """One table row: ``prediction`` (class name or value) and ``prob_<class>`` columns.

        Raises:
            DataError: the row holds a reference class that training never saw.
        """
        reference = target_cell(item, self.encoding.column)
        if reference is not None and self.encoding.kind == "class":
            self.encoding.encode(reference, subject=item.name)
        output = self.predict_output(item.processed["image"].data.float(), ctx)
        if self.encoding.kind == "value":
            return Prediction(
                item.name, values={"prediction": self.encoding.decode_value(float(output[0]))}
            )
        values: dict[str, Any] = {"prediction": self.encoding.classes[int(output.argmax())]}
        values.update(
            {f"prob_{name}": round(float(p), 6) for name, p in zip(self.encoding.classes, output)}
        )
        return Prediction(item.name, values=values)

    @classmethod
    def cross_validation_metric(cls, experiment: ExperimentConfig) -> tuple[str, bool, str] | None:
        """Balanced accuracy (classes; a subject is right or wrong), or MAE (values)."""
        if ClassificationTask.from_config(experiment.task).kind == "value":
            return ("mae", False, "abs_error")
        return ("balanced_accuracy", True, "correct")

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
        """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix, ROC AUC
        and ECE (classes), or MAE, RMSE, mean error and Pearson r (values); see
        :func:`voxelflow.applications.classification.evaluation.evaluate_predictions`."""
        from voxelflow.applications.classification.evaluation import evaluate_predictions

        task = ClassificationTask.from_config(experiment.task)
        return evaluate_predictions(
            predictions, rows, out_dir=out_dir, column=task.target_column, kind=task.kind
        )

    # --- logging and state --------------------------------------------------------------------
    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {"input": batch["image"][0]}

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        return "network", batch["image"][:1]

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.encoding.state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("task")
        if saved is not None and dict(saved) != self.encoding.state():
            raise ConfigError(
                f"checkpoint: expected the task state {self.encoding.state()}, got {dict(saved)} "
                "(the checkpoint was trained with other classes or target statistics)"
            )


def _encoding_for(task: ClassificationTask, state: Mapping[str, Any] | None) -> TargetEncoding:
    """The fitted encoding, checked against the config's task options."""
    if not state:
        raise ConfigError(
            "task: expected the fitted task state (class names or target mean/std, saved in "
            "the run's preprocessing.json under 'task'), got none"
        )
    encoding = TargetEncoding.from_state(state)
    if encoding.kind != task.kind or encoding.column != task.target_column:
        raise ConfigError(
            f"task: expected kind {task.kind!r} and target_column {task.target_column!r} as the "
            f"run was fitted, got kind {encoding.kind!r} and column {encoding.column!r} in its state"
        )
    return encoding


def _check_loss_name(name: str, kind: str) -> None:
    """Refuse a loss of the other kind (plugin paths ``pkg.mod:Name`` are trusted)."""
    allowed = CLASS_LOSSES if kind == "class" else VALUE_LOSSES
    if ":" not in name and name not in allowed:
        raise ConfigError(
            f"loss.name: expected one of {list(allowed)} for task.kind {kind!r}, got {name!r}"
        )
