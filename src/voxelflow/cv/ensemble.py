"""Ensembles of fold models: ``voxelflow infer -c X --folds all``.

Each member is a fold run (its own fitted preprocessing and best checkpoint). For every subject
the members run one after another and their outputs are *accumulated* in the input's original
geometry, so memory holds one running sum and one member's output at a time, never all members'
outputs. What is averaged is the application's declaration
(:attr:`~voxelflow.applications.base.Application.ensemble_mode`), never its name:

* ``"probabilities"`` (segmentation): class probabilities ``(K, *original)`` (after each
  member's flip-TTA / Monte-Carlo averaging when the config asks) are averaged **before** the
  argmax; the label values are the members' (checked equal); then the postprocessing decided by
  ``voxelflow cv`` (``cv/postprocessing.json``) or, without it, the config's ``inference``
  postprocessing; scored by the mean foreground Dice;
* ``"image"`` (regression, incl. super-resolution): the image
  :attr:`~voxelflow.applications.base.Application.output_column` of each member's prediction,
  in the input's units, is averaged; scored by the MAE;
* ``"class_probabilities"`` (classification): class probabilities are averaged (values: the
  decoded values are averaged).

Members are scored against the subject's
:attr:`~voxelflow.applications.base.Application.reference_role` image when it has one.
Applications with an ``ensemble_refusal`` (autoencoders, GANs: reconstructions through one
model's latent space, samples from one generator are not estimates of one quantity that
averaging improves) are refused with it, and an application declaring no mode is refused by
name. Members of different applications or label sets are refused, naming both members.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from voxelflow.applications import APPLICATIONS
from voxelflow.applications.base import Application, Prediction
from voxelflow.config.schema import ExperimentConfig
from voxelflow.cv.folds import fold_count, fold_dir, fold_experiment, parse_folds
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.config.schema import InferenceConfig
    from voxelflow.io.image import Image, Subject
    from voxelflow.io.table import SubjectRow

log = logging.getLogger(__name__)

#: the values of ``Application.ensemble_mode`` this module averages (see the module docstring)
ENSEMBLE_MODES = ("probabilities", "image", "class_probabilities")


@dataclass
class Member:
    """One ensemble member: a trained fold (or run) ready for inference.

    Attributes:
        name: ``fold_K`` or the run folder.
        experiment: the member's experiment (its run folder and split).
        application: the built application with its weights, in eval mode on its device
            (what its ensemble mode reads: ``label_values`` and ``decode`` for probabilities,
            ``encoding`` and ``predict_output`` for class probabilities).
        fitted_state: the member's fitted preprocessing state.
        context: device and precision.
    """

    name: str
    experiment: ExperimentConfig
    application: Any
    fitted_state: dict[str, Any]
    context: Any


def refuse_application(application: str) -> str:
    """Refuse ensembling for applications where averaging is undefined or not declared.

    Args:
        application: the config's ``application`` (a registered name or a plugin path).

    Returns:
        the application's :attr:`~voxelflow.applications.base.Application.ensemble_mode`.

    Raises:
        ConfigError: ``--folds: ensembling is not defined for application 'autoencoder':
            (its ensemble_refusal)``, or an application that declares no ensemble_mode.
    """
    app_class = APPLICATIONS.get(application)
    advice = "infer with one fold's config instead (-c RUN_DIR/fold_K/config.yaml)"
    if app_class.ensemble_refusal:
        raise ConfigError(
            f"--folds: ensembling is not defined for application {application!r}: "
            f"{app_class.ensemble_refusal}; {advice}"
        )
    mode = app_class.ensemble_mode
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(
            f"--folds: application {application!r} ({app_class.__name__}) declares no "
            f"ensemble_mode (expected one of {list(ENSEMBLE_MODES)}, got {mode!r}): set "
            "Application.ensemble_mode to how its models' outputs are averaged, or "
            f"ensemble_refusal to why they cannot be; {advice}"
        )
    return mode


def _app_class(member: Member) -> type[Application]:
    """The member's application class, through the registry (plugins included)."""
    return APPLICATIONS.get(member.experiment.application)


