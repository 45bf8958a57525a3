"""End-to-end inference stages: voxelflow vs MONAI's pipeline, copy network, CT-sized volume.

A 512×512×300 int16 CT-like volume (0.7×0.7×2.5 mm, LPS orientation) is written as NIfTI; both
libraries read it, reorient to RAS and resample to 1.5×1.5×2.5 mm (linear), run a sliding window
(96³, overlap 0.5, Gaussian, 2 windows per call) with a *copy network* (returns its input: every
timed stage is non-network work), map the output back to the original grid and write it as
NIfTI. voxelflow runs the stages ``voxelflow infer`` runs (``read_image`` → ``Preprocessor`` →
``sliding_window`` → ``invert`` → ``write_image``); MONAI runs ``LoadImaged`` →
``EnsureChannelFirstd`` → ``Orientationd`` → ``Spacingd`` → ``sliding_window_inference`` →
``Invertd`` → ``SaveImaged``. Stages are timed one by one, libraries interleaved for
``--rounds`` rounds; medians and ranges.

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/infer_end_to_end.py --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

logger = logging.getLogger("benchmarks.infer_end_to_end")
SHAPE, SPACING, TARGET = (512, 512, 300), (0.7, 0.7, 2.5), (1.5, 1.5, 2.5)
WINDOW = (96, 96, 96)


def write_volume(folder: Path, shape: tuple[int, ...]) -> Path:
    """An int16 CT-like volume in LPS orientation (x and y axes flipped from RAS)."""
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 300, shape).astype(np.float32) - 200).clip(-1024, 3000).astype(np.int16)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    path = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def copy_network(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


class Stages:
    """Seconds per named stage of one run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, function: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = function()
        self.seconds[name] = time.perf_counter() - start
        return result


def voxelflow_run(path: Path, out: Path) -> dict[str, float]:
    from voxelflow.config.schema import PreprocessingConfig
    from voxelflow.io.image import Subject
    from voxelflow.io.readers import read_image
    from voxelflow.io.writers import write_image
    from voxelflow.sampling import sliding_window
    from voxelflow.transforms.preprocess import Preprocessor, invert

    stages = Stages()
    image = stages.time("read", lambda: read_image(path))
    config = PreprocessingConfig(orientation="RAS", spacing=list(TARGET))
    processed, record = stages.time(
        "preprocess", lambda: Preprocessor(config)(Subject("ct", {"image": image}))
    )
    prepared = processed["image"]
    with torch.no_grad():
        output = stages.time("sliding_window", lambda: sliding_window(
            copy_network, prepared.data[None].float(), WINDOW, overlap=0.5, batch_size=2)[0])
    result = stages.time("invert", lambda: invert(prepared.with_data(output), record))
    stages.time("write", lambda: write_image(result, out / "vf_pred.nii.gz", dtype=np.float32))
    return stages.seconds


def monai_run(path: Path, out: Path) -> dict[str, float]:
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        Spacingd,
    )

    stages = Stages()
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    preprocess = Compose([
        Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=TARGET, mode="bilinear"),
    ])
    data = stages.time("read", lambda: load({"image": str(path)}))
    data = stages.time("preprocess", lambda: preprocess(data))
    image = data["image"]
    with torch.no_grad():
        data["pred"] = stages.time("sliding_window", lambda: sliding_window_inference(
            image[None].float(), WINDOW, 2, copy_network, overlap=0.5, mode="gaussian")[0])
    inverter = Invertd("pred", transform=preprocess, orig_keys="image", nearest_interp=False)
    data = stages.time("invert", lambda: inverter(data))
    saver = SaveImaged("pred", output_dir=str(out), output_postfix="monai", separate_folder=False,
                       output_dtype=np.float32, print_log=False)
    stages.time("write", lambda: saver(data))
    return stages.seconds


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", default="x".join(map(str, SHAPE)))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    runs = {"voxelflow": voxelflow_run, "monai": monai_run}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in runs}
    with tempfile.TemporaryDirectory() as folder:
        path = write_volume(Path(folder), tuple(int(s) for s in args.shape.split("x")))
        for _ in range(args.rounds):
            for name, run in runs.items():
                for stage, seconds in run(path, Path(folder)).items():
                    times[name].setdefault(stage, []).append(seconds)
    result = {"shape": args.shape, "rounds": args.rounds,
              "load": Path("/proc/loadavg").read_text().split()[0]}
    for name, stages in times.items():
        totals = [sum(values) for values in zip(*stages.values())]
        result[name] = {**{s: summarise(v) for s, v in stages.items()}, "total": summarise(totals)}
        logger.info("%-9s %s | total %.2f s", name, "  ".join(
            f"{s} {summarise(v)['median']:.2f} s" for s, v in stages.items()),
            result[name]["total"]["median"])
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
