"""The segmentation workflow from a config: data → train → infer, as used by the CLI and the API.

``train_experiment`` builds the table, the saved split, the preprocessing cache (fitted on the
training split only), the patch queue, the application and the :class:`Trainer`, and writes
everything into the run folder. ``infer_experiment`` reads new images, applies the *saved*
preprocessing, runs sliding-window inference, maps class probabilities back onto each input's
original grid (then the argmax, then the original label values) and writes NIfTI files plus
``inferred.csv``. Nothing is ever written into an input folder.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxelflow.config.schema import Experiment
from voxelflow.data.dataset import PreprocessedDataset, load_fitted_state, save_fitted_state
from voxelflow.errors import ConfigError, DataError
from voxelflow.io.image import Image, Subject
from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)

FITTED_STATE_FILE = "preprocessing.json"


class SubjectView:
    """Lazy, picklable view of some rows of a :class:`PreprocessedDataset` (for the queue)."""

    def __init__(self, dataset: PreprocessedDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
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


def prepare_data(experiment: Experiment, run_dir: Path, *, base_dir: Path | None = None) -> PreparedData:
    """Table → saved split → preprocessing fitted on the training split → built cache."""
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table

    rows = load_table(experiment.dataset, base_dir=base_dir)
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
        dataset.preprocessor = type(dataset.preprocessor)(
            experiment.preprocessing, fitted_state=load_fitted_state(state_path)
        )
    else:
        dataset.fit(parts["train"])
        save_fitted_state(dataset.fitted_state, state_path)
    dataset.build(num_workers=0, progress=True)
    return PreparedData(dataset, parts["train"], parts["validation"], parts["test"])


def build_application(experiment: Experiment, *, in_channels: int, label_values: list[int] | None):
    """The application object named by ``experiment.application``."""
    from voxelflow.applications import APPLICATIONS

    factory = APPLICATIONS.get(experiment.application)
    return factory.from_experiment(experiment, in_channels=in_channels, label_values=label_values)


def train_experiment(experiment: Experiment, *, run_dir: Path | None = None, force: bool = False,
                     base_dir: Path | None = None) -> dict[str, float]:
    """Train (or resume) the experiment; returns the last validation metrics."""
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.config.build import build_sampler
    from voxelflow.engine.checkpoint import prepare_run_dir
    from voxelflow.engine.trainer import Trainer, TrainerOptions
    from voxelflow.sampling.queue import PatchQueue, collate_windows
    from voxelflow.transforms.compose import build_augmentation

    run_dir = Path(run_dir or experiment.system.run_dir)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    run, resume = prepare_run_dir(run_dir, experiment, force=force)
    data = prepare_data(experiment, run.root, base_dir=base_dir)
    app = build_application(experiment, in_channels=data.in_channels, label_values=data.label_values)
    _apply_transfer(app, experiment, resume=resume)
    sampling = experiment.sampling
    sampler = build_sampler(
        experiment, window=sampling.window, windows_per_subject=sampling.windows_per_subject,
        label_window=sampling.label_window, pad_value=sampling.pad_value,
    )
    queue = PatchQueue(
        SubjectView(data.dataset, data.train), sampler,
        transform=build_augmentation(experiment.augmentation, seed=experiment.training.seed),
        queue_length=sampling.queue_length, seed=experiment.training.seed,
        rank=rank, world_size=world_size,
    )
    loader = torch.utils.data.DataLoader(
        queue, batch_size=experiment.training.batch_size, num_workers=experiment.training.num_workers,
        collate_fn=collate_windows, persistent_workers=experiment.training.num_workers > 0,
    )
    trainer = Trainer(
        app, loader, run_dir=run.root, options=TrainerOptions.from_config(experiment.training),
        optimization=OptimizationSettings.from_experiment(experiment),
        validation_data=SubjectView(data.dataset, data.validation), device=experiment.system.device,
        config=experiment, resume=resume,
    )
    return trainer.fit()


def _apply_transfer(app: Any, experiment: Experiment, *, resume: bool) -> None:
    """``transfer.init_from`` (new runs only: a resume restores its own weights) and ``freeze``."""
    from voxelflow.zoo.transfer import apply_transfer, freeze

    transfer = getattr(experiment, "transfer", None)
    if transfer is None:
        return
    network = app.modules["network"]
    if resume:
        frozen = freeze(network, transfer.freeze)
    else:
        report, frozen = apply_transfer(network, transfer)
        if report is not None:
            log.info("init_from %s:\n%s", transfer.init_from.source, report)
    if frozen:
        log.info("frozen parameters (kept out of the optimiser): %d", len(frozen))


def infer_rows(experiment: Experiment, rows: Sequence[SubjectRow], *, run_dir: Path, out_dir: Path,
               which: str = "best") -> Path:
    """Segment every row's ``image`` columns with a run's checkpoint; write label maps in
    original geometry.

    Returns:
        the path of ``inferred.csv`` (subject, output file).
    """
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint

    state = load_fitted_state(run_dir / FITTED_STATE_FILE)
    app = build_application(experiment, in_channels=len(experiment.dataset.inputs["image"]),
                            label_values=state.get("label_values"))
    _load_application(app, load_checkpoint(find_checkpoint(run_dir, which=which)))
    return segment_rows(experiment, app, state, rows, out_dir=out_dir)


def infer_with_model(name_or_path: str | Path, rows: Sequence[SubjectRow], *, out_dir: Path,
                     trust_code: bool = False) -> Path:
    """Segment rows with an installed zoo entry: its preprocessing applied and inverted."""
    import json

    from voxelflow.config.load import load_experiment
    from voxelflow.engine.checkpoint import load_module_state
    from voxelflow.zoo.store import load_weights, resolve_model, trusted_plugins

    entry = resolve_model(name_or_path)
    trusted_plugins(entry, trust_code)
    experiment = load_experiment(entry.config_path)
    state = json.loads(entry.fitted_state_path.read_text()) if entry.fitted_state_path else {}
    app = build_application(experiment, in_channels=len(experiment.dataset.inputs["image"]),
                            label_values=state.get("label_values"))
    weights = load_weights(entry.weights_path, entry=entry.name)
    load_module_state(app.modules["network"], weights, name="network", source=f"zoo entry {entry.name!r}")
    return segment_rows(experiment, app, state, rows, out_dir=out_dir)


def segment_rows(experiment: Experiment, app: Any, fitted_state: dict[str, Any],
                 rows: Sequence[SubjectRow], *, out_dir: Path) -> Path:
    """Preprocess (saved state), infer, invert and write every row; returns ``inferred.csv``."""
    from voxelflow.applications.base import InferenceContext
    from voxelflow.engine.device import resolve_precision, select_device
    from voxelflow.transforms.preprocess import Preprocessor

    preprocessor = Preprocessor(experiment.preprocessing, fitted_state=fitted_state)
    columns = experiment.dataset.inputs["image"]
    if experiment.inference.uncertainty != "none":
        raise ConfigError(
            f"inference.uncertainty: expected 'none' (uncertainty maps are not implemented yet), "
            f"got {experiment.inference.uncertainty!r}"
        )
    app.flip_tta = experiment.inference.flip_tta
    device = select_device(experiment.system.device)
    ctx = InferenceContext(device, autocast=resolve_precision(experiment.training.amp, device).autocast)
    for module in app.modules.values():
        module.to(device).eval()
    _check_output_dir(out_dir, rows, columns)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    for row in rows:
        path = _infer_one(app, ctx, preprocessor, row, columns, out_dir, experiment)
        written.append((row.name, path))
        log.info("%s → %s", row.name, path)
    return _write_inferred_csv(out_dir, written)


def _load_application(app: Any, checkpoint: dict[str, Any]) -> None:
    from voxelflow.engine.checkpoint import load_module_state

    modules = checkpoint.get("modules") or {}
    for name, module in app.modules.items():
        if name not in modules:
            raise ConfigError(f"checkpoint has no module {name!r}; it has {sorted(modules)}")
        load_module_state(module, modules[name], name=name, source="checkpoint")
    if checkpoint.get("application_state"):
        app.load_state_dict(checkpoint["application_state"])


def _read_subject(row: SubjectRow, columns: Sequence[str], experiment: Experiment) -> Subject:
    from voxelflow.io.readers import read_image

    policy = "zero" if experiment.preprocessing.non_finite == "warn" else "error"
    parts = [read_image(row.path(c), non_finite=policy) for c in columns]
    for part in parts[1:]:
        from voxelflow.io.image import check_same_grid

        check_same_grid(parts[0], part, what=f"images of subject {row.name!r}")
    data = torch.cat([p.data.float() for p in parts]) if len(parts) > 1 else parts[0].data.float()
    return Subject(row.name, {"image": parts[0].with_data(data)})


def _infer_one(app, ctx, preprocessor, row, columns, out_dir: Path, experiment: Experiment) -> Path:
    from voxelflow.io.writers import write_image
    from voxelflow.transforms.preprocess import invert

    original = _read_subject(row, columns, experiment)
    processed, record = preprocessor(original)
    image = processed["image"]
    with torch.no_grad():
        probabilities = app.infer_step({"image": image.data[None].float()}, ctx)["probabilities"][0].cpu()
    back = invert(Image(probabilities, image.affine.copy()), record, kind="intensity", map_labels=False)
    label = app.decode(back.data[None])[0].to(torch.int16)
    source = original["image"]
    label = _postprocess(label, experiment, source.spacing)
    output = Image(label, source.affine.copy(), kind="label", meta=dict(source.meta))
    path = out_dir / f"{row.name}_seg.nii.gz"
    write_image(output, path)
    if experiment.inference.save_probabilities:
        write_image(Image(back.data.float(), source.affine.copy()), out_dir / f"{row.name}_prob.nii.gz")
    return path


def _postprocess(label: torch.Tensor, experiment: Experiment, spacing: Sequence[float]) -> torch.Tensor:
    from voxelflow.applications.postprocess import postprocess_labels

    options = experiment.inference
    if not (options.keep_largest_component or options.min_component_volume_mm3 or options.fill_holes):
        return label
    cleaned = postprocess_labels(
        label.numpy(), keep_largest=options.keep_largest_component,
        min_volume_mm3=options.min_component_volume_mm3, fill_holes=options.fill_holes, spacing=spacing,
    )
    return torch.from_numpy(cleaned)


def _check_output_dir(out_dir: Path, rows: Sequence[SubjectRow], columns: Sequence[str]) -> None:
    out = out_dir.resolve()
    for row in rows:
        for column in columns:
            folder = row.path(column).resolve().parent
            if out == folder or folder in out.parents:
                raise ConfigError(
                    f"output folder {str(out_dir)!r} is inside the input folder {str(folder)!r}: "
                    "choose an output folder outside the data"
                )


def _write_inferred_csv(out_dir: Path, written: list[tuple[str, Path]]) -> Path:
    path = out_dir / "inferred.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "prediction"])
        writer.writerows((name, str(p)) for name, p in written)
    tmp.replace(path)
    return path
