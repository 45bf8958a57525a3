"""Fold runs: ``voxelflow train -c X --fold K|all``.

Fold ``K`` of the saved k-fold split (``split.folds``, default 5) trains into
``<run_dir>/fold_K/``, an ordinary run folder (resumable, locked by the trainer's run-folder
lock; ``infer``, ``zoo pack`` and ``profile`` work on it with ``-c <run_dir>/fold_K/config.yaml``).

Folds are independent processes that may run at once (one per GPU, or a job array), so nothing
they share is written twice:

* the split is drawn once into ``<run_dir>/split.csv`` under ``<run_dir>/.split.lock``; every
  fold's config then names that file (``split.file``), so a fold never redraws it;
* the preprocessing cache is shared (``<run_dir>/cache`` unless ``preprocessing.cache_dir`` is
  set) and each fold's entries are built under ``<cache>/.build.lock``: a second fold waits and
  then finds the entries it needs (the cache key holds the fitted state, so folds whose fitted
  normalisation differs keep separate entries);
* a fold that ended writes ``fold_K/fold_done.json``; ``--fold all`` skips those.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxelflow.config.schema import ExperimentConfig
from voxelflow.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
SPLIT_FILE = "split.csv"
DONE_FILE = "fold_done.json"


def fold_count(experiment: ExperimentConfig) -> int:
    """``split.folds`` of the config, 5 when unset."""
    return int(experiment.split.folds or DEFAULT_FOLDS)


def parse_folds(value: str | int, count: int, *, option: str = "--fold") -> list[int]:
    """``"all"`` → every fold; ``"2"`` → ``[2]``.

    Raises:
        ConfigError: not an integer, or outside ``0..count-1`` (both named).
    """
    text = str(value).strip().lower()
    if text == "all":
        return list(range(count))
    try:
        fold = int(text)
    except ValueError:
        raise ConfigError(
            f"{option}: expected a fold number 0..{count - 1} or 'all', got {value!r}"
        ) from None
    if not 0 <= fold < count:
        raise ConfigError(
            f"{option}: expected a fold in 0..{count - 1} (split.folds = {count}), got {fold}"
        )
    return [fold]


def fold_dir(root: Path, fold: int) -> Path:
    """``<root>/fold_<fold>``."""
    return Path(root) / f"fold_{fold}"


def split_path(experiment: ExperimentConfig, root: Path) -> Path:
    """The split file the folds share: the user's ``split.file`` or ``<root>/split.csv``."""
    return Path(experiment.split.file) if experiment.split.file else Path(root) / SPLIT_FILE


def cache_dir(experiment: ExperimentConfig, root: Path) -> Path:
    """The preprocessing cache the folds share."""
    return Path(experiment.preprocessing.cache_dir or Path(root) / "cache")


