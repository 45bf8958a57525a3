"""Generative losses: the VAE objective, three GAN losses and the WGAN-GP gradient penalty.

GAN losses have two terms: call ``.generator_loss(fake_logits)`` and
``.discriminator_loss(real_logits, fake_logits)``. Called as a module,
``loss(fake_logits)`` is the generator term and ``loss(fake_logits, real_logits)`` the
discriminator term (the registry's ``loss(prediction, target)`` convention).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.losses import LOSSES
from voxelflow.losses._checks import compute_dtype
from voxelflow.losses.regression import prepare_regression

RECONSTRUCTIONS = ("l2", "l1")
REDUCTIONS = ("sum", "mean")

#: what a VAE network returns: ``(reconstruction, mean, log_variance)`` or a mapping of them
VaeOutput: TypeAlias = Mapping[str, Tensor] | Sequence[Tensor]


def kl_divergence_standard_normal(mean: Tensor, log_variance: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over the latent dimensions of each sample.

    ``-½ Σ (1 + log σ² - μ² - σ²)``.

    Shape:
        mean, log_variance ``(B, *latent)``; returns ``(B,)``.
    """
    terms = 1.0 + log_variance - mean * mean - log_variance.exp()
    return -0.5 * terms.flatten(1).sum(dim=1)


def unpack_vae_output(prediction: VaeOutput) -> tuple[Tensor, Tensor, Tensor]:
    """``(reconstruction, mean, log_variance)`` from a tuple/list or a mapping.

    Mappings may use ``reconstruction``/``mean``/``log_variance`` (or ``recon``/``mu``/``logvar``,
    what ``voxelflow.networks`` ``vae`` returns).

    Raises:
        ShapeError: anything else.
    """
    if isinstance(prediction, Mapping):
        keys = [("reconstruction", "recon"), ("mean", "mu"), ("log_variance", "logvar")]
        found = [next((prediction[k] for k in names if k in prediction), None) for names in keys]
        reconstruction, mean, log_variance = found
        if reconstruction is not None and mean is not None and log_variance is not None:
            return reconstruction, mean, log_variance
    elif isinstance(prediction, Sequence) and len(prediction) == 3:
        return prediction[0], prediction[1], prediction[2]
    raise ShapeError(
        "vae: expected the network output (reconstruction, mean, log_variance) as a tuple or a "
        f"mapping, got {type(prediction).__name__}"
    )


