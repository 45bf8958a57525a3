"""``voxelflow profile``: timings, the bottleneck decision and its advice, the CLI output."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.cli.main import main
from voxelflow.engine.profile import (
    DataTiming,
    PipelineSettings,
    StepTiming,
    augmentation_share,
    diagnose,
    time_data_path,
)
from voxelflow.errors import ConfigError
from voxelflow.synthetic import make_phantom, phantom_affine


def _settings(**changes) -> PipelineSettings:
    values = dict(num_workers=1, batch_size=2, window=(64, 64, 64), windows_per_subject=2,
                  augmentation=("flip", "affine"), device="cpu", cpu_count=8, cache_dir=None)  # fmt: skip
    return PipelineSettings(**{**values, **changes})


def _data(ms_per_batch: float, batch_size: int = 2) -> DataTiming:
    batches = 1e3 / ms_per_batch
    return DataTiming(batches * batch_size, batches, first_batch_seconds=0.5, batches=10)


def _step(ms: float, device: str = "cpu") -> StepTiming:
    return StepTiming(ms, device, 10)


def test_data_bottleneck_advises_workers_and_cheaper_augmentation() -> None:
    bottleneck, advice = diagnose(_data(100.0), _step(20.0), _settings(), share=0.8)
    assert bottleneck == "data"
    text = "\n".join(advice)
    assert "raise training.num_workers from 1 to about 5" in text  # 100 ms / 20 ms = 5x
    assert "augmentation takes 80% of the data path (flip, affine)" in text
    assert "system.resample_kernel" in text
    assert "smaller sampling.window (64x64x64 now; 32x32x32 is about 8x cheaper" in text


def test_data_bottleneck_beyond_the_cores_and_reading_bound() -> None:
    _, advice = diagnose(_data(100.0), _step(10.0), _settings(num_workers=2, cpu_count=4),
                         share=0.1)  # fmt: skip
    text = "\n".join(advice)
    assert "about 20 workers would be needed but there are 4 CPU cores" in text
    assert "reading and cropping take 90% of the data path" in text
    assert "augmentation takes" not in text and "BatchAugmentation" not in text  # CPU, cheap aug


def test_no_workers_is_named() -> None:
    bottleneck, advice = diagnose(_data(30.0), _step(10.0), _settings(num_workers=0, cpu_count=2))
    assert bottleneck == "data"
    assert advice[0].startswith("training.num_workers is 0") and "num_workers: 1" in advice[0]


def test_step_bottleneck_on_cpu_frees_workers_and_on_cuda_suggests_amp() -> None:
    bottleneck, advice = diagnose(_data(10.0), _step(100.0), _settings(num_workers=4))
    assert bottleneck == "step"
    text = "\n".join(advice)
    assert "10.0x headroom" in text and "a CUDA GPU" in text
    assert "training.num_workers: 1 would still feed it" in text  # ceil(4 * 0.1 * 1.15) = 1
    _, advice = diagnose(_data(10.0), _step(100.0, "cuda:0"), _settings(device="cuda:0"))
    assert any("training.amp: bf16" in line for line in advice)


@pytest.mark.parametrize(("data_ms", "step_ms"), [(10.0, 10.0), (11.0, 10.0), (10.0, 11.0)])
def test_close_timings_are_balanced(data_ms: float, step_ms: float) -> None:
    assert diagnose(_data(data_ms), _step(step_ms), _settings())[0] == "balanced"


def test_augmentation_share_from_throughputs() -> None:
    # 100 windows/s with augmentation, 400 without: 10 ms per window, 7.5 ms of it augmenting
    assert augmentation_share(_data(20.0), _data(5.0)) == pytest.approx(0.75)
    assert augmentation_share(_data(20.0), _data(30.0)) == 0.0  # noise never goes negative
    assert augmentation_share(_data(20.0), None) is None


def test_time_data_path_counts_windows_after_warmup() -> None:
    drawn: list[int] = []

    def loader():
        for index in range(10):
            drawn.append(index)
            yield {"image": torch.zeros(3, 1, 4, 4, 4)}

    timing = time_data_path(loader(), iterations=5, warmup=2)
    assert drawn == list(range(7))  # 2 warm-up batches, then 5 timed
    assert timing.batches == 5
    assert timing.windows_per_second == pytest.approx(3 * timing.batches_per_second)
    with pytest.raises(ConfigError, match="ran out of batches"):
        time_data_path(iter([{"image": torch.zeros(1, 1)}]), iterations=3, warmup=0)


def _write_experiment(root: Path, *, window: str = "[12, 12, 8]") -> Path:
    data = root / "data"
    data.mkdir()
    lines = ["subject,image,label"]
    for i in range(3):
        image, label = make_phantom((18, 16, 12), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), data / f"s{i}_image.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), data / f"s{i}_label.nii.gz")
        lines.append(f"s{i},{data}/s{i}_image.nii.gz,{data}/s{i}_label.nii.gz")
    (data / "table.csv").write_text("\n".join(lines) + "\n")
    config = root / "experiment.yaml"
    config.write_text(
        f"""dataset: {{csv: {data / "table.csv"}, inputs: {{image: [image], label: [label]}}}}
