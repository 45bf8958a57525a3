"""``voxelflow demo --real-subjects``: an explicit cache must hold subjects; only the
segmentation demo checks real heads; ``--quick`` checks only when given a cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxelflow.cli.main import main
from voxelflow.demo.data import TISSUE_NAMES, DemoData
from voxelflow.demo.run import check_real_subjects
from voxelflow.errors import DataError


def _data(tmp_path: Path) -> DemoData:
    return DemoData(tmp_path / "train.csv", tmp_path / "test.csv", "mni152", dict(TISSUE_NAMES))


def test_an_explicit_cache_without_subjects_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--real-subjects: no real subject in .*colin27.*--fetch"):
        check_real_subjects(tmp_path / "run", _data(tmp_path), tmp_path / "empty", quick=False)


def test_quick_checks_nothing_without_a_cache(tmp_path: Path) -> None:
    assert check_real_subjects(tmp_path / "run", _data(tmp_path), None, quick=True) is None


def test_the_default_cache_missing_is_skipped_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from voxelflow.demo import generalisation

    monkeypatch.setattr(generalisation, "DEFAULT_CACHE", tmp_path / "no-cache")
    assert check_real_subjects(tmp_path / "run", _data(tmp_path), None, quick=False) is None
    assert "real-subject check skipped" in caplog.text and "--fetch" in caplog.text


def test_other_demos_refuse_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--app", "regression", "--quick", "--out", str(tmp_path / "d"),
                 "--real-subjects", str(tmp_path)])  # fmt: skip
    assert code != 0
    assert "--real-subjects: the regression demo has no check on real subjects" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before any data was made


def test_release_and_quick_exclude_each_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--quick", "--release", "--out", str(tmp_path / "d")])
    assert code != 0
    assert "--quick and --release exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_only_the_segmentation_demo_has_a_release_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--app", "gan", "--release", "--out", str(tmp_path / "d")])
    assert code != 0
    assert "--release: the gan demo ships no model" in capsys.readouterr().err


def test_release_settings_train_the_shipped_entry_at_its_spacing() -> None:
    import yaml

    from voxelflow.demo.run import RELEASE, demo_settings

    assert demo_settings(release=True) == (RELEASE, "-release")
    model = yaml.safe_load((Path(__file__).resolve().parents[2] / "zoo" / "voxelflow-demo-tissue"
                            / "model.yaml").read_text())  # fmt: skip
    assert model["inputs"]["spacing"] == [RELEASE.spacing] * 3
