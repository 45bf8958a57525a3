"""Demo wall time with the threads voxelflow chooses vs PyTorch's default vs ``OMP_NUM_THREADS=1``,
on an idle machine and with a second copy of the demo running at the same time.

Workload (``--workload``): ``train`` (default) is ``voxelflow train`` on the quick demo's config
and data (made once, untimed, by ``voxelflow demo --quick``): the part of the demo whose speed
depends on threads, and independent of the demo's later steps (evaluation, zoo packing);
``demo`` times the whole ``voxelflow demo --quick``.

Modes (environment of the workload and, when loaded, of its twin):

* ``chosen``: ``OMP_NUM_THREADS`` unset: voxelflow picks ``cores - workers`` (engine/threads.py);
* ``torch_default``: ``OMP_NUM_THREADS`` = PyTorch's own default thread count (what voxelflow
  ran with before it chose threads; set through the environment, which voxelflow honours);
* ``omp1``: ``OMP_NUM_THREADS=1``.

Scenarios: ``idle`` (one demo) and ``loaded`` (two demos of the same mode started together; both
wall times count). Every run writes into a fresh folder. Rounds are interleaved (all modes and
scenarios per round) for ``--repeats`` rounds; medians are reported with the load average seen
before each round (other processes on the machine change every figure).

Usage:
    .venv/bin/python benchmarks/threads.py --repeats 2 --json
    .venv/bin/python benchmarks/threads.py --workload demo --repeats 2
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
from pathlib import Path

MODES = ("chosen", "torch_default", "omp1")


def torch_default_threads() -> int:
    """PyTorch's intra-op thread count in a fresh process without ``OMP_NUM_THREADS``."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "import torch; print(torch.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return int(done.stdout.strip())


def environment(mode: str, default_threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if mode == "torch_default":
        env["OMP_NUM_THREADS"] = str(default_threads)
    elif mode == "omp1":
        env["OMP_NUM_THREADS"] = "1"
    return env


def demo_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "voxelflow", "demo", "--quick", "--out", str(out)]


def prepare(root: Path) -> Path:
    """The quick demo's config and data, made once by ``voxelflow demo --quick`` (untimed)."""
    out = root / "base"
    subprocess.run(demo_command(out), capture_output=True, check=False)
    config = out / "run-quick" / "config.yaml"  # the resolved experiment the demo trained
    if not config.exists():
        raise SystemExit(f"voxelflow demo --quick wrote no {config}")
    return config


def command(workload: str, out: Path, config: Path, iterations: int) -> list[str]:
    if workload == "demo":
        return demo_command(out)
    return [sys.executable, "-m", "voxelflow", "train", "-c", str(config), "--run-dir",
            str(out / "run"), "--set", f"training.max_iterations={iterations}"]  # fmt: skip


def run_demos(
    mode: str, copies: int, root: Path, default_threads: int, workload: tuple[str, Path, int]
) -> list[float]:
    """Start ``copies`` runs of the workload together; their wall times in seconds."""
    env = environment(mode, default_threads)
    started = []
    for copy in range(copies):
        out = Path(tempfile.mkdtemp(prefix=f"{mode}-{copy}-", dir=root))
        process = subprocess.Popen(
            command(workload[0], out, workload[1], workload[2]), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append((process, time.perf_counter()))
    times = []
    for process, start in started:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{workload[0]} ({mode}) failed: {stderr[-800:]}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--workload", choices=("train", "demo"), default="train")
    parser.add_argument("--iterations", type=int, default=12, help="train: max_iterations")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    default_threads = torch_default_threads()
    runs: dict[str, list[float]] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="vf-threads-") as scratch:
        root = Path(scratch)
        workload = (args.workload, prepare(root), args.iterations)  # also warms caches
        for _ in range(args.repeats):
            loads.append(os.getloadavg()[0])
            for mode in args.modes:
                idle = run_demos(mode, 1, root, default_threads, workload)
                runs.setdefault(f"{mode}_idle", []).extend(idle)
                loaded = run_demos(mode, 2, root, default_threads, workload)
                runs.setdefault(f"{mode}_loaded", []).extend(loaded)
    medians = {key: statistics.median(values) for key, values in runs.items()}
    report: dict = {
        "workload": args.workload, "cores": os.cpu_count(), "torch_default_threads": default_threads,
        "load_average_before_rounds": loads, "seconds": runs, "median_s": medians,
    }  # fmt: skip
    ratios = {}
    for mode in args.modes:
        ratios[f"{mode}_loaded_over_idle"] = medians[f"{mode}_loaded"] / medians[f"{mode}_idle"]
    if "chosen" in args.modes and "omp1" in args.modes:
        ratios["chosen_over_omp1_loaded"] = medians["chosen_loaded"] / medians["omp1_loaded"]
        ratios["chosen_over_omp1_idle"] = medians["chosen_idle"] / medians["omp1_idle"]
    if "chosen" in args.modes and "torch_default" in args.modes:
        ratios["chosen_over_torch_default_idle"] = (
            medians["chosen_idle"] / medians["torch_default_idle"]
        )
    report["ratios"] = ratios
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    for key, value in medians.items():
        print(f"{key:22s} {value:7.1f} s   runs {[round(v, 1) for v in runs[key]]}")
    for key, value in ratios.items():
        print(f"{key:32s} {value:.2f}")
    print(f"load average before each round: {loads}")


if __name__ == "__main__":
    main()
