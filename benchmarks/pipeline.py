"""Training-patch pipeline: voxelflow vs MONAI (Dataset, CacheDataset, PersistentDataset,
ThreadDataLoader) vs TorchIO: patches/s and peak memory.

Same generated data for all (default: 8 volumes of 160×160×128, 4-class label map, spacing
1×1×1.5 mm), z-score, balanced 1:1 centres, two windows per volume, batch 2, flips p=0.5 per
axis, affine with p=1 (rotation ±15°, scaling 0.9–1.1). voxelflow reads windows from its real
mmap cache (:class:`voxelflow.io.cache.ArrayCache`, subjects loaded lazily as in training);
MONAI starts from the ``.npy`` files (``LoadImaged``, image float32, label kept uint8), with
foreground/background indices precomputed by ``FgBgToIndicesd`` in the deterministic part
(cached in RAM by CacheDataset, on disk by PersistentDataset). Each run is its own subprocess;
a thread samples every 50 ms the summed PSS and summed RSS of the process and all its workers
(PSS splits shared pages between processes; RSS counts them once per process), from before the
dataset is built to the last batch, and the peaks are reported. Runs are interleaved
A B C … A B C for ``--repeats`` rounds; medians and ratios to MONAI CacheDataset. Disk caches
(voxelflow, PersistentDataset) are built by an untimed run first. TorchIO holds its subjects
as in-memory tensors here, so its memory is not comparable (left out of memory runs).
``voxelflow`` resamples augmented windows with the fused numba kernel (the training default,
compiled before the workers fork), ``voxelflow_torch`` with ``grid_sample``
(``system.resample_kernel: torch``). ``baseline`` is a DataLoader of constant windows with the same workers: the memory of Python,
torch and the worker processes before any data.

Usage:
    # throughput (issue #4 setup)
    .venv/bin/python benchmarks/pipeline.py --repeats 2 --batches 10 --sizes 96 64 --workers 0 2
    # memory at 64 and 256 volumes of 64³ (small volumes so that 256 fit this machine)
    .venv/bin/python benchmarks/pipeline.py --volumes 64 256 --shape 64 64 64 --sizes 32 \
        --workers 2 --repeats 2 --batches 20 --pipelines baseline voxelflow monai_cache monai_persistent
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
import threading
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmarks.pipeline")
SHAPE = (160, 160, 128)
SPACING = (1.0, 1.0, 1.5)
NUM_VOLUMES = 8
PIPELINES = (
    "baseline", "voxelflow", "voxelflow_torch", "monai_cache", "monai_persistent", "monai_thread", "monai_dataset", "torchio",
)  # fmt: skip
DISK_CACHED = ("voxelflow", "monai_persistent")


def make_data(folder: Path, *, volumes: int = NUM_VOLUMES, shape: tuple = SHAPE) -> None:
    """Write phantoms (raw intensities and 4-class labels) as .npy, and ``meta.json``."""
    from voxelflow.synthetic import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(volumes):
        image, label = make_phantom(shape, num_classes=4, num_blobs=6, seed=index)
        np.save(folder / f"image{index}.npy", (image * 100 + 50)[None].astype(np.float32))
        np.save(folder / f"label{index}.npy", label[None].astype(np.uint8))
    (folder / "meta.json").write_text(json.dumps({"volumes": volumes, "shape": list(shape)}))


def volumes_in(folder: Path) -> int:
    """Number of volumes of a data folder (8 for folders written before ``meta.json``)."""
    meta = folder / "meta.json"
    return json.loads(meta.read_text())["volumes"] if meta.exists() else NUM_VOLUMES


def memory_kib(pid: int) -> tuple[int, int]:
    """Summed (PSS, RSS) in KiB of a process and all its descendants."""
    pss = rss = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pss, rss


def pss_kib(pid: int) -> int:
    """Summed PSS (KiB) of a process and all its descendants."""
    return memory_kib(pid)[0]


class PeakMemory:
    """A thread recording the peak summed PSS and RSS of this process tree every ``interval`` s."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.pss, self.rss = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        pss, rss = memory_kib(os.getpid())
        self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# ---------------------------------------------------------------------------------- loaders
class LazyCachedSubjects:
    """Cache entries loaded on access, as the training SubjectView does (nothing held)."""

    def __init__(self, root: Path, keys: list[str]) -> None:
        self.root, self.keys = root, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int):
        from voxelflow.data.cached import CachedSubject
        from voxelflow.io.cache import ArrayCache

        entry = ArrayCache(self.root).load(self.keys[index])
        return CachedSubject(
            self.keys[index], entry.arrays, entry.kinds, entry.affine,
            class_locations=entry.class_locations,
        )  # fmt: skip


