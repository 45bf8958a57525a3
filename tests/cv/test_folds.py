"""``voxelflow train --fold K|all``: fold run folders, the shared split and cache, bad folds."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.cv.folds import ensure_split, fold_experiment, parse_folds, unfinished_reason
from voxelflow.errors import ConfigError


def _split(path: Path) -> dict[str, tuple[str, str]]:
    with open(path, newline="") as handle:
        return {row["subject"]: (row["split"], row["fold"]) for row in csv.DictReader(handle)}


def test_fold_out_of_range_names_value_and_range(seg_config: Path, capsys) -> None:
    assert main(["train", "-c", str(seg_config), "--set", "split.folds=5", "--fold", "7"]) == 2
    message = capsys.readouterr().err
    assert "--fold" in message and "0..4" in message and "got 7" in message
    with pytest.raises(ConfigError, match="'x'"):
        parse_folds("x", 5)
    assert parse_folds("all", 3) == [0, 1, 2] and parse_folds("2", 3) == [2]


def test_default_is_five_folds(tmp_path: Path) -> None:
    experiment = load_experiment({"system": {"run_dir": str(tmp_path / "r")}})
    assert fold_experiment(experiment, tmp_path / "r", 4).split.folds == 5
    with pytest.raises(ConfigError, match=r"0\.\.4"):
        fold_experiment(experiment, tmp_path / "r", 5)


def test_no_subject_in_two_validation_folds(seg_config: Path) -> None:
    experiment = load_experiment(seg_config)
    root = Path(experiment.system.run_dir)
    ensure_split(experiment, root)
    split = _split(root / "split.csv")
    assert len(split) == 6  # each subject one row: one fold, by construction
    folds = {fold for _, fold in split.values()}
    assert folds == {"0", "1", "2"}
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table

    rows = load_table(experiment.dataset)
    validation = []
    for k in range(3):
        config = fold_experiment(experiment, root, k)
        validation += make_split(rows, config.split, path=root / "unused.csv")["validation"]
    assert sorted(validation) == sorted(split)  # every subject validated once, none twice
    assert not (root / "unused.csv").exists()


def test_train_fold_all_skips_finished_and_folds_are_ordinary_runs(seg_config: Path) -> None:
    experiment = load_experiment(seg_config)
    root = Path(experiment.system.run_dir)
    assert main(["train", "-c", str(seg_config), "--fold", "1"]) == 0
    assert unfinished_reason(experiment, root, 1) is None
    assert "no run" in unfinished_reason(experiment, root, 0)
    stamp = (root / "fold_1" / "fold_done.json").stat().st_mtime_ns
    assert main(["train", "-c", str(seg_config), "--fold", "all"]) == 0
    assert (root / "fold_1" / "fold_done.json").stat().st_mtime_ns == stamp  # skipped
    for k in range(3):
        saved = yaml.safe_load((root / f"fold_{k}" / "config.yaml").read_text())
        assert saved["split"]["fold"] == k and Path(saved["split"]["file"]) == root / "split.csv"
        assert json.loads((root / f"fold_{k}" / "fold_done.json").read_text())["fold"] == k
        assert not (root / f"fold_{k}" / "split.csv").exists()  # one shared split file
    assert not list((root / "fold_0").glob("cache"))  # one shared cache
    assert (root / "cache").is_dir()
    # a fold's run folder is an ordinary run: infer works on its config
    fold_cfg = root / "fold_0" / "config.yaml"
    assert main(["infer", "-c", str(fold_cfg)]) == 0
    assert list((root / "fold_0" / "predictions").glob("*_seg.nii.gz"))
    # more iterations: the fold is unfinished again and resumes
    assert "now 4" in unfinished_reason(
        load_experiment(seg_config, ["training.max_iterations=4"]), root, 0
    )


@pytest.mark.slow
def test_parallel_fold_processes(seg_config: Path) -> None:
    """Two folds trained at once by two processes: both finish; the split is drawn once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "voxelflow", "-q", "train", "-c", str(seg_config), "--fold"]
    processes = [
        subprocess.Popen([*command, str(k)], env=env, stderr=subprocess.PIPE) for k in (0, 2)
    ]
    errors = [p.communicate(timeout=600)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    root = Path(load_experiment(seg_config).system.run_dir)
    assert (root / "fold_0" / "fold_done.json").exists() and (
        root / "fold_2" / "fold_done.json"
    ).exists()
    assert len(_split(root / "split.csv")) == 6


def test_second_process_on_a_busy_fold_is_refused(seg_config: Path, capsys) -> None:
    root = Path(load_experiment(seg_config).system.run_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from voxelflow.engine.run_dir import RunLock; "
            f"RunLock({str(root / 'fold_1')!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert main(["train", "-c", str(seg_config), "--fold", "1"]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert "in use" in capsys.readouterr().err
    assert not (root / "fold_1" / "checkpoints").exists()


def test_grouped_folds_keep_each_patient_in_one_fold(tmp_path: Path) -> None:
    from cv_data import segmentation_config, write_config, write_phantoms

    table = write_phantoms(tmp_path / "data", 8)  # patients p0..p3, two subjects each
    config = segmentation_config(
        table, tmp_path / "run", split={"group_column": "group", "folds": 4}
    )
    experiment = load_experiment(write_config(tmp_path / "g.yaml", config))
    path = ensure_split(experiment, tmp_path / "run")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    folds_of_group: dict[str, set[str]] = {}
    for row in rows:
        folds_of_group.setdefault(row["group"], set()).add(row["fold"])
    assert set(folds_of_group) == {"p0", "p1", "p2", "p3"}
    assert all(len(folds) == 1 for folds in folds_of_group.values())  # a patient in one fold only
