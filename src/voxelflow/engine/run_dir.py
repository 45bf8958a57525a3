"""The run folder: its layout, the saved config, and what a resume may change.

``voxelflow train`` on a folder that already holds a run resumes it when the config is the same
up to resumable keys (iterations, schedule, validation, logging); anything that changes the
model or the data is refused with the differing keys listed, unless ``--force`` (the old run is
then moved aside, never deleted).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from voxelflow.engine.checkpoint import CheckpointManager, atomic_write
from voxelflow.errors import CheckpointError, ConfigError, VoxelflowError
from voxelflow.io.disk import make_folder, writing
from voxelflow.types import PathLike

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig

logger = logging.getLogger(__name__)


RESUMABLE_KEYS = (
    "training.max_iterations", "training.validate_every", "training.log_every",
    "training.checkpoint_every", "training.keep_last", "training.keep_best",
    "training.early_stopping_patience", "training.num_workers", "training.amp",
    "training.compile", "scheduler", "inference", "evaluation", "system", "logging",
)  # fmt: skip
#: keys whose change rebuilds the learning-rate schedule instead of restoring its saved state.
SCHEDULE_KEYS = ("training.max_iterations", "scheduler")


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def config_as_dict(config: ExperimentConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic experiment (or a mapping) as a plain, YAML-safe dict."""
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return json.loads(json.dumps(dict(config), default=str))


def config_changes(
    saved: Mapping[str, Any], current: ExperimentConfig | Mapping[str, Any], *, source: str
) -> list[str]:
    """Keys that differ between a run's saved config and the current one, if resuming is allowed.

    Args:
        saved: the config stored with the run (``config.yaml`` or the checkpoint).
        current: the config of this invocation.
        source: the file the saved config came from, for messages.

    Returns:
        The changed dotted keys (all resumable).

    Raises:
        CheckpointError: a changed key alters the model or the data; every such key is listed.
    """
    from voxelflow.config.load import experiment_diff

    changed = experiment_diff(config_as_dict(saved), config_as_dict(current))
    refused = [key for key in changed if not _matches(key, RESUMABLE_KEYS)]
    if refused:
        raise CheckpointError(
            f"{source}: cannot resume: expected the same model and data settings, got changes in "
            f"{', '.join(refused)} (use a new run folder, or --force to start this one afresh)"
        )
    return changed


def schedule_changed(changed_keys: list[str]) -> bool:
    """Whether the learning-rate schedule must be rebuilt rather than restored."""
    return any(_matches(key, SCHEDULE_KEYS) for key in changed_keys)


class RunDir:
    """The layout of a run folder.

    ``config.yaml`` (the resolved config), ``checkpoints/`` (``step_*.pt`` + ``index.json``),
    ``logs/train.log``, ``tensorboard/``, ``scalars.csv``, ``split.csv``, and later
    ``predictions/`` and ``evaluation/``.
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.log_file = self.root / "logs" / "train.log"
        self.tensorboard = self.root / "tensorboard"
        self.scalars = self.root / "scalars.csv"
        self.split = self.root / "split.csv"
        self.predictions = self.root / "predictions"
        self.evaluation = self.root / "evaluation"
        #: the run-folder lock held for the caller (``prepare_run_dir(keep_lock=True)``), if any.
        self.lock: RunLock | None = None

    def release_lock(self) -> None:
        """Drop the run-folder lock held for the caller (no-op when none is held)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def has_checkpoints(self) -> bool:
        """Whether the folder holds at least one checkpoint."""
        return CheckpointManager(self.checkpoints).last_path() is not None


LOCK_NAME = ".lock"


