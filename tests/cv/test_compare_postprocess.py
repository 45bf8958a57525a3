"""``voxelflow cv --compare``: ranking, exact Wilcoxon and Holm (hand values); postprocessing
decided from out-of-fold label maps (hand Dice, and the project's postprocess_labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxelflow.applications.segmentation.postprocess import postprocess_labels
from voxelflow.cli.main import main
from voxelflow.cv.compare import compare_runs, holm, paired_test, smallest_p
from voxelflow.cv.postprocess import apply_postprocessing, decide_from_arrays
from voxelflow.errors import ConfigError


def _fake_run(
    root: Path, values: dict[str, float], split_text: str, *, higher: bool = True
) -> Path:
    (root / "cv").mkdir(parents=True)
    (root / "split.csv").write_text(split_text)
    data = {
        "application": "segmentation",
        "metric": "dice",
        "higher_is_better": higher,
        "value": sum(values.values()) / len(values),
        "n": len(values),
        "per_subject": values,
        "split_file": str(root / "split.csv"),
    }
    (root / "cv" / "cv_metric.json").write_text(json.dumps(data))
    return root


SPLIT = "subject,split,fold,group\n" + "".join(f"s{i},train,{i % 3},\n" for i in range(6))


def test_holm_and_smallest_p_hand_values() -> None:
    # Holm: sorted 0.01, 0.03, 0.04 → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert smallest_p(5) == pytest.approx(0.0625) and smallest_p(0) == 1.0
    # all five differences positive: exact two-sided p = 2 / 2**5; a tie is left out
    n, statistic, p = paired_test([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 6])
    assert (n, statistic) == (5, 0.0) and p == pytest.approx(0.0625)


def test_compare_ranks_and_tests_every_pair(tmp_path: Path, capsys) -> None:
    base = {f"s{i}": 0.5 + 0.01 * i for i in range(6)}
    better = {s: v + 0.05 + 0.001 * i for i, (s, v) in enumerate(base.items())}
    mixed = {s: v + (0.02 if i % 2 else -0.01) for i, (s, v) in enumerate(base.items())}
    runs = [
        _fake_run(tmp_path / n, d, SPLIT)
        for n, d in (("base", base), ("better", better), ("mixed", mixed))
    ]
    comparison = compare_runs(runs)
    assert [Path(r).name for r, _ in comparison.ranking] == ["better", "mixed", "base"]
    first = comparison.tests[0]  # better vs mixed: all six differences positive
    assert first.n == 6 and first.p == pytest.approx(2 / 2**6)
    from scipy.stats import wilcoxon

    raw = [
        wilcoxon([better[s] for s in base], [other[s] for s in base], method="exact").pvalue
        for other in (mixed, base)
    ]
    assert [t.p for t in comparison.tests[:2]] == pytest.approx(raw)
    assert [t.p_holm for t in comparison.tests] == pytest.approx(
        holm([t.p for t in comparison.tests])
    )
    assert (tmp_path / "base" / "cv" / "compare" / "pairs.csv").exists()
    assert main(["cv", "--compare", *map(str, runs), "--no-ensembles"]) == 0
    out = capsys.readouterr().out
    assert "smallest p possible with n=6" in out and "1. " in out


def test_compare_refuses_different_splits_naming_both_files(tmp_path: Path, capsys) -> None:
    values = {f"s{i}": 0.5 for i in range(6)}
    a = _fake_run(tmp_path / "a", values, SPLIT)
    b = _fake_run(tmp_path / "b", values, SPLIT.replace("s0,train,0", "s0,train,1"))
    with pytest.raises(ConfigError, match="different splits"):
        compare_runs([a, b])
    assert main(["cv", "--compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert str(a / "split.csv") in err and str(b / "split.csv") in err
    with pytest.raises(ConfigError, match="voxelflow cv"):
        compare_runs([a, tmp_path / "missing"])


def _cube(shape, box, value=1):
    label = np.zeros(shape, np.int16)
    label[box] = value
    return label


def test_postprocessing_largest_component_switched_on_only_when_it_helps() -> None:
    shape = (12, 12, 12)
    ref = _cube(shape, np.s_[2:6, 2:6, 2:6], 2)
    pred = ref.copy()
    pred[9:11, 9:11, 9:11] = 2  # a spurious 8-voxel component
    cases = {"a": (pred, ref, 1.0), "b": (ref.copy(), ref, 1.0)}
    decision = decide_from_arrays(cases, [2])
    rule = decision["classes"]["2"]
    # hand Dice: a = 2·64 / (72 + 64), b = 1
    assert rule["dice_before"] == pytest.approx((2 * 64 / 136 + 1) / 2)
    assert rule["keep_largest_component"] and rule["dice_after"] == pytest.approx(1.0)
    assert decision["after"] == pytest.approx(1.0) and decision["before"] < 1.0
    cleaned = apply_postprocessing(pred, decision, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(cleaned, postprocess_labels(pred, keep_largest=True))


def test_postprocessing_min_volume_from_component_volumes() -> None:
    shape = (16, 16, 16)
    ref = _cube(shape, np.s_[1:5, 1:5, 1:5], 1) + _cube(shape, np.s_[8:11, 8:11, 8:11], 1)
    pred = ref.copy()
    pred[14, 14, 14] = 1  # one false-positive voxel
    spacing_volume = 2.0  # mm³ per voxel
    decision = decide_from_arrays({"a": (pred, ref, spacing_volume)}, [1])
    rule = decision["classes"]["1"]
    assert not rule["keep_largest_component"]  # would drop the 27-voxel true component
    # removing components below any threshold in (2, 54] mm³ removes only the false voxel
    assert 2.0 < rule["min_component_volume_mm3"] <= 54.0
    assert rule["dice_after"] == pytest.approx(1.0)
    assert rule["dice_before"] == pytest.approx(2 * 91 / (92 + 91))
    cleaned = apply_postprocessing(pred, decision, (1.0, 1.0, 2.0))
    reference = postprocess_labels(
        pred, min_volume_mm3=rule["min_component_volume_mm3"], spacing=(1.0, 1.0, 2.0)
    )
    np.testing.assert_array_equal(cleaned, reference)
    np.testing.assert_array_equal(cleaned, ref)


def test_postprocessing_nothing_switched_when_nothing_helps() -> None:
    ref = _cube((8, 8, 8), np.s_[2:5, 2:5, 2:5], 1)
    decision = decide_from_arrays({"a": (ref.copy(), ref, 1.0)}, [1])
    rule = decision["classes"]["1"]
    assert not rule["keep_largest_component"] and rule["min_component_volume_mm3"] == 0.0
    assert decision["before"] == decision["after"] == pytest.approx(1.0)


@pytest.mark.slow
def test_compare_two_real_configurations_and_their_ensemble(tmp_path: Path, capsys) -> None:
    """Two configurations on one split file: ranked with their pair ensemble, whose per-subject
    Dice is recomputed here from the two runs' out-of-fold probabilities."""
    import csv

    import nibabel as nib
    from cv_data import segmentation_config, write_config, write_phantoms

    table = write_phantoms(tmp_path / "data", 6)
    runs = []
    for name, channels in (("small", [4, 8]), ("wide", [8, 8])):
        config = segmentation_config(table, tmp_path / name, network={"channels": channels})
        if runs:  # the second configuration reuses the first one's split file
            config["split"]["file"] = str(tmp_path / "small" / "split.csv")
        path = write_config(tmp_path / f"{name}.yaml", config)
        assert main(["train", "-c", str(path), "--fold", "all"]) == 0
        assert main(["cv", "-c", str(path), "--no-report", "--no-postprocessing"]) == 0
        runs.append(tmp_path / name)
    (tmp_path / "wide" / "split.csv").write_text((tmp_path / "small" / "split.csv").read_text())
    comparison = compare_runs(runs)
    names = [run for run, _ in comparison.ranking]
    pair = f"{runs[0]} + {runs[1]}"
    assert pair in names and len(comparison.tests) == 3
    values = dict(comparison.ranking)
    dice = []
    for subject in [f"s{i}" for i in range(6)]:
        probs = []
        for run in runs:
            with open(run / "cv" / "predictions" / "inferred.csv", newline="") as handle:
                row = next(r for r in csv.DictReader(handle) if r["subject"] == subject)
            probs.append(np.asarray(nib.load(row["prob"]).dataobj))
        labels = np.array([0, 2, 4])[np.argmax((probs[0] + probs[1]) / 2, axis=-1)]
        ref = np.asarray(nib.load(tmp_path / "data" / f"{subject}_seg.nii.gz").dataobj)
        scores = []
        for v in (2, 4):
            total = (labels == v).sum() + (ref == v).sum()
            if total:
                scores.append(2 * ((labels == v) & (ref == v)).sum() / total)
        dice.append(np.mean(scores))
    assert values[pair] == pytest.approx(np.mean(dice))
