"""Benchmark: ``voxelflow cv`` against a hand-written loop, and the memory of a 5-member ensemble.

1. **Out-of-fold evaluation time.** Phantom subjects, 5 folds of a small U-Net trained for a few
   iterations (not timed). Then, interleaved over repetitions:

   * ``voxelflow cv``: :func:`voxelflow.cv.oof.run_cv` (inference of each fold's validation
     subjects with its checkpoint, merged table, ``evaluate_files``), postprocessing decision and
     report off so that both sides do the same work;
   * ``hand loop``: for each fold, load the checkpoint, ``predict_rows`` on its validation rows,
     then one ``evaluate_files`` on all predictions: what a user would script.

   Reported: median seconds per subject of each and their ratio (target ≤ 1.2).

2. **Ensemble peak RSS.** Five folds of the demo U-Net (``channels [8, 16, 32]``, 3 classes) are
   trained on tiny phantoms; then a fresh process infers one 256×256×160 volume with the
   ensemble of 5 members, and another with 1 member (the same code path), each reporting its
   peak resident set size (``ru_maxrss``). Reported: both and their ratio (target ≤ 1.5).

3. **Real data** (``--real DIR``): the whole experiment, ``train --fold all`` → ``cv`` →
   ``cv --compare`` (two U-Net widths on one split) → ``infer --folds all`` through the CLI, on
   subjects made from nilearn's real MNI152 template (:mod:`voxelflow.demo.data`; one anatomy,
   varied scans: not evidence of generalisation), with the wall time of each step.

Run: ``.venv/bin/python benchmarks/cv.py --json`` (``--repeats``, ``--subjects``, ``--skip-rss``,
``--real DIR --iterations N``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from voxelflow.config.load import load_experiment
from voxelflow.synthetic import make_phantom, phantom_affine

BIG = (256, 256, 160)


def write_dataset(folder: Path, count: int, shape: tuple[int, int, int]) -> Path:
    """``count`` phantoms (labels 0, 1, 2) and their table."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["subject,image,label"]
    for i in range(count):
        image, label = make_phantom(shape, num_classes=3, num_blobs=3, noise=0.05, seed=i)
        affine = phantom_affine((1.0, 1.0, 1.0))
        nib.save(nib.Nifti1Image(image, affine), folder / f"s{i}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz,s{i}_seg.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def config(table: Path, run_dir: Path, *, window: int, channels: list[int]) -> dict[str, Any]:
    return {
        "dataset": {"csv": str(table)},
        "split": {"folds": 5, "test": 0.0, "seed": 0},
        "sampling": {"window": [window] * 3, "queue_length": 4},
        "network": {"name": "unet", "channels": channels},
        "training": {"max_iterations": 2, "batch_size": 2, "num_workers": 0, "validate_every": 2,
                     "checkpoint_every": 2},
        "inference": {"window": [window] * 3, "overlap": 0.0},
        "evaluation": {"metrics": ["dice"]},
        "system": {"run_dir": str(run_dir), "device": "cpu"},
    }  # fmt: skip


def hand_loop(experiment: Any, root: Path, out: Path) -> None:
    """The same work as ``voxelflow cv`` written by hand over the fold checkpoints."""
    import csv

    from voxelflow.cv.folds import fold_dir, fold_experiment
    from voxelflow.engine.inference import infer_rows
    from voxelflow.io.splits import make_split
    from voxelflow.io.table import load_table
    from voxelflow.metrics.evaluate import evaluate_files

    rows = load_table(experiment.dataset)
    predicted: dict[str, Path] = {}
    for fold in range(5):
        config = fold_experiment(experiment, root, fold)
        validation = set(make_split(rows, config.split, path=root / "split.csv")["validation"])
        chosen = [r for r in rows if r.name in validation]
        table = infer_rows(
            config, chosen, run_dir=fold_dir(root, fold), out_dir=out / f"fold_{fold}"
        )
        with open(table, newline="") as handle:
            predicted.update({r["subject"]: Path(r["prediction"]) for r in csv.DictReader(handle)})
    references = {r.name: r.path("label") for r in rows}
    evaluate_files(predicted, references, out, metrics=["dice"], report=False, workers=1)


def time_cv(folder: Path, subjects: int, repeats: int) -> dict[str, Any]:
    from voxelflow.cv.folds import train_folds
    from voxelflow.cv.oof import run_cv

    table = write_dataset(folder / "data", subjects, (32, 32, 32))
    root = folder / "run"
    experiment = load_experiment(config(table, root, window=32, channels=[4, 8]))
    train_folds(experiment, root, "all")
    cv_times, hand_times = [], []
    for repeat in range(repeats + 1):  # the first round warms caches and imports: not counted
        start = time.perf_counter()
        run_cv(experiment, root, postprocessing=False, report=False)
        cv_seconds = time.perf_counter() - start
        start = time.perf_counter()
        hand_loop(experiment, root, folder / f"hand_{repeat}")
        hand_seconds = time.perf_counter() - start
        if repeat:
            cv_times.append(cv_seconds / subjects)
            hand_times.append(hand_seconds / subjects)
    cv, hand = statistics.median(cv_times), statistics.median(hand_times)
    return {"subjects": subjects, "repeats": repeats, "cv_s_per_subject": cv,
            "hand_s_per_subject": hand, "ratio": cv / hand, "target_ratio": 1.2}  # fmt: skip


def rss_child(root: Path, members: int, image: Path, out: Path) -> None:
    """Infer ``image`` with ``members`` fold models; print the peak RSS in MiB (a child process)."""
    from voxelflow.cv.ensemble import ensemble_rows, fold_members
    from voxelflow.io.table import rows_from_input

    experiment = load_experiment(root / "fold_0" / "config.yaml")
    folds = ",".join(str(k) for k in range(members))
    chosen = fold_members(experiment, root, folds)
    rows = rows_from_input(image, image_columns=["image"])
    start = time.perf_counter()
    ensemble_rows(chosen, rows, out_dir=out, options=experiment.inference)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"members": members, "peak_rss_mib": peak, "seconds": seconds}))


