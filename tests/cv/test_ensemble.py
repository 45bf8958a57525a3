"""``voxelflow infer --folds all``: the fold models' probabilities averaged before the argmax."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from cv_data import segmentation_config, write_config, write_phantoms

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.cv.ensemble import check_compatible, refuse_application
from voxelflow.errors import ConfigError

TTA = ["--set", "inference.flip_tta=true"]  # flip-TTA runs inside each member


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    table = write_phantoms(tmp_path / "data", 8)
    config = segmentation_config(table, tmp_path / "run", split={"test": 0.25})
    path = write_config(tmp_path / "exp.yaml", config)
    assert main(["train", "-c", str(path), "--fold", "all"]) == 0
    return path


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_ensemble_equals_the_mean_of_the_members_probabilities(
    trained: Path, tmp_path: Path
) -> None:
    root = Path(load_experiment(trained).system.run_dir)
    assert (
        main(
            [
                "infer",
                "-c",
                str(trained),
                "--folds",
                "all",
                "--set",
                "inference.save_probabilities=true",
                *TTA,
            ]
        )
        == 0
    )
    out = root / "predictions_ensemble"
    with open(out / "inferred.csv", newline="") as handle:
        subjects = [row["subject"] for row in csv.DictReader(handle)]
    split = {}
    with open(root / "split.csv", newline="") as handle:
        split = {row["subject"]: row["split"] for row in csv.DictReader(handle)}
    assert sorted(subjects) == sorted(s for s, v in split.items() if v == "test") and subjects
    # independent reference: each fold through the ordinary single-model inference
    probabilities, singles = [], {}
    for k in range(3):
        fold_out = tmp_path / f"single_{k}"
        assert (
            main(
                [
                    "infer",
                    "-c",
                    str(root / f"fold_{k}" / "config.yaml"),
                    "--out",
                    str(fold_out),
                    "--set",
                    "inference.save_probabilities=true",
                    *TTA,
                ]
            )
            == 0
        )
        probabilities.append({s: _load(fold_out / f"{s}_prob.nii.gz") for s in subjects})
        singles[f"fold_{k}"] = {s: _load(fold_out / f"{s}_seg.nii.gz") for s in subjects}
    for subject in subjects:
        mean = np.mean([p[subject] for p in probabilities], axis=0)
        np.testing.assert_allclose(_load(out / f"{subject}_prob.nii.gz"), mean, atol=1e-5)
        expected = np.array([0, 2, 4])[np.argmax(mean, axis=-1)]  # label values of the phantoms
        seg = _load(out / f"{subject}_seg.nii.gz")
        clear = np.sort(mean, axis=-1)[..., -1] - np.sort(mean, axis=-1)[..., -2] > 1e-4
        np.testing.assert_array_equal(seg[clear], expected[clear])
        source = nib.load(root.parent / "data" / f"{subject}_img.nii.gz")
        assert seg.shape == source.shape  # original geometry
        np.testing.assert_allclose(
            nib.load(out / f"{subject}_seg.nii.gz").affine, source.affine, atol=1e-5
        )


def test_ensemble_applies_the_cv_postprocessing(trained: Path) -> None:
    root = Path(load_experiment(trained).system.run_dir)
    (root / "cv").mkdir()
    decision = {
        "classes": {
            "2": {"keep_largest_component": True, "min_component_volume_mm3": 0.0},
            "4": {"keep_largest_component": True, "min_component_volume_mm3": 0.0},
        }
    }
    (root / "cv" / "postprocessing.json").write_text(json.dumps(decision))
    assert main(["infer", "-c", str(trained), "--folds", "0,1", "--out", str(root / "pp")]) == 0
    from scipy import ndimage

    for path in (root / "pp").glob("*_seg.nii.gz"):
        seg = _load(path)
        for value in (2, 4):
            count = ndimage.label(seg == value, structure=np.ones((3, 3, 3)))[1]
            assert count <= 1
    # members are scored with the same postprocessing: fold 0 alone with keep-largest (the
    # ordinary single-model inference and postprocess_labels) gives the recorded member score
    single = root / "single_pp"
    keep = ["--set", "inference.keep_largest_component=true"]
    assert (
        main(["infer", "-c", str(root / "fold_0" / "config.yaml"), "--out", str(single), *keep])
        == 0
    )
    summary = json.loads((root / "pp" / "ensemble_vs_members.json").read_text())
    data = root.parent / "data"
    expected = np.mean([
        _mean_dice(_load(single / f"{s}_seg.nii.gz"), _load(data / f"{s}_seg.nii.gz"))
        for s in summary["per_subject"]
    ])  # fmt: skip
    assert summary["members"]["fold_0"] == pytest.approx(expected)


def test_autoencoder_and_gan_are_refused_with_the_reason(tmp_path: Path, capsys) -> None:
    for application in ("autoencoder", "gan"):
        with pytest.raises(ConfigError, match="not defined for application"):
            refuse_application(application)
    config = write_config(
        tmp_path / "ae.yaml",
        {"application": "autoencoder", "system": {"run_dir": str(tmp_path / "r")}},
    )
    assert main(["infer", "-c", str(config), "--folds", "all"]) == 2
    assert "latent space" in capsys.readouterr().err


def _member(name: str, application: str, **app: object) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        experiment=SimpleNamespace(application=application),
        application=SimpleNamespace(**app),
    )


def test_members_with_other_label_sets_or_applications_are_refused() -> None:
    a = _member("fold_0", "segmentation", label_values=[0, 1, 2])
    b = _member("fold_1", "segmentation", label_values=[0, 1])
    with pytest.raises(
        ConfigError, match=r"label values \[0, 1, 2\] \(fold_0\) and \[0, 1\] \(fold_1\)"
    ):
        check_compatible([a, b])
    c = _member("fold_2", "regression")
    with pytest.raises(ConfigError, match=r"fold_0 \(segmentation\) and fold_2 \(regression\)"):
        check_compatible([a, c])
    encoding = SimpleNamespace(kind="class", classes=("a", "b"))
    other = SimpleNamespace(kind="class", classes=("a", "c"))
    with pytest.raises(ConfigError, match="classes"):
        check_compatible(
            [
                _member("x", "classification", encoding=encoding),
                _member("y", "classification", encoding=other),
            ]
        )
    check_compatible([a, _member("fold_3", "segmentation", label_values=[0, 1, 2])])


def test_fold_out_of_range_in_folds(trained: Path, capsys) -> None:
    assert main(["infer", "-c", str(trained), "--folds", "0,5"]) == 2
    assert "--folds" in capsys.readouterr().err


def test_ensemble_output_inside_the_dataset_is_refused(trained: Path, capsys) -> None:
    data = trained.parent / "data"
    before = sorted(path.name for path in data.iterdir())
    assert main(["infer", "-c", str(trained), "--folds", "all", "--out", str(data / "pred")]) == 2
    err = capsys.readouterr().err
    assert "inference output folder" in err and str(data) in err
    assert sorted(path.name for path in data.iterdir()) == before  # nothing written there


def _mean_dice(seg: np.ndarray, ref: np.ndarray) -> float:
    values = []
    for label in (2, 4):
        total = (seg == label).sum() + (ref == label).sum()
        if total:
            values.append(2.0 * ((seg == label) & (ref == label)).sum() / total)
    return float(np.mean(values))


def _check_scores(out: Path, singles: dict, data: Path) -> None:
    summary = json.loads((out / "ensemble_vs_members.json").read_text())
    refs = {s: _load(data / f"{s}_seg.nii.gz") for s in next(iter(singles.values()))}
    for name, segs in singles.items():
        expected = np.mean([_mean_dice(segs[s], refs[s]) for s in refs])
        assert summary["members"][name] == pytest.approx(expected)
    ensemble = np.mean([_mean_dice(_load(out / f"{s}_seg.nii.gz"), refs[s]) for s in refs])
    assert summary["ensemble"] == pytest.approx(ensemble)
    assert summary["best"] == max(summary["members"].values())