def load_member(
    name: str, experiment: ExperimentConfig, run_dir: Path, *, which: str = "best"
) -> Member:
    """Build a member from a run folder (its ``preprocessing.json`` and checkpoint)."""
    from voxelflow.data.dataset import load_fitted_state
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
    from voxelflow.engine.inference import (
        check_mode,
        describe_checkpoint,
        inference_context,
        load_application_state,
    )
    from voxelflow.engine.run import FITTED_STATE_FILE, build_application

    state_path = Path(run_dir) / FITTED_STATE_FILE
    if not state_path.is_file():
        raise ConfigError(f"{name}: expected a trained run folder with {state_path}, found none")
    state = load_fitted_state(state_path)
    app = build_application(
        experiment, in_channels=len(experiment.dataset.inputs["image"]),
        label_values=state.get("label_values"), task_state=state.get("task") or {},
    )  # fmt: skip
    path = find_checkpoint(run_dir, which=which)
    checkpoint = load_checkpoint(path)
    load_application_state(app, checkpoint, source=str(path))
    check_mode(experiment, app)
    log.info("ensemble member %s: %s", name, describe_checkpoint(path, checkpoint))
    return Member(name, experiment, app, state, inference_context(experiment, app))


def fold_members(
    experiment: ExperimentConfig, root: Path, folds: str = "all", *, which: str | None = None
) -> list[Member]:
    """The trained folds of ``root`` as members (``folds``: ``all`` or ``0,2,3``).

    Raises:
        ConfigError: an autoencoder/GAN, a fold without checkpoint, members that differ.
    """
    refuse_application(experiment.application)
    count = fold_count(experiment)
    chosen: list[int] = []
    for part in str(folds).split(","):
        chosen += parse_folds(part, count, option="--folds")
    members = []
    for fold in sorted(set(chosen)):
        run = fold_dir(root, fold)
        config = _saved_config(run, fold_experiment(experiment, root, fold))
        members.append(
            load_member(f"fold_{fold}", config, run, which=which or experiment.inference.checkpoint)
        )
    check_compatible(members)
    return members


def entry_members(entry: Any, experiment: ExperimentConfig) -> list[Member]:
    """The members of a packed ensemble zoo entry (``files.members``), built as
    :func:`fold_members` builds the folds: each with its own weights and fitted state, the
    entry's config (and this invocation's ``inference.*`` / ``system.*`` overrides).

    Raises:
        ConfigError: an autoencoder/GAN, members that differ (label sets, classes).
        CheckpointError: weights that do not fit (see ``load_entry_modules``).
    """
    import json

    from voxelflow.engine.inference import check_mode, inference_context
    from voxelflow.zoo.network import build_application_for, load_entry_modules
    from voxelflow.zoo.store import member_models

    refuse_application(experiment.application)
    if entry.card.application != experiment.application:
        raise ConfigError(
            f"zoo entry {entry.name!r}: its card says {entry.card.application!r}, its config "
            f"{experiment.application!r}"
        )
    members = []
    for name, model in member_models(entry):
        state = {}
        if model.fitted_state_path is not None:
            state = json.loads(model.fitted_state_path.read_text(encoding="utf-8"))
        app = build_application_for(experiment, state)
        load_entry_modules(app, model)
        check_mode(experiment, app)
        log.info("ensemble member %s of zoo entry %s", name, entry.name)
        members.append(Member(name, experiment, app, state, inference_context(experiment, app)))
    check_compatible(members)
    return members


def entry_decision(entry: Any) -> dict[str, Any] | None:
    """A packed ensemble's postprocessing decision (segmentation), or None."""
    path = entry.card.files.postprocessing
    if not path or not APPLICATIONS.get(entry.card.application).decides_postprocessing:
        return None
    return json.loads((entry.path / path).read_text(encoding="utf-8"))


