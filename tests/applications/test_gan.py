"""GAN application units: task validation, conditioning, the two-optimiser step, generation modes,
output geometry and intensities, and the distribution metrics (against hand-computed values)."""

from __future__ import annotations

import contextlib
import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from voxelflow.applications.base import InferenceContext, InferenceItem, OptimizationSettings
from voxelflow.applications.common import resized_affine
from voxelflow.applications.gan.application import GanApplication
from voxelflow.applications.gan.evaluation import group_metrics, histogram_l1, histogram_wasserstein
from voxelflow.applications.gan.task import (
    ConditionLookup,
    GanTask,
    fit_classes,
    intensity_to_original,
    to_output_image,
)
from voxelflow.config.load import load_experiment
from voxelflow.config.schema import InferenceConfig
from voxelflow.errors import ConfigError, DataError
from voxelflow.io.image import Image, Subject

CLASSES = ["inferior", "superior"]
GRID = {"affine": np.diag([2.0, 3.0, 1.0, 1.0]).tolist()}


def experiment(
    inputs: dict[str, list[str]] | None = None, window=(16, 16), loss="gan_wasserstein", **task
):
    return load_experiment({
        "application": "gan",
        "dataset": {"inputs": inputs or {"image": ["image"]}},
        "sampling": {"sampler": {"name": "resize"}, "window": list(window)},
        "network": {"name": "generator", "features": [8, 4]},
        "loss": {"name": loss},
        "optimizer": {"name": "adam", "lr": 0.001},
        "task": {"noise_size": 4, "discriminator": {"name": "discriminator", "features": [4, 8]},
                 **task},
    })  # fmt: skip


def build(exp=None, classes=None, **task) -> GanApplication:
    exp = exp or experiment(**task)
    state = {"classes": classes, "output_grid": GRID} if classes else {"output_grid": GRID}
    torch.manual_seed(0)
    return GanApplication.from_experiment(exp, in_channels=1, task_state=state)


