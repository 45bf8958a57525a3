"""``voxelflow plan`` as a user runs it: plan.json, commented configs that validate, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment, read_yaml


def _plan(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_writes_plan_json_and_commented_configs_that_validate(make_dataset, tmp_path, capsys):
    table = make_dataset(3, spacings=[(0.8, 0.8, 4.0), (0.8, 0.8, 5.0), (0.7, 0.7, 4.0)])
    out = tmp_path / "plan"
    code, stdout, _ = _plan(capsys, "--dataset", str(table), "--out", str(out))
    assert code == 0, stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["fingerprint"] == "fingerprint.json" and (out / "fingerprint.json").is_file()
    names = [c["name"] for c in plan["configurations"]]
    assert names[:2] == ["2d", "3d_fullres"]
    for entry in plan["configurations"]:
        assert set(entry) >= {
            "name",
            "spacing",
            "window",
            "batch_size",
            "strides",
            "normalization",
            "config",
        }
        assert entry["normalization"] == [{"channel": 0, "scheme": "zscore"}]
        experiment = load_experiment(out / entry["config"])  # complete and valid as written
        assert list(experiment.sampling.window) == entry["window"]
        assert experiment.training.batch_size == entry["batch_size"]
    two_d = plan["configurations"][0]
    assert two_d["window"][2] == 1 and two_d["spacing"][2] is None
    full = plan["configurations"][1]
    assert full["spacing"] == pytest.approx([0.8, 0.8, 4.0])
    text = (out / "3d_fullres.yaml").read_text()
    assert "# median spacing 0.8×0.8×4" in text and "&id" not in text
    assert "# window [" in text and "# U-Net of" in text
    assert "3d_fullres" in stdout and "window" in stdout


def test_ct_named_in_dataset_json_or_guessed_with_a_warning(tmp_path, make_dataset, capsys, caplog):
    table = make_dataset(2, ct=True)
    code, _, _ = _plan(capsys, "--dataset", str(table), "--out", str(tmp_path / "guess"))
    assert code == 0
    plan = json.loads((tmp_path / "guess" / "plan.json").read_text())
    assert plan["configurations"][1]["normalization"] == [{"channel": 0, "scheme": "ct"}]
    assert any("looks like CT" in note for note in plan["notes"])
    code, _, _ = _plan(
        capsys, "--dataset", str(table), "--out", str(tmp_path / "named"), "--modality", "0=CT"
    )
    named = json.loads((tmp_path / "named" / "plan.json").read_text())
    assert named["notes"] == []
    step = read_yaml(tmp_path / "named" / "3d_fullres.yaml")["preprocessing"]["normalization"][0]
    # clipped to the lesion's HU percentiles (the lesion is ~120 ± 10 HU)
    assert step["name"] == "ct" and 80 < step["low"] < step["high"] < 160


def test_single_subject_plans_and_says_so(make_dataset, tmp_path, capsys):
    code, stdout, _ = _plan(capsys, "--dataset", str(make_dataset(1)), "--out", str(tmp_path / "p"))
    assert code == 0
    assert "statistics are from one subject" in stdout
    assert read_yaml(tmp_path / "p" / "3d_fullres.yaml")["split"]["validation"] == 0.0


def test_no_foreground_anywhere_is_refused(make_dataset, tmp_path, capsys):
    table = make_dataset(2)
    for name in ("case0", "case1"):
        path = table.parent / f"{name}_label.nii.gz"
        nib.save(
            nib.Nifti1Image(np.zeros((40, 36, 12), np.uint8), np.diag([0.8, 0.8, 4.0, 1])), path
        )
    code, _, err = _plan(capsys, "--dataset", str(table), "--out", str(tmp_path / "p"))
    assert code == 1 and "no foreground label in any subject" in err


def test_memory_budget_too_small_gives_the_minimum(make_dataset, tmp_path, capsys):
    code, _, err = _plan(
        capsys,
        "--dataset",
        str(make_dataset(2)),
        "--out",
        str(tmp_path / "p"),
        "--device",
        "cpu",
        "--gpu-memory",
        "0.01",
    )
    assert code == 2
    assert "too small for the smallest sensible window" in err and "needs" in err
    assert "Traceback" not in err


def test_output_inside_the_dataset_folder_is_refused(make_dataset, capsys):
    table = make_dataset(2)
    code, _, err = _plan(capsys, "--dataset", str(table), "--out", str(table.parent / "plan"))
    assert code == 2 and "plan --out: expected a folder outside the input folders" in err


def test_a_folder_of_scans_pairs_images_and_labels_by_name(make_dataset, tmp_path, capsys):
    table = make_dataset(2)
    table.unlink()
    code, stdout, _ = _plan(capsys, "--dataset", str(table.parent), "--out", str(tmp_path / "p"))
    assert code == 0, stdout
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["dataset"]["subjects"] == 2


def test_python_api_returns_the_plan(make_dataset, tmp_path):
    import voxelflow

    plan = voxelflow.plan(
        dataset=make_dataset(2),
        out=tmp_path / "api",
        device="cpu",
        gpu_memory=2.0,
        progress=False,
        workers=1,
    )
    assert [c.name for c in plan.configurations][:2] == ["2d", "3d_fullres"]
    assert Path(tmp_path / "api" / "3d_fullres.yaml").is_file()
    assert plan.configuration("3d_fullres").config["training"]["amp"] == "off"
    # on a CPU the network's threads get every core: windows are cut in the main process
    assert plan.configuration("3d_fullres").config["training"]["num_workers"] == 0
    assert "training:\n" in (tmp_path / "api" / "3d_fullres.yaml").read_text()
    assert "0 on CPU" in (tmp_path / "api" / "3d_fullres.yaml").read_text()
