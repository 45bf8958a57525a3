"""The batched GPU augmentation path in training, measured on one GPU (issue 18, item 2).

One command, from the source tree, on a bare GPU machine (its own Python and CUDA PyTorch):

Run: ``PYTHONPATH=src python benchmarks/gpu.py --json``

Wheels to carry: beyond torch and numpy, pydantic (with pydantic-core, annotated-types,
typing-extensions, typing-inspection) and pyyaml, since networks and losses are built through the
config's one build path; the training import path used here imports no nibabel, SimpleITK,
pydicom or scipy. Add ``monai`` (pure Python, plus its ``numpy``/``torch`` it finds there) for the MONAI
``RandAffined(device="cuda")`` comparison, which is skipped with a note when MONAI is absent.
It finishes in well under 4 minutes (``--budget`` seconds, default 200, are split between the
parts).

With a GPU it prints ONE JSON line::

    {"gpu": true, "device": ..., "window": [96, 96, 96],
     "training": {"amp_off": {"iteration_ms", "data_wait_fraction", ...}, "amp_bf16": {...}},
     "augmentation_windows_per_s": {"voxelflow_batched": ..., "monai_randaffined": ... | null},
     "notes": [...]}

for the reference U-Net config (``configs/segmentation_unet.yaml``: U-Net 32–320 channels,
96³ windows, batch 2, flips + affine ±15° scaling 0.9–1.1 + gamma): the iteration time, the
fraction of it spent waiting for the DataLoader (target < 10 %), augmentation windows/s of
voxelflow's batched path vs MONAI, AMP off and bf16. Without a GPU it prints
``{"gpu": false, "reason": ...}`` and exits 0. ``--device cpu`` runs the same code on the CPU
(a smoke run: its figures say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

REFERENCE_AUGMENTATION = [
    {"name": "flip", "axes": [0, 1, 2]},
    {"name": "affine", "rotation": 15, "scaling": 0.1, "p": 0.5},
    {"name": "gamma", "p": 0.3},
]


def synthetic_subjects(count: int, shape: Sequence[int], seed: int = 0) -> list[Any]:
    """In-memory subjects (image ``(1, *shape)`` float32 + label of random spheres), no files."""
    from voxelflow.data.cached import CachedSubject, compute_class_locations

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    subjects = []
    for index in range(count):
        label = np.zeros(shape, np.uint8)
        for _ in range(3):
            centre = rng.uniform(0.2, 0.8, 3) * np.array(shape)
            label[((grid - centre[:, None, None, None]) ** 2).sum(0) < rng.uniform(8, 20) ** 2] = 1
        image = (rng.normal(size=shape) * 0.3 + label).astype(np.float32)[None]
        subjects.append(CachedSubject(f"s{index}", {"image": image, "label": label[None]},
                                      {"image": "intensity", "label": "label"},
                                      class_locations=compute_class_locations(label)))
    return subjects


def batched_loader(subjects: list[Any], transforms: list[Any], window: Sequence[int], *,
                   batch_size: int, workers: int) -> tuple[torch.utils.data.DataLoader, tuple[int, ...]]:
    """Workers only read margin windows (the training's batched path); returns loader, margin."""
    from voxelflow.sampling.queue import PatchQueue, collate_windows
    from voxelflow.sampling.random import UniformSampler
    from voxelflow.transforms.gpu import augmentation_margin

    sampler = UniformSampler(window, windows_per_subject=2)
    sampler.read_margin = augmentation_margin(transforms, window, (1.0, 1.0, 1.0))
    queue = PatchQueue(subjects, sampler, transform=None, queue_length=8, seed=0)
    loader = torch.utils.data.DataLoader(
        queue, batch_size=batch_size, num_workers=workers, collate_fn=collate_windows,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )  # fmt: skip
    return loader, sampler.read_margin


def time_training(loader: torch.utils.data.DataLoader, augment: Any, device: torch.device, *,
                  amp: str, iterations: int, warmup: int, channels: Sequence[int]) -> dict[str, float]:
    """Median iteration ms and the fraction of wall time blocked on the DataLoader."""
    from voxelflow.losses import build_loss
    from voxelflow.networks.unet import UNet

    torch.manual_seed(0)
    network = UNet(3, 1, 2, channels=tuple(channels)).to(device)
    loss_fn = build_loss("dice_ce")
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    batches: Iterator[dict[str, Any]] = iter(loader)
    waits, totals = [], []
    for step in range(warmup + iterations):
        start = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter() - start
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                 for k, v in batch.items()}
        batch = augment(batch)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(network(batch["image"]), batch["label"].long())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            waits.append(waited)
            totals.append(time.perf_counter() - start)
    return {"iteration_ms": round(statistics.median(totals) * 1e3, 2),
            "data_wait_fraction": round(sum(waits) / sum(totals), 4),
            "iterations": iterations}