def voxelflow_cache(folder: Path) -> LazyCachedSubjects:
    """voxelflow's preprocessing cache of the data (z-scored image, label, class locations)."""
    from voxelflow.data.cached import compute_class_locations
    from voxelflow.io.cache import ArrayCache

    cache, keys = ArrayCache(folder / "vf_cache"), []
    for index in range(volumes_in(folder)):
        key = f"s{index}"
        if key not in cache:
            raw = np.load(folder / f"image{index}.npy")
            label = np.load(folder / f"label{index}.npy")
            cache.write(
                key, {"image": ((raw - raw.mean()) / raw.std()).astype(np.float32), "label": label},
                kinds={"image": "intensity", "label": "label"}, affine=np.diag([*SPACING, 1.0]),
                class_locations=compute_class_locations(label),
            )  # fmt: skip
        keys.append(key)
    return LazyCachedSubjects(folder / "vf_cache", keys)


def voxelflow_loader(folder: Path, size: int, workers: int, kernel: str = "auto"):
    """``kernel``: ``system.resample_kernel`` (``voxelflow_torch`` runs grid_sample)."""
    import torch

    from voxelflow.sampling import BalancedSampler, PatchQueue
    from voxelflow.transforms.compose import build_augmentation
    from voxelflow.transforms.fused_resample import warm_up

    augmentation = build_augmentation(
        [
            {"name": "flip", "axes": [0, 1, 2], "flip_probability": 0.5},
            {"name": "affine", "rotation": 15, "scaling": [0.9, 1.1]},
        ]
    )
    sampler = BalancedSampler((size,) * 3, windows_per_subject=2, class_ratios="foreground")
    sampler.resample_kernel = kernel
    queue = PatchQueue(
        voxelflow_cache(folder), sampler, transform=augmentation, queue_length=4, seed=0
    )
    warm_up(queue.subjects[0], kernel=kernel, augmentation=augmentation)  # as training does
    return torch.utils.data.DataLoader(
        queue, batch_size=2, num_workers=workers, persistent_workers=workers > 0
    )


def monai_loader(folder: Path, size: int, workers: int, kind: str):
    import math

    import monai
    from monai import transforms as mt

    monai.data.set_track_meta(False)
    data = [
        {"image": str(folder / f"image{i}.npy"), "label": str(folder / f"label{i}.npy")}
        for i in range(volumes_in(folder))
    ]
    keys = ["image", "label"]
    deterministic = [
        mt.LoadImaged(keys="image", reader="NumpyReader", image_only=True),
        mt.LoadImaged(keys="label", reader="NumpyReader", image_only=True, dtype=None),
        mt.NormalizeIntensityd(keys="image"),
        mt.FgBgToIndicesd(keys="label"),
    ]
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
    elif kind == "monai_persistent":
        dataset = monai.data.PersistentDataset(
            data, transform=transform, cache_dir=folder / "monai_persistent"
        )
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


