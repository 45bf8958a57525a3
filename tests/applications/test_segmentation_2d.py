"""2D segmentation on slices of 3D volumes: a window with one size-1 axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from voxelflow.applications.base import InferenceContext
from voxelflow.applications.segmentation.application import (
    SegmentationApplication,
    experiment_slice_axis,
    network_window,
    slice_axis_of,
)
from voxelflow.config.schema import Experiment, InferenceConfig
from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError, ShapeError
from voxelflow.losses import build_loss
from voxelflow.sampling import SAMPLERS
from voxelflow.sampling.grid import sliding_window
from voxelflow.synthetic import make_phantom, phantom_affine
from voxelflow.transforms.compose import build_augmentation

CPU = InferenceContext(torch.device("cpu"))
SHAPE = (14, 12, 5)


def _subject(seed: int = 0) -> CachedSubject:
    image, label = make_phantom(SHAPE, num_classes=3, seed=seed)
    return CachedSubject(
        name=f"case{seed}",
        arrays={"image": image[None].astype(np.float32), "label": label[None].astype(np.int16)},
        kinds={"image": "intensity", "label": "label"},
        affine=phantom_affine((0.8, 1.1, 3.0)),
    )


def _experiment(window: list[int], **sections) -> Experiment:
    return Experiment.model_validate(
        {
            "dataset": {"csv": "table.csv"},
            "network": {"name": "unet", "channels": [4, 8]},
            "num_classes": 3,
            "sampling": {"window": window, **sections.pop("sampling", {})},
            **sections,
        }
    )


class SliceNet(nn.Module):
    """A seeded 2D convolution that counts its calls (its output depends on the in-plane layout)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, kernel_size=3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ShapeError(f"SliceNet: expected (B, C, X, Y), got {tuple(x.shape)}")
        self.calls += 1
        return self.conv(x)


@pytest.mark.parametrize(
    ("window", "axis"), [([64, 64, 1], 2), ([1, 32, 32], 0), ([16, 1, 8], 1), ([8, 8, 8], None)]
)
def test_slice_axis_is_the_size_one_axis(window: list[int], axis: int | None) -> None:
    assert slice_axis_of(window) == axis
    expected = [size for index, size in enumerate(window) if index != axis]
    assert network_window(window) == expected