# --- configuration (bad input of the issue: a GAN config without a noise size) ---------------
def test_missing_noise_size_is_a_clear_task_error() -> None:
    exp = load_experiment({"application": "gan", "loss": {"name": "gan_wasserstein"},
                           "sampling": {"window": [16, 16]}, "task": {}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"task\.noise_size: Field required \(got nothing\)"):
        GanApplication.from_experiment(exp, in_channels=1)
    with pytest.raises(ConfigError, match=r"task\.noise_size"):
        GanApplication.fit_task(exp, None, [0])


def test_task_keys_and_values_are_checked_by_name() -> None:
    with pytest.raises(ConfigError, match=r"task\.noise_sise: Extra inputs"):
        GanTask.from_config({"noise_size": 4, "noise_sise": 3})
    with pytest.raises(ConfigError, match=r"task\.critic_steps: .*greater than or equal to 1"):
        GanTask.from_config({"noise_size": 4, "critic_steps": 0})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"loss": "dice_ce"}, r"loss: expected a GAN loss \(gan_nonsaturating, .*got 'dice_ce'"),
        ({"window": (16, 0)}, r"sampling\.window: expected fixed sizes .*\[16, 0\]"),
        (
            {"conditioning_role": "ct"},
            r"task\.conditioning_role: expected a role of dataset\.inputs",
        ),
        ({"conditioning_column": "level"}, r"task\.conditioning_column: expected class levels"),
    ],
)
def test_invalid_experiments_name_the_key(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        GanApplication.from_experiment(experiment(**kwargs), in_channels=1, task_state={})


def test_networks_get_the_conditioning_channels() -> None:
    exp = experiment({"image": ["t1"], "conditioning": ["ct", "pet"]},
                     conditioning_role="conditioning", conditioning_column="level")  # fmt: skip
    app = build(exp, classes=CLASSES)
    assert app.modules["generator"].conditioning_channels == 2 + 2
    assert app.modules["discriminator"].body[0][0].in_channels == 1 + 2 + 2


# --- conditioning --------------------------------------------------------------------------------
def test_condition_lookup_is_picklable_and_names_bad_subjects() -> None:
    lookup = pickle.loads(pickle.dumps(ConditionLookup("level", CLASSES)))
    subject = SimpleNamespace(name="s1", fields={"level": "superior"})
    assert lookup(subject)["condition"].item() == 1
    with pytest.raises(
        DataError, match=r"subject 's2': expected column 'level' in .* got 'middle'"
    ):
        lookup.index("s2", {"level": "middle"})
    with pytest.raises(DataError, match=r"subject 's3': expected a value in column 'level'"):
        lookup.index("s3", {"level": ""})


def test_conditioning_concatenates_standardised_image_and_one_hot_maps() -> None:
    exp = experiment({"image": ["t1"], "conditioning": ["ct"]},
                     conditioning_role="conditioning", conditioning_column="level")  # fmt: skip
    app = build(exp, classes=CLASSES)
    ct = torch.rand(2, 1, 16, 16) * 100 + 50
    maps = app.conditioning({"conditioning": ct, "condition": torch.tensor([1, 0])})
    assert maps.shape == (2, 3, 16, 16)
    assert torch.allclose(maps[:, 0].mean(dim=(1, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(maps[:, 0].std(dim=(1, 2)), torch.ones(2), atol=1e-4)
    assert maps[0, 1].eq(0).all() and maps[0, 2].eq(1).all() and maps[1, 1].eq(1).all()


def test_fit_classes_lists_missing_subjects_and_sorts_numbers() -> None:
    rows = [SimpleNamespace(name=f"s{i}") for i in range(4)]
    values = ["10", "9", "", "10"]
    dataset = SimpleNamespace(rows=rows, fields=lambda i: {"level": values[i]})
    with pytest.raises(
        DataError, match=r"column 'level' for every training subject, got none for \['s2'\]"
    ):
        fit_classes(dataset, [0, 1, 2, 3], "level")
    assert fit_classes(dataset, [0, 1, 3], "level") == ["9", "10"]


# --- the two-optimiser step ----------------------------------------------------------------------
class RecordingContext:
    """A TrainingContext over real optimisers that records backward/step/zero_grad calls."""

    def __init__(self, optimizers: dict[str, Any]) -> None:
        self.device, self.iteration, self.accumulate = torch.device("cpu"), 0, 1
        self.optimizers, self.calls = optimizers, []

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, optimizer: str = "default") -> None:
        self.calls.append(("backward", optimizer))
        loss.backward()

    def step(self, optimizer: str = "default") -> None:
        self.calls.append(("step", optimizer))
        self.optimizers[optimizer][0].step()
        self.optimizers[optimizer][0].zero_grad(set_to_none=True)

    def zero_grad(self, optimizer: str = "default") -> None:
        self.optimizers[optimizer][0].zero_grad(set_to_none=True)


def test_optimisers_have_their_own_rates_parameters_and_schedules() -> None:
    app = build(discriminator_lr=0.004, discriminator_scheduler={"name": "linear"})
    specs = app.configure_optimizers(OptimizationSettings(
        optimizer="adam", optimizer_options={"lr": 0.001}, scheduler="constant", max_iterations=10))  # fmt: skip
    (g_opt, g_sched), (d_opt, d_sched) = specs["generator"], specs["discriminator"]
    assert g_opt.param_groups[0]["lr"] == 0.001 and d_opt.param_groups[0]["lr"] == 0.004
    g_ids = {id(p) for p in app.modules["generator"].parameters()}
    assert {id(p) for p in g_opt.param_groups[0]["params"]} == g_ids
    assert not g_ids & {id(p) for p in d_opt.param_groups[0]["params"]}
    for _ in range(5):
        d_opt.step(), d_sched.step(), g_opt.step(), g_sched.step()
    assert d_opt.param_groups[0]["lr"] < 0.004 and g_opt.param_groups[0]["lr"] == 0.001


@pytest.mark.parametrize("loss", ["gan_wasserstein", "gan_nonsaturating", "gan_least_squares"])
def test_train_step_runs_critic_steps_then_one_generator_step(loss: str) -> None:
    app = build(experiment(loss=loss, critic_steps=3))
    ctx = RecordingContext(app.configure_optimizers(OptimizationSettings()))
    before = {n: p.detach().clone() for n, p in app.modules["generator"].named_parameters()}
    losses = app.train_step({"image": torch.randn(4, 1, 16, 16)}, ctx)
    steps = [name for kind, name in ctx.calls if kind == "step"]
    assert steps == ["discriminator"] * 3 + ["generator"]
    assert {"g_loss", "d_loss", "d_real", "d_fake"} <= set(losses)
    assert ("gp" in losses) == (loss == "gan_wasserstein") and app.penalty_weight == (
        10.0 if loss == "gan_wasserstein" else 0.0)  # fmt: skip
    assert all(p.grad is None for p in app.modules["discriminator"].parameters())
    changed = [
        not torch.equal(before[n], p) for n, p in app.modules["generator"].named_parameters()
    ]
    assert any(changed)


def test_discriminator_step_leaves_the_generator_untouched() -> None:
    app = build(critic_steps=1)
    ctx = RecordingContext(app.configure_optimizers(OptimizationSettings()))
    real = torch.randn(2, 1, 16, 16)
    app._discriminator_step(real, None, ctx)
    assert all(p.grad is None for p in app.modules["generator"].parameters())


# --- generation -------------------------------------------------------------------------------------
class LinearGenerator(nn.Module):
    """Image = a fixed linear map of the noise (+ the conditioning's first channel)."""

    def __init__(self, noise_size: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.map = nn.Linear(noise_size, size[0] * size[1])

    def forward(
        self, noise: torch.Tensor, conditioning: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.map(noise).reshape(len(noise), 1, *self.size)
        return out if conditioning is None else out + conditioning[:, :1]


def linear_app(classes=None, **task) -> GanApplication:
    app = build(classes=classes, **task)
    app.modules["generator"] = LinearGenerator(4, (16, 16))
    return app


def never_read():
    raise AssertionError("a class-conditioned sample run must not read inputs")
    yield  # pragma: no cover


def predictions(app: GanApplication, items=(), **options):
    ctx = InferenceContext(torch.device("cpu"))
    with torch.no_grad():
        return list(app.run_inference(iter(items), ctx, InferenceConfig(**options)))


def test_sample_mode_per_level_seeded_and_reads_no_input() -> None:
    app = linear_app(classes=CLASSES, conditioning_column="level")
    out = predictions(app, never_read(), num_samples=3, seed=7)
    assert [p.name for p in out] == [f"sample_{lv}_{i:03d}" for lv in CLASSES for i in range(3)]
    assert out[4].values == {"condition": "superior", "mode": "sample", "index": 1, "seed": 7}
    first, again = out[0].images["generated"].data, predictions(app, num_samples=3, seed=7)[0]
    assert torch.equal(first, again.images["generated"].data)
    assert not torch.equal(
        first, predictions(app, num_samples=3, seed=8)[0].images["generated"].data
    )
    # the same noise for every level: the linear generator adds one-hot channel 0 (level 0) only
    difference = out[3].images["generated"].data - first
    assert torch.allclose(difference, torch.full_like(difference, -1.0), atol=1e-5)


def test_noise_interpolation_is_a_straight_line() -> None:
    app = linear_app()
    app.task = app.task.model_copy(update={"output_intensity": "normalized"})
    out = predictions(app, mode="interpolate", steps=5, seed=0)
    images = torch.stack([p.images["generated"].data for p in out])
    assert [p.values["alpha"] for p in out] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.allclose(images[2], (images[0] + images[4]) / 2, atol=1e-5)
    assert torch.allclose(images[1], 0.75 * images[0] + 0.25 * images[4], atol=1e-5)


def _item(name: str, value: float) -> InferenceItem:
    image = Image(torch.full((1, 20, 18), value) + torch.arange(18.0), np.eye(4))
    subject = Subject(name, {"image": image, "conditioning": image})
    return InferenceItem(name, subject, subject, {}, {})


def test_conditioning_interpolation_between_subjects_and_unknown_ones() -> None:
    exp = experiment({"image": ["t1"], "conditioning": ["ct"]}, conditioning_role="conditioning")
    app = build(exp)
    items = [_item("a", 0.0), _item("b", 5.0), _item("c", 9.0)]
    out = predictions(app, items, mode="interpolate", interpolate=["a", "c"], steps=3)
    assert [p.name for p in out] == [f"interpolate_a_c_{i:03d}" for i in range(3)]
    assert out[1].values["from"] == "a" and out[1].values["alpha"] == 0.5
    with pytest.raises(
        ConfigError, match=r"inference\.interpolate: .*unknown subject\(s\) \['zz'\]"
    ):
        predictions(app, items, mode="interpolate", interpolate=["a", "zz"])
    sampled = predictions(app, items, num_samples=2)
    assert [p.values["source"] for p in sampled] == ["a", "a", "b", "b", "c", "c"]


def test_level_interpolation_needs_known_levels_and_a_conditioning() -> None:
    app = linear_app(classes=CLASSES, conditioning_column="level")
    out = predictions(app, mode="interpolate", interpolate=["inferior", "superior"], steps=3)
    middle = out[1].images["generated"].data
    ends = (out[0].images["generated"].data + out[2].images["generated"].data) / 2
    assert torch.allclose(middle, ends, atol=1e-3)  # linear generator, quantile map linear inside
    with pytest.raises(ConfigError, match=r"unknown \['middle'\]"):
        predictions(app, mode="interpolate", interpolate=["inferior", "middle"])
    with pytest.raises(ConfigError, match=r"no conditioning to interpolate"):
        predictions(linear_app(), mode="interpolate", interpolate=["a", "b"])


# --- output geometry and intensities -------------------------------------------------------------
def test_resized_affine_keeps_the_field_of_view() -> None:
    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    shape, size = (20, 12, 9), (8, 6, 3)
    out = resized_affine(affine, shape, size)

    def corner(matrix, index):
        return (matrix @ np.append(index, 1.0))[:3]

    for edge in ([-0.5] * 3, [s - 0.5 for s in shape]):
        scaled = [-0.5] * 3 if edge[0] < 0 else [s - 0.5 for s in size]
        assert np.allclose(corner(affine, edge), corner(out, scaled))
    assert np.allclose(np.linalg.norm(out[:3, :3], axis=0), [1.5 * 20 / 8 * 4 / 3, 1.5 * 2, 9.0])


def test_quantile_map_to_original_units_by_hand() -> None:
    intensity = {"processed": [[0.0, 1.0, 2.0]], "original": [[10.0, 20.0, 40.0]]}
    image = np.array([[[0.5, 1.5], [-3.0, 9.0]]])
    assert np.allclose(intensity_to_original(image, intensity), [[[15.0, 30.0], [10.0, 40.0]]])
    grid = {**GRID, "intensity": intensity}
    written = to_output_image(torch.tensor(image), grid, intensity="original")
    assert np.allclose(written.affine, GRID["affine"]) and written.data[0, 0, 1] == 30.0
    kept = to_output_image(torch.tensor(image), grid, intensity="normalized")
    assert torch.allclose(kept.data.double(), torch.tensor(image))


def test_validation_step_scores_generated_against_the_subject() -> None:
    app = build(classes=CLASSES, conditioning_column="level")
    app.eval()
    subject = SimpleNamespace(name="s", fields={"level": "inferior"}, affine=np.eye(4),
                              arrays={"image": np.random.default_rng(0).normal(size=(1, 20, 24))})  # fmt: skip
    with torch.no_grad():
        metrics = app.validation_step(subject, InferenceContext(torch.device("cpu")))
    assert set(metrics) == {"histogram_wasserstein", "mean_image_mae"}
    assert all(np.isfinite(v) and v > 0 for v in metrics.values())


def test_checkpoint_state_must_match() -> None:
    app = build(classes=CLASSES, conditioning_column="level")
    app.load_state_dict(app.state_dict())
    with pytest.raises(
        ConfigError, match=r"checkpoint: expected noise_size 4 .* got 4 and \['a'\]"
    ):
        app.load_state_dict({"noise_size": 4, "classes": ["a"]})


# --- distribution metrics (hand-computed references) ---------------------------------------------
def test_histogram_distances_by_hand() -> None:
    a = np.array([0.0, 1.0, 2.0, 3.0])
    assert histogram_wasserstein(a, a + 2.5) == pytest.approx(2.5)
    assert histogram_wasserstein(np.zeros(3), np.array([0.0, 0.0, 3.0])) == pytest.approx(1.0)
    assert histogram_l1(a, a) == 0.0
    assert histogram_l1(np.zeros(5), np.ones(5)) == pytest.approx(2.0)
    assert histogram_l1(
        np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0, 1.0])
    ) == pytest.approx(0.5)


def test_group_metrics_detect_shift_and_mode_collapse() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(0, 2.0, (50, 1, 6, 6))
    same = group_metrics(rng.normal(0, 2.0, (50, 1, 6, 6)), real)
    assert same["histogram_wasserstein"] < 0.1 and 0.8 < same["diversity_ratio"] < 1.2
    shifted = group_metrics(real + 4.0, real)  # shifted by two standard deviations
    assert shifted["histogram_wasserstein"] == pytest.approx(4.0 / real.std())
    assert shifted["mean_image_mae"] == pytest.approx(4.0 / real.std())
    collapsed = group_metrics(np.repeat(real[:1], 50, axis=0), real)
    assert collapsed["diversity_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(group_metrics(real[:1], real)["diversity_ratio"])


def test_demo_pca_frechet_distance_by_hand() -> None:
    from voxelflow.demo.gan_report import pca_frechet

    first = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]).reshape(4, 1, 2)
    basis = (np.zeros(2), np.eye(2))
    assert pca_frechet(first, first + np.array([3.0, 4.0]), basis) == pytest.approx(25.0)
    # a constant set (the mean-image baseline): ‖Δμ‖² + trace of the other covariance (2 × 2/3)
    constant = np.zeros((4, 1, 2))
    assert pca_frechet(first, constant, basis) == pytest.approx(4.0 / 3.0)
