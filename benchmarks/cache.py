"""Benchmark: reading random 64³ patches from .nii.gz versus the voxelflow mmap cache.

A 256×256×160 float32 volume is written as .nii.gz (and .nii), one cache entry is built from it
with :class:`voxelflow.data.PreprocessedDataset` (read + reorient + z-score + write), then random
64³ patches are read, the methods interleaved in every repetition:

* ``nibabel full load``: ``nib.load(path).get_fdata(dtype=float32)`` then slice;
* ``nibabel dataobj (.nii.gz)``: ``nib.load(path).dataobj[window]`` (decompresses up to the window);
* ``nibabel dataobj (.nii)``: the same on the uncompressed file (nibabel memory-maps it);
* ``voxelflow cache memmap``: ``dataset[0].arrays["image"][window]`` (reads only the window).

Files live in a temporary folder; the page cache is warm after the first repetition for every
method alike. Run: ``.venv/bin/python benchmarks/cache.py --repeats 5``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from voxelflow.config.schema import PreprocessingConfig
from voxelflow.data.dataset import PreprocessedDataset
from voxelflow.io.table import SubjectRow
from voxelflow.synthetic import phantom_affine

SHAPE = (256, 256, 160)
PATCH = 64


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def patch_readers(
    folder: Path, dataset: PreprocessedDataset
) -> dict[str, Callable[[tuple[slice, ...]], np.ndarray]]:
    gz, raw = folder / "image.nii.gz", folder / "image.nii"
    return {
        "nibabel full load + slice (.nii.gz)": lambda w: nib.load(gz).get_fdata(dtype=np.float32)[
            w
        ],
        "nibabel dataobj slice (.nii.gz)": lambda w: np.asarray(nib.load(gz).dataobj[w]),
        "nibabel dataobj slice (.nii)": lambda w: np.asarray(nib.load(raw).dataobj[w]),
        "voxelflow cache memmap": lambda w: np.array(dataset[0].arrays["image"][(0, *w)]),
    }


def run(repeats: int, seed: int) -> list[tuple[str, list[float]]]:
    rng = np.random.default_rng(seed)
    volume = rng.normal(100.0, 20.0, size=SHAPE).astype(np.float32)
    affine = phantom_affine((0.9, 0.9, 1.2), angle=0.0)  # RAS: reorientation is a no-op copy
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        image = nib.Nifti1Image(volume, affine)
        results = [
            ("write .nii.gz (nibabel)", [timed(lambda: nib.save(image, folder / "image.nii.gz"))])
        ]
        nib.save(image, folder / "image.nii")
        rows = [SubjectRow("bench", {"image": "image.nii.gz"}, folder)]
        dataset = PreprocessedDataset(
            rows,
            inputs={"image": ["image"]},
            preprocessing=PreprocessingConfig(),
            cache_dir=Path(tmp) / "cache",
        )
        results.append(
            ("build cache entry (read .nii.gz + preprocess + write)", [timed(lambda: dataset[0])])
        )
        readers = patch_readers(folder, dataset)
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(repeats):
            start = [int(rng.integers(0, s - PATCH + 1)) for s in SHAPE]
            window = tuple(slice(a, a + PATCH) for a in start)
            for name, read in readers.items():  # interleaved: same window, same cache state
                times[name].append(timed(lambda read=read, window=window: read(window)))
        results.extend(times.items())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="patches read per method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = run(args.repeats, args.seed)
    print(
        f"volume {SHAPE} float32 ({np.prod(SHAPE) * 4 / 2**20:.0f} MiB), patch {PATCH}³, repeats {args.repeats}"
    )
    print(f"{'operation':58s} {'median ms':>10s} {'min ms':>9s} {'max ms':>9s}")
    for name, values in results:
        ms = [v * 1000 for v in values]
        print(f"{name:58s} {statistics.median(ms):10.1f} {min(ms):9.1f} {max(ms):9.1f}")


if __name__ == "__main__":
    main()
