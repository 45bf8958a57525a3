"""``voxelflow demo``: make data, plan, train the planned config, infer, evaluate, pack.

The demo writes everything under one folder: ``data/`` (generated subjects, tables), ``plan/``
(``voxelflow plan``'s fingerprint, ``plan.json`` and commented configs; the demo trains
``plan/3d_fullres.yaml``: rerun it with ``voxelflow train -c``), ``run/`` (checkpoints,
TensorBoard logs, predictions, evaluation report) and the packed zoo entry.

It plans for this machine: a CPU run with a small memory budget (``DemoSettings.memory_gb``),
so that the whole demo takes about 5 minutes on an idle 2-core CPU (``--quick``: under a minute).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxelflow.demo.data import DemoData, make_demo_dataset
from voxelflow.demo.generalisation import (
    below_baseline,
    card_metrics,
    format_table,
    mean_rows,
    report_section,
)
from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo: the full one takes a few minutes on a 2-core CPU, ``quick`` seconds.

    ``memory_gb`` is the plan's memory budget of one training step (``--device cpu``): it sets the
    window and so the time per iteration; ``iterations`` is the one option the demo gives the plan.
    """

    num_train: int
    num_test: int
    spacing: float
    memory_gb: float
    iterations: int


FULL = DemoSettings(num_train=16, num_test=4, spacing=3.0, memory_gb=0.5, iterations=400)
QUICK = DemoSettings(num_train=3, num_test=2, spacing=4.0, memory_gb=0.4, iterations=12)
#: ``--release``: the run that trains the model shipped as ``zoo/voxelflow-demo-tissue``. 2 mm,
#: because a 3 mm model cannot draw a 2.5 mm cortex on a 1 mm scan (labels taken to 3 mm and
#: back keep only GM 0.85 / WM 0.90 Dice on a real 1 mm head); more subjects and iterations,
#: because a 2 mm window sees less of the head per step
RELEASE = DemoSettings(num_train=40, num_test=8, spacing=2.0, memory_gb=0.5, iterations=4000)
#: version of the packed tissue model (3.0.0: the randomised head, intensity-consistent labels;
#: 4.0.0: opened sulci, fine deformations, the 2 mm `--release` run)
DEMO_VERSION = "4.0.0"
#: the planned configuration the demo trains
CONFIGURATION = "3d_fullres"


def plan_demo(data: DemoData, plan_dir: Path, run_dir: Path, settings: DemoSettings) -> Any:
    """Plan the demo's data for a CPU run; returns the plan (written to ``plan_dir``)."""
    from voxelflow.planning.run import plan

    overrides = [
        f"system.run_dir={run_dir.parent / 'runs'}",
        "split.validation=0.25",
        f"evaluation.tolerance_mm={settings.spacing}",
        # validating 4 subjects costs ~20 iterations' time: three times a run is enough to pick
        # the best checkpoint
        f"training.validate_every={max(settings.iterations // 3, 1)}",
        f"training.checkpoint_every={max(settings.iterations // 3, 1)}",
    ]
    return plan(
        dataset=data.train_csv,
        out=plan_dir,
        device="cpu",
        gpu_memory=settings.memory_gb,
        iterations=settings.iterations,
        overrides=overrides,
        progress=False,
    )


def _print_plan(planned: Any, plan_dir: Path) -> None:
    lines = [f"voxelflow demo: the plan ({plan_dir / 'plan.json'}):"]
    for c in planned.configurations:
        spacing = "×".join("native" if v is None else f"{v:.3g}" for v in c.spacing)
        schemes = ", ".join(n["scheme"] for n in c.normalization)
        lines.append(
            f"  {c.name:<11} spacing {spacing} mm, window {c.window}, batch {c.batch_size}, "
            f"{len(c.strides)} levels, normalisation {schemes}"
        )
    lines.append(
        f"  training {CONFIGURATION} ({plan_dir / (CONFIGURATION + '.yaml')}: every decision is a comment)"
    )
    sys.stdout.write("\n".join(lines) + "\n")


def demo_settings(*, quick: bool = False, release: bool = False) -> tuple[DemoSettings, str]:
    """The demo's size and the suffix of its folders (``data-quick``, ``run-release``, ...)."""
    from voxelflow.errors import ConfigError

    if quick and release:
        raise ConfigError("voxelflow demo: --quick and --release exclude each other")
    if quick:
        return QUICK, "-quick"
    return (RELEASE, "-release") if release else (FULL, "")


