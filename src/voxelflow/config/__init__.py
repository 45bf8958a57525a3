"""voxelflow.config: the experiment schema, loading with overrides, building parts by name.

Example:
    >>> from voxelflow.config import load_experiment
    >>> load_experiment({}, ["training.max_iterations=5"]).training.max_iterations
    5
"""

from voxelflow.config.load import dump_experiment, experiment_diff, load_experiment
from voxelflow.config.schema import Component, Experiment, ExperimentConfig

__all__ = [
    "Component",
    "Experiment",
    "ExperimentConfig",
    "dump_experiment",
    "experiment_diff",
    "load_experiment",
]
