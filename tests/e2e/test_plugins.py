"""A user's own network, loss and application, named by dotted path in the config, work without
changing voxelflow (the plugin module lives in tmp_path and is imported only because the config
names it)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main

PLUGIN = '''
import numpy as np
import torch
from torch import nn

from voxelflow.applications.base import Application, Prediction
from voxelflow.io.image import Image

IMPORTED = True


class TinyNet(nn.Module):
    """Two convolutions; any spatial size."""

    def __init__(self, spatial_dims, in_channels, out_channels, *, width=4):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.body = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(),
                                  conv(width, out_channels, 1))

    def forward(self, x):
        return self.body(x)


class TinyClassifier(nn.Module):
    """Convolution, global average pooling, linear: ``(B, C, *spatial)`` → ``(B, K)``."""

    def __init__(self, spatial_dims, in_channels, out_channels, *, width=4):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.conv, self.head = conv(in_channels, width, 3, padding=1), nn.Linear(width, out_channels)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(2).mean(2))


class MaskedL1(nn.Module):
    """The user's own regression loss: (prediction, target, weight or None) → scalar."""

    def forward(self, prediction, target, weight=None):
        error = (prediction - target).abs()
        return (error * weight).sum() / weight.sum().clamp_min(1e-6) if weight is not None else error.mean()


class SoftDice(nn.Module):
    """1 - mean soft Dice over classes (the user's own loss)."""

    def forward(self, logits, target):
        probabilities = logits.softmax(1)
        onehot = torch.zeros_like(probabilities).scatter_(1, target.long(), 1.0)
        dims = tuple(range(2, logits.ndim))
        overlap = (probabilities * onehot).sum(dims)
        total = probabilities.sum(dims) + onehot.sum(dims)
        return 1 - ((2 * overlap + 1e-5) / (total + 1e-5)).mean()


class Smoother(Application):
    """The user's own application: learn to reproduce a Gaussian-smoothed image."""

    name = "smoother"
    prediction_table = "smoothed.csv"

    @classmethod
    def from_experiment(cls, experiment, *, in_channels, label_values=None, task_state=None):
        return cls({"network": TinyNet(spatial_dims=3, in_channels=in_channels, out_channels=1)})

    def compute_losses(self, batch):
        image = batch["image"]
        target = torch.nn.functional.avg_pool3d(image, 3, stride=1, padding=1)
        return {"loss": torch.nn.functional.mse_loss(self.modules["network"](image), target)}

    def validation_step(self, subject, ctx):
        image = torch.as_tensor(np.array(subject.arrays["image"]), dtype=torch.float32)[None].to(ctx.device)
        target = torch.nn.functional.avg_pool3d(image, 3, stride=1, padding=1)
        return {"mse": float(torch.nn.functional.mse_loss(self.modules["network"](image), target))}

    def predict(self, item, ctx, options):
        image = item.processed["image"]
        output = self.modules["network"](image.data[None].float().to(ctx.device))[0].cpu()
        source = item.original["image"]
        if tuple(output.shape[1:]) != tuple(source.spatial_shape):
            raise ValueError("this toy application expects no resampling")
        return Prediction(item.name, {"smooth": Image(output, source.affine.copy())},
                          {"mean": float(output.mean())})
