"""Inference with an installed zoo entry (``voxelflow infer --model NAME``).

An entry's model settings are fixed; only ``inference.*``, ``system.*`` and ``evaluation.*`` can be
overridden. A single-model entry runs through :func:`voxelflow.engine.inference.predict_rows`;
an ensemble entry through :func:`voxelflow.cv.ensemble.ensemble_rows`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from voxelflow.config.schema import ExperimentConfig
from voxelflow.engine.inference import predict_rows
from voxelflow.errors import ConfigError
from voxelflow.io.table import SubjectRow

__all__ = ["MODEL_OVERRIDABLE", "infer_with_model", "model_experiment"]

#: config sections ``--set`` may change when inferring with a zoo entry (the rest is the model)
MODEL_OVERRIDABLE = ("inference.", "system.", "evaluation.")


def infer_with_model(name_or_path: str | Path, rows: Sequence[SubjectRow], *, out_dir: Path,
                     trust_code: bool = False, overrides: Sequence[str] = ()) -> Path:
    """Run an installed zoo entry (name or entry folder) on rows; returns the prediction table.

    The entry's application is built from its config and fitted state (preprocessing and the
    task state under ``"task"``: class names, target statistics ...); the weights of every
    module it ships are loaded (see :func:`voxelflow.zoo.network.load_entry_modules`); its
    preprocessing is applied and inverted. An ensemble entry (``files.members``) runs as
    ``voxelflow infer --folds all`` does (:func:`voxelflow.cv.ensemble.ensemble_rows`): members
    one after another, outputs accumulated, then its packed postprocessing decision.
    """
    from voxelflow.zoo.network import application_from_entry
    from voxelflow.zoo.store import resolve_model, trusted_plugins

    entry = resolve_model(name_or_path)
    if entry.card.is_ensemble:
        from voxelflow.config.load import load_experiment
        from voxelflow.cv.ensemble import ensemble_rows, entry_decision, entry_members

        trusted_plugins(entry, trust_code)
        experiment = model_experiment(load_experiment(entry.config_path), overrides)
        members = entry_members(entry, experiment)
        return ensemble_rows(members, rows, out_dir=out_dir, options=experiment.inference,
                             postprocessing=entry_decision(entry))
    app, experiment, entry = application_from_entry(entry, trust_code=trust_code)
    experiment = model_experiment(experiment, overrides)
    state = json.loads(entry.fitted_state_path.read_text()) if entry.fitted_state_path else {}
    return predict_rows(experiment, app, state, rows, out_dir=out_dir)


def model_experiment(experiment: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A zoo entry's experiment with ``--set`` overrides of ``inference.*`` / ``system.*`` /
    ``evaluation.*`` only.

    Raises:
        ConfigError: an override of the model's own settings.
    """
    if not overrides:
        return experiment
    from voxelflow.config.load import load_experiment

    fixed = [o for o in overrides if not o.strip().startswith(MODEL_OVERRIDABLE)]
    if fixed:
        raise ConfigError(
            f"--set {fixed[0]}: a zoo entry's model settings are fixed; with --model only "
            f"{', '.join(k + '*' for k in MODEL_OVERRIDABLE)} can be changed"
        )
    return load_experiment(experiment, overrides)
