"""Unit tests of the autoencoder application: config checks, losses, geometry, inference modes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from voxelflow.applications.autoencoder.application import (
    AutoencoderApplication,
    AutoencoderOptions,
    AutoencoderTask,
)
from voxelflow.applications.autoencoder.evaluation import (
    IntensityInverse,
    evaluate_reconstructions,
)
from voxelflow.applications.base import InferenceContext, InferenceItem
from voxelflow.applications.common import resized_affine
from voxelflow.config.schema import Experiment
from voxelflow.errors import ConfigError, DataError
from voxelflow.io.image import Image, Subject
from voxelflow.io.table import SubjectRow
from voxelflow.losses import build_loss
from voxelflow.sampling.resize import resize_volume
from voxelflow.transforms.normalize import NORMALIZERS
from voxelflow.transforms.preprocess import Preprocessor

CPU = InferenceContext(torch.device("cpu"))
AFFINE = np.array(
    [[0.0, 1.2, 0.0, -10.0], [-1.0, 0.0, 0.0, 4.0], [0.0, 0.0, 1.5, 2.0], [0.0, 0.0, 0.0, 1.0]]
)


def experiment(**sections: Any) -> Experiment:
    """A tiny VAE experiment on 8³ windows; ``sections`` replace whole sections."""
    config: dict[str, Any] = {
        "application": "autoencoder",
        "dataset": {"inputs": {"image": ["image"]}},
        "preprocessing": {
            "normalization": [{"name": "zscore", "mask": "nonzero"}],
            "crop_foreground": True,
        },
        "sampling": {"sampler": {"name": "resize"}, "window": [8, 8, 8]},
        "network": {"name": "vae", "features": [4], "hidden_size": 8, "latent_size": 3},
        "loss": {"name": "vae", "beta": 0.5},
        "inference": {"num_samples": 3, "steps": 3, "seed": 7},
    }
    config.update(sections)
    return Experiment.model_validate(config)


def phantom_subject(name: str, seed: int, shape: tuple[int, ...] = (12, 10, 9)) -> Subject:
    """A noisy blob with a zero border (cropped by crop_foreground), non-identity affine."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, dtype=np.float32)
    data[2:-2, 1:-2, 2:-1] = 100 + 40 * rng.random((shape[0] - 4, shape[1] - 3, shape[2] - 3))
    return Subject(name, {"image": Image(torch.from_numpy(data)[None], AFFINE.copy())})


def item_of(exp: Experiment, subject: Subject) -> InferenceItem:
    processed, record = Preprocessor(exp.preprocessing)(subject)
    return InferenceItem(subject.name, subject, processed, record)