@LOSSES.register("vae", description="VAE objective: reconstruction (L1/L2) + beta * KL per sample")
class VAELoss(nn.Module):
    """Variational autoencoder objective ``reconstruction + β · KL``, averaged over samples.

    Per sample, the reconstruction error is the **sum** over voxels of ``(x̂ - x)²`` (``l2``) or
    ``|x̂ - x|`` (``l1``) with ``reconstruction_reduction="sum"`` (the negative ELBO of a
    Gaussian/Laplace decoder up to constants, so ``beta=1`` is the classic VAE), or their mean
    with ``"mean"`` (then use a small β). The KL of the latent posterior to N(0, I) is summed over
    latent dimensions and **averaged over samples**. A voxel ``weight`` masks the reconstruction.
    The last terms are kept in ``last_terms`` (detached) for logging.

    Args:
        reconstruction: ``l2`` or ``l1``.
        beta: weight of the KL term (β-VAE).
        reconstruction_reduction: ``sum`` or ``mean`` over the voxels of a sample.

    Shape:
        prediction: ``(reconstruction (B, C, *spatial), mean (B, Z), log_variance (B, Z))``;
        target ``(B, C, *spatial)``; returns a scalar.
    """

    def __init__(
        self,
        *,
        reconstruction: str = "l2",
        beta: float = 1.0,
        reconstruction_reduction: str = "sum",
    ) -> None:
        super().__init__()
        if reconstruction not in RECONSTRUCTIONS:
            raise ConfigError(
                f"vae.reconstruction: expected one of {RECONSTRUCTIONS}, got {reconstruction!r}"
            )
        if reconstruction_reduction not in REDUCTIONS:
            raise ConfigError(
                f"vae.reconstruction_reduction: expected one of {REDUCTIONS}, got {reconstruction_reduction!r}"
            )
        if beta < 0:
            raise ConfigError(f"vae.beta: expected a value >= 0, got {beta}")
        self.reconstruction, self.beta, self.reduction = (
            reconstruction,
            float(beta),
            reconstruction_reduction,
        )
        self.last_terms: dict[str, float] = {}

    def forward(
        self, prediction: VaeOutput, target: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        """Return the scalar VAE loss."""
        reconstruction, mean, log_variance = unpack_vae_output(prediction)
        residual, expanded = prepare_regression(reconstruction, target, weight, loss_name="vae")
        error = residual * residual if self.reconstruction == "l2" else residual.abs()
        if expanded is not None:
            error = error * expanded
        per_sample = error.flatten(1).sum(dim=1)
        if self.reduction == "mean":
            count = (
                expanded.flatten(1).sum(dim=1).clamp_min(1e-6)
                if expanded is not None
                else error[0].numel()
            )
            per_sample = per_sample / count
        kl = kl_divergence_standard_normal(
            mean.to(per_sample.dtype), log_variance.to(per_sample.dtype)
        )
        self.last_terms = {
            "reconstruction": float(per_sample.detach().mean()),
            "kl": float(kl.detach().mean()),
        }
        return per_sample.mean() + self.beta * kl.mean()


class GANLoss(nn.Module):
    """Base of the GAN losses: ``forward`` dispatches to the generator or discriminator term."""

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """Loss of the generator given the discriminator's outputs on generated samples."""
        raise NotImplementedError

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Loss of the discriminator given its outputs on real and generated samples."""
        raise NotImplementedError

    def forward(
        self, prediction: Tensor, target: Tensor | None = None, weight: Tensor | None = None
    ) -> Tensor:
        """``loss(fake_logits)`` → generator term; ``loss(fake_logits, real_logits)`` → discriminator.

        Shape:
            logits ``(B, ...)`` (any shape; patch discriminators are averaged); returns a scalar.
        """
        if weight is not None:
            raise ShapeError("GAN losses take no weight map, got one")
        if target is None:
            return self.generator_loss(prediction)
        return self.discriminator_loss(target, prediction)


def _as_float(logits: Tensor) -> Tensor:
    return logits.to(compute_dtype(logits))


@LOSSES.register(
    "gan_nonsaturating", description="non-saturating GAN loss, one-sided label smoothing"
)
class GANNonSaturatingLoss(GANLoss):
    """Non-saturating GAN loss (Goodfellow 2014) on discriminator logits.

    Generator: ``BCE(D(G(z)), 1)``. Discriminator: ``BCE(D(x), 1 - s) + BCE(D(G(z)), 0)``, the
    real target softened to ``1 - s`` (one-sided label smoothing; NiftyNet used s = 0.1).

    Args:
        label_smoothing: s in ``[0, 1)``.
    """

    def __init__(self, *, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(
                f"gan_nonsaturating.label_smoothing: expected a value in [0, 1), got {label_smoothing}"
            )
        self.label_smoothing = float(label_smoothing)

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """``BCE(fake, 1)``."""
        fake = _as_float(fake_logits)
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """``BCE(real, 1 - s) + BCE(fake, 0)``."""
        real, fake = _as_float(real_logits), _as_float(fake_logits)
        real_target = torch.full_like(real, 1.0 - self.label_smoothing)
        real_term = F.binary_cross_entropy_with_logits(real, real_target)
        return real_term + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


@LOSSES.register("gan_least_squares", description="least-squares GAN loss (Mao 2017)")
class GANLeastSquaresLoss(GANLoss):
    """Least-squares GAN (Mao et al., 2017) with targets a=0 (fake), b=c=1 (real).

    Generator ``½ mean (D(G(z)) - 1)²``; discriminator ``½ mean (D(x) - 1)² + ½ mean D(G(z))²``.
    """

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """``½ mean (fake - 1)²``."""
        return 0.5 * ((_as_float(fake_logits) - 1.0) ** 2).mean()

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """``½ mean (real - 1)² + ½ mean fake²``."""
        real, fake = _as_float(real_logits), _as_float(fake_logits)
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


@LOSSES.register(
    "gan_wasserstein", description="Wasserstein GAN critic loss (use with gradient_penalty)"
)
class GANWassersteinLoss(GANLoss):
    """Wasserstein GAN (Arjovsky 2017): critic ``mean D(G(z)) - mean D(x)``, generator ``-mean D(G(z))``.

    Add :func:`gradient_penalty` times λ (10 in WGAN-GP) to the critic loss.
    """

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """``-mean fake``."""
        return -_as_float(fake_logits).mean()

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """``mean fake - mean real``."""
        return _as_float(fake_logits).mean() - _as_float(real_logits).mean()


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al., 2017): ``mean_b (‖∇D(x̂_b)‖₂ - 1)²``.

    ``x̂ = ε x + (1 - ε) x̃`` with one ``ε ~ U[0, 1)`` per sample. The gradient is taken with
    ``create_graph=True`` so the penalty can be back-propagated (a double backward). ``fake`` is
    detached: the penalty trains the critic only. Multiply by λ (10 in the paper) yourself.

    Args:
        discriminator: the critic.
        real: real samples ``(B, C, *spatial)``.
        fake: generated samples, same shape.
        generator: random generator for ε (reproducibility), or None for the global one.

    Returns:
        The scalar penalty.

    Raises:
        ShapeError: when real and fake shapes differ.
    """
    if real.shape != fake.shape:
        raise ShapeError(
            f"gradient_penalty: expected fake of shape {tuple(real.shape)}, got {tuple(fake.shape)}"
        )
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    device = generator.device if generator is not None else real.device
    epsilon = torch.rand(shape, generator=generator, device=device, dtype=real.dtype).to(
        real.device
    )
    mixed = (epsilon * real.detach() + (1.0 - epsilon) * fake.detach()).requires_grad_(True)
    scores = discriminator(mixed)
    (gradients,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = gradients.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()
