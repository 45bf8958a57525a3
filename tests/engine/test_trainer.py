"""The generic training loop on tiny networks and synthetic tensors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from engine_toys import ToyData, ToyGan, ToyRegression, make_batch, sgd_settings, tiny_net

from voxelflow.config.schema import TrainingConfig
from voxelflow.engine.checkpoint import load_checkpoint
from voxelflow.engine.hooks import Hook
from voxelflow.engine.logging import read_scalars
from voxelflow.engine.trainer import Trainer
from voxelflow.errors import CheckpointError, ConfigError

QUIET = {"progress": False, "tensorboard": False}


def _options(**kwargs) -> TrainingConfig:
    return TrainingConfig(**{"validate_every": 0, "log_every": 1, **kwargs})


def _losses(run_dir: Path, name: str = "train/loss") -> dict[int, float]:
    return {
        step: value for step, tag, value in read_scalars(run_dir / "scalars.csv") if tag == name
    }


def test_loss_decreases(tmp_path: Path) -> None:
    app = ToyRegression(tiny_net())
    Trainer(
        app,
        ToyData(4),
        run_dir=tmp_path,
        **QUIET,
        training=_options(max_iterations=40),
        optimization=sgd_settings(0.1),
        device="cpu",
    ).fit()
    losses = _losses(tmp_path)
    assert sorted(losses) == list(range(1, 41))
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(36, 41)) / 5
    assert last < 0.5 * first


class _SplitData:
    """The items of ``make_batch(i, 4)`` served as two halves (micro-batches)."""

    def __iter__(self):
        index = 0
        while True:
            batch = make_batch(index, 4)
            for half in (slice(0, 2), slice(2, 4)):
                yield {key: value[half] for key, value in batch.items()}
            index += 1


def test_gradient_accumulation_equals_bigger_batch(tmp_path: Path) -> None:
    big, accumulated = ToyRegression(tiny_net()), ToyRegression(tiny_net())
    Trainer(
        big,
        ToyData(4),
        run_dir=tmp_path / "a",
        **QUIET,
        training=_options(max_iterations=3),
        optimization=sgd_settings(),
        device="cpu",
    ).fit()
    Trainer(
        accumulated,
        _SplitData(),
        run_dir=tmp_path / "b",
        **QUIET,
        training=_options(max_iterations=3, accumulate=2),
        optimization=sgd_settings(),
        device="cpu",
    ).fit()
    for expected, got in zip(
        big.modules["network"].parameters(), accumulated.modules["network"].parameters()
    ):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        _losses(tmp_path / "b")[3], _losses(tmp_path / "a")[3], rtol=1e-5, atol=1e-7
    )


def test_gradient_clipping_matches_torch(tmp_path: Path) -> None:
    app, reference = ToyRegression(tiny_net()), tiny_net()
    Trainer(
        app,
        ToyData(2),
        run_dir=tmp_path,
        **QUIET,
        training=_options(max_iterations=1, grad_clip=0.01),
        optimization=sgd_settings(1.0),
        device="cpu",
    ).fit()
    batch = make_batch(0, 2)
    torch.nn.functional.mse_loss(reference(batch["image"]), batch["target"]).backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
    assert norm > 0.01  # clipping was active
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter -= parameter.grad
    for expected, got in zip(reference.parameters(), app.modules["network"].parameters()):
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(_losses(tmp_path, "grad_norm/default")[1], float(norm))


def _validation_subjects(count: int = 3) -> list[dict]:
    return [{**make_batch(100 + i, 1), "value": float(i)} for i in range(count)]


def test_early_stopping_after_patience(tmp_path: Path) -> None:
    app = ToyRegression(tiny_net(), scores={1: 0.5, 2: 0.6, 3: 0.6, 4: 0.1, 5: 0.9})
    options = _options(
        max_iterations=20, validate_every=1, best_metric="score", early_stopping_patience=2
    )
    summary = Trainer(
        app,
        ToyData(),
        run_dir=tmp_path,
        **QUIET,
        training=options,
        validation_data=_validation_subjects(),
        device="cpu",
    ).fit()
    assert summary["step"] == 4.0 and summary["best"] == pytest.approx(0.6)
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000004.pt")["step"] == 4


def test_validation_averages_over_subjects(tmp_path: Path) -> None:
    app = ToyRegression(tiny_net())
    options = _options(max_iterations=2, validate_every=2, best_metric="score")
    summary = Trainer(
        app,
        ToyData(),
        run_dir=tmp_path,
        **QUIET,
        training=options,
        validation_data=_validation_subjects(3),
        device="cpu",
    ).fit()
    assert summary["value"] == pytest.approx(1.0)  # mean of 0, 1, 2
    assert _losses(tmp_path, "val/value") == {2: pytest.approx(1.0)}


def test_best_and_last_checkpoints_are_kept(tmp_path: Path) -> None:
    scores = {1: 0.2, 2: 0.9, 3: 0.1, 4: 0.3, 5: 0.4, 6: 0.0}
    options = _options(
        max_iterations=6,
        validate_every=1,
        checkpoint_every=1,
        keep_last=2,
        keep_best=1,
        best_metric="score",
    )
    Trainer(
        ToyRegression(tiny_net(), scores=scores),
        ToyData(),
        run_dir=tmp_path,
        **QUIET,
        training=options,
        validation_data=_validation_subjects(1),
        device="cpu",
    ).fit()
    kept = sorted(path.name for path in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_00000002.pt", "step_00000005.pt", "step_00000006.pt"]
    from voxelflow.engine.checkpoint import find_checkpoint

    assert find_checkpoint(tmp_path, which="best").name == "step_00000002.pt"
    assert find_checkpoint(tmp_path, which="last").name == "step_00000006.pt"


def test_best_mode_min_saves_only_improvements(tmp_path: Path) -> None:
    scores = {1: 0.5, 2: 0.7, 3: 0.2}
    options = _options(
        max_iterations=3,
        validate_every=1,
        checkpoint_every=100,
        keep_last=1,
        keep_best=1,
        best_metric="score",
        best_mode="min",
    )
    Trainer(
        ToyRegression(tiny_net(), scores=scores),
        ToyData(),
        run_dir=tmp_path,
        **QUIET,
        training=options,
        validation_data=_validation_subjects(1),
        device="cpu",
    ).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == [
        "step_00000003.pt"
    ]


def test_gan_two_optimisers_with_critic_steps(tmp_path: Path) -> None:
    class Counter(Hook):
        def __init__(self) -> None:
            self.steps = 0

        def on_step_end(self, trainer, batch, losses) -> None:
            self.steps += 1
            assert set(losses) == {"loss", "loss_critic", "loss_generator"}

    app, counter = ToyGan(critic_steps=3), Counter()
    data = ({"real": torch.randn(8, 2) * 0.1 + 2.0} for _ in range(100))
    trainer = Trainer(
        app,
        data,
        run_dir=tmp_path,
        **QUIET,
        training=_options(max_iterations=5),
        device="cpu",
        hooks=[counter],
    )
    trainer.fit()
    critic_state = trainer.optimizers["critic"][0].state_dict()["state"]
    generator_state = trainer.optimizers["generator"][0].state_dict()["state"]
    assert float(critic_state[0]["step"]) == 15 and float(generator_state[0]["step"]) == 5
    assert counter.steps == 5 and set(_losses(tmp_path, "train/loss_critic")) == {1, 2, 3, 4, 5}
    with pytest.raises(ConfigError, match="accumulate"):
        Trainer(
            ToyGan(),
            data,
            run_dir=tmp_path / "x",
            **QUIET,
            training=_options(accumulate=2),
            device="cpu",
        )


def test_logs_tensorboard_csv_and_log_file(tmp_path: Path) -> None:
    class WithImages(ToyRegression):
        def example_images(self, batch, outputs):
            return {"input": batch["image"][0], "target": batch["target"][0]}

        def graph_input(self, batch):
            return "network", batch["image"][:1]

    options = TrainingConfig(
        max_iterations=4, log_every=2, validate_every=2, best_metric="score", image_every=2
    )
    Trainer(
        WithImages(tiny_net()),
        ToyData(),
        run_dir=tmp_path,
        training=options,
        progress=True,
        validation_data=_validation_subjects(1),
        device="cpu",
    ).fit()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "resumed" not in (tmp_path / "logs" / "train.log").read_text()
    tags = {tag for _, tag, _ in read_scalars(tmp_path / "scalars.csv")}
    assert {"train/loss", "lr/default", "time/data_ms", "time/compute_ms", "val/score"} <= tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "images/input" in events.Tags()["images"] and "train/loss" in events.Tags()["scalars"]


def test_resume_in_process_matches_uninterrupted(tmp_path: Path) -> None:
    def run(folder: Path, iterations: int) -> ToyRegression:
        app = ToyRegression(tiny_net(dropout=0.3))
        options = _options(max_iterations=iterations, checkpoint_every=3)
        Trainer(
            app,
            ToyData(),
            run_dir=folder,
            **QUIET,
            training=options,
            optimization=sgd_settings(max_iterations=8),
            device="cpu",
        ).fit()
        return app

    straight = run(tmp_path / "a", 8)
    run(tmp_path / "b", 5)  # stops at 5: checkpoints at 3 and 5
    resumed = run(tmp_path / "b", 8)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
    for expected, got in zip(
        straight.modules["network"].parameters(), resumed.modules["network"].parameters()
    ):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_resume_refuses_other_application_or_shapes(tmp_path: Path) -> None:
    Trainer(
        ToyRegression(tiny_net()),
        ToyData(),
        run_dir=tmp_path,
        **QUIET,
        training=_options(max_iterations=1),
        device="cpu",
    ).fit()
    other = ToyRegression(
        torch.nn.Sequential(
            torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 1, 1)
        )
    )
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: 2.bias, 2.weight; unexpected keys: 3.bias, 3.weight; shape mismatch: .*0\.weight \(expected \(8, 1, 3, 3, 3\), got \(4, 1, 3, 3, 3\)\)",
    ):
        Trainer(
            other,
            ToyData(),
            run_dir=tmp_path,
            **QUIET,
            training=_options(max_iterations=2),
            device="cpu",
        ).fit()
    renamed = copy.deepcopy(ToyRegression(tiny_net()))
    renamed.name = "segmentation"
    with pytest.raises(
        CheckpointError, match="expected a checkpoint of application 'segmentation', got 'toy'"
    ):
        Trainer(
            renamed,
            ToyData(),
            run_dir=tmp_path,
            **QUIET,
            training=_options(max_iterations=2),
            device="cpu",
        ).fit()


def test_max_epochs_ends_training_and_saves(tmp_path: Path) -> None:
    options = _options(max_iterations=100, checkpoint_every=50, log_every=5)
    summary = Trainer(
        ToyRegression(tiny_net()),
        ToyData(epoch_length=3),
        run_dir=tmp_path,
        **QUIET,
        training=options,
        max_epochs=2,
        device="cpu",
    ).fit()
    assert summary["step"] == 6.0
    assert (
        load_checkpoint(tmp_path / "checkpoints" / "step_00000006.pt")["trainer_state"]["epoch"]
        == 2
    )
    assert set(_losses(tmp_path)) == {5, 6}


def _config(iterations: int, network: str = "unet") -> dict:
    from voxelflow.config.schema import Experiment

    data = Experiment().model_dump(mode="json")
    data["training"]["max_iterations"] = iterations
    data["network"]["name"] = network
    return data


def test_resume_with_longer_schedule_replays_the_new_schedule(tmp_path: Path) -> None:
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.optim import build_optimizer, build_scheduler

    def run(iterations: int, network: str = "unet") -> None:
        optimization = OptimizationSettings("sgd", {"lr": 0.1}, "cosine", {}, iterations)
        Trainer(
            ToyRegression(tiny_net()),
            ToyData(),
            run_dir=tmp_path,
            **QUIET,
            training=_options(max_iterations=iterations),
            optimization=optimization,
            device="cpu",
            config=_config(iterations, network),
        ).fit()

    run(4)
    run(8)
    reference_optimizer = build_optimizer("sgd", tiny_net().parameters(), lr=0.1)
    reference = build_scheduler("cosine", reference_optimizer, max_iterations=8)
    expected = {}
    for step in range(1, 9):
        reference.step()
        expected[step] = reference_optimizer.param_groups[0]["lr"]
    resumed = {step: lr for step, lr in _losses(tmp_path, "lr/default").items() if step > 4}
    assert resumed == pytest.approx({step: expected[step] for step in range(5, 9)})
    with pytest.raises(
        CheckpointError,
        match=r"expected the same model and data settings, got changes in network\.name",
    ):
        run(9, network="vnet")


def test_deprecated_trainer_options_is_a_training_config_and_still_trains(tmp_path: Path) -> None:
    from voxelflow.engine.step import TrainerOptions

    with pytest.warns(DeprecationWarning, match="TrainerOptions is deprecated"):
        options = TrainerOptions.from_config(
            _options(max_iterations=3, accumulate=2), progress=False, tensorboard=False
        )
    assert isinstance(options, TrainingConfig) and options.accumulate == 2
    with pytest.warns(DeprecationWarning, match=r"Trainer\(options=\.\.\.\) is deprecated"):
        trainer = Trainer(
            ToyRegression(tiny_net()), ToyData(), run_dir=tmp_path, options=options, device="cpu"
        )
    assert trainer.training is options and not trainer.progress and not trainer.tensorboard
    assert trainer.fit()["step"] == 3.0 and trainer.state.step == 3


def test_training_and_deprecated_options_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected training= or the deprecated options="):
        Trainer(ToyRegression(tiny_net()), ToyData(), run_dir=tmp_path, device="cpu",
                training=_options(), options=_options())  # fmt: skip


def test_trainer_state_holds_the_counters_and_hooks_still_read_step(tmp_path: Path) -> None:
    from voxelflow.engine.hooks import StopAfter
    from voxelflow.engine.trainer_state import TrainerState

    trainer = Trainer(ToyRegression(tiny_net()), ToyData(), run_dir=tmp_path, **QUIET,
                      training=_options(max_iterations=10, checkpoint_every=2), device="cpu",
                      hooks=[StopAfter(4)])  # fmt: skip
    summary = trainer.fit()
    assert isinstance(trainer.state, TrainerState)
    assert summary["step"] == 4.0 == trainer.step == trainer.state.step
    assert trainer.should_stop and trainer.state.batches_consumed == 4
    saved = load_checkpoint(tmp_path / "checkpoints" / "step_00000004.pt")
    assert saved["step"] == 4 and saved["trainer_state"]["batches_consumed"] == 4
