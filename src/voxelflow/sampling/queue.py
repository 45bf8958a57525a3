"""The patch queue: windows from many subjects, shuffled, sharded by worker and rank.

Each (rank, DataLoader worker) pair is one *shard*; shard ``k`` of ``n`` takes subjects
``order[k::n]`` of the epoch's permutation (the same permutation everywhere, from ``seed`` and the
epoch), so no subject is loaded twice and cached memmaps are shared through the page cache. A
shard keeps a buffer of ``queue_length`` windows, refilled ``windows_per_subject`` at a time from
its next subject, and yields a random buffered window. A failure while loading or sampling a
subject is re-raised as :class:`~voxelflow.errors.DataError` naming the subject and its files,
with the original traceback in the message (DataLoader workers re-raise it in the main process).

Resume: ``state_dict()`` records ``seed``, ``epoch`` and ``windows_consumed``; after
``load_state_dict`` each shard skips its share (``windows_consumed // shards``) of the epoch's
windows: exact with ``num_workers=0``, within one batch per worker otherwise.

Example:
    >>> from torch.utils.data import DataLoader
    >>> loader = DataLoader(PatchQueue(subjects, sampler, infinite=False), batch_size=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError, DataError
from voxelflow.sampling.base import Sampler, source_of
from voxelflow.transforms.base import Transform
from voxelflow.transforms.compose import Compose

logger = logging.getLogger(__name__)


class SubjectSequence(Protocol):
    """Subjects by index: a list, or a lazy view that loads a subject when indexed."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> CachedSubject: ...


