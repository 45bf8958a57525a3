"""A planned config trains without edits and infers back onto the input grid; inference warns on
inputs far from the training assumptions.

Beating each demo's own baseline with the planned config: tests/plan/test_planned_applications.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelflow.cli.main import main
from voxelflow.config.schema import PreprocessingConfig
from voxelflow.io.image import Image, Subject
from voxelflow.transforms.preprocess import input_assumption_warnings


def test_planned_segmentation_config_trains_unedited_and_infers_on_the_input_grid(tmp_path, capsys, template_anatomy):
    pytest.importorskip("nilearn")
    from voxelflow.demo.data import make_demo_dataset
    from voxelflow.io.readers import read_image
    from voxelflow.io.table import read_csv_table
    from voxelflow.metrics import dice

    data = make_demo_dataset(tmp_path / "data", num_train=4, num_test=2, spacing=4.0)
    out = tmp_path / "plan"
    assert (
        main(
            [
                "plan",
                "--dataset",
                str(data.train_csv),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--gpu-memory",
                "1",
                "--iterations",
                "40",
            ]
        )
        == 0
    )
    assert main(["train", "-c", str(out / "3d_fullres.yaml")]) == 0
    predictions = tmp_path / "predictions"
    assert (
        main(
            [
                "infer",
                "-c",
                str(out / "3d_fullres.yaml"),
                "--input",
                str(data.test_csv),
                "--out",
                str(predictions),
            ]
        )
        == 0
    )
    capsys.readouterr()
    test_rows = read_csv_table(data.test_csv, required=["image", "label"])
    network = {1: [], 2: []}
    for row in test_rows:
        predicted = read_image(predictions / f"{row.name}_seg.nii.gz", kind="label").numpy()[0]
        reference = read_image(row.path("label"), kind="label").numpy()[0]
        assert predicted.shape == reference.shape  # mapped back to the input's own grid
        for label in network:
            network[label].append(float(dice(predicted == label, reference == label)))
    for label in (1, 2):  # grey and white matter learnt in 40 iterations
        assert np.mean(network[label]) > 0.5, network


def test_inputs_far_from_the_training_assumptions_are_named():
    image = Image(torch.full((1, 20, 20, 20), 100.0), np.diag([1.0, 1.0, 1.0, 1.0]))
    subject = Subject("s1", {"image": image})
    config = PreprocessingConfig(
        spacing=[4.0, 4.0, 4.0],
        normalization=[{"name": "ct", "low": -100, "high": 200, "mean": 40, "std": 50}],
    )
    warnings = input_assumption_warnings(subject, config)
    assert any(
        "spacing 1 mm on axis 0 is 4.0× finer than the training spacing 4 mm" in w for w in warnings
    )
    assert any("does not look like CT" in w for w in warnings)
    near = PreprocessingConfig(
        spacing=[2.0, 2.0, 2.0], normalization=[{"name": "zscore", "mask": "body"}]
    )
    assert input_assumption_warnings(subject, near) == []


def test_what_inference_adapts_is_said_per_subject_and_at_install():
    from voxelflow.transforms.preprocess import adaptation_note
    from voxelflow.zoo.entry import InputAssumptions
    from voxelflow.zoo.store import describe_assumptions

    image = Image(torch.zeros((1, 8, 8, 8)), np.diag([-1.0, 1.0, 1.0, 1.0]))  # LAS, 1 mm
    note = adaptation_note(
        Subject("s1", {"image": image}), PreprocessingConfig(spacing=[3.0, 3.0, None])
    )
    assert note == (
        "subject 's1': resampled 1×1×1 → 3×3×1 mm (the model's spacing), reoriented LAS → RAS; "
        "outputs mapped back to its grid"
    )
    assert (
        adaptation_note(Subject("s1", {"image": image}), PreprocessingConfig(orientation=None))
        is None
    )
    inputs = InputAssumptions(
        spacing=[3.0, 3.0, 3.0],
        orientation="RAS",
        intensity="CT in Hounsfield units (air at -1000)",
    )
    assert describe_assumptions(inputs) == (
        "inputs are resampled to 3×3×3 mm; reoriented to RAS; expected to be CT in Hounsfield units "
        "(air at -1000); outputs are mapped back onto each input's own grid"
    )
