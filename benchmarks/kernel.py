"""Resampling one augmented training window: the fused numba kernel vs grid_sample vs SimpleITK.

The work of one window of the training data path: an image (float32, linear) and its label
(uint8, nearest) resampled from a 160×160×128 volume (spacing 1×1×1.5 mm) under one composed
draw of voxelflow's own transforms, as in ``benchmarks/pipeline.py``: flips p=0.5 per axis, then
an affine with p=1 (rotation ±15°, scaling 0.9–1.1); ``--elastic`` adds ``RandomElastic``.

* ``numba``: :func:`voxelflow.transforms.resample.resample_roles` with ``kernel="numba"`` (the
  default of training): image and label in one pass;
* ``grid_sample``: the same with ``kernel="torch"`` (region read, voxel grid, one
  ``grid_sample`` per role);
* ``sitk``: ``SimpleITK.Resample`` of the image (linear) and the label (nearest) onto the window
  grid under the equivalent ``AffineTransform`` (affine draws only; the input images are built
  once, untimed).

Every method runs single-threaded (``torch.set_num_threads(1)``, SimpleITK's global threads 1),
as in a DataLoader worker. Methods are interleaved draw by draw after one untimed warm-up
window; the medians and the 10th–90th percentiles of ms per window are reported. The numba
compile time is measured separately in fresh processes: with an empty cache (``NUMBA_CACHE_DIR``
a new folder: a first install) and then loading that cache (every later run).

Usage:
    .venv/bin/python benchmarks/kernel.py --json                 # 96³, 20 windows
    .venv/bin/python benchmarks/kernel.py --sizes 64 96 128 --windows 20 --elastic --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPE = (160, 160, 128)
SPACING = (1.0, 1.0, 1.5)


def make_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A z-scored phantom image ``(1, *SHAPE)`` float32 and its 4-class label uint8."""
    from voxelflow.synthetic import make_phantom

    image, label = make_phantom(SHAPE, num_classes=4, num_blobs=6, seed=seed)
    image = ((image - image.mean()) / image.std()).astype(np.float32)[None]
    return np.ascontiguousarray(image), label.astype(np.uint8)[None]


def draws(count: int, size: int, *, elastic: bool, seed: int = 0) -> list:
    """``count`` composed draws of the pipeline benchmark's augmentation (identity redrawn)."""
    from voxelflow.transforms.compose import compose_draws
    from voxelflow.transforms.spatial import RandomAffine, RandomElastic, RandomFlip

    transforms = [
        RandomFlip(axes=(0, 1, 2), flip_probability=0.5),
        RandomAffine(rotation=15, scaling=[0.9, 1.1], p=1.0),
    ]
    if elastic:
        transforms.append(RandomElastic(p=1.0))
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        draw = compose_draws(transforms, rng, window=(size,) * 3, spacing=SPACING)
        if draw is not None:
            out.append(draw)
    return out


