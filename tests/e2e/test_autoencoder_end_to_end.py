"""configs/autoencoder.yaml trains, resumes, infers in every mode and evaluates on tiny phantoms."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.errors import DataError
from voxelflow.synthetic import make_phantom, phantom_affine

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "autoencoder.yaml"
TINY = [
    "sampling.window=[16,16,16]",
    "sampling.queue_length=2",
    "training.max_iterations=2",
    "training.batch_size=2",
    "training.num_workers=0",
    "training.validate_every=2",
    "training.checkpoint_every=2",
    "network.features=[4,8]",
    "network.hidden_size=16",
    "network.latent_size=4",
    "preprocessing.spacing=[1.5,1.5,2.0]",
    "split.validation=0.25",
]


def _write_table(folder: Path) -> Path:
    folder.mkdir()
    lines = ["subject,image"]
    for i in range(4):
        image, _ = make_phantom((20, 18, 14), num_classes=3, seed=i)
        path = folder / f"s{i}_t1.nii.gz"
        data = (image * 300 + 100).astype(np.float32)
        nib.save(nib.Nifti1Image(data, phantom_affine((1.0, 1.2, 1.5))), path)
        lines.append(f"s{i},{path}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_autoencoder_config_end_to_end(tmp_path: Path) -> None:
    table = _write_table(tmp_path / "data")
    run_dir = tmp_path / "run"
    sets = [*TINY, f"dataset.csv={table}", f"system.run_dir={run_dir}"]
    args = [arg for s in sets for arg in ("--set", s)]
    assert main(["train", "-c", str(CONFIG), *args]) == 0
    args += ["--set", "training.max_iterations=3"]
    assert main(["train", "-c", str(CONFIG), *args]) == 0  # resume
    assert (run_dir / "checkpoints" / "step_00000003.pt").exists()
    modes = {
        "reconstruct": ["--set", "inference.error_maps=true"],
        "encode": [],
        "sample": ["--set", "inference.num_samples=2"],
        "interpolate": ["--set", "inference.interpolate=[s3,s0]", "--set", "inference.steps=3"],
    }
    for mode, extra in modes.items():
        out = tmp_path / mode
        command = [
            "infer",
            "-c",
            str(CONFIG),
            *args,
            "--set",
            f"inference.mode={mode}",
            *extra,
            "--input",
            str(table),
            "--out",
            str(out),
        ]
        assert main(command) == 0, mode

    recon = _rows(tmp_path / "reconstruct" / "reconstructions.csv")
    assert [r["subject"] for r in recon] == ["s0", "s1", "s2", "s3"]
    written, source = nib.load(recon[0]["recon"]), nib.load(tmp_path / "data" / "s0_t1.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert 0 < float(np.asarray(written.dataobj).mean()) < 1000  # original units, not z-scores
    latents = np.load(tmp_path / "encode" / "latents.npy")
    assert latents.shape == (4, 2, 4)
    assert float(_rows(tmp_path / "encode" / "latents.csv")[2]["mu_1"]) == pytest.approx(
        float(latents[2, 0, 1]), rel=1e-6
    )
    assert len(_rows(tmp_path / "sample" / "samples.csv")) == 2
    path = _rows(tmp_path / "interpolate" / "interpolation.csv")
    assert [(r["from"], r["to"], float(r["t"])) for r in path] == [
        ("s3", "s0", 0.0),
        ("s3", "s0", 0.5),
        ("s3", "s0", 1.0),
    ]
    assert nib.load(path[1]["image"]).shape == (16, 16, 16)

    assert (
        main(
            [
                "evaluate",
                "-c",
                str(CONFIG),
                *args,
                "--pred",
                str(tmp_path / "reconstruct"),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    summary = {r["metric"]: float(r["mean"]) for r in _rows(tmp_path / "eval" / "summary.csv")}
    assert summary["mae"] > 0 and np.isfinite(summary["psnr"])

    # bad input: interpolation between subjects that do not exist
    from voxelflow.engine.inference import infer_rows
    from voxelflow.io.table import read_csv_table

    experiment = load_experiment(
        CONFIG, [*sets, "inference.mode=interpolate", "inference.interpolate=[s0,nobody]"]
    )
    with pytest.raises(DataError, match=r"unknown \['nobody'\]; available subjects: \['s0', 's1'"):
        infer_rows(experiment, read_csv_table(table), run_dir=run_dir, out_dir=tmp_path / "bad")


@pytest.mark.slow
def test_quick_autoencoder_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voxelflow.demo.autoencoder import run_demo

    figures = run_demo(tmp_path / "demo", quick=True)
    for system in ("network", "baseline"):
        assert set(figures[system]) >= {"mae", "psnr"} and figures[system]["mae"] > 0
    report = figures["report"].read_text()
    assert "one anatomy" in report and "PCA" in report
    for picture in ("report-quick_reconstructions.png", "report-quick_interpolation.png"):
        assert (tmp_path / "demo" / picture).stat().st_size > 0
    assert "ONE anatomy" in capsys.readouterr().out
