"""The training workflow from a config, for every application, as used by the CLI and the API.

``train_experiment`` builds the table, the saved split, the preprocessing cache (fitted on the
training split only), the application's task state (class names, target statistics), the patch
queue, the application and the :class:`Trainer`, and writes everything into the run folder.
Inference lives in :mod:`voxelflow.engine.inference`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch

from voxelflow.config.build import build_hooks
from voxelflow.config.schema import ExperimentConfig
from voxelflow.data.dataset import PreprocessedDataset, load_fitted_state, save_fitted_state
from voxelflow.data.subject import refuse_output_inside_dataset
from voxelflow.engine import distributed
from voxelflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from voxelflow.applications.base import Application
    from voxelflow.data.cached import CachedSubject
    from voxelflow.engine.augment_device import AugmentationPath, DeviceAugmentation
    from voxelflow.engine.threads import ThreadChoice
    from voxelflow.sampling.base import Sampler
    from voxelflow.sampling.queue import PatchQueue
    from voxelflow.transforms.compose import Compose

log = logging.getLogger(__name__)

FITTED_STATE_FILE = "preprocessing.json"


class SubjectView(Sequence["CachedSubject"]):
    """Lazy, picklable view of some rows of a :class:`PreprocessedDataset` (for the queue)."""

    def __init__(self, dataset: PreprocessedDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, i: int) -> CachedSubject: ...
    @overload
    def __getitem__(self, i: slice) -> list[CachedSubject]: ...
    def __getitem__(self, i: int | slice) -> CachedSubject | list[CachedSubject]:
        if isinstance(i, slice):  # a Sequence's slice: the subjects of those rows, loaded
            return [self.dataset[row] for row in self.indices[i]]
        return self.dataset[self.indices[i]]


@dataclass
class PreparedData:
    """The dataset of a run and its split into row indices."""

    dataset: PreprocessedDataset
    train: list[int]
    validation: list[int]
    test: list[int]

    @property
    def label_values(self) -> list[int] | None:
        values = self.dataset.fitted_state.get("label_values")
        return [int(v) for v in values] if values is not None else None

    @property
    def in_channels(self) -> int:
        return len(self.dataset.inputs["image"])

    @property
    def task_state(self) -> dict[str, Any]:
        return dict(self.task or {})

    task: dict[str, Any] | None = None


def prepare_data(experiment: ExperimentConfig, run_dir: Path, *, base_dir: Path | None = None) -> PreparedData:
    """Table → saved split → preprocessing fitted on the training split → built cache."""
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table

    application_class(experiment).check_training_roles(experiment.dataset.inputs)
    rows = load_table(experiment.dataset, base_dir=base_dir)
    refuse_output_inside_dataset(run_dir, experiment, rows, what="system.run_dir", base_dir=base_dir)
    split = make_split(rows, experiment.split, path=run_dir / "split.csv")
    index = {row.name: i for i, row in enumerate(rows)}
    parts = {name: [index[s] for s in split.get(name, [])] for name in ("train", "validation", "test")}
    if not parts["train"]:
        raise DataError(f"the split has no training subject ({len(rows)} subjects in the table)")
    cache_dir = experiment.preprocessing.cache_dir or run_dir / "cache"
    dataset = PreprocessedDataset(
        rows,
        inputs=experiment.dataset.inputs,
        preprocessing=experiment.preprocessing,
        cache_dir=Path(cache_dir),
        resample_to_first=experiment.dataset.resample_to_first,
    )
    state_path = run_dir / FITTED_STATE_FILE
    if state_path.exists():  # resume: never re-fit on a changed table
        saved = load_fitted_state(state_path)
        dataset.preprocessor = type(dataset.preprocessor)(experiment.preprocessing, fitted_state=saved)
        task = saved.get("task") or {}
    else:
        dataset.fit(parts["train"])
        check_class_count(experiment, dataset.fitted_state.get("label_values"))
        task = application_class(experiment).fit_task(experiment, dataset, parts["train"])
        save_fitted_state({**dataset.fitted_state, "task": task}, state_path)
    dataset.build(num_workers=0, progress=True)
    check_window_dimensions(experiment, dataset[parts["train"][0]].spatial_shape)
    return PreparedData(dataset, parts["train"], parts["validation"], parts["test"], task)


def check_window_dimensions(experiment: ExperimentConfig, spatial_shape: Sequence[int]) -> None:
    """Refuse windows with another number of sizes than the images have axes, before any worker
    samples (else the error surfaces inside a DataLoader worker).

    Raises:
        ConfigError: ``sampling.window: expected 3 sizes, got [32, 32] ...``.
    """
    windows = {
        "sampling.window": experiment.sampling.window,
        "sampling.label_window": experiment.sampling.label_window,
        "inference.window": experiment.inference.window,
    }
    for key, window in windows.items():
        if window is not None and len(window) != len(spatial_shape):
            hint = " (a 2D window on 3D images is written [h, w, 1])" if len(spatial_shape) == 3 else ""
            raise ConfigError(
                f"{key}: expected {len(spatial_shape)} sizes, got {list(window)}: the training "
                f"images have {len(spatial_shape)} spatial axes {tuple(spatial_shape)}{hint}"
            )


def check_class_count(experiment: ExperimentConfig, label_values: Sequence[int] | None) -> None:
    """Refuse training labels with more values than the network has outputs (``num_classes``).

    Checked when preprocessing is fitted, before the cache is built or a network sees a batch
    (else the loss would fail deep inside torch with an index error or a CUDA assert).

    Raises:
        ConfigError: ``num_classes`` below the number of label values, naming both.
    """
    wanted = experiment.num_classes
    if wanted is None or label_values is None or "label" not in experiment.dataset.inputs:
        return
    values = [int(v) for v in label_values]
    if len(values) > wanted:
        source = ("preprocessing.label_values" if experiment.preprocessing.label_values is not None
                  else "the training labels")
        raise ConfigError(
            f"num_classes: expected at least {len(values)} classes for the label values "
            f"{values} of {source}, got num_classes: {wanted}; set num_classes: {len(values)} "
            "(or leave it unset to follow the labels)"
        )


def application_class(experiment: ExperimentConfig) -> type[Application]:
    """The Application subclass named by the config (see :func:`voxelflow.config.build.application_class`)."""
    from voxelflow.config.build import application_class as named_application

    return named_application(experiment)


def build_application(experiment: ExperimentConfig, *, in_channels: int, label_values: list[int] | None,
                      task_state: dict[str, Any] | None = None) -> Application:
    """The application object named by ``experiment.application``."""
    factory = application_class(experiment)
    return factory.from_experiment(experiment, in_channels=in_channels, label_values=label_values,
                                   task_state=task_state or {})


@dataclass
class TrainingPipeline:
    """What a training run feeds its trainer: data, application and the batch loader.

    Attributes:
        data: the prepared dataset and its split.
        application: the application (networks, losses), transfer weights applied.
        queue: the patch queue over the training subjects of this rank.
        loader: the DataLoader of collated batches ``(B, C, *window)`` over the queue.
        threads: the :class:`~voxelflow.engine.threads.ThreadChoice` applied to this process.
        augmentation_path: where augmentation runs
            (:class:`~voxelflow.engine.augment_device.AugmentationPath`).
        batch_transform: the batched device augmentation the trainer applies to every batch
            before the forward pass (``None``: workers augment).
    """

    data: PreparedData
    application: Application
    queue: PatchQueue
    loader: torch.utils.data.DataLoader
    threads: ThreadChoice | None = None
    augmentation_path: AugmentationPath | None = None
    batch_transform: DeviceAugmentation | None = None


def build_training_pipeline(experiment: ExperimentConfig, run_dir: Path, *, base_dir: Path | None = None,
                            resume: bool = False) -> TrainingPipeline:
    """Prepared data → application → sampler → patch queue (this rank's shard) → DataLoader.

    The single place where training builds its input pipeline: ``voxelflow train`` and
    ``voxelflow profile`` both call it. Under ``torchrun`` rank 0 prepares the data first.

    Args:
        experiment: the resolved experiment.
        run_dir: folder of the split, the fitted preprocessing state and (by default) the cache.
        base_dir: folder that relative table paths are resolved against.
        resume: the run resumes (``transfer.init_from`` is then not applied).
    """
    from voxelflow.config.build import build_augmentation, build_sampler
    from voxelflow.engine.threads import apply_threads, worker_init
    from voxelflow.sampling.queue import PatchQueue, collate_windows
    from voxelflow.transforms.fused_resample import warm_up

    # before preprocessing too: building the cache is threaded work on the same cores
    threads = apply_threads(experiment.system.threads, workers=experiment.training.num_workers)
    context = distributed.current_context()
    data = _prepare_data_main_rank_first(experiment, run_dir, base_dir=base_dir)
    from voxelflow.engine.device import seed_everything

    seed_everything(experiment.training.seed)  # reproducible initial weights, equal on every rank
    app = build_application(experiment, in_channels=data.in_channels, label_values=data.label_values,
                            task_state=data.task_state)
    _apply_transfer(app, experiment, resume=resume)
    sampling, training = experiment.sampling, experiment.training
    sampler = build_sampler(
        experiment, window=sampling.window, windows_per_subject=sampling.windows_per_subject,
        label_window=sampling.label_window, pad_value=sampling.pad_value,
    )
    sampler.resample_kernel = experiment.system.resample_kernel  # travels with it into workers
    augmentation = build_augmentation(experiment)
    path, batch_transform = _augmentation_path(experiment, data, sampler, augmentation)
    queue = PatchQueue(
        SubjectView(data.dataset, data.train), sampler,
        transform=None if path.batched else augmentation,
        queue_length=sampling.queue_length, seed=training.seed,
        rank=context.rank, world_size=context.world_size, window_fields=app.window_fields(),
        subject_weights=app.subject_weights([data.dataset.fields(i) for i in data.train]),
    )
    # before the workers fork: they inherit the compiled kernel instead of compiling it each
    if not path.batched:
        warm_up(data.dataset[data.train[0]], kernel=experiment.system.resample_kernel,
                augmentation=queue.transform)
    loader = torch.utils.data.DataLoader(
        queue, batch_size=training.batch_size, num_workers=training.num_workers,
        collate_fn=collate_windows, persistent_workers=training.num_workers > 0,
        worker_init_fn=worker_init,
    )
    return TrainingPipeline(data, app, queue, loader, threads, path, batch_transform)


def _augmentation_path(experiment: ExperimentConfig, data: PreparedData, sampler: Sampler,
                       augmentation: Compose | None
                       ) -> tuple[AugmentationPath, DeviceAugmentation | None]:
    """Resolve ``training.augmentation_device``; for the batched path set the sampler's read
    margin (widest over the training subjects' spacings) and build the trainer's batch transform."""
    from voxelflow.engine.augment_device import (
        DeviceAugmentation,
        read_margin,
        resolve_augmentation_path,
    )
    from voxelflow.engine.device import select_device
    from voxelflow.sampling.base import subject_spacing

    context = distributed.current_context()
    device = select_device(experiment.system.device,
                           local_rank=context.local_rank if context.is_distributed else None)
    transforms = list(augmentation.transforms) if augmentation is not None else []
    sampling = experiment.sampling
    path = resolve_augmentation_path(experiment.training.augmentation_device, device, transforms,
                                     window=sampling.window, label_window=sampling.label_window)
    log.info("%s", path.describe())
    if not path.batched:
        return path, None
    spacings = [subject_spacing(data.dataset[i]) for i in data.train]
    sampler.read_margin = read_margin(transforms, sampling.window, spacings)  # into the workers
    seed = experiment.training.seed + 7919 * context.rank  # other draws on every rank
    return path, DeviceAugmentation(transforms, window=sampling.window, seed=seed)


def _prepare_data_main_rank_first(experiment: ExperimentConfig, run_dir: Path, *,
                                  base_dir: Path | None) -> PreparedData:
    """:func:`prepare_data`; under torchrun rank 0 writes the split, state and cache, then the
    other ranks read them (a failure on rank 0 is raised on every rank, no rank hangs)."""
    context = distributed.current_context()
    if not context.is_distributed:
        return prepare_data(experiment, run_dir, base_dir=base_dir)
    data, failure, problem = None, None, ""
    if context.is_main:
        try:
            data = prepare_data(experiment, run_dir, base_dir=base_dir)
        except Exception as exc:  # re-raised below, after the other ranks have been told
            failure, problem = exc, f"{type(exc).__name__}: {exc}"
    problem = distributed.broadcast_object(problem)
    if failure is not None:
        raise failure
    if problem:
        raise DataError(f"rank 0 failed to prepare the data: {problem}")
    return data if data is not None else prepare_data(experiment, run_dir, base_dir=base_dir)


def train_experiment(experiment: ExperimentConfig, *, run_dir: Path | None = None, force: bool = False,
                     base_dir: Path | None = None) -> dict[str, float]:
    """Train (or resume) the experiment; returns the last validation metrics.

    Under ``torchrun`` it joins the process group (gloo on CPU, nccl on CUDA) and leaves it at
    the end; ranks shard the training subjects and rank 0 alone writes.
    """
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.engine.run_dir import finished_run_summary, prepare_run_dir
    from voxelflow.engine.trainer import Trainer

    if not force:  # a finished run says so in one line instead of printing empty progress bars
        finished = finished_run_summary(Path(run_dir or experiment.system.run_dir), experiment)
        if finished is not None:
            return finished
    joined_before = distributed.current_context().is_distributed
    distributed.init_distributed()  # torchrun: join the process group (no-op in one process)
    run = None
    try:  # the run-folder lock is taken before config.yaml is written and held to the end
        run, resume = prepare_run_dir(Path(run_dir or experiment.system.run_dir), experiment,
                                      force=force, keep_lock=True)
        pipeline = build_training_pipeline(experiment, run.root, base_dir=base_dir, resume=resume)
        trainer = Trainer(
            pipeline.application, pipeline.loader, run_dir=run.root,
            training=experiment.training,
            optimization=OptimizationSettings.from_experiment(experiment),
            validation_data=SubjectView(pipeline.data.dataset, pipeline.data.validation),
            device=experiment.system.device, config=experiment, resume=resume,
            hooks=build_hooks(experiment), batch_transform=pipeline.batch_transform,
        )
        return trainer.fit()
    finally:
        if run is not None:
            run.release_lock()
        if not joined_before:
            distributed.cleanup()


def _apply_transfer(app: Application, experiment: ExperimentConfig, *, resume: bool) -> None:
    """``transfer.init_from`` (new runs only: a resume restores its own weights) and ``freeze``."""
    from voxelflow.engine.transfer import apply_transfer, freeze

    transfer = getattr(experiment, "transfer", None)
    if transfer is None or (transfer.init_from is None and not transfer.freeze):
        return
    if "network" not in app.modules:
        raise ConfigError(
            f"transfer: expected an application with one 'network' module, "
            f"{experiment.application!r} has {sorted(app.modules)}"
        )
    network = app.modules["network"]
    if resume:
        frozen = freeze(network, transfer.freeze)
    else:
        report, frozen = apply_transfer(network, transfer)
        if report is not None:
            log.info("init_from %s:\n%s", transfer.init_from.source, report)
    if frozen:
        log.info("frozen parameters (kept out of the optimiser): %d", len(frozen))
