"""Device and precision choices, montages, the scalar CSV, distributed helpers in one process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from voxelflow.engine import distributed
from voxelflow.engine.device import move_to_device, resolve_precision, select_device
from voxelflow.engine.logging import RunLogger, montage, read_scalars
from voxelflow.errors import ConfigError


def test_cpu_precision_and_device_errors() -> None:
    cpu = select_device("cpu")
    assert not resolve_precision("auto", cpu).enabled
    bf16 = resolve_precision("bf16", cpu)
    assert bf16.enabled and bf16.dtype == torch.bfloat16 and not bf16.use_scaler
    with bf16.autocast():
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match=r"training\.amp: expected one of"):
        resolve_precision("half", cpu)
    with pytest.raises(
        ConfigError, match=r"system\.device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"
    ):
        select_device("gpu0")
    if not torch.cuda.is_available():
        assert select_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="CUDA"):
            select_device("cuda")


def test_move_to_device_keeps_structure() -> None:
    batch = {"image": torch.ones(1), "names": ["a"], "pair": (torch.zeros(1), 3)}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["names"] == ["a"] and isinstance(moved["pair"], tuple) and moved["pair"][1] == 3


def test_montage_shows_three_central_slices() -> None:
    volume = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    picture = montage(volume)
    assert picture.shape == (1, 5, 6 + 6 + 5)  # slices (5, 6), (4, 6), (4, 5) side by side
    assert picture.min() == 0.0 and picture.max() == 1.0
    assert montage(torch.ones(1, 3, 3)).shape == (1, 3, 3)


def test_csv_is_truncated_to_the_resumed_step(tmp_path: Path) -> None:
    run_logger = RunLogger(tmp_path, total_iterations=10, progress=False, tensorboard=False)
    for step in range(1, 7):
        run_logger.log_scalars(step, {"train/loss": 1.0 / step})
    run_logger.close()
    with (tmp_path / "scalars.csv").open("a") as stream:
        stream.write("7,train/lo")  # a line cut by a killed process
    resumed = RunLogger(
        tmp_path, total_iterations=10, start_iteration=4, progress=False, tensorboard=False
    )
    resumed.log_scalars(5, {"train/loss": 9.0})
    resumed.close()
    rows = read_scalars(tmp_path / "scalars.csv")
    assert rows == [
        (1, "train/loss", 1.0),
        (2, "train/loss", 0.5),
        (3, "train/loss", 1 / 3),
        (4, "train/loss", 0.25),
        (5, "train/loss", 9.0),
    ]
    assert (
        "train/loss" not in (tmp_path / "logs" / "train.log").read_text()
    )  # scalars go to the CSV


def test_single_process_helpers() -> None:
    context = distributed.init_distributed()
    assert (context.rank, context.world_size, context.is_main) == (0, 1, True)
    assert distributed.shard(list("abcde"), rank=1, world_size=2) == ["b", "d"]
    assert distributed.gather_objects({"x": 1}) == [{"x": 1}]
    with pytest.raises(ConfigError, match="rank=2, world_size=2"):
        distributed.shard([1], rank=2, world_size=2)
    mean = distributed.mean_over_subjects(
        [{"dice": 0.5, "hd": float("nan")}, {"dice": 1.0, "hd": 2.0}]
    )
    assert mean == {"dice": 0.75, "hd": 2.0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_training_on_cuda(tmp_path: Path, amp: str) -> None:
    from engine_toys import ToyData, ToyRegression, tiny_net

    from voxelflow.config.schema import TrainingConfig
    from voxelflow.engine.checkpoint import load_checkpoint
    from voxelflow.engine.trainer import Trainer

    options = TrainingConfig(
        max_iterations=6, amp=amp, grad_clip=1.0, validate_every=0, log_every=1
    )
    trainer = Trainer(
        ToyRegression(tiny_net()),
        ToyData(4),
        run_dir=tmp_path,
        training=options,
        device="cuda",
        progress=False,
    )
    trainer.fit()
    assert trainer.precision.use_scaler == (amp == "fp16")
    losses = [v for _, name, v in read_scalars(tmp_path / "scalars.csv") if name == "train/loss"]
    assert len(losses) == 6 and all(map(math.isfinite, losses))
    scaler_state = load_checkpoint(tmp_path / "checkpoints" / "step_00000006.pt")["scalers"][
        "default"
    ]
    assert bool(scaler_state) == (amp == "fp16")
