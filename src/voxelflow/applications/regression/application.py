"""Image regression (image → image: MR → CT, denoising, probability maps) and super-resolution.

Regression: ``dataset.inputs`` holds the input ``image`` role and the continuous ``target`` role
(one channel per target column). Targets are standardised with the mean and standard deviation
of the training targets (:meth:`RegressionApplication.fit_task`, saved in ``preprocessing.json``)
and restored at inference, so outputs are in the target's units; inputs are normalised by the
usual preprocessing. The loss (``l1``, ``l2``, ``rmse``, ``huber``, ``smooth_l1``) ignores
``task.loss_border`` voxels at each window edge and, with ``task.mask_role``, voxels outside a
mask. Inference runs the network over a sliding window with blending and maps the output back
onto the input's original grid (:func:`voxelflow.transforms.preprocess.invert`);
``inference.error_maps`` also writes ``|prediction − target|`` where the row has a target.

Super-resolution (``task.degrade: {factor: [2, 2, 2]}``): the ``image`` role is the
high-resolution target itself (kept in its units: ``preprocessing.normalization: []``), and the
network input is that image degraded on the fly (:func:`voxelflow.applications.regression.degrade.degrade`:
average-pooled by the factor, upsampled back linearly). Inference modes:

* ``degrade`` (default): each held-out high-resolution image is degraded the same way, the network
  restores it; writes ``<id>_pred`` and the linearly upsampled input ``<id>_input`` (the baseline),
  so that ``voxelflow evaluate`` scores both against the original image;
* ``predict``: the image is already a low-resolution input resampled onto the output grid
  (e.g. linearly); it is fed as is (no reference: nothing to evaluate).

Example:
    >>> app = RegressionApplication(network, build_loss("l1"), window=(32, 32, 32))  # doctest: +SKIP
"""

from __future__ import annotations

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
from voxelflow.applications.regression.degrade import DegradeSettings, degrade
from voxelflow.applications.regression.task import (
    RegressionTask,
    TargetScaling,
    fit_target_scaling,
)
from voxelflow.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig, InferenceConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.data.dataset import PreprocessedDataset
    from voxelflow.io.image import Image

REGRESSION_LOSSES = ("l1", "l2", "rmse", "huber", "smooth_l1")
VALIDATION_METRICS = ("mae", "rmse", "psnr")


