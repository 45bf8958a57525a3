"""Intensity augmentation against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from voxelflow.transforms import intensity as I
from voxelflow.transforms.base import IntensityTransform
from voxelflow.transforms.compose import AUGMENTATIONS

VOLUME = torch.rand(2, 12, 10, 8, generator=torch.Generator().manual_seed(0))
INTENSITY_NAMES = [
    n for n in AUGMENTATIONS.names() if issubclass(AUGMENTATIONS.get(n), IntensityTransform)
]


@pytest.mark.parametrize("name", INTENSITY_NAMES)
def test_contract_shape_dtype_determinism_labels_untouched(name):
    label = (VOLUME[:1] > 0.5).to(torch.uint8)
    data = {"image": VOLUME, "label": label}
    first = AUGMENTATIONS.get(name)(seed=3)(data)
    second = AUGMENTATIONS.get(name)(seed=3)(data)
    assert first["image"].shape == VOLUME.shape and first["image"].dtype == torch.float32
    assert first["label"] is label
    torch.testing.assert_close(first["image"], second["image"], rtol=0, atol=0)
    assert AUGMENTATIONS.get(name)(p=0.0)(VOLUME) is VOLUME


def test_gaussian_noise_statistics():
    out = I.RandomGaussianNoise(mean=0.0, std=0.5, seed=0)(torch.zeros(1, 40, 40, 40))
    assert abs(out.std().item() - 0.5) < 0.01 and abs(out.mean().item()) < 0.01


def test_rician_noise_on_zero_is_rayleigh():
    sigma = 0.3
    out = I.RandomRicianNoise(std=sigma, seed=0)(torch.zeros(1, 40, 40, 40))
    assert (out >= 0).all()
    assert abs(out.mean().item() - sigma * math.sqrt(math.pi / 2)) < 0.01


def test_bias_field_constant_and_identity():
    torch.testing.assert_close(I.RandomBiasField(coefficients=0.0)(VOLUME), VOLUME)
    constant = I.RandomBiasField(coefficients=[0.2, 0.2], order=0)(VOLUME)
    torch.testing.assert_close(constant, VOLUME * math.exp(0.2))


def test_gamma_formula():
    out = I.RandomGamma(log_gamma=[math.log(2.0), math.log(2.0)])(VOLUME)
    low, high = VOLUME.min(), VOLUME.max()
    torch.testing.assert_close(out, low + (high - low) * ((VOLUME - low) / (high - low)) ** 2)
    torch.testing.assert_close(I.RandomGamma(log_gamma=0.0)(VOLUME), VOLUME)


def test_contrast_brightness_formula():
    out = I.RandomContrastBrightness(contrast=1.5, brightness=[0.2, 0.2])(VOLUME)
    mean = VOLUME.mean()
    torch.testing.assert_close(out, (VOLUME - mean) * 1.5 + mean + 0.2)


@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.6])
def test_blur_matches_scipy(sigma):
    out = I.RandomGaussianBlur(sigma=sigma)(VOLUME)
    expected = np.stack(
        [gaussian_filter(c.double().numpy(), sigma, mode="nearest", truncate=3.0) for c in VOLUME]
    )
    radius = math.ceil(3 * sigma)
    if radius == int(3.0 * sigma + 0.5):  # same kernel support as scipy
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    else:
        np.testing.assert_allclose(
            out.numpy()[:, 3:-3, 3:-3, 3:-3], expected[:, 3:-3, 3:-3, 3:-3], atol=2e-3
        )


def test_sharpen_is_unsharp_mask():
    out = I.RandomSharpen(sigma=1.0, amount=0.5)(VOLUME)
    blurred = np.stack(
        [gaussian_filter(c.double().numpy(), 1.0, mode="nearest", truncate=3.0) for c in VOLUME]
    )
    np.testing.assert_allclose(
        out.numpy(), VOLUME.numpy() + 0.5 * (VOLUME.numpy() - blurred), atol=1e-5
    )


def test_low_resolution():
    torch.testing.assert_close(I.RandomLowResolution(factor=1.0)(VOLUME), VOLUME)
    constant = torch.full((1, 12, 10, 8), 3.0)
    torch.testing.assert_close(I.RandomLowResolution(factor=2.0)(constant), constant)
    assert I.RandomLowResolution(factor=3.0)(VOLUME).std() < VOLUME.std()


def test_ghosting_and_spike():
    torch.testing.assert_close(I.RandomGhosting(intensity=0.0)(VOLUME), VOLUME, atol=1e-5, rtol=0)
    ghosted = I.RandomGhosting(intensity=0.5)(VOLUME)
    torch.testing.assert_close(ghosted.mean(), VOLUME.mean(), atol=1e-5, rtol=0)
    assert (ghosted - VOLUME).abs().max() > 0.01
    torch.testing.assert_close(I.RandomSpike(intensity=0.0)(VOLUME), VOLUME, atol=1e-5, rtol=0)
    assert (I.RandomSpike(intensity=0.5, seed=0)(VOLUME) - VOLUME).abs().max() > 0.01


def test_sampled_parameters_stay_in_range():
    transform = I.RandomContrastBrightness(contrast=[0.5, 0.7], brightness=0.1)
    rng = np.random.default_rng(0)
    draws = [transform.make_params(rng) for _ in range(200)]
    assert all(0.5 <= d["contrast"] <= 0.7 and -0.1 <= d["brightness"] <= 0.1 for d in draws)


def test_motion_zero_shift_is_identity_and_one_segment_is_a_shift():
    still = I.RandomMotion(translation=0.0)(VOLUME)
    torch.testing.assert_close(still, VOLUME, atol=1e-5, rtol=0)
    params = {
        "shifts": [[2.0, 0.0, 0.0]]
    }  # one segment: the whole image moved by 2 voxels (circularly)
    moved = I.RandomMotion(num_segments=1).apply_tensor(VOLUME, params)
    torch.testing.assert_close(moved, torch.roll(VOLUME, 2, dims=1), atol=1e-5, rtol=0)
    blurred = I.RandomMotion(translation=3.0, seed=0)(VOLUME)
    assert (blurred - VOLUME).abs().max() > 0.01
