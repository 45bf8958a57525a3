"""Tiny applications, networks and data for the engine tests (no medicine needed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from voxelflow.applications.base import Application, OptimizationSettings, OptimizerSpecs

# Tiny convolutions on a shared, busy 2-core machine: extra OpenMP threads only wait on each other.
torch.set_num_threads(1)


def tiny_net(*, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(dropout), nn.Conv3d(4, 1, 1)
    )


def make_batch(index: int, batch_size: int, *, seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed * 100_003 + index)
    image = torch.randn(batch_size, 1, 6, 5, 4, generator=generator)
    return {
        "image": image,
        "target": 0.5 * image + 0.25,
        "subject": [f"s{index}_{i}" for i in range(batch_size)],
    }


class ToyData:
    """Endless deterministic batches, with a resumable position."""

    def __init__(
        self, batch_size: int = 2, *, seed: int = 0, epoch_length: int | None = None
    ) -> None:
        self.batch_size, self.seed, self.epoch_length = batch_size, seed, epoch_length
        self.position = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        produced = 0
        while self.epoch_length is None or produced < self.epoch_length:
            batch = make_batch(self.position, self.batch_size, seed=self.seed)
            self.position += 1
            produced += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position = int(state["position"])


class ToyRegression(Application):
    """Regress the target from the image with MSE; validation reports mse and a score."""

    name = "toy"

    def __init__(self, network: nn.Module, *, scores: Mapping[int, float] | None = None) -> None:
        super().__init__({"network": network})
        self.scores = dict(scores or {})  # iteration -> scripted validation score

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        prediction = self.modules["network"](batch["image"])
        return {"loss": nn.functional.mse_loss(prediction, batch["target"])}

    def validation_step(self, subject: Any, ctx: Any) -> dict[str, float]:
        batch = {k: v.to(ctx.device) if torch.is_tensor(v) else v for k, v in subject.items()}
        mse = float(self.compute_losses(batch)["loss"])
        score = self.scores.get(ctx.iteration, -mse)
        return {"mse": mse, "score": score, "value": float(subject.get("value", 0.0))}


def sgd_settings(lr: float = 0.05, max_iterations: int = 10) -> OptimizationSettings:
    return OptimizationSettings(
        optimizer="sgd", optimizer_options={"lr": lr}, max_iterations=max_iterations
    )


class ToyGan(Application):
    """WGAN-GP-like: n critic steps (with a gradient penalty, double backward) per generator step."""

    name = "toy_gan"
    manual_optimization = True

    def __init__(self, critic_steps: int = 3) -> None:
        torch.manual_seed(0)
        generator = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        super().__init__({"generator": generator, "critic": critic})
        self.critic_steps = critic_steps

    def configure_optimizers(self, settings: OptimizationSettings) -> OptimizerSpecs:
        return {
            "generator": (torch.optim.Adam(self.modules["generator"].parameters(), lr=1e-3), None),
            "critic": (torch.optim.Adam(self.modules["critic"].parameters(), lr=1e-3), None),
        }

    def train_step(self, batch: Mapping[str, Any], ctx: Any) -> dict[str, torch.Tensor]:
        generator, critic = self.modules["generator"], self.modules["critic"]
        real = batch["real"]
        for _ in range(self.critic_steps):
            fake = generator(torch.randn(real.shape[0], 4)).detach()
            mix = (0.5 * real + 0.5 * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
            penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
            loss_critic = critic(fake).mean() - critic(real).mean() + 10 * penalty
            ctx.backward(loss_critic, "critic")
            ctx.step("critic")
        loss_generator = -critic(generator(torch.randn(real.shape[0], 4))).mean()
        ctx.backward(loss_generator, "generator")
        ctx.step("generator")
        return {
            "loss": loss_generator + loss_critic,
            "loss_critic": loss_critic,
            "loss_generator": loss_generator,
        }