@pytest.mark.parametrize(
    ("window", "message"),
    [([64, 1, 1], "at most one axis of size 1"), ([64, 1], "expected a 3D window")],
)
def test_bad_slice_windows_are_config_errors(window: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        slice_axis_of(window)


def test_inference_window_must_share_the_slice_axis() -> None:
    with pytest.raises(ConfigError, match=r"inference\.window.*slice axis"):
        experiment_slice_axis(_experiment([16, 16, 1], inference={"window": [16, 1, 16]}))
    with pytest.raises(ConfigError, match=r"inference\.window"):
        experiment_slice_axis(_experiment([16, 16, 16], inference={"window": [16, 16, 1]}))
    with pytest.raises(ConfigError, match=r"sampling\.label_window"):
        experiment_slice_axis(_experiment([16, 16, 1], sampling={"label_window": [8, 8, 8]}))
    assert experiment_slice_axis(_experiment([16, 16, 1], inference={"window": [32, 32, 1]})) == 2


@pytest.mark.parametrize("network", ["unet", "highresnet"])
def test_from_experiment_builds_a_2d_network(network: str) -> None:
    options = {"name": network, **({"channels": [4, 8]} if network == "unet" else {})}
    if network == "highresnet":
        options["variant"] = "small"
    experiment = _experiment([1, 16, 16])
    experiment = experiment.model_copy(update={"network": type(experiment.network)(**options)})
    app = SegmentationApplication.from_experiment(experiment, in_channels=1)
    assert app.slice_axis == 0 and app.modules["network"].spatial_dims == 2
    logits = app.forward(torch.rand(2, 1, 1, 16, 16))
    assert logits.shape == (2, 3, 1, 16, 16)
    name, example = app.graph_input({"image": torch.rand(2, 1, 1, 16, 16)})
    assert name == "network" and example.shape == (1, 1, 16, 16)


def test_forward_refuses_a_thick_window() -> None:
    app = SegmentationApplication(
        SliceNet(), build_loss("dice_ce"), num_classes=3, window=[8, 8, 1], slice_axis=2
    )
    with pytest.raises(ShapeError, match="slice axis 2"):
        app.forward(torch.rand(1, 1, 8, 8, 2))
    with pytest.raises(ConfigError, match="slice axis 2"):
        SegmentationApplication(
            SliceNet(), build_loss("dice_ce"), num_classes=3, window=[8, 8, 8], slice_axis=2
        )


def test_sliding_window_goes_slice_by_slice() -> None:
    """The 3D sliding window over [8, 6, 1] windows equals a 2D sliding window per slice."""
    network = SliceNet().eval()
    app = SegmentationApplication(
        network, build_loss("dice_ce"), num_classes=3, window=[8, 6, 1], slice_axis=2
    )
    image = torch.from_numpy(_subject().arrays["image"])[None]
    scores = app.predict_scores(image, CPU)
    with torch.no_grad():
        expected = torch.stack(
            [sliding_window(network, image[..., z], (8, 6)) for z in range(SHAPE[2])], dim=-1
        )
    torch.testing.assert_close(scores, expected)


def test_flip_tta_flips_in_plane_axes_only() -> None:
    network = SliceNet().eval()
    app = SegmentationApplication(
        network,
        build_loss("dice_ce"),
        num_classes=3,
        window=[-1, -1, 1],
        slice_axis=2,
        inference_batch_size=1,
    )
    image = torch.from_numpy(_subject().arrays["image"])[None]
    probabilities, uncertainty = app.sample_probabilities(
        image, CPU, InferenceConfig(flip_tta=True, uncertainty="entropy")
    )
    assert network.calls == 4 * SHAPE[2]  # 4 in-plane flips, one slice per call
    with torch.no_grad():
        hand = []
        for z in range(SHAPE[2]):
            x = image[..., z]
            samples = [
                torch.softmax(torch.flip(network(torch.flip(x, f)), f) if f else network(x), 1)
                for f in [(), (2,), (3,), (2, 3)]
            ]
            hand.append(torch.stack(samples).mean(0))
    torch.testing.assert_close(probabilities, torch.stack(hand, dim=-1))
    assert uncertainty.shape == (1, 1, *SHAPE)


def test_training_windows_and_augmentation_stay_3d() -> None:
    """Samplers, affine/elastic/intensity augmentation and the loss work on [X, Y, 1] windows."""
    experiment = _experiment([8, 8, 1])
    app = SegmentationApplication.from_experiment(experiment, in_channels=1)
    augmentation = build_augmentation(
        [
            {"name": "affine", "rotation": [0, 0, 20], "scaling": 0.1, "p": 1.0},
            {"name": "elastic", "max_displacement": [2.0, 2.0, 0.0], "p": 1.0},
            {"name": "gaussian_blur", "p": 1.0},
        ]
    )
    sampler = SAMPLERS.get("balanced")((8, 8, 1), windows_per_subject=4)
    items = sampler.sample(_subject(), np.random.default_rng(0), augmentation=augmentation)
    batch = {
        "image": torch.stack([item["image"] for item in items]).float(),
        "label": torch.stack([item["label"] for item in items]),
    }
    assert batch["image"].shape == (4, 1, 8, 8, 1)
    loss = app.compute_losses(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and app.modules["network"].spatial_dims == 2
    assert app.example_images(batch, {})["prediction"].shape == (1, 8, 8, 1)


def test_in_plane_rotation_of_a_slice_window_matches_the_thick_window() -> None:
    """A rotation about the slice axis gives the same pixels as the middle slice of a 3-deep window."""
    subject = _subject(3)
    sampler = SAMPLERS.get("uniform")((9, 9, 1))
    draw_2d = build_augmentation([{"name": "affine", "rotation": [0, 0, 25], "p": 1.0}])
    draw_3d = build_augmentation([{"name": "affine", "rotation": [0, 0, 25], "p": 1.0}])
    centre = np.array([7, 6, 2])
    thin = sampler.extract(
        subject,
        centre,
        (9, 9, 1),
        draw=draw_2d.draw_spatial(
            np.random.default_rng(5), window=(9, 9, 1), spacing=(0.8, 1.1, 3.0)
        ),
    )
    thick = sampler.extract(
        subject,
        centre,
        (9, 9, 3),
        draw=draw_3d.draw_spatial(
            np.random.default_rng(5), window=(9, 9, 3), spacing=(0.8, 1.1, 3.0)
        ),
    )
    torch.testing.assert_close(thin["image"][..., 0], thick["image"][..., 1])
    plain = sampler.extract(subject, centre, (9, 9, 1))
    assert not torch.allclose(thin["image"], plain["image"])  # it did rotate


def test_validation_step_in_2d_mode() -> None:
    app = SegmentationApplication(
        SliceNet().eval(),
        build_loss("dice_ce"),
        num_classes=3,
        window=[8, 8, 1],
        slice_axis=2,
        metrics=["dice"],
    )
    metrics = app.validation_step(_subject(), CPU)
    assert {"dice", "dice/1", "dice/2"} <= set(metrics)
