"""``voxelflow evaluate``: folders → CSVs + report, and every bad input the issue lists."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from voxelflow.cli.main import main
from voxelflow.metrics import segmentation_metrics
from voxelflow.metrics.evaluate import evaluate_folders, list_images
from voxelflow.metrics.report import summarize
from voxelflow.synthetic import make_phantom, phantom_affine

AFFINE = phantom_affine((0.7, 0.7, 3.0), angle=0.2)


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_folders(root: Path, count: int = 3) -> dict[str, np.ndarray]:
    refs = {}
    for index in range(count):
        image, label = make_phantom((20, 20, 12), seed=index)
        pred = ndimage.shift(label, (index % 2, 0, 0), order=0).astype(np.int16)
        save(root / "ref" / f"case{index}.nii.gz", label)
        save(root / "pred" / f"case{index}.nii.gz", pred)
        save(root / "img" / f"case{index}.nii.gz", image)
        refs[f"case{index}"] = label
    return refs


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_csvs_plots_and_self_contained_report(tmp_path):
    make_folders(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--ref",
            str(tmp_path / "ref"),
            "--out",
            str(out),
            "--image",
            str(tmp_path / "img"),
            "--labels",
            "1,2",
            "--tolerance",
            "2",
            "--workers",
            "1",
        ]
    )
    assert code == 0
    rows = read_rows(out / "per_case.csv")
    assert len(rows) == 6 and list(rows[0])[:8] == [
        "subject",
        "label",
        "label_name",
        "dice",
        "jaccard",
        "sensitivity",
        "specificity",
        "precision",
    ]
    for column in ("volume_ref_mm3", "volume_pred_mm3", "hd", "hd95", "assd", "nsd"):
        assert column in rows[0]
    summary = read_rows(out / "summary.csv")
    assert {r["label"] for r in summary} == {"1", "2"} and "n_nan" in summary[0]
    assert (out / "plots" / "dice.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert (
        "data:image/png;base64," in page
        and "<img" in page
        and "best" in page
        and 'src="http' not in page
    )


def test_values_equal_the_python_api_on_the_reference_grid(tmp_path):
    refs = make_folders(tmp_path, 2)
    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", None, labels=[1], workers=1, tolerance=2.0
    )
    pred = np.asarray(nib.load(str(tmp_path / "pred" / "case1.nii.gz")).dataobj)
    stored = nib.load(str(tmp_path / "ref" / "case1.nii.gz")).affine  # float32 in the file
    spacing = tuple(np.sqrt((stored[:3, :3] ** 2).sum(0)))
    expected = segmentation_metrics(
        pred,
        refs["case1"],
        labels=[1],
        spacing=spacing,
        metrics=["dice", "hd95", "nsd"],
        tolerance=2.0,
    )[1]
    row = next(r for r in result.rows if r["subject"] == "case1")
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-9)


def test_parallel_workers_give_the_same_rows(tmp_path):
    make_folders(tmp_path, 3)
    serial = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", workers=1, metrics=["dice", "hd95"]
    )
    parallel = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", workers=2, metrics=["dice", "hd95"]
    )
    assert serial.rows == parallel.rows and serial.ok


def test_different_grid_is_an_error_naming_both_files_unless_resample(tmp_path, caplog):
    make_folders(tmp_path, 2)
    label = np.asarray(nib.load(str(tmp_path / "pred" / "case1.nii.gz")).dataobj)
    shifted = AFFINE.copy()
    shifted[:3, 3] += (
        0.7 * AFFINE[:3, 0] / np.linalg.norm(AFFINE[:3, 0])
    )  # origin moved by 0.7 mm along x
    save(tmp_path / "pred" / "case1.nii.gz", label, shifted)
    save(tmp_path / "pred" / "case0.nii.gz", label[:, :, :10])  # other shape
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", workers=1)
    assert not result.ok
    failed = {subject: message for subject, kind, message in result.problems if kind == "failed"}
    assert set(failed) == {"case0", "case1"}
    assert "pred/case1.nii.gz" in failed["case1"] and "ref/case1.nii.gz" in failed["case1"]
    with caplog.at_level(logging.WARNING):
        resampled = evaluate_folders(tmp_path / "pred", tmp_path / "ref", workers=1, resample=True)
    assert resampled.ok and any("resampled" in w for w in resampled.warnings)


def test_non_integer_labels_fail_that_subject(tmp_path):
    make_folders(tmp_path, 2)
    save(tmp_path / "pred" / "case0.nii.gz", np.full((20, 20, 12), 0.5, np.float32))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", workers=1)
    assert [(s, k) for s, k, _ in result.problems] == [("case0", "failed")]
    assert "integer" in result.problems[0][2] and "case0" in result.problems[0][2]
    assert {r["subject"] for r in result.rows} == {"case1"}


def test_label_missing_from_both_warns_and_is_nan(tmp_path):
    make_folders(tmp_path, 2)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels=[1, 9], workers=1)
    assert any("label 9" in w for w in result.warnings)
    rows9 = [r for r in result.rows if r["label"] == 9]
    assert len(rows9) == 2 and all(math.isnan(r["dice"]) and math.isnan(r["hd95"]) for r in rows9)
    summary = next(s for s in summarize(result.rows, ["dice"]) if s["label"] == 9)
    assert summary["n_nan"] == 2 and math.isnan(summary["mean"])


def test_subject_in_one_folder_only_is_listed(tmp_path):
    make_folders(tmp_path, 3)
    (tmp_path / "pred" / "case2.nii.gz").unlink()
    save(tmp_path / "pred" / "extra.nii.gz", np.zeros((20, 20, 12), np.int16))
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--ref",
            str(tmp_path / "ref"),
            "--out",
            str(out),
            "--no-report",
        ]
    )
    assert code == 1
    problems = {(r["subject"], r["kind"]) for r in read_rows(out / "problems.csv")}
    assert problems == {("case2", "missing prediction"), ("extra", "missing reference")}


def test_unreadable_file_among_many_is_listed_and_exit_code_non_zero(tmp_path):
    make_folders(tmp_path, 4)
    (tmp_path / "pred" / "case1.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--ref",
            str(tmp_path / "ref"),
            "--out",
            str(out),
            "--workers",
            "2",
        ]
    )
    assert code == 1
    problems = read_rows(out / "problems.csv")
    assert [(r["subject"], r["kind"]) for r in problems] == [("case1", "failed")]
    assert "case1.nii.gz" in problems[0]["message"]
    assert {r["subject"] for r in read_rows(out / "per_case.csv")} == {"case0", "case2", "case3"}
    assert "case1" in (out / "report.html").read_text()


def test_bad_labels_argument_and_missing_folder(tmp_path):
    make_folders(tmp_path, 1)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred"),
                "--ref",
                str(tmp_path / "ref"),
                "--out",
                str(tmp_path / "o"),
                "--labels",
                "1,x",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "nope"),
                "--ref",
                str(tmp_path / "ref"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert list(list_images(tmp_path / "ref")) == ["case0"]


def test_in_memory_images_give_the_same_report(tmp_path):
    import torch

    from voxelflow.io.image import Image
    from voxelflow.metrics.evaluate import evaluate_images

    cases, images = {}, {}
    for index in range(3):
        image, label = make_phantom((20, 20, 12), seed=index)
        pred = ndimage.shift(label, (index, 0, 0), order=0)
        cases[f"s{index}"] = (
            Image(torch.from_numpy(pred[None]), AFFINE, kind="label"),
            Image(torch.from_numpy(label[None]), AFFINE, kind="label"),
        )
        images[f"s{index}"] = Image(torch.from_numpy(image[None]), AFFINE)
    other = AFFINE.copy()
    other[0, 3] += 5.0
    cases["bad"] = (cases["s0"][0].with_data(cases["s0"][0].data, affine=other), cases["s0"][1])
    result = evaluate_images(
        cases, tmp_path / "out", labels=[1, 2], images=images, metrics=["dice", "hd95"]
    )
    assert [(s, k) for s, k, _ in result.problems] == [("bad", "failed")]
    assert "not on the same grid" in result.problems[0][2]
    assert len(result.rows) == 6 and result.rows[0]["dice"] == 1.0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "best: s0" in page and "worst: s2" in page


def test_config_driven_run_and_face_surface(tmp_path):
    make_folders(tmp_path, 2)
    run_dir = tmp_path / "run"
    (run_dir / "predictions").mkdir(parents=True)
    for path in (tmp_path / "pred").iterdir():
        (run_dir / "predictions" / path.name).write_bytes(path.read_bytes())
    config = tmp_path / "experiment.yaml"
    config.write_text(
        f"system:\n  run_dir: {run_dir}\nevaluation:\n  metrics: [dice, nsd]\n  tolerance_mm: 2.0\n"
    )
    assert (
        main(
            [
                "evaluate",
                "-c",
                str(config),
                "--ref",
                str(tmp_path / "ref"),
                "--surface",
                "faces",
                "--workers",
                "1",
                "--set",
                "evaluation.labels=[1]",
            ]
        )
        == 0
    )
    rows = read_rows(run_dir / "evaluation" / "per_case.csv")
    assert list(rows[0])[:5] == ["subject", "label", "label_name", "dice", "nsd"]
    assert {r["label"] for r in rows} == {"1"}
    assert "compactness_ref" in rows[0]  # the descriptive columns follow the metrics


def test_resample_nearest_by_one_voxel_is_a_roll():
    import torch

    from voxelflow.io.image import Image
    from voxelflow.metrics.evaluate import resample_nearest

    _, label = make_phantom((12, 12, 8), seed=3)
    target = Image(torch.from_numpy(label[None]), AFFINE, kind="label")
    moved = AFFINE.copy()
    moved[:3, 3] += AFFINE[:3, 0]  # origin one voxel further along the first axis
    source = Image(torch.from_numpy(label[None]), moved, kind="label")
    out = resample_nearest(source, target)
    # target voxel i sees source voxel i - 1; the first slice falls outside → background
    np.testing.assert_array_equal(out.numpy()[0][1:], label[:-1])
    assert not out.numpy()[0][0].any() and out.same_grid(target)


def test_every_subject_gets_a_row_for_every_label_of_the_dataset(tmp_path):
    make_folders(tmp_path, 2)
    _, label = make_phantom((20, 20, 12), seed=1)
    only_one = np.where(label == 2, 0, label).astype(np.int16)  # label 2 absent from case1
    save(tmp_path / "ref" / "case1.nii.gz", only_one)
    save(tmp_path / "pred" / "case1.nii.gz", only_one)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", workers=1)
    rows = {(r["subject"], r["label"]): r for r in result.rows}
    assert set(rows) == {("case0", 1), ("case0", 2), ("case1", 1), ("case1", 2)}
    absent = rows[("case1", 2)]
    assert (
        math.isnan(absent["dice"]) and math.isnan(absent["hd95"]) and absent["tn"] == 20 * 20 * 12
    )
    assert [s["n_nan"] for s in summarize(result.rows, ["dice"]) if s["label"] == 2] == [1]


def test_2d_png_label_maps(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    ref = np.zeros((30, 40), np.uint8)
    ref[5:15, 10:30] = 1
    pred = np.roll(ref, 2, axis=1)  # 2 pixels along the first array axis of SimpleITK = x
    for folder, array in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "x.png"))
    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", tmp_path / "out", workers=1, metrics=["dice", "hd"]
    )
    assert (
        result.ok
        and result.rows[0]["dice"] == pytest.approx(0.9)
        and result.rows[0]["hd"] == pytest.approx(2.0)
    )
    assert (tmp_path / "out" / "report.html").exists()