'''


@pytest.fixture
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "plugins" / "my_lab_plugins"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "extras.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    yield "my_lab_plugins.extras"
    for name in [m for m in sys.modules if m.startswith("my_lab_plugins")]:
        del sys.modules[name]


def _table(folder: Path) -> Path:
    from voxelflow.synthetic import make_phantom, phantom_affine

    folder.mkdir()
    lines = ["subject,image,label"]
    for i in range(3):
        image, label = make_phantom((16, 16, 12), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / f"s{i}_t1.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / f"s{i}_seg.nii.gz")
        lines.append(f"s{i},{folder / f's{i}_t1.nii.gz'},{folder / f's{i}_seg.nii.gz'}")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _config(tmp_path: Path, body: str, common: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(textwrap.dedent(body) + common)
    return path


COMMON = """
split: {{validation: 0.34}}
sampling: {{window: [8, 8, 8], windows_per_subject: 1, queue_length: 2}}
training: {{max_iterations: 2, batch_size: 1, num_workers: 0, validate_every: 2,
           checkpoint_every: 2, best_metric: {metric}, best_mode: min}}
inference: {{window: [8, 8, 8]}}
system: {{run_dir: {run}}}
"""


def test_plugin_network_and_loss_in_segmentation(plugin_package: str, tmp_path: Path) -> None:
    table = _table(tmp_path / "data")
    config = _config(tmp_path, f"""
    application: segmentation
    dataset: {{csv: {table}}}
    network: {{name: "{plugin_package}:TinyNet", width: 3}}
    loss: {{name: "{plugin_package}:SoftDice"}}
    evaluation: {{metrics: [dice]}}
    """, COMMON.format(metric="dice", run=tmp_path / "run"))
    assert main(["train", "-c", str(config), "--set", "training.best_mode=max"]) == 0
    assert main(["infer", "-c", str(config), "--input", str(table), "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*_seg.nii.gz"))) == 3


def test_plugin_application(plugin_package: str, tmp_path: Path) -> None:
    table = _table(tmp_path / "data")
    config = _config(tmp_path, f"""
    application: "{plugin_package}:Smoother"
    dataset: {{csv: {table}, inputs: {{image: [image]}}}}
    preprocessing: {{orientation: null}}
    """, COMMON.format(metric="mse", run=tmp_path / "run"))
    assert main(["train", "-c", str(config)]) == 0
    assert main(["train", "-c", str(config), "--set", "training.max_iterations=3"]) == 0  # resume
    assert main(["infer", "-c", str(config), "--input", str(table), "--out", str(tmp_path / "out")]) == 0
    table_out = (tmp_path / "out" / "smoothed.csv").read_text().splitlines()
    assert table_out[0] == "subject,smooth,mean,seconds,seconds_read,seconds_preprocess,seconds_window,seconds_invert,seconds_write" and len(table_out) == 4
    written = nib.load(tmp_path / "out" / "s0_smooth.nii.gz")
    original = nib.load(tmp_path / "data" / "s0_t1.nii.gz")
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    assert written.shape[-3:] == original.shape


def test_plugin_module_not_imported_unless_named(plugin_package: str, tmp_path: Path) -> None:
    table = _table(tmp_path / "data")
    config = _config(tmp_path, f"""
    dataset: {{csv: {table}}}
    network: {{name: unet, channels: [2, 4]}}
    """, COMMON.format(metric="dice", run=tmp_path / "run"))
    assert main(["config", "validate", "-c", str(config)]) == 0
    assert "my_lab_plugins.extras" not in sys.modules


def _with_groups(table: Path) -> Path:
    """Add a class column (two groups) to the table."""
    lines = table.read_text().splitlines()
    rows = [lines[0] + ",group"] + [f"{line},{'ab'[i % 2]}" for i, line in enumerate(lines[1:])]
    table.write_text("\n".join(rows) + "\n")
    return table


@pytest.mark.slow
@pytest.mark.parametrize("application", ["regression", "classification", "autoencoder"])
def test_plugin_network_in_every_application(
    application: str, plugin_package: str, tmp_path: Path
) -> None:
    table = _with_groups(_table(tmp_path / "data"))
    body = {
        "regression": f"""
            application: regression
            dataset: {{csv: {table}, inputs: {{image: [image], target: [label]}}}}
            network: {{name: "{plugin_package}:TinyNet"}}
            loss: {{name: "{plugin_package}:MaskedL1"}}
            """,
        "classification": f"""
            application: classification
            dataset: {{csv: {table}, inputs: {{image: [image]}}}}
            task: {{target_column: group}}
            network: {{name: "{plugin_package}:TinyClassifier"}}
            loss: {{name: classification_ce}}
            """,
        "autoencoder": f"""
            application: autoencoder
            dataset: {{csv: {table}, inputs: {{image: [image]}}}}
            network: {{name: "{plugin_package}:TinyNet"}}
            loss: {{name: l1}}
            """,
    }[application]
    metric = {"regression": "mae", "classification": "nll", "autoencoder": "mae"}[application]
    config = _config(tmp_path, body, COMMON.format(metric=metric, run=tmp_path / "run"))
    assert main(["train", "-c", str(config)]) == 0
    out = tmp_path / "out"
    assert main(["infer", "-c", str(config), "--input", str(table), "--out", str(out)]) == 0
    tables = [path for path in out.glob("*.csv")]
    assert len(tables) == 1 and len(tables[0].read_text().splitlines()) == 4
