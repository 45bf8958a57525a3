"""configs/regression.yaml and configs/super_resolution.yaml: train → resume → infer → evaluate
on tiny phantoms through the CLI, outputs in the input's original geometry and target units."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from voxelflow.cli.main import main
from voxelflow.errors import GeometryError
from voxelflow.synthetic import make_phantom, phantom_affine

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    "sampling.window=[16,16,16]",
    "sampling.queue_length=2",
    "sampling.windows_per_subject=1",
    "training.max_iterations=2",
    "training.batch_size=1",
    "training.num_workers=0",
    "training.validate_every=2",
    "training.checkpoint_every=2",
    "inference.window=[16,16,16]",
    "network.channels=[4,8]",
    "split.validation=0.34",
    "scheduler.name=constant",
]
SHAPE, SPACING = (20, 18, 16), (1.0, 1.2, 1.5)


def write_table(folder: Path, *, with_target: bool, count: int = 3) -> Path:
    """Phantom MR images (and CT-like targets: 100 × smoothed image − 50) in a CSV table."""
    folder.mkdir()
    header = "subject,mr,ct" if with_target else "subject,t1"
    lines = [header]
    for i in range(count):
        image, _ = make_phantom(SHAPE, num_classes=3, seed=i)
        affine = phantom_affine(SPACING)
        mr = folder / f"s{i}_mr.nii.gz"
        nib.save(nib.Nifti1Image((image * 300).astype(np.float32), affine), mr)
        if with_target:
            target = (100 * ndimage.gaussian_filter(image, 1.0) - 50).astype(np.float32)
            nib.save(nib.Nifti1Image(target, affine), folder / f"s{i}_ct.nii.gz")
            lines.append(f"s{i},{mr.name},s{i}_ct.nii.gz")
        else:
            lines.append(f"s{i},{mr.name}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _sets(table: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = [*TINY, f"dataset.csv={table}", f"system.run_dir={run_dir}", *extra]
    return [arg for s in sets for arg in ("--set", s)]


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_regression_config_end_to_end(tmp_path: Path) -> None:
    config = str(CONFIGS / "regression.yaml")
    table = write_table(tmp_path / "data", with_target=True)
    run_dir = tmp_path / "run"
    args = _sets(table, run_dir, "task.loss_border=2")
    assert main(["train", "-c", config, *args]) == 0
    assert main(["train", "-c", config, *args, "--set", "training.max_iterations=3"]) == 0
    pred = tmp_path / "pred"
    assert main(["infer", "-c", config, *args, "--input", str(table), "--out", str(pred)]) == 0
    rows = _read_rows(pred / "inferred.csv")
    assert [r["subject"] for r in rows] == ["s0", "s1", "s2"] and rows[0]["error"]
    output, source = nib.load(rows[0]["pred"]), nib.load(tmp_path / "data" / "s0_mr.nii.gz")
    assert output.shape == source.shape
    np.testing.assert_allclose(output.affine, source.affine, atol=1e-5)
    # target units restored: the prediction lives near the target's range, not a z-score
    target = nib.load(tmp_path / "data" / "s0_ct.nii.gz").get_fdata()
    assert abs(float(output.get_fdata().mean()) - float(target.mean())) < 3 * float(target.std())
    error = nib.load(rows[0]["error"]).get_fdata()
    np.testing.assert_allclose(error, np.abs(output.get_fdata() - target), atol=1e-3)
    out = tmp_path / "eval"
    assert main(["evaluate", "-c", config, *args, "--pred", str(pred), "--out", str(out)]) == 0
    per_subject = _read_rows(out / "regression_metrics.csv")
    assert len(per_subject) == 3
    np.testing.assert_allclose(
        float(per_subject[0]["mae"]), np.abs(output.get_fdata() - target).mean(), rtol=1e-4
    )
    assert (out / "regression_summary.csv").exists() and (out / "regression_examples.png").exists()


@pytest.mark.slow
def test_super_resolution_config_end_to_end(tmp_path: Path) -> None:
    config = str(CONFIGS / "super_resolution.yaml")
    table = write_table(tmp_path / "data", with_target=False)
    run_dir = tmp_path / "run"
    args = _sets(table, run_dir)
    assert main(["train", "-c", config, *args]) == 0
    assert main(["train", "-c", config, *args, "--set", "training.max_iterations=3"]) == 0
    pred = tmp_path / "pred"
    assert main(["infer", "-c", config, *args, "--input", str(table), "--out", str(pred)]) == 0
    rows = _read_rows(pred / "inferred.csv")
    assert rows[0]["input"] and rows[0]["pred"]
    # the `input` written in degrade mode is the linear-upsampling baseline of the original
    import torch

    from voxelflow.applications.regression.degrade import degrade

    source = nib.load(tmp_path / "data" / "s0_mr.nii.gz")
    expected = degrade(
        torch.from_numpy(source.get_fdata().astype(np.float32))[None, None], factor=2
    )[0, 0].numpy()
    written = nib.load(rows[0]["input"])
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    np.testing.assert_allclose(written.get_fdata(), expected, atol=1e-2)
    out = tmp_path / "eval"
    assert main(["evaluate", "-c", config, *args, "--pred", str(pred), "--out", str(out)]) == 0
    per_subject = _read_rows(out / "regression_metrics.csv")
    assert {"psnr", "ssim", "mae", "baseline_psnr", "baseline_ssim", "baseline_mae"} <= set(
        per_subject[0]
    )
    # predict mode: the image is taken as an input already on the output grid; no `input` column
    pred2 = tmp_path / "pred2"
    assert (
        main(
            [
                "infer",
                "-c",
                config,
                *args,
                "--set",
                "inference.mode=predict",
                "--input",
                str(table),
                "--out",
                str(pred2),
            ]
        )
        == 0
    )
    rows2 = _read_rows(pred2 / "inferred.csv")
    assert "input" not in rows2[0] and nib.load(rows2[0]["pred"]).shape == source.shape


def test_target_on_another_grid_names_both_files(tmp_path: Path) -> None:
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.run import train_experiment

    table = write_table(tmp_path / "data", with_target=True)
    shifted = tmp_path / "data" / "s1_ct.nii.gz"
    moved = nib.load(shifted)
    affine = moved.affine.copy()
    affine[:3, 3] += 4.0
    nib.save(nib.Nifti1Image(moved.get_fdata().astype(np.float32), affine), shifted)
    overrides = [*TINY, f"dataset.csv={table}", f"system.run_dir={tmp_path / 'run'}"]
    experiment = load_experiment(CONFIGS / "regression.yaml", overrides)
    with pytest.raises(GeometryError) as caught:
        train_experiment(experiment, run_dir=tmp_path / "run")
    message = str(caught.value)
    assert "s1_mr.nii.gz" in message and "s1_ct.nii.gz" in message and "s1" in message


@pytest.mark.slow
def test_target_on_another_grid_with_resample_to_first(tmp_path: Path) -> None:
    """Opting into resampling: trains, infers (error map on the input grid) and evaluates."""
    config = str(CONFIGS / "regression.yaml")
    table = write_table(tmp_path / "data", with_target=True)
    shifted = tmp_path / "data" / "s1_ct.nii.gz"
    moved = nib.load(shifted)
    affine = moved.affine.copy()
    affine[:3, 3] += 1.0
    nib.save(nib.Nifti1Image(moved.get_fdata().astype(np.float32), affine), shifted)
    args = _sets(
        table, tmp_path / "run", "dataset.resample_to_first=true", "training.max_iterations=1"
    )
    assert main(["train", "-c", config, *args]) == 0
    pred = tmp_path / "pred"
    assert main(["infer", "-c", config, *args, "--input", str(table), "--out", str(pred)]) == 0
    rows = _read_rows(pred / "inferred.csv")
    source = nib.load(tmp_path / "data" / "s1_mr.nii.gz")
    assert nib.load(rows[1]["error"]).shape == source.shape
    out = tmp_path / "eval"
    assert main(["evaluate", "-c", config, *args, "--pred", str(pred), "--out", str(out)]) == 0
    assert len(_read_rows(out / "regression_metrics.csv")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("app", ["regression", "super_resolution"])
def test_quick_demo_writes_report_and_compares_with_baseline(
    app: str, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("nilearn")
    import importlib

    module = importlib.import_module(f"voxelflow.demo.{app}")
    figures = module.run_demo(tmp_path / "demo", quick=True)
    assert figures["source"] == "mni152"
    assert set(figures["network"]) == set(figures["baseline"])
    assert all(
        np.isfinite(v) for v in [*figures["network"].values(), *figures["baseline"].values()]
    )
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "ONE anatomy" in report and "baseline" in report
    assert list((tmp_path / "demo").glob("*.png"))
    out = capsys.readouterr().out
    assert "ONE anatomy" in out and "baseline" in out
