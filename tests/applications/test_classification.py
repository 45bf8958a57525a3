"""Classification and image-level regression: task options, fitted targets, losses wiring,
window fields, class-balanced subject sampling, prediction (resize and grid), evaluation."""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from torch import nn

from voxelflow.applications.base import InferenceContext, InferenceItem
from voxelflow.applications.classification.application import ClassificationApplication
from voxelflow.applications.classification.evaluation import evaluate_predictions, macro_roc_auc
from voxelflow.applications.classification.task import (
    ClassificationTask,
    TargetEncoding,
    image_windows,
)
from voxelflow.config.schema import Experiment
from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError, DataError, ShapeError
from voxelflow.io.image import Image, Subject
from voxelflow.io.table import SubjectRow
from voxelflow.sampling import PatchQueue, ResizeSampler

CPU = InferenceContext(torch.device("cpu"))


class FakeDataset:
    """What fit_task reads from a PreprocessedDataset: its rows."""

    def __init__(self, cells: dict[str, str | None], column: str = "grade") -> None:
        self.rows = [
            SubjectRow(name, {"image": f"{name}.nii.gz", **({column: v} if v is not None else {})})
            for name, v in cells.items()
        ]


class ChannelMeans(nn.Module):
    """Deterministic 'classifier': output k = (k + 1) × mean of the image (no parameters)."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(dim=1, keepdim=True)
        return self.scale * mean * torch.arange(1, self.outputs + 1, dtype=x.dtype)


def experiment(**overrides) -> Experiment:
    settings = {
        "application": "classification",
        "dataset": {"inputs": {"image": ["image"]}},
        "task": {"target_column": "grade"},
        "network": {"name": "resnet", "features": [4, 8], "blocks_per_stage": 1},
        "loss": {"name": "classification_ce"},
        "sampling": {"sampler": {"name": "resize"}, "window": [8, 8, 6]},
    }
    settings.update(overrides)
    return Experiment(**settings)


# --- task options ------------------------------------------------------------------------------
def test_task_options_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"task\.target_column"):
        ClassificationTask.from_config({"kind": "class"})
    with pytest.raises(ConfigError, match=r"task\.colour"):
        ClassificationTask.from_config({"target_column": "grade", "colour": "red"})
    with pytest.raises(ConfigError, match=r"task\.kind"):
        ClassificationTask.from_config({"target_column": "grade", "kind": "ordinal"})
    with pytest.raises(ConfigError, match=r"task\.classes: expected at least 2 distinct"):
        ClassificationTask.from_config({"target_column": "grade", "classes": ["a", "a"]})
    with pytest.raises(ConfigError, match=r"task\.class_balanced"):
        ClassificationTask.from_config({"target_column": "age", "kind": "value", "class_balanced": True})


def test_loss_of_the_other_kind_is_refused():
    state = TargetEncoding("grade", "class", classes=("a", "b")).state()
    with pytest.raises(ConfigError, match=r"loss\.name.*'dice_ce'"):
        ClassificationApplication.from_experiment(
            experiment(loss={"name": "dice_ce"}), in_channels=1, task_state=state
        )
    with pytest.raises(ConfigError, match=r"task: expected kind 'value'"):
        ClassificationApplication.from_experiment(
            experiment(task={"target_column": "grade", "kind": "value"}, loss={"name": "l2"}),
            in_channels=1,
            task_state=state,
        )


# --- fitted targets ----------------------------------------------------------------------------
def test_fit_task_sorts_class_names_numerically_and_as_text():
    cells = {"s0": "10", "s1": "9", "s2": "10", "s3": "2"}
    state = ClassificationApplication.fit_task(experiment(), FakeDataset(cells), [0, 1, 2, 3])
    assert state == {"kind": "class", "target_column": "grade", "classes": ["2", "9", "10"]}
    cells = {"s0": "low", "s1": "High", "s2": "low"}
    state = ClassificationApplication.fit_task(experiment(), FakeDataset(cells), [0, 1, 2])
    assert state["classes"] == ["High", "low"]


def test_configured_class_order_is_kept_and_checked():
    cells = {"s0": "low", "s1": "high", "s2": "mid"}
    task = {"target_column": "grade", "classes": ["low", "mid", "high"]}
    state = ClassificationApplication.fit_task(experiment(task=task), FakeDataset(cells), [0, 1, 2])
    assert state["classes"] == ["low", "mid", "high"]
    task["classes"] = ["low", "mid"]
    with pytest.raises(DataError, match=r"task\.classes.*\['high'\]"):
        ClassificationApplication.fit_task(experiment(task=task), FakeDataset(cells), [0, 1, 2])


def test_training_subjects_without_target_are_all_listed():
    cells = {"s0": "a", "s1": None, "s2": "b", "s3": "", "s4": "a"}
    with pytest.raises(DataError) as error:
        ClassificationApplication.fit_task(experiment(), FakeDataset(cells), [0, 1, 2, 3])
    message = str(error.value)
    assert "'grade'" in message and "['s1', 's3']" in message and "2 subject(s)" in message


def test_target_column_absent_from_table_names_the_column():
    with pytest.raises(DataError, match=r"expected a column 'grade'.*\['image', 'sex'\]"):
        rows = FakeDataset({"s0": "F", "s1": "M"}, column="sex")
        ClassificationApplication.fit_task(experiment(), rows, [0, 1])


def test_unseen_class_outside_training_split_names_subject_and_value():
    cells = {"s0": "a", "s1": "b", "s2": "c"}
    with pytest.raises(DataError, match=r"subject 's2'.*\['a', 'b'\], got 'c'"):
        ClassificationApplication.fit_task(experiment(), FakeDataset(cells), [0, 1])


def test_value_statistics_and_bad_numbers():
    cells = {"s0": "20", "s1": "31.5", "s2": "42", "s3": "60"}
    task = {"target_column": "grade", "kind": "value"}
    state = ClassificationApplication.fit_task(experiment(task=task), FakeDataset(cells), [0, 1, 2])
    assert state["mean"] == pytest.approx(np.mean([20, 31.5, 42]))
    assert state["std"] == pytest.approx(np.std([20, 31.5, 42]))
    cells["s1"] = "thirty"
    with pytest.raises(DataError, match=r"s1='thirty'"):
        ClassificationApplication.fit_task(experiment(task=task), FakeDataset(cells), [0, 1, 2])


# --- window fields and losses ------------------------------------------------------------------
def _cached(name: str, value: str, shape=(10, 9, 7), seed: int = 0) -> CachedSubject:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, *shape)).astype(np.float32)
    return CachedSubject(
        name,
        {"image": image},
        {"image": "intensity"},
        np.diag([1.0, 1.2, 1.5, 1.0]),
        {"grade": value},
    )


def test_window_fields_are_picklable_and_encode_targets():
    classes = pickle.loads(pickle.dumps(TargetEncoding("grade", "class", classes=("a", "b", "c"))))
    assert classes(_cached("s", "c"))["target"].item() == 2
    assert classes(_cached("s", "c"))["target"].dtype == torch.int64
    values = pickle.loads(pickle.dumps(TargetEncoding("grade", "value", mean=40.0, std=8.0)))
    assert values(_cached("s", "52"))["target"].tolist() == [1.5]
    with pytest.raises(DataError, match=r"subject 'q'.*got 'z'"):
        classes(_cached("q", "z"))


def _app(kind: str = "class", *, resize: bool = True, outputs: int = 3, **kwargs):
    from voxelflow.losses import build_loss

    if kind == "class":
        encoding = TargetEncoding("grade", "class", classes=tuple("abc"[:outputs]))
        loss = build_loss("classification_ce")
    else:
        encoding, outputs = TargetEncoding("grade", "value", mean=40.0, std=8.0), 1
        loss = build_loss("l2")
    return ClassificationApplication(
        ChannelMeans(outputs), loss, encoding=encoding, window=(6, 6, 4), resize=resize, **kwargs
    )


def test_queue_batches_train_with_the_cross_entropy_of_the_true_class():
    from voxelflow.sampling.queue import collate_windows

    app = _app()
    subjects = [_cached(f"s{i}", "abc"[i % 3], seed=i) for i in range(4)]
    queue = PatchQueue(
        subjects,
        ResizeSampler((6, 6, 4)),
        infinite=False,
        window_fields=app.window_fields(),
        queue_length=1,
    )
    batch = collate_windows(list(queue))
    losses = app.compute_losses(batch)
    logits = ChannelMeans(3)(batch["image"])
    expected = F.cross_entropy(
        logits,
        torch.tensor(
            [
                {"a": 0, "b": 1, "c": 2}[s.fields["grade"]]
                for s in sorted(subjects, key=lambda s: batch["subject"].index(s.name))
            ]
        ),
    )
    assert batch["target"].shape == (4,)
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_value_loss_is_l2_on_standardised_targets():
    app = _app("value")
    image = torch.randn(3, 1, 6, 6, 4)
    target = torch.tensor([[0.5], [-1.0], [2.0]])
    losses = app.compute_losses({"image": image, "target": target})
    assert losses["loss"].item() == pytest.approx(F.mse_loss(ChannelMeans(1)(image), target).item())


def test_segmentation_network_output_is_refused_with_shapes():
    from voxelflow.losses import build_loss

    encoding = TargetEncoding("grade", "class", classes=("a", "b"))
    app = ClassificationApplication(
        nn.Conv3d(1, 2, 1), build_loss("classification_ce"), encoding=encoding, window=(4, 4, 4)
    )
    with pytest.raises(ShapeError, match=r"expected network output \(B, K\) = \(2, 2\)"):
        app.compute_losses({"image": torch.zeros(2, 1, 4, 4, 4), "target": torch.zeros(2).long()})


def test_from_experiment_builds_a_classifier_of_k_outputs():
    state = TargetEncoding("grade", "class", classes=("a", "b", "c")).state()
    app = ClassificationApplication.from_experiment(experiment(), in_channels=2, task_state=state)
    out = app.modules["network"](torch.zeros(2, 2, 8, 8, 6))
    assert out.shape == (2, 3) and app.resize
    inference = {"window": [6, 6, 6], "overlap": 0.25, "batch_size": 3}
    windowed = ClassificationApplication.from_experiment(
        experiment(inference=inference), in_channels=2, task_state=state
    )
    assert (windowed.window, windowed.overlap, windowed.batch_size) == ((6, 6, 6), 0.25, 3)
    with pytest.raises(ConfigError, match=r"num_classes: expected 3"):
        ClassificationApplication.from_experiment(
            experiment(num_classes=2), in_channels=1, task_state=state
        )


# --- class-balanced subject sampling -----------------------------------------------------------
def test_class_balanced_weights_are_inverse_class_frequencies():
    app = _app(class_balanced=True)
    fields = [{"grade": g} for g in ["a", "a", "a", "b", "c", "c"]]
    assert app.subject_weights(fields) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1, 1 / 2, 1 / 2])
    assert _app().subject_weights(fields) is None


def test_queue_draws_subjects_in_proportion_to_their_weights():
    subjects = [_cached(f"s{i}", "a", shape=(4, 4, 4)) for i in range(3)]
    queue = PatchQueue(subjects, ResizeSampler((2, 2, 2)), subject_weights=[1.0, 1.0, 2.0])
    counts = np.zeros(3)
    for epoch in range(400):
        for index in queue.shard_subjects(epoch, 0, 1):
            counts[index] += 1
    assert counts.sum() == 1200
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.25, 0.5], atol=0.03)
    two_shards = queue.shard_subjects(5, 0, 2) + queue.shard_subjects(5, 1, 2)
    assert sorted(two_shards) == sorted(queue.shard_subjects(5, 0, 1))
    with pytest.raises(ConfigError, match="subject_weights: expected 3"):
        PatchQueue(subjects, ResizeSampler((2, 2, 2)), subject_weights=[1.0, -1.0, 2.0])


# --- prediction --------------------------------------------------------------------------------
def _item(name: str, data: torch.Tensor, fields: dict | None = None) -> InferenceItem:
    image = Image(data, np.diag([1.0, 1.2, 1.5, 1.0]))
    subject = Subject(name, {"image": image})
    return InferenceItem(name, subject, subject, {}, fields or {})


def test_resize_prediction_is_the_network_on_the_resized_image():
    app = _app()
    data = torch.rand(1, 10, 9, 7)
    prediction = app.predict(_item("p1", data), CPU, None)
    resized = F.interpolate(data[None], size=(6, 6, 4), mode="trilinear", align_corners=False)
    expected = torch.softmax(ChannelMeans(3)(resized), dim=1)[0].detach()
    probabilities = [prediction.values[f"prob_{c}"] for c in "abc"]
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-6)
    assert prediction.values["prediction"] == "abc"[int(expected.argmax())]


def test_grid_prediction_averages_probabilities_over_windows():
    app = _app(resize=False, overlap=0.5, batch_size=2)
    data = torch.rand(1, 10, 6, 4)
    # MONAI placement along x: window 6, step int(6 * 0.5) = 3, last window moved back: 0, 3, 4
    windows = torch.stack([data[:, x : x + 6] for x in (0, 3, 4)])
    expected = torch.softmax(ChannelMeans(3)(windows), dim=1).mean(dim=0).detach()
    output = app.predict_output(data, CPU)
    np.testing.assert_allclose(output.numpy(), expected.numpy(), atol=1e-6)
    assert sum(len(w) for w in image_windows(data, (6, 6, 4), resize=False, batch_size=2)) == 3


def test_value_prediction_is_restored_to_the_column_units():
    app = _app("value")
    data = torch.full((1, 8, 8, 5), 0.25)
    prediction = app.predict(_item("p1", data), CPU, None)
    assert prediction.values == {"prediction": pytest.approx(0.25 * 8.0 + 40.0)}


def test_inference_row_with_unseen_class_names_subject_and_value():
    with pytest.raises(DataError, match=r"subject 'new7'.*got 'd'"):
        _app().predict(_item("new7", torch.rand(1, 8, 8, 5), {"grade": "d"}), CPU, None)


def test_validation_metrics_per_subject():
    app = _app(outputs=2)
    subject = _cached("v", "b")
    probabilities = app.predict_output(torch.from_numpy(subject.arrays["image"]), CPU)
    metrics = app.validation_step(subject, CPU)
    assert metrics["nll"] == pytest.approx(-math.log(float(probabilities[1])))
    assert metrics["accuracy"] == float(int(probabilities.argmax()) == 1)
    assert app.validation_step(_cached("v", ""), CPU) == {}
    unresized = _cached("v", "44", shape=(6, 6, 4))  # the window: no resizing
    value = _app("value").validation_step(unresized, CPU)
    mean = float(unresized.arrays["image"].mean())
    assert value["mae"] == pytest.approx(abs(mean * 8 + 40 - 44), rel=1e-4)


def test_windows_of_wrong_dimensionality_are_refused():
    with pytest.raises(ShapeError, match="2 spatial axes"):
        next(image_windows(torch.zeros(1, 4, 4, 4), (4, 4), resize=True))


def test_checkpoint_of_other_classes_is_refused():
    app = _app()
    app.load_state_dict(app.state_dict())
    with pytest.raises(ConfigError, match="other classes"):
        app.load_state_dict(
            {"task": {"kind": "class", "target_column": "grade", "classes": ["x", "y"]}}
        )


# --- evaluation --------------------------------------------------------------------------------
def _write_predictions(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(cells: dict[str, str]) -> list[SubjectRow]:
    return [
        SubjectRow(name, {"image": "x.nii.gz", "grade": value}) for name, value in cells.items()
    ]


def test_class_evaluation_against_hand_computed_figures(tmp_path):
    probabilities = {
        "s0": (0.7, 0.2, 0.1),
        "s1": (0.2, 0.5, 0.3),
        "s2": (0.1, 0.3, 0.6),
        "s3": (0.5, 0.4, 0.1),
        "s4": (0.3, 0.3, 0.4),
    }
    reference = {"s0": "a", "s1": "b", "s2": "c", "s3": "b", "s4": "a"}
    table = _write_predictions(
        tmp_path / "predictions.csv",
        [
            {
                "subject": s,
                "prediction": "abc"[int(np.argmax(p))],
                **{f"prob_{c}": v for c, v in zip("abc", p)},
            }
            for s, p in probabilities.items()
        ],
    )
    summary = evaluate_predictions(
        table, _rows(reference), out_dir=tmp_path / "eval", column="grade", kind="class"
    )
    # predictions a, b, c, a, c against a, b, c, b, a: 3 correct of 5
    assert summary["accuracy"] == pytest.approx(0.6)
    assert summary["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert summary["precision/c"] == pytest.approx(0.5) and summary["recall/c"] == 1.0
    assert summary["f1/a"] == pytest.approx(0.5)
    # one-vs-rest AUC by counting ordered (positive, negative) pairs
    aucs = []
    for k, c in enumerate("abc"):
        pos = [probabilities[s][k] for s in reference if reference[s] == c]
        neg = [probabilities[s][k] for s in reference if reference[s] != c]
        aucs.append(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]))
    assert summary["roc_auc"] == pytest.approx(np.mean(aucs))
    matrix = list(csv.reader((tmp_path / "eval" / "confusion_matrix.csv").open()))
    assert matrix == [
        ["reference", "a", "b", "c"],
        ["a", "1", "0", "1"],
        ["b", "1", "1", "0"],
        ["c", "0", "0", "1"],
    ]
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "summary.csv").exists()


def test_binary_auc_uses_the_second_class_probability():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    assert macro_roc_auc(probabilities, np.array([0, 1, 0, 1])) == pytest.approx(0.5)


def test_evaluation_with_unseen_reference_class_names_subject_and_value(tmp_path):
    table = _write_predictions(
        tmp_path / "p.csv",
        [
            {"subject": "s0", "prediction": "a", "prob_a": 0.9, "prob_b": 0.1},
            {"subject": "s1", "prediction": "b", "prob_a": 0.2, "prob_b": 0.8},
        ],
    )
    with pytest.raises(DataError, match=r"subject 's1'.*\['a', 'b'\], got 'z'"):
        evaluate_predictions(
            table,
            _rows({"s0": "a", "s1": "z"}),
            out_dir=tmp_path / "e",
            column="grade",
            kind="class",
        )
    with pytest.raises(DataError, match=r"p\.csv.*none for 1: \['s1'\]"):
        evaluate_predictions(
            table, _rows({"s0": "a"}), out_dir=tmp_path / "e", column="grade", kind="class"
        )


def test_value_evaluation_against_numpy_and_scipy(tmp_path):
    reference = {"s0": "20", "s1": "35", "s2": "41", "s3": "60"}
    predicted = [22.0, 30.0, 45.0, 55.5]
    table = _write_predictions(
        tmp_path / "p.csv", [{"subject": s, "prediction": v} for s, v in zip(reference, predicted)]
    )
    summary = evaluate_predictions(
        table, _rows(reference), out_dir=tmp_path / "e", column="grade", kind="value"
    )
    errors = np.array(predicted) - np.array([20, 35, 41, 60], dtype=float)
    assert summary["mae"] == pytest.approx(np.abs(errors).mean())
    assert summary["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))
    assert summary["mean_error"] == pytest.approx(errors.mean())
    assert summary["pearson_r"] == pytest.approx(pearsonr(predicted, [20, 35, 41, 60])[0])
    assert (tmp_path / "e" / "scatter.png").exists()
