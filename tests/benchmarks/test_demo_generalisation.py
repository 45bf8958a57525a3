"""The generalisation check (``voxelflow.demo.generalisation``, run by ``voxelflow demo`` and
``benchmarks/demo_generalisation.py``) on tiny hand-made volumes.

No real subject, no ANTs and no model: Dice counted inside the brain mask only, the tissue
volume predicted outside the mask in mL, the resampling of images, labels and masks, the
brain-normalised baseline and the table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from voxelflow.demo import generalisation as g

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_generalisation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demo_generalisation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_dice_counts_only_voxels_inside_the_mask() -> None:
    reference = np.zeros((4, 4, 1), dtype=np.uint8)
    reference[:2] = 1  # 8 GM voxels
    prediction = reference.copy()
    prediction[2, 0, 0] = 1  # a wrong GM voxel inside the mask
    prediction[3, :, 0] = 1  # 4 GM voxels outside the mask: do not count
    mask = np.ones_like(reference, dtype=bool)
    mask[3] = False
    # inside the mask: prediction 9 GM, reference 8, overlap 8
    assert g.dice_inside(prediction, reference, mask, 1) == pytest.approx(16 / 17)
    assert g.dice_inside(prediction, reference, mask, 2) == 1.0  # absent from both
    prediction[0, 0, 0] = 2
    assert g.dice_inside(prediction, reference, mask, 2) == 0.0


def test_outside_volume_in_ml() -> None:
    prediction = np.zeros((10, 10, 10), dtype=np.uint8)
    mask = np.zeros_like(prediction, dtype=bool)
    mask[:5] = True
    prediction[:5] = 1  # inside: not counted
    prediction[5:7] = 2  # 200 voxels outside
    prediction[7, 0, 0] = 1  # one more
    affine_3mm = np.diag([3.0, 3.0, 3.0, 1.0])  # 27 mm³ a voxel
    assert g.voxel_volume_ml(affine_3mm) == pytest.approx(0.027)
    assert g.outside_volume_ml(prediction, mask, affine_3mm) == pytest.approx(201 * 0.027)
    # an oblique, flipped 1 mm grid: still 1 mm³ a voxel
    angle = np.deg2rad(20)
    rotation = np.array(
        [[-np.cos(angle), -np.sin(angle), 0], [np.sin(angle), -np.cos(angle), 0], [0, 0, 1]]
    )
    oblique = np.eye(4)
    oblique[:3, :3] = rotation
    assert g.outside_volume_ml(prediction, mask, oblique) == pytest.approx(0.201)


def test_resampling_keeps_extent_and_axes() -> None:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 5.0)
    shape, new_affine, step = g.resampled_grid((12, 9, 6), affine, 3.0)
    assert shape == (4, 3, 2) and np.allclose(step, 3.0)
    assert np.allclose(np.diag(new_affine)[:3], 3.0)
    # the first 3 mm voxel's centre is the centre of the first three 1 mm voxels
    assert np.allclose(new_affine[:3, 3], (-9.0, 21.0, 6.0))

    labels = np.zeros((12, 9, 6), dtype=np.uint8)
    labels[:6] = 1
    labels[6:] = 2
    coarse, _ = g.resample_labels(labels, affine, 3.0)
    assert coarse.shape == (4, 3, 2)
    assert (coarse[:2] == 1).all() and (coarse[2:] == 2).all()
    image, _ = g.resample_image(labels.astype(np.float32), affine, 3.0)
    assert image[0].mean() == pytest.approx(1.0) and image[-1].mean() == pytest.approx(2.0)
    mask, _ = g.resample_mask(labels == 1, affine, 3.0)
    assert mask[:2].all() and not mask[2:].any()
    same, same_affine = g.resample_labels(labels, affine, 1.0)  # no-op at the same spacing
    assert (same == labels).all() and np.allclose(same_affine, affine)


def test_case_figures_and_table() -> None:
    reference = np.zeros((6, 6, 6), dtype=np.uint8)
    reference[1:5, 1:5, 1:5] = 1
    reference[2:4, 2:4, 2:4] = 2
    mask = np.zeros_like(reference, dtype=bool)
    mask[1:5, 1:5, 1:5] = True
    prediction = reference.copy()
    prediction[0] = 1  # 36 voxels of "grey matter" in the skull
    figures = g.case_figures(prediction, reference, mask, np.eye(4), baseline=reference)
    assert figures["dice_grey_matter"] == 1.0 and figures["dice_white_matter"] == 1.0
    assert figures["outside_ml"] == pytest.approx(0.036)
    assert figures["baseline_grey_matter"] == 1.0
    rows = [
        {"subject": s, "input": "skull", "spacing": 1.0, "seconds": 1.0, **figures}
        for s in ("a", "b")
    ]
    rows[1]["dice_white_matter"] = 0.5  # below the baseline
    table = g.format_table(rows)
    assert "mean" in table and "0.750" in table
    assert table.splitlines()[-1].endswith("1 ['b']")


def test_brain_normalised_baseline_ignores_what_lies_outside_the_brain() -> None:
    rng = np.random.default_rng(0)
    label = np.zeros((16, 16, 16), dtype=np.uint8)
    label[3:13, 3:13, 3:13] = 1
    label[6:10, 6:10, 6:10] = 2
    image = np.choose(label, [10.0, 60.0, 100.0]) + rng.normal(0, 2, label.shape)
    baseline = g.fit_brain_baseline([image], [label])
    mask = g.training_brain_mask(label)
    assert mask[3:13, 3:13, 3:13].all() and not mask[0].any()
    # the same brain at another scale, with a bright "skull" outside the mask: same labels inside
    scaled = image * 7.0
    scaled[0] = 5000.0
    predicted = g.baseline_predict(baseline, scaled, mask)
    assert (predicted[~mask] == 0).all()
    assert g.dice_inside(predicted, label, mask, 1) > 0.95
    assert g.dice_inside(predicted, label, mask, 2) > 0.95


def test_sources_are_pinned() -> None:
    for source in g.SOURCES:
        assert source.version and len(source.sha256) == 64
        assert source.registry in ("debian", "pypi")
    assert any(s.mask_member for s in g.SOURCES)  # the atlas for the other masks


def test_missing_subjects_are_skipped_with_the_fetch_command(bench, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit, match="--fetch"):
        bench.run_benchmark("voxelflow-demo-tissue", tmp_path, tmp_path / "work", [3.0])
    assert "skipped colin27: not fetched" in capsys.readouterr().err


def test_check_runs_every_case_and_reports_it(tmp_path: Path) -> None:
    """A fake cache with one subject: 2 grids × (skull, stripped) cases, a picture each, the
    report section, the card's figures; a perfect predictor gives Dice 1 and nothing outside."""
    pytest.importorskip("matplotlib")
    import nibabel as nib

    label = np.zeros((12, 12, 12), dtype=np.uint8)
    label[2:10, 2:10, 2:10] = 1
    label[4:8, 4:8, 4:8] = 2
    image = np.choose(label, [300.0, 600.0, 900.0]).astype(np.float32)
    image[0] = 700.0  # a bright "scalp" outside the brain
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    (tmp_path / "subjects").mkdir()
    (tmp_path / "reference").mkdir()
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "subjects" / "colin27_t1.nii.gz")
    nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), affine),
             tmp_path / "reference" / "colin27_brainmask.nii.gz")  # fmt: skip
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "reference" / "colin27_tissue.nii.gz")
    subjects, missing = g.cached_subjects(tmp_path)
    assert [s.source.subject for s in subjects] == ["colin27"] and len(missing) == 2
    baseline = g.fit_brain_baseline([image], [label])
    cases = g.make_cases(subjects, baseline, spacings=(2.0, 4.0))
    assert [c.name for c in cases] == ["colin27_skull_2mm", "colin27_stripped_2mm",
                                       "colin27_skull_4mm", "colin27_stripped_4mm"]  # fmt: skip
    assert cases[1].image[0].max() == 0.0 and cases[0].image[0].max() > 0.0
    by_name = {c.name: c for c in cases}

    def perfect(path: Path, out: Path) -> np.ndarray:
        return by_name[path.name.removesuffix(".nii.gz")].reference

    rows = g.run_check(cases, perfect, tmp_path / "work", pictures=tmp_path / "pictures", log=str)
    assert all(r["dice_grey_matter"] == 1.0 and r["outside_ml"] == 0.0 for r in rows)
    pictures = sorted((tmp_path / "pictures").glob("*.png"))
    assert len(pictures) == 4 and pictures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = g.report_section(rows, [(p.stem, p.read_bytes()) for p in pictures])
    assert section.count("<img") == 4 and "mricron-data" in section and "Atropos" in section
    metrics = g.card_metrics(rows)
    assert metrics["real_colin27_skull_4mm_outside_ml"] == 0.0
    assert metrics["real_colin27_stripped_2mm_dice_white_matter"] == 1.0


