"""Combine the fingerprint and the rules into configurations: ``2d``, ``3d_fullres``, ``3d_lowres``.

Each :class:`Configuration` holds a complete experiment (a plain dict that validates as an
:class:`~voxelflow.config.schema.ExperimentConfig`) and, for every decision, a comment saying
why (keyed by the dotted config path). Segmentation and regression get the whole plan (spacing,
normalisation, crop, window, U-Net depth and strides, batch size, sampling, augmentation,
iterations); classification, autoencoder and GAN get the decisions that apply to them
(orientation, spacing, normalisation, crop and a window no larger than the median image) and
keep their network from the template config.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxelflow.applications.base import PlanningRules
from voxelflow.errors import ConfigError, DataError
from voxelflow.planning import rules
from voxelflow.planning.fingerprint import Fingerprint, IntensityStats

logger = logging.getLogger(__name__)

#: values of :class:`~voxelflow.applications.base.PlanningRules` fields the planner knows
PLANNED_NETWORKS = ("unet", "template")
PLANNED_NORMALIZATIONS = ("fingerprint", "invertible", "fixed_window")
#: a 3d_lowres configuration is made when the full-resolution window covers less than this
LOWRES_THRESHOLD = 0.25
LOWRES_STEP = 1.03
#: iterations planned by default (nnU-Net: 1000 epochs of 250 iterations on a GPU)
DEFAULT_ITERATIONS = {"cuda": 250_000, "cpu": 2_000}
#: runs shorter than this get AdamW instead of nnU-Net's SGD (see :func:`plan_optimizer`)
SHORT_RUN_ITERATIONS = 10_000
SHORT_RUN_LR = 3e-3
#: runs shorter than this are planned without augmentation (see ``_Builder._unet``)
AUGMENTATION_MIN_ITERATIONS = 1_000


def planning_rules(application: str) -> PlanningRules:
    """What the application declares ``voxelflow plan`` decides for it (``Application.planning``).

    Args:
        application: the config's ``application`` (a registered name or a plugin path).

    Raises:
        ConfigError: an application without planning rules, or rules the planner does not
            know, naming the application and the declaration.
    """
    from voxelflow.applications import APPLICATIONS

    app_class = APPLICATIONS.get(application)
    declared = app_class.planning
    where = f"plan: application {application!r} ({app_class.__name__})"
    if declared is None:
        raise ConfigError(
            f"{where} declares no planning: set Application.planning to a "
            "voxelflow.applications.base.PlanningRules saying what the plan decides for it"
        )
    if declared.network not in PLANNED_NETWORKS:
        raise ConfigError(
            f"{where}: planning.network: expected one of {list(PLANNED_NETWORKS)}, "
            f"got {declared.network!r}"
        )
    if declared.normalization not in PLANNED_NORMALIZATIONS:
        raise ConfigError(
            f"{where}: planning.normalization: expected one of {list(PLANNED_NORMALIZATIONS)}, "
            f"got {declared.normalization!r}"
        )
    return declared


@dataclass
class PlanOptions:
    """What the user tells the planner besides the data.

    Attributes:
        application: the application name.
        device: ``"cuda"`` (plans mixed precision on a GPU) or ``"cpu"``.
        memory_gb: memory budget of one training step (GPU memory, or RAM for ``cpu``).
        modalities: channel index → modality name (``CT``, ``MR``, ``T1`` ...); from
            ``dataset.json``'s ``channel_names`` or the ``--modality`` option.
        iterations: training iterations (default: 250 000 on a GPU, 2 000 on the CPU).
        orientation: axis codes every subject is reoriented to.
    """

    application: str = "segmentation"
    device: str = "cuda"
    memory_gb: float = 8.0
    modalities: dict[int, str] = field(default_factory=dict)
    iterations: int | None = None
    orientation: str | None = "RAS"


@dataclass
class Configuration:
    """One planned configuration: its headline numbers, the config and the reasons."""

    name: str
    spacing: list[float | None]
    window: list[int]
    batch_size: int
    strides: list[list[int]]
    normalization: list[dict[str, Any]]
    config: dict[str, Any]
    comments: dict[str, str]
    estimated_gb: float | None = None

    @property
    def file_name(self) -> str:
        """The YAML file written for it."""
        return f"{self.name}.yaml"


@dataclass
class Plan:
    """Every configuration plus the dataset-wide notes (single subject, guessed modality ...)."""

    configurations: list[Configuration]
    notes: list[str]
    options: PlanOptions
    summary: dict[str, Any]

    def configuration(self, name: str) -> Configuration:
        """The configuration called ``name``.

        Raises:
            ConfigError: no such configuration (the message lists those planned).
        """
        for item in self.configurations:
            if item.name == name:
                return item
        names = [c.name for c in self.configurations]
        raise ConfigError(f"plan: expected a configuration in {names}, got {name!r}")


# --------------------------------------------------------------------------- normalisation


def _pooled(stats: Sequence[IntensityStats | None]) -> dict[str, float] | None:
    """Dataset-wide statistics with every subject weighted equally (as nnU-Net samples them)."""
    present = [s for s in stats if s is not None]
    if not present:
        return None
    quantiles = np.concatenate([np.asarray(s.quantiles) for s in present])
    means = np.asarray([s.mean for s in present])
    second = np.asarray([s.std**2 + s.mean**2 for s in present])
    mean = float(means.mean())
    return {
        "p00_5": float(np.percentile(quantiles, 0.5)),
        "p99_5": float(np.percentile(quantiles, 99.5)),
        "mean": mean,
        "std": float(math.sqrt(max(second.mean() - mean**2, 0.0))),
    }


def _is_ct_name(name: str) -> bool:
    return name.strip().lower() in ("ct", "cta", "ct_hu", "computed tomography")


def plan_normalization(
    fingerprint: Fingerprint, options: PlanOptions, notes: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Per channel: the scheme, the normalisation steps and a reason.

    CT (named so, or guessed with a warning when the intensities look like HU): clip to the
    dataset's foreground 0.5/99.5 percentiles, then z-score with the foreground mean and std.
    Otherwise: z-score inside the body mask, voxels outside the body set to one value (the
    body's 0.5 percentile after z-scoring), so zero and noisy backgrounds map alike.

    Returns:
        ``(schemes, steps, reasons)``: ``[{"channel", "scheme"}]``, the
        ``preprocessing.normalization`` list and one reason per channel.
    """
    schemes, steps, reasons = [], [], []
    for index in range(fingerprint.num_channels):
        channels = [s.channels[index] for s in fingerprint.subjects]
        column = fingerprint.roles["image"][min(index, len(fingerprint.roles["image"]) - 1)]
        named = options.modalities.get(index)
        ct_votes = sum(c.looks_ct for c in channels)
        if named is not None:
            is_ct = _is_ct_name(named)
            why = f"channel {index} is {named!r} (dataset)"
            if is_ct != (ct_votes > len(channels) / 2):
                note = (
                    f"channel {index} ({column}) is named {named!r} but its intensities "
                    f"{'look' if ct_votes else 'do not look'} like CT in {ct_votes} of "
                    f"{len(channels)} subjects"
                )
                notes.append(note)
                logger.warning("plan: %s", note)
        else:
            is_ct = ct_votes > len(channels) / 2
            why = (
                f"channel {index} looks like CT (air below {-800} HU in {ct_votes} of "
                f"{len(channels)} subjects); a guess: name the modality (--modality {index}=CT, "
                "or channel_names in dataset.json) to confirm"
                if is_ct
                else f"channel {index} does not look like CT (no air at -1000 in "
                f"{len(channels) - ct_votes} of {len(channels)} subjects): MR-like"
            )
            if is_ct:
                notes.append(why)
                logger.warning("plan: %s", why)
        if is_ct:
            stats = _pooled([c.foreground for c in channels]) or _pooled([c.body for c in channels])
            assert stats is not None
            steps.append(
                {
                    "name": "ct",
                    "low": round(stats["p00_5"], 2),
                    "high": round(stats["p99_5"], 2),
                    "mean": round(stats["mean"], 3),
                    "std": round(max(stats["std"], 1e-3), 3),
                    "channels": [index],
                }
            )
            schemes.append({"channel": index, "scheme": "ct"})
            reasons.append(
                f"{why}; CT: clip to the {'foreground' if channels[0].foreground else 'body'} "
                f"0.5/99.5 percentiles [{stats['p00_5']:.0f}, {stats['p99_5']:.0f}] HU, z-score "
                f"with mean {stats['mean']:.1f}, std {stats['std']:.1f}"
            )
            continue
        lows = [(c.body.p00_5 - c.body.mean) / max(c.body.std, 1e-8) for c in channels if c.body]
        outside = round(float(np.mean(lows)), 2) if lows else 0.0
        kinds = sorted({c.background for c in channels})
        steps.append(
            {
                "name": "zscore",
                "mask": "body",
                "mask_combine": "per_channel",
                "outside": outside,
                "channels": [index],
            }
        )
        schemes.append({"channel": index, "scheme": "zscore"})
        reasons.append(
            f"{why}; z-score inside the body mask, voxels outside it set to {outside} "
            f"(the body's 0.5 percentile after z-scoring) so {' and '.join(kinds)} "
            "backgrounds map alike"
        )
    return schemes, steps, reasons