def measure_rss(folder: Path) -> dict[str, Any]:
    from voxelflow.cv.folds import train_folds

    table = write_dataset(folder / "small", 10, (32, 32, 32))
    root = folder / "demo_unet"
    experiment = load_experiment(config(table, root, window=32, channels=[8, 16, 32]))
    train_folds(experiment, root, "all")
    image, _ = make_phantom(BIG, num_classes=3, num_blobs=4, noise=0.05, seed=7)
    big = folder / "big" / "big.nii.gz"
    big.parent.mkdir()
    nib.save(nib.Nifti1Image(image, np.eye(4)), big)
    del image
    results = {}
    for members in (1, 5):
        command = [sys.executable, __file__, "--rss-child", str(root), str(members), str(big),
                   str(folder / f"out_{members}")]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})  # fmt: skip
        results[members] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"volume": list(BIG), "network": "unet channels [8, 16, 32], 3 classes",
            "single_peak_rss_mib": results[1]["peak_rss_mib"],
            "ensemble5_peak_rss_mib": results[5]["peak_rss_mib"],
            "ratio": results[5]["peak_rss_mib"] / results[1]["peak_rss_mib"],
            "single_seconds": results[1]["seconds"], "ensemble5_seconds": results[5]["seconds"],
            "target_ratio": 1.5}  # fmt: skip