class PatchQueue(IterableDataset):
    """Shuffled windows from a sequence of cached subjects.

    Args:
        subjects: indexable sequence of :class:`~voxelflow.data.cached.CachedSubject` (may load lazily).
        sampler: the window sampler.
        transform: augmentation: a :class:`~voxelflow.transforms.compose.Compose` or a list of
            transforms (wrapped in one); its leading spatial run is resampled over the patch
            region by the sampler, the rest applied to the window.
        queue_length: windows buffered per shard before yielding (mixing depth).
        seed: base seed; per-epoch, per-shard generators derive from it.
        shuffle_subjects: permute subjects each epoch.
        rank: distributed rank.
        world_size: number of distributed ranks.
        infinite: loop over epochs forever (training); else stop after one pass.
        window_fields: picklable callable ``CachedSubject -> {name: tensor}`` added to each of
            the subject's windows (scalar targets from table columns), or None.
        subject_weights: one non-negative weight per subject, or None. When given (and
            ``shuffle_subjects``), each epoch's order is ``len(subjects)`` draws *with
            replacement*, subject ``i`` drawn with probability ``w_i / Σ w`` (class-balanced
            sampling); sharding and resume work as for the permutation.

    Raises:
        ConfigError: bad queue_length, rank, world_size or subject_weights.

    Shape:
        each yielded window: role → ``(C, *window)``; a DataLoader batches them to
        ``(B, C, *window)``.

    Example:
        >>> from voxelflow.data.cached import CachedSubject
        >>> from voxelflow.sampling.random import UniformSampler
        >>> image = np.zeros((1, 8, 8, 8), np.float32)
        >>> subjects = [CachedSubject(f"s{i}", {"image": image}, {"image": "intensity"}) for i in range(3)]
        >>> queue = PatchQueue(subjects, UniformSampler((4, 4, 4), windows_per_subject=2), infinite=False)
        >>> windows = list(queue)
        >>> len(windows), sorted({w["subject"] for w in windows}), tuple(windows[0]["image"].shape)
        (6, ['s0', 's1', 's2'], (1, 4, 4, 4))
    """

    def __init__(
        self,
        subjects: SubjectSequence,
        sampler: Sampler,
        *,
        transform: Transform | list[Transform] | tuple[Transform, ...] | None = None,
        queue_length: int = 64,
        seed: int = 0,
        shuffle_subjects: bool = True,
        rank: int = 0,
        world_size: int = 1,
        infinite: bool = True,
        window_fields: Callable[[CachedSubject], Mapping[str, torch.Tensor]] | None = None,
        subject_weights: Sequence[float] | None = None,
    ) -> None:
        if queue_length < 1:
            raise ConfigError(f"expected queue_length >= 1, got {queue_length!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(
                f"expected 0 <= rank < world_size, got rank {rank} and world_size {world_size}"
            )
        if len(subjects) == 0:
            raise ConfigError("expected at least one subject for the patch queue, got none")
        if isinstance(transform, (list, tuple)):
            transform = Compose(transform) if transform else None
        self.subjects, self.sampler, self.transform = subjects, sampler, transform
        self.queue_length, self.seed, self.shuffle_subjects = (
            int(queue_length),
            int(seed),
            shuffle_subjects,
        )
        self.rank, self.world_size, self.infinite = int(rank), int(world_size), infinite
        self.window_fields = window_fields
        self.subject_probabilities = _subject_probabilities(subject_weights, len(subjects))
        self.epoch = 0
        self.windows_consumed = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the subject permutation and the draws)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """What resuming needs."""
        return {"seed": self.seed, "epoch": self.epoch, "windows_consumed": self.windows_consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict` (see the module notes on exactness)."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self.windows_consumed = int(state["windows_consumed"])

    def _shard(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def shard_subjects(self, epoch: int, shard: int, shards: int) -> list[int]:
        """Subject indices of one shard in one epoch."""
        count = len(self.subjects)
        rng = np.random.default_rng([self.seed, epoch])
        if not self.shuffle_subjects:
            order = np.arange(count)
        elif self.subject_probabilities is not None:
            order = rng.choice(count, size=count, replace=True, p=self.subject_probabilities)
        else:
            order = rng.permutation(count)
        mine = order[shard::shards].tolist()
        return mine or [int(order[shard % count])]  # more shards than subjects: share one

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, shards = self._shard()
        epoch, skip = self.epoch, self.windows_consumed // shards
        while True:
            for item in self._epoch_windows(epoch, shard, shards):
                if skip > 0:
                    skip -= 1
                    continue
                if get_worker_info() is None:
                    self.windows_consumed += 1
                yield item
            if not self.infinite:
                return
            epoch += 1
            if get_worker_info() is None:
                self.epoch, self.windows_consumed = epoch, 0

    def _epoch_windows(self, epoch: int, shard: int, shards: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, epoch, shard])
        buffer: list[dict[str, Any]] = []
        for index in self.shard_subjects(epoch, shard, shards):
            buffer.extend(self._sample_subject(index, rng))
            while len(buffer) >= self.queue_length:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def _sample_subject(self, index: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        subject = None
        try:
            subject = self.subjects[index]
            windows = self.sampler.sample(subject, rng, augmentation=self.transform)
            if self.window_fields is not None:
                extra = self.window_fields(subject)
                windows = [{**window, **extra} for window in windows]
            return windows
        except Exception as exc:  # re-raised with the subject named; the original is chained
            where = source_of(subject) if subject is not None else f"subject #{index}"
            details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            raise DataError(
                f"failed to sample {where}: {type(exc).__name__}: {exc}\nOriginal traceback:\n{details}"
            ) from exc


def _subject_probabilities(weights: Sequence[float] | None, count: int) -> np.ndarray | None:
    """Normalised subject weights, or None.

    Raises:
        ConfigError: not one finite, non-negative weight per subject, or all zero.
    """
    if weights is None:
        return None
    values = np.asarray(list(weights), dtype=np.float64)
    if values.shape != (count,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError(
            f"subject_weights: expected {count} finite weights >= 0 (one per subject), "
            f"got {values.size} values with min {values.min(initial=0.0)}"
        )
    if values.sum() <= 0:
        raise ConfigError(f"subject_weights: expected a positive sum, got {values.sum()}")
    return values / values.sum()


def collate_windows(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collate for window dicts: tensors stacked to ``(B, ...)``, names as a list."""
    out: dict[str, Any] = {}
    for key, value in items[0].items():
        if isinstance(value, torch.Tensor):
            out[key] = torch.stack([item[key] for item in items])
        elif key == "kinds":
            out[key] = value
        else:
            out[key] = [item[key] for item in items]
    return out
