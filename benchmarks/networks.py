"""Forward + backward time and peak memory per network, voxelflow vs MONAI, interleaved.

Timing: each group (a voxelflow network and its MONAI references) runs in a fresh subprocess
that builds all of them, warms each up once, then times ``--iterations`` forward+backward steps
*alternating* between the networks (ours, MONAI, ours, MONAI, ...), so that load from other
processes on a shared machine hits both sides alike; this is repeated ``--repeats`` times in new
processes and the median is reported; the ratio is ours / reference median time.

Memory: each network once more in its own subprocess, one training step:

* CPU: peak resident set size of the worker (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
  minus the RSS measured after building the network and input (before the first step), i.e.
  the activation and gradient memory of one training step (tracemalloc cannot see torch
  allocations).
* CUDA: ``torch.cuda.max_memory_allocated`` during the step.

Defaults: 64³ patch, batch 1, CPU float32; on CUDA 96³, batch 2, AMP (bfloat16 autocast).

Usage:
    python benchmarks/networks.py                 # full table (a few minutes on 2 CPU cores)
    python benchmarks/networks.py --only unet vnet --repeats 1
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

LOGGER = logging.getLogger("benchmarks.networks")

# label → (library, name, options). Options of the MONAI side chosen for a comparable size.
CANDIDATES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "unet": ("voxelflow", "unet", {}),
    "monai DynUNet": (
        "monai",
        "DynUNet",
        {
            "kernel_size": [3] * 5,
            "strides": [1, 2, 2, 2, 2],
            "upsample_kernel_size": [2, 2, 2, 2],
            "filters": [32, 64, 128, 256, 320],
            "norm_name": "instance",
        },
    ),
    "monai UNet": (
        "monai",
        "UNet",
        {
            "channels": [32, 64, 128, 256, 320],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
            "norm": "instance",
        },
    ),
    "vnet (MONAI depths)": (
        "voxelflow",
        "vnet",
        {"down_convs": [1, 1, 2, 3, 2], "up_convs": [2, 2, 1, 1]},
    ),
    "monai VNet": ("monai", "VNet", {}),
    "highresnet": ("voxelflow", "highresnet", {}),
    "monai HighResNet": ("monai", "HighResNet", {}),
    "highresnet small": ("voxelflow", "highresnet", {"variant": "small"}),
    "dense_vnet": ("voxelflow", "dense_vnet", {}),
    "scalenet": ("voxelflow", "scalenet", {}),
    "holistic_net": ("voxelflow", "holistic_net", {}),
    "deepmedic (63³ in)": ("voxelflow", "deepmedic", {}),
}
# Networks timed together in one process, steps alternating (ours first, then the references).
GROUPS: list[list[str]] = [
    ["unet", "monai DynUNet", "monai UNet"],
    ["vnet (MONAI depths)", "monai VNet"],
    ["highresnet", "monai HighResNet", "highresnet small"],
    ["dense_vnet"],
    ["scalenet"],
    ["holistic_net"],
    ["deepmedic (63³ in)"],
]


def build(library: str, name: str, options: dict[str, Any]) -> torch.nn.Module:
    if library == "voxelflow":
        from voxelflow.networks import build_network

        return build_network(name, spatial_dims=3, in_channels=1, out_channels=2, **options)
    import monai.networks.nets as nets

    return getattr(nets, name)(spatial_dims=3, in_channels=1, out_channels=2, **options)


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def make_step(label: str, size: int, batch: int, device: str) -> tuple[Any, int]:
    """Build network ``label`` and its input; return a one-training-step closure and params."""
    library, name, options = CANDIDATES[label]
    size = 63 if name == "deepmedic" and size % 3 else size
    torch.manual_seed(0)
    net = build(library, name, options).to(device).train()
    x = torch.randn(batch, 1, size, size, size, device=device)
    cuda = device.startswith("cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            output = net(x)
        output.float().mean().backward()
        net.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    return step, sum(p.numel() for p in net.parameters())


def time_worker(labels: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Median ms of forward+backward per network, steps alternating between the networks."""
    steps = {label: make_step(label, args.size, args.batch, args.device)[0] for label in labels}
    for step in steps.values():
        step()  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for _ in range(args.iterations):
        for label, step in steps.items():
            start = time.perf_counter()
            step()
            times[label].append((time.perf_counter() - start) * 1000)
    return {label: statistics.median(values) for label, values in times.items()}


def memory_worker(label: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one training step (RSS delta on CPU, max allocated on CUDA) and params."""
    cuda = args.device.startswith("cuda")
    step, params = make_step(label, args.size, args.batch, args.device)
    baseline = rss_mib()  # network, input and torch runtime, before any activation exists
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step()
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    )
    return {"mem_mib": peak, "params": params}


def run_worker(mode: str, labels: list[str], args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", "|".join(labels), "--mode", mode]
    for option in ("size", "batch", "iterations", "device", "threads"):
        command += [f"--{option}", str(getattr(args, option))]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_table(args: argparse.Namespace) -> list[str]:
    groups = [g for g in GROUPS if not args.only or any(g[0].startswith(o) for o in args.only)]
    runs: dict[str, list[float]] = {label: [] for group in groups for label in group}
    for _ in range(args.repeats):
        for group in groups:
            for label, ms in run_worker("time", group, args).items():
                runs[label].append(ms)
                LOGGER.info("  %-22s %8.0f ms", label, ms)
    memory = {label: run_worker("memory", [label], args) for label in runs}
    lines = [f"{'network':24s} {'params':>9s} {'ms fwd+bwd':>11s} {'peak MiB':>9s}  time ratio"]
    for group in groups:
        ours = statistics.median(runs[group[0]])
        for label in group:
            ms = statistics.median(runs[label])
            ratio = f"{group[0]} / this = {ours / ms:.2f}" if label.startswith("monai") else ""
            lines.append(
                f"{label:24s} {memory[label]['params'] / 1e6:8.2f}M {ms:11.0f} "
                f"{memory[label]['mem_mib']:9.0f}  {ratio}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--mode", choices=["time", "memory"], default="time", help=argparse.SUPPRESS
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=None, help="cubic patch size (64 CPU, 96 CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (1 CPU, 2 CUDA)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
    parser.add_argument("--only", nargs="*", help="labels (prefixes) to run")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.size = args.size or (96 if cuda else 64)
    args.batch = args.batch or (2 if cuda else 1)
    torch.set_num_threads(args.threads)
    if args.worker:
        labels = args.worker.split("|")
        result = (
            time_worker(labels, args) if args.mode == "time" else memory_worker(labels[0], args)
        )
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    LOGGER.info(
        "device=%s patch=%d³ batch=%d iterations=%d repeats=%d threads=%d",
        args.device,
        args.size,
        args.batch,
        args.iterations,
        args.repeats,
        args.threads,
    )
    for line in run_table(args):
        LOGGER.info(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
