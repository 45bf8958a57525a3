"""Sliding-window inference overhead: voxelflow vs MONAI ``sliding_window_inference`` vs TorchIO.

One 160×160×128 volume, window 96³, overlap 0.5 and 0.25, Gaussian blending (TorchIO: its
``hann`` mode, the closest it has). A *copy network* (returns its input) isolates the
non-network overhead; a small random convolution (same weights for all) checks that voxelflow's
output equals MONAI's Gaussian mode. Runs are interleaved for ``--repeats`` rounds; the peak
memory is the largest resident-set growth during a call (sampled every 2 ms).

Usage:
    .venv/bin/python benchmarks/sliding_window.py --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from pathlib import Path

import torch

logger = logging.getLogger("benchmarks.sliding_window")
SHAPE = (160, 160, 128)
WINDOW = (96, 96, 96)


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def measure(function) -> tuple[float, float, torch.Tensor]:
    """Seconds, peak RSS growth (MiB) and result of ``function()``."""
    base, peak, running = rss_mib(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss_mib() - base)
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    result = function()
    elapsed = time.perf_counter() - start
    running[0] = False
    watcher.join()
    return elapsed, max(peak[0], rss_mib() - base), result


def copy_network(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def runners(image: torch.Tensor, overlap: float, network) -> dict:
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

    return {"voxelflow": voxelflow_run, "monai": monai_run, "torchio": torchio_run}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    image = torch.rand(1, 1, *SHAPE, generator=torch.Generator().manual_seed(0))
    for overlap in (0.5, 0.25):
        timings: dict[str, list[tuple[float, float]]] = {}
        for run in runners(image, overlap, copy_network).values():  # warm-up, not counted
            run()
        for _ in range(args.repeats):
            for name, run in runners(image, overlap, copy_network).items():
                seconds, memory, _ = measure(run)
                timings.setdefault(name, []).append((seconds, memory))
        for name, values in timings.items():
            logger.info(
                "overlap %.2f %-9s overhead %.3f s (median of %d)  peak RSS growth %.0f MiB",
                overlap,
                name,
                statistics.median(v[0] for v in values),
                len(values),
                statistics.median(v[1] for v in values),
            )
        torch.manual_seed(0)
        network = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
        run = runners(image, overlap, network)
        difference = (run["voxelflow"]() - run["monai"]()).abs().max().item()
        logger.info(
            "overlap %.2f conv network: max |voxelflow - MONAI gaussian| = %.2e",
            overlap,
            difference,
        )


if __name__ == "__main__":
    main()
