"""Every segmentation reference config in configs/ trains, resumes, infers and evaluates on tiny
phantoms (the other applications' configs have their own end-to-end tests)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment

CONFIGS = sorted(
    path
    for path in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
    if load_experiment(path).application == "segmentation"
)

# Shrink each config to seconds on CPU; every other setting stays as shipped.
TINY = [
    "sampling.queue_length=2", "sampling.windows_per_subject=1",
    "training.max_iterations=2", "training.batch_size=1", "training.num_workers=0",
    "training.validate_every=2", "training.checkpoint_every=2", "evaluation.metrics=[dice]",
]
SMALL_NETWORKS = {"unet": "network.channels=[4,8]", "highresnet": "network.variant=small"}


def _write_table(folder: Path, columns: list[str]) -> Path:
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir()
    lines = ["subject," + ",".join(columns)]
    for i in range(3):
        image, label = make_phantom((20, 20, 16), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        cells = []
        for column in columns:
            data = label.astype(np.uint8) if column == "label" else image * (1 + columns.index(column))
            nib.save(nib.Nifti1Image(data, affine), folder / f"s{i}_{column}.nii.gz")
            cells.append(str(folder / f"s{i}_{column}.nii.gz"))
        lines.append(f"s{i}," + ",".join(cells))
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _tiny_window(window: list[int]) -> str:
    """16 per axis, keeping a 2D config's size-1 slice axis (configs/segmentation_2d.yaml)."""
    return "[" + ",".join("1" if int(size) == 1 else "16" for size in window) + "]"


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_reference_config_end_to_end(config: Path, tmp_path: Path) -> None:
    experiment = load_experiment(config)
    columns = [c for cols in experiment.dataset.inputs.values() for c in cols]
    table = _write_table(tmp_path / "data", columns)
    run_dir = tmp_path / "run"
    window = _tiny_window(experiment.sampling.window)
    sets = [*TINY, f"sampling.window={window}", f"inference.window={window}",
            f"dataset.csv={table}", f"system.run_dir={run_dir}", "split.validation=0.34"]
    if experiment.network.name in SMALL_NETWORKS:
        sets.append(SMALL_NETWORKS[experiment.network.name])
    if "warmup_iterations" in experiment.scheduler.kwargs:
        sets.append("scheduler.warmup_iterations=1")
    args = [arg for s in sets for arg in ("--set", s)]
    assert main(["train", "-c", str(config), *args]) == 0
    assert main(["train", "-c", str(config), *args, "--set", "training.max_iterations=3"]) == 0  # resume
    assert main(["infer", "-c", str(config), *args, "--set", "training.max_iterations=3",
                 "--input", str(table), "--out", str(tmp_path / "pred")]) == 0
    if experiment.inference.uncertainty != "none":  # written on each input's original grid
        uncertainty = nib.load(tmp_path / "pred" / "s0_uncertainty.nii.gz")
        source = nib.load(tmp_path / "data" / f"s0_{columns[0]}.nii.gz")
        assert uncertainty.shape == source.shape and np.allclose(uncertainty.affine, source.affine)
        assert np.issubdtype(uncertainty.get_data_dtype(), np.floating)
        assert np.isfinite(uncertainty.get_fdata()).all() and uncertainty.get_fdata().max() > 0
        for path in (tmp_path / "pred").glob("*_uncertainty.nii.gz"):  # evaluate reads label maps
            path.rename(tmp_path / path.name)
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(3):
        (refs / f"s{i}_seg.nii.gz").write_bytes((tmp_path / "data" / f"s{i}_label.nii.gz").read_bytes())
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(refs),
                 "--out", str(tmp_path / "eval"), "--no-report"]) == 0
    assert (tmp_path / "eval" / "per_case.csv").exists()
