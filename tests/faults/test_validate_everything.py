"""`voxelflow config validate` (and `train` before it starts) lists every problem at once."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

import voxelflow as vf
from voxelflow.cli.main import main


def _table(folder: Path) -> Path:
    folder.mkdir()
    lines = ["subject,image,label"]
    for i in range(2):
        image, label = vf.make_phantom((16, 16, 8), num_classes=2, seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    lines.append("s9,missing_img.nii.gz,missing_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def test_seven_mistakes_in_different_places_are_reported_together(tmp_path: Path, capsys) -> None:
    config = {
        "dataset": {"csv": str(_table(tmp_path / "data"))},
        "sampling": {"window": [16, 16], "sampler": {"name": "balancedd"}},  # 2 sizes on 3D; typo
        "network": {
            "name": "unet",
            "channels": [4, 8],
            "strides": [1, 3],
        },  # 16 not a multiple of 3
        "loss": {"name": "dice_ce", "foo": 1},
        "optimizer": {"name": "sgd", "lr": "abc"},
        "augmentation": [{"name": "affine", "rotation": 10, "bogus": 2}],
        "training": {"max_iterations": 2, "num_workers": 0},
        "system": {"run_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["config", "validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    for expected in (
        "optimizer.lr: expected a number, got 'abc'",
        "loss.foo: unknown option of loss 'dice_ce'",
        "sampling.sampler.name: unknown sampler 'balancedd'. Did you mean: 'balanced'?",
        "augmentation[0].bogus: unknown option",
        "sampling.window: UNet: expected each spatial size to be a multiple of [3, 3]",
        "sampling.window: expected 3 sizes, got [16, 16]",
        "dataset: 2 file(s) named in the table do not exist: s9/image",
    ):
        assert expected in err, (expected, err)
    assert "7 problem(s)" in err and "Traceback" not in err
    # train runs the same check first and writes nothing
    assert main(["train", "-c", str(path)]) == 2
    assert not (tmp_path / "run").exists()


def test_a_valid_config_with_its_data_passes(tmp_path: Path, capsys) -> None:
    table = _table(tmp_path / "data")
    table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")  # drop the missing row
    config = {
        "dataset": {"csv": str(table)},
        "sampling": {"window": [16, 16, 8]},
        "network": {"name": "unet", "channels": [4, 8]},
        "system": {"run_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["config", "validate", "-c", str(path)]) == 0
    assert "valid (segmentation)" in capsys.readouterr().out
