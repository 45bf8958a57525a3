"""Zoo entries for every application: pack → install → ``infer --model`` gives the run's outputs.

A classification run (class names in the task state) and a 2D conditional GAN run (generator +
discriminator) are trained for two iterations on tiny phantoms, packed, installed in a temporary
zoo home and run with ``voxelflow infer --model``; the entry's outputs must equal those of
``voxelflow infer -c`` on the run itself (same weights, same task state). Also: the
``inference_modules`` rule (a GAN entry keeping only its generator) and the refusal of an entry
that lacks a module inference needs.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from voxelflow.cli.main import main
from voxelflow.errors import CheckpointError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

CLASSIFICATION = [
    "sampling.window=[12,12,8]", "sampling.queue_length=2", "training.max_iterations=2",
    "training.batch_size=2", "training.num_workers=0", "training.validate_every=2",
    "training.checkpoint_every=2", "split.validation=0.34", "scheduler.warmup_iterations=1",
    "network.features=[4,8]", "preprocessing.spacing=null", "split.stratify_column=null",
]  # fmt: skip
GAN = [
    "sampling.window=[16,16]", "sampling.queue_length=2", "training.batch_size=2",
    "training.num_workers=0", "training.validate_every=2", "training.checkpoint_every=2",
    "training.max_iterations=2", "network.features=[8,4]", "task.discriminator.features=[4,8]",
    "task.noise_size=8", "task.critic_steps=1", "task.validation_samples=2",
    "split.validation=0.34", "inference.num_samples=2", "inference.batch_size=2",
]  # fmt: skip


def _overrides(settings: list[str], table: Path, run_dir: Path) -> list[str]:
    sets = [*settings, f"dataset.csv={table}", f"system.run_dir={run_dir}"]
    return [argument for setting in sets for argument in ("--set", setting)]


def _classification_table(folder: Path) -> Path:
    """Six phantoms (anisotropic, non-identity affine) twice as bright when the class is M."""
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir()
    lines = ["subject,t1,sex"]
    for index, sex in enumerate(["F", "M", "F", "M", "F", "M"]):
        image, _ = make_phantom((16, 18, 12), num_classes=3, seed=index)
        data = (image * (1.0 + (sex == "M"))).astype(np.float32)
        nib.save(
            nib.Nifti1Image(data, phantom_affine((1.0, 1.2, 1.5))), folder / f"s{index}.nii.gz"
        )
        lines.append(f"s{index},s{index}.nii.gz,{sex}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _slice_table(folder: Path) -> Path:
    """Six 2D NRRD slices (spacing 1.5 × 2 mm, flipped y axis) with a `level` column."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = ["subject,image,level"]
    for index in range(6):
        level = ("low", "high")[index % 2]
        columns = np.mgrid[:20, :16][1]
        pixels = 100 + 60 * (columns > 8) * (level == "high") + rng.normal(0, 5, (20, 16))
        image = sitk.GetImageFromArray(pixels.astype(np.float32))
        image.SetSpacing((1.5, 2.0))
        image.SetDirection((1.0, 0.0, 0.0, -1.0))
        sitk.WriteImage(image, str(folder / f"s{index}.nrrd"))
        lines.append(f"s{index},s{index}.nrrd,{level}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _rows(path: Path) -> list[dict[str, str]]:
    """The table's rows without the timing columns (``seconds*`` differ between runs)."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if not k.startswith("seconds")} for row in csv.DictReader(handle)]


def _train_pack_install(
    config: Path, overrides: list[str], tmp_path: Path, name: str
) -> tuple[Path, Path]:
    """Train, pack as ``name`` and install in ``tmp_path/zoo``; returns (run dir, entry dir)."""
    run_dir = tmp_path / "run"
    assert main(["train", "-c", str(config), *overrides]) == 0
    archive = tmp_path / f"{name}.zip"
    assert main(["zoo", "pack", str(run_dir), "--out", str(archive), "--name", name]) == 0
    assert main(["zoo", "install", str(archive)]) == 0
    return run_dir, tmp_path / "zoo" / "entries" / name


@pytest.mark.slow
def test_classification_entry_predicts_like_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    config = CONFIGS / "classification.yaml"
    table = _classification_table(tmp_path / "data")
    overrides = _overrides(CLASSIFICATION, table, tmp_path / "run")
    _, entry = _train_pack_install(config, overrides, tmp_path, "sex-classifier")

    card = yaml.safe_load((entry / "model.yaml").read_text())
    assert card["application"] == "classification"
    assert card["outputs"]["labels"] == {0: "F", 1: "M"}  # the task state's class names
    assert card["network"]["out_channels"] == 2
    packed_config = yaml.safe_load((entry / "config.yaml").read_text())
    assert str(tmp_path) not in (entry / "config.yaml").read_text()
    assert packed_config["system"]["run_dir"] == "runs/sex-classifier"

    shutil.rmtree(tmp_path / "run")  # the entry must not need the run (nor its data table)
    out = tmp_path / "from-entry"
    assert (
        main(["infer", "--model", "sex-classifier", "--input", str(table), "--out", str(out)]) == 0
    )
    predicted = _rows(out / "predictions.csv")
    assert [row["subject"] for row in predicted] == [f"s{i}" for i in range(6)]
    assert {row["prediction"] for row in predicted} <= {"F", "M"}
    for row in predicted:
        assert float(row["prob_F"]) + float(row["prob_M"]) == pytest.approx(1.0, abs=1e-5)
        expected = "F" if float(row["prob_F"]) >= float(row["prob_M"]) else "M"
        assert row["prediction"] == expected
    exported = tmp_path / "classifier.pt2"  # the entry's network rebuilt with its class count
    assert (
        main(["export", "sex-classifier", "--format", "torch-export", "--out", str(exported)]) == 0
    )
    assert exported.is_file()


@pytest.mark.slow
def test_classification_entry_matches_run_inference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    config = CONFIGS / "classification.yaml"
    table = _classification_table(tmp_path / "data")
    overrides = _overrides(CLASSIFICATION, table, tmp_path / "run")
    _train_pack_install(config, overrides, tmp_path, "sex-classifier")
    from_run, from_entry = tmp_path / "from-run", tmp_path / "from-entry"
    infer = ["--input", str(table), "--out"]
    assert main(["infer", "-c", str(config), *overrides, *infer, str(from_run)]) == 0
    assert main(["infer", "--model", "sex-classifier", *infer, str(from_entry)]) == 0
    assert _rows(from_entry / "predictions.csv") == _rows(from_run / "predictions.csv")


@pytest.mark.slow
@pytest.mark.parametrize("generator_only", [False, True])
def test_gan_entry_generates_like_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generator_only: bool
) -> None:
    from voxelflow.applications.gan.application import GanApplication

    # the documented rule: only the modules inference needs are packed (a GAN: the generator);
    # None (every module) stays supported for entries that keep the discriminator
    if not generator_only:
        monkeypatch.setattr(GanApplication, "inference_modules", None)
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    config = CONFIGS / "gan.yaml"
    table = _slice_table(tmp_path / "data")
    overrides = _overrides(GAN, table, tmp_path / "run")
    _, entry = _train_pack_install(config, overrides, tmp_path, "slice-gan")

    weights = yaml.safe_load((entry / "model.yaml").read_text())["files"]["weights"]
    expected = {"generator"} if generator_only else {"generator", "discriminator"}
    assert set(weights) == expected
    from_run, from_entry = tmp_path / "from-run", tmp_path / "from-entry"
    infer = ["--input", str(table), "--out"]
    assert main(["infer", "-c", str(config), *overrides, *infer, str(from_run)]) == 0
    assert main(["infer", "--model", "slice-gan", *infer, str(from_entry)]) == 0
    run_rows, entry_rows = _rows(from_run / "generated.csv"), _rows(from_entry / "generated.csv")
    assert len(entry_rows) == 4  # 2 samples × 2 class levels (the task state's classes)
    assert [row["subject"] for row in entry_rows] == [row["subject"] for row in run_rows]
    for row in entry_rows:
        generated = nib.load(next(from_entry.glob(f"{row['subject']}_*.nii.gz")))
        reference = nib.load(next(from_run.glob(f"{row['subject']}_*.nii.gz")))
        np.testing.assert_allclose(generated.get_fdata(), reference.get_fdata(), atol=1e-5)
        np.testing.assert_allclose(generated.affine, reference.affine, atol=1e-6)


@pytest.mark.slow
def test_entry_without_a_needed_module_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxelflow.applications.gan.application import GanApplication
    from voxelflow.zoo.network import application_from_entry

    monkeypatch.setattr(GanApplication, "inference_modules", ("discriminator",))
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    table = _slice_table(tmp_path / "data")
    overrides = _overrides(GAN, table, tmp_path / "run")
    _train_pack_install(CONFIGS / "gan.yaml", overrides, tmp_path, "critic-only")
    monkeypatch.setattr(GanApplication, "inference_modules", ("generator",))
    with pytest.raises(
        CheckpointError, match=r"'critic-only'.*\['generator'\].*\['discriminator'\]"
    ):
        application_from_entry("critic-only")