class IdentityNetwork(nn.Module):
    """A plain 'autoencoder' returning its input (to test geometry and intensity inversion)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


# --- configuration -------------------------------------------------------------------------------
def test_task_options_are_checked_by_key() -> None:
    assert AutoencoderTask.from_config({}).intensity_units == "original"
    with pytest.raises(ConfigError, match=r"task\.latent: .*intensity_units"):
        AutoencoderTask.from_config({"latent": 3})
    with pytest.raises(ConfigError, match=r"task\.intensity_units"):
        AutoencoderTask.from_config({"intensity_units": "hounsfield"})


def test_window_must_be_fixed_and_match_network_and_inference() -> None:
    with pytest.raises(ConfigError, match=r"sampling\.window"):
        AutoencoderApplication.from_experiment(
            experiment(sampling={"sampler": {"name": "resize"}, "window": [8, 0, 8]}), in_channels=1
        )
    with pytest.raises(ConfigError, match=r"network\.image_size: expected the window \[8, 8, 8\]"):
        AutoencoderApplication.from_experiment(
            experiment(network={"name": "vae", "features": [4], "image_size": 16}), in_channels=1
        )
    with pytest.raises(ConfigError, match=r"inference\.window"):
        AutoencoderApplication.from_experiment(
            experiment(inference={"window": [16, 16, 16]}), in_channels=1
        )


def test_network_and_loss_must_pair() -> None:
    with pytest.raises(ConfigError, match=r"loss\.name: expected 'vae'.*got 'l1'"):
        AutoencoderApplication.from_experiment(experiment(loss={"name": "l1"}), in_channels=1)
    plain = {"name": "autoencoder", "features": [4], "hidden_size": 8, "latent_size": 3}
    with pytest.raises(ConfigError, match=r"loss\.name: expected a reconstruction loss"):
        AutoencoderApplication.from_experiment(experiment(network=plain), in_channels=1)


# --- losses --------------------------------------------------------------------------------------
def test_vae_loss_is_summed_reconstruction_plus_beta_kl() -> None:
    app = AutoencoderApplication.from_experiment(experiment(), in_channels=2)
    network = app.modules["network"].eval()  # z = mu: deterministic
    image = torch.randn(2, 2, 8, 8, 8)
    losses = app.compute_losses({"image": image})
    recon, mu, logvar = network(image).values()
    reconstruction = ((recon - image) ** 2).flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    torch.testing.assert_close(losses["loss"], reconstruction + 0.5 * kl)
    assert float(losses["kl"]) == pytest.approx(float(kl.detach()), rel=1e-5)
    masked = app.compute_losses({"image": image, "weight": torch.zeros(2, 1, 8, 8, 8)})
    torch.testing.assert_close(masked["loss"], 0.5 * kl)


def test_plain_autoencoder_with_l1_loss() -> None:
    plain = {"name": "autoencoder", "features": [4], "hidden_size": 8, "latent_size": 3}
    app = AutoencoderApplication.from_experiment(
        experiment(network=plain, loss={"name": "l1"}), in_channels=1
    )
    image = torch.randn(2, 1, 8, 8, 8)
    losses = app.compute_losses({"image": image})
    torch.testing.assert_close(losses["loss"], F.l1_loss(app.modules["network"](image), image))
    assert set(app.example_images({"image": image}, losses)) == {"input", "reconstruction"}


# --- geometry and intensities --------------------------------------------------------------------
def test_resized_affine_matches_trilinear_resizing() -> None:
    shape, size = (12, 10, 9), (8, 5, 6)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    world = np.einsum("ij,j...->i...", AFFINE[:3, :3], index) + AFFINE[:3, 3, None, None, None]
    resized = resize_volume(torch.from_numpy(world.astype(np.float32)), size).numpy()
    new = resized_affine(AFFINE, shape, size)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"))
    expected = np.einsum("ij,j...->i...", new[:3, :3], grid) + new[:3, 3, None, None, None]
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))  # edges clamp
    np.testing.assert_allclose(resized[inner], expected[inner], atol=1e-4)


@pytest.mark.parametrize(
    ("name", "options"),
    [("zscore", {"mask": "nonzero"}), ("percentile_rescale", {"lower": 5, "upper": 95})],
)
def test_intensity_inverse_recovers_raw_values(name: str, options: dict[str, Any]) -> None:
    raw = np.random.default_rng(0).gamma(2.0, 50.0, (2, 9, 8, 7)).astype(np.float32)
    normalized = NORMALIZERS.get(name)(**options)(raw)
    inverse = IntensityInverse.fit(raw, normalized)
    restored = inverse(torch.from_numpy(normalized)).numpy()
    unclipped = (normalized > normalized.min()) & (normalized < normalized.max())
    np.testing.assert_allclose(restored[unclipped], raw[unclipped], rtol=1e-4, atol=1e-3)
    assert inverse.residual < 1e-5


def test_original_units_without_preprocessing_config_is_a_config_error() -> None:
    exp = experiment()
    item = item_of(exp, phantom_subject("a", 0))
    options = AutoencoderOptions(window=item.processed["image"].spatial_shape)
    app = AutoencoderApplication(
        IdentityNetwork(), build_loss("l1"), options=options, variational=False
    )
    with pytest.raises(ConfigError, match=r"task\.intensity_units: 'original' needs the run's"):
        app.predict(item, CPU, exp.inference)


def test_reconstruct_returns_original_grid_and_units() -> None:
    exp = experiment()
    subject = phantom_subject("a", 0)
    item = item_of(exp, subject)
    window = item.processed["image"].spatial_shape
    options = AutoencoderOptions(window=window, preprocessing=exp.preprocessing)
    app = AutoencoderApplication(
        IdentityNetwork(), build_loss("l1"), options=options, variational=False
    )
    prediction = app.predict(item, CPU, exp.inference.model_copy(update={"error_maps": True}))
    recon = prediction.images["recon"]
    assert recon.spatial_shape == subject["image"].spatial_shape
    np.testing.assert_allclose(recon.affine, AFFINE)
    np.testing.assert_allclose(recon.numpy(), subject["image"].numpy(), atol=1e-3)
    assert float(prediction.images["error"].data.max()) < 1e-3


def test_reconstruct_of_a_trained_size_network_resizes_back() -> None:
    exp = experiment()
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    subject = phantom_subject("a", 1)
    (prediction,) = list(app.run_inference([item_of(exp, subject)], CPU, exp.inference))
    assert prediction.images["recon"].spatial_shape == (12, 10, 9)
    assert app.prediction_table == "reconstructions.csv"


def test_windowed_training_reconstructs_by_sliding_windows_and_refuses_latent_modes() -> None:
    exp = experiment(sampling={"sampler": {"name": "uniform"}, "window": [8, 8, 8]})
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    app.eval()
    item = item_of(exp, phantom_subject("a", 2, shape=(14, 12, 11)))
    assert app.predict(item, CPU, exp.inference).images["recon"].spatial_shape == (14, 12, 11)
    encode = exp.inference.model_copy(update={"mode": "encode"})
    with pytest.raises(ConfigError, match=r"sampling\.sampler: resize"):
        list(app.run_inference([item], CPU, encode))


def test_validation_reports_mae_and_psnr_on_the_window() -> None:
    from voxelflow.data.cached import CachedSubject

    exp = experiment()
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    app.eval()
    cached = CachedSubject.from_subject(item_of(exp, phantom_subject("a", 3)).processed)
    metrics = app.validation_step(cached, CPU)
    image = resize_volume(torch.from_numpy(np.array(cached.arrays["image"])), (8, 8, 8))
    with torch.no_grad():
        recon = app.modules["network"](image[None])["recon"][0]
    assert metrics["mae"] == pytest.approx(float((recon - image).abs().mean()), rel=1e-5)
    mse = float(((recon - image) ** 2).mean())
    data_range = float(image.max() - image.min())
    assert metrics["psnr"] == pytest.approx(10 * np.log10(data_range**2 / mse), rel=1e-5)


# --- latent modes --------------------------------------------------------------------------------
def never_read():
    raise AssertionError("sample mode must not read its inputs")
    yield  # pragma: no cover


def test_sample_is_seeded_on_the_saved_grid_and_reads_no_input() -> None:
    exp = experiment()
    affine = resized_affine(AFFINE, (16, 16, 16), (8, 8, 8))
    app = AutoencoderApplication.from_experiment(
        exp, in_channels=1, task_state={"sample_affine": affine.tolist()}
    )
    app.eval()
    options = exp.inference.model_copy(update={"mode": "sample"})
    first = list(app.run_inference(never_read(), CPU, options))
    again = list(app.run_inference(never_read(), CPU, options))
    other = list(app.run_inference(never_read(), CPU, options.model_copy(update={"seed": 8})))
    assert [p.name for p in first] == ["sample_000", "sample_001", "sample_002"]
    assert app.prediction_table == "samples.csv"
    torch.testing.assert_close(first[2].images["image"].data, again[2].images["image"].data)
    assert not torch.allclose(first[0].images["image"].data, other[0].images["image"].data)
    np.testing.assert_allclose(first[0].images["image"].affine, affine)
    assert first[0].images["image"].spatial_shape == (8, 8, 8)


def test_sample_needs_a_variational_network() -> None:
    plain = {"name": "autoencoder", "features": [4], "hidden_size": 8, "latent_size": 3}
    exp = experiment(network=plain, loss={"name": "l2"}, inference={"mode": "sample"})
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    with pytest.raises(ConfigError, match=r"'sample'.*network: vae"):
        list(app.run_inference(never_read(), CPU, exp.inference))


def test_encode_writes_means_log_variances_kl_and_latents_npy(tmp_path: Path) -> None:
    exp = experiment(inference={"mode": "encode"})
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    app.eval()
    items = [item_of(exp, phantom_subject(name, seed)) for seed, name in enumerate("ab")]
    predictions = list(app.run_inference(items, CPU, exp.inference))
    image = resize_volume(items[1].processed["image"].data, (8, 8, 8))[None]
    mu, logvar = app.modules["network"].encode(image)
    values = predictions[1].values
    assert [values[f"mu_{i}"] for i in range(3)] == pytest.approx(mu[0].tolist(), rel=1e-5)
    kl = float(-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum().detach())
    assert values["kl"] == pytest.approx(kl, rel=1e-5)
    assert app.prediction_table == "latents.csv"
    (path,) = app.write_extras(tmp_path, [p.values for p in predictions])
    latents = np.load(path)
    assert latents.shape == (2, 2, 3) and latents.dtype == np.float32
    np.testing.assert_allclose(latents[1, 1], logvar[0].detach().numpy(), rtol=1e-5)


def test_interpolate_goes_from_one_subject_to_the_other() -> None:
    exp = experiment(inference={"mode": "interpolate", "interpolate": ["c", "a"], "steps": 3})
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    app.eval()
    items = [item_of(exp, phantom_subject(name, seed)) for seed, name in enumerate("abc")]
    path = list(app.run_inference(iter(items), CPU, exp.inference))
    assert [p.values["t"] for p in path] == [0.0, 0.5, 1.0]
    assert path[0].values["from"] == "c" and path[0].values["to"] == "a"
    with torch.no_grad():
        start = app.modules["network"](
            resize_volume(items[2].processed["image"].data, (8,) * 3)[None]
        )
    torch.testing.assert_close(path[0].images["image"].data, start["recon"][0])
    assert app.prediction_table == "interpolation.csv"


def test_interpolate_between_unknown_subjects_names_them_and_the_available_ones() -> None:
    exp = experiment(inference={"mode": "interpolate", "interpolate": ["a", "zz"]})
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    items = [item_of(exp, phantom_subject(name, seed)) for seed, name in enumerate("ab")]
    with pytest.raises(DataError, match=r"unknown \['zz'\]; available subjects: \['a', 'b'\]"):
        list(app.run_inference(iter(items), CPU, exp.inference))


@pytest.mark.parametrize("names", [None, ["a"], ["a", "a"]])
def test_interpolate_needs_two_different_names(names: list[str] | None) -> None:
    exp = experiment(inference={"mode": "interpolate", "interpolate": names})
    app = AutoencoderApplication.from_experiment(exp, in_channels=1)
    with pytest.raises(ConfigError, match=r"inference\.interpolate: expected two different"):
        list(app.run_inference(never_read(), CPU, exp.inference))


# --- evaluation ----------------------------------------------------------------------------------
def _write(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), path)
    return path


def test_evaluate_reconstructions_against_hand_computed_mae(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((6, 5, 4)) * 10
    recon = image + rng.normal(0, 0.5, image.shape)
    _write(tmp_path / "a.nii.gz", image)
    _write(tmp_path / "a_recon.nii.gz", recon)
    table = tmp_path / "reconstructions.csv"
    table.write_text(f"subject,recon\na,{tmp_path / 'a_recon.nii.gz'}\n")
    rows = [SubjectRow("a", {"image": "a.nii.gz"}, tmp_path)]
    summary = evaluate_reconstructions(table, rows, tmp_path / "eval", image_columns=["image"])
    stored = recon.astype(np.float32).astype(np.float64) - image.astype(np.float32)
    assert summary["mae"] == pytest.approx(np.abs(stored).mean(), rel=1e-5)
    with open(tmp_path / "eval" / "summary.csv") as handle:
        assert [row["metric"] for row in csv.DictReader(handle)] == [
            "mae",
            "rmse",
            "psnr",
            "ssim",
            "ncc",
        ]
    assert (tmp_path / "eval" / "reconstructions.png").stat().st_size > 0


def test_evaluate_names_unknown_subjects_and_missing_columns(tmp_path: Path) -> None:
    table = tmp_path / "reconstructions.csv"
    table.write_text("subject,recon\nghost,x.nii.gz\n")
    rows = [SubjectRow("a", {"image": "a.nii.gz"}, tmp_path)]
    with pytest.raises(DataError, match=r"subjects \['ghost'\] have no row"):
        evaluate_reconstructions(table, rows, tmp_path / "eval", image_columns=["image"])
    table.write_text("subject,mu_0\na,0.1\n")
    with pytest.raises(
        DataError, match=r"reconstructions\.csv.*expected columns 'subject' and 'recon'"
    ):
        evaluate_reconstructions(table, rows, tmp_path / "eval", image_columns=["image"])


def test_normalized_units_keep_network_units_and_cannot_be_evaluated(tmp_path: Path) -> None:
    exp = experiment(task={"intensity_units": "normalized"})
    subject = phantom_subject("a", 4)
    item = item_of(exp, subject)
    options = AutoencoderOptions(
        window=item.processed["image"].spatial_shape,
        intensity_units="normalized",
        preprocessing=exp.preprocessing,
    )
    app = AutoencoderApplication(
        IdentityNetwork(), build_loss("l1"), options=options, variational=False
    )
    recon = app.predict(item, CPU, exp.inference).images["recon"].numpy()
    foreground = subject["image"].numpy() > 0
    assert abs(float(recon[foreground].mean())) < 1e-4  # z-scores inside the nonzero mask
    assert float(recon[foreground].std()) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ConfigError, match=r"task\.intensity_units"):
        AutoencoderApplication.evaluate(
            exp, predictions=tmp_path / "reconstructions.csv", rows=[], out_dir=tmp_path
        )
