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


def test_fine_tune_from_run_to_new_label_set_with_frozen_encoder(tmp_path: Path) -> None:
    import torch

    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint

    table = _dataset(tmp_path / "data")  # labels 0, 1, 2
    base = {
        "split": {"validation": 0.34},
        "sampling": {"window": [16, 16, 16], "queue_length": 2},
        "network": {"name": "unet", "channels": [4, 8]},
        "training": {"max_iterations": 2, "batch_size": 1, "num_workers": 0, "validate_every": 0,
                     "checkpoint_every": 2},
        "evaluation": {"metrics": ["dice"]},
    }
    first = {**base, "dataset": {"csv": str(table)}, "system": {"run_dir": str(tmp_path / "a")}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(first))
    assert main(["train", "-c", str(tmp_path / "a.yaml")]) == 0
    # a new label set: 0/1 only (two classes), fine-tuned from run a with the encoder frozen
    binary = tmp_path / "binary"
    binary.mkdir()
    for i in range(3):
        seg = nib.load(tmp_path / "data" / f"s{i}_seg.nii.gz")
        data = (np.asarray(seg.dataobj) > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(data, seg.affine), binary / f"s{i}_seg.nii.gz")
    rows = ["subject,image,label"] + [
        f"s{i},{tmp_path / 'data' / f's{i}_img.nii.gz'},{binary / f's{i}_seg.nii.gz'}" for i in range(3)]
    (binary / "table.csv").write_text("\n".join(rows) + "\n")
    second = {**base, "dataset": {"csv": str(binary / "table.csv")},
              "system": {"run_dir": str(tmp_path / "b")},
              "transfer": {"init_from": {"source": str(tmp_path / "a")}, "freeze": ["encoder.*"]}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(second))
    assert main(["train", "-c", str(tmp_path / "b.yaml")]) == 0
    a = load_checkpoint(find_checkpoint(tmp_path / "a", which="last"))["modules"]["network"]
    b = load_checkpoint(find_checkpoint(tmp_path / "b", which="last"))["modules"]["network"]
    encoder = [k for k in a if k.startswith("encoder.") and k.endswith("weight")]
    assert encoder and all(torch.equal(a[k], b[k]) for k in encoder)  # loaded, then frozen
    assert a["heads.0.weight"].shape[0] == 3 and b["heads.0.weight"].shape[0] == 2  # new head
