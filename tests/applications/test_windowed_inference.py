"""WindowedInference: the one sliding-window run of segmentation, regression and autoencoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from voxelflow.applications.autoencoder.application import AutoencoderApplication
from voxelflow.applications.autoencoder.task import AutoencoderOptions
from voxelflow.applications.base import InferenceContext
from voxelflow.applications.common import WindowedInference, autocast_forward
from voxelflow.applications.regression.application import RegressionApplication
from voxelflow.applications.segmentation.application import SegmentationApplication
from voxelflow.config.schema import Experiment
from voxelflow.errors import ConfigError
from voxelflow.losses import build_loss
from voxelflow.sampling import grid

CPU = InferenceContext(torch.device("cpu"))
INFERENCE = {"overlap": 0.25, "blend": "mean", "batch_size": 3, "accumulate": "float16"}


def experiment(application: str, **sections: Any) -> Experiment:
    config: dict[str, Any] = {
        "application": application,
        "dataset": {"inputs": {"image": ["image"], "label": ["label"], "target": ["ct"]}},
        "sampling": {"window": [8, 8, 8]},
        "network": {"name": "unet", "channels": [4, 8]},
        "loss": {"name": "dice_ce" if application == "segmentation" else "l1"},
        "num_classes": 2 if application == "segmentation" else None,
        "inference": INFERENCE,
    }
    config.update(sections)
    return Experiment.model_validate(config)


class Twice(nn.Module):
    """``2 · x`` in float64 (the run must hand back float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (2 * x).double()


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keywords of every :func:`voxelflow.sampling.grid.sliding_window` call."""
    calls: list[dict[str, Any]] = []
    original = grid.sliding_window

    def spy(network: Any, image: torch.Tensor, window: Sequence[int], **kwargs: Any) -> Any:
        calls.append({"window": tuple(window), "output_size": hasattr(network, "output_size"),
                      **kwargs})  # fmt: skip
        return original(network, image, window, **kwargs)

    monkeypatch.setattr(grid, "sliding_window", spy)
    return calls


def test_from_experiment_reads_the_inference_section_once() -> None:
    exp = experiment("regression")
    assert WindowedInference.from_experiment(exp) == WindowedInference((8, 8, 8), 0.25, "mean", 3, "float16")
    exp = experiment("regression", inference={**INFERENCE, "window": [6, 6, 0]})
    assert WindowedInference.from_experiment(exp).window == (6, 6, 0)
    assert WindowedInference.from_experiment(exp, window=[4, 4, 4]).window == (4, 4, 4)
    keywords = WindowedInference.from_experiment(exp).as_keywords()
    assert keywords["inference_batch_size"] == 3 and keywords["accumulate"] == "float16"


def test_a_bad_accumulate_dtype_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"inference\.accumulate.*'float64'"):
        WindowedInference((8, 8, 8), accumulate="float64")


def test_run_blends_float32_outputs_and_passes_output_size(seen: list[dict[str, Any]]) -> None:
    image = torch.rand(1, 1, 12, 10, 8)
    windowed = WindowedInference((8, 8, 8), blend="mean", accumulate="float16")
    out = windowed.run(Twice(), image, CPU)
    assert out.dtype == torch.float32 and out.shape == image.shape
    torch.testing.assert_close(out, 2 * image, atol=1e-2, rtol=1e-2)
    assert seen[-1]["accumulate_dtype"] == torch.float16 and not seen[-1]["output_size"]

    def crop(windows: torch.Tensor) -> torch.Tensor:  # a valid-convolution network: 8 → 4
        return windows[:, :, 2:-2, 2:-2, 2:-2]

    cropped = WindowedInference((8, 8, 8), blend="crop", overlap=0.0)
    out = cropped.run(crop, image, CPU, output_size=lambda size: [s - 4 for s in size])
    assert seen[-1]["output_size"]
    torch.testing.assert_close(out, image)


def test_autocast_forward_runs_in_the_contexts_precision() -> None:
    entered: list[bool] = []

    class Recording(InferenceContext):
        def autocast(self) -> Any:
            entered.append(True)
            return super().autocast()

    out = autocast_forward(Twice(), Recording(torch.device("cpu")))(torch.ones(1, 1, 2, 2))
    assert entered == [True] and out.dtype == torch.float32


@pytest.mark.parametrize("application", ["segmentation", "regression"])
def test_applications_take_their_settings_from_the_experiment(application: str) -> None:
    app_class = SegmentationApplication if application == "segmentation" else RegressionApplication
    app = app_class.from_experiment(experiment(application), in_channels=1)
    assert app.windowed == WindowedInference((8, 8, 8), 0.25, "mean", 3, "float16")


def test_regression_blends_in_the_configured_dtype(seen: list[dict[str, Any]]) -> None:
    app = RegressionApplication(Twice(), build_loss("l1"), window=[4, 4, 4], accumulate="float16")
    out = app.predict_standardized(torch.rand(1, 1, 6, 6, 6), CPU)
    assert out.dtype == torch.float32 and seen[-1]["accumulate_dtype"] == torch.float16


def test_segmentation_flip_tta_runs_through_the_same_window(seen: list[dict[str, Any]]) -> None:
    network = nn.Conv3d(1, 2, kernel_size=3, padding=1)
    app = SegmentationApplication(
        network, build_loss("dice_ce"), num_classes=2, window=[4, 4, 4], inference_batch_size=2
    )
    image = torch.rand(1, 1, 6, 6, 6)
    plain, flipped = app.predict_scores(image, CPU), app.predict_scores(image, CPU, flip=[2])
    assert [call["batch_size"] for call in seen] == [2, 2] and plain.shape == (1, 2, 6, 6, 6)
    # the flip is undone: the scores are those of the network on the flipped image, flipped back
    mirrored = torch.flip(app.predict_scores(torch.flip(image, [2]), CPU), [2])
    torch.testing.assert_close(flipped, mirrored)


def test_autoencoder_windows_use_the_options_settings(seen: list[dict[str, Any]]) -> None:
    options = AutoencoderOptions(window=(4, 4, 4), whole_image=False, blend="mean",
                                 inference_batch_size=5, accumulate="float16")  # fmt: skip
    app = AutoencoderApplication(Twice(), build_loss("l1"), options=options, variational=False)
    image = torch.rand(1, 1, 6, 6, 6)
    out = app.reconstruct(image, CPU)
    assert seen[-1]["batch_size"] == 5 and seen[-1]["accumulate_dtype"] == torch.float16
    torch.testing.assert_close(out, 2 * image, atol=1e-2, rtol=1e-2)
    exp = experiment(
        "autoencoder",
        sampling={"sampler": {"name": "uniform"}, "window": [8, 8, 8]},
        network={"name": "vae", "features": [4], "hidden_size": 8, "latent_size": 3},
        loss={"name": "vae"},
    )
    built = AutoencoderApplication.from_experiment(exp, in_channels=1).options.windowed
    assert built == WindowedInference((8, 8, 8), 0.25, "mean", 3, "float16")
