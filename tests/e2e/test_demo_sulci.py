"""Opened sulci (voxelflow.demo.sulci) and the per-subject seeds of the demo dataset."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from voxelflow.demo import sulci


def _slab_template(spacing: float = 1.0):
    """A white-matter slab (x < 20) under a 12 mm grey-matter layer; MNI-like affine far from the
    deep-grey-matter ellipsoid (x from +60 mm), so every grey voxel is cortex."""
    shape = (40, 8, 8)
    wm = np.zeros(shape, np.float32)
    wm[:20] = 1.0
    gm = np.zeros(shape, np.float32)
    gm[20:32] = 1.0
    t1 = np.where(wm > 0, 0.85, np.where(gm > 0, 0.67, 0.0)).astype(np.float32)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = (60.0, 30.0, 40.0)
    return t1, gm, wm, affine


def test_sulcus_map_distance_is_the_euclidean_distance_to_white_matter():
    template = _slab_template(2.0)
    mapped = sulci.sulcus_map(template)
    white = template[2] > 0.5
    np.testing.assert_allclose(
        mapped.distance_to_wm_mm, 2.0 * ndimage.distance_transform_edt(~white), rtol=1e-6
    )
    assert mapped.cortex[20:32].all() and not mapped.cortex[:20].any() and not mapped.cortex[32:].any()


def test_deep_grey_matter_and_cerebellum_are_not_cortex():
    t1, gm, wm, _ = _slab_template()
    affine = np.eye(4)
    affine[:3, 3] = (-20.0, -8.0, 0.0)  # x from -20 mm: inside the basal-ganglia ellipsoid
    assert not sulci.sulcus_map((t1, gm, wm, affine)).cortex[20:32].any()
    affine[:3, 3] = (60.0, -60.0, -40.0)  # below and behind: cerebellum
    assert not sulci.sulcus_map((t1, gm, wm, affine)).cortex.any()


def test_open_sulci_turns_far_cortex_into_csf(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sulci, "OPEN_FRACTION", 1.0)
    monkeypatch.setattr(sulci, "THICKNESS_MM", (4.0, 4.0))
    template = _slab_template()
    mapped = sulci.sulcus_map(template)
    t1, gm, wm, _ = sulci.open_sulci(template, mapped, np.random.default_rng(0))
    # 4 mm ± 15 % (a smooth field), faded over one voxel: grey matter 1-2 mm from white matter
    # stays, 6 mm and farther becomes CSF
    np.testing.assert_array_equal(gm[20:22], 1.0)
    np.testing.assert_array_equal(gm[25:32], 0.0)
    low, high = sulci.CSF_INTENSITY
    assert (t1[25:32] >= low).all() and (t1[25:32] <= high).all()
    np.testing.assert_array_equal(wm, template[2])  # white matter and outside are untouched
    np.testing.assert_array_equal(t1[:20], template[0][:20])
    np.testing.assert_array_equal(t1[32:], 0.0)
    assert template[1][25:32].min() == 1.0  # the input arrays are not modified


def test_open_sulci_leaves_a_quarter_of_subjects_as_the_template(monkeypatch: pytest.MonkeyPatch):
    template = _slab_template()
    mapped = sulci.sulcus_map(template)
    rngs = [np.random.default_rng(seed) for seed in range(200)]
    kept = sum(sulci.open_sulci(template, mapped, rng) is template for rng in rngs)
    assert 0.15 < kept / 200 < 0.35  # OPEN_FRACTION 0.75


def test_one_split_of_the_demo_dataset_can_be_made_alone(tmp_path):
    pytest.importorskip("nilearn")
    import nibabel as nib

    from voxelflow.demo.data import make_demo_dataset

    whole = make_demo_dataset(tmp_path / "whole", num_train=2, num_test=1, spacing=4.0)
    alone = make_demo_dataset(tmp_path / "alone", num_train=2, num_test=1, spacing=4.0,
                              splits=("test",))  # fmt: skip
    assert not (tmp_path / "alone" / "images" / "train000_t1.nii.gz").exists()
    assert alone.train_csv.read_text().count("\n") == 1  # the header only
    for folder in ("images/test002_t1.nii.gz", "labels/test002_tissue.nii.gz"):
        a = nib.load(tmp_path / "whole" / folder)
        b = nib.load(tmp_path / "alone" / folder)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    assert whole.test_csv.read_text() == alone.test_csv.read_text().replace("alone", "whole")
