"""``voxelflow profile``: is training limited by its data path or by its training step?

:func:`profile_experiment` builds the run's input pipeline exactly as training does
(:func:`voxelflow.engine.run.build_training_pipeline`: preprocessing cache, sampler, augmentation,
patch queue, DataLoader with the configured workers), then times separately

* the data path: windows/s and batches/s out of the DataLoader after a warm-up (worker start and
  queue filling excluded), once with the configured augmentation and once without it, so the
  share of augmentation in the data path is known;
* the training step: the real :class:`~voxelflow.engine.trainer.Trainer` iteration (forward,
  loss, backward, optimiser step, logging) on one pre-made batch already on the configured
  device, in ms/iteration.

:func:`diagnose` compares the two (time per batch of the data path against time per step),
names the bottleneck and gives advice. Nothing is written into the run folder except the
preprocessing cache (and the split and fitted state when the folder has none yet); the trainer
runs in a temporary folder.

Example:
    >>> report = profile_experiment(load_experiment("exp.yaml"), iterations=20)  # doctest: +SKIP
    >>> print("\\n".join(report.lines()))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from voxelflow.config.schema import ExperimentConfig
from voxelflow.engine.hooks import Hook
from voxelflow.engine.threads import ThreadChoice, available_cores, worker_init
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.applications.base import Application
    from voxelflow.engine.trainer import Trainer
    from voxelflow.sampling.queue import PatchQueue

logger = logging.getLogger(__name__)

#: data and step within this ratio of each other count as balanced.
BALANCED_RATIO = 1.15


@dataclass(frozen=True)
class DataTiming:
    """Throughput of the data path (DataLoader output) after warm-up.

    Attributes:
        windows_per_second: training windows delivered per second.
        batches_per_second: collated batches delivered per second.
        first_batch_seconds: time to the first batch (worker start, queue filling).
        batches: batches timed.
    """

    windows_per_second: float
    batches_per_second: float
    first_batch_seconds: float
    batches: int

    @property
    def ms_per_batch(self) -> float:
        """Milliseconds per batch."""
        return 1e3 / self.batches_per_second


@dataclass(frozen=True)
class StepTiming:
    """Cost of one training iteration on a pre-made batch.

    Attributes:
        ms_per_iteration: forward, backward and optimiser step, milliseconds.
        device: where it ran.
        iterations: iterations timed.
    """

    ms_per_iteration: float
    device: str
    iterations: int


@dataclass(frozen=True)
class PipelineSettings:
    """The settings the advice refers to (read from the experiment)."""

    num_workers: int
    batch_size: int
    window: tuple[int, ...]
    windows_per_subject: int
    augmentation: tuple[str, ...]
    device: str
    cpu_count: int
    cache_dir: str | None

    @classmethod
    def from_experiment(cls, experiment: ExperimentConfig, *, device: str) -> PipelineSettings:
        """Settings of ``experiment`` (``device``: the resolved training device)."""
        cache_dir = experiment.preprocessing.cache_dir
        return cls(
            num_workers=experiment.training.num_workers,
            batch_size=experiment.training.batch_size,
            window=tuple(experiment.sampling.window),
            windows_per_subject=experiment.sampling.windows_per_subject,
            augmentation=tuple(component.name for component in experiment.augmentation),
            device=device,
            cpu_count=available_cores().cores,
            cache_dir=str(cache_dir) if cache_dir else None,
        )


@dataclass
class ProfileReport:
    """Timings, the bottleneck (``"data"``, ``"step"`` or ``"balanced"``) and advice."""

    data: DataTiming
    step: StepTiming
    settings: PipelineSettings
    bottleneck: str
    advice: list[str]
    data_without_augmentation: DataTiming | None = None
    notes: list[str] = field(default_factory=list)
    threads: ThreadChoice | None = None

    @property
    def augmentation_share(self) -> float | None:
        """Fraction of the data path's time per window spent on augmentation (None: not measured)."""
        return augmentation_share(self.data, self.data_without_augmentation)

    def lines(self) -> list[str]:
        """The report as text lines (what ``voxelflow profile`` prints)."""
        s, data = self.settings, self.data
        lines = [
            f"data path: {data.windows_per_second:.1f} windows/s, {data.batches_per_second:.2f} "
            f"batches/s ({data.ms_per_batch:.1f} ms/batch; batch {s.batch_size}, "
            f"{s.num_workers} workers; first batch after {data.first_batch_seconds:.2f} s)",
        ]
        bare, share = self.data_without_augmentation, self.augmentation_share
        if bare is not None and share is not None:
            lines.append(
                f"data path without augmentation: {bare.windows_per_second:.1f} windows/s "
                f"(augmentation: {share:.0%} of the data path)"
            )
        lines.append(
            f"training step: {self.step.ms_per_iteration:.1f} ms/iteration on {self.step.device} "
            "(forward, backward, optimiser step, pre-made batch)"
        )
        lines.append(f"bottleneck: {_verdict(self)}")
        if self.threads is not None:
            lines.append(self.threads.describe())
        lines += [f"note: {note}" for note in self.notes]
        lines.append("advice:")
        lines += [f"  - {item}" for item in self.advice]
        return lines


