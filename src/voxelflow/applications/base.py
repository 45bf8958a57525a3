"""The application protocol: the one domain-specific object the generic trainer drives.

An application holds its networks (``modules``: role → ``nn.Module``), builds its optimisers,
and turns a batch into a dict of losses. It knows nothing of devices, precision, DDP or
accumulation: the trainer hands it a :class:`TrainingContext` whose ``backward``/``step``
handle the gradient scaler, accumulation and clipping.

Two ways to optimise:

* automatic (default, ``manual_optimization = False``): ``train_step`` returns
  ``{"loss": ..., **other_terms}`` after calling ``ctx.backward(loss)``; the trainer steps every
  optimiser once per iteration. A subclass usually overrides :meth:`Application.compute_losses`.
* manual (``manual_optimization = True``): ``train_step`` calls ``ctx.backward(loss, name)``
  and ``ctx.step(name)`` itself, any number of times (a GAN with n critic steps per generator
  step, a WGAN-GP gradient penalty with double backward). It still returns a dict of losses.

Schedulers step once per iteration, by the trainer, in both modes.

Example:
    >>> class Regress(Application):
    ...     name = "toy"
    ...     def compute_losses(self, batch):
    ...         prediction = self.modules["network"](batch["image"])
    ...         return {"loss": torch.nn.functional.mse_loss(prediction, batch["target"])}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from voxelflow.config.schema import ExperimentConfig, InferenceConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.data.dataset import PreprocessedDataset

if TYPE_CHECKING:  # applications sit above io/data/config in the layers; types only
    from voxelflow.io.image import Image, Subject
    from voxelflow.io.table import SubjectRow


class TrainingContext(Protocol):
    """What the trainer offers an application during a step (implemented by the engine)."""

    device: torch.device
    iteration: int
    accumulate: int

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Run the enclosed forward pass in the configured precision."""
        ...

    def backward(self, loss: torch.Tensor, optimizer: str = "default") -> None:
        """Backward of ``loss`` (scaled for AMP and divided by the accumulation steps)."""
        ...

    def step(self, optimizer: str = "default") -> None:
        """Unscale, clip, step and zero the gradients of one optimiser (manual mode)."""
        ...

    def zero_grad(self, optimizer: str = "default") -> None:
        """Zero the gradients of one optimiser's parameters."""
        ...


