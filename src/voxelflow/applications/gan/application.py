"""GAN: noise (+ an optional conditioning) → image, trained adversarially with two optimisers.

The generator (``network``, e.g. ``{name: generator}``) maps a noise vector of
``task.noise_size`` values, plus an optional *conditioning*, to an image of the training
window's size; the discriminator (``task.discriminator``, default ``{name: discriminator}``)
scores images concatenated with the same conditioning. The conditioning is either or both of

* an image role (``task.conditioning_role``, e.g. ``conditioning`` in ``dataset.inputs``),
  resized to the window and standardised per sample (preprocessing normalises only ``image``);
* a class column of the table (``task.conditioning_column``): its values, found on the training
  split, become one-hot constant channels (delivered to windows by :class:`ConditionLookup`).

Training (``manual_optimization``): ``task.critic_steps`` discriminator updates, then one
generator update per iteration, each optimiser with its own schedule; losses
``gan_nonsaturating``, ``gan_least_squares`` or ``gan_wasserstein`` (top-level ``loss``) plus
``task.gradient_penalty`` × WGAN-GP penalty (default 10 with ``gan_wasserstein``, else 0).
Validation: Wasserstein distance between the intensity histograms of generated images and each
validation subject (resized to the window), in preprocessed intensities (lower is better).

Inference (``inference.mode``): ``sample`` writes ``inference.num_samples`` images from seeded
noise per conditioning (per class level, or per input subject with a conditioning image; the
same noise vectors for every conditioning); ``interpolate`` writes ``inference.steps`` images
along the straight line between two seeded noise vectors, per conditioning; with
``inference.interpolate: [a, b]`` it joins instead the conditioning of subjects (or class levels)
``a`` and ``b`` at fixed noise. Outputs are on a grid covering the first training subject's
preprocessed field of view; intensities are mapped to original units by the pooled training
quantiles (``task.output_intensity: original``) or left preprocessed (``normalized``).

Example (YAML)::

    application: gan
    network: {name: generator, features: [128, 64, 32]}
    loss: {name: gan_wasserstein}
    task: {noise_size: 64, conditioning_column: level, critic_steps: 5}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from voxelflow.applications.base import (
    Application,
    EvaluationOptions,
    InferenceItem,
    OptimizationSettings,
    OptimizerSpecs,
    PlanningRules,
    Prediction,
    TrainingContext,
)
from voxelflow.applications.gan.task import (
    GAN_LOSSES,
    ConditionLookup,
    GanTask,
    standardize,
)
from voxelflow.errors import ConfigError
from voxelflow.losses.generative import GANWassersteinLoss

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig, InferenceConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.data.dataset import PreprocessedDataset


class AdversarialLoss(Protocol):
    """What the application needs of its loss: a GANLoss, or a plugin with both methods."""

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, 1)`` logits of generated images → scalar."""
        ...

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        """Shape: ``(B, 1)`` logits of real and generated images → scalar."""
        ...