def run_demo(
    out: Path, *, quick: bool = False, release: bool = False, real_subjects: Path | None = None
) -> dict[str, Any]:
    """Run the whole demo; returns the figures it prints.

    Args:
        out: folder for data, plan, run and the packed zoo entry.
        quick: the tiny version (CI); it checks real subjects only when ``real_subjects`` is given.
        release: the long run (:data:`RELEASE`) that trains the shipped zoo entry.
        real_subjects: cache of real T1 heads with references
            (``benchmarks/demo_generalisation.py --fetch``); default: that script's cache when
            it exists. The check's table and pictures go into the evaluation report and the card.
    """
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.inference import infer_rows
    from voxelflow.engine.run import train_experiment
    from voxelflow.io.table import read_csv_table

    settings, suffix = demo_settings(quick=quick, release=release)
    start = time.perf_counter()
    out = out.resolve()
    data_dir = out / f"data{suffix}"
    data = make_demo_dataset(
        data_dir, num_train=settings.num_train, num_test=settings.num_test, spacing=settings.spacing
    )
    run_dir = out / f"run{suffix}"
    plan_dir = out / f"plan{suffix}"
    planned = plan_demo(data, plan_dir, run_dir, settings)
    _print_plan(planned, plan_dir)
    config_path = plan_dir / planned.configuration(CONFIGURATION).file_name
    experiment = load_experiment(config_path, [f"system.run_dir={run_dir}"])
    train_experiment(experiment, run_dir=run_dir, force=True)
    test_rows = read_csv_table(data.test_csv, required=["image", "label"])
    infer_rows(experiment, test_rows, run_dir=run_dir, out_dir=run_dir / "predictions")
    real = check_real_subjects(run_dir, data, real_subjects, quick=quick)
    network = _evaluate(run_dir, test_rows, settings, real)
    baseline = _baseline_dice(data, test_rows)
    entry = _pack_model(run_dir, out, network, data, settings, quick=quick, real=real)
    figures = {
        "network": network,
        "baseline": baseline,
        "seconds": time.perf_counter() - start,
        "source": data.source,
        "run_dir": run_dir,
        "config": config_path,
        "entry": entry,
        "real": real.rows if real else None,
    }
    _print_summary(figures, data)
    if real is not None:
        sys.stdout.write(
            "\nvoxelflow demo: real T1 heads it never saw (reference: ANTs Atropos "
            "inside the brain mask)\n" + format_table(real.rows) + "\n"
        )
    return figures


@dataclass(frozen=True)
class RealCheck:
    """The generalisation check's rows (one per case) and one picture per case."""

    rows: list[dict[str, float | str]]
    pictures: list[tuple[str, bytes]]


def check_real_subjects(
    run_dir: Path, data: DemoData, cache: Path | None, *, quick: bool
) -> RealCheck | None:
    """Run the trained model on the cached real subjects (:mod:`voxelflow.demo.generalisation`).

    None, with a message saying how to fetch them, when no subject is cached (or ``--quick``
    without an explicit cache); an explicit ``cache`` without any subject is an error.
    """
    from voxelflow.demo import generalisation as g
    from voxelflow.errors import DataError

    folder = cache if cache is not None else (None if quick else g.DEFAULT_CACHE)
    if folder is None:
        return None
    subjects, missing = g.cached_subjects(folder)
    if not subjects:
        message = (f"no real subject in {folder} ({'; '.join(missing)}): run "
                   "`python benchmarks/demo_generalisation.py --fetch` once to fetch them")  # fmt: skip
        if cache is not None:
            raise DataError(f"--real-subjects: {message}")
        log.warning("voxelflow demo: real-subject check skipped: %s", message)
        return None
    images, labels = _training_arrays(data)
    baseline = g.fit_brain_baseline(images, labels)
    cases = g.make_cases(subjects, baseline)
    rows = g.run_check(cases, g.run_predictor(run_dir), run_dir / "real-subjects",
                       pictures=run_dir / "real-subjects" / "pictures",
                       log=lambda line: log.info("voxelflow demo: %s", line))  # fmt: skip
    pictures = [(path.stem, path.read_bytes())
                for path in sorted((run_dir / "real-subjects" / "pictures").glob("*.png"))]  # fmt: skip
    table = run_dir / "real-subjects" / "figures.json"
    table.write_text(
        json.dumps({"sources": [s.__dict__ for s in g.SOURCES], "rows": rows}, indent=1)
    )
    return RealCheck(rows, pictures)


def _training_arrays(data: DemoData) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The demo's training images and label maps ``(X, Y, Z)``."""
    from voxelflow.io.readers import read_image
    from voxelflow.io.table import read_csv_table

    rows = read_csv_table(data.train_csv, required=["image", "label"])
    images = [read_image(r.path("image")).numpy()[0] for r in rows]
    labels = [read_image(r.path("label"), kind="label").numpy()[0] for r in rows]
    return images, labels


