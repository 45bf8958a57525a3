"""The code examples of docs/extending.md run as written: plugins built through config.build."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voxelflow.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```[a-z]*\n(.*?)```", re.DOTALL)


def examples() -> dict[str, str]:
    """File name → code of every block tagged ``<!-- example: NAME -->`` in extending.md."""
    return dict(EXAMPLE.findall((DOCS / "extending.md").read_text(encoding="utf-8")))


def code_block_after(heading: str) -> str:
    """The first python block after a ``## heading`` of extending.md."""
    text = (DOCS / "extending.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def plugin_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path holding the example files, importable and the working folder."""
    for name, code in examples().items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for module in ("my_components", "my_apps", "my_samplers"):
        sys.modules.pop(module, None)


def test_examples_are_tagged() -> None:
    assert set(examples()) == {
        "my_components.py",
        "plugin.yaml",
        "build.py",
        "my_apps.py",
        "my_samplers.py",
    }


def test_plugin_network_and_loss_build_through_config(plugin_folder: Path) -> None:
    namespace: dict[str, object] = {}
    exec((plugin_folder / "build.py").read_text(encoding="utf-8"), namespace)
    network, loss = namespace["network"], namespace["loss"]
    assert type(network).__name__ == "TwoLayerNet"
    assert network.body[0].out_channels == 4  # the config's `features: 4` reached the network
    x = torch.randn(2, 1, 6, 5, 4)
    logits = network(x)
    assert logits.shape == (2, 3, 6, 5, 4)

    target = torch.randint(0, 3, (2, 1, 6, 5, 4))
    value = loss(logits, target)
    # independent reference: numpy softmax, one-hot, weighted squared error
    z = logits.detach().numpy()
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    one_hot = np.stack([(target.numpy()[:, 0] == k) for k in range(3)], axis=1)
    weights = np.array([0.5, 1.0, 1.0]).reshape(1, 3, 1, 1, 1)
    expected = float(np.mean(weights * (p - one_hot) ** 2))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert network.body[0].weight.grad is not None


def test_plugin_options_are_checked(plugin_folder: Path) -> None:
    from voxelflow.config.build import build_network
    from voxelflow.config.load import load_experiment

    experiment = load_experiment({"network": {"name": "my_components:TwoLayerNet", "featurs": 4}})
    with pytest.raises(ConfigError, match="features"):
        build_network(experiment, in_channels=1, out_channels=2, spatial_dims=3)


def test_reader_example_registers_and_reads(tmp_path: Path) -> None:
    from voxelflow.io import read_image, readers

    namespace: dict[str, object] = {}
    try:
        exec(code_block_after("A reader"), namespace)
        volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        np.save(tmp_path / "case.vol.npy", volume)
        image = read_image(tmp_path / "case.vol.npy")
        assert image.spatial_shape == (2, 3, 4)
        np.testing.assert_array_equal(image.data[0].numpy(), volume)
    finally:  # leave the global reader registry as it was
        readers.READERS._entries.pop("npy_volume", None)
        readers.SUFFIXES.pop(".vol.npy", None)


class ManualContext:
    """The smallest training context: no AMP, no accumulation (what the trainer provides)."""

    device = torch.device("cpu")
    iteration = 0
    accumulate = 1

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, optimizer: str = "default") -> None:
        loss.backward()


def test_application_example_trains_one_step(plugin_folder: Path) -> None:
    from voxelflow.registry import import_object

    application_class = import_object("my_apps:DoseRegression")
    network_class = import_object("my_components:TwoLayerNet")
    torch.manual_seed(0)
    network = network_class(3, 1, 1, features=4)
    application = application_class({"network": network})
    image = torch.randn(2, 1, 5, 4, 3)
    target = torch.randn(2, 1, 5, 4, 3)
    weight = (torch.rand(2, 1, 5, 4, 3) > 0.5).float()
    batch = {"image": image, "target": target, "weight": weight}
    losses = application.train_step(batch, ManualContext())
    # reference: the masked mean absolute error computed with numpy
    prediction = network(image).detach().numpy()
    mask = weight.numpy()
    expected = (np.abs(prediction - target.numpy()) * mask).sum() / mask.sum()
    assert float(losses["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert network.body[0].weight.grad is not None
    outputs = application.infer_step(batch, ManualContext())
    assert outputs["prediction"].shape == (2, 1, 5, 4, 3)


def test_sampler_example_centres_windows_on_its_class(plugin_folder: Path) -> None:
    from voxelflow.data.cached import CachedSubject, compute_class_locations
    from voxelflow.registry import import_object

    label = np.zeros((1, 12, 10, 8), dtype=np.uint8)
    label[0, 2:4, 6:9, 1:3] = 2  # the only voxels of class 2
    image = np.random.default_rng(0).normal(size=(1, 12, 10, 8)).astype(np.float32)
    subject = CachedSubject(
        "case01",
        {"image": image, "label": label},
        {"image": "intensity", "label": "label"},
        class_locations=compute_class_locations(label),
    )
    sampler_class = import_object("my_samplers:SingleClassSampler")
    sampler = sampler_class([3, 3, 3], value=2, windows_per_subject=5)
    windows = sampler.sample(subject, np.random.default_rng(1))
    assert len(windows) == 5
    for window in windows:
        assert window["image"].shape == (1, 3, 3, 3)
        assert int(window["label"][0, 1, 1, 1]) == 2  # the centre voxel is of class 2
        start = window["location"].numpy()
        np.testing.assert_array_equal(
            window["image"].numpy(),
            image[:, start[0] : start[0] + 3, start[1] : start[1] + 3, start[2] : start[2] + 3],
        )
