"""A sixth application is one package outside voxelflow: named in the config by its plugin path,
it trains, infers, and ``voxelflow evaluate`` and the Python API run *its own* evaluation (no
change anywhere in ``src``; nothing there knows its name)."""

from __future__ import annotations

import json
import sys
import textwrap
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

from voxelflow.applications.base import Application, Prediction
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