def real_experiment(folder: Path, iterations: int) -> dict[str, Any]:
    """plan-free hand-written config on MNI152-derived subjects: folds → cv → compare → ensemble."""
    import contextlib
    import csv
    import io

    import yaml

    from voxelflow.cli.main import main as cli
    from voxelflow.demo.data import make_demo_dataset

    data = make_demo_dataset(folder / "data", num_train=12, num_test=4, spacing=4.0, seed=0)
    rows = []
    for table in (data.train_csv, data.test_csv):
        with open(table, newline="") as handle:
            rows += list(csv.DictReader(handle))
    table = folder / "data" / "all.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figures: dict[str, Any] = {"source": data.source, "subjects": len(rows), "spacing_mm": 4.0,
                               "iterations_per_fold": iterations, "seconds": {}}  # fmt: skip
    runs = []
    for name, channels in (("unet_8", [8, 16, 32]), ("unet_4", [4, 8, 16])):
        run = folder / name
        config = {
            "dataset": {"csv": str(table)},
            "split": {"folds": 5, "test": 0.25, "seed": 0,
                      **({"file": str(folder / "unet_8" / "split.csv")} if runs else {})},
            "sampling": {"sampler": {"name": "balanced"}, "window": [32, 32, 32],
                         "windows_per_subject": 4, "queue_length": 16},
            "network": {"name": "unet", "channels": channels},
            "optimizer": {"name": "adam", "lr": 0.003},
            "training": {"max_iterations": iterations, "batch_size": 2, "num_workers": 0,
                         "validate_every": iterations, "checkpoint_every": iterations},
            "inference": {"window": [32, 32, 32], "overlap": 0.25, "batch_size": 2},
            "evaluation": {"metrics": ["dice"]},
            "system": {"run_dir": str(run), "device": "cpu"},
        }  # fmt: skip
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        for step, argv in (("train_folds", ["train", "-c", str(path), "--fold", "all"]),
                           ("cv", ["cv", "-c", str(path)]),
                           ("infer_folds", ["infer", "-c", str(path), "--folds", "all"])):  # fmt: skip
            start = time.perf_counter()
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = cli(["-q", *argv])
            if code != 0:
                raise SystemExit(f"{' '.join(argv)} exited with {code}")
            figures["seconds"][f"{name}/{step}"] = round(time.perf_counter() - start, 1)
            figures.setdefault("printed", {})[f"{name}/{step}"] = printed.getvalue().strip()
        metric = json.loads((run / "cv" / "cv_metric.json").read_text())
        ensemble = json.loads(
            (run / "predictions_ensemble" / "ensemble_vs_members.json").read_text()
        )
        ensemble.pop("per_subject")
        decision = json.loads((run / "cv" / "postprocessing.json").read_text())
        figures[name] = {"cv_dice": metric["value"], "cv_subjects": metric["n"],
                         "postprocessing_before": decision["before"],
                         "postprocessing_after": decision["after"], "test_ensemble": ensemble}  # fmt: skip
        runs.append(str(run))
    from voxelflow.cv.compare import compare_runs, format_comparison

    start = time.perf_counter()
    comparison = compare_runs(runs)
    figures["seconds"]["compare"] = round(time.perf_counter() - start, 1)
    figures["compare"] = format_comparison(comparison)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--real",
        metavar="DIR",
        default=None,
        help="run the whole experiment on MNI152-derived subjects in DIR",
    )
    parser.add_argument("--iterations", type=int, default=150, help="--real: iterations per fold")
    parser.add_argument("--rss-child", nargs=4, metavar=("ROOT", "MEMBERS", "IMAGE", "OUT"))
    args = parser.parse_args()
    if args.rss_child:
        root, members, image, out = args.rss_child
        rss_child(Path(root), int(members), Path(image), Path(out))
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.real:
        figures = real_experiment(Path(args.real), args.iterations)
        print(json.dumps(figures, indent=1))
        return
    with tempfile.TemporaryDirectory() as temp:
        figures: dict[str, Any] = {
            "cv_time": time_cv(Path(temp) / "time", args.subjects, args.repeats)
        }
        if not args.skip_rss:
            figures["ensemble_rss"] = measure_rss(Path(temp) / "rss")
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    t = figures["cv_time"]
    print(f"voxelflow cv {t['cv_s_per_subject']:.3f} s/subject, hand loop "
          f"{t['hand_s_per_subject']:.3f} s/subject, ratio {t['ratio']:.2f} (target ≤ 1.2)")  # fmt: skip
    if "ensemble_rss" in figures:
        r = figures["ensemble_rss"]
        print(f"peak RSS 1 member {r['single_peak_rss_mib']:.0f} MiB, 5 members "
              f"{r['ensemble5_peak_rss_mib']:.0f} MiB, ratio {r['ratio']:.2f} (target ≤ 1.5)")  # fmt: skip


if __name__ == "__main__":
    main()
