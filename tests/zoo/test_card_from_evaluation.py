"""A packed entry's card takes the run's evaluation figures and label names automatically."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

import voxelflow as vf
from voxelflow.cli.main import main
from voxelflow.metrics.evaluate import evaluate_images


def _trained_run(tmp_path: Path, phantom_table, tiny_segmentation_config) -> tuple[Path, Path]:
    """A one-iteration segmentation run on two phantoms: (data folder, run folder)."""
    table = phantom_table(tmp_path / "data")
    folder = table.parent
    run = tmp_path / "run"
    config = tiny_segmentation_config(
        table, run, training={"max_iterations": 1, "checkpoint_every": 1}
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) == 0
    return folder, run


def test_card_metrics_and_label_names_come_from_the_runs_evaluation(
    tmp_path: Path, phantom_table, tiny_segmentation_config
) -> None:
    folder, run = _trained_run(tmp_path, phantom_table, tiny_segmentation_config)
    reference = vf.read_image(folder / "s0_seg.nii.gz", kind="label")
    evaluate_images({"s0": (reference, reference)}, run / "evaluation", metrics=["dice"],
                    label_names={1: "lesion"}, report=False)  # fmt: skip
    entry = tmp_path / "entry.zip"
    assert main(["zoo", "pack", str(run), "--out", str(entry)]) == 0
    with zipfile.ZipFile(entry) as archive:
        card_name = next(n for n in archive.namelist() if n.endswith("model.yaml"))
        text = archive.read(card_name).decode()
    card = json.loads(text) if card_name.endswith(".json") else yaml.safe_load(text)
    assert card["metrics"]["test_dice_lesion"] == 1.0
    labels = {int(k): v for k, v in card["outputs"]["labels"].items()}
    assert labels[1] == "lesion"


def test_float16_entries_are_half_the_size_and_predict_alike(
    tmp_path: Path, phantom_table, tiny_segmentation_config, monkeypatch
) -> None:
    import torch

    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    folder, run = _trained_run(tmp_path, phantom_table, tiny_segmentation_config)
    sizes, predictions = {}, {}
    for precision in ("float32", "float16"):
        entry = tmp_path / f"{precision}.zip"
        assert main(["zoo", "pack", str(run), "--out", str(entry), "--name", f"tiny-{precision}",
                     "--precision", precision]) == 0  # fmt: skip
        with zipfile.ZipFile(entry) as archive:
            weights = next(n for n in archive.namelist() if n.endswith("network.pt"))
            archive.extract(weights, tmp_path / precision)
        tensors = torch.load(tmp_path / precision / weights, weights_only=True)
        sizes[precision] = sum(t.nbytes for t in tensors.values())
        assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {
            getattr(torch, precision)
        }
        assert main(["zoo", "install", str(entry)]) == 0
        out = tmp_path / f"pred-{precision}"
        assert main(["infer", "--model", f"tiny-{precision}", "--input",
                     str(folder / "s0_img.nii.gz"), "--out", str(out)]) == 0  # fmt: skip
        predictions[precision] = np.asanyarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    assert sizes["float16"] < 0.55 * sizes["float32"]  # the weights' bytes halve
    assert (predictions["float16"] == predictions["float32"]).mean() > 0.99
