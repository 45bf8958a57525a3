"""The batched (GPU) augmentation path agrees with the per-sample CPU path for fixed parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelflow.sampling.base import Sampler
from voxelflow.transforms.base import Sample
from voxelflow.transforms.compose import build_augmentation
from voxelflow.transforms.gpu import BatchAugmentation
from voxelflow.transforms.intensity import RandomContrastBrightness, RandomGamma
from voxelflow.transforms.resample import resample_sample
from voxelflow.transforms.spatial import RandomAffine, RandomElastic, RandomFlip

SPACING = (1.0, 1.2, 1.5)
TRANSFORMS = [
    RandomFlip(flip_probability=0.5),
    RandomAffine(rotation=20, scaling=[0.85, 1.15], shear=0.05, translation=2),
    RandomElastic(max_displacement=2.0),
    RandomGamma(log_gamma=0.3, p=0.7),
    RandomContrastBrightness(),
]


def make_batch(size=3, shape=(10, 12, 8), device="cpu"):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(size, 2, *shape, generator=generator)
    label = (image[:, :1] * 4).floor().to(torch.uint8)
    spacing = torch.tensor([SPACING] * size, dtype=torch.float64)
    return {"image": image.to(device), "label": label.to(device), "spacing": spacing}


def cpu_reference(batch, params, index):
    """Per-sample CPU path: compose spatial draws, one resampling, then intensity effects."""
    window = tuple(batch["image"].shape[2:])
    total = None
    for transform, p in zip(TRANSFORMS[:3], params[index][:3]):
        if p is not None:
            draw = transform.to_draw(p, window=window, spacing=SPACING)
            total = draw if total is None else total.then(draw)
    sample = Sample(
        {"image": batch["image"][index].cpu(), "label": batch["label"][index].cpu()},
        {"image": "intensity", "label": "label"},
        SPACING,
    )
    if total is not None:
        sample = resample_sample(sample, total, roles=["image", "label"])
    for transform, p in zip(TRANSFORMS[3:], params[index][3:]):
        if p is not None:
            sample = transform.apply(sample, p)
    return sample.tensors


def check_agreement(device):
    batch = make_batch(device=device)
    augment = BatchAugmentation(TRANSFORMS)
    params = augment.draw(3, np.random.default_rng(7))
    out = augment.apply(batch, params)
    assert (
        out["image"].device.type == torch.device(device).type and out["label"].dtype == torch.uint8
    )
    for index in range(3):
        reference = cpu_reference(batch, params, index)
        torch.testing.assert_close(
            out["image"][index].cpu(), reference["image"], atol=2e-5, rtol=1e-5
        )
        assert (out["label"][index].cpu() != reference["label"]).float().mean() < 1e-3


def test_batched_equals_per_sample_cpu():
    check_agreement("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_on_cuda_equals_per_sample_cpu():
    check_agreement("cuda")


def test_parameters_drawn_per_sample_and_reproducible():
    augment = BatchAugmentation([RandomAffine(rotation=30)])
    batch = make_batch()
    batch["image"][:] = batch["image"][:1]  # identical inputs
    out = augment(batch, rng=np.random.default_rng(1))
    assert not torch.allclose(out["image"][0], out["image"][1])
    torch.testing.assert_close(
        augment(batch, rng=np.random.default_rng(1))["image"], out["image"], rtol=0, atol=0
    )


def test_output_window_uses_margin_like_the_sampler_path():
    """A larger input window with output_window equals the sampler's crop-with-margin resampling."""
    from voxelflow.data.cached import CachedSubject

    volume = np.random.default_rng(0).random((1, 24, 24, 20)).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    subject = CachedSubject("g", {"image": volume}, {"image": "intensity"}, affine)
    aug = build_augmentation([{"name": "affine", "rotation": [30, 30]}])
    draw = aug.draw_spatial(np.random.default_rng(0), window=(8, 8, 6), spacing=SPACING)
    sampler = Sampler((8, 8, 6))
    expected = sampler.extract(subject, np.array([12, 12, 10]), (8, 8, 6), draw=draw)["image"]
    big = torch.from_numpy(volume[:, 4:20, 4:20, 4:16])[
        None
    ]  # window (8, 8, 6) + margin 4, 4, 3 per side
    params = [
        [
            {
                "rotation": [30.0, 30.0, 30.0],
                "scaling": [1.0] * 3,
                "shear": [0.0] * 6,
                "translation": [0.0] * 3,
            }
        ]
    ]
    out = BatchAugmentation(aug, output_window=(8, 8, 6)).apply(
        {"image": big, "spacing": torch.tensor([SPACING])}, params
    )
    torch.testing.assert_close(out["image"][0], expected, atol=1e-5, rtol=0)