class RegressionApplication(Application):
    """Voxel-wise regression of a continuous image, or super-resolution with ``degrade``.

    Args:
        network: maps ``(B, C_in, *window)`` to ``(B, C_out, *window)`` (linear output).
        loss: regression loss ``loss(prediction, target, weight=None) -> scalar``.
        window: sliding-window size at validation and inference (0 or -1 = whole axis).
        overlap: sliding-window overlap fraction.
        blend: ``gaussian``, ``mean`` or ``crop``.
        inference_batch_size: windows per network call at inference.
        accumulate: ``"float32"`` or ``"float16"``: the sliding window's blending dtype.
        loss_border: voxels ignored at each window edge, per axis.
        mask_role: role restricting loss and metrics to its non-zero voxels, or None.
        scaling: target standardisation (identity by default).
        residual: wrap the network in :class:`ResidualCorrection` (needs ``C_in == C_out``).
        degrade: super-resolution degradation; None for plain regression.
    """

    name = "regression"
    task_model = RegressionTask
    per_subject_table = "regression_metrics.csv"
    summary_table = "regression_summary.csv"
    reference_role = "target"
    ensemble_mode = "image"
    dense_output = True
    planning = PlanningRules(network="unet")

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        *,
        window: Sequence[int],
        overlap: float = 0.5,
        blend: str = "gaussian",
        inference_batch_size: int = 4,
        loss_border: Sequence[int] | None = None,
        mask_role: str | None = None,
        scaling: TargetScaling | None = None,
        residual: bool = False,
        degrade: DegradeSettings | None = None,
        accumulate: str = "float32",
    ) -> None:
        super().__init__({"network": ResidualCorrection(network) if residual else network})
        self.loss = loss
        self.windowed = WindowedInference(
            tuple(window), overlap, blend, inference_batch_size, accumulate
        )
        self.loss_border = list(loss_border) if loss_border else [0] * len(self.windowed.window)
        self.mask_role, self.residual, self.degrade = mask_role, residual, degrade
        self.scaling = scaling or TargetScaling()
        #: role holding the reference values: the target, or the high-resolution image itself.
        self.reference_role = "image" if degrade is not None else "target"
        self.inference_modes = ("degrade", "predict") if degrade is not None else ("predict",)
        self._last: dict[str, torch.Tensor] = {}

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def fit_task(
        cls, experiment: ExperimentConfig, dataset: PreprocessedDataset, train_indices: Sequence[int]
    ) -> dict[str, Any]:
        """Mean and standard deviation per channel of the training targets (``task.standardize``)."""
        task = RegressionTask.from_config(experiment.task)
        if not task.standardize:
            return {}
        role = "image" if task.degrade is not None else "target"
        _check_roles(experiment, task)
        scaling = fit_target_scaling(dataset, train_indices, role=role, mask_role=task.mask_role)
        return {"role": role, **scaling.as_dict()}

    @classmethod
    def from_experiment(
        cls,
        experiment: ExperimentConfig,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> RegressionApplication:
        """Network, loss and options from an Experiment and the fitted target statistics.

        Raises:
            ConfigError: bad ``task`` options, a missing ``target`` role, a loss that is not a
                regression loss, normalised images for super-resolution.
        """
        from voxelflow.config.build import build_loss, build_network

        task = RegressionTask.from_config(experiment.task)
        _check_roles(experiment, task)
        _check_loss(experiment.loss.name)
        windowed = WindowedInference.from_experiment(experiment)
        window = windowed.window
        reference = "image" if task.degrade is not None else "target"
        out_channels = len(experiment.dataset.inputs[reference])
        if task.residual and out_channels != in_channels:
            raise ConfigError(
                f"task.residual: expected as many input as output channels, got {in_channels} "
                f"input and {out_channels} target channels"
            )
        if task.degrade is not None:
            task.degrade.factors(len(window))  # checks the factor list length
        network = build_network(
            experiment.network,
            spatial_dims=len(window),
            in_channels=in_channels,
            out_channels=out_channels,
        )
        return cls(
            network,
            build_loss(experiment.loss),
            **windowed.as_keywords(),
            loss_border=task.borders(experiment.sampling.window),
            mask_role=task.mask_role,
            scaling=TargetScaling.from_state(task_state),
            residual=task.residual,
            degrade=task.degrade,
        )

    # --- training -----------------------------------------------------------------------------
    def network_input(self, image: torch.Tensor) -> torch.Tensor:
        """What the network sees: the image, or the standardised image degraded (super-resolution).

        Shape: ``(B, C, *spatial)`` → ``(B, C, *spatial)``.
        """
        if self.degrade is None:
            return image.float()
        standardized = self.scaling.standardize(image.float())
        return degrade(standardized, factor=self.degrade.factor, upsample=self.degrade.upsample)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Network output in standardised target units (``residual``: input + gain · correction)."""
        return self.modules["network"](inputs)

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Shape: ``image (B, C, *window)``, ``target (B, C_out, *window)`` → scalar ``loss``."""
        inputs = self.network_input(batch["image"])
        target = self.scaling.standardize(batch[self.reference_role].float())
        output = self.forward(inputs)
        target = _center_crop(target, output.shape[2:], what="target")
        mask = batch.get(self.mask_role) if self.mask_role else None
        if mask is not None:
            mask = (_center_crop(mask, output.shape[2:], what=str(self.mask_role)) != 0).float()
        edges = [
            slice(None),
            slice(None),
            *(slice(b, s - b) for b, s in zip(self.loss_border, output.shape[2:])),
        ]
        weight = mask[tuple(edges)] if mask is not None else None
        loss = self.loss(output[tuple(edges)], target[tuple(edges)], weight)
        self._last = {"input": inputs.detach(), "output": output.detach(), "target": target}
        return {"loss": loss}

    # --- inference ----------------------------------------------------------------------------
    def predict_standardized(self, inputs: torch.Tensor, ctx: TrainingContext) -> torch.Tensor:
        """Sliding-window output over whole images, in standardised units.

        Shape: ``(B, C_in, *spatial)`` → ``(B, C_out, *spatial)``.
        """
        return self.windowed.run(self.forward, inputs, ctx)

    def infer_step(self, batch: Mapping[str, Any], ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """Prediction in target units of whole (preprocessed) images, and the network input.

        Shape: ``image (B, C, *spatial)`` → ``prediction (B, C_out, *spatial)``.
        """
        inputs = self.network_input(batch["image"])
        prediction = self.scaling.restore(self.predict_standardized(inputs, ctx).cpu())
        return {"prediction": prediction, "input": inputs.cpu()}

    def validation_step(self, subject: CachedSubject, ctx: TrainingContext) -> dict[str, float]:
        """MAE, RMSE and PSNR (target units; data range of the reference) of one whole subject.

        Super-resolution adds ``baseline_mae``/``baseline_rmse``/``baseline_psnr``: the degraded
        (linearly upsampled) input against the same reference.
        """
        from voxelflow.applications.regression.evaluation import image_metrics

        image = torch.from_numpy(np.array(subject.arrays["image"], dtype=np.float32))[None]
        outputs = self.infer_step({"image": image}, ctx)
        reference = np.asarray(subject.arrays[self.reference_role], dtype=np.float32)
        mask = _mask_of(subject.arrays.get(self.mask_role) if self.mask_role else None)
        scores = image_metrics(outputs["prediction"][0].numpy(), reference, mask=mask, ssim=False)
        metrics = {key: scores[key] for key in VALIDATION_METRICS}
        if self.degrade is not None:
            baseline = self.scaling.restore(outputs["input"])[0].numpy()
            scores = image_metrics(baseline, reference, mask=mask, ssim=False)
            metrics.update({f"baseline_{key}": scores[key] for key in VALIDATION_METRICS})
        return metrics

    def predict(self, item: InferenceItem, ctx: TrainingContext, options: InferenceConfig) -> Prediction:
        """Prediction of one subject in its original geometry and the target's units.

        Writes ``pred``; ``input`` (the degraded, linearly upsampled image) in ``degrade`` mode;
        ``error`` = ``|pred − reference|`` with ``inference.error_maps`` when a reference exists.
        """
        mode = options.mode or self.inference_modes[0]
        image = item.processed["image"]
        data = image.data[None].float()
        if mode == "predict" and self.degrade is not None:  # input already low-resolution
            outputs = self._predict_given_input(self.scaling.standardize(data), ctx)
        else:
            outputs = self.infer_step({"image": data}, ctx)
        images = {"pred": self._to_original(outputs["prediction"][0], image.affine, item.record)}
        if mode == "degrade":
            baseline = self.scaling.restore(outputs["input"])[0]
            images["input"] = self._to_original(baseline, image.affine, item.record)
        reference = _reference(item, mode, self.reference_role)
        if options.error_maps and reference is not None:
            error = (images["pred"].data - reference.data.float()).abs()
            images["error"] = images["pred"].with_data(error)
        return Prediction(item.name, images)

    def _predict_given_input(self, inputs: torch.Tensor, ctx: TrainingContext) -> dict[str, Any]:
        prediction = self.scaling.restore(self.predict_standardized(inputs, ctx).cpu())
        return {"prediction": prediction, "input": inputs.cpu()}

    @staticmethod
    def _to_original(values: torch.Tensor, affine: np.ndarray, record: dict[str, Any]) -> Any:
        from voxelflow.io.image import Image
        from voxelflow.sampling.progress import timed_stage
        from voxelflow.transforms.preprocess import invert

        with timed_stage("invert"):  # inferred.csv's seconds_invert
            return invert(Image(values.float(), affine.copy()), record, kind="intensity")

    @classmethod
    def cross_validation_metric(cls, experiment: ExperimentConfig) -> tuple[str, bool, str] | None:
        """Mean absolute error."""
        return ("mae", False, "mae")

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
        """MAE, ME, RMSE, PSNR, SSIM, NCC per subject against the table's references.

        See :func:`voxelflow.applications.regression.evaluation.evaluate_regression`.
        """
        from voxelflow.applications.regression.evaluation import evaluate_regression

        task = RegressionTask.from_config(experiment.task)
        return evaluate_regression(
            experiment,
            predictions=Path(predictions),
            rows=rows,
            out_dir=Path(out_dir),
            reference_role="image" if task.degrade is not None else "target",
            mask_role=task.mask_role,
        )

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
        """MAE, ME, RMSE, PSNR ... of in-memory images against their ``target``; one row per
        subject (and channel); see :func:`.evaluation.image_pair_rows`."""
        from voxelflow.applications.common import pair_cases
        from voxelflow.applications.regression.evaluation import image_pair_rows

        if isinstance(predictions, Path) or isinstance(references, Path):
            raise ConfigError("evaluate: regression expects images in memory, got a folder")
        return image_pair_rows(pair_cases(predictions, references))

    # --- monitoring and state -----------------------------------------------------------------
    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Input, target and prediction of the last training window (standardised units)."""
        if not self._last:
            return {"input": batch["image"][0].float()}
        return {name: tensor[0].float() for name, tensor in self._last.items()}

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        return "network", self.network_input(batch["image"][:1])

    def state_dict(self) -> dict[str, Any]:
        return {"scaling": self.scaling.as_dict(), "degrade": self.degrade is not None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if bool(state.get("degrade", False)) != (self.degrade is not None):
            raise ConfigError(
                f"checkpoint: expected a {'super-resolution' if self.degrade else 'regression'} "
                f"model (task.degrade {'set' if self.degrade else 'unset'}), got the other kind"
            )
        if state.get("scaling"):
            self.scaling = TargetScaling.from_state(state["scaling"])


class ResidualCorrection(nn.Module):
    """``x + gain · network(x)`` with a learned scalar ``gain`` starting at 0 (ReZero).

    The untrained model is the identity (for super-resolution: the linear-upsampling baseline),
    and training only has to learn the correction; a randomly initialised network added with
    weight 1 would first have to unlearn its own random output.

    Args:
        network: maps ``(B, C, *spatial)`` to ``(B, C, *spatial)``.

    Shape:
        ``(B, C, *spatial)`` → ``(B, C, *spatial)``
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain * self.network(x)


def _check_roles(experiment: ExperimentConfig, task: RegressionTask) -> None:
    """The roles a regression / super-resolution config needs, and the image normalisation."""
    inputs = experiment.dataset.inputs
    if task.degrade is None and "target" not in inputs:
        raise ConfigError(
            f"dataset.inputs: expected a 'target' role (the columns to regress), got roles "
            f"{sorted(inputs)}"
        )
    if task.degrade is not None and "target" in inputs:
        raise ConfigError(
            "task.degrade: the 'image' role is the high-resolution target of super-resolution; "
            f"expected no dataset.inputs.target, got {inputs['target']}"
        )
    if task.degrade is not None and experiment.preprocessing.normalization:
        names = [step.name for step in experiment.preprocessing.normalization]
        raise ConfigError(
            "preprocessing.normalization: expected [] with task.degrade (the image is the target "
            f"and keeps its units; task.standardize scales it), got {names}"
        )
    if task.mask_role is not None and task.mask_role not in inputs:
        raise ConfigError(
            f"task.mask_role: expected a role of dataset.inputs {sorted(inputs)}, "
            f"got {task.mask_role!r}"
        )


def _check_loss(name: str) -> None:
    if ":" not in name and name not in REGRESSION_LOSSES:
        raise ConfigError(
            f"loss.name: expected a regression loss {list(REGRESSION_LOSSES)} or a plugin "
            f"'pkg.module:Name', got {name!r}"
        )


def _center_crop(tensor: torch.Tensor, shape: Sequence[int], *, what: str) -> torch.Tensor:
    """Centre ``tensor (B, C, *spatial)`` on a smaller output window (valid convolutions)."""
    spatial = tuple(tensor.shape[2:])
    if spatial == tuple(shape):
        return tensor
    if len(spatial) != len(shape) or any(o > s for o, s in zip(shape, spatial)):
        raise ShapeError(
            f"expected a network output window no larger than the {what} window {spatial}, "
            f"got {tuple(shape)}"
        )
    starts = [(s - o) // 2 for s, o in zip(spatial, shape)]
    index = (slice(None), slice(None), *(slice(b, b + o) for b, o in zip(starts, shape)))
    return tensor[index]


def _mask_of(array: np.ndarray | None) -> np.ndarray | None:
    """Boolean ``(*spatial)`` mask from a mask role ``(1, *spatial)``, or None."""
    if array is None:
        return None
    return np.any(np.asarray(array) != 0, axis=0)


def _reference(item: InferenceItem, mode: str, role: str) -> Any:
    """The reference of an inference item in original geometry, when there is one."""
    if role == "image":
        return item.original["image"] if mode == "degrade" else None
    return item.original.images.get(role)