def _saved_config(run: Path, fallback: ExperimentConfig) -> ExperimentConfig:
    """The member's own saved config (its application, label set), the inference options of
    ``fallback`` (this invocation's ``--set inference.*``)."""
    from voxelflow.config.load import load_experiment

    if not (run / "config.yaml").is_file():
        raise ConfigError(
            f"{run}: expected a trained fold run folder with config.yaml; train it with "
            f"voxelflow train -c CONFIG --fold {run.name.removeprefix('fold_')}"
        )
    saved = load_experiment(run / "config.yaml")
    return saved.model_copy(update={"inference": fallback.inference, "system": fallback.system})


def _signature(member: Member) -> tuple[str, Any]:
    app, mode = member.application, _app_class(member).ensemble_mode
    if mode == "probabilities":
        return "label values", [int(v) for v in app.label_values]
    if mode == "class_probabilities":
        return "classes", (app.encoding.kind, list(app.encoding.classes))
    return "outputs", getattr(app, "out_channels", None)


def check_compatible(members: Sequence[Member]) -> None:
    """Refuse members of different applications or label sets, naming both members.

    Raises:
        ConfigError: ``--folds: fold_0 is a segmentation with label values [0, 1], fold_2 ...``.
    """
    if not members:
        raise ConfigError("--folds: expected at least one member")
    first = members[0]
    for other in members[1:]:
        if other.experiment.application != first.experiment.application:
            raise ConfigError(
                f"--folds: members of one application expected, got {first.name} "
                f"({first.experiment.application}) and {other.name} ({other.experiment.application})"
            )
        what, mine = _signature(first)
        _, theirs = _signature(other)
        if mine != theirs:
            raise ConfigError(
                f"--folds: members with one label set expected, got {what} {mine} ({first.name}) "
                f"and {theirs} ({other.name})"
            )


def _member_output(
    member: Member, subject: Subject, options: InferenceConfig
) -> tuple[torch.Tensor, Image | None]:
    """One member's output of one subject, in the original geometry (or a class vector).

    Returns:
        ``(tensor, template)``: probabilities ``(K, *original)`` / values ``(C, *original)`` /
        class probabilities ``(K,)`` (or a decoded value ``(1,)``), and the Image (or None) whose
        grid the tensor is on.
    """
    from voxelflow.engine.inference import prepare_items

    item = next(prepare_items(member.experiment, member.fitted_state, [subject]))
    app, ctx, app_class = member.application, member.context, _app_class(member)
    with torch.no_grad():
        if app_class.ensemble_mode == "probabilities":
            plain = options.model_copy(
                update={"save_probabilities": True, "uncertainty": "none",
                        "keep_largest_component": False, "min_component_volume_mm3": 0.0,
                        "fill_holes": False}
            )  # fmt: skip
            prob = app.predict(item, ctx, plain).images["prob"]
            return prob.data.float(), prob
        if app_class.ensemble_mode == "image":
            image = _averaged_image(app_class, app.predict(item, ctx, options))
            return image.data.float(), image
        output = app.predict_output(item.processed["image"].data.float(), ctx)
        if app.encoding.kind == "value":
            return torch.tensor([app.encoding.decode_value(float(output[0]))]), None
        return output.float(), None


def _averaged_image(app_class: type[Application], prediction: Prediction) -> Image:
    """The image an ``"image"`` ensemble averages, or a ConfigError naming the declaration."""
    name = app_class.output_column
    if name not in prediction.images:
        raise ConfigError(
            f"--folds: application {app_class.name!r} ({app_class.__name__}) declares "
            f"output_column {name!r}, but its predictions hold images {sorted(prediction.images)}"
        )
    return prediction.images[name]


