"""Uncertainty maps over flip-TTA and Monte-Carlo dropout samples, checked by hand in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from voxelflow.applications.base import InferenceContext, InferenceItem
from voxelflow.applications.segmentation.application import SegmentationApplication
from voxelflow.applications.segmentation.uncertainty import (
    SoftmaxMoments,
    flip_combinations,
    uncertainty_map,
)
from voxelflow.config.schema import InferenceConfig, PreprocessingConfig
from voxelflow.errors import ConfigError
from voxelflow.io.image import Image, Subject
from voxelflow.losses import build_loss
from voxelflow.synthetic import make_phantom, phantom_affine
from voxelflow.transforms.preprocess import Preprocessor

CPU = InferenceContext(torch.device("cpu"))
SHAPE = (6, 5, 4)
WEIGHTS = np.array([1.5, -0.5, 0.2])
SHIFT_WEIGHTS = np.array([-1.0, 0.8, 0.3])


class RollNet(nn.Module):
    """Logits ``w_k x + v_k roll(x, 1, X)``: not flip-equivariant, so flips give different samples."""

    def __init__(self, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1, 1))
        self.v = nn.Parameter(torch.tensor(SHIFT_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1, 1))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.norm = nn.BatchNorm3d(1)
        self.recorded: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.norm(x))
        logits = self.w * x + self.v * torch.roll(x, 1, dims=2)
        self.recorded.append(logits.detach().numpy().copy())
        return logits


def _numpy_net(x: np.ndarray) -> np.ndarray:
    """RollNet in numpy for an eval-mode fresh BatchNorm (identity) and no dropout; x ``(X, Y, Z)``."""
    shifted = np.roll(x, 1, axis=0)
    return WEIGHTS[:, None, None, None] * x + SHIFT_WEIGHTS[:, None, None, None] * shifted


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def _app(network: nn.Module) -> SegmentationApplication:
    """One window covering the whole image: no blending between windows."""
    app = SegmentationApplication(
        network, build_loss("dice_ce"), num_classes=3, window=[-1, -1, -1], blend="mean"
    )
    app.modules["network"].eval()
    return app


def _options(**kwargs) -> InferenceConfig:
    return InferenceConfig(**kwargs)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _hand_moments(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probabilities = np.stack([_softmax(s) for s in samples])  # (S, K, *spatial)
    mean = probabilities.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum(axis=0)
    variance = probabilities.var(axis=0).mean(axis=0)
    return mean, entropy, variance


@pytest.mark.parametrize("kind", ["entropy", "variance"])
def test_flip_tta_uncertainty_matches_numpy(kind: str) -> None:
    x = _image()
    samples = []
    for axes in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]:
        flipped = np.flip(x, axes) if axes else x
        logits = _numpy_net(flipped)
        samples.append(np.flip(logits, [a + 1 for a in axes]) if axes else logits)
    mean, entropy, variance = _hand_moments(samples)
    app = _app(RollNet())
    probabilities, uncertainty = app.sample_probabilities(
        torch.from_numpy(x)[None, None], CPU, _options(flip_tta=True, uncertainty=kind)
    )
    np.testing.assert_allclose(probabilities[0].numpy(), mean, atol=1e-5)
    expected = entropy if kind == "entropy" else variance
    assert uncertainty.shape == (1, 1, *SHAPE)
    np.testing.assert_allclose(uncertainty[0, 0].numpy(), expected, atol=1e-5)
    assert expected.max() > 1e-3  # the flips really disagree somewhere


def test_mc_dropout_uncertainty_matches_recorded_samples() -> None:
    torch.manual_seed(123)
    network = RollNet(dropout=0.5)
    app = _app(network)
    norm_before = network.norm.running_mean.clone()
    rng_before = torch.get_rng_state()
    options = _options(mc_samples=5, uncertainty="variance", seed=7)
    probabilities, uncertainty = app.sample_probabilities(
        torch.from_numpy(_image())[None, None], CPU, options
    )
    samples = [logits[0] for logits in network.recorded]
    assert len(samples) == 5 and not np.allclose(samples[0], samples[1])  # dropout was active
    mean, _, variance = _hand_moments(samples)
    np.testing.assert_allclose(probabilities[0].numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(uncertainty[0, 0].numpy(), variance, atol=1e-5)
    assert not network.training and not network.dropout.training  # back in eval mode
    torch.testing.assert_close(network.norm.running_mean, norm_before)  # norm stayed in eval
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched
    network.recorded.clear()
    again, _ = app.sample_probabilities(torch.from_numpy(_image())[None, None], CPU, options)
    torch.testing.assert_close(again, probabilities)  # inference.seed makes it reproducible


def test_mc_dropout_times_flips_counts_every_pair() -> None:
    network = RollNet(dropout=0.3)
    app = _app(network)
    app.sample_probabilities(
        torch.from_numpy(_image())[None, None],
        CPU,
        _options(mc_samples=3, flip_tta=True, uncertainty="entropy"),
    )
    assert len(network.recorded) == 3 * 8


def test_moments_and_map_on_hand_values() -> None:
    moments = SoftmaxMoments()
    for p in ([0.9, 0.1], [0.5, 0.5], [0.1, 0.9]):
        moments.add(torch.tensor(p).view(2, 1))
    # mean [0.5, 0.5]: entropy ln 2; per-class variance (0.16 + 0 + 0.16) / 3 for both classes
    assert moments.uncertainty("entropy").item() == pytest.approx(np.log(2.0), abs=1e-6)
    assert moments.uncertainty("variance").item() == pytest.approx(0.32 / 3, abs=1e-6)
    certain = uncertainty_map(torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0], [0.0]]), "entropy")
    assert certain.item() == 0.0  # 0 · ln 0 counts as 0, not NaN
    with pytest.raises(ConfigError, match="expected one of"):
        uncertainty_map(torch.ones(2, 1), torch.ones(2, 1), "mutual_information")


def test_flip_combinations_skip_the_slice_axis() -> None:
    assert len(flip_combinations(3)) == 8
    assert flip_combinations(3, skip=2) == [(), (2,), (3,), (2, 3)]


@pytest.mark.parametrize(
    ("options", "network", "message"),
    [
        ({"uncertainty": "entropy"}, RollNet(), "needs samples"),
        ({"mc_samples": 4}, RollNet(), "without dropout layers"),
        ({"mc_samples": 1, "flip_tta": True}, RollNet(dropout=0.2), "at least 2"),
    ],
)
def test_refused_options(options: dict, network: nn.Module, message: str) -> None:
    app = _app(network)
    with pytest.raises(ConfigError, match=message):
        app.sample_probabilities(torch.zeros(1, 1, *SHAPE), CPU, _options(**options))


def test_predict_writes_uncertainty_in_original_geometry() -> None:
    image, _ = make_phantom((10, 8, 6), num_classes=3, seed=2)
    affine = phantom_affine((1.0, 1.5, 2.0))
    original = Subject("case", {"image": Image(torch.from_numpy(image)[None], affine)})
    preprocessor = Preprocessor(PreprocessingConfig(orientation="LPS", normalization=[]))
    processed, record = preprocessor(original)
    assert not np.allclose(processed["image"].affine, affine)  # a real reorientation
    app = _app(RollNet())
    options = _options(flip_tta=True, uncertainty="entropy", save_probabilities=True)
    item = InferenceItem("case", original, processed, record)
    prediction = app.predict(item, CPU, options)
    uncertainty, probabilities = prediction.images["uncertainty"], prediction.images["prob"]
    assert uncertainty.spatial_shape == (10, 8, 6) and uncertainty.data.shape[0] == 1
    np.testing.assert_allclose(uncertainty.affine, affine)
    assert uncertainty.data.dtype == torch.float32
    p = probabilities.data.numpy()
    np.testing.assert_allclose(uncertainty.data[0].numpy(), -(p * np.log(p)).sum(0), atol=1e-5)


def test_from_experiment_refuses_uncertainty_without_samples() -> None:
    from voxelflow.config.schema import Experiment

    experiment = Experiment.model_validate(
        {
            "dataset": {"csv": "table.csv"},
            "network": {"name": "unet", "channels": [4, 8]},
            "num_classes": 2,
            "sampling": {"window": [16, 16, 16]},
            "inference": {"uncertainty": "variance"},
        }
    )
    with pytest.raises(ConfigError, match=r"inference\.uncertainty"):
        SegmentationApplication.from_experiment(experiment, in_channels=1)
    ok = experiment.model_copy(
        update={"inference": InferenceConfig(uncertainty="variance", flip_tta=True)}
    )
    assert SegmentationApplication.from_experiment(ok, in_channels=1).slice_axis is None


def test_mc_samples_need_a_network_with_dropout() -> None:
    from voxelflow.config.schema import Component, Experiment

    base = {
        "dataset": {"csv": "table.csv"},
        "num_classes": 2,
        "sampling": {"window": [16, 16, 1]},
        "inference": {"mc_samples": 3, "uncertainty": "variance"},
    }
    plain = Experiment.model_validate({**base, "network": {"name": "unet", "channels": [4, 8]}})
    with pytest.raises(ConfigError, match=r"inference\.mc_samples.*without dropout"):
        SegmentationApplication.from_experiment(plain, in_channels=1)
    with_dropout = plain.model_copy(
        update={"network": Component(name="unet", channels=[4, 8], dropout=0.3)}
    )
    app = SegmentationApplication.from_experiment(with_dropout, in_channels=1)
    app.eval()
    image = torch.rand(1, 1, 8, 6, 3, generator=torch.Generator().manual_seed(0))
    probabilities, uncertainty = app.sample_probabilities(image, CPU, with_dropout.inference)
    assert probabilities.shape == (1, 2, 8, 6, 3) and uncertainty.shape == (1, 1, 8, 6, 3)
    assert float(uncertainty.max()) > 0  # dropout made the passes differ