def _pack_model(
    run_dir: Path,
    out: Path,
    dice: dict[int, float],
    data: DemoData,
    settings: DemoSettings,
    *,
    quick: bool,
    real: RealCheck | None = None,
) -> Path:
    """Pack the trained model as an installable zoo entry with an honest model card."""
    from voxelflow.io.table import read_csv_table
    from voxelflow.zoo.pack import pack_run

    template = (
        "the MNI152 2009 T1 template (nilearn)" if data.source == "mni152" else "synthetic phantoms"
    )
    subjects = len(read_csv_table(data.train_csv, required=["image", "label"]))
    card = {
        "description": "Grey/white-matter segmentation of T1 MRI (voxelflow demo model). It runs "
        "at its training spacing: every input is resampled to it and the labels are mapped back "
        f"onto the input's own grid. Trained by `voxelflow demo{_command_flag(settings)}` "
        f"({settings.iterations} iterations at {settings.spacing:g} mm).",
        "training_data": f"{subjects} subjects (a quarter of them for validation) made from ONE anatomy, {template}, by random "
        "smooth deformations (±6 mm, plus ±1.5 mm on a 6 mm grid that reshapes gyri), sulci "
        "opened to a 2-3 mm cortex with CSF on three quarters of them (voxelflow.demo.sulci; "
        "the average template has almost no sulcal CSF), and what real scans vary: a randomised synthetic head "
        "(CSF rim, skull tables and marrow, muscle, fat, skin, face and neck, orbits; "
        "voxelflow.demo.head) on half the subjects, skull-stripped on the others, an exactly-zero "
        "or a noisy background, a tight or wide field of view, a contrast change (gamma), head "
        "rotation (±12°) and position (±8 mm), the acquisition resolution (1-3 mm, or 3.5-5 mm "
        "slices), bias fields and Rician noise; labels: the template's GM/WM maps made consistent "
        "with its own intensities (EM with the maps as priors); planned by `voxelflow plan` "
        "(spacing, window, U-Net, body-mask z-score)",
        "checked_on": "held-out subjects made the same way: "
        + ", ".join(f"Dice {data.label_names[k]} {v:.3f}" for k, v in dice.items())
        + "; "
        + _real_summary(real),
        "limitations": _limitations(real, settings),
        "license": "Apache-2.0",
        "outputs": {"labels": {int(value): name for value, name in data.label_names.items()}},
        "metrics": {f"test_dice_{data.label_names[k]}": float(v) for k, v in dice.items()}
        | (card_metrics(real.rows) if real else {}),
    }
    name = "voxelflow-demo-tissue-quick" if quick else "voxelflow-demo-tissue"
    # float16 weights: half the download, loaded into float32 (Dice unchanged to 1e-3)
    return pack_run(run_dir, out=out / f"{name}.zip", name=name, card=card, version=DEMO_VERSION,
                    precision="float16")  # fmt: skip


def _command_flag(settings: DemoSettings) -> str:
    return " --release" if settings == RELEASE else (" --quick" if settings == QUICK else "")


def _limitations(real: RealCheck | None, settings: DemoSettings) -> str:
    """Known failure modes; with the real-subject check, its worst figures."""
    text = (
        "one template anatomy, an average brain: its folding is the template's, warped, and its "
        "sulcal CSF is synthetic, so against a classical single-subject segmentation it draws "
        f"smoother grey/white borders; it runs at {settings.spacing:g} mm, so finer detail is "
        "lost; it has never seen atrophy, "
        "lesions, children or other contrasts than T1; CSF is labelled 'other' with the skull and "
        "scalp; a demonstration of the pipeline, not a clinical tissue segmenter"
    )
    if real is None:
        return text
    skull = [float(r["outside_ml"]) for r in real.rows if r["input"] == "skull"]
    stripped = [float(r["outside_ml"]) for r in real.rows if r["input"] == "stripped"]
    worse = below_baseline(real.rows)
    return (
        f"on the real heads it was checked on: {min(skull):.0f}-{max(skull):.0f} mL of tissue "
        f"predicted outside the brain with skull, {min(stripped):.0f}-{max(stripped):.0f} mL "
        f"skull-stripped; below the brain-masked intensity baseline (which is given the brain "
        f"mask) on {len(worse)} of {len({r['subject'] for r in real.rows})} subjects "
        f"({', '.join(worse) or 'none'}); " + text
    )


