"""A trained run → ``zoo pack`` → ``zoo install`` → ``infer --model`` → ``export``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from voxelflow.cli.main import main


def _dataset(folder: Path, count: int = 3) -> Path:
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir()
    lines = ["subject,image,label"]
    for i in range(count):
        image, label = make_phantom((20, 20, 16), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image, affine), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def test_pack_install_infer_model_export(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    table = _dataset(tmp_path / "data")
    config = {
        "dataset": {"csv": str(table)}, "split": {"validation": 0.34},
        "sampling": {"window": [16, 16, 16], "queue_length": 2},
        "network": {"name": "unet", "channels": [4, 8]},
        "training": {"max_iterations": 2, "batch_size": 1, "num_workers": 0, "validate_every": 2,
                     "checkpoint_every": 2},
        "inference": {"window": [16, 16, 16]},
        "evaluation": {"metrics": ["dice"]},
        "system": {"run_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) == 0
    entry = tmp_path / "entry.zip"
    assert main(["zoo", "pack", str(tmp_path / "run"), "--out", str(entry), "--name", "phantom-seg"]) == 0
    assert main(["zoo", "install", str(entry)]) == 0
    out = tmp_path / "pred"
    assert main(["infer", "--model", "phantom-seg", "--input", str(tmp_path / "data" / "s0_img.nii.gz"),
                 "--out", str(out)]) == 0
    result = nib.load(out / "s0_img_seg.nii.gz")
    source = nib.load(tmp_path / "data" / "s0_img.nii.gz")
    assert result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-5)
    exported = tmp_path / "model.pt2"
    assert main(["export", "phantom-seg", "--format", "torch-export", "--out", str(exported)]) == 0
    assert exported.exists()