class RunFolderBusyError(ConfigError):
    """Another process is training in the same run folder (exit code 2 from the CLI)."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.lock``, holding the owner's pid.

    The kernel releases it when the process ends, so a lock left by a dead process never blocks.
    Within one process it is re-entrant: :func:`~voxelflow.engine.run.train_experiment` takes it
    before ``config.yaml`` is written and :meth:`Trainer.fit` takes it again (a second ``flock``
    on a new descriptor of the same file would otherwise refuse its own process).

    Args:
        root: the run folder (created if missing).
        key: the config key naming the folder, for messages.
    """

    #: resolved folder → [descriptor, depth, owner pid] of the locks this process holds.
    _held: ClassVar[dict[Path, list[int]]] = {}

    def __init__(self, root: PathLike, *, key: str = "system.run_dir") -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.key = key
        self._held_key: Path | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunFolderBusyError` naming the folder and the holder's pid.

        Raises:
            RunFolderBusyError: another process holds it.
            DiskWriteError: the folder cannot be created or written (read-only, full ...).
        """
        if sys.platform == "win32":  # pragma: no cover - no flock there
            return self
        import fcntl

        make_folder(self.root, key=self.key)
        resolved = self.root.resolve()
        held = RunLock._held.get(resolved)
        if held is not None and held[2] == os.getpid():
            held[1] += 1
            self._held_key = resolved
            return self
        with writing(self.path, what="run-folder lock"):
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(handle, 64).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(handle)
            raise RunFolderBusyError(
                f"{self.root}: run folder is in use by another training (pid {holder}); "
                "wait for it to end or use another run folder"
            ) from None
        try:
            with writing(self.path, what="run-folder lock"):
                os.ftruncate(handle, 0)
                os.write(handle, f"{os.getpid()}\n".encode())
        except BaseException:
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)
            raise
        RunLock._held[resolved] = [handle, 1, os.getpid()]
        self._held_key = resolved
        return self

    def release(self) -> None:
        """Drop this hold; the ``flock`` goes when the last hold of this process goes.

        The file stays; its content is stale once unlocked.
        """
        if self._held_key is None:
            return
        held = RunLock._held.get(self._held_key)
        key = self._held_key
        self._held_key = None
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            import fcntl

            del RunLock._held[key]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def prepare_run_dir(
    run_dir: PathLike,
    config: ExperimentConfig | Mapping[str, Any],
    *,
    force: bool = False,
    keep_lock: bool = False,
) -> tuple[RunDir, bool]:
    """Create or reopen a run folder for training; decide whether to resume.

    Call it on every rank: rank 0 decides and writes, the others receive its decision.

    Args:
        run_dir: the run folder.
        config: the resolved experiment (pydantic model or mapping).
        force: start afresh even if the folder holds a different config; the previous
            ``config.yaml``, checkpoints, logs and scalars move to ``superseded/<n>/``.
        keep_lock: keep holding the run-folder lock after returning (rank 0); the caller
            drops it with :meth:`RunDir.release_lock` when training ends.

    Returns:
        The run folder and whether training resumes from its last checkpoint.

    Rank 0 holds the folder's :class:`RunLock` while it reads and writes ``config.yaml``, so a
    second training started on a busy folder is refused before it touches the first one's files
    (``train_experiment`` holds the lock across the whole run).

    Raises:
        CheckpointError: the folder holds checkpoints of a different config whose changes are
            not resumable, and ``force`` is off (a folder without checkpoints is never refused:
            its old config moves to ``superseded/<n>/``).
        RunFolderBusyError: another process trains in this folder.
        DiskWriteError: the folder or ``config.yaml`` cannot be written (read-only, full ...).
    """
    from voxelflow.engine.distributed import broadcast_object, current_context

    run = RunDir(Path(run_dir))
    outcome: tuple[bool, str] = (False, "")
    failure: VoxelflowError | None = None
    if current_context().is_main:
        try:
            lock = RunLock(run.root).acquire()
            try:
                outcome = (_prepare_on_main(run, config_as_dict(config), force=force), "")
            except BaseException:
                lock.release()
                raise
            if keep_lock:
                run.lock = lock
            else:
                lock.release()
        except VoxelflowError as exc:  # told to every rank below, so that none waits forever
            failure, outcome = exc, (False, str(exc))
    resume, problem = broadcast_object(outcome)
    if failure is not None:
        raise failure
    if problem:
        raise CheckpointError(problem)
    return run, resume


def _prepare_on_main(run: RunDir, current: dict[str, Any], *, force: bool) -> bool:
    resume = run.has_checkpoints()
    if run.config.is_file() and not resume:
        # a start that failed before its first checkpoint trained nothing: it does not lock the
        # folder; its config (the only thing it wrote) is kept under superseded/
        _supersede(run, why="the previous start stopped before its first checkpoint")
    elif run.config.is_file():
        try:
            _check_saved_config(run, current)
        except CheckpointError:
            if not force:
                raise
            _supersede(run)
            resume = False
    make_folder(run.root, key="system.run_dir")
    text = _yaml_text(current)
    with writing(run.config, what="run config", keeps="nothing was replaced"):
        atomic_write(run.config, lambda stream: stream.write(text.encode()))
    return resume


def _check_saved_config(run: RunDir, current: Mapping[str, Any]) -> None:
    from voxelflow.config.load import read_yaml

    changed = config_changes(read_yaml(run.config), current, source=str(run.config))
    if changed:
        logger.info("resuming with changed settings: %s", ", ".join(changed))


def _yaml_text(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)


def _supersede(run: RunDir, *, why: str = "--force") -> None:
    number = 0
    while (run.root / "superseded" / str(number)).exists():
        number += 1
    target = run.root / "superseded" / str(number)
    target.mkdir(parents=True)
    for path in (run.config, run.checkpoints, run.log_file.parent, run.tensorboard, run.scalars):
        if path.exists():
            os.replace(path, target / path.name)
    logger.warning("%s: previous run contents moved to %s", why, target)


def finished_run_summary(
    run_dir: PathLike, config: ExperimentConfig | Mapping[str, Any]
) -> dict[str, float] | None:
    """The summary of a run folder that already reached ``training.max_iterations``, said once.

    ``None`` when there is nothing finished to report: no checkpoint, fewer steps than
    ``training.max_iterations``, or a saved config this one cannot resume (training then raises
    its own error naming the changed keys). Otherwise one line is logged ("already finished at
    step N") instead of the empty progress bars a resumed-but-finished run would print, and
    the last checkpoint's validation metrics plus ``step`` and ``best`` are returned, as
    ``Trainer.fit`` returns them.
    """
    from voxelflow.config.load import read_yaml
    from voxelflow.engine.checkpoint import load_checkpoint

    run = RunDir(Path(run_dir))
    if not run.config.is_file() or not run.checkpoints.is_dir():
        return None
    manager = CheckpointManager(run.checkpoints)
    last = manager.last_path()
    max_iterations = int(config_as_dict(config)["training"]["max_iterations"])
    if last is None or manager.records[-1].step < max_iterations:
        return None
    try:
        config_changes(read_yaml(run.config), config, source=str(run.config))
    except CheckpointError:
        return None
    checkpoint = load_checkpoint(last)
    step = int(checkpoint.get("step", manager.records[-1].step))
    summary = {**checkpoint.get("metrics", {}), "step": float(step)}
    best = checkpoint.get("trainer_state", {}).get("best_value")
    if best is not None:
        summary["best"] = best
    logger.info(
        "%s: already finished at step %d (training.max_iterations %d); nothing to train "
        "(raise training.max_iterations to continue, or --force / force=True to start afresh)",
        run.root, step, max_iterations,
    )  # fmt: skip
    return summary
