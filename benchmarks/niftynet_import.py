"""NiftyNet compatibility timings (issue #17).

1. Conversion of a NiftyNet config (all keys, report, validation), per INI, in-process.
2. Time to the first training iteration: ``net_segment train -c X.ini`` against
   ``voxelflow train -c X.yaml`` on the YAML ``voxelflow config convert`` writes for it
   (the same experiment), each in a fresh process and run folder, alternating, median of N.

Usage (from the repository root; makes tiny synthetic data in a temporary folder):

    OMP_NUM_THREADS=1 python benchmarks/niftynet_import.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INIS = ROOT / "tests" / "config" / "test_niftynet_inis"
BIN = Path(sys.executable).parent


def conversion_times() -> dict[str, float]:
    """Seconds per test INI for convert_niftynet (after one warm-up conversion)."""
    import logging

    from voxelflow.niftynet.conversion import convert_niftynet

    logging.disable(logging.WARNING)
    convert_niftynet(INIS / "segmentation_default.ini")  # imports and pydantic warm-up
    times = {}
    for ini in sorted(INIS.glob("*.ini")):
        start = time.perf_counter()
        converted = convert_niftynet(ini)
        times[ini.name] = time.perf_counter() - start
        assert converted.notes
    return times


def cold_conversion(ini: Path) -> float:
    """Seconds for ``import voxelflow.niftynet.conversion`` + one conversion in a fresh process."""
    code = (
        "import logging, time; logging.disable(logging.WARNING); start = time.perf_counter()\n"
        "from voxelflow.niftynet.conversion import convert_niftynet\n"
        f"convert_niftynet({str(ini)!r}); print(time.perf_counter() - start)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def _make_data(folder: Path) -> None:
    import nibabel as nib
    import numpy as np

    from voxelflow.synthetic import make_phantom

    (folder / "data").mkdir(parents=True)
    for i in range(4):
        image, label = make_phantom((16, 16, 16), num_classes=3, seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "data" / f"sub{i}_T1.nii.gz")
        nib.save(
            nib.Nifti1Image(label.astype(np.int16), np.eye(4)),
            folder / "data" / f"sub{i}_Label.nii.gz",
        )


def first_iteration(command: list[str], cwd: Path) -> float:
    """Seconds from process start to the trainer's first-iteration log line."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True)
    seen = None
    assert process.stderr is not None
    for line in process.stderr:
        if seen is None and "from iteration 0" in line:
            seen = time.perf_counter() - start
    process.wait()
    if process.returncode != 0 or seen is None:
        raise RuntimeError(f"{command} failed (exit {process.returncode})")
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = conversion_times()
    for name, seconds in times.items():
        print(f"convert {name}: {seconds * 1000:.1f} ms")
    print(f"convert: slowest {max(times.values()) * 1000:.1f} ms (target < 1000 ms)")
    cold = [cold_conversion(INIS / "segmentation_multimodal.ini") for _ in range(args.repeats)]
    print(f"convert in a fresh process, import included: {statistics.median(cold):.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _make_data(work)
        shutil.copy(INIS / "segmentation_default.ini", work / "seg.ini")
        yaml_text = subprocess.run(
            [str(BIN / "voxelflow"), "config", "convert", "seg.ini"],
            cwd=work, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (work / "seg.yaml").write_text(yaml_text)
        common = ["--set", "training.max_iterations=1", "--set", "training.num_workers=0"]
        results: dict[str, list[float]] = {"net_segment": [], "voxelflow": []}
        for _ in range(args.repeats):
            for name in results:
                shutil.rmtree(work / "model", ignore_errors=True)
                command = (
                    [str(BIN / "net_segment"), "train", "-c", "seg.ini", *common]
                    if name == "net_segment"
                    else [str(BIN / "voxelflow"), "train", "-c", "seg.yaml", *common]
                )
                results[name].append(first_iteration(command, work))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"{name} train: first iteration after {medians[name]:.2f} s (runs: "
              f"{', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip
    difference = medians["net_segment"] - medians["voxelflow"]
    print(f"difference: {difference:+.2f} s ({difference / medians['voxelflow'] * 100:+.1f} %); "
          "target: within 10 % or 1 s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
