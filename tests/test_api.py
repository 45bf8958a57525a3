"""The Python API: from_dict → train (tiny) → infer in memory (geometry kept) → evaluate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

import voxelflow as vf
from voxelflow.errors import ConfigError, DataError, GeometryError, ShapeError

SHAPE = (16, 14, 10)
SPACING = (1.0, 1.2, 2.0)


def _write_dataset(folder: Path, count: int = 3) -> Path:
    """Phantoms (labels 0, 2, 4) on a rotated, anisotropic grid and their CSV table."""
    folder.mkdir(parents=True)
    lines = ["subject,image,label"]
    for i in range(count):
        image, label = vf.make_phantom(SHAPE, num_classes=3, seed=i)
        affine = vf.phantom_affine(SPACING)
        nib.save(nib.Nifti1Image(image, affine), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image((label * 2).astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _config(table: Path, run_dir: Path) -> dict:
    return {
        "dataset": {"csv": str(table)},
        "split": {"validation": 0.34},
        "sampling": {"window": [8, 8, 8], "queue_length": 2},
        "network": {"name": "unet", "channels": [2, 4]},
        "training": {
            "max_iterations": 1,
            "batch_size": 1,
            "num_workers": 0,
            "validate_every": 1,
            "checkpoint_every": 1,
        },
        "inference": {"window": [8, 8, 8]},
        "evaluation": {"metrics": ["dice", "jaccard"]},
        "system": {"run_dir": str(run_dir), "device": "cpu"},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[vf.Experiment, Path]:
    root = tmp_path_factory.mktemp("api")
    table = _write_dataset(root / "data")
    experiment = vf.Experiment.from_dict(_config(table, root / "unused"))
    metrics = experiment.train(root / "run")
    assert "dice" in metrics and 0.0 <= metrics["dice"] <= 1.0
    assert experiment.run_dir == root / "run"
    return experiment, root


# ----------------------------------------------------------------------------- the package


def test_import_is_light() -> None:
    code = "import sys, voxelflow; print(sorted({'torch', 'numpy', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # heavy modules load on first use of a name that needs them


@pytest.mark.slow
def test_all_lists_every_export_and_each_resolves() -> None:
    errors = {n for n in vf.__all__ if n.endswith("Error")}
    assert set(vf.__all__) == errors | set(vf._EXPORTS) | {"__version__"}
    assert len(vf.__all__) == len(set(vf.__all__))
    for name in vf.__all__:
        assert getattr(vf, name) is not None, name
    assert vf.ExperimentConfig is vf.Experiment.from_dict({}).config.__class__
    assert vf.Experiment is __import__("voxelflow.api").api.Experiment
    with pytest.raises(AttributeError, match="no attribute 'Experimnt'"):
        vf.Experimnt  # noqa: B018


# ----------------------------------------------------------------------------- building


def test_from_yaml_applies_overrides_and_from_dict_checks_keys(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"training": {"max_iterations": 3}}))
    experiment = vf.Experiment.from_yaml(path, ["training.batch_size=4"])
    assert experiment.config.training.max_iterations == 3
    assert experiment.config.training.batch_size == 4
    assert experiment.run_dir == Path(experiment.config.system.run_dir)
    with pytest.raises(ConfigError, match="trainig"):
        vf.Experiment.from_dict({"trainig": {"max_iterations": 3}})
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        vf.Experiment.from_run(tmp_path)


def test_infer_before_training_names_the_run_folder(tmp_path: Path) -> None:
    experiment = vf.Experiment.from_dict({"system": {"run_dir": str(tmp_path / "none")}})
    image = vf.Image(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ConfigError, match="train\\(\\) first"):
        experiment.infer(image)


# ----------------------------------------------------------------------------- inference


@pytest.mark.slow
def test_infer_in_memory_keeps_geometry_and_writes_nothing(trained, tmp_path) -> None:
    experiment, root = trained
    image = vf.read_image(root / "data" / "s0_img.nii.gz")
    files_before = sorted(p for p in root.rglob("*"))
    predictions = experiment.infer(
        {
            "as_image": image,
            "as_numpy": (image.numpy()[0], image.affine),
            "as_tensor": (image.data, torch.as_tensor(image.affine)),
            "as_subject": vf.Subject("ignored", {"image": image}),
        }
    )
    assert sorted(p for p in root.rglob("*")) == files_before  # no file written
    assert [p.name for p in predictions] == ["as_image", "as_numpy", "as_tensor", "ignored"]
    first = predictions[0].images["seg"].numpy()
    for prediction in predictions:
        seg = prediction.images["seg"]
        assert seg.spatial_shape == SHAPE
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-6)
        assert set(np.unique(seg.numpy())) <= {0, 2, 4}  # the original label values
        np.testing.assert_array_equal(seg.numpy(), first)  # same input, same answer
    single = experiment.infer(image)
    assert [p.name for p in single] == ["s0_img"]  # named after the file


@pytest.mark.slow
def test_infer_files_matches_in_memory_and_from_run(trained, tmp_path) -> None:
    experiment, root = trained
    table = experiment.infer_files(root / "data" / "s1_img.nii.gz", tmp_path / "out")
    written = nib.load(tmp_path / "out" / "s1_img_seg.nii.gz")
    assert table.name == "inferred.csv" and "s1_img" in table.read_text()
    reloaded = vf.Experiment.from_run(root / "run")
    in_memory = reloaded.infer(vf.read_image(root / "data" / "s1_img.nii.gz"))[0].images["seg"]
    np.testing.assert_array_equal(np.asarray(written.dataobj), in_memory.numpy()[0])
    np.testing.assert_allclose(written.affine, in_memory.affine, atol=1e-5)


def test_infer_refuses_wrong_inputs(tmp_path: Path) -> None:
    experiment = vf.Experiment.from_dict({"system": {"run_dir": str(tmp_path)}})
    with pytest.raises(ShapeError, match="expected 1 image channel"):
        experiment.infer((np.zeros((2, 8, 8, 8), np.float32), np.eye(4)))
    with pytest.raises(ShapeError, match="expected an array"):
        experiment.infer((np.zeros((8, 8), np.float32), np.eye(4)))
    with pytest.raises(DataError, match="infer_files"):
        experiment.infer(["scan.nii.gz"])
    with pytest.raises(DataError, match="expected an Image"):
        experiment.infer([np.zeros((4, 4, 4))])  # an array without its affine


# ----------------------------------------------------------------------------- evaluation


def _masks() -> tuple[vf.Image, vf.Image]:
    """Reference: 8 voxels of label 1. Prediction: 6 of them plus 2 outside → Dice 12/16."""
    affine = np.diag([1.0, 1.5, 2.0, 1.0])
    ref = np.zeros((1, 6, 5, 4), np.int16)
    ref[0, 1:3, 1:3, 1:3] = 1
    pred = ref.copy()
    pred[0, 1, 1, 1:3] = 0
    pred[0, 4, 4, 0:2] = 1
    return vf.Image(torch.from_numpy(pred), affine, kind="label"), vf.Image(
        torch.from_numpy(ref), affine, kind="label"
    )


def test_evaluate_takes_one_subject_and_refuses_a_list_with_other_items() -> None:
    experiment = vf.Experiment.from_dict({"evaluation": {"metrics": ["dice"]}})
    pred, ref = _masks()
    rows = experiment.evaluate({"case": pred}, vf.Subject("case", {"image": ref, "label": ref}))
    assert [row["subject"] for row in rows] == ["case"]
    with pytest.raises(DataError, match="expected a list of Predictions or Subjects"):
        experiment.evaluate({"case": pred}, [vf.Subject("case", {"label": ref}), ref])


def test_evaluate_in_memory_hand_computed() -> None:
    experiment = vf.Experiment.from_dict({"evaluation": {"metrics": ["dice", "jaccard"]}})
    pred, ref = _masks()
    rows = experiment.evaluate({"case": pred}, [vf.Subject("case", {"image": ref, "label": ref})])
    assert len(rows) == 1 and rows[0]["subject"] == "case" and rows[0]["label"] == 1
    assert rows[0]["dice"] == pytest.approx(12 / 16)  # 2·6 / (8 + 8)
    assert rows[0]["jaccard"] == pytest.approx(6 / 10)  # 6 / (8 + 8 - 6)
    frame = experiment.evaluate({"case": pred}, {"case": ref}, as_dataframe=True)
    assert list(frame["dice"]) == [rows[0]["dice"]]


def test_evaluate_folders_and_out_dir(tmp_path: Path) -> None:
    pred, ref = _masks()
    for folder, image in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        vf.write_image(image, tmp_path / folder / "case.nii.gz")
    experiment = vf.Experiment.from_dict({"evaluation": {"metrics": ["dice"]}})
    rows = experiment.evaluate(tmp_path / "pred", str(tmp_path / "ref"), out_dir=tmp_path / "ev")
    assert rows[0]["dice"] == pytest.approx(0.75)
    assert (tmp_path / "ev" / "per_case.csv").is_file()


def test_evaluate_refuses_unmatched_subjects_and_grids() -> None:
    experiment = vf.Experiment.from_dict({})
    pred, ref = _masks()
    with pytest.raises(DataError, match="no reference for \\['a'\\]"):
        experiment.evaluate({"a": pred}, {"b": ref})
    shifted = ref.with_data(ref.data, affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises((GeometryError, DataError), match=r"grid|spacing|affine"):
        experiment.evaluate({"a": pred}, {"a": shifted})
    with pytest.raises(ConfigError, match="expected application"):
        vf.Experiment.from_dict({"application": "gan"}).evaluate({"a": pred}, {"a": ref})


@pytest.mark.slow
def test_train_infer_evaluate_end_to_end(trained) -> None:
    experiment, root = trained
    subjects = [
        vf.Subject(
            f"s{i}",
            {
                "image": vf.read_image(root / "data" / f"s{i}_img.nii.gz"),
                "label": vf.read_image(root / "data" / f"s{i}_seg.nii.gz", kind="label"),
            },
        )
        for i in range(2)
    ]
    predictions = experiment.infer(subjects)
    rows = experiment.evaluate(predictions, subjects, labels=[2, 4])
    assert [(r["subject"], r["label"]) for r in rows] == [
        ("s0", 2),
        ("s0", 4),
        ("s1", 2),
        ("s1", 4),
    ]
    for row, (subject, label) in zip(rows, [(0, 2), (0, 4), (1, 2), (1, 4)]):
        seg = predictions[subject].images["seg"].numpy() == label
        ref = subjects[subject]["label"].numpy() == label
        expected = (
            2 * (seg & ref).sum() / (seg.sum() + ref.sum()) if seg.sum() + ref.sum() else np.nan
        )
        np.testing.assert_allclose(row["dice"], expected)  # independent numpy Dice


def test_python_api_page_lists_every_public_name() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "python-api.md").read_text(
        encoding="utf-8"
    )
    table = page.split("## Every public name", 1)[1]
    missing = [name for name in vf.__all__ if f"`{name}`" not in table]
    assert not missing, f"docs/python-api.md does not list {missing}"


def test_evaluate_regression_in_memory_hand_computed() -> None:
    experiment = vf.Experiment.from_dict({"application": "regression"})
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    reference = vf.Image(torch.arange(12.0**3).view(1, 12, 12, 12), affine)  # SSIM needs ≥ 11
    offsets = torch.tensor([1.0, -1.0]).repeat(6**3 * 4).view(1, 12, 12, 12)
    prediction = reference.with_data(reference.data + offsets)
    subject = vf.Subject("a", {"image": reference, "target": reference})
    rows = experiment.evaluate({"a": prediction}, [subject])
    assert rows[0]["subject"] == "a"
    assert rows[0]["mae"] == pytest.approx(1.0)  # every voxel off by exactly 1
    assert rows[0]["me"] == pytest.approx(0.0)  # +1 and -1 alternate
    assert rows[0]["rmse"] == pytest.approx(1.0)


@pytest.mark.slow
def test_zoo_entry_infers_in_memory_like_its_run(trained, tmp_path, monkeypatch) -> None:
    experiment, root = trained
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    vf.pack_run(root / "run", out=tmp_path / "entry.zip", name="api-phantom")
    vf.install_model(tmp_path / "entry.zip")
    from_zoo = vf.Experiment.from_model("api-phantom")
    image = vf.read_image(root / "data" / "s2_img.nii.gz")
    zoo_seg = from_zoo.infer(image)[0].images["seg"]
    run_seg = experiment.infer(image)[0].images["seg"]
    np.testing.assert_array_equal(zoo_seg.numpy(), run_seg.numpy())
    np.testing.assert_allclose(zoo_seg.affine, image.affine, atol=1e-6)


def test_version_matches_pyproject() -> None:
    import re

    from voxelflow.version import __version__

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None and vf.__version__ == __version__ == declared.group(1)
