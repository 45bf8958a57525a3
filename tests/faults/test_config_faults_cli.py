"""Config mistakes a user meets at `voxelflow train`: one clear line and exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from voxelflow.cli.main import main
from voxelflow.synthetic import make_phantom, phantom_affine


def _dataset(folder: Path, *, with_labels: bool) -> Path:
    folder.mkdir()
    lines = ["subject,image,label" if with_labels else "subject,image"]
    for i in range(3):
        image, label = make_phantom((16, 16, 12), num_classes=2, seed=i)
        affine = phantom_affine((1.0, 1.0, 1.0))
        nib.save(nib.Nifti1Image(image, affine), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz" if with_labels else f"s{i},s{i}_img.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _config(tmp_path: Path, table: Path, **overrides: object) -> Path:
    config: dict[str, object] = {
        "dataset": {"csv": str(table)},
        "split": {"validation": 0.0, "test": 0.0},
        "sampling": {"window": [8, 8, 8], "queue_length": 2},
        "network": {"name": "unet", "channels": [2, 4]},
        "training": {"max_iterations": 1, "batch_size": 1, "num_workers": 0},
        "system": {"run_dir": str(tmp_path / "run")},
        **overrides,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_segmentation_without_label_role_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _dataset(tmp_path / "data", with_labels=False)
    dataset = {"csv": str(table), "inputs": {"image": ["image"]}}
    code = main(["train", "-c", str(_config(tmp_path, table, num_classes=2, dataset=dataset))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "dataset.inputs: application 'segmentation' needs a 'label' role" in err
    assert "Traceback" not in err


def test_window_with_wrong_number_of_sizes_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _dataset(tmp_path / "data", with_labels=True)
    path = _config(tmp_path, table, sampling={"window": [8, 8], "queue_length": 2})
    code = main(["train", "-c", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "sampling.window: expected 3 sizes, got [8, 8]" in err
    assert "Traceback" not in err


def test_run_folder_inside_the_dataset_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _dataset(tmp_path / "data", with_labels=True)
    path = _config(tmp_path, table, system={"run_dir": str(tmp_path / "data" / "run")})
    assert main(["train", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "system.run_dir: expected a folder outside the input folders" in err
    assert not (tmp_path / "data" / "run" / "cache").exists()


def test_run_folder_inside_a_searched_dataset_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _dataset(tmp_path / "data", with_labels=True)
    dataset = {
        "folders": {
            "image": {"path": str(tmp_path / "data"), "glob": "**/*.nii.gz", "contains": ["_img"]},
            "label": {"path": str(tmp_path / "data"), "glob": "**/*.nii.gz", "contains": ["_seg"]},
        }
    }
    path = _config(tmp_path, tmp_path / "data" / "table.csv", dataset=dataset,
                   system={"run_dir": str(tmp_path / "data" / "out" / "run")})
    assert main(["train", "-c", str(path)]) == 2
    assert "system.run_dir" in capsys.readouterr().err


def test_a_4d_image_at_training_names_the_file_and_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _dataset(tmp_path / "data", with_labels=True)
    four_d = np.random.default_rng(0).random((16, 16, 12, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(four_d, phantom_affine((1.0, 1.0, 1.0))), tmp_path / "data" / "s1_img.nii.gz")
    assert main(["train", "-c", str(_config(tmp_path, table))]) == 1
    err = capsys.readouterr().err
    assert "s1_img.nii.gz" in err and "got 2 channels (a 4D file)" in err
    assert "Traceback" not in err


def test_infer_and_pack_name_the_checkpoint_they_use(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = _dataset(tmp_path / "data", with_labels=True)
    path = _config(tmp_path, table, inference={"window": [8, 8, 8]})
    assert main(["train", "-c", str(path)]) == 0
    with caplog.at_level("INFO"):
        assert main(["infer", "-c", str(path)]) == 0
        assert main(["zoo", "pack", str(tmp_path / "run"), "--out", str(tmp_path / "entry.zip")]) == 0
    text = caplog.text
    assert "inference with the best checkpoint" in text and "step 1, no validation metric" in text
    assert "from the best checkpoint (step 1" in text