# --------------------------------------------------------------------------- optimiser


def plan_optimizer(iterations: int) -> tuple[dict[str, Any], str]:
    """The optimiser for ``iterations`` training iterations, and why.

    nnU-Net's SGD (Nesterov momentum 0.99, lr 0.01, polynomial decay) is tuned for its
    250 000 iterations; with momentum 0.99 the effective step builds up over ~100 iterations
    and the poly schedule spends the run's first half at a high lr, so a short run (a CPU plan,
    or ``--iterations`` for a quick try) ends far from converged. Below
    :data:`SHORT_RUN_ITERATIONS` the plan uses AdamW at lr 3e-3 (per-weight step sizes reach a
    useful model in tens to hundreds of iterations) with the same polynomial decay.
    """
    if iterations >= SHORT_RUN_ITERATIONS:
        return (
            {"name": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
            "SGD, Nesterov momentum 0.99, lr 0.01 with polynomial decay (nnU-Net)",
        )
    return (
        {"name": "adamw", "lr": SHORT_RUN_LR, "weight_decay": 3e-5},
        f"AdamW, lr {SHORT_RUN_LR:g} with polynomial decay: {iterations} iterations are fewer "
        f"than {SHORT_RUN_ITERATIONS}, too few for nnU-Net's SGD (momentum 0.99, tuned for "
        "250 000 iterations) to converge",
    )


# --------------------------------------------------------------------------- helpers


def _median(values: Sequence[Sequence[float]]) -> list[float]:
    return [float(v) for v in np.median(np.asarray(values, dtype=np.float64), axis=0)]


def _fmt(values: Sequence[float | None]) -> str:
    return "×".join("native" if v is None else f"{v:.3g}" for v in values)


def _augmentation(
    dims: int, slice_axis: int | None, anisotropic_axis: int | None
) -> tuple[list[dict[str, Any]], str]:
    """nnU-Net-like augmentation; rotation only in-plane when slices are thick or 2D."""
    if slice_axis is not None or anisotropic_axis is not None:
        axis = slice_axis if slice_axis is not None else anisotropic_axis
        rotation: list[Any] = [0.0, 0.0, 0.0]
        rotation[axis] = 180.0  # type: ignore[index]
        why = f"rotation ±180° about axis {axis} only (in-plane: slices are {'2D' if slice_axis is not None else 'thick'})"
    else:
        rotation = [30.0, 30.0, 30.0]
        why = "rotation ±30° about every axis (near-isotropic spacing)"
    flip_axes = [a for a in range(dims) if a != slice_axis]
    scaling: Any = [0.7, 1.4]
    isotropic = True
    if slice_axis is not None:
        scaling = [[0.7, 1.4] if a != slice_axis else [1.0, 1.0] for a in range(dims)]
        isotropic = False
    steps = [
        {
            "name": "affine",
            "p": 0.2,
            "rotation": rotation,
            "scaling": scaling,
            "isotropic": isotropic,
        },
        {"name": "gaussian_noise", "p": 0.1, "std": [0.0, 0.1]},
        {"name": "gaussian_blur", "p": 0.2, "sigma": [0.5, 1.0]},
        {"name": "contrast_brightness", "p": 0.15},
        {"name": "low_resolution", "p": 0.25, "factor": [1.0, 2.0]},
        {"name": "gamma", "p": 0.3},
        {"name": "flip", "axes": flip_axes},
    ]
    return steps, why + "; flips, noise, blur, contrast, low resolution, gamma as nnU-Net"


# --------------------------------------------------------------------------- configurations


class _Builder:
    """Builds configurations for one dataset (state shared by 2d, 3d_fullres and 3d_lowres)."""

    def __init__(
        self, fingerprint: Fingerprint, template: Mapping[str, Any], options: PlanOptions
    ) -> None:
        self.fp = fingerprint
        self.template = template
        self.options = options
        self.planning = planning_rules(options.application)
        self.notes: list[str] = []
        subjects = fingerprint.subjects
        self.n = len(subjects)
        if self.n == 1:
            self.notes.append(
                "the statistics are from one subject: spacing, intensities and window follow "
                "that case only; no validation split is possible"
            )
        self.spacings = [s.spacing for s in subjects]
        self.cropped = [s.cropped_shape for s in subjects]
        self.fullres, self.spacing_why = rules.target_spacing(self.spacings, self.cropped)
        self.median_shape = self._median_shape(self.fullres)
        self.schemes, self.norm_steps, self.norm_reasons = plan_normalization(
            fingerprint, options, self.notes
        )
        self.labels = fingerprint.label_values
        if self.planning.labels:
            if not self.labels:
                raise DataError(
                    f"plan: {options.application} needs a 'label' role; no label files given"
                )
            if self.labels == [0]:
                raise DataError(
                    "plan: no foreground label in any subject (every label file is all 0): "
                    "check the label column"
                )
        self.base_features = rules.BASE_FEATURES if options.device == "cuda" else rules.CPU_FEATURES
        self.model = (
            rules.GPU_AMP
            if options.device == "cuda"
            else replace(rules.CPU_FP32, base_features=self.base_features)
        )
        self.budget = options.memory_gb * 1e9
        self.in_channels = fingerprint.num_channels
        self.out_channels = len(self.labels) if self.planning.labels else 1
        zero_bg = sum(all(c.background == "zero" for c in s.channels) for s in subjects)
        self.crop_why = (
            f"crop to the body: the median body box keeps "
            f"{np.median([np.prod(c) / np.prod(s.shape) for c, s in zip(self.cropped, subjects)]) * 100:.0f} % "
            f"of the voxels ({zero_bg} of {self.n} subjects have an exactly-zero background)"
        )

    def _median_shape(self, spacing: Sequence[float | None]) -> list[float]:
        shapes = []
        for s, c in zip(self.spacings, self.cropped):
            target = [t if t is not None else o for t, o in zip(spacing, s)]
            shapes.append(rules.resampled_shape(c, s, target))
        return _median(shapes)

    # ------------------------------------------------------------------ shared sections

    def _base(self, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        config = copy.deepcopy(dict(self.template))
        config["application"] = self.options.application
        comments: dict[str, str] = {
            "": f"voxelflow plan: configuration {name!r} for {self.n} subject(s), "
            f"{self.in_channels} channel(s); every decision below says why",
        }
        pre = dict(config.get("preprocessing") or {})
        pre["orientation"] = self.options.orientation
        original = sorted({s.original_orientation for s in self.fp.subjects})
        comments["preprocessing.orientation"] = (
            f"files are {', '.join(original)}; reoriented to {self.options.orientation} "
            "(axis permutations and flips only, exact)"
        )
        pre["crop_foreground"] = "body"
        comments["preprocessing.crop_foreground"] = self.crop_why
        pre["normalization"] = copy.deepcopy(self.norm_steps)
        comments["preprocessing.normalization"] = "; ".join(self.norm_reasons)
        if self.planning.labels:
            pre["label_values"] = self.labels
            comments["preprocessing.label_values"] = (
                f"label values found in the dataset: {self.labels}"
            )
        config["preprocessing"] = pre
        if self.n == 1:
            split = dict(config.get("split") or {})
            split.update({"validation": 0.0, "test": 0.0, "folds": None})
            config["split"] = split
            comments["split"] = "one subject: no validation or test split"
        iterations = self.options.iterations or DEFAULT_ITERATIONS[self.options.device]
        training = dict(config.get("training") or {})
        training["max_iterations"] = iterations
        training["amp"] = "auto" if self.options.device == "cuda" else "off"
        # a validation is a full sliding-window pass over the validation subjects: 4 to 10 of
        # them per run, whatever the template's value was tuned for (its own iteration count)
        for key in ("validate_every", "checkpoint_every"):
            every = int(training.get(key, 100))
            training[key] = max(1, min(max(every, iterations // 10), iterations // 4 or 1))
        comments["training.max_iterations"] = f"{iterations} iterations" + (
            " (--iterations)" if self.options.iterations else f" (default on {self.options.device})"
        )
        if self.options.device == "cpu":
            # every DataLoader worker takes a core from the network's intra-op threads (voxelflow
            # gives the main process cores - workers); the cached window pipeline costs a few %
            # of a CPU step, so the network gets all cores (2-core CPU, the demo's plan: 2.1
            # iterations/s with 0 workers and 2 threads vs 1.2 with 2 workers and 1 thread)
            training["num_workers"] = 0
            comments["training.num_workers"] = (
                "0 on CPU: windows are cut in the main process, the network's threads get every core"
            )
        config["training"] = training
        system = dict(config.get("system") or {})
        system["device"] = "auto" if self.options.device == "cuda" else "cpu"
        system["run_dir"] = str(Path(system.get("run_dir") or "runs") / name)
        comments["system.run_dir"] = "one run folder per configuration"
        config["system"] = system
        return config, comments

    def _unet(
        self,
        name: str,
        spacing: list[float | None],
        net_spacing: list[float],
        median: list[float],
        slice_axis: int | None,
    ) -> Configuration:
        config, comments = self._base(name)
        dims = len(net_spacing)
        # the whole volumes' voxels, also for 2d (nnU-Net passes the 3D count to its 2D plan:
        # a 2D batch may hold many slices of the dataset)
        dataset_voxels = float(np.prod(self.median_shape)) * self.n
        try:
            window_plan = rules.plan_window(
                net_spacing,
                [round(m) for m in median],
                budget_bytes=self.budget,
                in_channels=self.in_channels,
                out_channels=self.out_channels,
                dataset_voxels=dataset_voxels,
                model=self.model,
            )
        except ValueError as exc:
            raise ConfigError(f"plan --gpu-memory: {exc}") from None
        topo = window_plan.topology
        window = list(topo.window)
        strides = [list(s) for s in topo.strides]
        kernels = [list(k) for k in topo.kernel_sizes]
        if slice_axis is not None:
            window.insert(slice_axis, 1)
        pre = config["preprocessing"]
        pre["spacing"] = spacing
        comments["preprocessing.spacing"] = (
            self.spacing_why
            if slice_axis is None and name == "3d_fullres"
            else f"{self.spacing_why}; {name}: {_fmt(spacing)}"
        )
        if slice_axis is not None:
            comments["preprocessing.spacing"] += f" (axis {slice_axis} keeps each file's slices)"
        sampling = dict(config.get("sampling") or {})
        sampling["window"] = window
        median_text = "×".join(f"{m:.0f}" for m in median)
        comments["sampling.window"] = (
            f"{window_plan.reason}; median image {median_text} voxels at this spacing"
            + (f"; 2D: one slice along axis {slice_axis}" if slice_axis is not None else "")
        )
        if self.planning.labels:
            foreground = [v for v in self.labels if v != 0]
            ratios = {0: 2.0, **{v: round(1.0 / len(foreground), 4) for v in foreground}}
            sampling["sampler"] = {"name": "balanced", "class_ratios": ratios}
            comments["sampling.sampler"] = (
                "a third of the windows centred on foreground (nnU-Net's oversampling), "
                "split equally between the foreground classes"
            )
        config["sampling"] = sampling
        features = rules.features_per_level(topo.levels, dims, self.base_features)
        network = {
            "name": "unet",
            "channels": features,
            "strides": strides,
            "kernel_sizes": kernels,
        }
        given = dict(config.get("network") or {})
        if given.get("name") == "unet":  # the template's other U-Net options (norm ...) stay
            network = {**given, **network}
        config["network"] = network
        comments["network"] = (
            f"U-Net of {topo.levels} levels: bottleneck {list(topo.bottleneck)} voxels; strides per "
            f"level follow the spacing (an axis is halved only while its spacing is within 2× of "
            f"the finest), kernels 1 along axes still too coarse"
            + (
                f"; features from {self.base_features} (a CPU run is limited by compute)"
                if self.base_features != rules.BASE_FEATURES
                else ""
            )
        )
        training = config["training"]
        training["batch_size"] = window_plan.batch_size
        comments["training.batch_size"] = window_plan.reason
        optimizer, why = plan_optimizer(training["max_iterations"])
        config["optimizer"] = optimizer
        config["scheduler"] = {"name": "poly"}
        comments["optimizer"] = why
        anisotropic = None
        if slice_axis is None and dims == 3:
            worst = int(np.argmax(net_spacing))
            others = [net_spacing[a] for a in range(3) if a != worst]
            if net_spacing[worst] > rules.ANISOTROPY_RATIO * max(others):
                anisotropic = worst
        augmentation, why = _augmentation(len(window), slice_axis, anisotropic)
        if training["max_iterations"] < AUGMENTATION_MIN_ITERATIONS:
            # nnU-Net's augmentation regularises a 250 000-iteration run; a run of a few hundred
            # iterations has not yet fit its training windows, so augmentation only slows it
            # (regression --quick demo, 150 iterations: head MAE 0.17 with it, 0.105 without,
            # against 0.127 for the intensity baseline)
            augmentation = []
            why = (
                f"none: {training['max_iterations']} iterations are fewer than "
                f"{AUGMENTATION_MIN_ITERATIONS}, too few to overfit (plan with more iterations "
                f"for nnU-Net's augmentation: {why})"
            )
        config["augmentation"] = augmentation
        comments["augmentation"] = why
        inference = dict(config.get("inference") or {})
        inference.update({"window": window, "overlap": 0.5, "blend": "gaussian"})
        comments["inference"] = "sliding windows of the training size, half overlap, gaussian blend"
        config["inference"] = inference
        if self.planning.labels:
            config.setdefault("loss", {"name": "dice_ce"})
        plan_strides = [list(s) for s in strides]
        if slice_axis is not None:
            plan_strides = [[*s[:slice_axis], 1, *s[slice_axis:]] for s in plan_strides]
        return Configuration(
            name=name,
            spacing=spacing,
            window=window if dims == 3 or slice_axis is not None else [*window, 1],
            batch_size=window_plan.batch_size,
            strides=plan_strides,
            normalization=copy.deepcopy(self.schemes),
            config=config,
            comments=comments,
            estimated_gb=window_plan.estimated_bytes / 1e9,
        )

    def _generative_normalization(
        self, config: dict[str, Any], comments: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Outputs that are images mapped back to the input's units need an invertible
        normalisation (``PlanningRules.normalization``):

        * ``"invertible"`` (autoencoder): z-score inside the body mask but without ``outside``
          (setting the background to one value is not affine, so a reconstruction could only
          be mapped back approximately);
        * ``"fixed_window"`` (GAN): a sample has no subject whose statistics could undo a
          per-image z-score, so every MR-like channel gets one fixed dataset-wide window (0 ..
          the pooled body 99.5 percentile → [0, 1]): images keep their relative brightness
          (what tells a conditioning class apart) and samples map back exactly. CT channels
          keep the CT scheme (already dataset-wide).

        Returns:
            the per-channel schemes for ``plan.json`` (``"window"`` for a fixed window).
        """
        schemes = copy.deepcopy(self.schemes)
        steps = config["preprocessing"]["normalization"]
        reasons = []
        for step in steps:
            if step["name"] != "zscore":
                continue
            index = step["channels"][0]
            if self.planning.normalization == "invertible":
                step.pop("outside", None)
                reasons.append(
                    f"channel {index}: z-score inside the body mask, background not replaced "
                    "(affine, so reconstructions map back to the input's units exactly)"
                )
                continue
            stats = _pooled([s.channels[index].body for s in self.fp.subjects])
            high = stats["p99_5"] if stats else 1.0
            low = min(0.0, stats["p00_5"]) if stats else 0.0
            low, high = round(low, 2), round(max(high, low + 1e-3), 2)
            step.clear()
            if self.in_channels == 1:
                step.update({"name": "ct_window", "low": low, "high": high})
            else:  # ct_window has no per-channel option: the same map as a dataset-wide "ct"
                step.update({"name": "ct", "low": low, "high": high, "mean": low,
                             "std": round(high - low, 3), "channels": [index]})  # fmt: skip
            schemes[index]["scheme"] = "window"
            reasons.append(
                f"channel {index}: one fixed window [{low:.0f}, {high:.0f}] → [0, 1] for every "
                "image (0 to the pooled body 99.5 percentile): a GAN sample has no subject to "
                "undo a per-image z-score; images keep their relative brightness"
            )
        if reasons:
            comments["preprocessing.normalization"] = "; ".join(reasons)
        return schemes

    def _whole_image(self, name: str) -> Configuration:
        """Classification, autoencoder, GAN: spacing, normalisation, a window within the image."""
        config, comments = self._base(name)
        schemes = copy.deepcopy(self.schemes)
        if self.planning.normalization != "fingerprint":
            schemes = self._generative_normalization(config, comments)
        config["preprocessing"]["spacing"] = list(self.fullres)
        comments["preprocessing.spacing"] = self.spacing_why
        median = [int(m) for m in self.median_shape]
        if self.planning.whole_field_of_view:
            # the autoencoder models whole images: a crop per subject would align the heads and
            # change what is reconstructed; keep the template's field of view
            keep = (self.template.get("preprocessing") or {}).get("crop_foreground", False)
            config["preprocessing"]["crop_foreground"] = keep
            comments["preprocessing.crop_foreground"] = (
                f"kept from the template ({keep}): an autoencoder reconstructs the whole image"
            )
            if not keep:
                uncropped = [
                    rules.resampled_shape(s.shape, s.spacing, self.fullres)
                    for s in self.fp.subjects
                ]
                median = [int(m) for m in _median(uncropped)]
        sampling = dict(config.get("sampling") or {})
        window = list(sampling.get("window") or [64] * self.fp.spatial_dims)
        clipped = [
            w if w in (0, -1) or w <= m else max(16, (m // 16) * 16) for w, m in zip(window, median)
        ]
        sampling["window"] = clipped
        comments["sampling.window"] = (
            f"the template's window {window}, clipped to the median image "
            f"{'×'.join(map(str, median))} (multiples of 16); network kept from the template: "
            "the memory model covers U-Nets"
        )
        config["sampling"] = sampling
        return Configuration(
            name=name,
            spacing=list(self.fullres),
            window=clipped if len(clipped) == 3 else [*clipped, 1],
            batch_size=int((config.get("training") or {}).get("batch_size", 2)),
            strides=[],
            normalization=schemes,
            config=config,
            comments=comments,
        )

    def build(self) -> Plan:
        dims = self.fp.spatial_dims
        configs: list[Configuration] = []
        if self.planning.network != "unet":
            configs.append(self._whole_image("3d_fullres" if dims == 3 else "2d"))
        elif dims == 2:
            configs.append(
                self._unet("2d", list(self.fullres), list(self.fullres), self.median_shape, None)
            )
        elif not self.planning.slices:
            # e.g. regression has no 2D-on-slices mode (only segmentation removes a size-1
            # slice axis before the network): a [x, y, 1] window would build a 3D U-Net with 2D
            # strides, so such a 3D dataset gets 3d_fullres (and 3d_lowres) only
            fullres = self._unet(
                "3d_fullres", list(self.fullres), list(self.fullres), self.median_shape, None
            )
            configs.append(fullres)
            lowres = self._lowres(fullres)
            if lowres is not None:
                configs.append(lowres)
        else:
            fullres = self._unet(
                "3d_fullres", list(self.fullres), list(self.fullres), self.median_shape, None
            )
            slice_axis = (
                int(np.argmax(self.fullres))
                if max(self.fullres) > min(self.fullres) * 1.0001
                else 2
            )
            spacing_2d: list[float | None] = [
                None if a == slice_axis else s for a, s in enumerate(self.fullres)
            ]
            in_plane = [s for a, s in enumerate(self.fullres) if a != slice_axis]
            median_2d = [m for a, m in enumerate(self.median_shape) if a != slice_axis]
            configs.append(self._unet("2d", spacing_2d, in_plane, median_2d, slice_axis))
            configs.append(fullres)
            lowres = self._lowres(fullres)
            if lowres is not None:
                configs.append(lowres)
        summary = {
            "subjects": self.n,
            "channels": self.in_channels,
            "median_spacing": _median(self.spacings),
            "median_shape_after_crop": _median(self.cropped),
            "target_spacing": list(self.fullres),
            "label_values": self.labels,
        }
        return Plan(configs, self.notes, self.options, summary)

    def _lowres(self, fullres: Configuration) -> Configuration | None:
        covered = float(np.prod(fullres.window)) / float(np.prod(self.median_shape))
        if covered >= LOWRES_THRESHOLD:
            return None
        spacing = np.asarray(self.fullres, dtype=np.float64)
        median = np.asarray(self.median_shape, dtype=np.float64)
        window = np.asarray(fullres.window, dtype=np.float64)
        lowres_median = median
        for _ in range(200):
            largest = spacing.max()
            if np.any(largest / spacing > 2):
                spacing[largest / spacing > 2] *= LOWRES_STEP
            else:
                spacing *= LOWRES_STEP
            lowres_median = np.asarray(self.fullres) / spacing * median
            if np.prod(window) / np.prod(lowres_median) >= LOWRES_THRESHOLD:
                break
        if np.prod(median) / np.prod(lowres_median) < 2:
            return None  # hardly smaller than full resolution: not worth a configuration
        config = self._unet(
            "3d_lowres", spacing.tolist(), spacing.tolist(), lowres_median.tolist(), None
        )
        config.comments["preprocessing.spacing"] = (
            f"the full-resolution window covers {covered * 100:.0f} % of the median image "
            f"(< {LOWRES_THRESHOLD * 100:.0f} %): coarser spacing {_fmt(spacing.tolist())} so a "
            "window sees more context"
        )
        return config


def plan_dataset(
    fingerprint: Fingerprint, template: Mapping[str, Any], options: PlanOptions
) -> Plan:
    """Plan every configuration that applies to ``fingerprint``.

    Args:
        fingerprint: from :func:`~voxelflow.planning.fingerprint.fingerprint_dataset`.
        template: the experiment the plan starts from (the user's config as a plain dict, or one
            holding only the dataset section); the plan overwrites the sections it decides.
        options: application, device, memory budget, modalities, iterations.

    Raises:
        DataError: a segmentation dataset without labels or without any foreground.
        ConfigError: a memory budget too small for the smallest sensible window (with the
            minimum), or ``memory_gb`` not positive.
    """
    if not options.memory_gb > 0:
        raise ConfigError(
            f"plan --gpu-memory: expected a positive number of GB, got {options.memory_gb}"
        )
    if options.device not in ("cuda", "cpu"):
        raise ConfigError(f"plan --device: expected 'cuda' or 'cpu', got {options.device!r}")
    return _Builder(fingerprint, template, options).build()
