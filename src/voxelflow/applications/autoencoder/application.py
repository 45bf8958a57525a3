"""Autoencoder / representation learning: image → latent → image (VAE or plain autoencoder).

Two ways to train, chosen by ``sampling.sampler``:

* ``resize`` (whole images): every subject resized to ``sampling.window``, the network's fixed
  ``image_size``. All four inference modes work.
* any window sampler (``uniform`` ...): the network learns windows; ``reconstruct`` blends
  sliding windows over the whole image and ``sample`` generates windows. ``encode`` and
  ``interpolate`` need one latent per subject, hence whole-image training.

Losses: the ``vae`` network with the ``vae`` loss (reconstruction + β·KL), or the plain
``autoencoder`` with a reconstruction loss (``l1``, ``l2``, ``huber`` ...). A ``weight`` role
masks the reconstruction. Validation: reconstruction ``mae`` and ``psnr`` in normalised units
(on the window grid for whole images); set ``training.best_metric: mae`` and
``best_mode: min``.

Inference modes (``inference.mode``; table written beside the outputs):

* ``reconstruct`` (``reconstructions.csv``): ``<subject>_recon.nii.gz`` in each input's original
  geometry (resized back, preprocessing inverted) and, with ``task.intensity_units: original``
  (default), in the file's intensity units (see
  :class:`~voxelflow.applications.autoencoder.evaluation.IntensityInverse`); ``inference.error_maps``
  adds ``<subject>_error.nii.gz`` = |reconstruction − image|.
* ``encode`` (``latents.csv`` + ``latents.npy``): latent means ``mu_i`` and log-variances
  ``logvar_i`` (VAE) and the KL to the prior per subject; ``latents.npy`` is float32
  ``(N, 2, L)`` (means, log-variances; ``(N, 1, L)`` for a plain autoencoder) in table order.
* ``sample`` (``samples.csv``): ``inference.num_samples`` images decoded from N(0, I) latents
  drawn with ``inference.seed`` (VAE only).
* ``interpolate`` (``interpolation.csv``): ``inference.steps`` images decoded along the straight
  line between the latent means of the two subjects named in ``inference.interpolate``.

Generated images (sample, interpolate) are in normalised units, on the window grid with the
affine of the **first training subject's preprocessed grid** resized to the window (saved by
:meth:`AutoencoderApplication.fit_task`; for window training that grid's affine as is, the
window at its origin; an identity affine, 1 mm voxels, when no task state is available).

Example:
    >>> app = AutoencoderApplication.from_experiment(experiment, in_channels=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from voxelflow.applications.autoencoder.evaluation import (
    evaluate_reconstructions,
    find_latents,
    fit_intensity_inverse,
    latent_size_of,
)
from voxelflow.applications.autoencoder.task import (
    TABLES,
    AutoencoderOptions,
    AutoencoderTask,
    check_pairing,
    image_size_option,
    reconstruction_of,
    training_window,
)
from voxelflow.applications.base import (
    Application,
    EvaluationOptions,
    InferenceItem,
    PlanningRules,
    Prediction,
    TrainingContext,
)
from voxelflow.applications.common import WindowedInference, autocast_forward, resized_affine
from voxelflow.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig, InferenceConfig
    from voxelflow.data.cached import CachedSubject
    from voxelflow.data.dataset import PreprocessedDataset

log = logging.getLogger(__name__)

__all__ = ["AutoencoderApplication", "AutoencoderOptions", "AutoencoderTask"]


class LatentNetwork(Protocol):
    """A network with a latent code: ``encode`` and ``decode`` (the ``vae`` and ``autoencoder``)."""

    def encode(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Shape: ``(B, C, *window)`` → ``(B, L)`` or (means, log-variances) ``(B, L)`` each."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, L)`` → ``(B, C, *window)``."""
        ...


