"""A sixth application is one package outside voxelflow: named in the config by its plugin path,
it trains, infers, and ``voxelflow evaluate`` and the Python API run *its own* evaluation (no
change anywhere in ``src``; nothing there knows its name)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as vf
from voxelflow.cli.main import main

PLUGIN = '''
import csv
import json

import torch
from torch import nn

from voxelflow.applications.base import Application, PlanningRules, Prediction
from voxelflow.io.image import Image


class Brightener(Application):
    """Learns to add one to an image; scored by the mean absolute error of its outputs' means."""

    name = "brightener"
    prediction_table = "brightened.csv"
    reference_role = "image"

    @classmethod
    def from_experiment(cls, experiment, *, in_channels, label_values=None, task_state=None):
        return cls({"network": nn.Conv3d(in_channels, 1, 1)})

    def compute_losses(self, batch):
        image = batch["image"]
        return {"loss": nn.functional.mse_loss(self.modules["network"](image), image + 1)}

    def predict(self, item, ctx, options):
        image = item.processed["image"].data[None].float().to(ctx.device)
        output = self.modules["network"](image)[0].detach().cpu()
        return Prediction(item.name, {"bright": Image(output, item.original["image"].affine.copy())},
                          {"mean": float(output.mean())})

    @classmethod
    def evaluate(cls, experiment, *, predictions, rows, out_dir, options=None):
        with open(predictions, newline="") as handle:
            means = {row["subject"]: float(row["mean"]) for row in csv.DictReader(handle)}
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = {"subjects": float(len(means)), "mean_of_means": sum(means.values()) / len(means)}
        (out_dir / "brightener_summary.json").write_text(json.dumps(summary))
        return summary

    @classmethod
    def evaluation_table(cls, experiment, predictions, references, *, out_dir=None, options=None):
        return [
            {"subject": name, "offset": float((predictions[name].data - references[name].data).mean())}
            for name in sorted(predictions)
        ]


from pydantic import BaseModel, Field


class BrightnessTask(BaseModel):
    """Options of the Tasked brightener.

    Args:
        offset: what the network learns to add to the image.
    """

    offset: float = Field(1.0)


class Tasked(Brightener):
    """The Brightener with task options (``task:`` in a config)."""

    name = "tasked_brightener"
    task_model = BrightnessTask


