"""Time voxelflow's segmentation metrics against MONAI at matched definitions.

The set is Dice, HD95 (max of directed 95th percentiles), ASSD (symmetric, pooled mean) and NSD
(border voxels, tolerance 1 mm) for labels 1..3 of one prediction/reference pair of 4-class
label maps: MONAI's DiceMetric, HausdorffDistanceMetric(percentile=95),
SurfaceDistanceMetric(symmetric=True) and SurfaceDiceMetric on one-hot tensors (the one-hot
conversion is not timed) versus one ``voxelflow.metrics.segmentation_metrics`` call on the label
maps. Values are checked to agree before timings are reported. voxelflow's default surface is
DeepMind's surfels; the MONAI comparison uses ``surface="voxels"`` (MONAI's definition), and the
default (surfel) set is timed against DeepMind's ``surface-distance`` (per label:
``compute_surface_distances`` + robust Hausdorff, average distance, surface Dice) as well.

Run:  .venv/bin/python benchmarks/metrics.py [--repeats 3] [--skip-large]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import torch

from voxelflow.metrics import segmentation_metrics

logger = logging.getLogger("benchmarks.metrics")
SPACING = (1.0, 1.0, 1.5)
METRICS = ("dice", "hd95", "assd", "nsd")


def ellipsoids(shape, centres, radii) -> np.ndarray:
    """A 4-class label map: class k+1 is the ellipsoid k (later ones drawn on top)."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    labels = np.zeros(shape, np.uint8)
    for index, (centre, radius) in enumerate(zip(centres, radii), start=1):
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, centre, radius)) <= 1
        labels[inside] = index
    return labels


def make_pair(shape, radius_scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference ellipsoids and a prediction with shifted centres and changed radii."""
    rng = np.random.default_rng(seed)
    size = np.asarray(shape)
    centres = [size * f for f in ((0.35, 0.4, 0.5), (0.6, 0.55, 0.45), (0.5, 0.7, 0.6))]
    radii = [np.array(r) * radius_scale for r in ((30, 22, 18), (20, 26, 14), (16, 14, 12))]
    ref = ellipsoids(shape, centres, radii)
    moved = [c + rng.normal(0, 2, 3) for c in centres]
    scaled = [r * rng.uniform(0.85, 1.15, 3) for r in radii]
    return ellipsoids(shape, moved, scaled), ref


def monai_metrics(pred: np.ndarray, ref: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """The four MONAI metrics on one-hot tensors; returns values (labels 1..3) and seconds."""
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        SurfaceDiceMetric,
        SurfaceDistanceMetric,
    )

    p = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 4).movedim(-1, 0)[None].bool()
    r = torch.nn.functional.one_hot(torch.from_numpy(ref).long(), 4).movedim(-1, 0)[None].bool()
    metrics = {
        "dice": DiceMetric(include_background=False),
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95),
        "assd": SurfaceDistanceMetric(include_background=False, symmetric=True),
        "nsd": SurfaceDiceMetric([1.0, 1.0, 1.0], include_background=False),
    }
    values, seconds = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, metric in metrics.items():
            kwargs = {} if name == "dice" else {"spacing": list(SPACING)}
            start = time.perf_counter()
            values[name] = metric(p, r, **kwargs).numpy()[0]
            seconds[name] = time.perf_counter() - start
    logger.debug("MONAI per metric: %s", {k: round(v, 3) for k, v in seconds.items()})
    return values, sum(seconds.values())


def voxelflow_metrics(
    pred: np.ndarray, ref: np.ndarray, surface: str = "voxels"
) -> tuple[dict[int, dict[str, float]], float]:
    """One voxelflow call on the label maps; returns values and seconds."""
    start = time.perf_counter()
    values = segmentation_metrics(
        pred,
        ref,
        labels=[1, 2, 3],
        spacing=SPACING,
        metrics=METRICS,
        tolerance=1.0,
        surface=surface,
    )
    return values, time.perf_counter() - start


def deepmind_metrics(
    pred: np.ndarray, ref: np.ndarray
) -> tuple[dict[int, dict[str, float]], float]:
    """DeepMind's surface-distance per label (Dice by numpy); returns values and seconds."""
    import surface_distance as sd

    start = time.perf_counter()
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label in (1, 2, 3):
            p, r = pred == label, ref == label
            found = sd.compute_surface_distances(r, p, SPACING)
            areas_ref, areas_pred = found["surfel_areas_gt"], found["surfel_areas_pred"]
            ref_to_pred, pred_to_ref = sd.compute_average_surface_distance(found)
            values[label] = {
                "dice": sd.compute_dice_coefficient(r, p),
                "hd95": sd.compute_robust_hausdorff(found, 95),
                "assd": (ref_to_pred * areas_ref.sum() + pred_to_ref * areas_pred.sum())
                / (areas_ref.sum() + areas_pred.sum()),
                "nsd": sd.compute_surface_dice_at_tolerance(found, 1.0),
            }
    return values, time.perf_counter() - start


def bench(name: str, shape, radius_scale: float, repeats: int, deepmind: bool = True) -> float:
    """Time both on one pair; logs the figures and returns MONAI / voxelflow."""
    pred, ref = make_pair(shape, radius_scale)
    ours, theirs = voxelflow_metrics(pred, ref)[0], monai_metrics(pred, ref)[0]
    for metric in METRICS:
        for index, label in enumerate((1, 2, 3)):
            a, b = ours[label][metric], float(theirs[metric][index])
            if not np.isclose(a, b, rtol=1e-5, atol=1e-6):
                raise RuntimeError(
                    f"{name}: {metric} of label {label} differs: voxelflow {a}, MONAI {b}"
                )
    ours_time = min(voxelflow_metrics(pred, ref)[1] for _ in range(repeats))
    monai_time = min(monai_metrics(pred, ref)[1] for _ in range(repeats))
    logger.info(
        "%s %s: voxelflow (voxels) %.3f s, MONAI %.3f s (4 metrics, 3 labels), MONAI/voxelflow = %.1fx",
        name,
        shape,
        ours_time,
        monai_time,
        monai_time / ours_time,
    )
    if deepmind:
        surfel_values = voxelflow_metrics(pred, ref, "surfels")[0]
        deepmind_values = deepmind_metrics(pred, ref)[0]
        for label in (1, 2, 3):
            for metric in METRICS:
                a, b = surfel_values[label][metric], float(deepmind_values[label][metric])
                if not np.isclose(a, b, rtol=1e-6, atol=1e-9):
                    raise RuntimeError(
                        f"{name}: surfel {metric} of label {label}: {a} vs DeepMind {b}"
                    )
        surfel_time = min(voxelflow_metrics(pred, ref, "surfels")[1] for _ in range(repeats))
        deepmind_time = min(deepmind_metrics(pred, ref)[1] for _ in range(repeats))
        logger.info(
            "%s %s: voxelflow (surfels, default) %.3f s, DeepMind surface-distance %.3f s, "
            "DeepMind/voxelflow = %.1fx",
            name,
            shape,
            surfel_time,
            deepmind_time,
            deepmind_time / surfel_time,
        )
    return monai_time / ours_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="skip the 512×512×300 case")
    parser.add_argument("--no-deepmind", action="store_true", help="skip the surfel comparison")
    parser.add_argument("--verbose", action="store_true", help="also log MONAI's time per metric")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    torch.set_num_threads(2)
    bench("organs", (160, 160, 128), 1.0, args.repeats, not args.no_deepmind)
    if not args.skip_large:
        bench("small structures", (512, 512, 300), 0.3, args.repeats, not args.no_deepmind)


if __name__ == "__main__":
    main()