def batched_windows_per_second(augment: Any, batch: dict[str, Any], *, repeats: int) -> float:
    """Windows/s of BatchAugmentation on a device batch of margin windows."""
    size = batch["image"].shape[0]
    augment(batch)  # warm-up (cuDNN/grid kernels)
    _sync(batch["image"].device)
    start = time.perf_counter()
    for _ in range(repeats):
        augment(batch)
    _sync(batch["image"].device)
    return size * repeats / (time.perf_counter() - start)


def monai_windows_per_second(batch: dict[str, Any], window: Sequence[int], *,
                             repeats: int) -> tuple[float | None, str | None]:
    """Windows/s of MONAI RandFlipd + RandAffined(device=...) on the same windows (per window,
    as MONAI applies it); ``(None, note)`` when MONAI is not installed."""
    try:
        from monai.transforms import Compose, RandAffined, RandFlipd
    except ImportError as exc:
        return None, f"MONAI comparison skipped: monai not importable ({exc})"
    device = batch["image"].device
    transform = Compose([
        *[RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=axis) for axis in range(3)],
        RandAffined(keys=["image", "label"], prob=0.5, rotate_range=[np.radians(15)] * 3,
                    scale_range=[0.1] * 3, spatial_size=list(window), mode=("bilinear", "nearest"),
                    padding_mode="zeros", device=device),
    ])  # fmt: skip
    items = [{"image": batch["image"][b], "label": batch["label"][b].float()}
             for b in range(batch["image"].shape[0])]
    transform(items[0])
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            transform(item)
    _sync(device)
    return len(items) * repeats / (time.perf_counter() - start), None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(device: torch.device, window: tuple[int, ...], *, iterations: int, workers: int,
        channels: Sequence[int]) -> dict[str, Any]:
    """Every measurement on ``device``; the JSON record."""
    from voxelflow.transforms.compose import build_augmentation
    from voxelflow.transforms.gpu import BatchAugmentation

    transforms = build_augmentation(REFERENCE_AUGMENTATION, seed=0).transforms
    shape = tuple(max(2 * w, 32) for w in window)
    loader, margin = batched_loader(synthetic_subjects(4, shape), transforms, window,
                                    batch_size=2, workers=workers)
    augment = BatchAugmentation(transforms, output_window=window, seed=0, padding_mode="border")
    record: dict[str, Any] = {"gpu": device.type == "cuda", "device": _device_name(device),
                              "window": list(window), "read_margin": list(margin), "batch_size": 2,
                              "workers": workers, "channels": list(channels), "training": {},
                              "notes": []}
    for amp in ("off", "bf16"):
        record["training"][f"amp_{amp}"] = time_training(
            loader, augment, device, amp=amp, iterations=iterations, warmup=3, channels=channels)
    sample = next(iter(loader))
    on_device = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
    repeats = max(2, iterations // 2)
    ours = batched_windows_per_second(augment, on_device, repeats=repeats)
    spatial_only = BatchAugmentation(transforms[:2], output_window=window, seed=0)
    crops = {"image": on_device["image"], "label": on_device["label"]}
    theirs, note = monai_windows_per_second(_centre_crop(crops, window), window, repeats=repeats)
    record["augmentation_windows_per_s"] = {
        "voxelflow_batched": round(ours, 1),
        "voxelflow_batched_spatial_only": round(
            batched_windows_per_second(spatial_only, on_device, repeats=repeats), 1),
        "monai_randaffined": None if theirs is None else round(theirs, 1),
    }
    record["notes"] += [note] if note else []
    record["notes"].append("training: data_wait_fraction target < 0.10; MONAI gets the window-sized "
                           "crop (its RandAffined keeps the input size), voxelflow the margin window")
    return record


def _centre_crop(batch: dict[str, torch.Tensor], window: Sequence[int]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in batch.items():
        starts = [(n - w) // 2 for n, w in zip(tensor.shape[2:], window)]
        out[key] = tensor[:, :, starts[0]:starts[0] + window[0], starts[1]:starts[1] + window[1],
                          starts[2]:starts[2] + window[2]]
    return out


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line (the default output too)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    parser.add_argument("--window", type=int, nargs=3, default=[96, 96, 96])
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per AMP setting")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128, 256, 320],
                        help="U-Net channels per level (the reference config's by default)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        reason = f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda})"
        print(json.dumps({"gpu": False, "reason": reason}))
        return 0
    torch.backends.cudnn.benchmark = True
    record = run(torch.device(args.device), tuple(args.window), iterations=args.iterations,
                 workers=args.workers, channels=args.channels)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
