"""Time ``voxelflow evaluate`` on 100 subjects of 160×160×128 with 3 foreground classes.

Writes the synthetic prediction/reference folders (NIfTI .nii.gz, spacing 1×1×1.5, rotated
affine) once into ``--data`` (reused when present), then runs the CLI end to end: reading,
grid checks, every overlap and surface metric per label, CSVs, plots and the HTML report.

Run:  .venv/bin/python benchmarks/evaluate_100.py [--data /tmp/vf_eval100] [--subjects 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import make_pair
from voxelflow.cli.main import main as voxelflow_main
from voxelflow.synthetic import phantom_affine

logger = logging.getLogger("benchmarks.evaluate_100")


def write_dataset(root: Path, subjects: int) -> None:
    """Prediction and reference label maps for ``subjects`` cases (skipped when complete)."""
    affine = phantom_affine((1.0, 1.0, 1.5), angle=0.1)
    for index in range(subjects):
        name = f"case{index:03d}.nii.gz"
        if (root / "pred" / name).exists() and (root / "ref" / name).exists():
            continue
        pred, ref = make_pair((160, 160, 128), 1.0, seed=index)
        for folder, array in (("pred", pred), ("ref", ref)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, affine), str(root / folder / name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "vf_eval100"))
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--workers", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.data)
    start = time.perf_counter()
    write_dataset(root, args.subjects)
    logger.info("dataset ready in %.1f s", time.perf_counter() - start)
    command = [
        "-q",
        "evaluate",
        "--pred",
        str(root / "pred"),
        "--ref",
        str(root / "ref"),
        "--out",
        str(root / "out"),
    ]
    if args.workers:
        command += ["--workers", str(args.workers)]
    start = time.perf_counter()
    code = voxelflow_main(command)
    logger.info(
        "voxelflow evaluate: %d subjects × 3 labels in %.1f s (exit code %d)",
        args.subjects,
        time.perf_counter() - start,
        code,
    )


if __name__ == "__main__":
    main()
