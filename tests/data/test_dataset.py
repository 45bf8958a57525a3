"""PreprocessedDataset: table rows → cached memmaps; grid policy; invalidation; fitting."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.config.schema import Component, PreprocessingConfig
from voxelflow.data.cached import compute_class_locations
from voxelflow.data.dataset import (
    PreprocessedDataset,
    load_fitted_state,
    preprocess_subject,
    save_fitted_state,
)
from voxelflow.errors import ConfigError, DataError, GeometryError
from voxelflow.io.image import Image, Subject
from voxelflow.io.table import SubjectRow
from voxelflow.synthetic import make_phantom, phantom_affine
from voxelflow.transforms.preprocess import invert

SHAPE = (14, 12, 10)
AFFINE = phantom_affine((1.0, 1.2, 1.5)) @ np.diag([-1.0, 1.0, 1.0, 1.0])


def write(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def make_rows(folder: Path, count: int = 3) -> list[SubjectRow]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image, label = make_phantom(SHAPE, seed=i)
        write(folder / f"s{i}_t1.nii.gz", image + 1.0)
        write(folder / f"s{i}_t2.nii.gz", 2.0 * image + 3.0)
        write(folder / f"s{i}_seg.nii.gz", (label * 2).astype(np.int16))
        columns = {
            "t1": f"s{i}_t1.nii.gz",
            "t2": f"s{i}_t2.nii.gz",
            "seg": f"s{i}_seg.nii.gz",
            "age": str(40 + i),
        }
        rows.append(SubjectRow(f"s{i}", columns, folder))
    return rows


INPUTS = {"image": ["t1", "t2"], "label": ["seg"]}


def dataset(
    tmp_path: Path, rows, config: PreprocessingConfig | None = None, **kwargs
) -> PreprocessedDataset:
    config = config or PreprocessingConfig(spacing=[2.0, 2.0, 2.0], label_values=[0, 2, 4])
    return PreprocessedDataset(
        rows, inputs=INPUTS, preprocessing=config, cache_dir=tmp_path / "cache", **kwargs
    )


def test_getitem_builds_once_and_returns_memmaps(tmp_path):
    rows = make_rows(tmp_path / "data")
    ds = dataset(tmp_path, rows)
    assert len(ds) == 3
    item = ds[1]
    assert item.name == "s1" and item.fields == {"age": "41"}
    assert isinstance(item.arrays["image"], np.memmap) and item.arrays["image"].shape[0] == 2
    assert item.kinds == {"image": "intensity", "label": "label"}
    assert item.spatial_shape == item.arrays["label"].shape[1:]
    np.testing.assert_allclose(np.sqrt((item.affine[:3, :3] ** 2).sum(0)), (2.0, 2.0, 2.0))
    assert set(np.unique(item.arrays["label"])) <= {0, 1, 2}
    expected_locations = compute_class_locations(np.asarray(item.arrays["label"]))
    for value, indices in expected_locations.items():
        np.testing.assert_array_equal(item.class_locations[value], indices)
    folder = tmp_path / "cache" / ds.key(1)
    stamp = folder.stat().st_mtime_ns
    again = ds[1]
    assert folder.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.arrays["image"], item.arrays["image"])
    assert not any(p.suffix == ".npy" for p in (tmp_path / "data").iterdir())


def test_cached_equals_in_memory_preprocessing_and_inverts_to_original(tmp_path):
    rows = make_rows(tmp_path / "data", count=1)
    ds = dataset(tmp_path, rows)
    original = ds.load_original(0)
    assert original["image"].data.shape == (2, *SHAPE)
    np.testing.assert_allclose(original["image"].affine, AFFINE, atol=1e-5)
    processed, record = preprocess_subject(original, ds.preprocessing, ds.fitted_state)
    item = ds[0]
    np.testing.assert_array_equal(item.arrays["image"], processed["image"].numpy())
    assert item.record == record
    label = Image(torch.from_numpy(np.array(item.arrays["label"])), item.affine, kind="label")
    back = invert(label, item.record)
    assert back.spatial_shape == SHAPE
    agreement = (back.numpy() == original["label"].numpy()).mean()
    assert agreement > 0.9


def test_changed_input_or_setting_invalidates_only_affected(tmp_path):
    rows = make_rows(tmp_path / "data")
    ds = dataset(tmp_path, rows)
    keys = ds.build(progress=False)
    image, _ = make_phantom(SHAPE, seed=9)
    path = write(tmp_path / "data" / "s2_t1.nii.gz", image)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    new_keys = [ds.key(i) for i in range(3)]
    assert new_keys[:2] == keys[:2] and new_keys[2] != keys[2]
    other = dataset(
        tmp_path, rows, PreprocessingConfig(spacing=[2.0, 2.0, 3.0], label_values=[0, 2, 4])
    )
    assert all(other.key(i) != new_keys[i] for i in range(3))


def test_parallel_build_with_workers(tmp_path):
    rows = make_rows(tmp_path / "data", count=2)
    ds = dataset(tmp_path, rows)
    keys = ds.build(num_workers=2, progress=False)
    assert sorted(ds.cache.keys()) == sorted(keys)


def test_grid_policy_refuses_or_resamples_to_first(tmp_path, caplog):
    rows = make_rows(tmp_path / "data", count=1)
    shifted = AFFINE.copy()
    shifted[:3, 3] += 2.0
    image, _ = make_phantom(SHAPE, seed=0)
    write(tmp_path / "data" / "s0_t2.nii.gz", image, shifted)
    with pytest.raises(GeometryError, match=r"s0_t1\.nii\.gz.*s0_t2\.nii\.gz"):
        dataset(tmp_path, rows).load_original(0)
    with caplog.at_level(logging.WARNING):
        subject = dataset(tmp_path, rows, resample_to_first=True).load_original(0)
    assert "resampling" in caplog.text
    assert subject["image"].data.shape == (2, *SHAPE)


def test_non_finite_voxels_are_zeroed_with_count_or_refused(tmp_path):
    rows = make_rows(tmp_path / "data", count=1)
    image, _ = make_phantom(SHAPE, seed=0)
    image[0, 0, 0] = np.nan
    image[1, 1, 1] = np.inf
    write(tmp_path / "data" / "s0_t1.nii.gz", image)
    with pytest.warns(UserWarning, match="2 non-finite voxels"):
        item = dataset(tmp_path, rows, PreprocessingConfig(label_values=[0, 2, 4]))[0]
    assert np.isfinite(item.arrays["image"]).all()
    refuse = PreprocessingConfig(non_finite="error", label_values=[0, 2, 4])
    with pytest.raises(DataError, match=r"s0_t1\.nii\.gz"):
        dataset(tmp_path, rows, refuse)[0]


def test_fit_histogram_and_labels_feeds_the_key(tmp_path):
    rows = make_rows(tmp_path / "data")
    config = PreprocessingConfig(
        normalization=[Component(name="histogram_standardization", mask="nonzero")]
    )
    ds = dataset(tmp_path, rows, config)
    with pytest.raises(DataError, match="fit"):
        ds[0]
    state = ds.fit([0, 1])
    assert state["label_values"] == [0, 2, 4]
    assert len(state["normalization"][0]["reference"]) == 2
    save_fitted_state(state, tmp_path / "preprocessing_state.json")
    reloaded = dataset(
        tmp_path,
        rows,
        config,
        fitted_state=load_fitted_state(tmp_path / "preprocessing_state.json"),
    )
    assert reloaded.key(2) == ds.key(2)
    np.testing.assert_array_equal(reloaded[2].arrays["image"], ds[2].arrays["image"])
    refit = dataset(tmp_path, rows, config)
    refit.fit([2])
    assert refit.key(0) != ds.key(0)


def test_errors_for_missing_columns_and_cache_inside_inputs(tmp_path):
    rows = make_rows(tmp_path / "data", count=1)
    with pytest.raises(DataError, match=r"subject 's0': expected columns \['flair'\]"):
        PreprocessedDataset(
            rows,
            inputs={"image": ["flair"]},
            preprocessing=PreprocessingConfig(),
            cache_dir=tmp_path / "cache",
        )
    with pytest.raises(ConfigError, match="outside the input folders"):
        PreprocessedDataset(
            rows,
            inputs=INPUTS,
            preprocessing=PreprocessingConfig(),
            cache_dir=tmp_path / "data" / "cache",
        )


def test_preprocess_subject_in_memory():
    image, label = make_phantom(SHAPE, seed=5)
    subject = Subject(
        "mem",
        {
            "image": Image(torch.from_numpy(image[None]), AFFINE),
            "label": Image(torch.from_numpy(label[None]), AFFINE, kind="label"),
        },
    )
    processed, record = preprocess_subject(subject, PreprocessingConfig())
    assert [step["name"] for step in record["steps"]] == ["reorient"]
    assert processed["image"].orientation == "RAS"
    np.testing.assert_allclose(processed["image"].data.mean().item(), 0.0, atol=1e-5)
    with pytest.raises(DataError, match="fit"):
        preprocess_subject(
            subject,
            PreprocessingConfig(normalization=[Component(name="histogram_standardization")]),
        )


def test_unfitted_label_values_warn_and_keep_raw_values(tmp_path, caplog):
    rows = make_rows(tmp_path / "data", count=1)
    with caplog.at_level(logging.WARNING):
        item = dataset(tmp_path, rows, PreprocessingConfig())[0]
    assert "raw values" in caplog.text
    assert set(np.unique(item.arrays["label"])) == {0, 2, 4}
