"""Two gloo processes train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_toys import ToyRegression, make_batch, sgd_settings, tiny_net
from torch.utils.data import DataLoader, Dataset, Subset

from voxelflow.config.schema import TrainingConfig
from voxelflow.engine import distributed
from voxelflow.engine.hooks import Hook
from voxelflow.engine.trainer import Trainer

SUBJECTS = 16
VALUES = (0.0, 1.0, 5.0)  # subject mean 2.0; a mean of per-rank means would give 1.75


class Items(Dataset):
    def __len__(self) -> int:
        return SUBJECTS

    def __getitem__(self, index: int) -> dict:
        batch = make_batch(index, 1, seed=3)
        return {
            "image": batch["image"][0],
            "target": batch["target"][0],
            "subject": f"s{index:02d}",
        }


def _validation() -> list[dict]:
    return [{**make_batch(50 + i, 1), "value": value} for i, value in enumerate(VALUES)]


class Recorder(Hook):
    def __init__(self) -> None:
        self.subjects: list[str] = []

    def on_step_end(self, trainer, batch, losses) -> None:
        self.subjects += list(batch["subject"])


def _train(loader, run_dir: Path, recorder: Recorder) -> tuple[ToyRegression, dict]:
    options = TrainingConfig(
        max_iterations=6,
        validate_every=6,
        best_metric="score",
        log_every=1,
    )
    app = ToyRegression(tiny_net())
    summary = Trainer(
        app,
        loader,
        run_dir=run_dir,
        training=options,
        progress=False,
        tensorboard=False,
        optimization=sgd_settings(0.1),
        validation_data=_validation(),
        device="cpu",
        hooks=[recorder],
    ).fit()
    return app, summary


def _worker(rank: int, world_size: int, folder: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    context = distributed.init_distributed(backend="gloo")
    try:
        indices = distributed.shard(
            range(SUBJECTS), rank=context.rank, world_size=context.world_size
        )
        loader = DataLoader(Subset(Items(), indices), batch_size=2, num_workers=1)
        recorder = Recorder()
        app, summary = _train(loader, Path(folder) / "run", recorder)
        Path(folder, f"rank{rank}.json").write_text(
            json.dumps({"subjects": recorder.subjects, "summary": summary})
        )
        if context.is_main:
            torch.save(app.modules["network"].state_dict(), Path(folder) / "weights.pt")
    finally:
        distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert not set(ranks[0]["subjects"]) & set(ranks[1]["subjects"])  # disjoint shards
    assert len(set(ranks[0]["subjects"]) | set(ranks[1]["subjects"])) == SUBJECTS

    single, summary = _train(DataLoader(Items(), batch_size=4), tmp_path / "single", Recorder())
    distributed_weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    for name, expected in single.modules["network"].state_dict().items():
        torch.testing.assert_close(distributed_weights[name], expected, rtol=1e-5, atol=1e-6)
    for rank in ranks:
        assert rank["summary"]["value"] == pytest.approx(2.0)  # per subject, not per-rank means
        assert rank["summary"]["mse"] == pytest.approx(summary["mse"], rel=1e-5)
    assert sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))  # rank 0 wrote
