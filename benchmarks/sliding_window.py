"""Sliding-window inference overhead: voxelflow vs MONAI ``sliding_window_inference`` vs TorchIO.

Volumes 160×160×128 and 512×512×300 (``--shapes``), window 96³, overlap 0.5 and 0.25, Gaussian
blending (TorchIO: its ``hann`` mode, the closest it has; only on volumes up to 160×160×128,
``--torchio``). A *copy network* (returns a copy of its input) stands in for the network; the
time spent inside it is measured and subtracted, so ``overhead`` is the non-network time
(windows cut, weighted, accumulated, normalised). A small random convolution (same weights for
all) checks that voxelflow's output equals MONAI's Gaussian mode. Runs are interleaved for
``--rounds`` rounds; the peak memory is the largest resident-set growth during a call (sampled
every 2 ms).

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/sliding_window.py --rounds 8 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from pathlib import Path

import torch

logger = logging.getLogger("benchmarks.sliding_window")
SHAPES = ((160, 160, 128), (512, 512, 300))
WINDOW = (96, 96, 96)


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def measure(function) -> tuple[float, float, float, torch.Tensor]:
    """Wall seconds, CPU seconds of this thread, peak RSS growth (MiB), result of ``function()``.

    The CPU time is what to compare on a shared machine: other processes' load stretches the
    wall time but not it.
    """
    base, peak, running = rss_mib(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss_mib() - base)
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start, cpu_start = time.perf_counter(), time.thread_time()
    result = function()
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    running[0] = False
    watcher.join()
    return elapsed, cpu, max(peak[0], rss_mib() - base), result


class CopyNetwork:
    """Returns a copy of its input; adds the wall and CPU seconds spent inside it."""

    def __init__(self) -> None:
        self.seconds = self.cpu_seconds = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        start, cpu_start = time.perf_counter(), time.thread_time()
        y = x.clone()
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.thread_time() - cpu_start
        return y


def runners(image: torch.Tensor, overlap: float, network, torchio: bool = True) -> dict:
    import torchio as tio
    from monai.inferers import sliding_window_inference

    from voxelflow.sampling import sliding_window

    def voxelflow_run():
        return sliding_window(
            network, image, WINDOW, overlap=overlap, blend="gaussian", batch_size=2
        )

    def monai_run():
        return sliding_window_inference(
            image, WINDOW, 2, network, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )

    def torchio_run():
        subject = tio.Subject(image=tio.ScalarImage(tensor=image[0]))
        overlap_voxels = round(WINDOW[0] * overlap / 2) * 2
        sampler = tio.inference.GridSampler(subject, WINDOW, overlap_voxels)
        aggregator = tio.inference.GridAggregator(sampler, overlap_mode="hann")
        loader = torch.utils.data.DataLoader(sampler, batch_size=2)
        for batch in loader:
            aggregator.add_batch(network(batch["image"]["data"]), batch[tio.LOCATION])
        return aggregator.get_output_tensor()[None]

    runs = {"voxelflow": voxelflow_run, "monai": monai_run, "torchio": torchio_run}
    return runs if torchio else {k: v for k, v in runs.items() if k != "torchio"}


def overhead_rounds(image: torch.Tensor, overlap: float, rounds: int, torchio: bool) -> dict:
    """Per library: lists of non-network CPU and wall seconds, totals and peak RSS growth (MiB)."""
    timings: dict[str, dict[str, list[float]]] = {}
    for run in runners(image, overlap, CopyNetwork(), torchio).values():  # warm-up, not counted
        run()
    for _ in range(rounds):
        network = CopyNetwork()
        for name, run in runners(image, overlap, network, torchio).items():
            network.seconds = network.cpu_seconds = 0.0
            seconds, cpu, memory, result = measure(run)
            del result
            entry = timings.setdefault(
                name, {"overhead_cpu_s": [], "overhead_s": [], "total_s": [], "peak_mib": []}
            )
            entry["overhead_cpu_s"].append(cpu - network.cpu_seconds)
            entry["overhead_s"].append(seconds - network.seconds)
            entry["total_s"].append(seconds)
            entry["peak_mib"].append(memory)
    return timings


def conv_difference(image: torch.Tensor, overlap: float) -> float:
    """max |voxelflow − MONAI gaussian| with a small random convolution (a 64³ crop)."""
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    crop = image[..., : min(image.shape[2], 160), : min(image.shape[3], 160), :128]
    run = runners(crop, overlap, network, torchio=False)
    return (run["voxelflow"]() - run["monai"]()).abs().max().item()


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", "--repeats", type=int, default=8, dest="rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", default="160x160x128,512x512x300")
    parser.add_argument("--overlaps", default="0.5,0.25")
    parser.add_argument("--torchio", action="store_true", help="also TorchIO (small volumes)")
    parser.add_argument("--json", action="store_true", help="one JSON line per case")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    for text in args.shapes.split(","):
        shape = tuple(int(s) for s in text.split("x"))
        image = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0))
        torchio = args.torchio and image.numel() <= 160 * 160 * 128
        for overlap in (float(o) for o in args.overlaps.split(",")):
            timings = overhead_rounds(image, overlap, args.rounds, torchio)
            result = {
                "shape": list(shape), "window": list(WINDOW), "overlap": overlap,
                "rounds": args.rounds, "threads": args.threads,
                "load": Path("/proc/loadavg").read_text().split()[0],
                "max_abs_difference_conv": conv_difference(image, overlap),
            }
            for name, entry in timings.items():
                result[name] = {key: summarise(values) for key, values in entry.items()}
            vf, mo = timings["voxelflow"]["overhead_cpu_s"], timings["monai"]["overhead_cpu_s"]
            result["overhead_ratio_median"] = statistics.median(vf) / statistics.median(mo)
            result["overhead_ratio_per_round"] = summarise([a / b for a, b in zip(vf, mo)])
            if args.json:
                print(json.dumps(result), flush=True)
            for name in timings:
                logger.info(
                    "%s overlap %.2f %-9s overhead CPU %.3f s [%.3f–%.3f], wall %.3f s (total %.3f "
                    "s, %d rounds)  peak RSS growth %.0f MiB", text, overlap, name,
                    *(result[name]["overhead_cpu_s"][k] for k in ("median", "min", "max")),
                    result[name]["overhead_s"]["median"], result[name]["total_s"]["median"],
                    args.rounds,
                    result[name]["peak_mib"]["median"],
                )
            logger.info("%s overlap %.2f voxelflow/MONAI overhead (CPU) %.2f; conv max |Δ| %.2e", text,
                        overlap, result["overhead_ratio_median"], result["max_abs_difference_conv"])


if __name__ == "__main__":
    main()