def _verdict(report: ProfileReport) -> str:
    data_ms, step_ms = report.data.ms_per_batch, report.step.ms_per_iteration
    figures = f"{data_ms:.1f} ms per batch of data vs {step_ms:.1f} ms per training step"
    names = {"data": "data path", "step": "training step", "balanced": "none (balanced)"}
    return f"{names[report.bottleneck]} ({figures})"


def augmentation_share(with_aug: DataTiming, without_aug: DataTiming | None) -> float | None:
    """Fraction of the time per window that augmentation takes, from the two throughputs."""
    if without_aug is None:
        return None
    cost, bare = 1.0 / with_aug.windows_per_second, 1.0 / without_aug.windows_per_second
    return min(1.0, max(0.0, (cost - bare) / cost))


# --- timing ---------------------------------------------------------------------------------------
def time_data_path(
    loader: Iterable[Mapping[str, Any]], *, iterations: int, warmup: int = 2, role: str = "image"
) -> DataTiming:
    """Time batches out of ``loader`` after ``warmup`` batches.

    Args:
        loader: an iterable of collated batches (a DataLoader over a patch queue).
        iterations: batches timed.
        warmup: batches drawn first, untimed (worker start, queue filling, page cache).
        role: batch key whose first dimension counts the windows.

    Raises:
        ConfigError: ``iterations`` below 1 or the loader ran out of batches.
    """
    if iterations < 1 or warmup < 0:
        raise ConfigError(f"expected iterations >= 1 and warmup >= 0, got {iterations}, {warmup}")
    batches = iter(loader)
    start = time.perf_counter()
    _next_batch(batches)
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        _next_batch(batches)
    windows, start = 0, time.perf_counter()
    for _ in range(iterations):
        windows += int(_next_batch(batches)[role].shape[0])
    elapsed = max(time.perf_counter() - start, 1e-9)
    return DataTiming(windows / elapsed, iterations / elapsed, first, iterations)


def _next_batch(batches: Iterator[Mapping[str, Any]]) -> Mapping[str, Any]:
    try:
        return next(batches)
    except StopIteration:
        raise ConfigError("the training data ran out of batches while profiling") from None


class _StepClock(Hook):
    """Times trainer iterations ``warmup + 1 .. warmup + iterations`` (CUDA synchronised)."""

    def __init__(self, warmup: int, iterations: int) -> None:
        self.warmup, self.iterations = warmup, iterations
        self.start = self.end = 0.0

    def _now(self, trainer: Trainer) -> float:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        return time.perf_counter()

    def on_train_start(self, trainer: Trainer) -> None:
        if self.warmup == 0:
            self.start = self._now(trainer)

    def on_step_end(
        self, trainer: Trainer, batch: Mapping[str, Any], losses: Mapping[str, torch.Tensor]
    ) -> None:
        if trainer.step == self.warmup:
            self.start = self._now(trainer)
        elif trainer.step == self.warmup + self.iterations:
            self.end = self._now(trainer)


