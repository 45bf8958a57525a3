"""Train / validation / test splits: grouping, stratification, k-fold, reuse, user files."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pytest

from voxelflow.config.schema import SplitConfig
from voxelflow.errors import ConfigError, DataError
from voxelflow.io.splits import check_groups, make_split
from voxelflow.io.table import SubjectRow


def make_rows(count: int, *, patients: int | None = None, classes: int = 2) -> list[SubjectRow]:
    rows = []
    for index in range(count):
        columns = {"image": f"s{index}.nii.gz", "grade": f"g{index % classes}"}
        if patients:
            columns["patient"] = f"p{index % patients}"
        rows.append(SubjectRow(f"s{index:02d}", columns))
    return rows


def all_subjects(split: dict[str, list[str]]) -> list[str]:
    return sorted(s for subjects in split.values() for s in subjects)


def test_fractions_partition_every_subject(tmp_path: Path) -> None:
    rows = make_rows(20)
    split = make_split(rows, SplitConfig(validation=0.2, test=0.1), path=tmp_path / "split.csv")
    assert all_subjects(split) == sorted(r.name for r in rows)
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (14, 4, 2)


def test_seed_changes_the_draw_and_is_deterministic(tmp_path: Path) -> None:
    rows = make_rows(30)
    a = make_split(rows, SplitConfig(seed=1), path=tmp_path / "a.csv")
    b = make_split(rows, SplitConfig(seed=1), path=tmp_path / "b.csv")
    c = make_split(rows, SplitConfig(seed=2), path=tmp_path / "c.csv")
    assert a == b and a != c


def test_no_group_in_two_splits(tmp_path: Path) -> None:
    rows = make_rows(40, patients=13)  # groups of 3-4 scans each
    config = SplitConfig(validation=0.25, test=0.2, group_column="patient", seed=5)
    split = make_split(rows, config, path=tmp_path / "split.csv")
    patient = {r.name: r.columns["patient"] for r in rows}
    groups = {name: {patient[s] for s in subjects} for name, subjects in split.items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    assert all_subjects(split) == sorted(patient)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stratification_keeps_ratios_within_one_subject(tmp_path: Path, seed: int) -> None:
    rows = make_rows(37, classes=3)
    counts = Counter(r.columns["grade"] for r in rows)
    config = SplitConfig(validation=0.3, test=0.2, stratify_column="grade", seed=seed)
    split = make_split(rows, config, path=tmp_path / "split.csv")
    grade = {r.name: r.columns["grade"] for r in rows}
    for name, fraction in (("validation", 0.3), ("test", 0.2), ("train", 0.5)):
        got = Counter(grade[s] for s in split[name])
        for value, total in counts.items():
            assert abs(got[value] - fraction * total) <= 1.0, (
                name,
                value,
                got[value],
                fraction * total,
            )


def test_kfold_each_subject_validation_exactly_once(tmp_path: Path) -> None:
    rows = make_rows(23, patients=9)
    seen: Counter[str] = Counter()
    tests = set()
    for fold in range(5):
        config = SplitConfig(folds=5, fold=fold, test=0.0, group_column="patient", seed=3)
        split = make_split(rows, config, path=tmp_path / "kfold.csv")  # same file for every fold
        assert split["test"] == []
        assert not set(split["train"]) & set(split["validation"])
        assert all_subjects(split) == sorted(r.name for r in rows)
        seen.update(split["validation"])
        tests |= set(split["test"])
    assert sorted(seen) == sorted(r.name for r in rows)
    assert set(seen.values()) == {1}


def test_kfold_with_held_out_test(tmp_path: Path) -> None:
    rows = make_rows(20)
    splits = [
        make_split(rows, SplitConfig(folds=4, fold=f, test=0.2), path=tmp_path / "k.csv")
        for f in range(4)
    ]
    assert all(s["test"] == splits[0]["test"] for s in splits) and len(splits[0]["test"]) == 4
    validation = Counter(s for split in splits for s in split["validation"])
    assert sorted(validation) == sorted(set(r.name for r in rows) - set(splits[0]["test"]))
    assert set(validation.values()) == {1}


def test_saved_split_is_reused_not_redrawn(tmp_path: Path) -> None:
    rows = make_rows(20)
    path = tmp_path / "split.csv"
    first = make_split(rows, SplitConfig(seed=0), path=path)
    assert path.is_file()
    again = make_split(rows, SplitConfig(seed=99, validation=0.5), path=path)  # settings changed
    assert again == first
    with path.open() as stream:
        assert next(csv.reader(stream)) == ["subject", "split", "fold", "group"]


def test_new_subjects_are_an_error_removed_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = make_rows(10)
    path = tmp_path / "split.csv"
    make_split(rows, SplitConfig(), path=path)
    with pytest.raises(DataError) as info:
        make_split(
            [*rows, SubjectRow("new1", {}), SubjectRow("new2", {})], SplitConfig(), path=path
        )
    assert "new1, new2" in str(info.value) and "split.csv" in str(info.value)
    with caplog.at_level(logging.WARNING):
        fewer = make_split(rows[2:], SplitConfig(), path=path)
    assert all_subjects(fewer) == sorted(r.name for r in rows[2:])
    assert "s00, s01" in caplog.text


def test_user_file_wins_and_accepts_niftynet_phases(tmp_path: Path) -> None:
    rows = make_rows(4)
    user = tmp_path / "mine.csv"
    user.write_text("subject,split\ns00,training\ns01,validation\ns02,inference\ns03,exclude\n")
    split = make_split(rows, SplitConfig(file=user), path=tmp_path / "auto.csv")
    assert split == {"train": ["s00"], "validation": ["s01"], "test": ["s02"]}
    assert not (tmp_path / "auto.csv").exists()


def test_user_file_bad_phase_and_group_leak(tmp_path: Path) -> None:
    rows = make_rows(4, patients=2)
    user = tmp_path / "mine.csv"
    user.write_text("subject,split\ns00,train\ns01,train\ns02,valdation\ns03,test\n")
    with pytest.raises(DataError, match="line 4: expected a split in"):
        make_split(rows, SplitConfig(file=user), path=tmp_path / "a.csv")
    user.write_text(
        "subject,split\ns00,train\ns01,train\ns02,validation\ns03,test\n"
    )  # p0 = s00, s02
    with pytest.raises(DataError, match="'p0' in train, validation"):
        make_split(rows, SplitConfig(file=user, group_column="patient"), path=tmp_path / "a.csv")


def test_fold_config_errors(tmp_path: Path) -> None:
    rows = make_rows(10)
    with pytest.raises(ValueError, match=r"expected fold in 0\.\.2, got 3"):  # schema check
        SplitConfig(folds=3, fold=3)
    unchecked = SplitConfig.model_construct(folds=3, fold=3)  # make_split checks it too
    with pytest.raises(ConfigError, match=r"split\.fold: expected 0\.\.2, got 3"):
        make_split(rows, unchecked, path=tmp_path / "s.csv")
    make_split(rows, SplitConfig(), path=tmp_path / "s.csv")
    with pytest.raises(ConfigError, match="has no folds, expected 3"):
        make_split(rows, SplitConfig(folds=3), path=tmp_path / "s.csv")


def test_missing_group_value(tmp_path: Path) -> None:
    rows = [SubjectRow("a", {"patient": "p"}), SubjectRow("b", {})]
    with pytest.raises(DataError, match="subject 'b' has no value in column 'patient'"):
        make_split(rows, SplitConfig(group_column="patient"), path=tmp_path / "s.csv")


def test_check_groups_passes_on_clean_split() -> None:
    rows = make_rows(4, patients=2)
    check_groups(
        rows, {"train": ["s00", "s02"], "validation": ["s01", "s03"], "test": []}, column="patient"
    )


def test_niftynet_headerless_split_file(tmp_path: Path) -> None:
    rows = make_rows(3)
    user = tmp_path / "dataset_split.csv"
    user.write_text("s00,training\ns01,Validation\ns02,inference\n")
    split = make_split(rows, SplitConfig(file=user), path=tmp_path / "auto.csv")
    assert split == {"train": ["s00"], "validation": ["s01"], "test": ["s02"]}
    user.write_text("name,phase\ns00,training\n")
    with pytest.raises(DataError, match="expected columns 'subject' and 'split'"):
        make_split(rows, SplitConfig(file=user), path=tmp_path / "auto.csv")
