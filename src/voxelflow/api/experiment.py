"""The :class:`Experiment` class of the Python API (see :mod:`voxelflow.api`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.api.inputs import EvaluationInput
    from voxelflow.applications.base import Application, Prediction
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.io.image import Subject

log = logging.getLogger(__name__)

__all__ = ["Experiment"]


@dataclass
class _LoadedModel:
    """A built application with its weights and the fitted preprocessing state."""

    application: Application
    fitted_state: dict[str, Any]
    source: str
    checkpoint: str | None = None  # "best" | "last" of a run; None for a zoo entry


class Experiment:
    """One experiment: its validated config, its run folder and what it trained.

    Args:
        config: the validated config (``voxelflow.ExperimentConfig``).
        run_dir: run folder; default the config's ``system.run_dir``.

    Example:
        >>> experiment = Experiment.from_dict({"training": {"max_iterations": 5}})
        >>> experiment.config.training.max_iterations, experiment.run_dir.name
        (5, 'experiment')
    """

    def __init__(
        self, config: ExperimentConfig, *, run_dir: str | os.PathLike | None = None
    ) -> None:
        self.config = config
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._model: _LoadedModel | None = None
        self._members: tuple[tuple[str, str | None], list[Any]] | None = None
        self._ensemble: tuple[list[Any], dict[str, Any] | None] | None = None  # an ensemble entry

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike, overrides: Sequence[str] | None = None
    ) -> Experiment:
        """Load a YAML (or NiftyNet ``.ini``) config, with ``"key.path=value"`` overrides.

        Relative paths in the config are relative to the working folder, as on the command line.

        Raises:
            ConfigError: invalid YAML, unknown keys or wrong types (the key path is named).
        """
        from voxelflow.config.load import load_experiment

        return cls(load_experiment(path, list(overrides or ())))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], overrides: Sequence[str] | None = None
    ) -> Experiment:
        """Validate a plain mapping of sections (missing keys take their defaults).

        Raises:
            ConfigError: unknown keys or wrong types (the key path is named).
        """
        from voxelflow.config.load import load_experiment

        return cls(load_experiment(dict(data), list(overrides or ())))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike) -> Experiment:
        """The experiment saved in a trained run folder (its ``config.yaml``).

        Raises:
            ConfigError: the folder has no ``config.yaml``.
        """
        from voxelflow.config.load import load_experiment

        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(
                f"expected a trained run folder with config.yaml, got {str(run_dir)!r}"
            )
        return cls(load_experiment(run_dir / "config.yaml"), run_dir=run_dir)

    @classmethod
    def from_model(
        cls,
        name_or_path: str | os.PathLike,
        overrides: Sequence[str] = (),
        *,
        trust_code: bool = False,
    ) -> Experiment:
        """An installed zoo entry (name or entry folder), ready for :meth:`infer`.

        Args:
            name_or_path: the entry.
            overrides: ``key=value`` changes of ``inference.*``, ``system.*`` or
                ``evaluation.*`` (the model's own settings are fixed), as ``--set`` with
                ``voxelflow infer --model``.
            trust_code: allow the entry's plugin code to be imported.

        Raises:
            RegistryError: no such entry. SecurityError: the entry has plugin code and
                ``trust_code`` is false. ConfigError: an override of a fixed setting.
        """
        from voxelflow.config.load import load_experiment
        from voxelflow.zoo.infer import MODEL_OVERRIDABLE
        from voxelflow.zoo.network import load_entry_modules
        from voxelflow.zoo.store import resolve_model, trusted_plugins

        fixed = [o for o in overrides if not o.strip().startswith(MODEL_OVERRIDABLE)]
        if fixed:
            raise ConfigError(
                f"overrides: {fixed[0]!r} changes the model; only "
                f"{', '.join(k + '*' for k in MODEL_OVERRIDABLE)} can change for a zoo entry"
            )
        entry = resolve_model(name_or_path)
        trusted_plugins(entry, trust_code)
        experiment = cls(load_experiment(entry.config_path, overrides))
        if entry.card.is_ensemble:  # members run one after another, as infer(folds=...) does
            from voxelflow.cv.ensemble import entry_decision, entry_members

            members = entry_members(entry, experiment.config)
            experiment._ensemble = (members, entry_decision(entry))
            return experiment
        state = _read_json(entry.fitted_state_path) if entry.fitted_state_path else {}
        application = experiment._build_application(state)
        load_entry_modules(application, entry)  # every module inference needs (GAN: generator)
        experiment._model = _LoadedModel(application, state, f"zoo entry {entry.name!r}")
        return experiment

    @property
    def run_dir(self) -> Path:
        """The run folder: the last one trained, else the config's ``system.run_dir``."""
        return self._run_dir or Path(self.config.system.run_dir)

    # --- actions ------------------------------------------------------------------------------
    def validate(self, *, data: bool = True) -> list[str]:
        """Every problem of the config at once, like ``voxelflow config validate``: each
        component through the one build path in check mode, then (with ``data``) the table,
        its files and their headers. Nothing is trained or written.

        Returns:
            one line per problem, each naming its key (``augmentation[1].rotation: ...``),
            file or value; empty when the experiment can run.
        """
        from voxelflow.config.check import check_experiment

        return check_experiment(self.config, data=data)

    def train(
        self, run_dir: str | os.PathLike | None = None, *, force: bool = False
    ) -> dict[str, float]:
        """Train (or resume) into ``run_dir`` (default :attr:`run_dir`), like ``voxelflow train``.

        Args:
            run_dir: run folder; remembered for later :meth:`infer` calls.
            force: start afresh in a folder that holds a run of a different config.

        Returns:
            the last validation metrics (``{"dice": ..., "dice/1": ...}`` for segmentation).

        Raises:
            ConfigError: the folder holds a run of a different config and ``force`` is false.
            DataError: the dataset table is empty or inconsistent (subject and file named).
        """
        from voxelflow.engine.run import train_experiment

        if run_dir is not None:
            self._run_dir = Path(run_dir)
        self._model = None  # new weights: load them again on the next infer
        self._ensemble = None
        if not force:
            from voxelflow.engine.run_dir import finished_run_summary

            finished = finished_run_summary(self.run_dir, self.config)
            if finished is not None:
                return finished
        return train_experiment(self.config, run_dir=self.run_dir, force=force)

    def infer(
        self, images: object, *, checkpoint: str | None = None, folds: str | None = None
    ) -> list[Prediction]:
        """Predict in memory; nothing is written.

        Args:
            images: one input or a list (or a ``{name: input}`` mapping) of inputs, each an
                :class:`Image`, a :class:`Subject` with an ``image`` role, or an
                ``(array, affine)`` pair: a numpy array or torch tensor of shape
                ``(X, Y, Z)`` or ``(C, X, Y, Z)`` and its 4×4 voxel-to-world matrix.
            checkpoint: ``"best"`` or ``"last"`` (default ``inference.checkpoint``).
            folds: ``"all"`` (or ``"0,2"``): the ensemble of the fold runs ``run_dir/fold_K``
                (see :meth:`cross_validate`), probabilities averaged before the argmax and the
                postprocessing of ``run_dir/cv/postprocessing.json`` applied.

        Returns:
            one :class:`Prediction` per input (named after the subject, the image file or
            ``image_000`` ...), its images on the input's original grid and affine; a
            segmentation holds ``images["seg"]`` with the original label values.

        Raises:
            ConfigError: no trained run in :attr:`run_dir`. ShapeError: an input with the wrong
                number of channels or dimensions.

        Shape:
            arrays: ``(X, Y, Z)`` or ``(C, X, Y, Z)``; C = the number of ``dataset.inputs.image``
            columns.
        """
        from voxelflow.api.inputs import as_subjects
        from voxelflow.engine.inference import predict_subjects

        subjects = as_subjects(images, channels=len(self.config.dataset.inputs["image"]))
        if folds is not None:
            return self._infer_folds(subjects, folds, checkpoint)
        if self._ensemble is not None:
            from voxelflow.cv.ensemble import ensemble_predict

            members, decision = self._ensemble
            return list(
                ensemble_predict(members, subjects, self.config.inference, postprocessing=decision)
            )
        model = self._loaded(checkpoint)
        return predict_subjects(self.config, model.application, model.fitted_state, subjects)

    def infer_files(
        self, input: str | os.PathLike, out_dir: str | os.PathLike, *, checkpoint: str | None = None
    ) -> Path:
        """Read an image file, a folder of images or a CSV table and write the predictions.

        Returns:
            the prediction table (``inferred.csv`` for segmentation) beside the written images.

        Raises:
            ConfigError: no trained run; an output folder inside the input folder.
        """
        from voxelflow.api.inputs import input_rows
        from voxelflow.engine.inference import predict_rows

        rows = input_rows(Path(input), self.config)
        if self._ensemble is not None:
            from voxelflow.cv.ensemble import ensemble_rows

            members, decision = self._ensemble
            return ensemble_rows(members, rows, out_dir=Path(out_dir),
                                 options=self.config.inference, postprocessing=decision)  # fmt: skip
        model = self._loaded(checkpoint)
        return predict_rows(
            self.config, model.application, model.fitted_state, rows, out_dir=Path(out_dir)
        )

    def evaluate(
        self,
        predictions: EvaluationInput,
        references: EvaluationInput,
        *,
        labels: Sequence[int] | None = None,
        metrics: Sequence[str] | None = None,
        tolerance_mm: float | None = None,
        out_dir: str | os.PathLike | None = None,
        as_dataframe: bool = False,
    ) -> Any:
        """Score predictions against references; one row per subject (and label).

        Args:
            predictions: :meth:`infer`'s list, a ``{subject: Image}`` mapping, or a folder.
            references: a ``{subject: Image}`` mapping, a list of :class:`Subject` s holding
                the reference role (``label``; ``target`` for regression), or a folder.
            labels: label values to score (segmentation); default ``evaluation.labels``.
            metrics: metric names (segmentation); default ``evaluation.metrics``.
            tolerance_mm: NSD tolerance; default ``evaluation.tolerance_mm``.
            out_dir: also write ``per_case.csv``, ``summary.csv`` and the report there.
            as_dataframe: return a pandas DataFrame (pandas must be installed).

        Returns:
            a list of dict rows (``subject``, ``label``, one key per metric) or a DataFrame.

        Raises:
            DataError: a prediction without reference (or the reverse), a failed subject.
            GeometryError: a prediction and its reference on different grids.
        """
        from voxelflow.api.evaluation import evaluation_table

        return evaluation_table(
            self.config,
            predictions,
            references,
            labels=labels,
            metrics=metrics,
            tolerance_mm=tolerance_mm,
            out_dir=out_dir,
            as_dataframe=as_dataframe,
        )

    def train_folds(
        self, folds: str | int = "all", *, force: bool = False
    ) -> dict[int, dict[str, float]]:
        """Train fold ``folds`` (a number or ``"all"``) of the k-fold split into
        ``run_dir/fold_K``, like ``voxelflow train --fold``; finished folds are skipped.

        Returns:
            fold → its last validation metrics.

        Raises:
            ConfigError: a fold outside ``0..split.folds-1``.
        """
        from voxelflow.cv.folds import train_folds

        self._members = None
        return train_folds(self.config, self.run_dir, folds, force=force)

    def cross_validate(
        self, *, train: bool = True, postprocessing: bool = True, report: bool = True
    ) -> Any:
        """The whole k-fold experiment, like ``voxelflow train --fold all`` then ``voxelflow cv``.

        Args:
            train: train the unfinished folds first (else an unfinished fold is an error).
            postprocessing: decide segmentation postprocessing from the out-of-fold predictions.
            report: write plots and ``report.html`` into ``run_dir/cv``.

        Returns:
            a :class:`voxelflow.cv.oof.CVResult`: ``metric``, ``value``, ``per_subject``,
            ``out_dir`` (``run_dir/cv``: ``per_case.csv``, ``summary.csv``, ``report.html``) and
            the ``postprocessing`` decision.

        Raises:
            VoxelflowError: a fold is unfinished and ``train`` is false (named, with the command).

        Example:
            >>> result = Experiment.from_yaml("exp.yaml").cross_validate()  # doctest: +SKIP
            >>> result.metric.name, round(result.value, 3)  # doctest: +SKIP
            ('dice', 0.874)
        """
        from voxelflow.cv.oof import run_cv

        if train:
            self.train_folds("all")
        return run_cv(self.config, self.run_dir, postprocessing=postprocessing, report=report)

    def _infer_folds(
        self, subjects: list[Subject], folds: str, checkpoint: str | None
    ) -> list[Prediction]:
        """In-memory ensemble of the fold runs (members loaded once and kept)."""
        from voxelflow.cv.ensemble import ensemble_predict, fold_members
        from voxelflow.engine.run import application_class

        key = (str(folds), checkpoint)
        cached = self._members
        if cached is None or cached[0] != key:
            cached = (key, fold_members(self.config, self.run_dir, str(folds), which=checkpoint))
            self._members = cached
        decision = application_class(self.config).postprocess_decision(self.run_dir)
        return list(
            ensemble_predict(cached[1], subjects, self.config.inference, postprocessing=decision)
        )

    # --- model loading --------------------------------------------------------------------------
    def _build_application(self, fitted_state: Mapping[str, Any]) -> Application:
        from voxelflow.engine.run import build_application

        return build_application(
            self.config,
            in_channels=len(self.config.dataset.inputs["image"]),
            label_values=fitted_state.get("label_values"),
            task_state=fitted_state.get("task") or {},
        )

    def _loaded(self, checkpoint: str | None) -> _LoadedModel:
        """The trained application of :attr:`run_dir` (loaded once, kept until :meth:`train`)."""
        from voxelflow.data.dataset import load_fitted_state
        from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
        from voxelflow.engine.inference import describe_checkpoint, load_application_state
        from voxelflow.engine.run import FITTED_STATE_FILE

        which = checkpoint or self.config.inference.checkpoint
        model = self._model
        if model is not None and (model.checkpoint is None or model.checkpoint == which):
            return model
        state_path = self.run_dir / FITTED_STATE_FILE
        if not state_path.is_file():
            raise ConfigError(
                f"expected a trained run folder with {FITTED_STATE_FILE}, got {str(self.run_dir)!r}: "
                "call train() first, or use Experiment.from_run / Experiment.from_model"
            )
        state = load_fitted_state(state_path)
        application = self._build_application(state)
        path = find_checkpoint(self.run_dir, which=which)
        loaded = load_checkpoint(path)
        load_application_state(application, loaded)
        log.info("inference with the %s checkpoint: %s", which, describe_checkpoint(path, loaded))
        self._model = _LoadedModel(application, state, str(self.run_dir), which)
        return self._model

    def __repr__(self) -> str:
        network = self.config.network.name
        return f"Experiment({self.config.application}, network={network!r}, run_dir={str(self.run_dir)!r})"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
