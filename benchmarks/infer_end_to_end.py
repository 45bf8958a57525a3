"""End-to-end inference stages: voxelflow vs MONAI's pipeline, copy network, CT-sized volume.

A 512×512×300 int16 CT-like volume (0.7×0.7×2.5 mm, LPS orientation) is written as NIfTI; both
libraries read it, reorient to RAS and resample to 1.5×1.5×2.5 mm (linear, no intensity
normalisation), run a sliding window (96³, overlap 0.5, Gaussian, 2 windows per call) with a
*copy network* (returns a copy of its input, so every stage is non-network work), map the output
back to the original grid and write it as ``.nii.gz`` (float32).

voxelflow runs ``voxelflow infer``'s own code (:func:`voxelflow.engine.inference.predict_rows`
with a regression application whose network is the copy network); its stage seconds are the
``seconds_read`` ... ``seconds_write`` columns that run writes into ``inferred.csv`` (``seconds``
is its total, which also counts the network and the rest). MONAI runs ``LoadImaged`` +
``EnsureChannelFirstd`` (read) → ``Orientationd`` + ``Spacingd`` (preprocess) →
``sliding_window_inference`` (window) → ``Invertd`` (invert) → ``SaveImaged`` (write), each stage
timed on its own. The libraries alternate for ``--rounds`` rounds; medians and ranges per stage.

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
STAGES = ("read", "preprocess", "window", "invert", "write")  # voxelflow infer's stage columns


def write_volume(folder: Path, shape: tuple[int, ...], name: str = "ct") -> Path:
    """An int16 CT-like volume in LPS orientation (x and y axes flipped from RAS)."""
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 300, shape).astype(np.float32) - 200).clip(-1024, 3000).astype(np.int16)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    path = folder / f"{name}.nii.gz"
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
    """``voxelflow infer``'s code on one row; its table's stage columns (and ``seconds``)."""
    import csv

    from torch import nn

    from voxelflow.applications.regression.application import RegressionApplication
    from voxelflow.config.schema import Experiment
    from voxelflow.engine.inference import predict_rows
    from voxelflow.io.table import SubjectRow
    from voxelflow.losses import build_loss
    from voxelflow.sampling.progress import INFERENCE_STAGES

    class Copy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return copy_network(x)

    experiment = Experiment.model_validate({
        "application": "regression",
        "dataset": {"inputs": {"image": ["image"], "target": ["target"]}},
        "preprocessing": {"orientation": "RAS", "spacing": list(TARGET), "normalization": []},
        "inference": {"window": list(WINDOW), "overlap": 0.5, "blend": "gaussian", "batch_size": 2},
        "system": {"device": "cpu", "threads": 1},
    })
    app = RegressionApplication(Copy(), build_loss("l1"), window=list(WINDOW), overlap=0.5,
                                inference_batch_size=2)
    table = predict_rows(experiment, app, {}, [SubjectRow("ct", {"image": str(path)})],
                         out_dir=out / "voxelflow")
    with table.open() as handle:
        (row,) = csv.DictReader(handle)
    stages = {name: float(row[f"seconds_{name}"]) for name in INFERENCE_STAGES}
    return {**stages, "infer_total": float(row["seconds"])}


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
        data["pred"] = stages.time("window", lambda: sliding_window_inference(
            image[None].float(), WINDOW, 2, copy_network, overlap=0.5, mode="gaussian")[0])
    inverter = Invertd("pred", transform=preprocess, orig_keys="image", nearest_interp=False)
    data = stages.time("invert", lambda: inverter(data))
    saver = SaveImaged("pred", output_dir=str(out), output_postfix="monai", separate_folder=False,
                       output_dtype=np.float32, print_log=False)
    stages.time("write", lambda: saver(data))
    return stages.seconds


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved(path: Path, out: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Library → stage → seconds per round, the libraries alternating round by round."""
    runs = {"voxelflow": voxelflow_run, "monai": monai_run}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for stage, seconds in run(path, out).items():
                times[name].setdefault(stage, []).append(seconds)
    return times


def report(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Medians and ranges per stage, the sum of the stages per round (``total``), and a table
    of both libraries side by side in the log."""
    result = {}
    for name, stages in times.items():
        per_round = [sum(values) for values in zip(*(stages[s] for s in STAGES))]
        result[name] = {**{s: summarise(v) for s, v in stages.items()}, "total": summarise(per_round)}
    logger.info("%-12s %-24s %-24s %s", "stage", "voxelflow s [min-max]", "MONAI s [min-max]",
                "voxelflow/MONAI")
    for stage in (*STAGES, "total"):
        cells = [result[name][stage] for name in ("voxelflow", "monai")]
        logger.info("%-12s %-24s %-24s %.2f", stage, *(
            f"{c['median']:.2f} [{c['min']:.2f}-{c['max']:.2f}]" for c in cells),
            cells[0]["median"] / cells[1]["median"])
    infer = result["voxelflow"]["infer_total"]
    logger.info("voxelflow infer's own total (seconds column, with the copy network and the "
                "rest): %.2f s [%.2f-%.2f]", infer["median"], infer["min"], infer["max"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", default="x".join(map(str, SHAPE)))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        inputs, out = Path(folder) / "in", Path(folder) / "out"
        inputs.mkdir()
        interleaved(write_volume(inputs, (64, 64, 40), "warmup"), out, 1)  # imports, not counted
        path = write_volume(inputs, tuple(int(s) for s in args.shape.split("x")))
        times = interleaved(path, out, args.rounds)
    result = {"shape": args.shape, "rounds": args.rounds, "threads": 1,
              "load": Path("/proc/loadavg").read_text().split()[0], **report(times)}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