def fold_experiment(experiment: ExperimentConfig, root: Path, fold: int) -> ExperimentConfig:
    """The experiment of fold ``fold``: validation = that fold of the shared split file, run
    folder ``<root>/fold_<fold>``, the shared cache.

    Raises:
        ConfigError: ``fold`` out of range.
    """
    count = fold_count(experiment)
    parse_folds(fold, count)
    root = Path(root)
    split = experiment.split.model_copy(
        update={"folds": count, "fold": fold, "file": split_path(experiment, root).absolute()}
    )
    preprocessing = experiment.preprocessing.model_copy(
        update={"cache_dir": cache_dir(experiment, root).absolute()}
    )
    system = experiment.system.model_copy(update={"run_dir": fold_dir(root, fold).absolute()})
    return experiment.model_copy(
        update={"split": split, "preprocessing": preprocessing, "system": system}
    )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """A blocking exclusive ``flock`` on ``path`` (created), released on exit or process end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - no flock there
        yield
        return
    import fcntl

    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for the other fold: it finishes the file
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def ensure_split(experiment: ExperimentConfig, root: Path, *, base_dir: Path | None = None) -> Path:
    """Draw the k-fold split into ``<root>/split.csv`` once (under a lock); returns its path.

    Raises:
        ConfigError: a saved split with another number of folds.
        DataError: subjects missing from a saved split (see :func:`voxelflow.io.splits.make_split`).
    """
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table

    path = split_path(experiment, root)
    rows = load_table(experiment.dataset, base_dir=base_dir)
    config = experiment.split.model_copy(update={"folds": fold_count(experiment), "fold": 0})
    with file_lock(Path(root) / ".split.lock"):
        make_split(rows, config, path=path)  # draws and writes only when the file is absent
    return path


def done_record(run: Path) -> dict[str, Any] | None:
    """The ``fold_done.json`` of a fold folder, or None."""
    path = Path(run) / DONE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def unfinished_reason(experiment: ExperimentConfig, root: Path, fold: int) -> str | None:
    """Why fold ``fold`` is not finished (None when it is)."""
    from voxelflow.engine.checkpoint import CheckpointManager

    run = fold_dir(root, fold)
    if not (run / "config.yaml").is_file():
        return f"{run} holds no run"
    if CheckpointManager(run / "checkpoints").last_path() is None:
        return f"{run} holds no checkpoint"
    record = done_record(run)
    if record is None:
        return f"{run} has not finished training (no {DONE_FILE})"
    wanted = experiment.training.max_iterations
    if int(record.get("max_iterations", wanted)) < wanted:
        return (
            f"{run} finished {record.get('max_iterations')} iterations, "
            f"training.max_iterations is now {wanted}"
        )
    return None


def train_fold(
    experiment: ExperimentConfig,
    root: Path,
    fold: int,
    *,
    force: bool = False,
    base_dir: Path | None = None,
) -> dict[str, float]:
    """Train (or resume) fold ``fold`` into ``<root>/fold_<fold>``; returns its last metrics.

    Raises:
        RunFolderBusyError: another process trains this fold.
    """
    from voxelflow.engine.run import prepare_data, train_experiment
    from voxelflow.engine.run_dir import RunLock

    ensure_split(experiment, root, base_dir=base_dir)
    config = fold_experiment(experiment, root, fold)
    run = fold_dir(root, fold)
    cache = cache_dir(experiment, root)
    # a second process on this fold stops at the run lock, before touching any file; one fold
    # at a time builds the shared cache entries
    with RunLock(run), file_lock(cache / ".build.lock"):
        prepare_data(config, run, base_dir=base_dir)
    log.info("fold %d of %d: training in %s", fold, fold_count(experiment), run)
    # the trainer takes the fold's run lock again for the whole training
    metrics = train_experiment(config, run_dir=run, force=force, base_dir=base_dir)
    record = {
        "fold": fold,
        "folds": fold_count(experiment),
        "max_iterations": experiment.training.max_iterations,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
    }
    from voxelflow.engine.checkpoint import atomic_write

    text = json.dumps(record, indent=1)
    atomic_write(run / DONE_FILE, lambda stream: stream.write(text.encode()))
    return metrics


def train_folds(
    experiment: ExperimentConfig,
    root: Path,
    folds: str | int = "all",
    *,
    force: bool = False,
    base_dir: Path | None = None,
) -> dict[int, dict[str, float]]:
    """``--fold K`` or ``--fold all`` (folds one after another, finished ones skipped).

    Returns:
        fold → its last metrics (skipped folds: their recorded metrics).
    """
    results: dict[int, dict[str, float]] = {}
    chosen = parse_folds(folds, fold_count(experiment))
    for fold in chosen:
        if len(chosen) > 1 and not force and unfinished_reason(experiment, root, fold) is None:
            record = done_record(fold_dir(root, fold)) or {}
            log.info("fold %d: finished already, skipped", fold)
            results[fold] = dict(record.get("metrics") or {})
            continue
        results[fold] = train_fold(experiment, root, fold, force=force, base_dir=base_dir)
    return results
