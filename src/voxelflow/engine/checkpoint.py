"""Checkpoints: atomic writes, safe loading, retention of the last-k and best-k.

A checkpoint is one ``torch.save`` dict holding only tensors and plain containers, so it loads
with ``torch.load(weights_only=True)`` (no arbitrary pickles):

``format``, ``voxelflow_version``, ``application``, ``step``, ``modules`` (name → state dict),
``optimizers``, ``schedulers``, ``scalers``, ``rng`` (python, numpy, torch, CUDA),
``data_state`` (the loader's own state, e.g. the patch queue's seed and position),
``trainer_state`` (batches consumed, best metric, early-stopping counter),
``application_state`` (e.g. the label mapping), ``config`` (the resolved config as a dict).

Files are written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash or a full disk never leaves a half-written checkpoint in place of a good one.
``checkpoints/index.json`` lists the kept checkpoints with their step and validation metric.

Example:
    >>> manager = CheckpointManager("runs/x/checkpoints", keep_last=2, keep_best=1)
    >>> path = manager.save({"step": 10, "modules": {}}, step=10, metric=0.8)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import random
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from voxelflow.errors import CheckpointError
from voxelflow.io.disk import writing
from voxelflow.types import PathLike
from voxelflow.version import __version__

if TYPE_CHECKING:
    from voxelflow.applications.base import Application

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "voxelflow-checkpoint-1"
DAMAGED_SUFFIX = ".damaged"


class CheckpointDamagedError(CheckpointError):
    """A checkpoint file that cannot be read at all (truncated, corrupt), as opposed to refused."""


INDEX_NAME = "index.json"


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening folders
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(stream)`` on a temporary file next to ``path``, fsync, then rename it over ``path``.

    Args:
        path: destination file.
        write: callable taking a binary stream.

    Returns:
        The destination path.

    Raises:
        OSError: when writing fails (disk full ...); ``path`` then keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write a checkpoint atomically (adds the format tag and voxelflow version)."""
    payload = {"format": CHECKPOINT_FORMAT, "voxelflow_version": __version__, **state}
    return atomic_write(path, lambda stream: torch.save(payload, stream))


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, unsafe or corrupt content, or not a voxelflow checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"expected a checkpoint file, got nothing at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc).lower():
            raise CheckpointError(
                f"cannot load checkpoint {str(path)!r} safely (weights_only): {exc}"
            ) from exc
        raise CheckpointDamagedError(
            f"checkpoint {str(path)!r} is damaged (truncated or corrupt): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: expected a {CHECKPOINT_FORMAT!r} checkpoint, got format {found!r}"
        )
    return state


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) random states as tensors and plain containers."""
    version, internal, gauss = random.getstate()
    # the global RandomState is an MT19937, whose legacy state is this tuple (never the dict)
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    name, keys, position, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def module_state_problems(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and differently shaped keys of ``state`` for ``module`` (up to ten of each).

    Returns:
        Lines such as ``"missing keys: 3.bias"``; empty when ``state`` fits ``module``.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [
        f"{key} (expected {tuple(own[key].shape)}, got {tuple(state[key].shape)})"
        for key in sorted(set(own) & set(state))
        if hasattr(state[key], "shape") and tuple(own[key].shape) != tuple(state[key].shape)
    ]
    return [
        f"{label}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", reshaped),
        )
        if keys
    ]


def load_module_state(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, name: str, source: str
) -> None:
    """Load ``state`` into ``module`` strictly, listing the keys that do not fit.

    Args:
        module: the module to fill.
        state: its saved state dict.
        name: the module's role (``network``, ``generator`` ...), for messages.
        source: the checkpoint file, for messages.

    Raises:
        CheckpointError: missing, unexpected or differently shaped keys (up to ten of each listed).
    """
    problems = module_state_problems(module, state)
    if problems:
        raise CheckpointError(
            f"{source}: {name!r} does not fit the checkpoint; " + "; ".join(problems)
        )
    module.load_state_dict(state)


def check_application(
    checkpoint: Mapping[str, Any], application: Application, *, source: str
) -> None:
    """Refuse a checkpoint written by another application, naming the module keys that differ.

    Args:
        checkpoint: the loaded checkpoint dict (``application``, ``modules`` ...).
        application: the application about to load it (``name``, ``modules``).
        source: the checkpoint file, for messages.

    Raises:
        CheckpointError: ``checkpoint["application"]`` is not ``application.name``.
    """
    saved = checkpoint.get("application")
    if saved is None or saved == application.name:
        return
    modules = checkpoint.get("modules") or {}
    details = []
    for name, module in application.modules.items():
        if name not in modules:
            details.append(f"module {name!r} absent (it has {sorted(modules)})")
            continue
        problems = module_state_problems(module, modules[name])
        details.append(f"{name!r}: {'; '.join(problems) or 'same keys and shapes'}")
    raise CheckpointError(
        f"{source}: expected a checkpoint of application {application.name!r}, got {saved!r}; "
        + "; ".join(details)
    )


@dataclass
class CheckpointRecord:
    """One kept checkpoint: its step, file name (inside the folder) and validation metric."""

    step: int
    file: str
    metric: float | None = None


class CheckpointManager:
    """Save checkpoints into a folder, keeping the last ``keep_last`` and the best ``keep_best``.

    Args:
        directory: the run's ``checkpoints/`` folder.
        keep_last: most recent checkpoints kept.
        keep_best: best checkpoints kept, ranked by the metric passed to :meth:`save`.
        best_mode: ``"max"`` or ``"min"``: which way the metric improves.
    """

    def __init__(
        self, directory: PathLike, *, keep_last: int = 2, keep_best: int = 1, best_mode: str = "max"
    ) -> None:
        if best_mode not in ("max", "min"):
            raise CheckpointError(f"training.best_mode: expected 'max' or 'min', got {best_mode!r}")
        self.directory = Path(directory)
        self.keep_last, self.keep_best, self.best_mode = max(keep_last, 1), keep_best, best_mode
        self.records = self._read_index()

    def _read_index(self) -> list[CheckpointRecord]:
        index = self.directory / INDEX_NAME
        records: list[CheckpointRecord] = []
        if index.is_file():
            try:
                records = [
                    CheckpointRecord(**item) for item in json.loads(index.read_text())["records"]
                ]
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning(
                    "ignoring unreadable %s (%s); scanning the folder instead", index, exc
                )
        listed = {record.file for record in records}
        for orphan in sorted(self.directory.glob("step_*.pt")):  # written but not yet indexed
            if orphan.name not in listed:
                records.append(CheckpointRecord(int(orphan.stem.split("_")[1]), orphan.name))
        return sorted(
            (r for r in records if (self.directory / r.file).is_file()), key=lambda r: r.step
        )

    def _write_index(self) -> None:
        text = json.dumps({"records": [asdict(r) for r in self.records]}, indent=1)
        atomic_write(self.directory / INDEX_NAME, lambda stream: stream.write(text.encode()))

    def _score(self, metric: float | None) -> float:
        if metric is None or math.isnan(metric):
            return -math.inf
        return metric if self.best_mode == "max" else -metric

    def _best_records(self) -> list[CheckpointRecord]:
        rated = [r for r in self.records if r.metric is not None and not math.isnan(r.metric)]
        return sorted(rated, key=lambda r: (self._score(r.metric), r.step), reverse=True)[
            : self.keep_best
        ]

    def is_among_best(self, metric: float | None) -> bool:
        """Whether a checkpoint with this metric would be kept as one of the best."""
        if self.keep_best == 0 or self._score(metric) == -math.inf:
            return False
        best = self._best_records()
        return len(best) < self.keep_best or self._score(metric) > self._score(best[-1].metric)

    def save(self, state: Mapping[str, Any], *, step: int, metric: float | None = None) -> Path:
        """Write ``step_<step>.pt`` atomically, update the index, then drop what is no longer kept.

        Raises:
            DiskWriteError: the disk is full, read-only or not writable; the message names the
                file and the previous checkpoint, which is intact (nothing is dropped).
        """
        file_name = f"step_{step:08d}.pt"
        previous = self.last_path()
        keeps = (
            f"previous checkpoint {previous.name} intact" if previous is not None
            else "no earlier checkpoint"
        )  # fmt: skip
        with writing(self.directory / file_name, what="checkpoint", keeps=keeps):
            path = save_checkpoint(state, self.directory / file_name)
        records = [r for r in self.records if r.step != step] + [
            CheckpointRecord(step, file_name, metric)
        ]
        self.records = sorted(records, key=lambda r: r.step)
        kept = {r.file for r in self.records[-self.keep_last :]} | {
            r.file for r in self._best_records()
        }
        dropped = [r for r in self.records if r.file not in kept]
        self.records = [r for r in self.records if r.file in kept]
        # the new checkpoint is in place; a failing index is rebuilt from the folder next time
        with writing(
            self.directory / INDEX_NAME, what="checkpoint index", keeps=f"{file_name} written"
        ):
            self._write_index()
        for record in dropped:
            (self.directory / record.file).unlink(missing_ok=True)
        return path

    def paths_newest_first(self) -> list[Path]:
        """Every kept checkpoint, the most recent first."""
        return [self.directory / r.file for r in reversed(self.records)]

    def set_aside_damaged(self, path: Path) -> Path:
        """Rename a damaged checkpoint to ``<name>.damaged`` and drop it from the index."""
        target = path.with_name(path.name + DAMAGED_SUFFIX)
        if path.exists():
            os.replace(path, target)
        self.records = [r for r in self.records if r.file != path.name]
        self._write_index()
        return target

    def last_path(self) -> Path | None:
        """The most recent checkpoint, or None."""
        return self.directory / self.records[-1].file if self.records else None

    def best_path(self) -> Path | None:
        """The best checkpoint by metric (the last one when none was rated), or None."""
        best = self._best_records()
        return self.directory / best[0].file if best else self.last_path()


def find_checkpoint(run_dir: PathLike, *, which: str = "best") -> Path:
    """The ``"best"`` or ``"last"`` checkpoint of a run folder (used by inference and export).

    Raises:
        CheckpointError: unknown ``which`` or no checkpoint in the run folder.
    """
    if which not in ("best", "last"):
        raise CheckpointError(f"expected checkpoint 'best' or 'last', got {which!r}")
    manager = CheckpointManager(Path(run_dir) / "checkpoints")
    path = manager.best_path() if which == "best" else manager.last_path()
    if path is None:
        raise CheckpointError(
            f"expected a checkpoint in {str(Path(run_dir) / 'checkpoints')!r}, found none"
        )
    if which == "best" and not manager._best_records():
        # said, not silent: without a validation metric "best" can only mean the most recent
        logger.info(
            "no checkpoint of %s has a validation metric (no validation subjects, or "
            "training.keep_best 0): 'best' is the last checkpoint, step %d",
            run_dir, manager.records[-1].step,
        )  # fmt: skip
    return path


# --- run folder and resume policy -------------------------------------------------------------

#: config keys that may change when a run resumes (prefixes of dotted keys); anything else
#: (network, loss, optimiser, preprocessing, dataset, split, sampling, augmentation) is refused.
