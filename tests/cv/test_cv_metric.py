"""Each application declares its own cross-validation metric; cv never looks up a name table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from voxelflow.config.load import load_experiment
from voxelflow.cv.oof import CVMetric, cv_metric
from voxelflow.errors import ConfigError

PLUGIN = '''
from voxelflow.applications.base import Application


class Plain(Application):
    name = "plain"


class Scored(Application):
    name = "scored"
    per_subject_table = "scores.csv"

    @classmethod
    def cross_validation_metric(cls, experiment):
        return ("mse", False, "mse")
'''


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"application": "segmentation"}, CVMetric("dice", True, "dice")),
        ({"application": "regression"}, CVMetric("mae", False, "mae")),
        ({"application": "classification", "task": {"target_column": "grade"}},
         CVMetric("balanced_accuracy", True, "correct")),
        ({"application": "classification", "task": {"target_column": "age", "kind": "value"}},
         CVMetric("mae", False, "abs_error")),
        ({"application": "autoencoder"}, CVMetric("mae", False, "mae")),
        ({"application": "gan", "task": {"noise_size": 4}},
         CVMetric("histogram_wasserstein", False, "histogram_wasserstein")),
    ],
)  # fmt: skip
def test_built_in_metrics(config: dict[str, object], expected: CVMetric) -> None:
    assert cv_metric(load_experiment(config)) == expected


def test_a_plugin_declares_its_metric_or_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cv_plugin_apps.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        scored = load_experiment({"application": "cv_plugin_apps:Scored"})
        assert cv_metric(scored) == CVMetric("mse", False, "mse")
        plain = load_experiment({"application": "cv_plugin_apps:Plain"})
        with pytest.raises(ConfigError, match=r"'cv_plugin_apps:Plain'.*cross_validation_metric"):
            cv_metric(plain)
    finally:
        sys.modules.pop("cv_plugin_apps", None)
