"""What NiftyNet's ``train``, ``inference`` and ``evaluation`` actions did, on voxelflow's engine.

* ``train``: the converted experiment is trained by ``voxelflow train`` (same code path, so the
  first iteration comes as fast); ``starting_iter = 0`` starts afresh as NiftyNet did (an
  earlier run's checkpoints move to ``superseded/``), ``-1`` resumes the latest checkpoint.
* ``inference``: the subjects are NiftyNet's: ``dataset_to_infer`` if set, else the split's
  inference subset if it is not empty, else every subject (training ones included); the
  checkpoint is ``inference_iter`` (``-1`` = the latest); outputs are written to
  ``save_seg_dir`` as ``<subject><output_postfix>.nii.gz`` with NiftyNet's two-column
  ``inferred.csv`` (``subject,path``, no header).
* ``evaluation``: predictions (the ``inferred`` input section, else ``save_seg_dir``'s
  ``inferred.csv``) are paired with the label role's files by subject id; results go to
  ``save_csv_dir``.

``CUDA_VISIBLE_DEVICES`` is set from ``cuda_devices`` (unless already set), as NiftyNet did, so a
machine without that GPU runs on the CPU.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from voxelflow.config.schema import ExperimentConfig
from voxelflow.errors import ConfigError
from voxelflow.niftynet.commands import Invocation
from voxelflow.niftynet.conversion import NiftyNetConversion, NiftyNetSettings, convert_niftynet

logger = logging.getLogger("voxelflow.niftynet")

__all__ = ["fit_windows_to_images", "inference_subjects", "run_invocation"]

#: voxelflow's own command line (``voxelflow.cli.main.main``), passed in by the console scripts so
#: this package (rank 8) never imports the CLI (rank 9): argv → exit code
RunVoxelflow = Callable[[list[str]], int]

_VOXELFLOW_COMMANDS = {"train": "train", "inference": "infer", "evaluation": "evaluate"}
#: NiftyNet's own applications that had no evaluation action (its section names)
_WITHOUT_EVALUATION = ("autoencoder", "gan")
#: NiftyNet's input key holding each voxelflow reference role
_REFERENCE_KEYS = {"label": "label", "target": "output"}
#: NiftyNet's phase names → voxelflow's split names
PHASES = {"training": "train", "validation": "validation", "inference": "test"}


def run_invocation(invocation: Invocation, run_voxelflow: RunVoxelflow) -> int:
    """Convert and run one parsed NiftyNet command line; returns the exit code.

    ``run_voxelflow`` runs a voxelflow command line (``voxelflow.cli.main.main``).
    """
    if invocation.config.suffix.lower() != ".ini":
        if invocation.overrides:
            raise ConfigError(
                f"NiftyNet overrides {sorted(invocation.overrides)} need a .ini config; use --set"
            )
        sets = [a for s in invocation.sets for a in ("--set", s)]
        command = _VOXELFLOW_COMMANDS[invocation.action]
        return run_voxelflow([command, "-c", str(invocation.config), *sets])
    conversion = convert_niftynet(
        invocation.config, overrides=invocation.overrides, application=invocation.application
    )
    report(conversion, invocation.config)
    experiment = conversion.experiment
    if invocation.sets:
        from voxelflow.config.load import load_experiment

        experiment = load_experiment(experiment, invocation.sets)
    settings = _rebased(conversion.settings, Path(experiment.system.run_dir))
    _visible_devices(settings)
    if settings.cannot_run and invocation.action != "evaluation":
        raise ConfigError(settings.cannot_run)
    if invocation.action == "train":
        return train(
            fit_windows_to_images(conversion.experiment, overrides=invocation.sets),
            settings,
            stem=invocation.config.stem,
            sets=invocation.sets,
            run_voxelflow=run_voxelflow,
        )
    if invocation.action == "inference":
        table = infer(fit_windows_to_images(experiment), settings)
        print(f"inferred: {table}")
        return 0
    return evaluate(experiment, settings)


def report(conversion: NiftyNetConversion, ini: Path) -> None:
    """Log every key that did not map exactly, then a one-line summary."""
    counts: dict[str, int] = {}
    for note in conversion.notes:
        counts[note.status] = counts.get(note.status, 0) + 1
        if note.status != "mapped":
            logger.warning("%s", note)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    logger.info("%s: %d keys: %s", ini.name, len(conversion.notes), summary)


def _rebased(settings: NiftyNetSettings, run_dir: Path) -> NiftyNetSettings:
    """Settings whose model_dir follows a ``--set system.run_dir=...`` override."""
    from dataclasses import replace

    if run_dir == settings.model_dir:
        return settings

    def move(path: Path) -> Path:
        try:
            return run_dir / path.relative_to(settings.model_dir)
        except ValueError:
            return path

    return replace(
        settings,
        model_dir=run_dir,
        save_seg_dir=move(settings.save_seg_dir),
        save_csv_dir=move(settings.save_csv_dir),
    )


def _visible_devices(settings: NiftyNetSettings) -> None:
    if settings.cuda_devices and "CUDA_VISIBLE_DEVICES" not in os.environ:
        # NiftyNet set this variable; torch reads it when CUDA is first used
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.cuda_devices
        logger.info("CUDA_VISIBLE_DEVICES=%s (cuda_devices)", settings.cuda_devices)


# --------------------------------------------------------------------------- 2-D windows
def fit_windows_to_images(
    experiment: ExperimentConfig, *, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """NiftyNet wrote 2-D windows ``(h, w, 1)``; on 2-D images they become ``[h, w]``.

    On 3-D images ``(h, w, 1)`` stays a one-slice window, as in NiftyNet. Only the first
    subject's first image is read. ``overrides`` (``--set``) are used to find the data only.
    """
    if not _has_slice_window(experiment):
        return experiment
    probe = experiment
    if overrides:
        from voxelflow.config.load import load_experiment

        probe = load_experiment(experiment, overrides)
    if _first_image_dims(probe) != 2:
        return experiment
    return _without_slice_axis(experiment)


def _has_slice_window(experiment: ExperimentConfig) -> bool:
    windows = (
        experiment.sampling.window,
        experiment.sampling.label_window,
        experiment.inference.window,
    )
    return any(w is not None and len(w) == 3 and w[2] == 1 for w in windows)


def _without_slice_axis(experiment: ExperimentConfig) -> ExperimentConfig:
    windows = {
        "sampling.window": experiment.sampling.window,
        "sampling.label_window": experiment.sampling.label_window,
        "inference.window": experiment.inference.window,
    }
    if not _has_slice_window(experiment):
        return experiment
    from voxelflow.config.load import load_experiment

    sets = [
        f"{key}=[{', '.join(str(v) for v in window[:2])}]"
        for key, window in windows.items()
        if window is not None and len(window) == 3 and window[2] == 1
    ]
    logger.info("2-D images: NiftyNet's (h, w, 1) windows used as %s", ", ".join(sets))
    return load_experiment(experiment, sets)


def _first_image_dims(experiment: ExperimentConfig) -> int | None:
    from voxelflow.errors import VoxelflowError
    from voxelflow.io.readers import read_image
    from voxelflow.io.table import load_table

    columns = experiment.dataset.inputs.get("image") or []
    try:
        rows = load_table(experiment.dataset, required=columns)
    except VoxelflowError:
        return None  # the run itself reports the data problem
    for row in rows:
        if columns and row.columns.get(columns[0]):
            image = read_image(row.path(columns[0]))
            return len(image.spatial_shape)
    return None


# --------------------------------------------------------------------------- train
def train(
    experiment: ExperimentConfig,
    settings: NiftyNetSettings,
    *,
    stem: str,
    run_voxelflow: RunVoxelflow,
    sets: Sequence[str] = (),
) -> int:
    """``voxelflow train`` on the converted experiment (NiftyNet's starting_iter rules); the
    ``--set`` overrides are passed on to it."""
    from voxelflow.config.load import dump_experiment

    run_dir = settings.model_dir
    if settings.starting_iter == 0 and (run_dir / "config.yaml").is_file():
        # NiftyNet started from random weights whatever model_dir held; the earlier run is
        # kept, moved to superseded/ as `voxelflow train --force` does
        from voxelflow.engine.run_dir import RunDir, _supersede

        _supersede(RunDir(run_dir))
    with tempfile.TemporaryDirectory(prefix="voxelflow-niftynet-") as folder:
        config = dump_experiment(experiment, Path(folder) / f"{stem}.yaml")
        return run_voxelflow(["train", "-c", str(config), *(a for s in sets for a in ("--set", s))])


# --------------------------------------------------------------------------- inference
def inference_subjects(
    rows: Sequence[Any], split: Mapping[str, Sequence[str]], dataset_to_infer: str
) -> list[Any]:
    """NiftyNet's inference subjects: ``dataset_to_infer``'s phase if set, else the inference
    subset if it is not empty, else every subject.

    Example:
        >>> from types import SimpleNamespace as Row
        >>> rows = [Row(name="a"), Row(name="b")]
        >>> [r.name for r in inference_subjects(rows, {"train": ["a", "b"], "test": []}, "")]
        ['a', 'b']
        >>> [r.name for r in inference_subjects(rows, {"train": ["a"], "test": ["b"]}, "")]
        ['b']
    """
    if dataset_to_infer:
        wanted = set(split.get(PHASES[dataset_to_infer], []))
    else:
        wanted = set(split.get("test", [])) or {row.name for row in rows}
    return [row for row in rows if row.name in wanted]


def infer(experiment: ExperimentConfig, settings: NiftyNetSettings) -> Path:
    """Infer NiftyNet's subjects with NiftyNet's checkpoint choice; returns ``inferred.csv``."""
    from voxelflow.data.dataset import load_fitted_state
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
    from voxelflow.engine.inference import load_application_state, predict_rows
    from voxelflow.engine.run import FITTED_STATE_FILE, build_application
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table

    run_dir = Path(experiment.system.run_dir)
    if not (run_dir / FITTED_STATE_FILE).is_file():
        raise ConfigError(
            f"[SYSTEM] model_dir = {run_dir}: expected a trained model folder "
            f"(run `{_program(settings)} train` first)"
        )
    rows = load_table(experiment.dataset, required=experiment.dataset.inputs["image"])
    split = make_split(rows, experiment.split, path=run_dir / "split.csv")
    chosen = inference_subjects(rows, split, settings.dataset_to_infer)
    if not chosen:
        raise ConfigError(
            f"[INFERENCE] dataset_to_infer = {settings.dataset_to_infer}: no subject in that split"
        )
    if settings.inference_iter >= 0:
        path = run_dir / "checkpoints" / f"step_{settings.inference_iter:08d}.pt"
        if not path.is_file():
            steps = sorted(p.stem[5:].lstrip("0") or "0" for p in path.parent.glob("step_*.pt"))
            raise ConfigError(
                f"[INFERENCE] inference_iter = {settings.inference_iter}: no checkpoint of that "
                f"step in {path.parent} (found steps: {', '.join(steps) or 'none'})"
            )
    else:
        path = find_checkpoint(run_dir, which="last")
    state = load_fitted_state(run_dir / FITTED_STATE_FILE)
    app = build_application(
        experiment,
        in_channels=len(experiment.dataset.inputs["image"]),
        label_values=state.get("label_values"),
        task_state=state.get("task") or {},
    )
    load_application_state(app, load_checkpoint(path), source=str(path))
    logger.info("inference of %d subject(s) with %s", len(chosen), path)
    out = settings.save_seg_dir
    table = predict_rows(experiment, app, state, chosen, out_dir=out)
    return _niftynet_outputs(table, out, settings.output_postfix)


def _niftynet_outputs(table: Path, out: Path, postfix: str) -> Path:
    """Rename each subject's main output ``<subject><postfix>.nii.gz`` and write NiftyNet's
    two-column ``inferred.csv``; voxelflow's own table is removed (it has extra columns)."""
    from voxelflow.io.table import read_prediction_table

    rows = read_prediction_table(table)
    lines: list[tuple[str, str]] = []
    for row in rows:
        subject = row.get("subject", "")
        column = next(
            (c for c in row if c != "subject" and str(row[c]).endswith((".nii.gz", ".nii"))), None
        )
        if column is None:  # values only (classification): one CSV per subject, as NiftyNet
            target = out / f"{subject}{postfix}.csv"
            with open(target, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
                writer.writerow(row)
            lines.append((subject, str(target.resolve())))
            continue
        source = Path(row[column])
        target = out / f"{subject}{postfix}.nii.gz" if subject else source
        if source != target and source.is_file():
            source.replace(target)
        lines.append((subject, str(target.resolve())))
    inferred = out / "inferred.csv"
    if table != inferred:
        table.unlink(missing_ok=True)
    with open(inferred, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(lines)
    return inferred


def _program(settings: NiftyNetSettings) -> str:
    return {
        "segmentation": "net_segment",
        "regression": "net_regress",
        "classification": "net_classify",
        "autoencoder": "net_autoencoder",
        "gan": "net_gan",
    }[settings.application]


# --------------------------------------------------------------------------- evaluation
def read_inferred(path: Path) -> dict[str, Path]:
    """NiftyNet's ``inferred.csv``: ``subject,path`` lines, no header.

    Raises:
        ConfigError: the file is missing or a line does not have two columns.
    """
    if not path.is_file():
        raise ConfigError(
            f"[INFERENCE] save_seg_dir = {path.parent}: expected inferred.csv from the "
            "inference action, found none"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        lines = [line for line in csv.reader(handle) if line]
    bad = [n for n, line in enumerate(lines, 1) if len(line) != 2]
    if bad:
        raise ConfigError(f"{path}: line {bad[0]}: expected two columns subject,path")
    return {subject: Path(file) for subject, file in lines}


def predictions(experiment: ExperimentConfig, settings: NiftyNetSettings) -> dict[str, Path]:
    """Subject → prediction file: the ``inferred`` input section, else inferred.csv."""
    if not settings.inferred_folders:
        return read_inferred(settings.save_seg_dir / "inferred.csv")
    from voxelflow.config.schema import FolderInput
    from voxelflow.io.table import match_folder

    found: dict[str, Path] = {}
    for name, spec in settings.inferred_folders.items():
        paths = spec.get("paths") or [spec.get("path", ".")]
        pattern = {k: v for k, v in spec.items() if k != "paths"}
        for path in paths:
            folder = FolderInput(**{**pattern, "path": path})
            found.update(match_folder(folder, base_dir=Path.cwd(), column=name))
    return found


def evaluate(experiment: ExperimentConfig, settings: NiftyNetSettings) -> int:
    """Pair predictions and references by subject id and score them into save_csv_dir.

    Raises:
        ConfigError: an autoencoder or GAN (NiftyNet had no evaluation for them), or no
            label/output role to compare with.
    """
    from voxelflow.engine.run import application_class
    from voxelflow.io.table import load_table

    if settings.application in _WITHOUT_EVALUATION:
        raise ConfigError(
            f"{_program(settings)} evaluation: NiftyNet had no evaluation for the "
            f"{settings.application} application; use `voxelflow evaluate -c` on the converted "
            "config (`voxelflow config convert`) for voxelflow's"
        )

    predicted = predictions(experiment, settings)
    app_class = application_class(experiment)
    role = app_class.reference_role
    if role is None:  # references are table cells (classification's target column)
        rows = load_table(experiment.dataset, required=[])
        return _evaluate_application(experiment, predicted, rows, settings.save_csv_dir)
    columns = experiment.dataset.inputs.get(role)
    if not columns:
        key = _REFERENCE_KEYS.get(role, role)
        raise ConfigError(
            f"[{settings.application.upper()}] {key}: required to evaluate the inferred outputs"
        )
    rows = load_table(experiment.dataset, required=[columns[0]])
    references = {r.name: r.path(columns[0]) for r in rows if r.columns.get(columns[0])}
    out = settings.save_csv_dir
    scored = app_class.evaluate_pairs(experiment, predicted, references, out)
    if scored is not None:  # the application pairs files itself (segmentation's label maps)
        logger.info("evaluated %d subject(s); results in %s", len(predicted), out)
        return 0 if scored else 1
    return _evaluate_application(experiment, predicted, rows, out)


def _join_tables(target: Path, tables: Sequence[Path]) -> None:
    """One table from the per-subject CSVs the inference action wrote (same columns)."""
    rows: list[dict[str, str]] = []
    for path in tables:
        with open(path, newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["subject"], restval="")
        writer.writeheader()
        writer.writerows(rows)


def _evaluate_application(
    experiment: ExperimentConfig, predicted: Mapping[str, Path], rows: Sequence[Any], out: Path
) -> int:
    """Other applications: their own ``evaluate`` on a voxelflow table made from the pairs."""
    from voxelflow.engine.run import application_class

    application = application_class(experiment)
    with tempfile.TemporaryDirectory(prefix="voxelflow-niftynet-") as folder:
        table = Path(folder) / application.prediction_table
        if all(p.suffix == ".csv" for p in predicted.values()):
            _join_tables(table, list(predicted.values()))  # per-subject value tables
        else:
            column = application.output_column
            with open(table, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["subject", column])
                writer.writerows((s, str(p)) for s, p in predicted.items())
        summary = application.evaluate(experiment, predictions=table, rows=rows, out_dir=out)
    for name, value in summary.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return 0
