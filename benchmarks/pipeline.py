"""Training-patch pipeline: voxelflow vs MONAI (Dataset, CacheDataset, ThreadDataLoader) vs TorchIO.

Same generated data for all: 8 volumes of 160×160×128 (4-class label map, spacing 1×1×1.5 mm),
z-score, balanced 1:1 centres, two windows per volume, batch 2, flips p=0.5 per axis, affine with
p=1 (rotation ±15°, scaling 0.9–1.1). Each run is its own subprocess (so memory is that
pipeline's alone: summed PSS of the process and its workers); runs are interleaved A B C … A B C
for ``--repeats`` rounds and medians reported with ratios to MONAI CacheDataset.

Usage:
    .venv/bin/python benchmarks/pipeline.py --repeats 2 --batches 10 --sizes 96 64 --workers 0 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmarks.pipeline")
SHAPE = (160, 160, 128)
SPACING = (1.0, 1.0, 1.5)
NUM_VOLUMES = 8
PIPELINES = ("voxelflow", "monai_cache", "monai_thread", "monai_dataset", "torchio")


def make_data(folder: Path) -> None:
    """Write 8 phantoms (raw intensities and 4-class labels) as .npy."""
    from voxelflow.synthetic import make_phantom

    for index in range(NUM_VOLUMES):
        image, label = make_phantom(SHAPE, num_classes=4, num_blobs=6, seed=index)
        np.save(folder / f"image{index}.npy", (image * 100 + 50)[None].astype(np.float32))
        np.save(folder / f"label{index}.npy", label[None].astype(np.uint8))


def pss_kib(pid: int) -> int:
    """Summed PSS (KiB) of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


# ---------------------------------------------------------------------------------- loaders
def voxelflow_loader(folder: Path, size: int, workers: int):
    import torch

    from voxelflow.data.cached import CachedSubject, compute_class_locations
    from voxelflow.sampling import BalancedSampler, PatchQueue
    from voxelflow.transforms.compose import build_augmentation

    affine = np.diag([*SPACING, 1.0])
    subjects = []
    for index in range(NUM_VOLUMES):  # the cache: z-scored memmaps + class locations, built once
        cached = folder / f"vf_image{index}.npy"
        if not cached.exists():
            raw = np.load(folder / f"image{index}.npy")
            np.save(cached, ((raw - raw.mean()) / raw.std()).astype(np.float32))
            label = np.load(folder / f"label{index}.npy")
            locations = compute_class_locations(label)
            np.savez(folder / f"vf_loc{index}.npz", **{str(k): v for k, v in locations.items()})
        arrays = {
            "image": np.load(cached, mmap_mode="r"),
            "label": np.load(folder / f"label{index}.npy", mmap_mode="r"),
        }
        with np.load(folder / f"vf_loc{index}.npz") as stored:
            locations = {int(k): stored[k] for k in stored.files}
        subjects.append(
            CachedSubject(
                f"s{index}",
                arrays,
                {"image": "intensity", "label": "label"},
                affine,
                class_locations=locations,
            )
        )
    augmentation = build_augmentation(
        [
            {"name": "flip", "axes": [0, 1, 2], "flip_probability": 0.5},
            {"name": "affine", "rotation": 15, "scaling": [0.9, 1.1]},
        ]
    )
    sampler = BalancedSampler((size,) * 3, windows_per_subject=2, class_ratios="foreground")
    queue = PatchQueue(subjects, sampler, transform=augmentation, queue_length=4, seed=0)
    return torch.utils.data.DataLoader(
        queue, batch_size=2, num_workers=workers, persistent_workers=workers > 0
    )


