"""The training's batched augmentation path (margin windows read by workers, BatchAugmentation on
the device, crop) equals the per-sample CPU path for the same sampled parameters (issue 18)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from voxelflow.data.cached import CachedSubject
from voxelflow.sampling.base import Sampler
from voxelflow.sampling.queue import collate_windows
from voxelflow.transforms.compose import build_augmentation
from voxelflow.transforms.gpu import BatchAugmentation, augmentation_margin, unsupported_reason

SPACING = (1.0, 1.3, 1.6)
WINDOW = (12, 10, 8)
PAD = -2.5  # an unusual pad value: out-of-image voxels must get it on both paths
COMPONENTS = [
    {"name": "flip", "flip_probability": 0.5},
    {"name": "affine", "rotation": 35, "scaling": [0.8, 1.2], "translation": 3, "isotropic": False},
]


def make_subject() -> CachedSubject:
    rng = np.random.default_rng(3)
    image = rng.random((2, 30, 26, 22)).astype(np.float32)
    label = (image[:1] * 5).astype(np.uint8)
    affine = np.diag([*SPACING, 1.0])
    return CachedSubject("s", {"image": image, "label": label},
                         {"image": "intensity", "label": "label"}, affine)


def per_sample(sampler, subject, transforms, params, centre):
    """The CPU worker path: compose this sample's draws, resample the patch from the cache."""
    total = None
    for transform, drawn in zip(transforms, params):
        if drawn is not None:
            draw = transform.to_draw(drawn, window=WINDOW, spacing=SPACING)
            total = draw if total is None else total.then(draw)
    return sampler.extract(subject, centre, WINDOW, draw=total)


# linear: the default fused kernel within 1e-5; the torch reference builds a float32 grid over its
# own read region, whose coordinate rounding (~region size x 6e-8 voxels) adds up to ~1.5e-5
TOLERANCE = {"auto": 1e-5, "torch": 2e-5}
# centres inside, at an edge and at a corner (the rotated box leaves the image there)
CENTRES = [np.array([15, 13, 11]), np.array([2, 13, 20]), np.array([0, 0, 0]), np.array([29, 25, 3])]


@pytest.mark.parametrize("kernel", ["torch", "auto"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_path_equals_per_sample_path(kernel, seed):
    subject = make_subject()
    transforms = build_augmentation(COMPONENTS).transforms
    reference = Sampler(WINDOW, pad_value=PAD)
    reference.resample_kernel = kernel
    reader = Sampler(WINDOW, pad_value=PAD)
    reader.read_margin = augmentation_margin(transforms, WINDOW, SPACING)
    augment = BatchAugmentation(transforms, output_window=WINDOW, padding_mode="border")
    params = augment.draw(len(CENTRES), np.random.default_rng(seed))
    batch = collate_windows([reader.extract(subject, c, WINDOW) for c in CENTRES])
    assert batch["image"].shape[2:] == tuple(w + 2 * m for w, m in zip(WINDOW, reader.read_margin))
    out = augment.apply(batch, params)
    for index, centre in enumerate(CENTRES):
        expected = per_sample(reference, subject, transforms, params[index], centre)
        torch.testing.assert_close(out["image"][index], expected["image"], atol=TOLERANCE[kernel],
                                   rtol=0)
        assert out["label"].dtype == torch.uint8
        assert torch.equal(out["label"][index], expected["label"])  # nearest: exactly
    assert (out["image"] == PAD).any()  # the corner windows did read padding


def test_margin_bounds_every_draw():
    """The margin is a bound: no draw's source box (plus the linear neighbour) leaves it."""
    transforms = build_augmentation([*COMPONENTS, {"name": "elastic", "max_displacement": 2}]).transforms
    margin = np.array(augmentation_margin(transforms, WINDOW, SPACING))
    half = (np.array(WINDOW) - 1) / 2
    corners = np.array(np.meshgrid(*[[-h, h] for h in half], indexing="ij")).reshape(3, -1)
    rng = np.random.default_rng(0)
    worst = np.zeros(3)
    for _ in range(500):
        params = [t.maybe_params(rng) for t in transforms]
        total = None
        for transform, drawn in zip(transforms, params):
            if drawn is not None:
                draw = transform.to_draw(drawn, window=WINDOW, spacing=SPACING)
                total = draw if total is None else total.then(draw)
        matrix, translation, field = total.in_voxels(SPACING)
        reach = np.abs(matrix @ corners + translation[:, None]).max(axis=1)
        if field is not None:
            reach = reach + field.abs().flatten(1).amax(1).double().numpy()
        worst = np.maximum(worst, reach)
    assert np.all(worst + 1 <= half + margin)
    # and not absurdly loose: the extreme draws (range ends, smallest scaling, largest elastic)
    extreme = np.zeros(3)
    affine = transforms[1]
    for angles in itertools.product([-35.0, 0.0, 35.0], repeat=3):
        for shift in itertools.product([-3.0, 3.0], repeat=3):
            drawn = {"rotation": list(angles), "scaling": [0.8] * 3, "shear": [0.0] * 6,
                     "translation": list(shift)}
            matrix, translation, _ = affine.to_draw(drawn, window=WINDOW, spacing=SPACING).in_voxels(SPACING)
            reach = np.abs(matrix @ corners + translation[:, None]).max(axis=1)
            extreme = np.maximum(extreme, reach + 2.0 / np.array(SPACING))
    needed = np.ceil(extreme + 1 - half)
    assert np.all(margin <= 2 * needed), (margin, needed)  # entry-wise bounds: loose at 35°


def test_unsupported_transforms_named():
    spatial_after = build_augmentation([{"name": "gamma"}, {"name": "flip"}]).transforms
    assert "follows an intensity" in unsupported_reason(spatial_after)
    cubic = build_augmentation([{"name": "affine", "rotation": 5, "interpolation": "cubic"}])
    assert "cubic" in unsupported_reason(cubic.transforms)
    assert unsupported_reason(build_augmentation([*COMPONENTS, {"name": "gamma"}]).transforms) is None
