"""Normalisation steps and foreground masks against numpy hand computations."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from voxelflow.errors import ConfigError, DataError, RegistryError
from voxelflow.transforms.normalize import (
    NORMALIZERS,
    HistogramStandardization,
    build_normalizer,
    foreground_mask,
    otsu_threshold,
)

RNG = np.random.default_rng(0)


def two_channel_image() -> np.ndarray:
    image = RNG.normal(100.0, 20.0, size=(2, 12, 10, 8)).astype(np.float32)
    image[1] *= 3.0
    image[:, :3] = 0.0  # background
    return image


def test_registry_names_and_errors():
    assert set(NORMALIZERS.names()) >= {
        "zscore",
        "percentile_rescale",
        "ct_window",
        "histogram_standardization",
    }
    with pytest.raises(RegistryError, match="Did you mean: 'zscore'"):
        build_normalizer("zscor")
    with pytest.raises(ConfigError, match=r"preprocessing\.normalization\[0\]\.bogus: unknown option of normalizer 'zscore'"):
        build_normalizer("zscore", {"bogus": 1})


def test_zscore_whole_image_and_inside_nonzero_mask():
    image = two_channel_image()
    out = build_normalizer("zscore")(image)
    for c in range(2):
        expected = (image[c] - image[c].mean()) / image[c].std()
        np.testing.assert_allclose(out[c], expected, rtol=1e-4, atol=1e-4)
    masked = build_normalizer("zscore", {"mask": "nonzero"})(image)
    for c in range(2):
        values = image[c][image[c] != 0]
        np.testing.assert_allclose(
            masked[c], (image[c] - values.mean()) / values.std(), rtol=1e-4, atol=1e-4
        )
    assert masked.dtype == np.float32


def test_zscore_zero_variance_warns_without_nan(caplog):
    constant = np.full((1, 4, 4, 4), 5.0, dtype=np.float32)
    with caplog.at_level(logging.WARNING):
        out = build_normalizer("zscore")(constant)
    assert np.all(out == 0.0) and "zero variance" in caplog.text


def test_percentile_rescale_matches_numpy():
    image = two_channel_image()
    out = build_normalizer("percentile_rescale", {"lower": 5, "upper": 95, "out_min": -1})(image)
    for c in range(2):
        low, high = np.percentile(image[c], [5, 95])
        expected = np.clip((image[c] - low) / (high - low) * 2 - 1, -1, 1)
        np.testing.assert_allclose(out[c], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="lower < upper"):
        build_normalizer("percentile_rescale", {"lower": 90, "upper": 10})


def test_ct_window_fixed_hounsfield_window():
    hu = np.array([[[[-2000.0, -160.0, 40.0, 240.0, 3000.0]]]])
    out = build_normalizer("ct_window", {"low": -160, "high": 240})(hu)
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0])
    same = build_normalizer("ct_window", {"center": 40, "width": 400})(hu)
    np.testing.assert_allclose(same, out)
    with pytest.raises(ConfigError, match="low < high"):
        build_normalizer("ct_window", {"low": 5})


def brute_force_otsu(values: np.ndarray) -> float:
    """Exhaustive search over splits of integer values maximising between-class variance."""
    best, best_threshold = -1.0, 0.0
    for threshold in np.unique(values)[:-1]:
        low, high = values[values <= threshold], values[values > threshold]
        between = low.size * high.size * (low.mean() - high.mean()) ** 2
        if between > best:
            best, best_threshold = between, threshold
    return float(best_threshold)


def test_otsu_matches_exhaustive_search_on_integer_data():
    values = np.concatenate([RNG.normal(60, 15, 3000), RNG.normal(180, 25, 2000)])
    values = np.clip(np.round(values), 0, 255)
    values[:2] = (0, 255)  # histogram range 0..255 → one bin per integer
    threshold = otsu_threshold(values, bins=256)
    expected = brute_force_otsu(values)
    assert np.array_equal(values > threshold, values > expected)


def test_foreground_masks_and_multimodal_combination():
    image = np.stack([np.arange(8.0).reshape(2, 2, 2), np.arange(8.0)[::-1].reshape(2, 2, 2)])
    mean_mask = foreground_mask(image, method="mean", combine="per_channel")
    np.testing.assert_array_equal(mean_mask, image > image.mean(axis=(1, 2, 3), keepdims=True))
    both = foreground_mask(image, method="threshold", threshold=1.5, combine="and")
    either = foreground_mask(image, method="threshold", threshold=1.5, combine="or")
    expected_and = (image[0] > 1.5) & (image[1] > 1.5)
    np.testing.assert_array_equal(both[0], expected_and)
    np.testing.assert_array_equal(both[1], expected_and)
    np.testing.assert_array_equal(either[0], (image[0] > 1.5) | (image[1] > 1.5))
    assert foreground_mask(image, method="nonzero")[0].sum() == 6
    with pytest.raises(ConfigError, match="expected mask one of"):
        foreground_mask(image, method="bogus")  # type: ignore[arg-type]


def test_histogram_standardization_fit_apply_and_state(tmp_path):
    images = [RNG.gamma(2.0 + i, 50.0, size=(1, 10, 10, 10)).astype(np.float32) for i in range(3)]
    step = HistogramStandardization(cutoff=(1, 99), landmarks="quartile")
    with pytest.raises(DataError, match="not fitted"):
        step(images[0])
    step.fit(images)
    percentiles = [1, 25, 50, 75, 99]
    scaled = []
    for image in images:
        marks = np.percentile(image[0].astype(np.float64), percentiles)
        scaled.append((marks - marks[0]) / (marks[-1] - marks[0]) * 100)
    reference = np.mean(scaled, axis=0)
    np.testing.assert_allclose(step.reference[0], reference, atol=1e-6)
    out = step(images[1])  # landmarks land on the reference (up to percentile interpolation)
    np.testing.assert_allclose(np.percentile(out[0], percentiles), reference, atol=1e-2)
    loaded = HistogramStandardization.from_state(
        json.loads(json.dumps(step.state_dict())), cutoff=(1, 99), landmarks="quartile"
    )
    np.testing.assert_allclose(loaded(images[2]), step(images[2]))
    step.save(tmp_path / "landmarks.json")
    saved = json.loads((tmp_path / "landmarks.json").read_text())
    assert (
        saved["name"] == "histogram_standardization"
        and saved["state"]["percentiles"] == percentiles
    )
    with pytest.raises(ConfigError, match="refit"):
        HistogramStandardization().load_state(step.state_dict())


def test_histogram_standardization_inside_mask_ignores_background():
    image = RNG.gamma(3.0, 40.0, size=(1, 10, 10, 10)).astype(np.float32) + 1.0
    image[:, :5] = 0.0
    step = HistogramStandardization(mask="nonzero").fit([image])
    np.testing.assert_allclose(step.reference[0][0], 0.0)
    np.testing.assert_allclose(step.reference[0][-1], 100.0)
    out = step(image)
    foreground = out[0][image[0] != 0]
    np.testing.assert_allclose(
        np.percentile(foreground, [1, 50, 99]), [0, step.reference[0][5], 100], atol=1e-2
    )


@pytest.mark.parametrize("name", NORMALIZERS.names())
def test_every_registered_normalizer_contract(name):
    """Shape and dtype kept, finite output, state survives JSON, for every registered step."""
    kwargs = {
        "ct_window": {"low": -100.0, "high": 300.0},
        "ct": {"low": -100.0, "high": 300.0, "mean": 40.0, "std": 80.0},
    }.get(name, {})
    image = two_channel_image()
    step = build_normalizer(name, kwargs)
    if step.requires_fit:
        step.fit([image, image * 1.5])
    out = step(image)
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    state = json.loads(json.dumps(step.state_dict()))
    np.testing.assert_allclose(build_normalizer(name, kwargs, state=state)(image), out)


def test_ct_clips_then_zscores_with_the_given_dataset_statistics():
    image = np.array([[[-1024.0, -50.0], [40.0, 2000.0]]], dtype=np.float32)
    out = build_normalizer("ct", {"low": -100.0, "high": 500.0, "mean": 40.0, "std": 20.0})(image)
    np.testing.assert_allclose(
        out[0].ravel(), [(-100 - 40) / 20, (-50 - 40) / 20, 0.0, (500 - 40) / 20]
    )


def test_zscore_in_body_maps_zero_and_noisy_backgrounds_to_the_same_values():
    rng = np.random.default_rng(3)
    body = np.zeros((24, 24, 24), dtype=bool)
    body[6:18, 6:18, 6:18] = True
    tissue = rng.normal(500.0, 50.0, body.shape).astype(np.float32)
    zero_bg = np.where(body, tissue, 0.0)[None].astype(np.float32)
    noisy_bg = np.where(body, tissue, np.abs(rng.normal(0.0, 20.0, body.shape)))[None].astype(
        np.float32
    )
    step = build_normalizer("zscore", {"mask": "body", "outside": -2.0})
    a, b = step(zero_bg), step(noisy_bg)
    np.testing.assert_allclose(a[0][~body], -2.0)
    np.testing.assert_allclose(b[0][~body], -2.0)
    inside = (tissue[body] - tissue[body].mean()) / tissue[body].std()
    np.testing.assert_allclose(a[0][body], inside, atol=1e-4)
    np.testing.assert_allclose(b[0][body], inside, atol=1e-4)


def test_channels_option_normalises_only_the_listed_channels():
    image = np.stack([np.arange(8.0).reshape(2, 2, 2), np.arange(8.0).reshape(2, 2, 2) * 3]).astype(
        np.float32
    )
    out = build_normalizer("zscore", {"channels": [1]})(image)
    np.testing.assert_array_equal(out[0], image[0])
    np.testing.assert_allclose(out[1], (image[1] - image[1].mean()) / image[1].std(), atol=1e-6)
    with pytest.raises(DataError, match="channels \\[3\\]"):
        build_normalizer("zscore", {"channels": [3]})(image)


def test_body_mask_fills_dark_tissue_inside_and_drops_noise_outside():
    from voxelflow.transforms.normalize import body_mask

    image = np.zeros((20, 20, 20), dtype=np.float32)
    image[4:16, 4:16, 4:16] = 100.0
    image[8:12, 8:12, 8:12] = 5.0  # dark ventricle inside
    image[0, 0, 0] = 100.0  # an isolated bright noise voxel outside
    mask = body_mask(image)
    expected = np.zeros_like(mask)
    expected[4:16, 4:16, 4:16] = True
    np.testing.assert_array_equal(mask, expected)
    ct = np.full((10, 10, 10), -1000.0, dtype=np.float32)
    ct[2:8, 2:8, 2:8] = 40.0
    ct[4:6, 4:6, 4:6] = -850.0  # lung air inside the body
    assert (
        body_mask(ct, looks_ct=True)[2:8, 2:8, 2:8].all()
        and not body_mask(ct, looks_ct=True)[0].any()
    )


def test_a_mask_covering_every_voxel_warns_about_the_ct_trap(caplog):
    ct = np.full((1, 12, 12, 12), -1024.0, dtype=np.float32)
    ct[0, 3:9, 3:9, 3:9] = 40.0
    with caplog.at_level(logging.WARNING):
        build_normalizer("zscore", {"mask": "nonzero"})(ct, path="lung.nrrd")
    assert any(
        "covers 100.0 %" in r.getMessage() and "mask: body" in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_normalizer("zscore", {"mask": "body"})(ct, path="lung.nrrd")
    assert not any("covers" in r.getMessage() for r in caplog.records)
