"""Per-subject stage seconds of inference (read, preprocess, window, invert, write)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from voxelflow.applications.autoencoder.application import (
    AutoencoderApplication,
    AutoencoderOptions,
)
from voxelflow.applications.base import InferenceContext, InferenceItem
from voxelflow.applications.regression.application import RegressionApplication
from voxelflow.applications.segmentation.application import _to_original
from voxelflow.config.schema import InferenceConfig, PreprocessingConfig
from voxelflow.engine.inference import stage_columns
from voxelflow.io.image import Image, Subject
from voxelflow.losses import build_loss
from voxelflow.sampling.grid import sliding_window
from voxelflow.sampling.progress import INFERENCE_STAGES, stage_clock, stages_timed, timed_stage
from voxelflow.transforms.preprocess import Preprocessor

AFFINE = np.diag([-1.0, -1.2, 1.5, 1.0])  # LPS: reoriented to RAS, so invert has work to do


def _item() -> InferenceItem:
    data = torch.rand(1, 12, 10, 9, generator=torch.Generator().manual_seed(0)) + 1.0
    subject = Subject("case", {"image": Image(data, AFFINE.copy())})
    processed, record = Preprocessor(PreprocessingConfig(orientation="RAS"))(subject)
    return InferenceItem("case", subject, processed, record)


def test_stages_add_up_only_inside_a_clock_and_nested_stages_count_once():
    with timed_stage("read"):  # no clock: nothing collected, nothing fails
        assert not stages_timed()
    with stage_clock() as stages:
        for _ in range(2):
            with timed_stage("read"), timed_stage("read"):  # re-entered: the outer block counts
                time.sleep(0.01)
        assert stages_timed()
    assert set(stages) == {"read"} and 0.02 <= stages["read"] < 0.5
    assert not stages_timed()


def test_sliding_window_is_the_window_stage():
    with stage_clock() as stages:
        sliding_window(nn.Identity(), torch.rand(1, 1, 20, 18, 9), (8, 8, 8))
    assert list(stages) == ["window"] and stages["window"] > 0


def test_table_columns_follow_the_stage_order_with_zero_for_stages_not_run():
    columns = stage_columns({"window": 0.123456, "read": 1.0})
    assert list(columns) == [f"seconds_{name}" for name in INFERENCE_STAGES]
    assert columns["seconds_window"] == 0.1235 and columns["seconds_invert"] == 0.0


def test_each_application_times_its_mapping_back_as_invert():
    item = _item()
    image = item.processed["image"]
    with stage_clock() as segmentation:
        _to_original(image.data.float(), image.affine, item.record)
    with stage_clock() as regression:
        RegressionApplication._to_original(image.data, image.affine, item.record)
    options = AutoencoderOptions(window=image.spatial_shape, preprocessing=PreprocessingConfig())
    autoencoder = AutoencoderApplication(nn.Identity(), build_loss("l1"), options=options,
                                         variational=False)
    with stage_clock() as reconstruction:
        autoencoder.predict(item, InferenceContext(torch.device("cpu")), InferenceConfig())
    for stages in (segmentation, regression, reconstruction):
        assert stages.get("invert", 0.0) > 0, stages
