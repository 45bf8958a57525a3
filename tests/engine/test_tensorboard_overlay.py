"""TensorBoard gets the ``voxelflow view`` montage of a segmentation window (overlay pixels)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from matplotlib.colors import to_rgb

from voxelflow.engine.logging import RunLogger, overlay_montage
from voxelflow.io.plot import OVERLAY_ALPHA, PALETTE


def _window() -> dict[str, torch.Tensor]:
    label = torch.zeros(1, 16, 16, 8)
    label[0, 4:9, 5:10, 2:6] = 1.0  # labels arrive as floats from the batch
    return {"input": torch.zeros(1, 16, 16, 8), "label": label, "prediction": label.clone()}


def _overlay_pixels(rgb: np.ndarray) -> int:
    expected = OVERLAY_ALPHA * np.asarray(to_rgb(PALETTE[0]))
    return int(np.all(np.abs(rgb[..., :3] - expected) < 0.03, axis=-1).sum())


def test_overlay_montage_only_with_label_maps() -> None:
    assert overlay_montage({"input": torch.zeros(1, 8, 8, 8)}) is None  # e.g. an autoencoder
    rgb = overlay_montage(_window())
    assert rgb is not None and rgb.dtype == np.uint8 and rgb.shape[2] == 3
    assert _overlay_pixels(rgb / 255.0) > 200


def test_tensorboard_event_holds_the_overlay(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_logger = RunLogger(tmp_path, total_iterations=1, progress=False)
    run_logger.log_images(1, _window())
    run_logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert {"images/input", "images/label", "images/prediction", "images/overlay"} <= set(tags)
    (picture,) = events.Images("images/overlay")
    rgb = matplotlib.image.imread(io.BytesIO(picture.encoded_image_string), format="png")
    assert picture.step == 1 and _overlay_pixels(rgb) > 200