def test_baseline_reads_the_run_folders_training_table(bench, tmp_path: Path) -> None:
    import nibabel as nib

    data = tmp_path / "data"
    data.mkdir()
    label = np.zeros((6, 6, 6), dtype=np.uint8)
    label[1:5, 1:5, 1:5] = 1
    nib.save(nib.Nifti1Image(label.astype(np.float32) * 50, np.eye(4)), data / "a_t1.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), data / "a_tissue.nii.gz")
    (data / "train.csv").write_text("subject,image,label\na,a_t1.nii.gz,a_tissue.nii.gz\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("dataset:\n  csv: ../data/train.csv\n")
    subjects = bench.demo_training_subjects(tmp_path / "cache", str(run))
    assert len(subjects) == 1 and (subjects[0][1] == label).all()
    assert not (tmp_path / "cache").exists()  # no demo dataset generated


def test_inference_options_reach_voxelflow_infer(bench, tmp_path: Path, monkeypatch) -> None:
    """``--set KEY=VALUE`` (e.g. inference.keep_largest_component=true) goes to every
    ``voxelflow infer`` call, after the model, once per option."""
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        (tmp_path / "inferred.csv").write_text("subject,prediction\ncase,case_seg.nii.gz\n")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    options = ["inference.keep_largest_component=true", "inference.flip_tta=true"]
    assert bench.infer("voxelflow-demo-tissue", tmp_path, tmp_path, options) == {
        "case": Path("case_seg.nii.gz")
    }
    (command,) = calls
    model = command.index("--model")
    assert command[model + 1] == "voxelflow-demo-tissue"
    assert command[model + 2 :] == ["--set", options[0], "--set", options[1]]