def time_training_step(
    application: Application,
    batch: Mapping[str, Any],
    experiment: ExperimentConfig,
    *,
    iterations: int,
    warmup: int = 2,
    batch_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> StepTiming:
    """Time the real trainer iteration on one pre-made batch on the configured device.

    With ``batch_transform`` (the batched device augmentation) the step includes it, as in training.

    The :class:`~voxelflow.engine.trainer.Trainer` runs with the experiment's optimiser, precision,
    accumulation and logging interval, in a temporary folder, without validation or checkpoints.

    Shape:
        batch: role → ``(B, C, *window)`` as the DataLoader delivers it.
    """
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.engine.device import move_to_device, select_device
    from voxelflow.engine.trainer import Trainer

    device = select_device(experiment.system.device)
    # a dict batch stays a dict of tensors: moving keeps the structure
    on_device = cast(Mapping[str, Any], move_to_device(batch, device))
    training = experiment.training.model_copy(update={
        "max_iterations": warmup + iterations, "validate_every": 0,
        "checkpoint_every": 10**9, "early_stopping_patience": None,
    })  # fmt: skip
    clock = _StepClock(warmup, iterations)
    with tempfile.TemporaryDirectory(prefix="voxelflow-profile-") as scratch:
        trainer = Trainer(
            application, _Repeat(on_device), run_dir=scratch, training=training,
            optimization=OptimizationSettings.from_experiment(experiment), device=device,
            hooks=[clock], resume=False, progress=False, tensorboard=False,
            batch_transform=batch_transform,
        )  # fmt: skip
        trainer.fit()
    return StepTiming((clock.end - clock.start) / iterations * 1e3, str(device), iterations)


class _Repeat:
    """The same batch forever (an iterable the trainer can re-iterate)."""

    def __init__(self, batch: Mapping[str, Any]) -> None:
        self.batch = batch

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return itertools.repeat(self.batch)


# --- diagnosis ------------------------------------------------------------------------------------
def diagnose(
    data: DataTiming, step: StepTiming, settings: PipelineSettings, *, share: float | None = None
) -> tuple[str, list[str]]:
    """Name the bottleneck and advise.

    The data path is the bottleneck when a batch takes longer to produce than a training step
    takes to consume it (beyond :data:`BALANCED_RATIO`); the step is, in the opposite case.

    Args:
        data: data path timing (with the configured augmentation).
        step: training step timing.
        settings: the run's settings the advice refers to.
        share: fraction of the data path spent on augmentation, when measured.

    Returns:
        ``("data" | "step" | "balanced", advice lines)``.
    """
    ratio = data.ms_per_batch / max(step.ms_per_iteration, 1e-9)
    if ratio > BALANCED_RATIO:
        return "data", _data_advice(ratio, settings, share)
    if ratio < 1.0 / BALANCED_RATIO:
        return "step", _step_advice(ratio, settings)
    return "balanced", [
        "data path and training step are matched: speeding up one alone gains little; "
        "a faster device needs more data workers too",
        *_window_advice(settings, both=True),
    ]


def _data_advice(ratio: float, settings: PipelineSettings, share: float | None) -> list[str]:
    workers, cores = settings.num_workers, settings.cpu_count
    needed = math.ceil(max(workers, 1) * ratio)
    advice = []
    if workers == 0:
        advice.append(
            f"training.num_workers is 0: windows are made in the training process, between steps; "
            f"set training.num_workers: {max(1, min(needed, cores - 1))} ({cores} CPU cores)"
        )
    elif needed <= cores:
        advice.append(
            f"raise training.num_workers from {workers} to about {needed} (the data path must be "
            f"{ratio:.1f}x faster; {cores} CPU cores)"
        )
    else:
        advice.append(
            f"about {needed} workers would be needed but there are {cores} CPU cores: make each "
            f"window cheaper (below)"
        )
    if share is not None and share >= 0.5:
        names = ", ".join(settings.augmentation) or "none"
        advice.append(
            f"augmentation takes {share:.0%} of the data path ({names}): drop or cheapen the "
            "costly transforms (elastic, affine with p=1) or lower their p"
        )
    if share is not None and share >= 0.5:
        # the per-window path: point to the fused CPU kernel (the batched path is for CUDA)
        advice.append(
            "keep system.resample_kernel at auto or numba: one fused pass resamples every role "
            "of a window (the torch path is ~2.5x slower)"
        )
    if share is not None and share < 0.5:
        advice.append(
            f"reading and cropping take {1 - share:.0%} of the data path: keep the preprocessing "
            "cache (preprocessing.cache_dir) on a local SSD with RAM to spare for its pages; "
            f"more sampling.windows_per_subject (now {settings.windows_per_subject}) opens each "
            "subject fewer times per window"
        )
    return advice + _window_advice(settings, both=False)


def _step_advice(ratio: float, settings: PipelineSettings) -> list[str]:
    advice = [f"the data path has {1 / ratio:.1f}x headroom: heavier augmentation costs nothing"]
    if settings.device == "cpu":
        advice.append(
            "the network runs on the CPU: a CUDA GPU (system.device: cuda) is the main speed-up"
        )
        if settings.num_workers > 1:
            fewer = max(1, math.ceil(settings.num_workers * ratio * BALANCED_RATIO))
            if fewer < settings.num_workers:
                advice.append(
                    f"workers share the {settings.cpu_count} CPU cores with the step: "
                    f"training.num_workers: {fewer} would still feed it"
                )
    else:
        advice.append("on CUDA: training.amp: bf16 (or fp16) and training.compile: true")
    return advice + _window_advice(settings, both=True)


def _window_advice(settings: PipelineSettings, *, both: bool) -> list[str]:
    voxels = math.prod(max(size, 1) for size in settings.window)
    if voxels < 32**3:
        return []
    shape = "x".join(str(size) for size in settings.window)
    half = "x".join(str(max(1, size // 2)) for size in settings.window)
    what = "to read, augment and train on" if both else "to read and augment"
    return [
        f"a smaller sampling.window ({shape} now; {half} is about "
        f"{2 ** len(settings.window)}x cheaper {what}, with less context per window)"
    ]


# --- the whole profile ----------------------------------------------------------------------------
def profile_experiment(
    experiment: ExperimentConfig,
    *,
    iterations: int = 20,
    warmup: int = 3,
    run_dir: Path | None = None,
    base_dir: Path | None = None,
    without_augmentation: bool = True,
) -> ProfileReport:
    """Build the training pipeline of ``experiment`` and time its data path and training step.

    Args:
        experiment: the resolved experiment.
        iterations: batches (data path) and iterations (training step) timed.
        warmup: untimed batches and iterations first.
        run_dir: folder for the split, fitted state and default cache (an existing run's are
            reused); None: a temporary folder, removed afterwards.
        base_dir: folder that relative table paths are resolved against.
        without_augmentation: also time the data path without augmentation (its share).

    Returns:
        The report; ``"\\n".join(report.lines())`` is what the CLI prints.
    """
    from voxelflow.engine.run import build_training_pipeline

    with tempfile.TemporaryDirectory(prefix="voxelflow-profile-run-") as scratch:
        folder = Path(run_dir) if run_dir is not None else Path(scratch)
        start = time.perf_counter()
        pipeline = build_training_pipeline(experiment, folder, base_dir=base_dir)
        prepared = time.perf_counter() - start
        try:
            data, batch = _timed(pipeline.loader, iterations=iterations, warmup=warmup)
            bare = None
            if without_augmentation and pipeline.queue.transform is not None:
                bare_loader = _without_augmentation(pipeline.loader)
                bare, _ = _timed(bare_loader, iterations=iterations, warmup=warmup)
                _release(bare_loader)
        finally:
            _release(pipeline.loader)
        step = time_training_step(
            pipeline.application, batch, experiment, iterations=iterations, warmup=warmup,
            batch_transform=pipeline.batch_transform,
        )
    settings = PipelineSettings.from_experiment(experiment, device=step.device)
    share = augmentation_share(data, bare)
    bottleneck, advice = diagnose(data, step, settings, share=share)
    notes = _notes(settings, prepared, temporary=run_dir is None)
    notes.append(_kernel_note(experiment))
    if pipeline.augmentation_path is not None:  # always set by build_training_pipeline
        notes.append(pipeline.augmentation_path.describe())  # which path training will use
    return ProfileReport(data, step, settings, bottleneck, advice, bare, notes, pipeline.threads)


def _timed(
    loader: torch.utils.data.DataLoader, *, iterations: int, warmup: int
) -> tuple[DataTiming, Mapping[str, Any]]:
    """:func:`time_data_path`, plus one batch of the same loader for the step timing."""
    recorded: list[Mapping[str, Any]] = []

    def batches() -> Iterator[Mapping[str, Any]]:
        for batch in loader:
            recorded[:] = [batch]
            yield batch

    return time_data_path(batches(), iterations=iterations, warmup=warmup), recorded[0]


def _without_augmentation(loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
    """The same DataLoader over a copy of its patch queue that does not augment."""
    queue = cast("PatchQueue", copy.copy(loader.dataset))  # the training pipeline's queue
    queue.transform = None
    return torch.utils.data.DataLoader(
        queue, batch_size=loader.batch_size, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, worker_init_fn=worker_init,
    )  # fmt: skip


def _release(loader: torch.utils.data.DataLoader) -> None:
    """Stop the workers a persistent DataLoader keeps (they would idle until garbage collection)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def _kernel_note(experiment: ExperimentConfig) -> str:
    """Which code resamples augmented windows (``system.resample_kernel``)."""
    from voxelflow.transforms.fused_resample import _kernel_module

    kernel = experiment.system.resample_kernel
    if kernel != "torch" and _kernel_module() is not None:
        used = "the fused numba kernel"
    else:
        used = "torch grid_sample"
    return f"augmented windows are resampled by {used} (system.resample_kernel: {kernel})"


def _notes(settings: PipelineSettings, prepared_seconds: float, *, temporary: bool) -> list[str]:
    notes = [
        f"data preparation (split, fitting, preprocessing cache) took {prepared_seconds:.1f} s"
    ]
    if temporary and settings.cache_dir is None:
        notes.append(
            "the cache was built in a temporary folder and removed: set "
            "preprocessing.cache_dir (or --run-dir) to keep it between runs"
        )
    if settings.device == "cpu" and settings.num_workers > 0:
        notes.append(
            f"measured one at a time: in training, workers and the step share the "
            f"{settings.cpu_count} CPU cores, so both are slower together"
        )
    return notes