split: {{validation: 0.34, test: 0.0}}
sampling: {{window: {window}, windows_per_subject: 2, queue_length: 4}}
augmentation: [{{name: flip, axes: [0, 1]}}, {{name: affine, rotation: 10, p: 1.0}}]
network: {{name: toynet}}
loss: {{name: dice_ce}}
training: {{batch_size: 2, num_workers: 0}}
system: {{run_dir: {root / "run"}, device: cpu}}
"""
    )
    return config


LINE_PATTERNS = {
    "data": r"^data path: ([\d.]+) windows/s, ([\d.]+) batches/s \(([\d.]+) ms/batch; batch 2, 0 workers",
    "bare": r"^data path without augmentation: ([\d.]+) windows/s \(augmentation: (\d+)% of the data path\)",
    "step": r"^training step: ([\d.]+) ms/iteration on cpu ",
    "bottleneck": r"^bottleneck: (data path|training step|none \(balanced\)) \(([\d.]+) ms per batch",
}  # fmt: skip


def test_cli_profile_prints_parsable_figures_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_experiment(tmp_path)
    assert main(["profile", "-c", str(config), "--iterations", "3", "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = {
        key: next(m for line in lines if (m := re.match(pattern, line)))
        for key, pattern in LINE_PATTERNS.items()
    }
    windows, batches, ms_per_batch = (float(v) for v in found["data"].groups())
    assert windows == pytest.approx(2 * batches, rel=0.01) and ms_per_batch > 0
    assert float(found["bare"].group(1)) > 0 and 0 <= int(found["bare"].group(2)) <= 100
    assert float(found["step"].group(1)) > 0
    assert "advice:" in lines and lines[-1].startswith("  - ")
    assert not (tmp_path / "run").exists()  # a temporary run folder was used
    assert sorted(p.name for p in (tmp_path / "data").iterdir())[-1] == "table.csv"


def test_cli_profile_run_dir_gets_only_data_preparation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_experiment(tmp_path)
    run_dir = tmp_path / "profiled"
    argv = ["profile", "-c", str(config), "--run-dir", str(run_dir), "--iterations", "2",
            "--warmup", "0", "--no-augmentation-split"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data path without augmentation" not in out
    assert sorted(p.name for p in run_dir.iterdir()) == ["cache", "preprocessing.json", "split.csv"]


def test_cli_profile_rejects_bad_iterations(tmp_path: Path) -> None:
    config = _write_experiment(tmp_path)
    assert main(["profile", "-c", str(config), "--iterations", "0"]) == 2


def test_cli_profile_reports_which_augmentation_path_training_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_experiment(tmp_path)
    argv = ["profile", "-c", str(config), "--iterations", "1", "--warmup", "0",
            "--no-augmentation-split"]  # fmt: skip
    assert main(argv) == 0
    assert "augmentation runs per window in the workers (augmentation_device auto: training " \
        "runs on cpu)" in capsys.readouterr().out
    text = config.read_text().replace("num_workers: 0}", "num_workers: 0, augmentation_device: batched}")
    config.write_text(text)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "augmentation runs batched on cpu (augmentation_device batched)" in out
    assert re.search(r"^training step: ([\d.]+) ms/iteration on cpu ", out, re.M)