def window_geometry(size: int, rng: np.random.Generator) -> dict:
    """Centre and first offset of a window whose centre lies in the middle half of the volume."""
    centre = np.array([rng.integers(s // 4, 3 * s // 4) for s in SHAPE])
    start = centre - size // 2
    geometric = start + (size - 1.0) / 2.0
    return {"centre": geometric, "first_offset": start - geometric}


def run_voxelflow(image, label, draw, where, size: int, kernel: str):
    from voxelflow.transforms.resample import resample_roles

    return resample_roles(
        [image, label], draw, centre=where["centre"], first_offsets=[where["first_offset"]] * 2,
        sizes=[(size,) * 3] * 2, spacing=SPACING, interpolations=["linear", "nearest"],
        pad_values=[0.0, 0.0], kernel=kernel,
    )  # fmt: skip


def sitk_images(image: np.ndarray, label: np.ndarray):
    """SimpleITK images whose index order is ours (x, y, z): numpy (z, y, x) of the transpose."""
    import SimpleITK as sitk

    pair = []
    for array in (image[0], label[0]):
        item = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        item.SetSpacing(SPACING)
        pair.append(item)
    return pair


def run_sitk(images, draw, where, size: int):
    """Resample image (linear) and label (nearest) onto the window grid: physical output point
    ``x`` (window voxel units) maps to the source point ``S (base + M x)``."""
    import SimpleITK as sitk

    matrix, translation, _ = draw.in_voxels(SPACING)
    base = np.asarray(where["centre"]) + matrix @ np.asarray(where["first_offset"]) + translation
    scale = np.diag(SPACING)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((scale @ matrix).ravel().tolist())
    transform.SetTranslation((scale @ base).tolist())
    out = []
    for item, interpolator in zip(images, (sitk.sitkLinear, sitk.sitkNearestNeighbor)):
        resampled = sitk.Resample(
            item, [size] * 3, transform, interpolator, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
            (1, 0, 0, 0, 1, 0, 0, 0, 1), 0.0, item.GetPixelID(),
        )  # fmt: skip
        out.append(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)[None])
    return out


def compile_seconds(cache_dir: str) -> float:
    """Seconds of the first kernel call in a fresh process with ``NUMBA_CACHE_DIR=cache_dir``."""
    code = (
        "import time, numpy as np\n"
        "from voxelflow.data.cached import CachedSubject\n"
        "from voxelflow.transforms.fused_resample import warm_up\n"
        "s = CachedSubject('s', {'image': np.zeros((1, 8, 8, 8), np.float32),"
        " 'label': np.zeros((1, 8, 8, 8), np.uint8)}, {'image': 'intensity', 'label': 'label'})\n"
        "print(warm_up(s))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median": statistics.median(values), "p10": pick(0.1), "p90": pick(0.9)}


def measure(size: int, windows: int, *, elastic: bool, methods: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    if "sitk" in methods:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    image, label = make_volume()
    images = sitk_images(image, label) if "sitk" in methods else None
    rng = np.random.default_rng(1)
    times: dict[str, list[float]] = {m: [] for m in methods}
    largest = {"image": 0.0, "label_mismatch": 0.0, "sitk_image": 0.0, "sitk_label": 0.0}
    for index, draw in enumerate(draws(windows + 1, size, elastic=elastic)):
        where = window_geometry(size, rng)
        results = {}
        for method in methods:
            start = time.perf_counter()
            if method == "sitk":
                results[method] = run_sitk(images, draw, where, size)
            else:
                kernel = "numba" if method == "numba" else "torch"
                results[method] = run_voxelflow(image, label, draw, where, size, kernel)
            if index > 0:  # the first window is the warm-up
                times[method].append((time.perf_counter() - start) * 1e3)
        reference = results.get("grid_sample")
        if reference is not None and "numba" in results:
            fast = results["numba"]
            largest["image"] = max(largest["image"], float((fast[0] - reference[0]).abs().max()))
            mismatch = float((fast[1] != reference[1]).float().mean())
            largest["label_mismatch"] = max(largest["label_mismatch"], mismatch)
        if "sitk" in results and "numba" in results:  # an independent implementation agrees
            fast, peer = results["numba"], results["sitk"]
            difference = float(np.abs(fast[0].numpy() - peer[0]).max())
            largest["sitk_image"] = max(largest["sitk_image"], difference)
            mismatch = float((fast[1].numpy() != peer[1]).mean())
            largest["sitk_label"] = max(largest["sitk_label"], mismatch)
    out = {m: summary(v) for m, v in times.items()}
    if "numba" in out:
        for other in (m for m in methods if m != "numba"):
            out[f"speedup_vs_{other}"] = out[other]["median"] / out["numba"]["median"]
    out["numba_vs_grid_sample"] = {
        "max_abs_image_difference": largest["image"],
        "label_voxels_differing": largest["label_mismatch"],
    }
    if "sitk" in methods and "numba" in methods:
        out["numba_vs_sitk"] = {
            "max_abs_image_difference": largest["sitk_image"],
            "label_voxels_differing": largest["sitk_label"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96])
    parser.add_argument("--windows", type=int, default=20, help="timed windows per size")
    parser.add_argument("--elastic", action="store_true", help="also time with RandomElastic")
    parser.add_argument("--methods", nargs="+", default=["numba", "grid_sample", "sitk"])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    report: dict = {"shape": SHAPE, "spacing": SPACING, "windows": args.windows, "threads": 1}
    with tempfile.TemporaryDirectory(prefix="vf-numba-cache-") as cache:
        report["compile_s"] = {"empty_cache": compile_seconds(cache),
                               "from_cache": compile_seconds(cache)}  # fmt: skip
    report["load_average"] = os.getloadavg()[0]
    for size in args.sizes:
        report[f"affine_{size}"] = measure(size, args.windows, elastic=False, methods=args.methods)
        if args.elastic:
            methods = [m for m in args.methods if m != "sitk"]
            report[f"elastic_{size}"] = measure(size, args.windows, elastic=True, methods=methods)
    report["load_average_after"] = os.getloadavg()[0]
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    print(f"numba compile: {report['compile_s']['empty_cache']:.2f} s (empty cache), "
          f"{report['compile_s']['from_cache']:.2f} s (from the cache)")  # fmt: skip
    for key, value in report.items():
        if not key.startswith(("affine_", "elastic_")):
            continue
        figures = ", ".join(
            f"{m} {v['median']:.1f} ms [{v['p10']:.1f}-{v['p90']:.1f}]"
            for m, v in value.items() if isinstance(v, dict) and "median" in v
        )  # fmt: skip
        print(f"{key}: {figures}; " + ", ".join(
            f"{k} {v:.2f}x" for k, v in value.items() if k.startswith("speedup")))  # fmt: skip


if __name__ == "__main__":
    main()