def ensemble_predict(
    members: Sequence[Member],
    subjects: Iterable[Subject],
    options: InferenceConfig,
    *,
    postprocessing: dict[str, Any] | None = None,
    scores: dict[str, dict[str, float]] | None = None,
) -> Iterator[Prediction]:
    """Average the members subject by subject (one running sum at a time).

    Args:
        members: compatible members (:func:`check_compatible`).
        subjects: :class:`~voxelflow.io.image.Subject` s as read (original geometry).
        options: the inference config (TTA, ``save_probabilities``, postprocessing).
        postprocessing: a ``cv/postprocessing.json`` decision, applied to segmentations.
        scores: when given, filled with ``subject → {member name or "ensemble": score}`` for
            subjects that hold a reference (segmentation: mean foreground Dice of each member's
            own argmax and of the ensemble; regression: MAE), at no extra inference.

    Yields:
        one :class:`~voxelflow.applications.base.Prediction` per subject.
    """
    app_class = _app_class(members[0])
    for subject in subjects:
        total, template = None, None
        reference = _reference(members[0], subject) if scores is not None else None
        row: dict[str, float] = {}
        for member in members:  # one after another: bounded memory
            output, image = _member_output(member, subject, options)
            if reference is not None:
                # each member is scored as it would be used alone: argmax + the same postprocessing
                row[member.name] = _score(
                    member,
                    output,
                    reference,
                    postprocessing=postprocessing,
                    spacing=subject["image"].spacing,
                )
            total = output if total is None else total.add_(output)
            if template is None:
                template = image
            del output
        assert total is not None
        mean = total / len(members)
        if app_class.ensemble_mode == "class_probabilities":
            yield _classification(members[0], subject.name, mean)
            continue
        prediction, ensemble, decoded = _combined(
            members[0], subject, mean, template, options, postprocessing
        )
        if reference is not None:
            row["ensemble"] = _score(members[0], ensemble, reference, decoded=decoded)
            if scores is not None:
                scores[subject.name] = row
        yield prediction


def _combined(
    first: Member,
    subject: Subject,
    mean: torch.Tensor,
    template: Image | None,
    options: InferenceConfig,
    decision: dict[str, Any] | None,
) -> tuple[Prediction, torch.Tensor, bool]:
    """The ensemble's prediction of one subject from the members' mean output, and what is
    scored: ``(prediction, label map or averaged image, whether it is already decoded)``.

    Shape:
        mean: ``(K, *original)`` probabilities or ``(C, *original)`` images.
    """
    app_class = _app_class(first)
    if app_class.ensemble_mode == "probabilities":
        prediction = _segmentation(first, subject, mean, template, options, decision)
        return prediction, prediction.images["seg"].data, True
    assert template is not None  # an "image" member's output is an Image
    averaged = {app_class.output_column: template.with_data(mean)}
    return Prediction(subject.name, averaged), mean, False


def _classification(first: Member, name: str, mean: torch.Tensor) -> Prediction:
    """The table row of averaged class probabilities ``(K,)`` (or of an averaged value ``(1,)``)."""
    encoding = first.application.encoding
    if encoding.kind == "value":
        return Prediction(name, values={"prediction": float(mean[0])})
    values: dict[str, Any] = {"prediction": encoding.classes[int(mean.argmax())]}
    values.update({f"prob_{c}": round(float(p), 6) for c, p in zip(encoding.classes, mean)})
    return Prediction(name, values=values)


def _reference(member: Member, subject: Subject) -> torch.Tensor | None:
    """The subject's reference on its original grid (the application's ``reference_role``:
    label map, regression target), or None: class vectors are not scored here."""
    app_class = _app_class(member)
    # super-resolution's reference is the high-resolution image, absent when the input is low-res
    role = app_class.reference_role
    if app_class.ensemble_mode not in ("probabilities", "image") or role not in subject.images:
        return None
    return subject[role].data


def _score(
    member: Member,
    output: torch.Tensor,
    reference: torch.Tensor,
    *,
    decoded: bool = False,
    postprocessing: dict[str, Any] | None = None,
    spacing: Sequence[float] = (),
) -> float:
    """Mean foreground Dice of a probability map's argmax (or of label values), or the MAE.

    A member's probabilities ``(K, *spatial)`` are decoded and, when given, the ``postprocessing``
    decision is applied, as for the ensemble.
    """
    import math

    from voxelflow.metrics.overlap import dice

    if _app_class(member).ensemble_mode == "image":
        return float((output.float() - reference.float()).abs().mean())
    labels = output if decoded else member.application.decode(output[None])[0]
    if not decoded and postprocessing is not None:
        from voxelflow.cv.postprocess import apply_postprocessing

        labels = torch.from_numpy(apply_postprocessing(labels.numpy(), postprocessing, spacing))
    values = [int(v) for v in member.application.label_values if int(v) != 0]
    scores = [dice((labels[0] == v).numpy(), (reference[0] == v).numpy()) for v in values]
    finite = [x for x in scores if not math.isnan(x)]
    return sum(finite) / len(finite) if finite else math.nan


