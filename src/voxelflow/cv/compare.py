"""Model selection: ``voxelflow cv --compare RUN_A RUN_B ...``.

Runs (after ``voxelflow cv``) are ranked by their CV metric (``cv/cv_metric.json``). Every pair
is tested across subjects with the two-sided Wilcoxon signed-rank test, exact p-values
(``scipy.stats.wilcoxon(method="exact")``; subjects with equal values are left out, so ``n`` is
the number of subjects that differ), and the p-values are Holm-corrected across pairs. With
``n`` differing subjects no exact two-sided p below ``2 / 2**n`` exists (every difference of one
sign): that bound is reported beside each p so that "not significant" can be told apart from
"too few subjects to ever be significant".

The ensemble of every two runs (``A + B``: their out-of-fold class probabilities, outputs or
class probabilities averaged, as ``infer --folds`` averages members: the application's
``ensemble_mode``) is scored on the same subjects and ranked and tested with the runs
(segmentation, regression, classification, a plugin that declares a mode; an application
without one is ranked without pair ensembles).

Runs made on different splits are refused (the paired test needs the same subjects in the same
folds), naming both split files.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelflow.applications import APPLICATIONS
from voxelflow.applications.base import Application
from voxelflow.config.schema import ExperimentConfig
from voxelflow.cv.ensemble import ENSEMBLE_MODES
from voxelflow.cv.oof import read_metric_file
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)


@dataclass
class PairTest:
    """One paired comparison of two runs.

    Attributes:
        a, b: the run folders (``a`` ranked higher).
        n: subjects whose values differ (the test's sample size).
        statistic: the Wilcoxon statistic (smaller signed-rank sum).
        p: exact two-sided p-value; ``p_holm``: Holm-adjusted.
        min_p: the smallest two-sided p attainable with ``n``.
        mean_difference: mean of ``a − b`` over all common subjects (metric units).
    """

    a: str
    b: str
    n: int
    statistic: float
    p: float
    p_holm: float
    min_p: float
    mean_difference: float


def smallest_p(n: int) -> float:
    """The smallest exact two-sided Wilcoxon signed-rank p-value with ``n`` non-zero differences."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given).

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[int, float, float]:
    """``(n, statistic, p)`` of the exact two-sided Wilcoxon signed-rank test of ``a`` vs ``b``."""
    from scipy.stats import wilcoxon

    pairs = [(x, y) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    n = sum(1 for x, y in pairs if x != y)
    if n == 0:
        return 0, 0.0, 1.0
    result = wilcoxon([x for x, _ in pairs], [y for _, y in pairs], method="exact",
                      zero_method="wilcox")  # fmt: skip
    return n, float(result.statistic), float(result.pvalue)


def _split_assignment(path: Path) -> dict[str, tuple[str, str]]:
    with open(path, newline="") as handle:
        return {
            r["subject"]: (r.get("split", ""), r.get("fold", "")) for r in csv.DictReader(handle)
        }


def check_same_split(runs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Refuse runs whose split files assign subjects differently (both files named).

    Raises:
        ConfigError: ``runs on different splits: a/split.csv and b/split.csv differ ...``.
    """
    first_run, first = runs[0]
    reference = _split_assignment(Path(first["split_file"]))
    for run, data in runs[1:]:
        other = _split_assignment(Path(data["split_file"]))
        if other != reference:
            differing = sorted(
                s for s in set(reference) | set(other) if reference.get(s) != other.get(s)
            )
            raise ConfigError(
                f"--compare: runs on different splits cannot be paired: {first['split_file']} "
                f"({first_run}) and {data['split_file']} ({run}) differ for {len(differing)} "
                f"subject(s), e.g. {differing[:5]}; train both on one split (split.file)"
            )
        if data["metric"] != first["metric"] or data["application"] != first["application"]:
            raise ConfigError(
                f"--compare: expected runs of one application and CV metric, got "
                f"{first['application']}/{first['metric']} ({first_run}) and "
                f"{data['application']}/{data['metric']} ({run})"
            )


@dataclass
class Comparison:
    """Ranking (best first: run, value) and the pairwise tests."""

    metric: str
    higher_is_better: bool
    ranking: list[tuple[str, float]]
    tests: list[PairTest]
    n_subjects: int


def _table_path(run: Path, app_class: type[Application]) -> Path:
    """The merged out-of-fold prediction table ``voxelflow cv`` wrote in ``run``."""
    return Path(run) / "cv" / "predictions" / app_class.prediction_table


def _read_table(run: Path, app_class: type[Application]) -> dict[str, dict[str, str]]:
    from voxelflow.io.table import read_prediction_table

    return {row["subject"]: row for row in read_prediction_table(_table_path(run, app_class))}


def _run_config(run: Path) -> ExperimentConfig:
    from voxelflow.config.load import load_experiment

    return load_experiment(run / "fold_0" / "config.yaml")


def pair_ensemble(a: Path, b: Path, application: str) -> tuple[float, dict[str, float]] | None:
    """CV metric and per-subject values of the two-run ensemble ``a + b`` (None: not defined).

    What is averaged and how it is scored follows the application's ``ensemble_mode``
    (:mod:`voxelflow.cv.ensemble`); an application without one has no pair ensemble.
    """
    app_class = APPLICATIONS.get(application)
    if app_class.ensemble_mode not in ENSEMBLE_MODES:
        log.info(
            "no ensembles of %s runs: application %r (%s) declares no ensemble_mode",
            application, app_class.name, app_class.__name__,
        )  # fmt: skip
        return None
    missing = [r for r in (a, b) if not _table_path(Path(r), app_class).is_file()]
    if missing:
        log.warning(
            "ensemble %s + %s not evaluated: no out-of-fold predictions in %s", a, b, missing
        )
        return None
    tables = [_read_table(Path(a), app_class), _read_table(Path(b), app_class)]
    subjects = sorted(set(tables[0]) & set(tables[1]))
    experiment = _run_config(Path(a))
    if app_class.ensemble_mode == "class_probabilities":
        return _classification_pair(tables, subjects, experiment, _rows(experiment))
    return _image_pair(Path(a), app_class, tables, subjects, experiment)


def _rows(experiment: ExperimentConfig) -> dict[str, SubjectRow]:
    from voxelflow.io.table import load_table

    return {row.name: row for row in load_table(experiment.dataset)}


def _image_pair(
    a: Path,
    app_class: type[Application],
    tables: Sequence[dict[str, dict[str, str]]],
    subjects: Sequence[str],
    experiment: ExperimentConfig,
) -> tuple[float, dict[str, float]] | None:
    """Mean of two runs' probability maps (Dice of the argmax) or images (MAE) per subject,
    against the subject's ``reference_role`` file (None: no reference to score against)."""
    import numpy as np

    from voxelflow.io.readers import read_image

    probabilities = app_class.ensemble_mode == "probabilities"
    column = "prob" if probabilities else app_class.output_column
    role = app_class.reference_role
    if role is None or not experiment.dataset.inputs.get(role):
        return None
    rows = _rows(experiment)
    per_subject: dict[str, float] = {}
    for subject in subjects:
        if not all(t[subject].get(column) for t in tables):
            return None  # a run inferred without probabilities (before they were kept)
        images = [read_image(Path(t[subject][column])) for t in tables]
        if images[0].data.shape != images[1].data.shape:
            return None
        mean = (images[0].numpy() + images[1].numpy()) / 2.0
        path = rows[subject].path(experiment.dataset.inputs[role][0])
        if not probabilities:
            per_subject[subject] = float(np.abs(mean - read_image(path).numpy()).mean())
            continue
        reference = read_image(path, kind="label")
        per_subject[subject] = _mean_dice(mean, reference.numpy()[0], _label_values(a))
    values = [v for v in per_subject.values() if not math.isnan(v)]
    return (sum(values) / len(values) if values else math.nan), per_subject


def _label_values(run: Path) -> list[int]:
    import json

    state = json.loads((run / "fold_0" / "preprocessing.json").read_text())
    return [int(v) for v in state["label_values"]]


def _mean_dice(probabilities: Any, reference: Any, label_values: Sequence[int]) -> float:
    """Mean foreground Dice of the argmax of ``(K, *spatial)`` probabilities (label values)."""
    import numpy as np

    from voxelflow.metrics.overlap import dice

    labels = np.asarray(label_values)[np.argmax(probabilities, axis=0)]
    scores = [dice(labels == v, reference == v) for v in label_values if v != 0]
    finite = [x for x in scores if not math.isnan(x)]
    return sum(finite) / len(finite) if finite else math.nan


def _classification_pair(
    tables: Sequence[dict[str, dict[str, str]]],
    subjects: Sequence[str],
    experiment: ExperimentConfig,
    rows: dict[str, SubjectRow],
) -> tuple[float, dict[str, float]] | None:
    import numpy as np

    from voxelflow.metrics.classification import balanced_accuracy

    header = list(next(iter(tables[0].values())))
    classes = [c.removeprefix("prob_") for c in header if c.startswith("prob_")]
    if not classes:
        return None  # value targets: mean of the two predictions
    column = experiment.task["target_column"]
    per_subject, predicted, reference = {}, [], []
    for subject in subjects:
        mean = [sum(float(t[subject][f"prob_{c}"]) for t in tables) / 2 for c in classes]
        guess = max(range(len(classes)), key=lambda i: mean[i])
        truth = classes.index(rows[subject].columns[column])
        per_subject[subject] = float(guess == truth)
        predicted.append(guess)
        reference.append(truth)
    accuracy = balanced_accuracy(
        np.asarray(predicted), np.asarray(reference), num_classes=len(classes)
    )
    return accuracy, per_subject


def compare_runs(
    run_dirs: Sequence[str | Path], *, out: Path | None = None, ensembles: bool = True
) -> Comparison:
    """Rank runs by their CV metric and test every pair (see the module docstring).

    Args:
        run_dirs: run folders holding ``cv/cv_metric.json`` (two or more).
        out: folder for ``ranking.csv`` and ``pairs.csv`` (default: the first run's ``cv/compare``).
        ensembles: also rank and test the ensemble of every two runs.

    Raises:
        ConfigError: fewer than two runs, a run without ``voxelflow cv``, different splits.
    """
    if len(run_dirs) < 2:
        raise ConfigError(
            f"--compare: expected two or more run folders, got {list(map(str, run_dirs))}"
        )
    runs = [(str(r), read_metric_file(Path(r))) for r in run_dirs]
    check_same_split(runs)
    first = runs[0][1]
    higher = bool(first["higher_is_better"])
    entries = list(runs)
    if ensembles:
        for i, (a, _) in enumerate(runs):
            for b, _ in runs[i + 1 :]:
                scored = pair_ensemble(Path(a), Path(b), first["application"])
                if scored is not None:
                    entries.append((f"{a} + {b}", {"value": scored[0], "per_subject": scored[1]}))
    ranking = sorted(((run, float(d["value"])) for run, d in entries),
                     key=lambda item: -item[1] if higher else item[1])  # fmt: skip
    by_run = dict(entries)
    subjects = sorted(set.intersection(*(set(d["per_subject"]) for _, d in entries)))
    raw: list[tuple[str, str, int, float, float, float]] = []
    for i, (a, _) in enumerate(ranking):
        for b, _ in ranking[i + 1 :]:
            values_a = [float(by_run[a]["per_subject"][s]) for s in subjects]
            values_b = [float(by_run[b]["per_subject"][s]) for s in subjects]
            n, statistic, p = paired_test(values_a, values_b)
            diffs = [
                x - y for x, y in zip(values_a, values_b) if not (math.isnan(x) or math.isnan(y))
            ]
            raw.append((a, b, n, statistic, p, sum(diffs) / len(diffs) if diffs else math.nan))
    adjusted = holm([item[4] for item in raw])
    tests = [
        PairTest(a, b, n, statistic, p, q, smallest_p(n), diff)
        for (a, b, n, statistic, p, diff), q in zip(raw, adjusted)
    ]
    comparison = Comparison(first["metric"], higher, ranking, tests, len(subjects))
    write_comparison(comparison, Path(out) if out else Path(run_dirs[0]) / "cv" / "compare")
    return comparison


def write_comparison(comparison: Comparison, out: Path) -> None:
    """``ranking.csv`` and ``pairs.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ranking.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "run", comparison.metric])
        for rank, (run, value) in enumerate(comparison.ranking, start=1):
            writer.writerow([rank, run, value])
    with open(out / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "n", "statistic", "p", "p_holm", "min_p", "mean_difference"])
        for t in comparison.tests:
            writer.writerow([t.a, t.b, t.n, t.statistic, t.p, t.p_holm, t.min_p, t.mean_difference])


def format_comparison(comparison: Comparison) -> str:
    """The printed ranking and pair table."""
    direction = "higher" if comparison.higher_is_better else "lower"
    lines = [
        f"ranking by {comparison.metric} ({direction} is better, {comparison.n_subjects} subjects):"
    ]
    lines += [
        f"  {rank}. {run}: {value:.4f}" for rank, (run, value) in enumerate(comparison.ranking, 1)
    ]
    lines.append("paired Wilcoxon signed-rank (exact, two-sided), Holm-corrected:")
    for t in comparison.tests:
        lines.append(
            f"  {t.a} vs {t.b}: mean difference {t.mean_difference:+.4f}, n={t.n}, p={t.p:.4g}, "
            f"Holm p={t.p_holm:.4g} (smallest p possible with n={t.n}: {t.min_p:.3g})"
        )
    return "\n".join(lines)
