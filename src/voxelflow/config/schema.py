"""The experiment configuration: pydantic models, frozen, unknown keys refused.

A YAML experiment file maps onto :class:`Experiment`. Components (network, loss, optimiser,
sampler, each augmentation ...) are ``{name: ..., **kwargs}``: the name is looked up in the
component's registry (or imported, for a ``pkg.module:Name`` plugin path) and the keyword
arguments are checked against its signature by :mod:`voxelflow.config.build`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class Component(BaseModel):
    """A named component plus its keyword arguments, e.g. ``{name: unet, channels: [16, 32]}``.

    Example:
        >>> component = Component(name="unet", channels=[16, 32])
        >>> component.name, component.kwargs
        ('unet', {'channels': [16, 32]})
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(description="registered name, or a plugin path 'package.module:Name'")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments (every key but ``name``)."""
        return dict(self.model_extra or {})


class FolderInput(Section):
    """Files of one modality found by folder pattern (NiftyNet's path_to_search + filename_contains)."""

    path: Path = Field(description="folder to search (recursively with '**' in glob)")
    glob: str = Field("*", description="glob pattern of files (or DICOM folders) inside `path`")
    contains: list[str] = Field(
        default_factory=list, description="every string must appear in the file name"
    )
    not_contains: list[str] = Field(
        default_factory=list, description="no string may appear in the file name"
    )
    subject_regex: str | None = Field(
        None,
        description="regex whose first group is the subject id; default: name minus `contains` strings and suffix",
    )


class DatasetConfig(Section):
    """Where the subjects come from and which columns form each role."""

    csv: Path | None = Field(
        None, description="CSV table: one row per subject, one column per file or value"
    )
    folders: dict[str, FolderInput] | None = Field(None, description="column name → folder pattern")
    msd: Path | None = Field(
        None, description="Medical Segmentation Decathlon / nnU-Net dataset folder (dataset.json)"
    )
    subject_column: str = Field("subject", description="column holding the subject id")
    inputs: dict[str, list[str]] = Field(
        default_factory=lambda: {"image": ["image"], "label": ["label"]},
        description="role → table columns stacked as channels (roles: image, label, weight, sampling_map, target)",
    )
    incomplete_subjects: Literal["error", "drop"] = Field(
        "error",
        description="subjects missing a required column: fail listing them, or drop them with a warning",
    )
    resample_to_first: bool = Field(
        False,
        description="resample images of a subject onto its first image instead of refusing different grids",
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _columns_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        sources = [name for name in ("csv", "folders", "msd") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError(f"expected at most one of csv, folders, msd, got {sources}")
        return self


class SplitConfig(Section):
    """Train / validation / test split, or k-fold cross-validation."""

    file: Path | None = Field(
        None, description="a user-given split CSV (subject,split); wins over fractions"
    )
    validation: float = Field(
        0.2, ge=0.0, lt=1.0, description="fraction of subjects for validation"
    )
    test: float = Field(
        0.0, ge=0.0, lt=1.0, description="fraction of subjects held out for testing"
    )
    folds: int | None = Field(
        None, ge=2, description="k for k-fold cross-validation (validation = one fold)"
    )
    fold: int = Field(0, ge=0, description="which fold is the validation fold")
    group_column: str | None = Field(
        None, description="no two splits share a value of this column (patient id)"
    )
    stratify_column: str | None = Field(
        None, description="keep this column's class ratios in every split"
    )
    seed: int = Field(
        0, description="seed of the split draw (the split is written once and reused)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        if self.validation + self.test >= 1.0 and self.folds is None:
            raise ValueError(f"expected validation + test < 1, got {self.validation} + {self.test}")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"expected fold in 0..{self.folds - 1}, got {self.fold}")
        return self


class PreprocessingConfig(Section):
    """Deterministic preprocessing, run once per subject and cached; inverted at inference."""

    orientation: str | None = Field(
        "RAS", description="reorient to these axis codes; null keeps the file's"
    )
    spacing: list[float | None] | None = Field(
        None,
        description="resample to this spacing (mm); null keeps it; a null entry keeps that axis's",
    )
    image_interpolation: Literal["linear", "bspline", "nearest"] = Field(
        "linear", description="interpolation of image roles when resampling"
    )
    label_interpolation: Literal["nearest", "partial_volume"] = Field(
        "nearest", description="interpolation of label roles when resampling"
    )
    crop_foreground: bool | Literal["nonzero", "body"] = Field(
        False,
        description="crop to the bounding box of non-zero image voxels (true or 'nonzero'), or of "
        "the body ('body': above Otsu's threshold or above air in CT, holes filled)",
    )
    crop_margin: int = Field(0, ge=0, description="voxels kept around the foreground box")
    normalization: list[Component] = Field(
        default_factory=lambda: [Component(name="zscore")],
        description="intensity normalisation steps, applied in order to the image role",
    )
    label_values: list[int] | None = Field(
        None, description="label values in class order; null: found from the training split"
    )
    non_finite: Literal["warn", "error"] = Field(
        "warn", description="NaN/Inf voxels: warn (set to 0) or fail"
    )
    cache_dir: Path | None = Field(None, description="preprocessing cache; default <run_dir>/cache")


class SamplingConfig(Section):
    """How training windows are drawn."""

    sampler: Component = Field(
        default_factory=lambda: Component(name="uniform"),
        description="training window sampler: uniform, weighted, balanced, resize ...",
    )
    window: list[int] = Field(
        default_factory=lambda: [64, 64, 64], description="window size; 0 or -1 = whole axis"
    )
    label_window: list[int] | None = Field(
        None, description="smaller label window (valid-convolution networks)"
    )
    windows_per_subject: int = Field(2, ge=1, description="windows drawn per subject load")
    queue_length: int = Field(64, ge=1, description="windows held in the shuffled patch queue")
    pad_value: float = Field(0.0, description="value used where a window extends past the image")


class TrainingConfig(Section):
    """The training loop."""

    max_iterations: int = Field(1000, ge=0, description="optimiser steps in total")
    batch_size: int = Field(2, ge=1, description="windows per optimiser step (per device)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps per optimiser step")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    amp: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="auto = bf16/fp16 on CUDA, off on CPU"
    )
    compile: bool = Field(False, description="torch.compile the network")
    seed: int = Field(0, description="seed of every random generator of the run")
    deterministic: bool = Field(False, description="deterministic algorithms (slower)")
    validate_every: int = Field(100, ge=0, description="iterations between validations; 0 = never")
    log_every: int = Field(10, ge=1, description="iterations between console and TensorBoard logs")
    image_every: int = Field(
        0, ge=0, description="iterations between TensorBoard image montages; 0 = never"
    )
    checkpoint_every: int = Field(100, ge=1, description="iterations between checkpoints")
    keep_last: int = Field(2, ge=1, description="most recent checkpoints kept")
    keep_best: int = Field(1, ge=0, description="best checkpoints kept by `best_metric`")
    best_metric: str = Field(
        "dice", description="validation metric for best checkpoints and early stopping"
    )
    best_mode: Literal["max", "min"] = Field(
        "max", description="whether a larger (max) or smaller (min) `best_metric` is better"
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="validations without improvement"
    )
    augmentation_device: Literal["auto", "cpu", "cuda", "batched"] = Field(
        "auto",
        description="where augmentation runs: cpu = per window in the DataLoader workers; cuda = "
        "batched on the training GPU before the forward pass (workers only read windows with a "
        "margin; an error without CUDA); batched = that batched path on whatever device trains "
        "(CPU included); auto = cuda when training runs on a CUDA device, else cpu. Also written "
        "`augmentation: {device: ..., transforms: [...]}`",
    )
    hooks: list[Component] = Field(
        default_factory=list,
        description="training-loop hooks, each `{name: ..., **options}` from the hook registry "
        "(e.g. `{name: stop_after, iterations: 50}`) or a plugin path `pkg.mod:Class`; called "
        "at train start, after each step, after validation, at checkpoints and at train end",
    )


class InferenceConfig(Section):
    """Sliding-window (or whole-image) inference and what is written."""

    window: list[int] | None = Field(
        None, description="inference window; null = the training window"
    )
    overlap: float = Field(
        0.5, ge=0.0, lt=1.0, description="fraction of the window shared by neighbours"
    )
    blend: Literal["gaussian", "mean", "crop"] = Field(
        "gaussian", description="how overlapping windows are combined (crop: keep window centres)"
    )
    batch_size: int = Field(4, ge=1, description="windows per forward pass")
    accumulate: Literal["float32", "float16"] = Field(
        "float32",
        description="dtype the sliding window blends outputs in: float16 halves the memory of "
        "the output volume (on a GPU; accepted on the CPU, where it is slower)",
    )
    flip_tta: bool = Field(False, description="average over flips of every spatial axis")
    save_probabilities: bool = Field(False, description="also write class probabilities")
    uncertainty: Literal["none", "entropy", "variance"] = Field(
        "none",
        description="write a voxel-wise uncertainty map over flip_tta / mc_samples samples",
    )
    mc_samples: int = Field(
        0, ge=0, description="Monte-Carlo dropout passes (0 = off; needs a network with dropout)"
    )
    keep_largest_component: bool = Field(
        False, description="keep only the largest connected component of each class"
    )
    min_component_volume_mm3: float = Field(
        0.0, ge=0.0, description="remove connected components smaller than this volume (mm³)"
    )
    fill_holes: bool = Field(False, description="fill holes inside each predicted class")
    checkpoint: Literal["best", "last"] = Field("best", description="checkpoint used for inference")
    output_format: str = Field(
        "auto",
        description="file suffix of predictions (.nii.gz, .nrrd, .mha ...); auto: the input's own "
        "format (a DICOM series gives .nii.gz)",
    )
    mode: str | None = Field(
        None,
        description="what inference produces; null = the application's default. autoencoder: "
        "reconstruct, encode, sample, interpolate; gan: sample, interpolate",
    )
    num_samples: int = Field(8, ge=1, description="images generated by `sample` modes")
    interpolate: list[str] | None = Field(
        None,
        description="two subject ids whose latents (autoencoder) or conditioning (gan) the "
        "`interpolate` mode joins",
    )
    steps: int = Field(8, ge=2, description="images along an `interpolate` path (ends included)")
    seed: int = Field(0, description="seed of generated noise and Monte-Carlo samples")
    error_maps: bool = Field(
        False, description="regression: also write |prediction − target| where a target is given"
    )


class EvaluationConfig(Section):
    """Metrics computed after inference and during validation."""

    metrics: list[str] = Field(
        default_factory=lambda: ["dice", "hd95", "assd", "nsd"],
        description="metric names computed per subject and label",
    )
    tolerance_mm: float = Field(1.0, gt=0, description="NSD tolerance τ (mm)")
    labels: list[int] | None = Field(
        None, description="labels evaluated; null = every foreground label"
    )


class SystemConfig(Section):
    """Devices and run folder."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads of the training/inference process; null: OMP_NUM_THREADS "
        "if set, else the available cores (affinity, cgroup quota) minus the DataLoader workers",
    )
    resample_kernel: Literal["auto", "numba", "torch"] = Field(
        "auto",
        description="CPU resampling of augmented training windows: numba (fused kernel), torch "
        "(grid_sample) or auto (numba when it can be compiled, else torch)",
    )
    run_dir: Path = Field(
        Path("runs/experiment"), description="everything of a run is written here"
    )


class InitFromConfig(Section):
    """Pretrained weights loaded into the network before training (transfer learning)."""

    source: str = Field(
        description="a checkpoint file, a run folder or an installed zoo entry name"
    )
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="source key renames: 'encoder.' → 'backbone.' (prefix), or 're:PATTERN' → replacement",
    )
    include: list[str] = Field(
        default_factory=list, description="glob patterns of target keys to load; empty = all"
    )
    exclude: list[str] = Field(
        default_factory=list, description="glob patterns of target keys never loaded"
    )
    strict: bool = Field(False, description="fail unless every target tensor is loaded")


class TransferConfig(Section):
    """Transfer learning: initial weights and frozen parameters."""

    init_from: InitFromConfig | None = Field(None, description="pretrained weights to start from")
    freeze: list[str] = Field(
        default_factory=list,
        description="glob patterns of parameter names kept fixed (left out of the optimiser)",
    )


class MlflowConfig(Section):
    """An MLflow tracking target (needs the optional extra: ``pip install voxelflow[mlflow]``)."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI: sqlite:///mlflow.db, file:./mlruns, http://server:5000; "
        "null: MLflow's own default (MLFLOW_TRACKING_URI, else ./mlruns)",
    )
    experiment: str = Field("voxelflow", description="MLflow experiment name (created if absent)")
    run_name: str | None = Field(None, description="MLflow run name; null: the run folder's name")
    artifact_location: str | None = Field(
        None,
        description="where a newly created experiment stores artefacts; null: MLflow's default",
    )


class LoggingConfig(Section):
    """Experiment trackers beside the run folder's own logs (TensorBoard, scalars.csv)."""

    mlflow: MlflowConfig | None = Field(
        None,
        description="log params (the resolved config), metrics and artefacts to MLflow; null: off",
    )


class ExperimentConfig(Section):
    """A whole experiment: one YAML file, every section with defaults.

    Example:
        >>> experiment = ExperimentConfig(network={"name": "unet", "channels": [8, 16]})
        >>> experiment.application, experiment.network.name, experiment.network.kwargs
        ('segmentation', 'unet', {'channels': [8, 16]})
        >>> experiment.training.max_iterations > 0
        True
    """

    application: (
        Literal["segmentation", "regression", "classification", "autoencoder", "gan"] | str
    ) = Field(
        "segmentation",
        description="the task: segmentation, regression, classification, autoencoder, gan or a plugin path",
    )
    dataset: DatasetConfig = Field(
        default_factory=DatasetConfig, description="where the subjects come from"
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="train / validation / test split"
    )
    preprocessing: PreprocessingConfig = Field(
        default_factory=PreprocessingConfig,
        description="deterministic preprocessing (cached, inverted at inference)",
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="training window sampling"
    )
    augmentation: list[Component] = Field(
        default_factory=list, description="random transforms, in order"
    )
    network: Component = Field(
        default_factory=lambda: Component(name="unet"), description="network name and options"
    )
    loss: Component = Field(
        default_factory=lambda: Component(name="dice_ce"), description="loss name and options"
    )
    optimizer: Component = Field(
        default_factory=lambda: Component(name="adamw", lr=1e-3),
        description="optimiser name and options (lr ...)",
    )
    scheduler: Component = Field(
        default_factory=lambda: Component(name="constant"),
        description="learning-rate schedule name and options",
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="the training loop"
    )
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, description="sliding-window inference"
    )
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="metrics")
    system: SystemConfig = Field(default_factory=SystemConfig, description="devices and run folder")
    transfer: TransferConfig = Field(
        default_factory=TransferConfig, description="transfer learning: init_from and freeze"
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="experiment tracking (MLflow)"
    )
    num_classes: int | None = Field(
        None, ge=1, description="output classes; null: from the label values"
    )

    @model_validator(mode="before")
    @classmethod
    def _augmentation_section(cls, data: Any) -> Any:
        """Accept ``augmentation: {device: cuda, transforms: [...]}`` (issue 18's spelling) as
        ``augmentation: [...]`` plus ``training.augmentation_device``."""
        if not isinstance(data, dict) or not isinstance(data.get("augmentation"), dict):
            return data
        section = dict(data["augmentation"])
        unknown = sorted(set(section) - {"device", "transforms"})
        if unknown:
            raise ValueError(
                f"augmentation: expected a list of transforms or {{device, transforms}}, got "
                f"unknown keys {unknown}"
            )
        training = dict(data.get("training") or {})
        if "device" in section:
            if "augmentation_device" in training:
                raise ValueError(
                    "augmentation.device: given twice, also as training.augmentation_device "
                    f"({training['augmentation_device']!r}); keep one"
                )
            training["augmentation_device"] = section["device"]
        return {**data, "augmentation": section.get("transforms") or [], "training": training}
    task: dict[str, Any] = Field(
        default_factory=dict,
        description="options of the application (e.g. classification target_column, gan "
        "noise_size), checked by the application: see `voxelflow list applications`",
    )


#: The config model's former name, kept for code written against it; use ExperimentConfig.
Experiment = ExperimentConfig
