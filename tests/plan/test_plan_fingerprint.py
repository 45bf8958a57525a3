"""The fingerprint: statistics against numpy, the cache, and bad datasets named clearly."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from voxelflow.config.schema import DatasetConfig
from voxelflow.errors import DataError
from voxelflow.io.table import load_table
from voxelflow.planning import fingerprint as fp_module
from voxelflow.planning.fingerprint import fingerprint_dataset

ROLES = {"image": ["image"], "label": ["label"]}


def _rows(table: Path):
    return load_table(DatasetConfig(csv=table))


def test_statistics_match_numpy_on_the_files(make_dataset):
    table = make_dataset(2, background="noise")
    fp = fingerprint_dataset(_rows(table), roles=ROLES, workers=1, progress=False)
    first = fp.subjects[0]
    image = nib.load(table.parent / "case0_image.nii.gz").get_fdata()
    label = np.asarray(nib.load(table.parent / "case0_label.nii.gz").dataobj)
    inside = image[label > 0]
    stats = first.channels[0].foreground
    assert stats.count == inside.size
    assert stats.mean == pytest.approx(inside.mean())
    assert stats.std == pytest.approx(inside.std())
    assert [stats.p00_5, stats.p50, stats.p99_5] == pytest.approx(
        np.percentile(inside, [0.5, 50, 99.5])
    )
    assert first.shape == [40, 36, 12] and first.spacing == pytest.approx([0.8, 0.8, 4.0])
    assert first.channels[0].background == "noise" and not first.channels[0].looks_ct
    counts = {c.value: c.voxels for c in first.labels}
    assert counts == {0: int((label == 0).sum()), 1: int((label == 1).sum())}
    assert first.labels[1].components == ndimage.label(label == 1)[1] == 1


def test_ct_and_zero_background_are_recognised(make_dataset, tmp_path):
    ct = fingerprint_dataset(
        _rows(make_dataset(1, ct=True)), roles=ROLES, workers=1, progress=False
    )
    assert ct.subjects[0].channels[0].looks_ct
    for path in (tmp_path / "data").iterdir():
        path.unlink()
    zero = fingerprint_dataset(
        _rows(make_dataset(1, background="zero")), roles=ROLES, workers=1, progress=False
    )
    assert zero.subjects[0].channels[0].background == "zero"
    # the body box of a zero background is the body, not the whole grid
    start, stop = zero.subjects[0].body_box
    assert start[0] > 0 and stop[0] < 40


def test_cache_reuses_unchanged_files_and_rereads_changed_ones(make_dataset, tmp_path, monkeypatch):
    table = make_dataset(2)
    cache = tmp_path / "out" / "fingerprint.json"
    first = fingerprint_dataset(_rows(table), roles=ROLES, cache=cache, workers=1, progress=False)
    calls = []
    original = fp_module.fingerprint_subject

    def counting(row, roles, orientation):
        calls.append(row.name)
        return original(row, roles, orientation)

    monkeypatch.setattr(fp_module, "fingerprint_subject", counting)
    again = fingerprint_dataset(_rows(table), roles=ROLES, cache=cache, workers=1, progress=False)
    assert calls == [] and again.to_json() == first.to_json()
    changed = table.parent / "case1_image.nii.gz"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    fingerprint_dataset(_rows(table), roles=ROLES, cache=cache, workers=1, progress=False)
    assert calls == ["case1"]


def test_parallel_workers_give_the_same_fingerprint(make_dataset):
    rows = _rows(make_dataset(3))
    one = fingerprint_dataset(rows, roles=ROLES, workers=1, progress=False)
    two = fingerprint_dataset(rows, roles=ROLES, workers=2, progress=False)
    assert one.to_json() == two.to_json()


def test_image_and_label_on_different_grids_name_both_files(make_dataset):
    table = make_dataset(2)
    label = table.parent / "case1_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 36, 11), np.uint8), np.diag([0.8, 0.8, 4.0, 1])), label)
    with pytest.raises(DataError, match=r"case1_image\.nii\.gz.*case1_label\.nii\.gz"):
        fingerprint_dataset(_rows(table), roles=ROLES, workers=1, progress=False)


def test_channel_count_differing_between_subjects_is_named(make_dataset):
    table = make_dataset(2)
    image = table.parent / "case1_image.nii.gz"
    data = np.stack([np.ones((40, 36, 12))] * 2, axis=-1).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 4.0, 1])), image)
    label = table.parent / "case1_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 36, 12), np.uint8), np.diag([0.8, 0.8, 4.0, 1])), label)
    with pytest.raises(
        DataError, match=r"subject 'case1' has 2 image channel\(s\), subject 'case0' has 1"
    ):
        fingerprint_dataset(_rows(table), roles=ROLES, workers=1, progress=False)


def test_a_subject_stored_in_another_orientation_has_the_same_fingerprint(make_dataset):
    table = make_dataset(1)
    folder = table.parent
    reference = fingerprint_dataset(_rows(table), roles=ROLES, workers=1, progress=False)
    for name in ("case0_image.nii.gz", "case0_label.nii.gz"):
        loaded = nib.load(folder / name)
        data = np.asanyarray(loaded.dataobj)[::-1, :, ::-1].transpose(1, 0, 2).copy()
        flip = np.eye(4)[[1, 0, 2, 3]]  # voxel (j, i, k) of the new file is voxel (i, j, k) flipped
        flip[0, :] = [0, -1, 0, data.shape[1] - 1]
        flip[1, :] = [1, 0, 0, 0]
        flip[2, :] = [0, 0, -1, data.shape[2] - 1]
        nib.save(nib.Nifti1Image(data, loaded.affine @ flip), folder / f"lps_{name}")
    (folder / "lps.csv").write_text("subject,image,label\ncase0,lps_case0_image.nii.gz,lps_case0_label.nii.gz\n")
    moved = fingerprint_dataset(_rows(folder / "lps.csv"), roles=ROLES, workers=1, progress=False)
    a, b = reference.subjects[0], moved.subjects[0]
    assert b.original_orientation != a.original_orientation
    assert (b.shape, b.spacing, b.body_box) == (a.shape, a.spacing, a.body_box)
    assert b.channels[0].foreground.mean == pytest.approx(a.channels[0].foreground.mean)
    assert [c.voxels for c in b.labels] == [c.voxels for c in a.labels]