class _Zeros:
    """Constant windows: what a DataLoader with workers costs before any data (the baseline)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int) -> dict:
        import torch

        window = (1, self.size, self.size, self.size)
        return {"image": torch.zeros(window), "label": torch.ones(window, dtype=torch.uint8)}


def baseline_loader(size: int, workers: int):
    import torch

    return torch.utils.data.DataLoader(
        _Zeros(size), batch_size=2, num_workers=workers, persistent_workers=workers > 0
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
        for i in range(volumes_in(folder))
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
    """Time ``batches`` batches (after four warm-up batches) in this process; peak memory from
    before the dataset is built to the last batch."""
    import torch

    torch.set_num_threads(1)
    with PeakMemory() as memory:
        if pipeline in ("voxelflow", "voxelflow_torch"):
            kernel = "torch" if pipeline == "voxelflow_torch" else "auto"
            loader = voxelflow_loader(folder, size, workers, kernel)
        elif pipeline == "torchio":
            loader = torchio_loader(folder, size, workers)
        elif pipeline == "baseline":
            loader = baseline_loader(size, workers)
        else:
            loader = monai_loader(folder, size, workers, pipeline)
        stream = batches_of(loader)
        for _ in range(4):  # warm-up: workers started, first queue fills consumed
            next(stream)
        patches, foreground = 0, 0
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(stream)
            image, label = batch["image"], batch["label"]
            image = image["data"] if isinstance(image, dict) else image  # TorchIO batches
            label = label["data"] if isinstance(label, dict) else label
            centre = (slice(None), 0, *[s // 2 for s in label.shape[2:]])
            foreground += int((label[centre] != 0).sum())
            patches += image.shape[0]
        elapsed = time.perf_counter() - start
    return {
        "patches_per_s": patches / elapsed,
        "foreground_fraction": foreground / patches,
        "pss_mib": memory.pss / 1024,
        "rss_mib": memory.rss / 1024,
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
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--volumes", type=int, nargs="+", default=[NUM_VOLUMES])
    parser.add_argument("--shape", type=int, nargs=3, default=list(SHAPE))
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES))
    parser.add_argument("--data", type=Path, default=None, help="folder of generated data sets")
    parser.add_argument("--no-stages", action="store_true", help="skip the stage split")
    parser.add_argument(
        "--one", nargs=3, metavar=("PIPELINE", "SIZE", "WORKERS"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


def data_folder(root: Path, volumes: int, shape: list[int]) -> Path:
    """The generated data set of ``volumes`` volumes of ``shape`` under ``root`` (made once)."""
    folder = root / f"{volumes}x{'x'.join(map(str, shape))}"
    if not (folder / "meta.json").exists():
        logger.info("generating %d volumes of %s in %s", volumes, shape, folder)
        make_data(folder, volumes=volumes, shape=tuple(shape))
    return folder


def run_subprocess(
    folder: Path, pipeline: str, size: int, workers: int, batches: int
) -> dict | None:
    command = [sys.executable, __file__, "--data", str(folder), "--batches", str(batches),
               "--one", pipeline, str(size), str(workers)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        logger.info("%s %d %d failed: %s", pipeline, size, workers, done.stderr[-800:])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.data or Path(tempfile.mkdtemp(prefix="vf_bench_"))
    if args.one:
        pipeline, size, workers = args.one[0], int(args.one[1]), int(args.one[2])
        result = (
            stage_split(root, size)
            if pipeline == "stages"
            else run_one(pipeline, root, size, workers, args.batches)
        )
        sys.stdout.write(json.dumps(result) + "\n")
        return
    folders = {volumes: data_folder(root, volumes, args.shape) for volumes in args.volumes}
    for folder in folders.values():  # build disk caches once, untimed
        for pipeline in (p for p in args.pipelines if p in DISK_CACHED):
            run_subprocess(folder, pipeline, min(args.sizes), 0, 1)
    results: dict[tuple, list[dict]] = {}
    for round_index in range(args.repeats):
        for volumes, folder in folders.items():
            for size in args.sizes:
                for workers in args.workers:
                    for pipeline in args.pipelines:
                        key = (pipeline, volumes, size, workers)
                        result = run_subprocess(folder, pipeline, size, workers, args.batches)
                        if result is not None:
                            results.setdefault(key, []).append(result)
                            logger.info("round %d %s %s", round_index, key, result)
    report(results, args)
    if not args.no_stages:
        stages(folders[args.volumes[0]], args.sizes)


def stages(folder: Path, sizes: list[int]) -> None:
    for size in sizes:
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
        "\n%-16s %5s %4s %3s %10s %8s %10s %9s %9s %8s",
        "pipeline", "vols", "size", "wk", "patches/s", "vs cache", "fg-centred", "PSS MiB",
        "RSS MiB", "PSS vs",
    )  # fmt: skip
    for volumes in args.volumes:
        for size in args.sizes:
            for workers in args.workers:
                reference = results.get(("monai_cache", volumes, size, workers)) or []
                ref_rate = median(reference, "patches_per_s")
                ref_pss = median(reference, "pss_mib")
                for pipeline in args.pipelines:
                    runs = results.get((pipeline, volumes, size, workers))
                    if not runs:
                        continue
                    rate, pss = median(runs, "patches_per_s"), median(runs, "pss_mib")
                    logger.info(
                        "%-16s %5d %4d %3d %10.1f %8.2f %10.2f %9.0f %9.0f %8.2f",
                        pipeline, volumes, size, workers, rate, rate / ref_rate,
                        median(runs, "foreground_fraction"), pss, median(runs, "rss_mib"),
                        pss / ref_pss,
                    )  # fmt: skip


def median(runs: list[dict], key: str) -> float:
    """Median of ``key`` over runs (NaN when there are none)."""
    return statistics.median(r[key] for r in runs) if runs else float("nan")


if __name__ == "__main__":
    main()