def _real_summary(real: RealCheck | None) -> str:
    """The card's sentence on real subjects: means per input kind, or where to find them."""
    if real is None:
        return "real T1 scans of other people: see benchmarks/demo_generalisation.py"
    means = "; ".join(
        f"{r['input']} {float(r['spacing']):g} mm: GM {float(r['dice_grey_matter']):.3f} "
        f"WM {float(r['dice_white_matter']):.3f}, {float(r['outside_ml']):.0f} mL outside the brain "
        f"(brain-masked intensity baseline GM {float(r['baseline_grey_matter']):.3f} "
        f"WM {float(r['baseline_white_matter']):.3f})"
        for r in mean_rows(real.rows)
    )
    subjects = sorted({str(r["subject"]) for r in real.rows})
    return (f"real T1 heads of other people never used for training or tuning ({', '.join(subjects)}; "
            f"reference ANTs N4 + Atropos inside the brain mask), means: {means}")  # fmt: skip


def _evaluate(
    run_dir: Path, rows: Sequence[SubjectRow], settings: DemoSettings, real: RealCheck | None = None
) -> dict[int, float]:
    from voxelflow.io.readers import read_image
    from voxelflow.metrics.evaluate import evaluate_images

    cases, images = {}, {}
    for row in rows:
        cases[row.name] = (
            read_image(run_dir / "predictions" / f"{row.name}_seg.nii.gz", kind="label"),
            read_image(row.path("label"), kind="label"),
        )
        images[row.name] = read_image(row.path("image"))
    from voxelflow.demo.data import TISSUE_NAMES

    result = evaluate_images(cases, run_dir / "evaluation", labels=[1, 2], images=images,
                             metrics=("dice", "hd95", "assd", "nsd"), tolerance=settings.spacing,
                             label_names=TISSUE_NAMES, provenance={"run": str(run_dir)},
                             sections=[("Real subjects it never saw", report_section(real.rows, real.pictures))]
                             if real else ())  # fmt: skip
    return _mean_dice(result.rows)


def _mean_dice(rows: Sequence[Mapping[str, object]]) -> dict[int, float]:
    by_label: dict[int, list[float]] = {}
    for row in rows:
        by_label.setdefault(int(str(row["label"])), []).append(float(str(row["dice"])))
    return {label: float(np.mean(values)) for label, values in sorted(by_label.items())}


def _baseline_dice(data: DemoData, test_rows: Sequence[SubjectRow]) -> dict[int, float]:
    from voxelflow.demo import generalisation as g
    from voxelflow.io.readers import read_image
    from voxelflow.metrics import dice

    # normalised inside the brain, as on the real subjects: over a whole head with skull, face
    # and background no intensity bin is mostly grey or white matter
    model = g.fit_brain_baseline(*_training_arrays(data))
    scores: dict[int, list[float]] = {1: [], 2: []}
    for row in test_rows:
        reference = read_image(row.path("label"), kind="label").numpy()[0]
        image = read_image(row.path("image")).numpy()[0]
        predicted = g.baseline_predict(model, image, g.training_brain_mask(reference))
        for label in scores:
            scores[label].append(float(dice(predicted == label, reference == label)))
    return {label: float(np.mean(values)) for label, values in scores.items()}


def _print_summary(figures: dict[str, Any], data: DemoData) -> None:
    run_dir = figures["run_dir"]
    lines = [
        "",
        "voxelflow demo: tissue segmentation on held-out subjects (mean Dice)",
        f"  {'tissue':<14}{'network':>10}{'baseline':>10}",
    ]
    for label, name in ((1, "grey matter"), (2, "white matter")):
        lines.append(
            f"  {name:<14}{figures['network'][label]:>10.3f}{figures['baseline'][label]:>10.3f}"
        )
    lines += [
        "  baseline: majority tissue per intensity bin, z-scored inside the brain (given its mask),",
        "            fitted on the training subjects",
        f"  data: {'MNI152 2009 T1 template (nilearn)' if data.source == 'mni152' else 'synthetic phantoms'}; "
        "all subjects derive from ONE anatomy, varied as real scans vary (skull or stripped,",
        "        zero or noisy background, field of view, contrast, pose, resolution); how it does on",
        "        real brains of other people: benchmarks/demo_generalisation.py (zoo/README.md)",
        f"  time: {figures['seconds']:.0f} s",
        f"  config:      {figures['config']}",
        f"  predictions: {run_dir / 'predictions'}",
        f"  report:      {run_dir / 'evaluation' / 'report.html'}",
        f"  zoo entry:   {figures['entry']}  (voxelflow zoo install <it>; voxelflow infer --model ...)",
        f"  tensorboard: tensorboard --logdir {run_dir / 'tensorboard'}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
