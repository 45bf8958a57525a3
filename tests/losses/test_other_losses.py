"""Regression, classification and generative losses: hand values, torch references, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from voxelflow.errors import ConfigError, DataError, ShapeError
from voxelflow.losses import build_loss, gradient_penalty

REGRESSION = ["l1", "l2", "rmse", "huber", "smooth_l1"]


def regression_case(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    prediction = torch.randn(2, 2, 5, 4, 3, generator=generator) * 2
    target = torch.randn(2, 2, 5, 4, 3, generator=generator)
    return prediction, target


# ------------------------------------------------------------------------- regression
def test_regression_hand_computed():
    prediction = torch.tensor([[0.0, 2.0, -1.0, 0.5]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # r = [-1, 2, -1, 0.5]
    assert build_loss("l1")(prediction, target).item() == pytest.approx((1 + 2 + 1 + 0.5) / 4)
    assert build_loss("l2")(prediction, target).item() == pytest.approx((1 + 4 + 1 + 0.25) / 4)
    assert build_loss("rmse")(prediction, target).item() == pytest.approx(math.sqrt(6.25 / 4))
    # Huber δ=1: [0.5, 2 - 0.5, 0.5, 0.125]
    assert build_loss("huber")(prediction, target).item() == pytest.approx(
        (0.5 + 1.5 + 0.5 + 0.125) / 4
    )
    # smooth L1 β=2: [1/4, 2 - 1, 1/4, 0.0625]
    assert build_loss("smooth_l1", beta=2.0)(prediction, target).item() == pytest.approx(
        (0.25 + 1.0 + 0.25 + 0.0625) / 4
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("l1", {}, lambda p, t: F.l1_loss(p, t)),
        ("l2", {}, lambda p, t: F.mse_loss(p, t)),
        ("rmse", {}, lambda p, t: F.mse_loss(p, t).sqrt()),
        ("huber", {"delta": 0.7}, lambda p, t: F.huber_loss(p, t, delta=0.7)),
        ("smooth_l1", {"beta": 0.5}, lambda p, t: F.smooth_l1_loss(p, t, beta=0.5)),
    ],
)
def test_regression_matches_torch(name, kwargs, reference):
    prediction, target = regression_case()
    ours = build_loss(name, **kwargs)(prediction, target)
    assert ours.item() == pytest.approx(reference(prediction, target).item(), rel=1e-6)


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_mask_equals_loss_on_selected_voxels(name):
    prediction, target = regression_case(1)
    mask = torch.zeros(2, 1, 5, 4, 3)
    mask[:, :, :2] = 1
    masked = build_loss(name)(prediction, target, mask)
    selected = build_loss(name)(prediction[:, :, :2], target[:, :, :2])
    assert masked.item() == pytest.approx(selected.item(), rel=1e-6)


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_gradcheck_and_perfect_prediction(name):
    prediction, target = regression_case(2)
    prediction = prediction[:1, :1, :2, :2, :2].double().requires_grad_(True)
    target = target[:1, :1, :2, :2, :2].double()
    loss = build_loss(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (prediction,))
    perfect = target.clone().requires_grad_(True)
    value = loss(perfect, target)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(perfect.grad).all()


def test_regression_errors():
    with pytest.raises(ShapeError, match="expected target of shape"):
        build_loss("l1")(torch.zeros(2, 1, 3), torch.zeros(2, 1, 4))
    with pytest.raises(ShapeError, match="expected weight"):
        build_loss("l2")(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3), torch.ones(2, 1, 4))
    with pytest.raises(ConfigError, match="delta"):
        build_loss("huber", delta=0)
    assert torch.isfinite(build_loss("l2")(torch.randn(2, 1, 3).half() * 100, torch.zeros(2, 1, 3)))


# ------------------------------------------------------------------------- classification
def test_classification_ce_hand_computed_with_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_z = math.log(math.exp(2) + 1 + math.exp(-1))
    log_p = [2 - log_z, -log_z, -1 - log_z]
    smoothed = [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]
    expected = -sum(t * lp for t, lp in zip(smoothed, log_p))
    value = build_loss("classification_ce", label_smoothing=0.1)(logits, torch.tensor([0]))
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_classification_ce_matches_torch():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 4, generator=generator)
    labels = torch.randint(0, 4, (6,), generator=generator)
    ours = build_loss("classification_ce", label_smoothing=0.2)(logits, labels)
    reference = F.cross_entropy(logits, labels, label_smoothing=0.2)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    one_hot = F.one_hot(labels, 4).float()
    assert build_loss("classification_ce")(logits, one_hot).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )


def test_classification_binary_single_logit_and_sample_weights():
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    labels = torch.tensor([1, 0, 0])
    reference = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    assert build_loss("classification_ce")(logits, labels).item() == pytest.approx(
        reference.mean().item()
    )
    weights = torch.tensor([1.0, 0.0, 3.0])
    expected = (reference * weights).sum() / weights.sum()
    value = build_loss("classification_ce")(logits, labels, weights)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_classification_focal_hand_and_gamma_zero():
    logits = torch.tensor([[1.0, -1.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0])
    p_true = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(0.5))]
    expected = -sum((1 - q) ** 2 * math.log(q) for q in p_true) / 2
    assert build_loss("classification_focal")(logits, labels).item() == pytest.approx(
        expected, rel=1e-6
    )
    assert build_loss("classification_focal", gamma=0)(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )


@pytest.mark.parametrize("name", ["classification_ce", "classification_focal"])
def test_classification_gradcheck_and_errors(name):
    logits = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 1])
    loss = build_loss(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))
    with pytest.raises(DataError, match=r"expected class indices in \[0, 2\]"):
        loss(logits, torch.tensor([0, 3, 1]))
    with pytest.raises(ShapeError, match="expected target of shape"):
        loss(logits, torch.tensor([0, 1]))
    assert torch.isfinite(loss((logits.detach() * 1000).half(), labels))


# ------------------------------------------------------------------------- VAE
def test_vae_kl_and_reconstruction_hand_computed():
    mean = torch.tensor([[1.0, 0.0]])
    log_variance = torch.tensor([[0.0, math.log(2.0)]])
    reconstruction = torch.tensor([[[1.0, 2.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0, 0.0]]])
    kl = 1 - 0.5 * math.log(2.0)  # -½[(1 + 0 - 1 - 1) + (1 + log 2 - 0 - 2)]
    reference_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * log_variance).exp()),
        torch.distributions.Normal(0.0, 1.0),
    ).sum()
    assert kl == pytest.approx(reference_kl.item(), rel=1e-6)
    loss = build_loss("vae", beta=0.5)
    assert loss((reconstruction, mean, log_variance), target).item() == pytest.approx(
        5 + 0.5 * kl, rel=1e-6
    )
    assert loss.last_terms["kl"] == pytest.approx(kl, rel=1e-6)
    network_output = {"recon": reconstruction, "mu": mean, "logvar": log_variance}
    l1_mean = build_loss("vae", reconstruction="l1", reconstruction_reduction="mean", beta=0.0)
    assert l1_mean(network_output, target).item() == pytest.approx(1.0)


def test_vae_kl_is_averaged_per_sample_and_gradcheck():
    generator = torch.Generator().manual_seed(4)
    mean = torch.randn(3, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    log_variance = torch.randn(3, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    reconstruction = torch.randn(
        3, 1, 2, 2, dtype=torch.float64, generator=generator, requires_grad=True
    )
    target = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    loss = build_loss("vae")
    value = loss((reconstruction.detach(), mean.detach(), log_variance.detach()), target)
    kl = -0.5 * (1 + log_variance - mean**2 - log_variance.exp()).sum(dim=1)
    recon = (reconstruction**2).flatten(1).sum(dim=1)
    assert value.item() == pytest.approx((recon + kl).mean().item(), rel=1e-9)
    assert torch.autograd.gradcheck(
        lambda r, m, v: loss((r, m, v), target), (reconstruction, mean, log_variance)
    )
    with pytest.raises(ShapeError, match="expected the network output"):
        loss(reconstruction, target)


# ------------------------------------------------------------------------- GAN
def test_gan_nonsaturating_hand_computed():
    loss = build_loss("gan_nonsaturating", label_smoothing=0.1)
    zero = torch.zeros(4, 1)
    assert loss.generator_loss(zero).item() == pytest.approx(math.log(2))
    assert loss.discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    real, fake = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = 0.9 * softplus(-2.0) + 0.1 * softplus(2.0) + softplus(-1.0)
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    assert loss(fake, real).item() == pytest.approx(expected, rel=1e-6)
    assert loss(fake).item() == pytest.approx(softplus(1.0), rel=1e-6)


def test_gan_least_squares_and_wasserstein_hand_computed():
    real, fake = torch.tensor([0.5, 1.5]), torch.tensor([0.0, 2.0])
    ls = build_loss("gan_least_squares")
    assert ls.generator_loss(fake).item() == pytest.approx(0.5 * (1 + 1) / 2)
    assert ls.discriminator_loss(real, fake).item() == pytest.approx(0.5 * 0.25 + 0.5 * 2.0)
    wasserstein = build_loss("gan_wasserstein")
    assert wasserstein.generator_loss(fake).item() == pytest.approx(-1.0)
    assert wasserstein.discriminator_loss(real, fake).item() == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["gan_nonsaturating", "gan_least_squares", "gan_wasserstein"])
def test_gan_gradcheck(name):
    loss = build_loss(name)
    real = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss.discriminator_loss, (real, fake))
    assert torch.autograd.gradcheck(loss.generator_loss, (fake,))


def test_gradient_penalty_of_linear_critic_and_double_backward():
    weights = torch.tensor(
        [0.6, 0.8, 1.2], requires_grad=True
    )  # ‖a‖ = √(0.36 + 0.64 + 1.44) = √2.44

    def critic(x):
        return (x * weights).sum(dim=-1)

    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    penalty = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    norm = math.sqrt(2.44)
    assert penalty.item() == pytest.approx((norm - 1) ** 2, rel=1e-6)
    penalty.backward()  # needs create_graph=True to reach the critic's weights
    expected_grad = 2 * (norm - 1) * weights.detach() / norm
    assert torch.allclose(weights.grad, expected_grad, atol=1e-6)
    with pytest.raises(ShapeError, match="expected fake of shape"):
        gradient_penalty(critic, real, fake[:2])


def test_every_registered_loss_is_covered_by_these_tests():
    """A new loss must join one of the tested groups (this file or the segmentation tests)."""
    from voxelflow.losses import LOSSES

    segmentation = {
        "dice",
        "generalized_dice",
        "tversky",
        "sensitivity_specificity",
        "wasserstein_dice",
    }
    segmentation |= {"cross_entropy", "focal", "dice_ce", "deep_supervision"}
    others = set(REGRESSION) | {"classification_ce", "classification_focal", "vae"}
    others |= {"gan_nonsaturating", "gan_least_squares", "gan_wasserstein"}
    assert set(LOSSES.names()) == segmentation | others
