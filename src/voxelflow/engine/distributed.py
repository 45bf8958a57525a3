"""Distributed helpers: one code path for a single process and for ``torchrun`` + DDP.

Under ``torchrun --nproc_per_node=N -m voxelflow train -c X`` every process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment; :func:`init_distributed` joins the
process group (gloo on CPU, nccl on CUDA). Subjects are sharded per rank with
:func:`shard`, rank 0 alone writes files, and validation metrics are gathered per subject
with :func:`gather_objects` so that the mean is over subjects, never over per-rank means.

Example:
    >>> context = init_distributed()  # single process: rank 0 of 1, no process group
    >>> shard(["a", "b", "c"], rank=context.rank, world_size=context.world_size)
    ['a', 'b', 'c']
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from voxelflow.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its local (per-node) rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}: expected an integer, got {raw!r}") from exc


def init_distributed(*, backend: str | None = None) -> DistributedContext:
    """Join the process group described by the ``torchrun`` environment, if any.

    Args:
        backend: ``gloo`` or ``nccl``; default nccl when CUDA is available, else gloo.

    Returns:
        The context; a single process (``WORLD_SIZE`` unset or 1) starts no process group.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        logger.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return current_context()


def current_context() -> DistributedContext:
    """The context of an already initialised process group (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistributedContext()


def shard(items: Sequence[T], *, rank: int, world_size: int) -> list[T]:
    """The items of one rank: every ``world_size``-th item starting at ``rank`` (disjoint, covering)."""
    if not 0 <= rank < world_size:
        raise ConfigError(
            f"expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
        )
    return list(items[rank::world_size])


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if current_context().is_distributed:
        dist.barrier()


def gather_objects(value: T) -> list[T]:
    """Every rank's ``value`` (picklable), in rank order, on every rank.

    Returns:
        ``[value]`` in a single process.
    """
    context = current_context()
    if not context.is_distributed:
        return [value]
    gathered: list[T] = [None] * context.world_size  # type: ignore[list-item]
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: T, *, source: int = 0) -> T:
    """Rank ``source``'s value on every rank (the value itself in a single process)."""
    if not current_context().is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def wrap_data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """Wrap a module with trainable parameters in DDP when distributed; else return it as is."""
    if not current_context().is_distributed or not any(
        p.requires_grad for p in module.parameters()
    ):
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_subjects(per_subject: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the subjects that report it (NaN values left out)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for metrics in per_subject:
        for name, value in metrics.items():
            if not math.isnan(float(value)):
                sums[name] = sums.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1
            else:
                counts.setdefault(name, 0)
    return {
        name: sums.get(name, 0.0) / counts[name] if counts[name] else math.nan for name in counts
    }
