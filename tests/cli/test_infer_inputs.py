"""`voxelflow infer --input FOLDER` searches like a dataset folder and names subjects alike."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

import voxelflow as vf
from voxelflow.cli.main import main


def _trained(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        image, label = vf.make_phantom((12, 12, 8), num_classes=2, seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"case{i}_t1.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / f"case{i}_seg.nii.gz")
    config = {
        "dataset": {
            "folders": {
                "image": {"path": str(folder), "contains": ["_t1"]},
                "label": {"path": str(folder), "contains": ["_seg"]},
            }
        },
        "split": {"validation": 0.34},
        "sampling": {"window": [8, 8, 8], "queue_length": 2},
        "network": {"name": "unet", "channels": [2, 4]},
        "training": {"max_iterations": 1, "batch_size": 1, "num_workers": 0, "checkpoint_every": 1},
        "inference": {"window": [8, 8, 8]},
        "system": {"run_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) == 0
    return path, folder


def _subjects(table: Path) -> list[str]:
    with table.open() as stream:
        return sorted(row["subject"] for row in csv.DictReader(stream))


def test_a_folder_input_follows_the_datasets_folder_rule(tmp_path: Path, monkeypatch) -> None:
    config, folder = _trained(tmp_path)
    out = tmp_path / "pred"
    monkeypatch.chdir(tmp_path)  # a relative folder, as a user types it
    assert main(["infer", "-c", str(config), "--input", folder.name, "--out", str(out)]) == 0
    # label maps in the same folder are not "segmented"; ids are the training table's ids
    assert _subjects(out / "inferred.csv") == ["case0", "case1", "case2"]
    with (out / "inferred.csv").open() as stream:  # per-subject seconds, then its stages
        rows = list(csv.DictReader(stream))
    stages = [f"seconds_{s}" for s in ("read", "preprocess", "window", "invert", "write")]
    assert list(rows[0])[-6:] == ["seconds", *stages]
    for row in rows:  # tiny volumes: invert (no resampling) may round to 0
        parts = {column: float(row[column]) for column in stages}
        assert all(parts[f"seconds_{s}"] > 0 for s in ("read", "window", "write")), parts
        assert min(parts.values()) >= 0 and sum(parts.values()) <= float(row["seconds"]) + 2e-3
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [
        f"case{i}_seg.nii.gz" for i in range(3)
    ]


def test_folder_options_on_the_command_line(tmp_path: Path) -> None:
    config, folder = _trained(tmp_path)
    out = tmp_path / "pred2"
    assert main(["infer", "-c", str(config), "--input", str(folder), "--out", str(out),
                 "--glob", "case1*"]) == 0  # fmt: skip
    assert _subjects(out / "inferred.csv") == ["case1"]  # the dataset's rule still names it
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in folder.glob("case2*"):
        (plain / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "pred3"
    assert main(["infer", "-c", str(config), "--input", str(plain), "--out", str(out),
                 "--not-contains", "_seg", "--contains", "_t1"]) == 0  # fmt: skip
    assert _subjects(out / "inferred.csv") == ["case2"]


def test_outputs_keep_the_inputs_format_unless_told(tmp_path: Path, capsys) -> None:
    config, folder = _trained(tmp_path)
    nrrd = tmp_path / "nrrd"
    nrrd.mkdir()
    image = vf.read_image(folder / "case0_t1.nii.gz")
    vf.write_image(image, nrrd / "case0_t1.nrrd")
    out = tmp_path / "as_nrrd"
    assert main(["infer", "-c", str(config), "--input", str(nrrd), "--out", str(out)]) == 0
    assert [p.name for p in out.glob("*_seg.*")] == ["case0_seg.nrrd"]  # .nrrd in, .nrrd out
    written = vf.read_image(out / "case0_seg.nrrd", kind="label")
    assert written.spatial_shape == image.spatial_shape and np.allclose(
        written.affine, image.affine
    )
    out = tmp_path / "as_nifti"
    assert main(["infer", "-c", str(config), "--input", str(nrrd), "--out", str(out),
                 "--set", "inference.output_format=.nii.gz"]) == 0  # fmt: skip
    assert [p.name for p in out.glob("*_seg.*")] == ["case0_seg.nii.gz"]
    capsys.readouterr()
    assert main(["infer", "-c", str(config), "--input", str(nrrd), "--out", str(tmp_path / "bad"),
                 "--set", "inference.output_format=.jpg2"]) == 2  # fmt: skip
    assert "inference.output_format: expected auto or one of" in capsys.readouterr().err


def test_set_works_with_model_and_refuses_changing_the_model(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    _, folder = _trained(tmp_path)
    entry = tmp_path / "entry.zip"
    assert main(["zoo", "pack", str(tmp_path / "run"), "--out", str(entry), "--name", "tiny"]) == 0
    assert main(["zoo", "install", str(entry)]) == 0
    image = str(folder / "case0_t1.nii.gz")
    out = tmp_path / "model_pred"
    assert main(["infer", "--model", "tiny", "--input", image, "--out", str(out),
                 "--set", "inference.output_format=.nrrd"]) == 0  # fmt: skip
    assert [p.name for p in out.glob("*_seg.*")] == ["case0_t1_seg.nrrd"]  # the override applied
    capsys.readouterr()
    assert main(["infer", "--model", "tiny", "--input", image, "--out", str(tmp_path / "x"),
                 "--set", "network.name=vnet"]) == 2  # fmt: skip
    assert "a zoo entry's model settings are fixed" in capsys.readouterr().err
    with pytest.raises(vf.ConfigError, match="changes the model"):
        vf.Experiment.from_model("tiny", ["preprocessing.spacing=[1,1,1]"])
    assert (
        vf.Experiment.from_model("tiny", ["inference.overlap=0.1"]).config.inference.overlap == 0.1
    )


def test_accumulate_flag_reaches_the_sliding_window(tmp_path: Path, monkeypatch) -> None:
    import torch

    from voxelflow.sampling import grid

    config, folder = _trained(tmp_path)
    seen: list[torch.dtype] = []
    original = grid.sliding_window

    def spy(*args, **kwargs):
        seen.append(kwargs["accumulate_dtype"])
        return original(*args, **kwargs)

    monkeypatch.setattr(grid, "sliding_window", spy)
    out = tmp_path / "half"
    assert main(["infer", "-c", str(config), "--input", str(folder), "--out", str(out),
                 "--glob", "case1*", "--accumulate", "float16"]) == 0  # fmt: skip
    assert seen and set(seen) == {torch.float16}
    assert _subjects(out / "inferred.csv") == ["case1"]
