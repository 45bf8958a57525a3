"""configs/gan.yaml end to end on tiny data: train → resume → sample / interpolate → evaluate, plus
an image-conditioned 3D GAN through the engine functions and the issue's bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.engine.checkpoint import load_checkpoint
from voxelflow.errors import ConfigError
from voxelflow.io.readers import read_image

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gan.yaml"
TINY = [
    "sampling.window=[16,16]", "sampling.queue_length=2", "training.batch_size=2",
    "training.num_workers=0", "training.validate_every=2", "training.checkpoint_every=2",
    "training.image_every=1", "training.log_every=1", "network.features=[8,4]",
    "task.discriminator.features=[4,8]", "task.noise_size=8", "task.critic_steps=2",
    "task.validation_samples=2", "split.validation=0.34", "inference.num_samples=3",
    "inference.batch_size=2",
]  # fmt: skip


def _slices(folder: Path, count: int = 6) -> Path:
    """2D NRRD slices (16 × 20, spacing 1.5 × 2 mm, flipped y axis) with a `level` column."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["subject,image,level"]
    for i in range(count):
        level = ("low", "high")[i % 2]
        xx = np.mgrid[:20, :16][1]
        pixels = 100 + 60 * (xx > 8) * (level == "high") + rng.normal(0, 5, (20, 16))
        image = sitk.GetImageFromArray(pixels.astype(np.float32))
        image.SetSpacing((1.5, 2.0))
        image.SetOrigin((3.0, -4.0))
        image.SetDirection((1.0, 0.0, 0.0, -1.0))
        sitk.WriteImage(image, str(folder / f"s{i}.nrrd"))
        lines.append(f"s{i},s{i}.nrrd,{level}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _args(table: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = [*TINY, f"dataset.csv={table}", f"system.run_dir={run_dir}", *extra]
    return [arg for s in sets for arg in ("--set", s)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_reference_config_trains_resumes_generates_and_evaluates(tmp_path: Path) -> None:
    table, run_dir = _slices(tmp_path / "data"), tmp_path / "run"
    assert (
        main(["train", "-c", str(CONFIG), *_args(table, run_dir, "training.max_iterations=2")]) == 0
    )
    args = _args(table, run_dir, "training.max_iterations=3")
    assert main(["train", "-c", str(CONFIG), *args]) == 0  # resume to iteration 3
    state = load_checkpoint(run_dir / "checkpoints" / "step_00000003.pt")
    for part in ("optimizers", "schedulers", "scalers"):
        assert set(state[part]) == {"generator", "discriminator"}
    # Adam's step counters continued: 2 critic steps per iteration, 3 iterations in all
    assert state["optimizers"]["discriminator"]["state"][0]["step"] == 6
    assert state["optimizers"]["generator"]["state"][0]["step"] == 3
    _assert_tensorboard_images(run_dir)

    samples = tmp_path / "samples"
    assert (
        main(["infer", "-c", str(CONFIG), *args, "--input", str(table), "--out", str(samples)]) == 0
    )
    rows = _rows(samples / "generated.csv")
    assert [r["subject"] for r in rows] == [
        f"sample_{lv}_{i:03d}" for lv in ("high", "low") for i in range(3)
    ]
    generated = read_image(rows[0]["generated"])
    assert generated.spatial_shape[:2] == (16, 16)
    # the training slice's field of view (voxel edges in mm), at the window's size
    assert np.allclose(
        _field_of_view(generated), _field_of_view(read_image(table.parent / "s0.nrrd"))
    )
    assert np.allclose(generated.spacing[:2], (1.5 * 16 / 16, 2.0 * 20 / 16))
    assert 60 < float(generated.data.mean()) < 200  # original intensity units, not z-scores

    path = tmp_path / "path"
    assert main(["infer", "-c", str(CONFIG), *args, "--set", "inference.mode=interpolate",
                 "--set", "inference.interpolate=[low,high]", "--set", "inference.steps=4",
                 "--out", str(path)]) == 0  # fmt: skip
    assert [r["alpha"] for r in _rows(path / "generated.csv")] == [
        "0.0",
        "0.333333",
        "0.666667",
        "1.0",
    ]

    out = tmp_path / "evaluation"
    assert (
        main(["evaluate", "-c", str(CONFIG), *args, "--pred", str(samples), "--out", str(out)]) == 0
    )
    groups = _rows(out / "per_group.csv")
    assert {g["group"] for g in groups} == {"low", "high"} and all(
        g["reference"] == "3" for g in groups
    )
    assert (out / "summary.csv").exists() and (out / "samples.png").exists()


def _field_of_view(image) -> np.ndarray:
    """Lowest and highest in-plane world coordinates of the voxel edges."""
    shape = image.spatial_shape[:2]
    corners = [
        np.array([x, y, 0.0, 1.0]) for x in (-0.5, shape[0] - 0.5) for y in (-0.5, shape[1] - 0.5)
    ]
    world = np.stack([(image.affine @ c)[:2] for c in corners])
    return np.stack([world.min(axis=0), world.max(axis=0)])


def _assert_tensorboard_images(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in (run_dir / "tensorboard").glob("events.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"])
    assert {"images/real", "images/generated"} <= tags


def _volumes(folder: Path, count: int = 3) -> Path:
    """3D NIfTI image + conditioning pairs (anisotropic, rotated affine)."""
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir(parents=True)
    lines = ["subject,image,ct"]
    for i in range(count):
        image, _ = make_phantom((18, 16, 20), num_classes=2, seed=i)
        affine = phantom_affine((1.2, 1.0, 1.5))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / f"v{i}_mr.nii.gz")
        nib.save(
            nib.Nifti1Image((image * 3 + 1).astype(np.float32), affine), folder / f"v{i}_ct.nii.gz"
        )
        lines.append(f"v{i},v{i}_mr.nii.gz,v{i}_ct.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


@pytest.mark.slow
def test_image_conditioned_3d_gan_and_interpolation_between_subjects(tmp_path: Path) -> None:
    from voxelflow.engine.inference import infer_rows
    from voxelflow.engine.run import train_experiment
    from voxelflow.io.table import read_csv_table

    table = _volumes(tmp_path / "data")
    sets = [
        f"dataset.csv={table}", "dataset.inputs={image: [image], conditioning: [ct]}",
        "sampling.window=[16,16,16]", "network.features=[8,4]", "task.discriminator.features=[4,8]",
        "task.noise_size=4", "task.conditioning_column=null", "task.conditioning_role=conditioning",
        "loss.name=gan_least_squares", "task.gradient_penalty=null", "training.max_iterations=2",
        "training.batch_size=2", "training.num_workers=0", "training.validate_every=2",
        "training.checkpoint_every=2", "split.validation=0.34", "split.stratify_column=null",
        "inference.num_samples=2", f"system.run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    experiment = load_experiment(CONFIG, sets)
    train_experiment(experiment, run_dir=tmp_path / "run")
    rows = read_csv_table(table)
    out = infer_rows(experiment, rows, run_dir=tmp_path / "run", out_dir=tmp_path / "samples")
    names = [r["subject"] for r in _rows(out)]
    assert names == [f"sample_v{i}_{k:03d}" for i in range(3) for k in range(2)]
    assert read_image(tmp_path / "samples" / "sample_v0_000_generated.nii.gz").spatial_shape == (
        16,
        16,
        16,
    )

    path_experiment = load_experiment(CONFIG, [*sets, "inference.mode=interpolate",
                                               "inference.interpolate=[v0,v2]", "inference.steps=3"])  # fmt: skip
    out = infer_rows(path_experiment, rows, run_dir=tmp_path / "run", out_dir=tmp_path / "path")
    assert [r["alpha"] for r in _rows(out)] == ["0.0", "0.5", "1.0"]
    # bad input of the issue: an interpolation between subjects that do not exist
    missing = load_experiment(
        CONFIG, [*sets, "inference.mode=interpolate", "inference.interpolate=[v0,v9]"]
    )
    with pytest.raises(
        ConfigError, match=r"inference\.interpolate: .*unknown subject\(s\) \['v9'\]"
    ):
        infer_rows(missing, rows, run_dir=tmp_path / "run", out_dir=tmp_path / "missing")


def test_cli_refuses_a_gan_config_without_noise_size(tmp_path: Path, capsys) -> None:
    table = _slices(tmp_path / "data")
    args = _args(table, tmp_path / "run", "task.noise_size=null")
    assert main(["train", "-c", str(CONFIG), *args]) != 0
    assert "task.noise_size" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_writes_a_report_with_baselines(tmp_path: Path, capsys) -> None:
    pytest.importorskip("nilearn")
    from voxelflow.demo.gan import run_demo

    figures = run_demo(tmp_path / "demo", quick=True)
    assert figures["source"] == "mni152"
    assert set(figures["scores"]) == {"network", "noise", "mean_image"}
    assert figures["scores"]["mean_image"]["diversity_ratio"] == pytest.approx(0.0, abs=1e-9)
    report = figures["report"].read_text()
    assert "ONE anatomy" in report and "| noise |" in report
    for picture in ("report-quick_samples.png", "report-quick_interpolation.png"):
        assert (tmp_path / "demo" / picture).stat().st_size > 0
    assert "ONE anatomy" in capsys.readouterr().out
