"""Contract and bad-input tests of the training samplers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sampling_fixtures import make_subject

from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError, DataError, ShapeError
from voxelflow.sampling import (
    SAMPLERS,
    BalancedSampler,
    ResizeSampler,
    UniformSampler,
    WeightedSampler,
)
from voxelflow.transforms.compose import build_augmentation

WINDOW = (8, 6, 4)


def _kwargs(name):
    return {"map_role": "image"} if name == "weighted" else {}


def _positive(subject):
    subject.arrays["image"] = np.abs(np.asarray(subject.arrays["image"])) + 0.1
    return subject


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_contract_shapes_dtypes_determinism(name, memmap_subject):
    subject = _positive(memmap_subject) if name == "weighted" else memmap_subject
    sampler = SAMPLERS.get(name)(WINDOW, windows_per_subject=3, **_kwargs(name))
    first = sampler.sample(subject, np.random.default_rng(5))
    again = sampler.sample(subject, np.random.default_rng(5))
    assert len(first) == 3
    for a, b in zip(first, again):
        assert a["image"].shape == (1, *WINDOW) and a["image"].dtype == torch.float32
        assert a["label"].dtype == torch.uint8 and set(a["label"].unique().tolist()) <= {0, 1, 2}
        assert a["location"].dtype == torch.int64 and a["location"].shape == (3,)
        assert a["subject"] == "s0"
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["uniform", "balanced", "weighted"])
def test_window_is_exactly_the_cached_region(name, subject):
    subject = _positive(subject) if name == "weighted" else subject
    for item in SAMPLERS.get(name)(WINDOW, windows_per_subject=4, **_kwargs(name)).sample(
        subject, np.random.default_rng(0)
    ):
        x, y, z = item["location"].tolist()
        expected = np.asarray(subject.arrays["image"])[:, x : x + 8, y : y + 6, z : z + 4]
        np.testing.assert_array_equal(item["image"].numpy(), expected)


def test_uniform_covers_all_valid_starts():
    subject = make_subject(shape=(10, 8, 6))
    starts = {
        tuple(w["location"].tolist())
        for w in UniformSampler((8, 8, 4), windows_per_subject=400).sample(
            subject, np.random.default_rng(0)
        )
    }
    assert starts == {(x, 0, z) for x in range(3) for z in range(3)}


def test_window_larger_than_image_pads():
    subject = make_subject(shape=(10, 8, 6))
    item = UniformSampler((12, 8, 0), pad_value=-5.0).sample(subject, np.random.default_rng(0))[0]
    assert item["image"].shape == (1, 12, 8, 6)
    assert (item["image"][:, :1] == -5).all() and (item["image"][:, -1:] == -5).all()
    assert (item["label"][:, :1] == 0).all()
    np.testing.assert_array_equal(
        item["image"][:, 1:11].numpy(), np.asarray(subject.arrays["image"])
    )


def test_window_of_wrong_dimensionality_names_subject(subject):
    with pytest.raises(ShapeError, match="subject 's0'"):
        UniformSampler((8, 8)).sample(subject, np.random.default_rng(0))


def test_label_window_is_centred(subject):
    item = UniformSampler((8, 8, 6), label_window=(4, 4, 2)).sample(
        subject, np.random.default_rng(1)
    )[0]
    x, y, z = item["location"].tolist()
    expected = np.asarray(subject.arrays["label"])[:, x + 2 : x + 6, y + 2 : y + 6, z + 2 : z + 4]
    np.testing.assert_array_equal(item["label"].numpy(), expected)


def test_weighted_follows_the_map():
    subject = make_subject(shape=(12, 12, 12))
    weights = np.zeros((1, 12, 12, 12), np.float32)
    weights[0, 3, 7, 5] = 1.0
    weights[0, 8, 4, 6] = 3.0
    subject.arrays["sampling_map"] = weights
    items = WeightedSampler((2, 2, 2), windows_per_subject=400).sample(
        subject, np.random.default_rng(0)
    )
    starts = [tuple(i["location"].tolist()) for i in items]
    share = starts.count((7, 3, 5)) / len(starts)
    assert set(starts) == {(2, 6, 4), (7, 3, 5)} and 0.68 < share < 0.82


@pytest.mark.parametrize("bad", [-1.0, 0.0])
def test_weighted_rejects_negative_or_zero_maps(bad, tmp_path):
    subject = make_subject(memmap_dir=tmp_path)
    subject.arrays["sampling_map"] = np.full((1, *subject.spatial_shape), bad, np.float32)
    with pytest.raises(DataError, match=r"sampling map 'sampling_map'.*subject 's0'"):
        WeightedSampler(WINDOW).sample(subject, np.random.default_rng(0))


def test_weighted_map_of_other_shape(subject):
    subject.arrays["sampling_map"] = np.ones((1, 5, 5, 5), np.float32)
    with pytest.raises(
        ShapeError,
        match=r"subject 's0'.*spatial shape \(20, 22, 16\), got 'sampling_map' with shape \(5, 5, 5\)",
    ):
        WeightedSampler(WINDOW).sample(subject, np.random.default_rng(0))


def test_balanced_ratio_one_to_one_delivers_foreground_centres():
    subject = make_subject(shape=(24, 24, 20), seed=3)
    items = BalancedSampler((6, 6, 6), windows_per_subject=400).sample(
        subject, np.random.default_rng(0)
    )
    centres = [item["label"][0, 3, 3, 3].item() for item in items]
    share = np.mean([c != 0 for c in centres])
    assert 0.42 < share < 0.58


def test_balanced_equal_over_classes():
    subject = make_subject(shape=(24, 24, 20), seed=3)
    items = BalancedSampler((4, 4, 4), windows_per_subject=600, class_ratios="equal").sample(
        subject, np.random.default_rng(0)
    )
    counts = np.bincount([item["label"][0, 2, 2, 2].item() for item in items], minlength=3) / 600
    np.testing.assert_allclose(counts, [1 / 3] * 3, atol=0.07)


def test_balanced_without_foreground_warns_and_samples_background():
    subject = make_subject(shape=(12, 12, 12))
    subject.arrays["label"] = np.zeros_like(subject.arrays["label"])
    subject.class_locations = None  # computed on demand
    with pytest.warns(UserWarning, match="foreground is absent from subject 's0'"):
        items = BalancedSampler((4, 4, 4), windows_per_subject=5).sample(
            subject, np.random.default_rng(0)
        )
    assert len(items) == 5


def test_balanced_no_sampled_class_present_raises():
    subject = make_subject(shape=(12, 12, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="subject 's0'"):
            BalancedSampler((4, 4, 4), class_ratios={7: 1.0}).sample(
                subject, np.random.default_rng(0)
            )


@pytest.mark.parametrize("ratios", [[1.0, -1.0], [0.0, 0.0], "often"])
def test_balanced_bad_ratios(ratios):
    with pytest.raises(ConfigError):
        BalancedSampler((4, 4, 4), class_ratios=ratios)


def test_windows_per_subject_must_be_positive():
    with pytest.raises(ConfigError, match="windows_per_subject"):
        UniformSampler((4, 4, 4), windows_per_subject=0)


def test_resize_sampler_whole_image_and_nearest_labels(subject):
    item = ResizeSampler((10, 11, 8)).sample(subject, np.random.default_rng(0))[0]
    assert item["image"].shape == (1, 10, 11, 8) and item["label"].dtype == torch.uint8
    # exact 2x downsampling of labels by nearest (centre-aligned) takes voxels 1, 3, 5 ...
    np.testing.assert_array_equal(
        item["label"].numpy(), np.asarray(subject.arrays["label"])[:, 1::2, 1::2, 1::2]
    )
    expected = torch.nn.functional.avg_pool3d(torch.from_numpy(subject.arrays["image"])[None], 2)[0]
    torch.testing.assert_close(item["image"], expected, atol=1e-6, rtol=0)


def test_augmented_windows_keep_label_values_and_use_one_draw(subject):
    aug = build_augmentation(
        [{"name": "flip"}, {"name": "affine", "rotation": 30, "scaling": [0.8, 1.2]}]
    )
    items = BalancedSampler((8, 8, 6), windows_per_subject=4).sample(
        subject, np.random.default_rng(0), augmentation=aug
    )
    for item in items:
        assert item["label"].dtype == torch.uint8 and set(item["label"].unique().tolist()) <= {
            0,
            1,
            2,
        }
        # image and label moved together: the phantom image is label/2 + noise
        agree = (item["image"][0] - item["label"][0].float() / 2).abs() < 0.45
        assert agree.float().mean() > 0.85


def test_augmented_patch_has_no_empty_corners_inside_the_image():
    subject = make_subject(shape=(24, 24, 20))
    subject.arrays["image"] = np.ones_like(subject.arrays["image"])
    aug = build_augmentation([{"name": "affine", "rotation": [44, 45], "spatial_dims": 3}])
    sampler = UniformSampler((8, 8, 6))
    draw = aug.draw_spatial(np.random.default_rng(0), window=(8, 8, 6), spacing=(1.0, 1.2, 1.5))
    item = sampler.extract(subject, np.array([12, 12, 10]), (8, 8, 6), draw=draw)
    within_window = aug(
        {"image": torch.ones(1, 8, 8, 6), "spacing": torch.tensor([1.0, 1.2, 1.5])},
        rng=np.random.default_rng(0),
    )
    assert within_window["image"].min() < 0.5  # resampling the bare window leaves empty corners
    torch.testing.assert_close(item["image"], torch.ones(1, 8, 8, 6))


def test_in_memory_subject_from_subject():
    image = torch.rand(1, 6, 6, 6)
    from voxelflow.io.image import Image, Subject

    subject = CachedSubject.from_subject(
        Subject(
            "m",
            {"image": Image(image), "label": Image((image > 0.5).to(torch.uint8), kind="label")},
        )
    )
    item = BalancedSampler((4, 4, 4)).sample(subject, np.random.default_rng(0))[0]
    assert item["image"].shape == (1, 4, 4, 4)


def test_label_window_follows_the_same_draw(subject):
    flip_all = build_augmentation([{"name": "flip", "flip_probability": 1.0}])
    sampler = UniformSampler((8, 8, 6), label_window=(4, 4, 2))
    item = sampler.sample(subject, np.random.default_rng(2), augmentation=flip_all)[0]
    full = UniformSampler((8, 8, 6)).extract(
        subject, item["location"].numpy() + np.array([4, 4, 3]), (8, 8, 6)
    )
    flipped = torch.flip(full["label"], (1, 2, 3))
    torch.testing.assert_close(item["label"], flipped[:, 2:6, 2:6, 2:4], rtol=0, atol=0)
    torch.testing.assert_close(item["image"], torch.flip(full["image"], (1, 2, 3)), rtol=0, atol=0)


def test_plain_transform_is_applied_after_reading(subject):
    from voxelflow.transforms.intensity import RandomContrastBrightness

    shift = RandomContrastBrightness(contrast=1.0, brightness=[1.0, 1.0])
    item = UniformSampler(WINDOW).sample(subject, np.random.default_rng(0), augmentation=shift)[0]
    x, y, z = item["location"].tolist()
    expected = np.asarray(subject.arrays["image"])[:, x : x + 8, y : y + 6, z : z + 4] + 1.0
    np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-5)