def monai_loader(folder: Path, size: int, workers: int, kind: str):
    import math

    import monai
    from monai import transforms as mt

    monai.data.set_track_meta(False)
    data = [
        {"image": np.load(folder / f"image{i}.npy"), "label": np.load(folder / f"label{i}.npy")}
        for i in range(NUM_VOLUMES)
    ]
    keys = ["image", "label"]
    deterministic = [mt.NormalizeIntensityd(keys="image"), mt.FgBgToIndicesd(keys="label")]
    random = [
        mt.RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=(size,) * 3,
            pos=1,
            neg=1,
            num_samples=2,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        ),
        *[mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)],
        mt.RandAffined(
            keys=keys,
            prob=1.0,
            rotate_range=(math.radians(15),) * 3,
            scale_range=(0.1,) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
    ]
    transform = mt.Compose(deterministic + random)
    if kind == "monai_dataset":
        dataset = monai.data.Dataset(data, transform=transform)
    else:
        dataset = monai.data.CacheDataset(
            data, transform=transform, num_workers=None, progress=False
        )
    if kind == "monai_thread":
        return monai.data.ThreadDataLoader(
            dataset,
            batch_size=1,
            num_workers=0,
            shuffle=True,
            repeats=1,
            use_thread_workers=workers > 0,
        )
    return monai.data.DataLoader(
        dataset, batch_size=1, num_workers=workers, shuffle=True, persistent_workers=workers > 0
    )


def torchio_loader(folder: Path, size: int, workers: int):
    import torch
    import torchio as tio

    affine = np.diag([*SPACING, 1.0])
    subjects = [
        tio.Subject(
            image=tio.ScalarImage(
                tensor=torch.from_numpy(np.load(folder / f"image{i}.npy")), affine=affine
            ),
            label=tio.LabelMap(
                tensor=torch.from_numpy(np.load(folder / f"label{i}.npy")), affine=affine
            ),
        )
        for i in range(NUM_VOLUMES)
    ]
    transform = tio.Compose(
        [
            tio.ZNormalization(),
            tio.RandomFlip(axes=(0, 1, 2), flip_probability=0.5),
            tio.RandomAffine(scales=(0.9, 1.1), degrees=15, p=1.0),
        ]
    )
    dataset = tio.SubjectsDataset(subjects, transform=transform)
    sampler = tio.LabelSampler(
        size, label_name="label", label_probabilities={0: 3, 1: 1, 2: 1, 3: 1}
    )
    queue = tio.Queue(
        dataset, max_length=8, samples_per_volume=2, sampler=sampler, num_workers=workers
    )
    return torch.utils.data.DataLoader(queue, batch_size=2, num_workers=0)


# ---------------------------------------------------------------------------------- one run
def batches_of(loader):
    while True:
        yield from loader


