"""Regression / super-resolution application: degradation, target scaling, loss wiring,
predict geometry and units, modes, validation and evaluation, bad configs."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from voxelflow.applications.base import InferenceContext, InferenceItem
from voxelflow.applications.regression.application import RegressionApplication
from voxelflow.applications.regression.degrade import DegradeSettings, degrade
from voxelflow.applications.regression.task import (
    RegressionTask,
    TargetScaling,
    fit_target_scaling,
)
from voxelflow.config.schema import Experiment, InferenceConfig, PreprocessingConfig
from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError, DataError, GeometryError
from voxelflow.io.image import Image, Subject
from voxelflow.losses import build_loss
from voxelflow.transforms.preprocess import Preprocessor

CPU = InferenceContext(torch.device("cpu"))


class Scale(nn.Module):
    """``x · factor``: identity (1) or zero (0) network with a parameter."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def reference_degrade(volume: np.ndarray, factors: list[int]) -> np.ndarray:
    """Block means (edge-padded) then linear interpolation at block centres, with scipy."""
    padded_shape = [-(-s // f) * f for s, f in zip(volume.shape, factors)]
    padded = np.pad(volume, [(0, p - s) for s, p in zip(volume.shape, padded_shape)], mode="edge")
    blocks = padded.reshape([x for p, f in zip(padded_shape, factors) for x in (p // f, f)])
    low = blocks.mean(axis=tuple(range(1, 2 * volume.ndim, 2)))
    coords = np.meshgrid(
        *[(np.arange(s) + 0.5) / f - 0.5 for s, f in zip(volume.shape, factors)], indexing="ij"
    )
    return ndimage.map_coordinates(low, coords, order=1, mode="nearest")


@pytest.mark.parametrize(
    ("shape", "factors"), [((8, 6, 4), [2, 2, 2]), ((9, 7, 5), [2, 3, 1]), ((10, 9), [3, 2])]
)
def test_degrade_matches_block_mean_and_linear_interpolation(shape, factors) -> None:
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    result = degrade(torch.from_numpy(volume)[None, None], factor=factors)[0, 0].numpy()
    np.testing.assert_allclose(result, reference_degrade(volume, factors), atol=1e-5)


def test_degrade_keeps_constants_and_factor_one_is_identity() -> None:
    constant = torch.full((2, 1, 6, 6, 6), 3.5)
    torch.testing.assert_close(degrade(constant, factor=2), constant)
    noisy = torch.randn(1, 2, 5, 5, 5)
    torch.testing.assert_close(degrade(noisy, factor=[1, 1, 1]), noisy)
    nearest = degrade(torch.arange(4.0).reshape(1, 1, 4, 1), factor=[2, 1], upsample="nearest")
    assert nearest.flatten().tolist() == [0.5, 0.5, 2.5, 2.5]


def test_degrade_rejects_bad_factor() -> None:
    with pytest.raises(ConfigError, match=r"task\.degrade\.factor"):
        degrade(torch.zeros(1, 1, 4, 4, 4), factor=[2, 2])
    with pytest.raises(ValueError, match="factor"):
        DegradeSettings(factor=[0, 2, 2])


def test_target_scaling_round_trip_and_fit_against_numpy() -> None:
    rng = np.random.default_rng(1)
    subjects = []
    for i in range(3):
        target = rng.normal(10 * i, 1 + i, size=(2, 4, 5, 3)).astype(np.float32)
        mask = (rng.random((1, 4, 5, 3)) > 0.5).astype(np.uint8)
        subjects.append(
            CachedSubject(
                f"s{i}", {"target": target, "mask": mask}, {"target": "intensity", "mask": "label"}
            )
        )
    scaling = fit_target_scaling(subjects, [0, 2], role="target", mask_role="mask")
    values = np.concatenate(
        [s.arrays["target"][:, s.arrays["mask"][0] != 0] for s in (subjects[0], subjects[2])],
        axis=1,
    )
    np.testing.assert_allclose(scaling.mean, values.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(scaling.std, values.std(axis=1), rtol=1e-6)
    batch = torch.randn(2, 2, 3, 3, 3)
    torch.testing.assert_close(scaling.restore(scaling.standardize(batch)), batch)
    assert TargetScaling.from_state(scaling.as_dict()) == TargetScaling(**scaling.as_dict())


def test_task_options_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"task\.loss_bordr"):
        RegressionTask.from_config({"loss_bordr": 2})
    with pytest.raises(ConfigError, match=r"task\.loss_border"):
        RegressionTask.from_config({"loss_border": -1})
    with pytest.raises(ConfigError, match=r"task\.degrade\.factor"):
        RegressionTask.from_config({"degrade": {"factor": [0, 2, 2]}})
    with pytest.raises(ConfigError, match=r"task\.loss_border.*window \[8, 8, 8\]"):
        RegressionTask.from_config({"loss_border": 4}).borders([8, 8, 8])
    assert RegressionTask.from_config({"loss_border": [1, 2, 0]}).borders([8, 8, 0]) == [1, 2, 0]


def experiment(**changes) -> Experiment:
    config = {
        "application": "regression",
        "dataset": {"inputs": {"image": ["mr"], "target": ["ct"]}},
        "sampling": {"window": [8, 8, 8]},
        "network": {"name": "unet", "channels": [4, 8]},
        "loss": {"name": "l1"},
    }
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            config.setdefault(section, {})[leaf] = value
        else:
            config[section] = value
    return Experiment.model_validate(config)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"dataset__inputs": {"image": ["mr"]}}, "dataset.inputs"),
        ({"task": {"degrade": {"factor": 2}}}, "task.degrade"),
        (
            {"task": {"degrade": {"factor": 2}}, "dataset__inputs": {"image": ["t1"]}},
            "preprocessing.normalization",
        ),
        ({"task": {"mask_role": "brain"}}, "task.mask_role"),
        ({"loss": {"name": "dice_ce"}}, "loss.name"),
        (
            {
                "task": {"residual": True},
                "dataset__inputs": {"image": ["mr"], "target": ["a", "b"]},
            },
            "task.residual",
        ),
    ],
)
def test_bad_configs_name_the_key(changes, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RegressionApplication.from_experiment(experiment(**changes), in_channels=1)


def test_from_experiment_builds_modes_and_restores_scaling() -> None:
    app = RegressionApplication.from_experiment(
        experiment(), in_channels=1, task_state={"mean": [5.0], "std": [2.0]}
    )
    assert app.inference_modes == ("predict",) and app.scaling.mean == [5.0]
    sr = RegressionApplication.from_experiment(
        experiment(
            task={"degrade": {"factor": 2}},
            dataset__inputs={"image": ["t1"]},
            preprocessing={"normalization": []},
        ),
        in_channels=1,
    )
    assert sr.inference_modes == ("degrade", "predict") and sr.reference_role == "image"
    from voxelflow.engine.inference import check_mode

    with pytest.raises(ConfigError, match=r"inference\.mode"):
        check_mode(experiment(inference={"mode": "degrade"}), app)


def test_loss_ignores_the_border_and_masked_voxels() -> None:
    app = RegressionApplication(
        Scale(0.0),
        build_loss("l1"),
        window=[6, 6, 6],
        loss_border=[1, 2, 0],
        mask_role="mask",
        scaling=TargetScaling(mean=[1.0], std=[2.0]),
    )
    target = torch.randn(2, 1, 6, 6, 6) * 2 + 1
    mask = (torch.rand(2, 1, 6, 6, 6) > 0.3).to(torch.uint8)
    batch = {"image": torch.randn(2, 1, 6, 6, 6), "target": target, "mask": mask}
    loss = app.compute_losses(batch)["loss"]
    standardized = ((target - 1) / 2)[:, :, 1:5, 2:4, :]  # prediction is 0: |0 − t| = |t|
    inside = mask[:, :, 1:5, 2:4, :].bool()
    torch.testing.assert_close(loss, standardized.abs()[inside].mean())
    loss.backward()
    assert app.modules["network"].factor.grad is not None


def test_residual_super_resolution_loss_compares_degraded_image_with_image() -> None:
    app = RegressionApplication(
        Scale(0.0),
        build_loss("l2"),
        window=[8, 8, 8],
        residual=True,
        degrade=DegradeSettings(factor=[2, 2, 2]),
    )
    image = torch.randn(1, 1, 8, 8, 8)
    loss = app.compute_losses({"image": image})["loss"]
    expected = ((degrade(image, factor=2) - image) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_residual_correction_starts_as_the_identity_and_learns_its_gain() -> None:
    app = RegressionApplication(
        Scale(1.0),
        build_loss("l1"),
        window=[8, 8, 8],
        residual=True,
        degrade=DegradeSettings(factor=[2, 2, 2]),
    )
    image = torch.randn(2, 1, 8, 8, 8)
    torch.testing.assert_close(app.forward(image), image)  # gain 0: output = input
    app.compute_losses({"image": image})["loss"].backward()
    wrapper = app.modules["network"]
    assert float(wrapper.gain.grad.abs()) > 0  # the gain moves first ...
    assert float(wrapper.network.factor.grad.abs()) == 0  # ... then the correction


def _item(
    preprocessing: PreprocessingConfig, *, target: bool = True
) -> tuple[InferenceItem, Subject]:
    rng = np.random.default_rng(2)
    affine = np.array([[-1.2, 0, 0, 10.0], [0, -1.0, 0, -4.0], [0, 0, 1.5, 2.0], [0, 0, 0, 1]])
    image = Image(torch.from_numpy(rng.normal(100, 20, (1, 12, 10, 9)).astype(np.float32)), affine)
    images = {"image": image}
    if target:
        images["target"] = image.with_data(
            torch.from_numpy(rng.normal(0, 1, (1, 12, 10, 9)).astype(np.float32))
        )
    subject = Subject("case", images)
    processed, record = Preprocessor(preprocessing)(subject)
    return InferenceItem("case", subject, processed, record), subject


def test_predict_returns_original_geometry_and_target_units() -> None:
    preprocessing = PreprocessingConfig(orientation="RAS")  # flips two axes, z-scores the image
    item, subject = _item(preprocessing)
    app = RegressionApplication(
        Scale(1.0),
        build_loss("l1"),
        window=[8, 8, 8],
        overlap=0.5,
        scaling=TargetScaling(mean=[5.0], std=[2.0]),
    )
    prediction = app.predict(item, CPU, InferenceConfig(error_maps=True))
    original = subject["image"]
    output = prediction.images["pred"]
    np.testing.assert_allclose(output.affine, original.affine)
    data = original.data.numpy().astype(np.float64)
    expected = (data - data.mean()) / data.std() * 2.0 + 5.0  # identity net on z-scored input
    np.testing.assert_allclose(output.data.numpy(), expected, rtol=1e-4, atol=1e-4)
    error = prediction.images["error"].data.numpy()
    np.testing.assert_allclose(error, np.abs(expected - subject["target"].data.numpy()), atol=1e-3)
    assert set(prediction.images) == {"pred", "error"}


def test_super_resolution_modes() -> None:
    item, subject = _item(PreprocessingConfig(orientation="RAS", normalization=[]), target=False)
    app = RegressionApplication(
        Scale(0.0),
        build_loss("l1"),
        window=[8, 8, 8],
        residual=True,
        scaling=TargetScaling(mean=[100.0], std=[20.0]),
        degrade=DegradeSettings(factor=[2, 2, 2]),
    )
    degraded = app.predict(item, CPU, InferenceConfig(error_maps=True))  # default mode: degrade
    assert set(degraded.images) == {"pred", "input", "error"}
    # zero correction: the output is the baseline, the degraded image in the original geometry
    processed = item.processed["image"].data[None]
    expected = app._to_original(
        degrade(processed, factor=2)[0], item.processed["image"].affine, item.record
    ).data
    torch.testing.assert_close(degraded.images["input"].data, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(degraded.images["pred"].data, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(
        degraded.images["error"].data,
        (expected - subject["image"].data).abs(),
        rtol=1e-4,
        atol=1e-3,
    )
    given = app.predict(item, CPU, InferenceConfig(mode="predict", error_maps=True))
    assert set(given.images) == {"pred"}  # input taken as is; no reference for an error map
    torch.testing.assert_close(
        given.images["pred"].data, subject["image"].data, rtol=1e-4, atol=1e-3
    )


def test_validation_reports_metrics_in_target_units_and_the_baseline() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(50, 10, (1, 8, 8, 8)).astype(np.float32)
    subject = CachedSubject("v", {"image": image}, {"image": "intensity"})
    app = RegressionApplication(
        Scale(0.0),
        build_loss("l1"),
        window=[8, 8, 8],
        residual=True,
        scaling=TargetScaling(mean=[50.0], std=[10.0]),
        degrade=DegradeSettings(factor=[2, 2, 2]),
    )
    metrics = app.validation_step(subject, CPU)
    baseline = degrade(torch.from_numpy(image)[None], factor=2)[0].numpy()
    mae = np.abs(baseline - image).mean()
    assert metrics["mae"] == pytest.approx(mae, rel=1e-4)
    assert metrics["baseline_mae"] == pytest.approx(mae, rel=1e-4)
    rmse = np.sqrt(np.square(baseline - image).mean())
    assert metrics["psnr"] == pytest.approx(
        20 * np.log10((image.max() - image.min()) / rmse), rel=1e-4
    )


def test_checkpoint_state_restores_scaling_and_refuses_other_kind() -> None:
    app = RegressionApplication(Scale(1.0), build_loss("l1"), window=[8, 8, 8])
    state = RegressionApplication(
        Scale(1.0), build_loss("l1"), window=[8, 8, 8], scaling=TargetScaling(mean=[3.0], std=[4.0])
    ).state_dict()
    app.load_state_dict(state)
    assert list(app.scaling.mean) == [3.0] and list(app.scaling.std) == [4.0]
    sr = RegressionApplication(
        Scale(1.0), build_loss("l1"), window=[8, 8, 8], degrade=DegradeSettings()
    )
    with pytest.raises(ConfigError, match="super-resolution"):
        sr.load_state_dict(state)


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return str(path)


def test_evaluate_scores_network_and_baseline_and_lists_missing(tmp_path: Path) -> None:
    from voxelflow.io.table import SubjectRow

    rng = np.random.default_rng(4)
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    rows, table = [], []
    for name in ("a", "b"):
        reference = 10 + 5 * ndimage.gaussian_filter(rng.normal(0, 1, (12, 12, 12)), 1.0)
        rows.append(
            SubjectRow(name, {"t1": _write(tmp_path / f"{name}.nii.gz", reference, affine)})
        )
        table.append(
            {
                "subject": name,
                "pred": _write(tmp_path / f"{name}_pred.nii.gz", reference + 0.5, affine),
                "input": _write(tmp_path / f"{name}_input.nii.gz", reference * 0, affine),
            }
        )
    predictions = tmp_path / "inferred.csv"
    with predictions.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "pred", "input"])
        writer.writeheader()
        writer.writerows(table)
    config = experiment(
        dataset__inputs={"image": ["t1"]},
        task={"degrade": {"factor": 2}},
        preprocessing={"normalization": []},
    )
    summary = RegressionApplication.evaluate(
        config, predictions=predictions, rows=rows, out_dir=tmp_path / "eval"
    )
    assert summary["mae"] == pytest.approx(0.5) and summary["me"] == pytest.approx(0.5)
    assert summary["ssim"] > 0.99 > summary["baseline_ssim"]  # a constant offset keeps structure
    assert summary["psnr"] > summary["baseline_psnr"] and summary["baseline_mae"] > 9
    assert (tmp_path / "eval" / "regression_examples.png").stat().st_size > 0
    with pytest.raises(DataError, match=r"\['b'\]"):
        RegressionApplication.evaluate(
            config, predictions=predictions, rows=rows[:1], out_dir=tmp_path / "eval2"
        )
    _write(tmp_path / "b_pred.nii.gz", np.zeros((12, 12, 12)), np.diag([2.0, 1.2, 1.5, 1.0]))
    with pytest.raises(GeometryError) as caught:
        RegressionApplication.evaluate(
            config, predictions=predictions, rows=rows, out_dir=tmp_path / "eval3"
        )
    assert "b_pred.nii.gz" in str(caught.value) and "b.nii.gz" in str(caught.value)
