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
from typing import Any

from voxelflow.engine.checkpoint import CheckpointManager, atomic_write
from voxelflow.errors import CheckpointError, ConfigError
from voxelflow.types import PathLike

logger = logging.getLogger(__name__)


RESUMABLE_KEYS = (
    "training.max_iterations", "training.validate_every", "training.log_every",
    "training.checkpoint_every", "training.keep_last", "training.keep_best",
    "training.early_stopping_patience", "training.num_workers", "training.amp",
    "training.compile", "scheduler", "inference", "evaluation", "system",
)  # fmt: skip
#: keys whose change rebuilds the learning-rate schedule instead of restoring its saved state.
SCHEDULE_KEYS = ("training.max_iterations", "scheduler")


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def config_as_dict(config: Any) -> dict[str, Any]:
    """A pydantic experiment (or a mapping) as a plain, YAML-safe dict."""
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return json.loads(json.dumps(dict(config), default=str))


def config_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any], *, source: str
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

    def has_checkpoints(self) -> bool:
        """Whether the folder holds at least one checkpoint."""
        return CheckpointManager(self.checkpoints).last_path() is not None


LOCK_NAME = ".lock"


class RunFolderBusyError(ConfigError):
    """Another process is training in the same run folder (exit code 2 from the CLI)."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.lock``, holding the owner's pid.

    The kernel releases it when the process ends, so a lock left by a dead process never blocks.
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._handle: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunFolderBusyError` naming the folder and the holder's pid."""
        if sys.platform == "win32":  # pragma: no cover - no flock there
            return self
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
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
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        self._handle = handle
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its content is stale once unlocked)."""
        if self._handle is not None:
            import fcntl

            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def prepare_run_dir(run_dir: PathLike, config: Any, *, force: bool = False) -> tuple[RunDir, bool]:
    """Create or reopen a run folder for training; decide whether to resume.

    Call it on every rank: rank 0 decides and writes, the others receive its decision.

    Args:
        run_dir: the run folder.
        config: the resolved experiment (pydantic model or mapping).
        force: start afresh even if the folder holds a different config; the previous
            ``config.yaml``, checkpoints, logs and scalars move to ``superseded/<n>/``.

    Returns:
        The run folder and whether training resumes from its last checkpoint.

    Raises:
        CheckpointError: the folder holds a different config whose changes are not resumable
            (or holds no checkpoint to resume), and ``force`` is off.
    """
    from voxelflow.engine.distributed import broadcast_object, current_context

    run = RunDir(Path(run_dir))
    outcome: tuple[bool, str] = (False, "")
    if current_context().is_main:
        try:
            outcome = (_prepare_on_main(run, config_as_dict(config), force=force), "")
        except CheckpointError as exc:
            outcome = (False, str(exc))
    resume, problem = broadcast_object(outcome)
    if problem:
        raise CheckpointError(problem)
    return run, resume


def _prepare_on_main(run: RunDir, current: dict[str, Any], *, force: bool) -> bool:
    resume = run.has_checkpoints()
    if run.config.is_file():
        try:
            _check_saved_config(run, current)
        except CheckpointError:
            if not force:
                raise
            _supersede(run)
            resume = False
    run.root.mkdir(parents=True, exist_ok=True)
    text = _yaml_text(current)
    atomic_write(run.config, lambda stream: stream.write(text.encode()))
    return resume


def _check_saved_config(run: RunDir, current: Mapping[str, Any]) -> None:
    from voxelflow.config.load import read_yaml

    changed = config_changes(read_yaml(run.config), current, source=str(run.config))
    if changed and not run.has_checkpoints():
        raise CheckpointError(
            f"{run.config}: the run folder holds a different config (changed: {', '.join(changed)}) "
            "and no checkpoint to resume; use --force to start afresh"
        )
    if changed:
        logger.info("resuming with changed settings: %s", ", ".join(changed))


def _yaml_text(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)


def _supersede(run: RunDir) -> None:
    number = 0
    while (run.root / "superseded" / str(number)).exists():
        number += 1
    target = run.root / "superseded" / str(number)
    target.mkdir(parents=True)
    for path in (run.config, run.checkpoints, run.log_file.parent, run.tensorboard, run.scalars):
        if path.exists():
            os.replace(path, target / path.name)
    logger.warning("--force: previous run contents moved to %s", target)