class InferenceContext:
    """A :class:`TrainingContext` for inference and evaluation: a device and a precision, no optimisers.

    Args:
        device: where the networks run.
        autocast: zero-argument callable returning a context manager (default: none).

    Example:
        >>> ctx = InferenceContext(torch.device("cpu"))
        >>> scores = app.infer_step({"image": image}, ctx)  # doctest: +SKIP
    """

    def __init__(
        self,
        device: torch.device,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.device, self.iteration, self.accumulate = device, 0, 1
        self._autocast = autocast or contextlib.nullcontext

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        return self._autocast()

    def backward(self, loss: torch.Tensor, optimizer: str = "default") -> None:
        raise RuntimeError("backward() is not available during inference")

    def step(self, optimizer: str = "default") -> None:
        raise RuntimeError("step() is not available during inference")

    def zero_grad(self, optimizer: str = "default") -> None:
        raise RuntimeError("zero_grad() is not available during inference")


@dataclass(frozen=True)
class OptimizationSettings:
    """What :meth:`Application.configure_optimizers` needs from the config.

    Attributes:
        optimizer: registered optimiser name (see ``voxelflow.optim``).
        optimizer_options: its keyword arguments (``lr``, ``weight_decay`` ...).
        scheduler: registered schedule name, or None for a constant learning rate.
        scheduler_options: its keyword arguments.
        max_iterations: length of the schedule.
        optimizer_key, scheduler_key: the config keys named in errors.
    """

    optimizer: str = "adamw"
    optimizer_options: Mapping[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    scheduler: str | None = None
    scheduler_options: Mapping[str, Any] = field(default_factory=dict)
    max_iterations: int = 1000
    optimizer_key: str = "optimizer"
    scheduler_key: str = "scheduler"

    @classmethod
    def from_experiment(cls, experiment: ExperimentConfig) -> OptimizationSettings:
        """Read ``optimizer``, ``scheduler`` and ``training.max_iterations`` of an Experiment."""
        return cls(
            optimizer=experiment.optimizer.name,
            optimizer_options=experiment.optimizer.kwargs,
            scheduler=experiment.scheduler.name,
            scheduler_options=experiment.scheduler.kwargs,
            max_iterations=experiment.training.max_iterations,
        )

    def build(self, parameters: Sequence[nn.Parameter]) -> tuple[Optimizer, LRScheduler | None]:
        """The optimiser over ``parameters`` and its schedule (None without one), built by
        :mod:`voxelflow.config.build` (errors name ``optimizer.*`` and ``scheduler.*``)."""
        from voxelflow.config.build import build_optimizer, build_scheduler

        optimizer = build_optimizer(
            {"name": self.optimizer, **self.optimizer_options}, parameters, key=self.optimizer_key
        )
        if not self.scheduler:
            return optimizer, None
        schedule = {"name": self.scheduler, **self.scheduler_options}
        scheduler = build_scheduler(
            schedule, optimizer, max_iterations=self.max_iterations, key=self.scheduler_key
        )
        return optimizer, scheduler


@dataclass
class InferenceItem:
    """One subject prepared for inference by the engine.

    Attributes:
        name: subject id.
        original: the subject as read (``image`` channels stacked; other roles when the row has
            them), in its original geometry.
        processed: after the run's saved preprocessing (the network's grid and intensities).
        record: what preprocessing did, for :func:`voxelflow.transforms.preprocess.invert`.
        fields: the row's non-image columns (targets, groups ...).
    """

    name: str
    original: Subject
    processed: Subject
    record: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """What inference produced for one subject (or one generated sample).

    Attributes:
        name: subject id, or a generated name such as ``sample_003``.
        images: file suffix → image in the input's original geometry (``{"seg": label map}``
            is written as ``<name>_seg.nii.gz``).
        values: table columns of this row (predicted class, probabilities, latent means ...).

    Shape:
        images[suffix].data: ``(C, *original spatial)``.

    Example:
        >>> from voxelflow.io.image import Image
        >>> seg = Image(torch.zeros(1, 4, 4, 4, dtype=torch.int16), kind="label")
        >>> prediction = Prediction("case1", {"seg": seg}, {"volume_mm3": 0.0})
        >>> prediction.images["seg"].spatial_shape, prediction.values
        ((4, 4, 4), {'volume_mm3': 0.0})
    """

    name: str
    images: dict[str, Image] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationOptions:
    """How to score a run: what ``voxelflow evaluate``'s flags and the API's arguments ask for.

    Every application receives the same options and uses those that apply to it (a regression
    ignores ``labels``); None means "the experiment's ``evaluation`` section".

    Attributes:
        labels: label values to score (segmentation); None = the config's, else every label.
        metrics: metric names; None = the config's ``evaluation.metrics``.
        tolerance_mm: NSD tolerance; None = the config's ``evaluation.tolerance_mm``.
        reference_dir: a folder of reference files (``--ref FOLDER``) instead of the table's rows.
        image_dir: a folder of intensity images drawn under the report's contours.
        resample: resample predictions onto the reference grid instead of refusing them.
        surface: surface elements of the distance metrics (``surfels``, ``voxels``, ``faces``).
        workers: parallel processes; None = the CPU count.
        report: also write plots and ``report.html``.
        provenance: what produced the predictions, shown at the top of the report.
    """

    labels: Sequence[int] | None = None
    metrics: Sequence[str] | None = None
    tolerance_mm: float | None = None
    reference_dir: Path | None = None
    image_dir: Path | None = None
    resample: bool = False
    surface: str = "surfels"
    workers: int | None = None
    report: bool = True
    provenance: Mapping[str, object] | None = None


@dataclass(frozen=True)
class PlanningRules:
    """What ``voxelflow plan`` decides for an application (:attr:`Application.planning`).

    Attributes:
        network: ``"unet"``: dense outputs (one value per voxel), so the plan sizes a U-Net's
            window, strides and batch from its memory model; ``"template"``: the template's
            network is kept and its window clipped to the median image (whole-image outputs).
        labels: outputs are label maps: the dataset needs label files with a foreground, and
            the plan writes ``preprocessing.label_values``, one output channel per label, a
            foreground-oversampling sampler and the ``dice_ce`` loss.
        slices: also plan a ``2d`` configuration on slices of 3D images (the application
            drops a size-1 window axis before its network).
        normalization: ``"fingerprint"`` (the schemes the fingerprint suggests),
            ``"invertible"`` (z-score without replacing the background: outputs map back to
            the input's units exactly) or ``"fixed_window"`` (one dataset-wide window: a
            generated sample has no subject whose statistics could undo a per-image z-score).
        whole_field_of_view: keep the template's ``crop_foreground`` (a reconstruction is of
            the whole image, not of a crop aligned per subject).
        from_dataset: whether a plan can start from a dataset alone (``--dataset``); else the
            reason it needs ``-c CONFIG``.
    """

    network: str = "unet"
    labels: bool = False
    slices: bool = False
    normalization: str = "fingerprint"
    whole_field_of_view: bool = False
    from_dataset: bool | str = True


#: optimiser name → (optimiser, per-iteration scheduler or None).
OptimizerSpecs = dict[str, tuple[Optimizer, LRScheduler | None]]


class Application:
    """Base class of every application (segmentation, regression, classification, autoencoder, gan).

    Args:
        modules: role → network, e.g. ``{"network": unet}`` or ``{"generator": g, "discriminator": d}``.
    """

    name: ClassVar[str] = "application"
    manual_optimization: ClassVar[bool] = False
    #: the pydantic model of its ``task:`` section (options, defaults, meanings for
    #: ``voxelflow list`` and the resolved config); None: the application has no task options
    task_model: ClassVar[type[BaseModel] | None] = None
    # prediction_table, inference_modes and reference_role are not ClassVars: an instance may
    # set its own (an autoencoder's mode picks its table, regression's degrade its reference).
    #: CSV written by inference beside the outputs: one row per :class:`Prediction`.
    prediction_table: str = "inferred.csv"
    #: ``inference.mode`` values this application accepts (the first is the default).
    inference_modes: tuple[str, ...] = ("predict",)
    #: module roles inference needs (their weights go into zoo entries); None: every module.
    #: A GAN may name only ``("generator",)`` so its entries leave the discriminator out.
    inference_modules: ClassVar[tuple[str, ...] | None] = None
    #: ``dataset.inputs`` roles training needs (checked before the table is read).
    training_roles: ClassVar[tuple[str, ...]] = ("image",)
    #: subject role holding the reference of :meth:`evaluation_table` (None: no in-memory
    #: evaluation); ``"label"`` for segmentation, ``"target"`` for regression.
    reference_role: str | None = None
    #: whether :meth:`evaluate` reads references from a folder (``--ref FOLDER``) besides rows.
    reference_folders: ClassVar[bool] = False
    #: whether :meth:`evaluation_table` reads folders itself (else the API loads their images).
    evaluates_folders: ClassVar[bool] = False
    #: cross-validation (``voxelflow cv``): the table :meth:`evaluate` writes with one row per
    #: subject (or per subject and label), and the summary table copied to ``summary.csv``
    #: (None: the evaluation writes ``summary.csv`` itself or has none)
    per_subject_table: ClassVar[str] = "per_case.csv"
    summary_table: ClassVar[str | None] = None
    #: cross-validation scores each fold's model on its own instead of pooling out-of-fold
    #: subjects (a generator has no per-subject prediction): the GAN
    cv_per_fold: ClassVar[bool] = False
    #: whether ``voxelflow cv`` decides a postprocessing for this application (segmentation)
    decides_postprocessing: ClassVar[bool] = False
    #: how ``voxelflow infer --folds`` and ``voxelflow cv --compare`` average fold models
    #: (``cv/ensemble.py``): ``"probabilities"`` (class probabilities ``prob`` before the
    #: argmax into label values: segmentation), ``"image"`` (the image :attr:`output_column`
    #: in the input's geometry: regression), ``"class_probabilities"`` (one class vector per
    #: subject: classification); None: not ensembled (:attr:`ensemble_refusal` says why)
    ensemble_mode: ClassVar[str | None] = None
    #: the prediction-table column (a :class:`Prediction` image or value) holding the main
    #: output: what an ``"image"`` ensemble averages, what NiftyNet's evaluation scores
    output_column: ClassVar[str] = "pred"
    #: why averaging this application's models estimates nothing (shown when it is refused)
    ensemble_refusal: ClassVar[str | None] = None
    #: the network's output is dense (one value per voxel of the window, as the input): the
    #: window must have the images' dimensionality (checked by ``voxelflow config validate``)
    dense_output: ClassVar[bool] = False
    #: what ``voxelflow plan`` decides for this application; None: not planned
    planning: ClassVar[PlanningRules | None] = None

    @classmethod
    def cross_validation_metric(cls, experiment: ExperimentConfig) -> tuple[str, bool, str] | None:
        """The default cross-validation metric: ``(summary key, higher is better, per-subject
        column of`` :attr:`per_subject_table` ``)``; None: the application is not cross-validated."""
        return None

    @classmethod
    def network_check(cls, experiment: ExperimentConfig) -> tuple[int, list[int]] | None:
        """``(out_channels, window the network sees)`` to build the configured network with on
        the ``meta`` device and check the window against its size rules before any data is
        read (``voxelflow config validate``), or None: only the network's options are checked
        (the default: its output size needs the data).

        Raises:
            ConfigError: a window the application cannot use (keyed ``sampling.window``).
        """
        return None

    @classmethod
    def check_training_roles(cls, inputs: Mapping[str, Sequence[str]]) -> None:
        """Refuse ``dataset.inputs`` without a role training needs, naming the role.

        Raises:
            ConfigError: ``dataset.inputs: application 'segmentation' needs a 'label' role ...``.
        """
        for role in cls.training_roles:
            if role not in inputs:
                raise ConfigError(
                    f"dataset.inputs: application {cls.name!r} needs a {role!r} role to train, "
                    f"got roles {sorted(inputs)}; add e.g. `{role}: [{role}]` (table columns)"
                )

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        if not modules:
            raise ConfigError(f"{type(self).__name__}: expected at least one module, got none")
        self.modules: dict[str, nn.Module] = dict(modules)

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def fit_task(
        cls, experiment: ExperimentConfig, dataset: PreprocessedDataset, train_indices: Sequence[int]
    ) -> dict[str, Any]:
        """What the application learns from the training split before its network exists.

        Called once per run (saved in ``preprocessing.json`` under ``"task"`` and in zoo entries):
        class names of a classification column, mean and standard deviation of a regression
        target. JSON-serialisable. Default: nothing.

        Args:
            experiment: the :class:`~voxelflow.config.schema.ExperimentConfig`.
            dataset: the run's :class:`~voxelflow.data.dataset.PreprocessedDataset`.
            train_indices: rows of the training split.
        """
        return {}

    @classmethod
    def from_experiment(
        cls,
        experiment: ExperimentConfig,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> Application:
        """Build the application (networks, losses) from an Experiment and the fitted state."""
        raise NotImplementedError(f"{cls.__name__} must implement from_experiment")

    def window_fields(self) -> Callable[[CachedSubject], Mapping[str, torch.Tensor]] | None:
        """A picklable callable ``CachedSubject -> {name: tensor}`` whose result is added to
        every training window (scalar targets from table columns), or None."""
        return None

    def subject_weights(self, fields: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """Sampling weight of each training subject, given their table fields, or None (uniform).

        Used by the patch queue to draw each epoch's subjects with replacement (e.g.
        class-balanced sampling: weight ∝ 1 / frequency of the subject's class).
        """
        return None

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self, settings: OptimizationSettings) -> OptimizerSpecs:
        """One optimiser named ``"default"`` over every module's parameters (override for more)."""
        parameters = [
            p for module in self.modules.values() for p in module.parameters() if p.requires_grad
        ]
        return {"default": settings.build(parameters)}

    def train_step(self, batch: Mapping[str, Any], ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """Losses of one (micro-)batch, after their backward; ``"loss"`` is the optimised total.

        Shape:
            batch tensors are ``(B, C, *spatial)`` already on ``ctx.device``.
        """
        with ctx.autocast():
            losses = self.compute_losses(batch)
        if "loss" not in losses:
            raise ConfigError(
                f"{type(self).__name__}.compute_losses: expected a 'loss' key, got {sorted(losses)}"
            )
        ctx.backward(losses["loss"])
        return losses

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Forward pass and loss terms of one batch (automatic optimisation)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_losses or train_step"
        )

    # --- evaluation ---------------------------------------------------------------------------
    def validation_step(self, subject: CachedSubject, ctx: TrainingContext) -> dict[str, float]:
        """Metrics of one whole validation subject (the trainer averages them over subjects)."""
        return {}

    def infer_step(self, batch: Mapping[str, Any], ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """Network outputs of one inference batch."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer_step")

    def predict(
        self, item: InferenceItem, ctx: TrainingContext, options: InferenceConfig
    ) -> Prediction:
        """Outputs of one subject in its original geometry (``options``: the inference config)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict")

    def run_inference(
        self, items: Iterable[InferenceItem], ctx: TrainingContext, options: InferenceConfig
    ) -> Iterator[Prediction]:
        """Every prediction of an inference run; default: :meth:`predict` per subject.

        Applications with generation modes (``inference.mode``: sample, interpolate, encode)
        override this; ``items`` is lazy, so a mode that needs no input reads none.
        """
        for item in items:
            yield self.predict(item, ctx, options)

    def write_extras(self, out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        """Files written beside the prediction table once an inference run ends (an encode run's
        ``latents.npy`` ...), from the table's rows; returns their paths (none by default)."""
        return []

    @classmethod
    def evaluate(
        cls,
        experiment: ExperimentConfig,
        *,
        predictions: Path,
        rows: Sequence[SubjectRow],
        out_dir: Path,
        options: EvaluationOptions | None = None,
    ) -> dict[str, float]:
        """Score an inference run against the references in ``rows``.

        What ``voxelflow evaluate -c``, ``voxelflow cv`` and NiftyNet's ``evaluation`` action
        call, through the application registry; every application implements this signature.

        Args:
            experiment: the run's Experiment.
            predictions: the prediction table written by inference (``inferred.csv`` ...).
            rows: dataset rows (:class:`~voxelflow.io.table.SubjectRow`) holding the references.
            out_dir: folder for the per-subject CSV, the summary and plots (created).
            options: the caller's settings (None: the experiment's ``evaluation`` section).

        Returns:
            summary figures (metric name → value), also written to ``out_dir``.

        Raises:
            DataError: a subject could not be scored (after the outputs are written).
            ConfigError: an application that does not implement it (the message names it).
        """
        raise ConfigError(
            f"evaluate: application {cls.name!r} ({cls.__name__}) has no evaluation: it does not "
            "implement Application.evaluate"
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
        """Per-subject metrics of in-memory predictions (the Python API's ``evaluate``).

        Args:
            predictions, references: subject → image (folders only when
                :attr:`evaluates_folders`); references hold :attr:`reference_role`.
            out_dir: also write the CSVs (and report) there.

        Returns:
            one row per subject (and label, channel): ``subject`` then metric columns.

        Raises:
            ConfigError: the application has no in-memory evaluation.
        """
        raise ConfigError(
            "evaluate: expected application with an in-memory evaluation (a reference_role: "
            f"segmentation, regression, a plugin's), got application {cls.name!r}"
        )

    @classmethod
    def evaluate_pairs(
        cls,
        experiment: ExperimentConfig,
        predictions: Mapping[str, Path],
        references: Mapping[str, Path],
        out_dir: Path,
    ) -> bool | None:
        """Score prediction files against reference files paired by subject (NiftyNet's
        ``evaluation`` action, whose ``inferred.csv`` pairs subjects with files).

        Returns:
            whether every subject was scored; None (the default): the application scores a
            prediction table of :attr:`output_column` paths instead (:meth:`evaluate`).
        """
        return None

    @classmethod
    def postprocess_decision(cls, run_dir: Path) -> dict[str, Any] | None:
        """The postprocessing that cross-validation decided for a run folder, or None.

        Inference and zoo packing pass it on to :meth:`predict` (default: none).
        """
        return None

    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Volumes shown in TensorBoard montages, name → ``(C, *spatial)``; none by default."""
        return {}

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        """``(module role, example input)`` to trace the network graph for TensorBoard, or None."""
        return None

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Extra state saved with checkpoints (tensors and plain containers only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""

    def train(self, mode: bool = True) -> None:
        """Put every module in training (or evaluation) mode."""
        for module in self.modules.values():
            module.train(mode)

    def eval(self) -> None:
        """Put every module in evaluation mode."""
        self.train(False)

    @contextlib.contextmanager
    def using_modules(self, modules: Mapping[str, nn.Module]) -> Iterator[None]:
        """Temporarily swap the modules (the trainer runs steps through DDP wrappers)."""
        original = self.modules
        self.modules = dict(modules)
        try:
            yield
        finally:
            self.modules = original