class GanApplication(Application):
    """Adversarial image generation with a generator and a discriminator.

    Args:
        generator: ``(noise (B, Z), conditioning (B, K, *size) | None) → (B, C, *size)``.
        discriminator: ``(B, C + K, *size) → (B, 1)`` logits.
        loss: a :class:`~voxelflow.losses.generative.GANLoss`.
        task: the parsed ``task`` section.
        image_size: generated spatial size (the training window).
        classes: class levels of ``task.conditioning_column`` (None: no class conditioning).
        conditioning_channels: channels of the ``task.conditioning_role`` image (0: none).
        output_grid: ``{"affine": 4×4, "intensity": quantile map}`` from :meth:`fit_task`.
    """

    name = "gan"
    task_model = GanTask
    cv_per_fold = True
    manual_optimization = True
    inference_modules = ("generator",)  # zoo entries ship the generator only
    prediction_table = "generated.csv"
    inference_modes = ("sample", "interpolate")
    ensemble_refusal = (
        "generated samples come from one generator's distribution; averaging samples of "
        "several generators blurs them instead of estimating one output"
    )
    planning = PlanningRules(network="template", normalization="fixed_window")

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: AdversarialLoss,
        *,
        task: GanTask,
        image_size: Sequence[int],
        classes: Sequence[str] | None = None,
        conditioning_channels: int = 0,
        output_grid: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__({"generator": generator, "discriminator": discriminator})
        self.loss, self.task, self.image_size = loss, task, tuple(int(s) for s in image_size)
        self.classes = list(classes) if classes is not None else None
        self.conditioning_channels = conditioning_channels
        self.output_grid = dict(output_grid or {})
        self.penalty_weight = (
            task.gradient_penalty
            if task.gradient_penalty is not None
            else (10.0 if isinstance(loss, GANWassersteinLoss) else 0.0)
        )
        self._last_fake: torch.Tensor | None = None

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def fit_task(
        cls, experiment: ExperimentConfig, dataset: PreprocessedDataset, train_indices: Sequence[int]
    ) -> dict[str, Any]:
        """Class levels, the output grid and the intensity map, from the training split."""
        from voxelflow.applications.gan.task import fit_classes, fit_output_grid

        task = GanTask.from_config(experiment.task)
        state: dict[str, Any] = {"noise_size": task.noise_size}
        if task.conditioning_column:
            state["classes"] = fit_classes(dataset, train_indices, task.conditioning_column)
        state["output_grid"] = fit_output_grid(dataset, train_indices, experiment.sampling.window)
        return state

    @classmethod
    def from_experiment(
        cls,
        experiment: ExperimentConfig,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> GanApplication:
        """Generator, discriminator and GAN loss from an Experiment (+ the fitted task state)."""
        from voxelflow.config.build import build_loss, build_network

        task, state = GanTask.from_config(experiment.task), dict(task_state or {})
        size = _image_size(experiment.sampling.window)
        loss = build_loss(experiment.loss)
        if not (hasattr(loss, "generator_loss") and hasattr(loss, "discriminator_loss")):
            raise ConfigError(
                f"loss: expected a GAN loss ({', '.join(GAN_LOSSES)}, or a plugin with "
                f"generator_loss and discriminator_loss), got {experiment.loss.name!r}"
            )
        adversarial = cast(AdversarialLoss, loss)  # both methods checked just above
        classes = state.get("classes")
        if task.conditioning_column and not classes:
            raise ConfigError(
                f"task.conditioning_column: expected class levels fitted on the training split "
                f"(preprocessing.json 'task'), got {classes!r}"
            )
        cond_channels = _role_channels(experiment, task)
        conditioning = cond_channels + (len(classes) if task.conditioning_column and classes else 0)
        generator = build_network(
            experiment.network, spatial_dims=len(size), in_channels=in_channels,
            out_channels=in_channels, noise_size=task.noise_size, image_size=list(size),
            conditioning_channels=conditioning,
        )  # fmt: skip
        discriminator = build_network(
            task.discriminator, key="task.discriminator", spatial_dims=len(size), in_channels=in_channels + conditioning,
            out_channels=1, image_size=list(size),
        )  # fmt: skip
        return cls(
            generator, discriminator, adversarial,
            task=task, image_size=size, classes=classes if task.conditioning_column else None,
            conditioning_channels=cond_channels, output_grid=state.get("output_grid"),
        )  # fmt: skip

    def window_fields(self) -> ConditionLookup | None:
        """The class index of each window's subject (class-conditioned GANs only)."""
        if self.classes is None or self.task.conditioning_column is None:
            return None
        return ConditionLookup(self.task.conditioning_column, self.classes)

    def configure_optimizers(self, settings: OptimizationSettings) -> OptimizerSpecs:
        """``{"generator": ..., "discriminator": ...}``, each with its own schedule."""
        task = self.task
        d_optimizer = task.discriminator_optimizer
        d_scheduler = task.discriminator_scheduler
        d_options = dict(d_optimizer.kwargs if d_optimizer else settings.optimizer_options)
        if task.discriminator_lr is not None:
            d_options["lr"] = task.discriminator_lr
        d_settings = OptimizationSettings(
            optimizer=d_optimizer.name if d_optimizer else settings.optimizer,
            optimizer_options=d_options,
            scheduler=d_scheduler.name if d_scheduler else settings.scheduler,
            scheduler_options=d_scheduler.kwargs if d_scheduler else settings.scheduler_options,
            max_iterations=settings.max_iterations,
            optimizer_key="task.discriminator_optimizer" if d_optimizer else "optimizer",
            scheduler_key="task.discriminator_scheduler" if d_scheduler else "scheduler",
        )
        return {
            "generator": _optimizer(self.modules["generator"], settings),
            "discriminator": _optimizer(self.modules["discriminator"], d_settings),
        }

    # --- training -----------------------------------------------------------------------------
    def conditioning(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """Conditioning channels of a batch: the standardised image role, then one-hot classes.

        Shape:
            ``batch[role] (B, K_img, *size)``, ``batch["condition"] (B,)`` → ``(B, K, *size)``.
        """
        parts = []
        if self.task.conditioning_role:
            parts.append(standardize(batch[self.task.conditioning_role].float()))
        if self.classes is not None:
            parts.append(self.class_maps(batch["condition"]))
        return torch.cat(parts, dim=1) if parts else None

    def class_maps(self, indices: torch.Tensor) -> torch.Tensor:
        """One-hot constant maps. Shape: ``(B,)`` → ``(B, num_classes, *image_size)``."""
        assert self.classes is not None  # internal: only called for class-conditioned GANs
        one_hot = nn.functional.one_hot(indices.long().reshape(-1), len(self.classes)).float()
        return one_hot.reshape(*one_hot.shape, *([1] * len(self.image_size))).expand(
            -1, -1, *self.image_size
        )

    def discriminate(self, image: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
        """Discriminator logits of images with their conditioning. Shape: → ``(B, 1)``."""
        inputs = image if conditioning is None else torch.cat([image, conditioning.to(image)], 1)
        return self.modules["discriminator"](inputs)

    def generate(self, noise: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
        """Generated images. Shape: ``(B, noise_size)`` → ``(B, C, *image_size)``."""
        return self.modules["generator"](noise, conditioning)

    def train_step(self, batch: Mapping[str, Any], ctx: TrainingContext) -> dict[str, torch.Tensor]:
        """``critic_steps`` discriminator updates, then one generator update.

        Every critic step draws fresh noise but reuses this batch's real images (one batch per
        iteration); the gradient penalty runs in float32, outside autocast.

        Shape:
            ``batch["image"] (B, C, *image_size)``.
        """
        real = batch["image"].float()
        conditioning = self.conditioning(batch)
        for _ in range(self.task.critic_steps):
            terms = self._discriminator_step(real, conditioning, ctx)
        noise = torch.randn(real.shape[0], self.task.noise_size, device=real.device)
        with ctx.autocast():
            fake = self.generate(noise, conditioning)
            g_loss = self.loss.generator_loss(self.discriminate(fake, conditioning))
        ctx.backward(g_loss, "generator")
        ctx.step("generator")
        ctx.zero_grad("discriminator")  # the generator's backward went through it
        self._last_fake = fake.detach()
        return {"g_loss": g_loss.detach(), **terms}

    def _discriminator_step(
        self, real: torch.Tensor, conditioning: torch.Tensor | None, ctx: TrainingContext
    ) -> dict[str, torch.Tensor]:
        from voxelflow.losses.generative import gradient_penalty

        ctx.zero_grad("discriminator")
        noise = torch.randn(real.shape[0], self.task.noise_size, device=real.device)
        with ctx.autocast():
            with torch.no_grad():
                fake = self.generate(noise, conditioning)
            real_logits = self.discriminate(real, conditioning)
            fake_logits = self.discriminate(fake, conditioning)
            d_loss = self.loss.discriminator_loss(real_logits, fake_logits)
        terms = {"d_loss": d_loss.detach(), "d_real": real_logits.detach().float().mean(),
                 "d_fake": fake_logits.detach().float().mean()}  # fmt: skip
        total = d_loss
        if self.penalty_weight > 0:  # in full precision: a double backward under fp16 underflows
            penalty = gradient_penalty(
                lambda x: self.discriminate(x, conditioning), real, fake.float()
            )
            total, terms["gp"] = d_loss + self.penalty_weight * penalty, penalty.detach()
        ctx.backward(total, "discriminator")
        ctx.step("discriminator")
        return terms

    # --- validation and inference -------------------------------------------------------------
    def validation_step(self, subject: CachedSubject, ctx: TrainingContext) -> dict[str, float]:
        """Histogram Wasserstein distance of generated images vs the subject's (resized) image."""
        from voxelflow.applications.gan.evaluation import histogram_wasserstein
        from voxelflow.sampling.resize import resize_volume

        arrays = {
            role: resize_volume(
                torch.from_numpy(np.array(array, dtype=np.float32)), self.image_size
            )
            for role, array in subject.arrays.items()
        }
        count = self.task.validation_samples
        batch: dict[str, Any] = {
            role: a[None].expand(count, *a.shape) for role, a in arrays.items()
        }
        if self.classes is not None:
            lookup = self.window_fields()
            assert lookup is not None  # internal: classes imply a column
            batch["condition"] = torch.full((count,), lookup.index(subject.name, subject.fields))
        noise = torch.randn(count, self.task.noise_size, generator=torch.Generator().manual_seed(0))
        with ctx.autocast():
            fake = self.generate(noise.to(ctx.device), _on(self.conditioning(batch), ctx.device))
        generated, real = fake.float().cpu().numpy(), arrays["image"].numpy()
        return {
            "histogram_wasserstein": histogram_wasserstein(generated, real),
            "mean_image_mae": float(np.abs(generated.mean(axis=0) - real).mean()),
        }

    def run_inference(
        self, items: Iterable[InferenceItem], ctx: TrainingContext, options: InferenceConfig
    ) -> Iterator[Prediction]:
        """``sample`` or ``interpolate`` (see the module docstring); items are read only when a
        conditioning image is needed."""
        from voxelflow.applications.gan.generation import generation_plan

        for name, rows, noise, conditioning in generation_plan(self, items, options):
            for start in range(0, len(rows), options.batch_size):
                part = slice(start, start + options.batch_size)
                chunk = None if conditioning is None else conditioning[part].to(ctx.device)
                with ctx.autocast():
                    images = self.generate(noise[part].to(ctx.device), chunk).float().cpu()
                for offset, (image, values) in enumerate(zip(images, rows[part])):
                    index = start + offset
                    yield Prediction(
                        f"{name}_{index:03d}", {"generated": self.output_image(image)},
                        {**values, "index": index, "seed": options.seed},
                    )  # fmt: skip

    def output_image(self, image: torch.Tensor) -> Any:
        """A generated ``(C, *image_size)`` tensor as an Image on the output grid (see fit_task)."""
        from voxelflow.applications.gan.task import to_output_image

        return to_output_image(image, self.output_grid, intensity=self.task.output_intensity)

    @classmethod
    def cross_validation_metric(cls, experiment: ExperimentConfig) -> tuple[str, bool, str] | None:
        """Histogram Wasserstein distance of generated vs real intensities, per fold."""
        return ("histogram_wasserstein", False, "histogram_wasserstein")

    @classmethod
    def evaluate(
        cls,
        experiment: ExperimentConfig,
        *,
        predictions: Path,
        rows: Sequence[Any],
        out_dir: Path,
        options: EvaluationOptions | None = None,
    ) -> dict[str, float]:
        """Distribution distances of generated vs real images: see :mod:`.gan_evaluation`."""
        from voxelflow.applications.gan.evaluation import evaluate_generated

        return evaluate_generated(
            experiment, GanTask.from_config(experiment.task), predictions=predictions, rows=rows,
            out_dir=out_dir,
        )  # fmt: skip

    # --- logging and state --------------------------------------------------------------------
    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        images = {"real": batch["image"][0].float()}
        if self._last_fake is not None:
            images["generated"] = self._last_fake[0].float()
        return images

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        return None if self.conditioning_channels or self.classes else ("generator", torch.randn(
            1, self.task.noise_size, device=batch["image"].device))  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"noise_size": self.task.noise_size, "classes": self.classes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["noise_size"]) != self.task.noise_size or state["classes"] != self.classes:
            raise ConfigError(
                f"checkpoint: expected noise_size {self.task.noise_size} and classes "
                f"{self.classes}, got {state['noise_size']} and {state['classes']}"
            )


def _image_size(window: Sequence[int]) -> tuple[int, ...]:
    if any(int(s) <= 0 for s in window):
        raise ConfigError(
            f"sampling.window: expected fixed sizes (the generated image size), got {list(window)}"
        )
    return tuple(int(s) for s in window)


def _role_channels(experiment: ExperimentConfig, task: GanTask) -> int:
    role = task.conditioning_role
    if role is None:
        return 0
    if role == "image" or role not in experiment.dataset.inputs:
        raise ConfigError(
            f"task.conditioning_role: expected a role of dataset.inputs other than 'image' "
            f"({sorted(experiment.dataset.inputs)}), got {role!r}"
        )
    return len(experiment.dataset.inputs[role])


def _optimizer(module: nn.Module, settings: OptimizationSettings) -> tuple[Any, Any]:
    parameters = [p for p in module.parameters() if p.requires_grad]
    return settings.build(parameters)


def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)
