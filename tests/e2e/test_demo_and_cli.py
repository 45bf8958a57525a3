"""End to end: the quick demo on the real MNI152 template (nilearn), and train → resume → infer."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from voxelflow.cli.main import main
from voxelflow.demo.run import run_demo

pytest.importorskip("nilearn")


def _fake_real_subject_cache(folder: Path) -> Path:
    """A cache laid out as ``benchmarks/demo_generalisation.py --fetch`` leaves it, holding one
    small phantom under colin27's name (the check's plumbing, not its figures)."""
    from voxelflow.synthetic import make_phantom

    image, label = make_phantom((20, 24, 20), num_classes=3, seed=5)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for sub, name, data in (("subjects", "colin27_t1", image * 1000.0),
                            ("reference", "colin27_brainmask", (label > 0).astype(np.uint8)),
                            ("reference", "colin27_tissue", label.astype(np.uint8))):  # fmt: skip
        (folder / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), folder / sub / f"{name}.nii.gz")
    return folder


@pytest.mark.slow
def test_quick_demo_on_real_mri(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    cache = _fake_real_subject_cache(tmp_path / "real")
    figures = run_demo(tmp_path / "demo", quick=True, real_subjects=cache)
    assert figures["source"] == "mni152"  # the real-data path, not the phantom fallback
    run_dir = figures["run_dir"]
    # the check on real subjects: 2 grids × (skull, stripped), in the report with pictures
    assert [(r["input"], r["spacing"]) for r in figures["real"]] == [
        ("skull", 1.0), ("stripped", 1.0), ("skull", 3.0), ("stripped", 3.0)]  # fmt: skip
    report = (run_dir / "evaluation" / "report.html").read_text()
    section = report[report.index("Real subjects it never saw"):].split("<h2>")[0]
    assert section.count("<img") == 4 and "Atropos" in section
    assert (run_dir / "evaluation" / "per_case.csv").exists()
    assert set(figures["network"]) == {1, 2} and all(0.0 <= v <= 1.0 for v in figures["network"].values())
    out = capsys.readouterr().out
    assert "ONE anatomy" in out and "baseline" in out
    # the demo goes through the plan and trains its 3d_fullres configuration unedited
    plan_dir = tmp_path / "demo" / "plan-quick"
    assert "the plan" in out and (plan_dir / "plan.json").is_file()
    assert figures["config"] == plan_dir / "3d_fullres.yaml"
    assert "# median spacing" in figures["config"].read_text()
    # the demo's model is an installable zoo entry that segments new images
    assert main(["zoo", "install", str(figures["entry"])]) == 0
    from voxelflow.zoo.store import resolve_model

    card = resolve_model("voxelflow-demo-tissue-quick").card
    assert "real_colin27_skull_1mm_outside_ml" in card.metrics and "colin27" in card.checked_on
    test_image = next((tmp_path / "demo" / "data-quick" / "images").glob("test*_t1.nii.gz"))
    assert main(["infer", "--model", "voxelflow-demo-tissue-quick", "--input", str(test_image),
                 "--out", str(tmp_path / "zoo-pred")]) == 0
    assert list((tmp_path / "zoo-pred").glob("*_seg.nii.gz"))


def _phantom_dataset(folder: Path, count: int = 4) -> Path:
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir()
    lines = ["subject,image,label"]
    for i in range(count):
        image, label = make_phantom((24, 24, 20), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image, affine), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image((label * 2).astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def test_train_resume_infer_cli_keeps_geometry_and_label_values(tmp_path: Path) -> None:
    table = _phantom_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    config = {
        "dataset": {"csv": str(table)},
        "split": {"validation": 0.25, "test": 0.25},
        "sampling": {"sampler": {"name": "balanced"}, "window": [16, 16, 16], "queue_length": 4},
        "network": {"name": "unet", "channels": [4, 8]},
        "training": {"max_iterations": 2, "batch_size": 2, "num_workers": 0, "validate_every": 2,
                     "checkpoint_every": 2},
        "inference": {"window": [16, 16, 16], "overlap": 0.25},
        "evaluation": {"metrics": ["dice"]},
        "system": {"run_dir": str(run_dir)},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) == 0
    # resume with more iterations is allowed; a changed network is refused (exit code 2 or 1)
    assert main(["train", "-c", str(path), "--set", "training.max_iterations=3"]) == 0
    assert main(["train", "-c", str(path), "--set", "network.channels=[4,8,16]"]) != 0
    assert main(["infer", "-c", str(path), "--set", "training.max_iterations=3",
                 "--set", "inference.flip_tta=true", "--set", "inference.keep_largest_component=true"]) == 0
    predictions = sorted((run_dir / "predictions").glob("*_seg.nii.gz"))
    assert predictions
    name = predictions[0].name.removesuffix("_seg.nii.gz")
    source = nib.load(tmp_path / "data" / f"{name}_img.nii.gz")
    output = nib.load(predictions[0])
    assert output.shape == source.shape
    np.testing.assert_allclose(output.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(output.dataobj))) <= {0, 2, 4}  # original label values


def test_infer_refuses_output_inside_input_folder(tmp_path: Path) -> None:
    table = _phantom_dataset(tmp_path / "data", count=3)
    config = {
        "dataset": {"csv": str(table)}, "split": {"validation": 0.34},
        "sampling": {"window": [16, 16, 16], "queue_length": 2},
        "network": {"name": "toynet"},
        "training": {"max_iterations": 1, "batch_size": 1, "num_workers": 0, "validate_every": 0},
        "system": {"run_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) == 0
    code = main(["infer", "-c", str(path), "--input", str(tmp_path / "data" / "s0_img.nii.gz"),
                 "--out", str(tmp_path / "data" / "out")])
    assert code == 2
    assert not (tmp_path / "data" / "out").exists()
