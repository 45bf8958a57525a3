"""The segmentation application driven by the trainer, with real samplers, networks and losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_toys import sgd_settings
from torch import nn
from torch.utils.data import DataLoader

from voxelflow.applications import APPLICATIONS, InferenceContext, SegmentationApplication
from voxelflow.config.schema import TrainingConfig
from voxelflow.data.cached import CachedSubject
from voxelflow.engine.logging import read_scalars
from voxelflow.engine.trainer import Trainer
from voxelflow.losses import build_loss
from voxelflow.networks import build_network
from voxelflow.synthetic import make_phantom, phantom_affine

SHAPE = (14, 12, 10)


def _subject(seed: int, *, noise: float = 0.05) -> CachedSubject:
    image, label = make_phantom(SHAPE, num_classes=3, seed=seed, noise=noise)
    return CachedSubject(
        name=f"case{seed}",
        arrays={"image": image[None], "label": label[None].astype(np.int16)},
        kinds={"image": "intensity", "label": "label"},
        affine=phantom_affine((1.0, 1.5, 2.0)),
    )


class ConstantClass(nn.Module):
    """Predicts one class everywhere (a known, imperfect segmentation)."""

    def __init__(self, chosen: int, classes: int = 3) -> None:
        super().__init__()
        self.chosen, self.classes = chosen, classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(image.shape[0], self.classes, *image.shape[2:])
        logits[:, self.chosen] = 1.0
        return logits + 0 * self.dummy


def _dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    p, r = prediction == label, reference == label
    return 2.0 * (p & r).sum() / (p.sum() + r.sum())


def test_registered() -> None:
    assert APPLICATIONS.get("segmentation") is SegmentationApplication


def test_validation_step_matches_hand_dice(tmp_path: Path) -> None:
    subject = _subject(1)
    app = SegmentationApplication(
        ConstantClass(1), build_loss("dice_ce"), num_classes=3, window=(8, 8, 8), metrics=["dice"]
    )
    metrics = app.validation_step(subject, InferenceContext(torch.device("cpu")))
    reference = subject.arrays["label"][0]
    everywhere_one = np.ones_like(reference)
    assert metrics["dice/1"] == pytest.approx(_dice(everywhere_one, reference, 1))
    assert metrics["dice/2"] == pytest.approx(0.0)
    assert metrics["dice"] == pytest.approx(_dice(everywhere_one, reference, 1) / 2)


def test_decode_gives_label_values() -> None:
    app = SegmentationApplication(
        ConstantClass(2),
        build_loss("dice_ce"),
        num_classes=3,
        window=(8, 8, 8),
        label_values=[0, 4, 255],
    )
    scores = torch.zeros(1, 3, 2, 2, 2)
    scores[:, 2] = 1.0
    assert app.decode(scores).unique().tolist() == [255]
    probabilities = app.infer_step(
        {"image": torch.zeros(1, 1, 9, 7, 5)}, InferenceContext(torch.device("cpu"))
    )
    assert probabilities["probabilities"].shape == (1, 3, 9, 7, 5)
    assert app.decode(probabilities["probabilities"]).unique().tolist() == [255]
    with pytest.raises(ValueError, match="expected 3 values"):
        SegmentationApplication(
            ConstantClass(2),
            build_loss("dice_ce"),
            num_classes=3,
            window=(8, 8, 8),
            label_values=[0, 1],
        )


def test_trains_on_patch_queue_and_validates(tmp_path: Path) -> None:
    from voxelflow.sampling import SAMPLERS
    from voxelflow.sampling.queue import PatchQueue, collate_windows

    subjects = [_subject(seed) for seed in range(3)]
    queue = PatchQueue(
        subjects, SAMPLERS.get("uniform")((8, 8, 8), windows_per_subject=2), queue_length=4, seed=0
    )
    loader = DataLoader(queue, batch_size=2, collate_fn=collate_windows)
    torch.manual_seed(0)
    network = build_network("toynet", spatial_dims=3, in_channels=1, out_channels=3)
    app = SegmentationApplication(
        network, build_loss("dice_ce"), num_classes=3, window=(8, 8, 8), metrics=["dice", "hd95"]
    )
    options = TrainingConfig(
        max_iterations=12,
        validate_every=6,
        log_every=3,
        best_metric="dice",
        image_every=6,
    )
    summary = Trainer(
        app,
        loader,
        run_dir=tmp_path,
        training=options,
        progress=False,
        tensorboard=False,
        optimization=sgd_settings(0.05),
        validation_data=[_subject(7)],
        device="cpu",
    ).fit()
    assert {"dice", "dice/1", "dice/2", "hd95"} <= set(summary)
    losses = [v for _, name, v in read_scalars(tmp_path / "scalars.csv") if name == "train/loss"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint

    state = load_checkpoint(find_checkpoint(tmp_path, which="last"))
    assert state["application_state"] == {"label_values": [0, 1, 2], "num_classes": 3}
    assert (
        state["data_state"][0]["kind"] == "dataset"
        and state["data_state"][0]["state"]["windows_consumed"] > 0
    )
