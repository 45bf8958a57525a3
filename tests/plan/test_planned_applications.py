"""Issue #14 item 4: every application's planned config beats its ``--quick`` demo's baseline
unedited.

Each test makes the demo's quick data with the demo's own functions, plans it (``voxelflow.plan``
with the demo's quick config as template, or the segmentation demo's own :func:`plan_demo`) for a
CPU run, trains the cheapest planned configuration with only the iteration count chosen (the one
option the issue allows), infers and scores it with the demo's own evaluation and compares with
the demo's own baseline.

Measured (shared 2-core CPU, all five 165 s; idle it is less):

============== ============ ===== =========================================== ======
application    config       iters network vs baseline                         time
============== ============ ===== =========================================== ======
segmentation   2d           40    Dice GM/WM 0.79/0.78 vs 0.53/0.20 (lookup)  32 s
regression     3d_fullres   150   head MAE 0.105 vs 0.127, NCC 0.91 vs 0.86   66 s
classification 2d (×2 runs) 60    accuracy 0.59 vs 0.29; height MAE 29 vs 34  13 s
autoencoder    3d_fullres   600   MAE 41.6 vs PCA 37.4: NOT past the baseline 43 s
gan            2d           200   hist W1 0.25 vs 0.46, PCA FD 125 vs 149     11 s
============== ============ ===== =========================================== ======
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import voxelflow
from voxelflow.cli.main import main

pytestmark = pytest.mark.slow

REGRESSION_ITERATIONS = 150
AUTOENCODER_ITERATIONS = 600
GAN_ITERATIONS = 200


def _plan_template(template: dict[str, Any], folder: Path, *, iterations: int, memory: float):
    """Plan with ``template`` (the demo's quick config) as ``-c``; returns the plan."""
    from voxelflow.demo.data import config_yaml

    path = folder / "template.yaml"
    path.write_text(config_yaml(template))
    return voxelflow.plan(
        path,
        out=folder / "plan",
        device="cpu",
        gpu_memory=memory,
        iterations=iterations,
        progress=False,
    )


def _train(plan: Any, folder: Path, name: str) -> Path:
    """Train the planned configuration ``name`` exactly as written; returns its YAML."""
    path = folder / "plan" / plan.configuration(name).file_name
    assert main(["train", "-c", str(path)]) == 0
    return path


def _whole_image_baseline_dice(data, rows) -> dict[int, float]:
    """The intensity lookup z-scored over each whole image (not handed a brain mask, as the
    network is not): what one voxel's intensity alone gives."""
    from voxelflow.demo.baseline import IntensityLookupBaseline
    from voxelflow.demo.run import _training_arrays
    from voxelflow.io.readers import read_image
    from voxelflow.metrics import dice

    model = IntensityLookupBaseline().fit(*_training_arrays(data))
    scores: dict[int, list[float]] = {1: [], 2: []}
    for row in rows:
        predicted = model.predict(read_image(row.path("image")).numpy()[0])
        reference = read_image(row.path("label"), kind="label").numpy()[0]
        for label in scores:
            scores[label].append(float(dice(predicted == label, reference == label)))
    return {label: float(np.mean(values)) for label, values in scores.items()}


def test_planned_segmentation_beats_the_intensity_lookup_baseline(tmp_path: Path, capsys, template_anatomy) -> None:
    pytest.importorskip("nilearn")
    from voxelflow.demo.data import make_demo_dataset
    from voxelflow.demo.run import QUICK, _evaluate, plan_demo
    from voxelflow.io.table import read_csv_table

    data = make_demo_dataset(
        tmp_path / "data", num_train=QUICK.num_train, num_test=QUICK.num_test, spacing=QUICK.spacing
    )
    plan = plan_demo(
        data, tmp_path / "plan", tmp_path / "run", dataclasses.replace(QUICK, iterations=40)
    )
    config = _train(plan, tmp_path, "2d")
    run_dir = Path(plan.configuration("2d").config["system"]["run_dir"])
    assert (
        main(["infer", "-c", str(config), "--input", str(data.test_csv), "--out",
              str(run_dir / "predictions")])
        == 0
    )  # fmt: skip
    capsys.readouterr()
    rows = read_csv_table(data.test_csv, required=["image", "label"])
    network = _evaluate(run_dir, rows, QUICK)
    baseline = _whole_image_baseline_dice(data, rows)
    print(f"segmentation 2d: Dice {network} vs intensity lookup {baseline}")
    for label in (1, 2):  # grey and white matter
        assert network[label] > baseline[label] + 0.1, (network, baseline)


def test_planned_regression_beats_the_intensity_mean_baseline(tmp_path: Path, capsys) -> None:
    pytest.importorskip("nilearn")
    from voxelflow.demo import regression as demo
    from voxelflow.io.table import read_csv_table

    train_csv, test_csv, _ = demo.make_dataset(tmp_path / "data", demo.QUICK)
    template = demo.demo_config(train_csv, tmp_path / "run", demo.QUICK)
    plan = _plan_template(template, tmp_path, iterations=REGRESSION_ITERATIONS, memory=0.35)
    assert [c.name for c in plan.configurations] == ["3d_fullres"]  # no 2D mode for regression
    config = _train(plan, tmp_path, "3d_fullres")
    predictions = tmp_path / "predictions"
    assert (
        main(["infer", "-c", str(config), "--input", str(test_csv), "--out", str(predictions)]) == 0
    )
    capsys.readouterr()
    cases = demo._score_cases(
        train_csv, read_csv_table(test_csv, required=["t1", "gm"]), predictions
    )
    network, baseline = demo._mean(cases, "network"), demo._mean(cases, "baseline")
    print(f"regression 3d_fullres: {network} vs intensity mean {baseline}")
    assert network["mae_head"] < baseline["mae_head"], (network, baseline)


def test_planned_classification_beats_the_majority_class_and_mean_baselines(tmp_path: Path) -> None:
    pytest.importorskip("nilearn")
    from voxelflow.demo import classification as demo
    from voxelflow.io.table import read_csv_table

    data = demo.make_slice_dataset(tmp_path / "data", demo.QUICK)
    test_rows = read_csv_table(data.test_csv, required=["image"])
    baseline = demo.baselines(data)
    summaries = {}
    for kind in ("class", "value"):
        folder = tmp_path / kind
        folder.mkdir()
        template = demo.demo_config(kind, data, folder / "run", tmp_path / "cache", demo.QUICK)
        plan = _plan_template(template, folder, iterations=60, memory=1.0)
        assert [c.name for c in plan.configurations] == ["2d"]
        config = folder / "plan" / plan.configuration("2d").file_name
        run_dir = Path(plan.configuration("2d").config["system"]["run_dir"])
        summaries[kind] = demo._train_infer_evaluate(config, run_dir, test_rows)
    print(
        f"classification 2d: accuracy {summaries['class']['accuracy']:.3f}, MAE "
        f"{summaries['value']['mae']:.1f} mm vs {baseline}"
    )
    assert summaries["class"]["accuracy"] > baseline["accuracy"] + 0.1, (summaries, baseline)
    assert summaries["value"]["mae"] < baseline["mae"], (summaries, baseline)


def test_planned_autoencoder_beats_the_pca_baseline(tmp_path: Path) -> None:
    pytest.importorskip("nilearn")
    from voxelflow.config.load import load_experiment
    from voxelflow.demo import autoencoder as demo
    from voxelflow.engine.run import train_experiment

    train_csv, test_csv, _ = demo.make_dataset(tmp_path / "data", demo.QUICK)
    template = demo.demo_config(train_csv, tmp_path / "run", demo.QUICK)
    plan = _plan_template(template, tmp_path, iterations=AUTOENCODER_ITERATIONS, memory=1.0)
    configuration = plan.configuration("3d_fullres")
    assert "outside" not in configuration.config["preprocessing"]["normalization"][0]  # affine
    experiment = load_experiment(tmp_path / "plan" / configuration.file_name)
    run_dir = Path(experiment.system.run_dir)
    train_experiment(experiment, run_dir=run_dir, force=True)
    figures = demo._infer_and_compare(experiment, run_dir, train_csv, test_csv)
    network, baseline = figures["network"], figures["baseline"]
    print(f"autoencoder 3d_fullres: {network} vs PCA {baseline}")
    # the plan keeps the template's field of view for an autoencoder (no crop to the body)
    assert configuration.config["preprocessing"]["crop_foreground"] is False
    assert network["mae"] < baseline["mae"], (network, baseline)
    assert network["ncc"] > baseline["ncc"], (network, baseline)


def test_planned_gan_beats_the_noise_baseline(tmp_path: Path) -> None:
    pytest.importorskip("nilearn")
    from voxelflow.config.load import load_experiment
    from voxelflow.demo import gan as demo
    from voxelflow.demo.gan_report import compare_with_baselines

    train_csv, test_csv, _ = demo.make_slice_dataset(tmp_path / "data", demo.QUICK)
    template = demo.demo_config(train_csv, tmp_path / "run", demo.QUICK)
    plan = _plan_template(template, tmp_path, iterations=GAN_ITERATIONS, memory=1.0)
    configuration = plan.configuration("2d")
    assert configuration.normalization[0]["scheme"] == "window"  # one dataset-wide map
    config = tmp_path / "plan" / configuration.file_name
    demo._train(load_experiment(config), Path(configuration.config["system"]["run_dir"]))
    table = demo._generate_and_evaluate(
        config, Path(configuration.config["system"]["run_dir"]), test_csv
    )
    scores, _ = compare_with_baselines(train_csv, test_csv, table, demo.QUICK.size)
    network, noise = scores["network"], scores["noise"]
    for name in ("network", "noise", "mean_image"):
        keys = ("histogram_wasserstein", "pca_frechet", "level_accuracy", "diversity_ratio")
        print(f"gan 2d {name}: " + ", ".join(f"{k} {scores[name][k]:.3f}" for k in keys))
    assert network["histogram_wasserstein"] < noise["histogram_wasserstein"], scores
    assert network["pca_frechet"] < noise["pca_frechet"], scores
