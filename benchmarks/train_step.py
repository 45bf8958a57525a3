"""Training-iteration overhead of voxelflow's Trainer over a hand-written PyTorch loop.

Both do the same forward / backward / optimiser step on the same pre-made batches of a small
3D convolutional network. The voxelflow run includes everything a real run does per iteration
(autocast decision, batch move, loss dict, interval averages, CSV + TensorBoard scalars every
``log_every`` iterations, progress bar); setup and the final checkpoint are excluded. Timings are
interleaved over repeats (hand, voxelflow, hand, ...) and the median is reported.

Usage:
    .venv/bin/python benchmarks/train_step.py --iterations 30 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from voxelflow.applications.base import Application, OptimizationSettings
from voxelflow.config.schema import TrainingConfig
from voxelflow.engine.hooks import Hook
from voxelflow.engine.trainer import Trainer

logger = logging.getLogger("benchmarks.train_step")


def make_network(channels: int) -> nn.Module:
    """A small 3D conv net (about the cost of a shallow U-Net level)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, channels, 3, padding=1), nn.InstanceNorm3d(channels), nn.LeakyReLU(),
        nn.Conv3d(channels, channels, 3, padding=1), nn.InstanceNorm3d(channels), nn.LeakyReLU(),
        nn.Conv3d(channels, 2, 1),
    )  # fmt: skip


def make_batches(count: int, batch_size: int, size: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        image = torch.randn(batch_size, 1, size, size, size, generator=generator)
        batches.append({"image": image, "target": torch.cat([image, -image], dim=1)})
    return batches


class Regression(Application):
    name = "benchmark"

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {
            "loss": nn.functional.mse_loss(self.modules["network"](batch["image"]), batch["target"])
        }


class Cycle:
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self):
        return itertools.cycle(self.batches)


def time_hand_loop(network: nn.Module, batches: list, iterations: int) -> float:
    """Milliseconds per iteration of a plain PyTorch loop."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    source = itertools.cycle(batches)
    start = time.perf_counter()
    for _ in range(iterations):
        batch = next(source)
        loss = nn.functional.mse_loss(network(batch["image"]), batch["target"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / iterations * 1e3


class _Clock(Hook):
    def __init__(self, iterations: int) -> None:
        self.iterations, self.start, self.end = iterations, 0.0, 0.0

    def on_train_start(self, trainer: Any) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer: Any, batch: Any, losses: Any) -> None:
        if trainer.step == self.iterations:
            self.end = time.perf_counter()


def time_voxelflow(
    network: nn.Module, batches: list, iterations: int, *, logging_on: bool = True
) -> float:
    """Milliseconds per iteration of the voxelflow Trainer on the same work."""
    clock = _Clock(iterations)
    training = TrainingConfig(
        max_iterations=iterations, validate_every=0, log_every=10, checkpoint_every=10**9
    )
    optimization = OptimizationSettings(
        optimizer="adamw", optimizer_options={"lr": 1e-3}, max_iterations=iterations
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(Regression({"network": network}), Cycle(batches), run_dir=run_dir, training=training,
                          optimization=optimization, device="cpu", hooks=[clock],
                          progress=logging_on, tensorboard=logging_on)  # fmt: skip
        trainer.fit()
    return (clock.end - clock.start) / iterations * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="cubic window edge")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-logging", action="store_true", help="no progress bar nor TensorBoard")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("voxelflow").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    network, batches = make_network(args.channels), make_batches(4, args.batch_size, args.size)
    time_hand_loop(copy.deepcopy(network), batches, 3)  # warm-up
    hand, ours = [], []
    for repeat in range(args.repeats):
        ours_timer = functools.partial(time_voxelflow, logging_on=not args.no_logging)
        order = [("hand", time_hand_loop), ("voxelflow", ours_timer)]
        for label, timer in order if repeat % 2 == 0 else order[::-1]:
            (hand if label == "hand" else ours).append(
                timer(copy.deepcopy(network), batches, args.iterations)
            )
    hand_ms, ours_ms = statistics.median(hand), statistics.median(ours)
    logger.info(
        "window %d^3, batch %d, %d iterations x %d repeats, %d thread(s), logging %s",
        args.size, args.batch_size, args.iterations, args.repeats, args.threads,
        "off" if args.no_logging else "on",
    )  # fmt: skip
    logger.info(
        "hand-written loop : %.2f ms/iteration (runs: %s)",
        hand_ms,
        ", ".join(f"{v:.1f}" for v in hand),
    )
    logger.info(
        "voxelflow Trainer : %.2f ms/iteration (runs: %s)",
        ours_ms,
        ", ".join(f"{v:.1f}" for v in ours),
    )
    paired = statistics.median(o / h for o, h in zip(ours, hand))
    logger.info("overhead          : %+.1f %% (ratio of medians), %+.1f %% (median of paired ratios)",
                (ours_ms / hand_ms - 1) * 100, (paired - 1) * 100)  # fmt: skip


if __name__ == "__main__":
    main()
