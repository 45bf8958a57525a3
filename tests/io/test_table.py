"""Dataset tables from CSV, folder patterns and MSD / nnU-Net dataset.json folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from voxelflow.config.schema import DatasetConfig
from voxelflow.errors import ConfigError, DataError, MissingFileError
from voxelflow.io.table import SubjectRow, load_table, read_csv_table, subject_id, write_table


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- CSV
def test_csv_keeps_every_column_and_resolves_relative_paths(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "data" / "subjects.csv",
        "subject,image,label,age,patient\ns1,img/s1.nii.gz,lab/s1.nii.gz,54,p1\n"
        f"s2,{tmp_path / 'elsewhere' / 's2.nii.gz'},lab/s2.nii.gz,61,p1\n",  # an absolute path
    )
    rows = load_table(DatasetConfig(csv=table))
    assert [r.name for r in rows] == ["s1", "s2"]
    assert rows[0].columns == {
        "image": "img/s1.nii.gz",
        "label": "lab/s1.nii.gz",
        "age": "54",
        "patient": "p1",
    }
    assert rows[0].path("image") == tmp_path / "data" / "img" / "s1.nii.gz"
    assert rows[1].path("image") == tmp_path / "elsewhere" / "s2.nii.gz"  # kept as given


def test_csv_relative_to_base_dir(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", "subject,image,label\na,a.nii,al.nii\n")
    rows = load_table(DatasetConfig(csv=Path("t.csv")), base_dir=tmp_path)
    assert rows[0].base_dir == tmp_path


def test_csv_missing_column_lists_present_columns(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "t.csv", "subject,t1,seg\na,a.nii,a_seg.nii\n")
    with pytest.raises(DataError) as info:
        load_table(DatasetConfig(csv=table, inputs={"image": ["t1", "t2"], "label": "seg"}))
    message = str(info.value)
    assert "t.csv" in message and "expected a column 't2'" in message
    assert "['subject', 't1', 'seg']" in message


def test_csv_missing_subject_column(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "t.csv", "id,image,label\na,a.nii,b.nii\n")
    with pytest.raises(DataError, match=r"expected a column 'subject'.*dataset.subject_column"):
        load_table(DatasetConfig(csv=table))
    rows = load_table(DatasetConfig(csv=table, subject_column="id"))
    assert rows[0].name == "a" and "id" not in rows[0].columns


def test_csv_duplicate_subject_ids_name_rows(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "t.csv", "subject,image,label\na,1,1\nb,2,2\na,3,3\nb,4,4\nc,5,5\n"
    )
    with pytest.raises(DataError) as info:
        load_table(DatasetConfig(csv=table))
    assert "duplicates: 'a' at 2, 4; 'b' at 3, 5" in str(info.value)


def test_csv_empty_required_cells_listed(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "t.csv", "subject,image,label\na,a.nii,\nb,,b.nii\nc,c.nii,c.nii\n"
    )
    with pytest.raises(DataError) as info:
        load_table(DatasetConfig(csv=table))
    message = str(info.value)
    assert (
        "2 empty" in message and "line 2 (a): label" in message and "line 3 (b): image" in message
    )
    rows = load_table(DatasetConfig(csv=table, incomplete_subjects="drop"))
    assert [r.name for r in rows] == ["c"]
    # at inference only the image is required
    with pytest.raises(DataError, match="line 3 \\(b\\): image"):
        load_table(DatasetConfig(csv=table), required=["image"])


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"nope.csv"):
        load_table(DatasetConfig(csv=tmp_path / "nope.csv"))


def test_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="expected exactly one of csv, folders, msd, got none"):
        load_table(DatasetConfig())


# --------------------------------------------------------------------------- folders
def brats_folder(root: Path, subjects: list[str], modalities: list[str]) -> Path:
    for subject in subjects:
        for modality in modalities:
            touch(root / f"BRATS_{subject}_{modality}.nii.gz")
    return root


def folder_config(root: Path, **extra: object) -> DatasetConfig:
    folders = {
        "T1": {"path": root, "contains": ["T1"], "not_contains": ["T1c"]},
        "T1c": {"path": root, "contains": ["T1c"]},
        "label": {"path": root, "contains": ["Label"]},
    }
    return DatasetConfig(
        folders=folders, inputs={"image": ["T1", "T1c"], "label": ["label"]}, **extra
    )


def test_folder_patterns_join_on_subject_id(tmp_path: Path) -> None:
    root = brats_folder(tmp_path / "brats", ["HG0001", "HG0002"], ["T1", "T1c", "Label"])
    touch(root / "notes.txt")
    rows = load_table(folder_config(root))
    assert [r.name for r in rows] == ["BRATS_HG0001", "BRATS_HG0002"]
    assert (
        Path(rows[0].columns["T1"]).name == "BRATS_HG0001_T1.nii.gz"
    )  # T1c excluded by not_contains
    assert rows[0].path("label") == root / "BRATS_HG0001_Label.nii.gz"


def test_incomplete_subjects_listed_per_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = brats_folder(tmp_path / "brats", ["HG0001", "HG0002", "HG0003"], ["T1", "T1c"])
    touch(root / "BRATS_HG0001_Label.nii.gz")
    with pytest.raises(DataError) as info:
        load_table(folder_config(root))
    assert "label: BRATS_HG0002, BRATS_HG0003" in str(info.value)
    with caplog.at_level(logging.WARNING):
        rows = load_table(folder_config(root, incomplete_subjects="drop"))
    assert [r.name for r in rows] == ["BRATS_HG0001"]
    assert "dropping them" in caplog.text


def test_empty_pattern_names_folder_and_pattern(tmp_path: Path) -> None:
    root = brats_folder(tmp_path / "brats", ["HG0001"], ["T1", "T1c"])
    with pytest.raises(DataError) as info:
        load_table(folder_config(root))
    message = str(info.value)
    assert "dataset.folders.label" in message and str(root) in message
    assert "contains=['Label']" in message and "2 file(s) matched the glob" in message


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"dataset.folders.T1.path"):
        load_table(folder_config(tmp_path / "absent"))


def test_duplicate_ids_in_a_folder(tmp_path: Path) -> None:
    touch(tmp_path / "a_T1.nii.gz")
    touch(tmp_path / "a_T1.nii")
    config = DatasetConfig(
        folders={"T1": {"path": tmp_path, "contains": ["T1"]}}, inputs={"image": "T1"}
    )
    with pytest.raises(DataError, match=r"duplicates: 'a' at a_T1.nii, a_T1.nii.gz"):
        load_table(config)


def test_subject_regex_and_recursive_glob(tmp_path: Path) -> None:
    touch(tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    touch(tmp_path / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    config = DatasetConfig(
        folders={
            "t1": {"path": tmp_path, "glob": "**/*_T1w.nii.gz", "subject_regex": r"sub-(\d+)"}
        },
        inputs={"image": "t1"},
    )
    assert [r.name for r in load_table(config)] == ["01", "02"]


@pytest.mark.parametrize(
    ("name", "contains", "expected"),
    [
        ("T1_001_img.nii.gz", ["T1", "img"], "001"),
        ("BRATS_HG0005_T1.nii.gz", ["T1"], "BRATS_HG0005"),
        ("case7.mha", [], "case7"),
        ("pat3-flair-x.nrrd", ["flair"], "pat3_x"),
    ],
)
def test_subject_id_rules(name: str, contains: list[str], expected: str) -> None:
    assert subject_id(name, contains=contains) == expected


def test_subject_id_nothing_left() -> None:
    with pytest.raises(DataError, match="set subject_regex"):
        subject_id("T1.nii.gz", contains=["T1"])


# --------------------------------------------------------------------------- MSD / nnU-Net
def test_msd_dataset_json(tmp_path: Path) -> None:
    info = {
        "name": "Prostate",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "training": [
            {"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"},
            {"image": "./imagesTr/prostate_01.nii.gz", "label": "./labelsTr/prostate_01.nii.gz"},
        ],
        "test": ["./imagesTs/prostate_03.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    rows = load_table(DatasetConfig(msd=tmp_path))
    assert [r.name for r in rows] == ["prostate_00", "prostate_01"]
    assert rows[1].path("label") == tmp_path / "labelsTr" / "prostate_01.nii.gz"
    from voxelflow.io.table import dataset_labels

    assert dataset_labels(tmp_path) == {0: "background", 1: "PZ", 2: "TZ"}


def test_nnunet_v2_channels(tmp_path: Path) -> None:
    info = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    for case in ("c_001", "c_002"):
        for channel in ("0000", "0001"):
            touch(tmp_path / "imagesTr" / f"{case}_{channel}.nii.gz")
        touch(tmp_path / "labelsTr" / f"{case}.nii.gz")
    config = DatasetConfig(
        msd=tmp_path, inputs={"image": ["image_0000", "image_0001"], "label": "label"}
    )
    rows = load_table(config)
    assert [r.name for r in rows] == ["c_001", "c_002"]
    assert rows[0].path("image_0001") == tmp_path / "imagesTr" / "c_001_0001.nii.gz"
    assert rows[0].path("label") == tmp_path / "labelsTr" / "c_001.nii.gz"
    with pytest.raises(DataError, match="image: c_001, c_002"):  # default inputs: column 'image'
        load_table(DatasetConfig(msd=tmp_path))
    from voxelflow.io.table import dataset_labels

    assert dataset_labels(tmp_path) == {0: "background", 1: "lesion"}


def test_msd_missing_json(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"dataset.json"):
        load_table(DatasetConfig(msd=tmp_path))


# --------------------------------------------------------------------------- writing
def test_write_table_round_trip_rebases_paths(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "img" / "a.nii.gz")
    rows = [
        SubjectRow("a", {"image": "img/a.nii.gz", "age": "3"}, tmp_path / "data"),
        SubjectRow("b", {"image": str(tmp_path / "elsewhere" / "b.nii.gz"), "group": "g"},
                   tmp_path / "data"),
    ]
    target = write_table(rows, tmp_path / "out" / "table.csv")
    back = read_csv_table(target)
    assert [r.name for r in back] == ["a", "b"]
    assert back[0].path("image").resolve() == (tmp_path / "data" / "img" / "a.nii.gz").resolve()
    assert back[0].columns["age"] == "3" and back[1].columns["group"] == "g"
    assert back[1].columns["image"] == str(tmp_path / "elsewhere" / "b.nii.gz")  # absolute: kept


def test_dataset_json_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("[1, 2]")
    from voxelflow.io.table import dataset_labels

    with pytest.raises(DataError, match=r"dataset.json: expected a JSON object, got list"):
        dataset_labels(tmp_path)


# --------------------------------------------------------------------------- prediction tables
def test_prediction_table_rows_and_files_as_written(tmp_path: Path) -> None:
    from voxelflow.io.table import prediction_files, read_prediction_table

    table = tmp_path / "inferred.csv"
    elsewhere = tmp_path / "x" / "b.nii.gz"  # an absolute path is kept as written
    table.write_text(f"subject,prediction,prob\na,out/a_seg.nii.gz,out/a_prob.nii.gz\nb,{elsewhere},\n")
    rows = read_prediction_table(table, columns=["prediction"])
    assert [row["subject"] for row in rows] == ["a", "b"] and rows[1]["prob"] == ""
    assert prediction_files(table) == {"a": Path("out/a_seg.nii.gz"), "b": elsewhere}
    assert prediction_files(table, "prob")["a"] == Path("out/a_prob.nii.gz")
    table.write_text("subject,prediction\n")
    assert read_prediction_table(table) == []  # a header only is a table without predictions


def test_prediction_table_errors_name_the_file_and_the_column(tmp_path: Path) -> None:
    from voxelflow.io.table import read_prediction_table

    table = tmp_path / "predictions.csv"
    with pytest.raises(MissingFileError, match=r"prediction table '.*predictions\.csv'.*found none"):
        read_prediction_table(table)
    table.write_text("subject,mu_0\na,0.1\n")
    with pytest.raises(DataError, match=r"predictions\.csv': expected columns 'subject', 'recon' "
                                        r"and 'x', got \['subject', 'mu_0'\] \(missing 'recon' and 'x'\)!"):  # fmt: skip
        read_prediction_table(table, columns=["recon", "x"], hint="!")
    table.write_text("name,prediction\n")
    with pytest.raises(DataError, match=r"expected columns 'subject' and 'prediction'.*missing 'subject'"):
        read_prediction_table(table, columns=["prediction"])
    table.write_text("subject,prediction\n")
    with pytest.raises(DataError, match=r"predictions\.csv': expected at least one row"):
        read_prediction_table(table, require_rows=True)