class AutoencoderApplication(Application):
    """Reconstruct images through a latent code; encode, sample and interpolate at inference.

    Args:
        network: maps ``(B, C, *window)`` to a reconstruction (plain) or
            ``{"recon", "mu", "logvar"}`` (VAE), with ``encode``/``decode`` methods.
        loss: ``vae`` loss for a VAE, a reconstruction loss otherwise; called as
            ``loss(output, image, weight)``.
        options: window, training mode and output settings.
        variational: whether the network is a VAE (has a prior to sample from).
    """

    name = "autoencoder"
    task_model = AutoencoderTask
    per_subject_table = "per_subject.csv"
    prediction_table = TABLES["reconstruct"]
    inference_modes = ("reconstruct", "encode", "sample", "interpolate")
    ensemble_refusal = (
        "a reconstruction passes through one model's own latent space, and averaging models "
        "whose latent spaces differ estimates nothing"
    )
    dense_output = True
    planning = PlanningRules(
        network="template", normalization="invertible", whole_field_of_view=True
    )

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        *,
        options: AutoencoderOptions,
        variational: bool = True,
    ) -> None:
        super().__init__({"network": network})
        self.loss, self.options, self.variational = loss, options, variational
        self.mode = self.inference_modes[0]
        self._last_reconstruction: torch.Tensor | None = None

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def fit_task(
        cls, experiment: ExperimentConfig, dataset: PreprocessedDataset, train_indices: Sequence[int]
    ) -> dict[str, Any]:
        """The grid of generated images: the first training subject's preprocessed affine,
        resized to the window for whole-image training."""
        AutoencoderTask.from_config(experiment.task)
        window = training_window(experiment)
        first = dataset[train_indices[0]]
        affine = np.asarray(first.affine, dtype=np.float64)
        if experiment.sampling.sampler.name == "resize":
            affine = resized_affine(affine, first.spatial_shape, window)
        return {"sample_affine": affine.tolist(), "sample_reference": first.name}

    @classmethod
    def from_experiment(
        cls,
        experiment: ExperimentConfig,
        *,
        in_channels: int,
        label_values: Sequence[int] | None = None,
        task_state: Mapping[str, Any] | None = None,
    ) -> AutoencoderApplication:
        """Build network and loss from an :class:`~voxelflow.config.schema.ExperimentConfig`."""
        from voxelflow.config.build import build_loss, build_network

        task = AutoencoderTask.from_config(experiment.task)
        window = training_window(experiment)
        network = build_network(
            experiment.network,
            spatial_dims=len(window),
            in_channels=in_channels,
            out_channels=in_channels,
            **image_size_option(experiment.network, window),
        )
        loss = build_loss(experiment.loss)
        affine = (task_state or {}).get("sample_affine")
        options = AutoencoderOptions(
            **WindowedInference.from_experiment(experiment, window=window).as_keywords(),
            whole_image=experiment.sampling.sampler.name == "resize",
            intensity_units=task.intensity_units,
            sample_affine=np.asarray(affine, dtype=np.float64) if affine is not None else None,
            preprocessing=experiment.preprocessing,
        )
        app = cls(
            network, loss, options=options, variational=check_pairing(network, loss, experiment)
        )
        app.set_mode(experiment.inference.mode)
        return app

    def set_mode(self, mode: str | None) -> None:
        """Select the inference mode (None: ``reconstruct``) and its prediction table."""
        mode = mode or self.inference_modes[0]
        if mode not in TABLES:
            raise ConfigError(f"inference.mode: expected one of {list(TABLES)}, got {mode!r}")
        self.mode, self.prediction_table = mode, TABLES[mode]

    # --- training -----------------------------------------------------------------------------
    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Shape: ``image (B, C, *window)`` (+ optional ``weight``) → scalar ``loss`` (+ terms)."""
        image = batch["image"]
        output = self.modules["network"](image)
        if self.variational and isinstance(output, torch.Tensor):
            raise ShapeError(
                "loss 'vae': expected the network to return {'recon', 'mu', 'logvar'}, got a "
                "tensor; use network: vae, or a reconstruction loss (l1, l2) for a plain autoencoder"
            )
        reconstruction = reconstruction_of(output)
        if reconstruction.shape != image.shape:
            raise ShapeError(
                f"autoencoder: expected a reconstruction of shape {tuple(image.shape)} (the input), "
                f"got {tuple(reconstruction.shape)}"
            )
        self._last_reconstruction = reconstruction.detach()
        prediction = output if self.variational else reconstruction
        losses = {"loss": self.loss(prediction, image, batch.get("weight"))}
        for name, value in getattr(self.loss, "last_terms", {}).items():
            losses[name] = torch.tensor(float(value), device=image.device)
        return losses

    def validation_step(self, subject: CachedSubject, ctx: TrainingContext) -> dict[str, float]:
        """Reconstruction ``mae`` and ``psnr`` (normalised units) of one cached subject."""
        from voxelflow.metrics.regression import mean_absolute_error, psnr
        from voxelflow.sampling.resize import resize_volume

        image = torch.from_numpy(np.array(subject.arrays["image"], dtype=np.float32))
        if self.options.whole_image:
            image = resize_volume(image, self.options.window)
        with torch.no_grad():
            reconstruction = self.reconstruct(image[None].to(ctx.device), ctx)[0].float().cpu()
        reference = image.numpy()
        return {
            "mae": mean_absolute_error(reconstruction.numpy(), reference),
            "psnr": psnr(reconstruction.numpy(), reference),
        }

    # --- network calls ------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor, ctx: TrainingContext) -> torch.Tensor:
        """Reconstruction of whole processed images (resized, or blended sliding windows).

        Shape:
            image ``(B, C, *spatial)`` → ``(B, C, *spatial)``, float32.
        """
        from voxelflow.sampling.resize import resize_volume

        network = self.modules["network"]

        def forward(windows: torch.Tensor) -> torch.Tensor:
            return reconstruction_of(network(windows))

        if not self.options.whole_image:
            return self.options.windowed.run(forward, image, ctx)
        spatial = tuple(image.shape[2:])
        resized = torch.stack([resize_volume(one, self.options.window) for one in image])
        whole = autocast_forward(forward, ctx)(resized)
        return torch.stack([resize_volume(one, spatial) for one in whole])

    @torch.no_grad()
    def encode(
        self, image: torch.Tensor, ctx: TrainingContext
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latent means and log-variances (None for a plain autoencoder) of processed images.

        Shape:
            image ``(B, C, *spatial)`` (resized to the window) → ``(B, L)``, ``(B, L)`` or None.
        """
        from voxelflow.sampling.resize import resize_volume

        network = self.modules["network"]
        encode = getattr(network, "encode", None)
        if not callable(encode):
            raise ConfigError(
                f"network: expected a network with encode() and decode() for latent modes, got "
                f"{type(network).__name__}"
            )
        resized = torch.stack([resize_volume(one, self.options.window) for one in image])
        with ctx.autocast():
            code = encode(resized.to(ctx.device))
        if isinstance(code, tuple | list):
            return code[0].float(), code[1].float()
        return code.float(), None

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, ctx: TrainingContext) -> torch.Tensor:
        """Shape: ``(N, L)`` → ``(N, C, *window)``, float32."""
        with ctx.autocast():
            # reached after encode() checked the network (interpolate) or for a VAE (sample)
            network = cast(LatentNetwork, self.modules["network"])
            return network.decode(latents.to(ctx.device)).float()

    # --- inference ----------------------------------------------------------------------------
    def run_inference(
        self, items: Iterable[InferenceItem], ctx: TrainingContext, options: InferenceConfig
    ) -> Iterator[Prediction]:
        """Predictions of ``options.mode``; ``sample`` reads no input."""
        self.set_mode(options.mode)
        if self.mode == "reconstruct":
            for item in items:
                yield self.predict(item, ctx, options)
        elif self.mode == "encode":
            self._require_whole_image()
            for item in items:
                yield self.encode_item(item, ctx)
        elif self.mode == "sample":
            yield from self.sample(ctx, options)
        else:
            yield from self.interpolate(items, ctx, options)

    def _require_whole_image(self) -> None:
        if not self.options.whole_image:
            raise ConfigError(
                f"inference.mode: {self.mode!r} needs one latent per subject, so whole-image "
                "training (sampling.sampler: resize); this run was trained on windows"
            )

    def predict(self, item: InferenceItem, ctx: TrainingContext, options: InferenceConfig) -> Prediction:
        """Reconstruction of one subject in its original geometry (and units, by default)."""
        from voxelflow.io.image import Image
        from voxelflow.sampling.progress import timed_stage
        from voxelflow.transforms.preprocess import invert

        image = item.processed["image"]
        reconstruction = self.reconstruct(image.data.float()[None].to(ctx.device), ctx)[0].cpu()
        original_units = self.options.intensity_units == "original"
        if original_units:
            reconstruction = fit_intensity_inverse(item, self.options.preprocessing)(reconstruction)
        with timed_stage("invert"):  # the table's seconds_invert
            back = invert(Image(reconstruction, image.affine.copy()), item.record, kind="intensity")
        source = item.original["image"]
        images = {"recon": Image(back.data.float(), source.affine.copy(), meta=dict(source.meta))}
        if getattr(options, "error_maps", False) and original_units:
            error = (back.data.float() - source.data.float()).abs()
            images["error"] = Image(error, source.affine.copy(), meta=dict(source.meta))
        return Prediction(item.name, images, {"units": self.options.intensity_units})

    def encode_item(self, item: InferenceItem, ctx: TrainingContext) -> Prediction:
        """Latent mean (``mu_i``), log-variance (``logvar_i``) and ``kl`` of one subject."""
        from voxelflow.losses.generative import kl_divergence_standard_normal

        mean, log_variance = self.encode(item.processed["image"].data.float()[None], ctx)
        values: dict[str, Any] = {f"mu_{i}": float(v) for i, v in enumerate(mean[0])}
        if log_variance is not None:
            values.update({f"logvar_{i}": float(v) for i, v in enumerate(log_variance[0])})
            values["kl"] = float(kl_divergence_standard_normal(mean, log_variance)[0])
        return Prediction(item.name, {}, values)

    def sample(self, ctx: TrainingContext, options: InferenceConfig) -> Iterator[Prediction]:
        """``options.num_samples`` images decoded from N(0, I), seeded by ``options.seed``."""
        if not self.variational:
            raise ConfigError(
                "inference.mode: 'sample' draws latents from the N(0, I) prior of a variational "
                "network; this run's network has none (use network: vae with loss: vae)"
            )
        size = latent_size_of(self.modules["network"])
        generator = torch.Generator().manual_seed(int(options.seed))
        latents = torch.randn(int(options.num_samples), size, generator=generator)
        for index in range(0, len(latents), self.options.inference_batch_size):
            chunk = latents[index : index + self.options.inference_batch_size]
            for offset, image in enumerate(self.decode(chunk, ctx).cpu()):
                number = index + offset
                yield Prediction(
                    f"sample_{number:03d}",
                    {"image": self._generated(image)},
                    {"seed": int(options.seed), "index": number},
                )

    def interpolate(
        self, items: Iterable[InferenceItem], ctx: TrainingContext, options: InferenceConfig
    ) -> Iterator[Prediction]:
        """``options.steps`` images along the line between two subjects' latent means."""
        self._require_whole_image()
        names = list(options.interpolate or [])
        if len(names) != 2 or names[0] == names[1]:
            raise ConfigError(
                "inference.interpolate: expected two different subject ids for inference.mode "
                f"'interpolate', got {options.interpolate!r}"
            )
        means = find_latents(self, items, names, ctx)
        for step, weight in enumerate(np.linspace(0.0, 1.0, int(options.steps))):
            latent = (1.0 - weight) * means[names[0]] + weight * means[names[1]]
            image = self.decode(latent[None], ctx)[0].cpu()
            yield Prediction(
                f"interpolation_{step:03d}",
                {"image": self._generated(image)},
                {"from": names[0], "to": names[1], "t": float(weight)},
            )

    def _generated(self, data: torch.Tensor) -> Any:
        """A generated ``(C, *window)`` volume on the sample grid."""
        from voxelflow.io.image import Image

        affine = self.options.sample_affine
        return Image(data.float(), np.eye(4) if affine is None else affine.copy())

    def write_extras(self, out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        """``latents.npy`` after an ``encode`` run: float32 ``(N, 2 or 1, L)`` in table order."""
        if self.mode != "encode" or not rows:
            return []
        size = sum(1 for key in rows[0] if key.startswith("mu_"))
        parts = ["mu", "logvar"] if self.variational and "logvar_0" in rows[0] else ["mu"]
        array = np.array(
            [[[float(row[f"{part}_{i}"]) for i in range(size)] for part in parts] for row in rows],
            dtype=np.float32,
        )
        path = Path(out_dir) / "latents.npy"
        np.save(path, array)
        return [path]

    @classmethod
    def cross_validation_metric(cls, experiment: ExperimentConfig) -> tuple[str, bool, str] | None:
        """Reconstruction mean absolute error."""
        return ("mae", False, "mae")

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
        """MAE, RMSE, PSNR, SSIM, NCC of reconstructions against their images (original units)."""
        if AutoencoderTask.from_config(experiment.task).intensity_units != "original":
            raise ConfigError(
                "task.intensity_units: evaluation compares reconstructions with the image files, "
                "so it needs 'original', got 'normalized'"
            )
        return evaluate_reconstructions(
            Path(predictions), rows, Path(out_dir), image_columns=experiment.dataset.inputs["image"]
        )

    # --- logging and state --------------------------------------------------------------------
    def example_images(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        images = {"input": batch["image"][0]}
        if self._last_reconstruction is not None:
            images["reconstruction"] = self._last_reconstruction[0].float()
        return images

    def graph_input(self, batch: Mapping[str, Any]) -> tuple[str, torch.Tensor] | None:
        """The plain autoencoder's graph; none for a VAE (the tracer refuses dict outputs)."""
        return None if self.variational else ("network", batch["image"][:1])

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.options.window), "variational": self.variational}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if [int(s) for s in state["window"]] != list(self.options.window):
            raise ConfigError(
                f"sampling.window: expected the checkpoint's window {list(state['window'])}, got "
                f"{list(self.options.window)}"
            )
