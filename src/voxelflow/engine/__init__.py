"""voxelflow.engine: the generic training loop, checkpoints, logging, devices and DDP helpers.

Run folder layout (see :class:`voxelflow.engine.run_dir.RunDir`): ``config.yaml`` (resolved),
``checkpoints/`` (``step_*.pt`` and ``index.json``), ``logs/train.log``, ``tensorboard/``,
``scalars.csv``, ``split.csv``, later ``predictions/`` and ``evaluation/``.
"""

from __future__ import annotations

from voxelflow.engine.checkpoint import (
    CheckpointManager,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from voxelflow.engine.device import Precision, resolve_precision, seed_everything, select_device
from voxelflow.engine.distributed import DistributedContext, init_distributed, shard
from voxelflow.engine.hooks import HOOKS, Hook
from voxelflow.engine.logging import RunLogger
from voxelflow.engine.run_dir import RunDir, prepare_run_dir
from voxelflow.engine.trainer import StepContext, Trainer, TrainerOptions

__all__ = [
    "HOOKS",
    "CheckpointManager",
    "DistributedContext",
    "Hook",
    "Precision",
    "RunDir",
    "RunLogger",
    "StepContext",
    "Trainer",
    "TrainerOptions",
    "find_checkpoint",
    "init_distributed",
    "load_checkpoint",
    "prepare_run_dir",
    "resolve_precision",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "shard",
]
