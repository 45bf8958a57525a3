"""NiftyNet-style configs end to end through the net_* commands on tiny synthetic data.

The data match the data sections of voxelflow's test INIs (tests/config/test_niftynet_inis/):
``data/sub<i>_{T1,T2,T1c,Flair,Label}.nii.gz`` (16³), PROMISE12-like cases spread over three
folders, and 2-D ultrasound-like slices ``slices/frame<i>_{img,coordX}.nii.gz`` (16 × 16).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.niftynet_scripts import (
    net_autoencoder,
    net_classify,
    net_gan,
    net_regress,
    net_segment,
)
from voxelflow.synthetic import make_phantom

INIS = Path(__file__).resolve().parents[1] / "config" / "test_niftynet_inis"
FAST = ["--set", "training.num_workers=0", "--set", "inference.batch_size=2"]


def _save(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").mkdir()
    for i in range(4):
        image, label = make_phantom((16, 16, 16), num_classes=3, seed=i)
        for modality, scale in (("T1", 1.0), ("T2", 2.0), ("T1c", 0.5), ("Flair", 1.5)):
            _save(
                (image * scale).astype(np.float32), tmp_path / "data" / f"sub{i}_{modality}.nii.gz"
            )
        _save(label.astype(np.int16), tmp_path / "data" / f"sub{i}_Label.nii.gz")
    for part in (1, 2, 3):
        folder = tmp_path / f"part{part}"
        folder.mkdir()
        for j in range(2):
            image, label = make_phantom((16, 16, 16), num_classes=2, seed=10 + 2 * part + j)
            _save(image.astype(np.float32), folder / f"Case{part}{j}.mhd.nii.gz")
            _save(label.astype(np.int16), folder / f"Case{part}{j}_segmentation.mhd.nii.gz")
    (tmp_path / "slices").mkdir()
    for i in range(4):
        image, _ = make_phantom((16, 16), num_classes=2, seed=20 + i)
        _save(image.astype(np.float32), tmp_path / "slices" / f"frame{i}_img.nii.gz")
        _save((image * 0.5).astype(np.float32), tmp_path / "slices" / f"frame{i}_coordX.nii.gz")
    (tmp_path / "classes").mkdir()  # NiftyNet's classification labels: one value per image
    for i in range(4):
        _save(np.full((1, 1, 1), i % 2, np.int16), tmp_path / "classes" / f"sub{i}_class.nii.gz")
    for ini in INIS.glob("*.ini"):
        shutil.copy(ini, tmp_path / ini.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so the value set below is undone
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    return tmp_path


def _inferred(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.slow
def test_segmentation_trains_infers_every_subject_and_evaluates(workdir: Path) -> None:
    # segmentation_default.ini has no model_dir: NiftyNet's <config folder>/model
    assert net_segment(["train", "-c", "segmentation_default.ini", *FAST]) == 0
    assert (workdir / "model" / "checkpoints" / "step_00000002.pt").is_file()
    # no inference fraction: NiftyNet inferred every subject (training ones included)
    assert net_segment(["inference", "-c", "segmentation_default.ini", *FAST]) == 0
    out = workdir / "model" / "output" / "toy"
    rows = _inferred(out / "inferred.csv")
    assert [r[0] for r in rows] == ["sub0", "sub1", "sub2", "sub3"]
    assert all(len(r) == 2 and r[1] == str(out / f"{r[0]}_niftynet_out.nii.gz") for r in rows)
    assert nib.load(rows[0][1]).shape == (16, 16, 16)
    # evaluation pairs inferred.csv with the label section by subject id
    assert net_segment(["evaluation", "-c", "segmentation_default.ini"]) == 0
    with open(workdir / "model" / "evaluation" / "per_case.csv", newline="") as handle:
        scored = list(csv.DictReader(handle))
    assert {r["subject"] for r in scored} == {"sub0", "sub1", "sub2", "sub3"}
    assert {"dice", "assd"} <= set(scored[0])  # evaluations = dice,average_distance


@pytest.mark.slow
def test_inference_iter_dataset_to_infer_and_overrides(
    workdir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ini = "segmentation_multimodal.ini"
    assert net_segment(["train", "-c", ini, "--max_iter", "4", "--save_every_n", "2", *FAST]) == 0
    checkpoints = workdir / "models" / "multimodal" / "checkpoints"
    assert (checkpoints / "step_00000004.pt").is_file()
    args = ["inference", "-c", ini, "--inference_iter", "2", "--dataset_to_infer", "training"]
    assert net_segment([*args, *FAST]) == 0
    rows = _inferred(workdir / "models" / "multimodal" / "output" / "multimodal" / "inferred.csv")
    assert len(rows) == 4  # no validation fraction: every subject is a training subject
    assert "step_00000002.pt" in caplog.text
    assert net_segment(["inference", "-c", ini, "--inference_iter", "3"]) == 2
    assert "inference_iter = 3: no checkpoint of that step" in capsys.readouterr().err


@pytest.mark.slow
def test_all_path_to_search_folders_and_a_lowercase_data_section(workdir: Path) -> None:
    assert net_segment(["train", "-c", "promise12.ini", *FAST]) == 0
    assert net_segment(["inference", "-c", "promise12.ini", *FAST]) == 0  # inference_iter = 2
    rows = _inferred(workdir / "promise12_model" / "output" / "promise12" / "inferred.csv")
    # the cases of all three folders, less Case2* (filename_not_contains = Case2)
    assert sorted(r[0] for r in rows) == ["10", "11", "30", "31"]  # ids: name minus contains
    assert net_segment(["evaluation", "-c", "promise12.ini"]) == 0


@pytest.mark.slow
def test_regression_with_l1_regularisation(workdir: Path) -> None:
    assert net_regress(["train", "-c", "regression.ini", *FAST]) == 0
    assert net_regress(["inference", "-c", "regression.ini", *FAST]) == 0
    rows = _inferred(workdir / "models" / "regression" / "output" / "regression" / "inferred.csv")
    assert [Path(r[1]).name for r in rows] == [f"sub{i}_niftynet_out.nii.gz" for i in range(4)]
    assert net_regress(["evaluation", "-c", "regression.ini"]) == 0
    assert (workdir / "models" / "regression" / "evaluation" / "regression_summary.csv").is_file()


@pytest.mark.slow
def test_autoencoder_samples(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert net_autoencoder(["train", "-c", "autoencoder.ini", *FAST]) == 0
    assert net_autoencoder(["inference", "-c", "autoencoder.ini", *FAST]) == 0  # sample
    rows = _inferred(workdir / "models" / "autoencoder" / "output" / "vae_sample" / "inferred.csv")
    assert rows and all(Path(r[1]).is_file() for r in rows)
    assert net_autoencoder(["evaluation", "-c", "autoencoder.ini"]) == 2
    assert "NiftyNet had no evaluation for the autoencoder" in capsys.readouterr().err


@pytest.mark.slow
def test_2d_gan_with_conditioning(workdir: Path) -> None:
    args = ["--set", "network.network.features=[8,4]", *FAST]
    assert net_gan(["train", "-c", "gan_2d.ini", *args]) == 0
    assert net_gan(["inference", "-c", "gan_2d.ini", *args]) == 0
    rows = _inferred(workdir / "models" / "gan" / "output" / "gan" / "inferred.csv")
    assert len(rows) == 4 * 3  # n_interpolations = 3 images per conditioning subject
    assert nib.load(rows[0][1]).shape == (16, 16, 1)


@pytest.mark.slow
def test_deepmedic_valid_convolutions_infer_whole_images(workdir: Path) -> None:
    text = (workdir / "segmentation_default.ini").read_text()
    text = text.replace("niftynet.network.toynet.ToyNet", "deepmedic")
    text = text.replace("spatial_window_size = (16, 16, 16)", "spatial_window_size = (57, 57, 57)")
    text = text.replace("border = (2, 2, 2)", "border = (0, 0, 0)")
    (workdir / "deepmedic.ini").write_text(text)
    # DeepMedic's valid convolutions: a 57³ window gives 9³ outputs (NiftyNet's label window)
    experiment_checks = ["--set", "sampling.label_window=[9,9,9]", *FAST]
    assert net_segment(["train", "-c", "deepmedic.ini", *experiment_checks]) == 0
    assert net_segment(["inference", "-c", "deepmedic.ini", *experiment_checks]) == 0
    rows = _inferred(workdir / "model" / "output" / "toy" / "inferred.csv")
    assert len(rows) == 4 and nib.load(rows[0][1]).shape == (16, 16, 16)


@pytest.mark.slow
def test_classification_label_images_become_classes(workdir: Path) -> None:
    assert net_classify(["train", "-c", "classification.ini", *FAST]) == 0
    table = (workdir / "models" / "classification" / "niftynet_subjects.csv").read_text()
    assert table.splitlines()[1].endswith(",0") and table.splitlines()[2].endswith(",1")
    assert net_classify(["inference", "-c", "classification.ini", *FAST]) == 0
    out = workdir / "models" / "classification" / "output" / "classification"
    rows = _inferred(out / "inferred.csv")
    assert [Path(r[1]).name for r in rows] == [f"sub{i}_niftynet_out.csv" for i in range(4)]
    assert net_classify(["evaluation", "-c", "classification.ini"]) == 0
    assert (workdir / "models" / "classification" / "evaluation" / "summary.csv").is_file()
