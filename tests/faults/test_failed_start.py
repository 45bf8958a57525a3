"""A start that failed before its first checkpoint leaves no trap: the corrected config trains."""

from __future__ import annotations

from pathlib import Path

import yaml

from voxelflow.cli.main import main


def test_corrected_config_after_a_failed_start_trains_and_keeps_the_old_config(
    tmp_path: Path, phantom_table, capsys
) -> None:
    table = phantom_table(tmp_path / "data", shape=(16, 16, 8))
    folder = table.parent
    label = folder / "s1_seg.nii.gz"
    good = label.read_bytes()
    label.write_bytes(good[: len(good) // 2])  # a truncated label: found only when voxels are read
    config = {
        "dataset": {"csv": str(folder / "table.csv")},
        "split": {"validation": 0.5},
        "sampling": {"window": [16, 16, 8], "queue_length": 2},
        "network": {"name": "unet", "channels": [2, 4]},
        "training": {"max_iterations": 2, "batch_size": 1, "num_workers": 0, "checkpoint_every": 2},
        "system": {"run_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) != 0
    assert (tmp_path / "run" / "config.yaml").is_file()  # the failed start wrote its config
    capsys.readouterr()
    label.write_bytes(good)  # the user fixes the file and changes the config
    config["sampling"]["window"] = [8, 8, 8]
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "-c", str(path)]) == 0, capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "run" / "superseded" / "0" / "config.yaml").read_text())
    assert saved["sampling"]["window"] == [16, 16, 8]  # the failed start's config is kept, not lost
    assert list((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
