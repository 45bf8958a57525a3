"""``training.hooks``: hooks named in the config run in the training loop; bad ones are refused."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from voxelflow.config.check import check_experiment
from voxelflow.config.load import validate_experiment
from voxelflow.engine.run import train_experiment

PLUGIN = '''
import json
from pathlib import Path
from voxelflow.engine.hooks import Hook

class RecordSteps(Hook):
    def __init__(self, path):
        self.path = Path(path)
        self.steps = []
    def on_step_end(self, trainer, batch, losses):
        self.steps.append(trainer.step)
    def on_train_end(self, trainer):
        self.path.write_text(json.dumps(self.steps))
'''


def _experiment(tmp_path: Path, make_table: Callable[..., Path],
                make_config: Callable[..., dict[str, Any]], hooks: list[dict[str, Any]]) -> Any:
    config = make_config(make_table(tmp_path / "data"), tmp_path / "run",
                         training={"max_iterations": 6, "checkpoint_every": 6,
                                   "validate_every": 0, "hooks": hooks})
    return validate_experiment(config)


def test_stop_after_and_a_plugin_hook_run_in_the_training_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phantom_table: Callable[..., Path],
    tiny_segmentation_config: Callable[..., dict[str, Any]],
) -> None:
    (tmp_path / "my_hooks.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_hooks", raising=False)
    record = tmp_path / "steps.json"
    experiment = _experiment(tmp_path, phantom_table, tiny_segmentation_config, [
        {"name": "my_hooks:RecordSteps", "path": str(record)},
        {"name": "stop_after", "iterations": 3},
    ])
    assert check_experiment(experiment, data=False) == []
    train_experiment(experiment)
    assert json.loads(record.read_text()) == [1, 2, 3]  # stop_after ended the 6-step run at 3


def test_unknown_hook_name_and_option_are_reported_with_their_keys(
    tmp_path: Path, phantom_table: Callable[..., Path],
    tiny_segmentation_config: Callable[..., dict[str, Any]],
) -> None:
    experiment = _experiment(tmp_path, phantom_table, tiny_segmentation_config, [
        {"name": "stop_aftr", "iterations": 3},
        {"name": "stop_after", "iteration": 3},
    ])
    problems = "\n".join(check_experiment(experiment, data=False))
    assert "training.hooks[0]" in problems and "stop_after" in problems  # suggestion
    assert "training.hooks[1]" in problems and "iteration" in problems
