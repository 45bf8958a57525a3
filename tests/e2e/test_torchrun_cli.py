"""``torchrun --nproc_per_node=2 -m voxelflow train -c X`` (gloo on CPU): one DDP run, rank 0 writes.

Before ``train_experiment`` joined the process group, each torchrun process trained alone as
"rank 0 of 1" on its half of the subjects and both wrote checkpoints and TensorBoard files into
the same run folder; this test pins the fixed behaviour: 2 ranks, one writer, exact resume.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.synthetic import make_phantom, phantom_affine


def _write_experiment(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    lines = ["subject,image,label"]
    for i in range(6):
        image, label = make_phantom((18, 16, 12), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), data / f"s{i}_image.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), data / f"s{i}_label.nii.gz")
        lines.append(f"s{i},{data}/s{i}_image.nii.gz,{data}/s{i}_label.nii.gz")
    (data / "table.csv").write_text("\n".join(lines) + "\n")
    config = root / "experiment.yaml"
    config.write_text(
        f"""application: segmentation
dataset: {{csv: {data / "table.csv"}, inputs: {{image: [image], label: [label]}}}}
split: {{validation: 0.34, test: 0.0, seed: 0}}
sampling: {{window: [12, 12, 8], windows_per_subject: 1, queue_length: 2}}
augmentation: [{{name: flip, axes: [0]}}]
network: {{name: unet, channels: [4, 8]}}
loss: {{name: dice_ce}}
training: {{max_iterations: 4, batch_size: 1, num_workers: 1, validate_every: 2,
           checkpoint_every: 2, log_every: 1, seed: 3}}
evaluation: {{metrics: [dice]}}
system: {{run_dir: {root / "run"}, device: cpu}}
"""
    )
    return config


def _torchrun(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "voxelflow", "train", "-c", str(config), *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _scalar_keys(path: Path) -> Counter[tuple[str, str]]:
    with path.open() as stream:
        return Counter((row["step"], row["name"]) for row in csv.DictReader(stream))


@pytest.mark.slow
def test_torchrun_two_ranks_train_write_once_and_resume(tmp_path: Path) -> None:
    config = _write_experiment(tmp_path)
    run = tmp_path / "run"
    first = _torchrun(config)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-3000:]
    assert output.count("joined process group") == 2 and "2 rank(s)" in output

    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == [
        "step_00000002.pt", "step_00000004.pt",
    ]  # fmt: skip
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 only
    assert (run / "logs" / "train.log").is_file()
    scalars = _scalar_keys(run / "scalars.csv")
    assert scalars[("4", "train/loss")] == 1 and max(scalars.values()) == 1  # one writer
    state = torch.load(run / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert state["trainer_state"]["world_size"] == 2 and len(state["rng"]) == 2

    resumed = _torchrun(config, "--set", "training.max_iterations=6")
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "resumed from" in output and "at iteration 4" in output
    assert (run / "checkpoints" / "step_00000006.pt").is_file()
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per run
    scalars = _scalar_keys(run / "scalars.csv")
    assert scalars[("6", "train/loss")] == 1 and max(scalars.values()) == 1
    final = torch.load(run / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert final["step"] == 6 and final["trainer_state"]["world_size"] == 2