def run_one(pipeline: str, folder: Path, size: int, workers: int, batches: int) -> dict:
    """Time ``batches`` batches (after four warm-up batches) in this process."""
    import torch

    torch.set_num_threads(1)
    if pipeline == "voxelflow":
        loader = voxelflow_loader(folder, size, workers)
    elif pipeline == "torchio":
        loader = torchio_loader(folder, size, workers)
    else:
        loader = monai_loader(folder, size, workers, pipeline)
    stream = batches_of(loader)
    for _ in range(4):  # warm-up: workers started, first queue fills consumed
        next(stream)
    patches, foreground, peak = 0, 0, 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(stream)
        image, label = batch["image"], batch["label"]
        image = image["data"] if isinstance(image, dict) else image  # TorchIO batches
        label = label["data"] if isinstance(label, dict) else label
        centre = (slice(None), 0, *[s // 2 for s in label.shape[2:]])
        foreground += int((label[centre] != 0).sum())
        patches += image.shape[0]
        peak = max(peak, pss_kib(os.getpid()))
    elapsed = time.perf_counter() - start
    return {
        "patches_per_s": patches / elapsed,
        "foreground_fraction": foreground / patches,
        "pss_mib": peak / 1024,
    }


def stage_split(folder: Path, size: int, windows: int = 8) -> dict:
    """voxelflow per-window time by stage (ms), one process, torch threads = 1."""
    import torch

    torch.set_num_threads(1)
    queue = voxelflow_loader(folder, size, 0).dataset
    sampler, augmentation = queue.sampler, queue.transform
    rng = np.random.default_rng(0)
    subject = queue.subjects[0]
    window = (size,) * 3
    centres = [sampler.draw_centres(subject, window, rng)[0] for _ in range(windows)]
    tick = time.perf_counter()
    plain = [sampler.extract(subject, c, window) for c in centres]
    read = (time.perf_counter() - tick) / windows
    tick = time.perf_counter()
    for c in centres:
        draw = augmentation.draw_spatial(rng, window=window, spacing=SPACING)
        sampler.extract(subject, c, window, draw=draw)
    augmented = (time.perf_counter() - tick) / windows
    tick = time.perf_counter()
    for i in range(0, windows - 1, 2):
        torch.utils.data.default_collate(plain[i : i + 2])
    collate = (time.perf_counter() - tick) / (windows // 2) / 2
    return {
        "read_ms": 1e3 * read,
        "augment_ms": 1e3 * (augmented - read),
        "collate_ms": 1e3 * collate,
    }


# ---------------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument(
        "--one", nargs=3, metavar=("PIPELINE", "SIZE", "WORKERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = args.data or Path(tempfile.mkdtemp(prefix="vf_bench_"))
    if args.one:
        pipeline, size, workers = args.one[0], int(args.one[1]), int(args.one[2])
        result = (
            stage_split(folder, size)
            if pipeline == "stages"
            else run_one(pipeline, folder, size, workers, args.batches)
        )
        sys.stdout.write(json.dumps(result) + "\n")
        return
    if not (folder / "label0.npy").exists():
        logger.info("generating data in %s", folder)
        make_data(folder)
    results: dict[tuple, list[dict]] = {}
    for round_index in range(args.repeats):
        for size in args.sizes:
            for workers in args.workers:
                for pipeline in args.pipelines:
                    key = (pipeline, size, workers)
                    command = [
                        sys.executable,
                        __file__,
                        "--data",
                        str(folder),
                        "--batches",
                        str(args.batches),
                        "--one",
                        pipeline,
                        str(size),
                        str(workers),
                    ]
                    done = subprocess.run(command, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        logger.info("%s failed: %s", key, done.stderr[-800:])
                        continue
                    results.setdefault(key, []).append(
                        json.loads(done.stdout.strip().splitlines()[-1])
                    )
                    logger.info("round %d %s %s", round_index, key, results[key][-1])
    report(results, args)
    for size in args.sizes:
        split = subprocess.run(
            [sys.executable, __file__, "--data", str(folder), "--one", "stages", str(size), "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        logger.info(
            "voxelflow stage split at %d³ (ms per window): %s",
            size,
            split.stdout.strip() or split.stderr[-500:],
        )


def report(results: dict[tuple, list[dict]], args: argparse.Namespace) -> None:
    logger.info(
        "\n%-14s %4s %3s %12s %8s %10s %9s",
        "pipeline",
        "size",
        "wk",
        "patches/s",
        "vs cache",
        "fg-centred",
        "PSS MiB",
    )
    for size in args.sizes:
        for workers in args.workers:
            reference = results.get(("monai_cache", size, workers))
            ref_rate = (
                statistics.median(r["patches_per_s"] for r in reference)
                if reference
                else float("nan")
            )
            for pipeline in args.pipelines:
                runs = results.get((pipeline, size, workers))
                if not runs:
                    continue
                rate = statistics.median(r["patches_per_s"] for r in runs)
                logger.info(
                    "%-14s %4d %3d %12.1f %8.2f %10.2f %9.0f",
                    pipeline,
                    size,
                    workers,
                    rate,
                    rate / ref_rate,
                    statistics.median(r["foreground_fraction"] for r in runs),
                    statistics.median(r["pss_mib"] for r in runs),
                )


if __name__ == "__main__":
    main()