def summarize_scores(
    scores: dict[str, dict[str, float]], members: Sequence[Member]
) -> dict[str, Any]:
    """The ensemble against its members on the scored subjects (means over subjects)."""
    import math

    def mean(name: str) -> float:
        values = [row[name] for row in scores.values() if not math.isnan(row.get(name, math.nan))]
        return sum(values) / len(values) if values else math.nan

    higher = _app_class(members[0]).ensemble_mode == "probabilities"
    per_member = {m.name: mean(m.name) for m in members}
    best = (max if higher else min)(per_member, key=lambda name: per_member[name])
    return {
        "metric": "dice" if higher else "mae",
        "higher_is_better": higher,
        "subjects": len(scores),
        "ensemble": mean("ensemble"),
        "members": per_member,
        "members_mean": sum(per_member.values()) / len(per_member),
        "best_member": best,
        "best": per_member[best],
        "per_subject": scores,
    }


def _segmentation(
    first: Member, subject: Subject, mean: torch.Tensor, template: Image | None,
    options: InferenceConfig, decision: dict[str, Any] | None,
) -> Prediction:  # fmt: skip
    from voxelflow.applications.segmentation.postprocess import postprocess_labels
    from voxelflow.cv.postprocess import apply_postprocessing
    from voxelflow.io.image import Image

    source = subject["image"]
    label = first.application.decode(mean[None])[0].to(torch.int16).numpy()
    if decision is not None:
        label = apply_postprocessing(label, decision, source.spacing)
    elif options.keep_largest_component or options.min_component_volume_mm3 or options.fill_holes:
        label = postprocess_labels(
            label, keep_largest=options.keep_largest_component,
            min_volume_mm3=options.min_component_volume_mm3, fill_holes=options.fill_holes,
            spacing=source.spacing,
        )  # fmt: skip
    seg = Image(torch.from_numpy(label), source.affine.copy(), kind="label", meta=dict(source.meta))
    images = {"seg": seg}
    if options.save_probabilities and template is not None:
        images["prob"] = template.with_data(mean)
    return Prediction(subject.name, images)


def ensemble_rows(
    members: Sequence[Member],
    rows: Sequence[SubjectRow],
    *,
    out_dir: Path,
    options: InferenceConfig,
    postprocessing: dict[str, Any] | None = None,
) -> Path:
    """Read each row, ensemble, write ``<subject>_<suffix>.nii.gz`` and the prediction table."""
    from voxelflow.data.subject import refuse_output_inside_dataset
    from voxelflow.engine.inference import read_subject, write_prediction, write_table

    experiment = members[0].experiment
    # the one output-folder rule, as for single-model inference
    refuse_output_inside_dataset(out_dir, experiment, rows, what="inference output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    subjects = (read_subject(row, experiment) for row in rows)
    written = []
    scores: dict[str, dict[str, float]] = {}
    predictions = ensemble_predict(members, subjects, options, postprocessing=postprocessing,
                                   scores=scores)  # fmt: skip
    for prediction in predictions:
        written.append(write_prediction(prediction, out_dir))
        log.info("%s → %s (%d members)", prediction.name, out_dir, len(members))
    table = write_table(out_dir / members[0].application.prediction_table, written)
    if scores:
        summary = summarize_scores(scores, members)
        (out_dir / "ensemble_vs_members.json").write_text(
            json.dumps(summary, indent=1, allow_nan=True)
        )
        print(
            f"{summary['subjects']} subject(s) with references: {summary['metric']} of the ensemble "
            f"{summary['ensemble']:.4f}; members' mean {summary['members_mean']:.4f}; best member "
            f"{summary['best_member']} {summary['best']:.4f}"
        )
    return table
