"""Postprocessing decided from the out-of-fold segmentations (``cv/postprocessing.json``).

For each foreground class, in this order (as nnU-Net):

1. *keep only the largest connected component* is switched on when it raises the class's mean
   out-of-fold Dice;
2. *remove components below a volume*: the candidate thresholds are the out-of-fold component
   volumes of that class (each threshold removes the components smaller than it; at most
   :data:`MAX_CANDIDATES` of them, spread over the quantiles); the best one is kept when it
   raises the Dice further.

A class operation changes only that class's voxels (removed voxels become background), so each
class is decided on its own Dice. Components use full connectivity (26 in 3D, 8 in 2D) like
:func:`voxelflow.applications.segmentation.postprocess.postprocess_labels`. The decision is applied by
``voxelflow infer --folds all`` (:func:`apply_postprocessing`).

Dice of a subject without the class in reference and prediction is undefined (NaN) and left
out of the means, as ``voxelflow evaluate`` does.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from voxelflow.applications.segmentation.task import DECISION_FILE
from voxelflow.config.schema import ExperimentConfig

log = logging.getLogger(__name__)

MAX_CANDIDATES = 32
_GAIN = 1e-9  # a switch must raise the metric, not merely keep it


@dataclass
class _Components:
    """The connected components of one class in one subject's prediction.

    Attributes:
        sizes: voxels of each component ``(n,)``.
        overlaps: voxels of each component inside the reference class ``(n,)``.
        reference: voxels of the class in the reference.
        voxel: voxel volume in mm³.
    """

    sizes: np.ndarray
    overlaps: np.ndarray
    reference: int
    voxel: float

    def dice(self, keep: np.ndarray) -> float:
        """Dice when only the components flagged in ``keep`` ``(n,)`` stay."""
        predicted = int(self.sizes[keep].sum())
        if predicted + self.reference == 0:
            return math.nan
        return 2.0 * float(self.overlaps[keep].sum()) / (predicted + self.reference)

    def kept(self, *, largest: bool, min_volume: float) -> np.ndarray:
        keep = np.ones(len(self.sizes), dtype=bool)
        if largest and len(self.sizes):
            keep &= np.arange(len(self.sizes)) == int(np.argmax(self.sizes))
        return keep & (self.sizes * self.voxel >= min_volume)


def components(
    prediction: np.ndarray, reference: np.ndarray, value: int, voxel: float
) -> _Components:
    """Components of class ``value`` in ``prediction`` and their overlap with ``reference``.

    Shape:
        prediction, reference: label maps ``(*spatial)`` on one grid.
    """
    structure = ndimage.generate_binary_structure(prediction.ndim, prediction.ndim)
    labelled, count = ndimage.label(prediction == value, structure=structure)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    inside = labelled[reference == value]
    overlaps = np.bincount(inside, minlength=count + 1)[1:]
    return _Components(sizes, overlaps, int((reference == value).sum()), voxel)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def candidate_thresholds(volumes: Sequence[float]) -> list[float]:
    """Thresholds just above each out-of-fold component volume (≤ :data:`MAX_CANDIDATES`)."""
    unique = np.unique(np.asarray(volumes, dtype=np.float64))
    if unique.size > MAX_CANDIDATES:
        unique = np.unique(np.quantile(unique, np.linspace(0, 1, MAX_CANDIDATES)))
    return [float(np.nextafter(v, np.inf)) for v in unique]  # removes components of volume v


def decide_class(cases: Sequence[_Components]) -> dict[str, Any]:
    """The decision for one class from its per-subject components."""
    no_change = [c.kept(largest=False, min_volume=0.0) for c in cases]
    before = _mean([c.dice(k) for c, k in zip(cases, no_change)])
    largest_dice = _mean([c.dice(c.kept(largest=True, min_volume=0.0)) for c in cases])
    largest = not math.isnan(before) and largest_dice > before + _GAIN
    current = largest_dice if largest else before
    volumes = [
        float(v) for c in cases for v in c.sizes[c.kept(largest=largest, min_volume=0.0)] * c.voxel
    ]
    best_threshold, tried = 0.0, {}
    for threshold in candidate_thresholds(volumes):
        value = _mean([c.dice(c.kept(largest=largest, min_volume=threshold)) for c in cases])
        tried[threshold] = value
        if not math.isnan(value) and value > current + _GAIN:
            best_threshold, current = threshold, value
    return {
        "keep_largest_component": bool(largest),
        "min_component_volume_mm3": best_threshold,
        "dice_before": before,
        "dice_largest_component": largest_dice,
        "dice_after": current if not math.isnan(before) else before,
        "candidates_mm3": len(tried),
    }


def decide_from_arrays(
    cases: Mapping[str, tuple[np.ndarray, np.ndarray, float]], classes: Sequence[int]
) -> dict[str, Any]:
    """The decision from ``subject → (prediction, reference, voxel mm³)`` label maps.

    Returns:
        ``{"metric": "dice", "before": .., "after": .., "classes": {"<value>": {...}}}``; the
        before/after figures are the mean over subjects of the mean foreground Dice.
    """
    per_class: dict[str, Any] = {}
    parts = {
        value: {s: components(p, r, value, v) for s, (p, r, v) in cases.items()}
        for value in classes
    }
    for value in classes:
        per_class[str(value)] = decide_class(list(parts[value].values()))
    before, after = [], []
    for subject in cases:
        plain, changed = [], []
        for value in classes:
            c, rule = parts[value][subject], per_class[str(value)]
            plain.append(c.dice(c.kept(largest=False, min_volume=0.0)))
            changed.append(c.dice(c.kept(largest=rule["keep_largest_component"],
                                         min_volume=rule["min_component_volume_mm3"])))  # fmt: skip
        before.append(_mean(plain))
        after.append(_mean(changed))
    return {"metric": "dice", "subjects": len(cases), "before": _mean(before),
            "after": _mean(after), "classes": per_class}  # fmt: skip


def decide_postprocessing(experiment: ExperimentConfig, root: Path) -> dict[str, Any]:
    """Decide from ``<root>/cv/predictions/inferred.csv``; writes ``cv/postprocessing.json``."""
    from voxelflow.io.readers import read_image
    from voxelflow.io.table import load_table, prediction_files

    out = Path(root) / "cv"
    predicted = prediction_files(out / "predictions" / "inferred.csv")
    column = experiment.dataset.inputs["label"][0]
    by_name = {row.name: row for row in load_table(experiment.dataset)}
    cases: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    values: set[int] = set()
    for subject, path in predicted.items():
        prediction = read_image(path, kind="label")
        reference = read_image(by_name[subject].path(column), kind="label")
        pred, ref = prediction.numpy()[0], reference.numpy()[0]
        values |= {int(v) for v in np.unique(ref)} | {int(v) for v in np.unique(pred)}
        cases[subject] = (pred, ref, float(np.prod(reference.spacing)))
    labels = experiment.evaluation.labels
    classes = sorted(int(v) for v in (labels or values) if int(v) != 0)
    decision = decide_from_arrays(cases, classes)
    (out / DECISION_FILE).write_text(json.dumps(decision, indent=1, allow_nan=True))
    switched = {k: v for k, v in decision["classes"].items()
                if v["keep_largest_component"] or v["min_component_volume_mm3"] > 0}  # fmt: skip
    switches = ", ".join(
        f"class {k}: largest component {v['keep_largest_component']}, "
        f"min volume {v['min_component_volume_mm3']:.4g} mm³"
        for k, v in switched.items()
    )
    print(
        f"postprocessing (out-of-fold, {decision['subjects']} subjects): mean foreground Dice "
        f"{decision['before']:.4f} before, {decision['after']:.4f} after; "
        f"{switches or 'nothing switched on'}"
    )
    return decision


def read_decision(root: Path) -> dict[str, Any] | None:
    """``<root>/cv/postprocessing.json``, or None (see
    :meth:`~voxelflow.applications.base.Application.postprocess_decision`)."""
    from voxelflow.applications.segmentation.task import read_decision as read

    return read(root)


def apply_postprocessing(
    labels: np.ndarray,
    decision: Mapping[str, Any],
    spacing: Sequence[float],
    *,
    background: int = 0,
) -> np.ndarray:
    """Apply a decision class by class; returns a new label map.

    Shape:
        labels: ``(*spatial)`` or ``(1, *spatial)`` label values.
    """
    out = np.array(labels, copy=True)
    view = out[0] if out.ndim == len(spacing) + 1 else out
    voxel = float(np.prod(spacing))
    structure = ndimage.generate_binary_structure(view.ndim, view.ndim)
    for key, rule in (decision.get("classes") or {}).items():
        largest, threshold = (
            bool(rule["keep_largest_component"]),
            float(rule["min_component_volume_mm3"]),
        )
        if not largest and threshold <= 0:
            continue
        mask = view == int(key)
        labelled, count = ndimage.label(mask, structure=structure)
        if not count:
            continue
        sizes = np.bincount(labelled.ravel())[1:]
        keep = np.ones(count, dtype=bool)
        if largest:
            keep &= np.arange(count) == int(np.argmax(sizes))
        keep &= sizes * voxel >= threshold
        view[mask & ~np.concatenate([[False], keep])[labelled]] = background
    return out