class Ensembled(Brightener):
    """The Brightener declaring what plans, cross-validation and fold ensembles need."""

    name = "ensembled_brightener"
    ensemble_mode = "image"
    output_column = "bright"
    dense_output = True
    planning = PlanningRules(network="unet")

    @classmethod
    def cross_validation_metric(cls, experiment):
        return ("mae", False, "mae")

    @classmethod
    def evaluate(cls, experiment, *, predictions, rows, out_dir, options=None):
        import nibabel as nib
        import numpy as np

        with open(predictions, newline="") as handle:
            outputs = {row["subject"]: row["bright"] for row in csv.DictReader(handle)}
        images = {row.name: row.path(experiment.dataset.inputs["image"][0]) for row in rows}
        errors = {
            name: float(np.abs(np.squeeze(nib.load(path).get_fdata())
                               - np.squeeze(nib.load(images[name]).get_fdata()) - 1).mean())
            for name, path in outputs.items()
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        lines = ["subject,mae"] + [f"{name},{error}" for name, error in sorted(errors.items())]
        (out_dir / "per_case.csv").write_text("\\n".join(lines) + "\\n")
        return {"mae": sum(errors.values()) / len(errors)}
'''


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "plugins" / "lab_applications"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "brightener.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    yield "lab_applications.brightener:Brightener"
    for name in [m for m in sys.modules if m.startswith("lab_applications")]:
        del sys.modules[name]


def _table(folder: Path) -> Path:
    folder.mkdir()
    lines = ["subject,image"]
    for i in range(3):
        image = np.random.default_rng(i).normal(size=(8, 8, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}.nii.gz")
        lines.append(f"s{i},{folder / f's{i}.nii.gz'}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _config(tmp_path: Path, application: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(textwrap.dedent(f"""
    application: "{application}"
    dataset: {{csv: {_table(tmp_path / "data")}, inputs: {{image: [image]}}}}
    preprocessing: {{orientation: null}}
    split: {{validation: 0.34}}
    sampling: {{window: [4, 4, 4], windows_per_subject: 1, queue_length: 2}}
    training: {{max_iterations: 2, batch_size: 1, num_workers: 0, validate_every: 0,
               checkpoint_every: 2}}
    inference: {{window: [8, 8, 8]}}
    system: {{run_dir: {tmp_path / "run"}}}
    """))
    return path


def test_plugin_application_trains_infers_and_evaluates_itself(
    plugin_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, plugin_path)
    assert main(["train", "-c", str(config)]) == 0
    out = tmp_path / "out"
    assert main(["infer", "-c", str(config), "--input", str(tmp_path / "data" / "table.csv"),
                 "--out", str(out)]) == 0
    rows = (out / "brightened.csv").read_text().splitlines()
    assert rows[0] == "subject,bright,mean,seconds,seconds_read,seconds_preprocess,seconds_window,seconds_invert,seconds_write" and len(rows) == 4
    capsys.readouterr()
    evaluation = tmp_path / "evaluation"
    assert main(["evaluate", "-c", str(config), "--pred", str(out), "--out", str(evaluation)]) == 0
    summary = json.loads((evaluation / "brightener_summary.json").read_text())
    means = [float(line.split(",")[2]) for line in rows[1:]]
    assert summary == {"subjects": 3.0, "mean_of_means": pytest.approx(sum(means) / 3)}
    assert "subjects: 3" in capsys.readouterr().out


def test_the_api_evaluation_calls_the_plugin_application(plugin_path: str, tmp_path: Path) -> None:
    experiment = vf.Experiment.from_dict({"application": plugin_path})
    reference = vf.Image(torch.zeros(1, 4, 4, 4))
    prediction = reference.with_data(reference.data + 2.5)
    rows = experiment.evaluate({"a": prediction}, [vf.Subject("a", {"image": reference})])
    assert rows == [{"subject": "a", "offset": 2.5}]


def test_a_plugin_without_an_in_memory_evaluation_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "bare_application.py").write_text(
        "from voxelflow.applications.base import Application\n\n"
        "class Bare(Application):\n    name = 'bare'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    experiment = vf.Experiment.from_dict({"application": "bare_application:Bare"})
    image = vf.Image(torch.zeros(1, 4, 4, 4))
    with pytest.raises(vf.ConfigError, match="got application 'bare'"):
        experiment.evaluate({"a": image}, {"a": image})
    # evaluating its inference run: a ConfigError naming it, not a NotImplementedError traceback
    from voxelflow.engine.run import application_class

    with pytest.raises(vf.ConfigError, match=r"application 'bare' .* has no evaluation"):
        application_class(experiment.config).evaluate(
            experiment.config, predictions=tmp_path / "p.csv", rows=[], out_dir=tmp_path / "o"
        )
    sys.modules.pop("bare_application", None)


def _cv_configs(tmp_path: Path, application: str, runs: Sequence[str]) -> list[Path]:
    """The plugin's experiment as two folds (no test split), one config per run folder."""
    text = _config(tmp_path, application).read_text()
    text = text.replace("split: {validation: 0.34}", "split: {folds: 2, test: 0.0}")
    paths = []
    for run in runs:
        paths.append(tmp_path / f"{run}.yaml")
        paths[-1].write_text(text.replace(str(tmp_path / "run"), str(tmp_path / run)))
    return paths


def _voxels(path: Path) -> np.ndarray:
    return np.squeeze(np.asarray(nib.load(path).dataobj, dtype=np.float64))


@pytest.mark.slow
def test_a_plugin_is_ensembled_and_compared_through_its_own_declarations(
    plugin_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensembled = plugin_path.replace(":Brightener", ":Ensembled")
    configs = _cv_configs(tmp_path, ensembled, ("run_a", "run_b"))
    for config in configs:
        assert main(["train", "-c", str(config), "--fold", "all"]) == 0
        assert main(["cv", "-c", str(config), "--no-report"]) == 0
    capsys.readouterr()
    # infer --folds all: the mean of the folds' own "bright" images (its ensemble_mode "image")
    table, out = tmp_path / "data" / "table.csv", tmp_path / "ensemble"
    config = configs[0]
    assert main(["infer", "-c", str(config), "--folds", "all", "--input", str(table),
                 "--out", str(out)]) == 0
    singles = []
    for fold in (0, 1):
        single = tmp_path / f"single_{fold}"
        fold_config = tmp_path / "run_a" / f"fold_{fold}" / "config.yaml"
        assert main(["infer", "-c", str(fold_config), "--input", str(table),
                     "--out", str(single)]) == 0
        singles.append(_voxels(single / "s0_bright.nii.gz"))
    np.testing.assert_allclose(_voxels(out / "s0_bright.nii.gz"), np.mean(singles, axis=0),
                               rtol=1e-5, atol=1e-5)
    assert len((out / "brightened.csv").read_text().splitlines()) == 4
    # its reference_role ("image") scores members and ensemble by the MAE
    summary = json.loads((out / "ensemble_vs_members.json").read_text())
    assert summary["metric"] == "mae" and sorted(summary["members"]) == ["fold_0", "fold_1"]
    # cv --compare ranks the two runs and their pair ensemble, averaged from the "bright" column
    compare = tmp_path / "compare"
    assert main(["cv", "--compare", str(tmp_path / "run_a"), str(tmp_path / "run_b"),
                 "--out", str(compare)]) == 0
    ranked = [line.split(",")[1] for line in (compare / "ranking.csv").read_text().splitlines()[1:]]
    assert f"{tmp_path / 'run_a'} + {tmp_path / 'run_b'}" in ranked and len(ranked) == 3


def test_a_plugin_is_planned_through_its_own_declarations(
    plugin_path: str, tmp_path: Path
) -> None:
    ensembled = plugin_path.replace(":Brightener", ":Ensembled")
    config = _config(tmp_path, ensembled)
    out = tmp_path / "plan"
    assert main(["plan", "-c", str(config), "--out", str(out), "--device", "cpu",
                 "--iterations", "10"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    fullres = plan["configurations"][0]
    assert fullres["name"] == "3d_fullres"
    assert fullres["strides"] and "# U-Net of" in (out / "3d_fullres.yaml").read_text()  # planned
    planned = vf.Experiment.from_dict(
        __import__("yaml").safe_load((out / "3d_fullres.yaml").read_text())
    ).config
    assert planned.application == ensembled and planned.network.name == "unet"  # a dense head
    assert planned.preprocessing.label_values is None  # not planned on label maps


def test_a_plugin_without_declarations_is_refused_naming_what_it_lacks(
    plugin_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxelflow.cv.compare import pair_ensemble
    from voxelflow.cv.ensemble import refuse_application

    with pytest.raises(vf.ConfigError, match=r"'lab_applications.brightener:Brightener' "
                       r"\(Brightener\) declares no ensemble_mode"):
        refuse_application(plugin_path)
    config = _config(tmp_path, plugin_path)
    assert main(["plan", "-c", str(config), "--out", str(tmp_path / "plan")]) == 2
    assert "(Brightener) declares no planning" in capsys.readouterr().err
    # cv --compare ranks such runs without pair ensembles (as autoencoder runs)
    assert pair_ensemble(tmp_path / "a", tmp_path / "b", plugin_path) is None


def test_a_plugin_declaring_dense_outputs_gets_the_window_dimensionality_check(
    plugin_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, plugin_path.replace(":Brightener", ":Ensembled"))
    text = config.read_text().replace("window: [4, 4, 4]", "window: [4, 4]")
    config.write_text(text)
    assert main(["config", "validate", "-c", str(config)]) == 2
    assert "sampling.window: expected 3 sizes, got [4, 4] (3D images)" in capsys.readouterr().err
    config.write_text(text.replace(":Ensembled", ":Brightener"))  # whole-image outputs: no check
    main(["config", "validate", "-c", str(config)])
    assert "sampling.window" not in capsys.readouterr().err


def test_a_plugins_task_options_are_listed_and_filled_in(plugin_path: str) -> None:
    """Its ``task_model`` gives ``voxelflow list`` its options and the resolved config its
    defaults, as for the built-in applications (no table of names in voxelflow)."""
    from voxelflow.config.load import validate_experiment
    from voxelflow.config.options import component_options, with_component_defaults

    tasked = plugin_path.replace(":Brightener", ":Tasked")
    (option,) = component_options("applications", tasked)
    assert (option.name, option.default) == ("offset", "1.0")
    assert "what the network learns to add" in option.meaning
    assert component_options("applications", plugin_path) == []  # no task model: no options
    experiment = validate_experiment({"application": tasked})
    assert with_component_defaults(experiment)["task"] == {"offset": 1.0}
