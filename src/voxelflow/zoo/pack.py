"""Build a zoo entry (folder, ``.zip`` or ``.tar.gz``) from a run folder.

Example:
    >>> pack_run("runs/brain", out="brain.zip", card={"license": "CC-BY-4.0"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import yaml
from pydantic import ValidationError

from voxelflow.errors import ConfigError, DataError
from voxelflow.types import PathLike
from voxelflow.version import __version__
from voxelflow.zoo.archive import archive_kind, relative_files
from voxelflow.zoo.entry import CARD_NAME, ModelCard, dump_card, sha256_of

if TYPE_CHECKING:
    from voxelflow.applications.base import Application
    from voxelflow.config.schema import ExperimentConfig

logger = logging.getLogger(__name__)


def pack_run(
    run_dir: PathLike,
    *,
    out: PathLike,
    name: str | None = None,
    version: str = "1.0.0",
    card: Mapping[str, Any] | None = None,
    which: str = "best",
    weights_format: str = "pt",
    plugins: Sequence[PathLike] = (),
    folds: str | None = None,
    precision: str = "float32",
) -> Path:
    """Pack a run folder's resolved config, chosen checkpoint and fitted state as a zoo entry.

    Any application packs: its modules are rebuilt from the config and the fitted state and the
    checkpoint is loaded into them strictly; the entry keeps the weights of every module
    inference needs (``Application.inference_modules``, default: all of them), one file per
    module. The fitted state (with the application's task state under ``"task"``) goes into
    ``preprocessing.json``; the config is scrubbed of machine-specific paths
    (:func:`scrub_config`).

    Args:
        run_dir: the run folder (``config.yaml`` + ``checkpoints/``).
        out: ``*.zip``, ``*.tar.gz`` or a new folder.
        name: entry name (default: the run folder's name).
        version: entry version.
        card: extra card fields merged over the generated ones (description, license,
            citation, training_data, ``outputs: {labels: {1: liver}}`` ...); unknown keys refused.
        which: ``"best"`` or ``"last"`` checkpoint.
        weights_format: ``"pt"`` or ``"safetensors"``.
        precision: ``"float32"`` or ``"float16"`` (half the size; loaded back into float32
            parameters, so predictions differ only by the rounding of the weights).
        plugins: ``.py`` files shipped as plugin code.
        folds: ``"all"`` or ``"0,2"``: ``run_dir`` is a cross-validation run folder and the
            entry is the ensemble of its fold runs ``run_dir/fold_K`` (one card, every member's
            weights and fitted state, ``cv/postprocessing.json``, ``cv/summary.csv`` means as
            ``cv_*`` metrics); see :func:`voxelflow.zoo.pack_ensemble.pack_folds`.

    Returns:
        The written entry path.

    Raises:
        CheckpointError: no checkpoint, or weights that do not fit the configured modules.
        ConfigError: an invalid card (unknown keys, bad name ...).

    Example:
        >>> pack_run("runs/liver", out="liver_ct.zip", card={"license": "CC-BY-4.0"})  # doctest: +SKIP
        PosixPath('liver_ct.zip')
    """
    from voxelflow.zoo.network import application_from_run

    if weights_format not in ("pt", "safetensors"):
        raise ConfigError(f"weights format: expected 'pt' or 'safetensors', got {weights_format!r}")
    if precision not in WEIGHT_PRECISIONS:
        raise ConfigError(
            f"precision: expected one of {sorted(WEIGHT_PRECISIONS)}, got {precision!r}"
        )
    if folds is not None:
        from voxelflow.zoo.pack_ensemble import pack_folds

        return pack_folds(
            run_dir, out=out, folds=folds, name=name, version=version, card=card, which=which,
            weights_format=weights_format, plugins=plugins, precision=precision,
        )  # fmt: skip
    run_dir, out = Path(run_dir), Path(out)
    application, experiment, checkpoint, fitted = application_from_run(run_dir, which=which)
    entry_name = _entry_name(name or run_dir.resolve().name)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pack-", dir=out.parent))
    try:
        config = scrub_config(_read_yaml(run_dir / "config.yaml"), entry_name=entry_name)
        (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        files = _write_files(staging, application, fitted, weights_format, plugins, precision)
        generated = _generated_card(
            application, experiment, checkpoint, fitted, entry_name, version
        )
        generated["files"] = files
        generated["requires"]["torch"] = required_torch(weights_format)
        evaluated, names = evaluation_figures(run_dir / "evaluation")
        generated["metrics"].update(evaluated)
        labels = generated["outputs"]["labels"]
        values = generated["outputs"].get("label_values") or []
        for index, value in enumerate(values):  # class index → the evaluation's label name
            if value in names and index in labels:
                labels[index] = names[value]
        data = _merge(generated, dict(card or {}))
        model_card = _validated(data)
        (staging / "README.md").write_text(readme_text(model_card), encoding="utf-8")
        digests = {path: sha256_of(staging / path) for path in relative_files(staging)}
        dump_card(model_card.model_copy(update={"sha256": digests}), staging / CARD_NAME)
        _emit(staging, out, model_card.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    from voxelflow.engine.inference import checkpoint_summary

    logger.info(
        "packed %s as zoo entry %s %s from the %s checkpoint (%s)",
        run_dir, model_card.name, out, which,
        checkpoint_summary(checkpoint),
    )  # fmt: skip
    from voxelflow.engine.logging import log_artifacts

    log_artifacts(run_dir, {"zoo": out})  # logging.mlflow: the entry joins the run's MLflow run
    return out


#: what replaces machine-specific paths in a packed config (see :func:`scrub_config`).
NOT_SHIPPED = "<not shipped: set your own>"


def scrub_config(config: Mapping[str, Any], *, entry_name: str) -> dict[str, Any]:
    """The resolved config without the paths of the machine it was trained on.

    Inference reads none of them. Replaced: ``dataset.csv``, ``dataset.msd``, the ``path`` of
    every ``dataset.folders`` pattern, ``split.file`` and a file-path ``transfer.init_from.source``
    → ``"<not shipped: set your own>"``; ``system.run_dir`` → ``runs/<entry name>``;
    ``preprocessing.cache_dir`` → null (the default, under the run folder). Any other absolute
    path left in the config is logged as a warning.

    Args:
        config: the resolved config as a plain mapping (``config.yaml`` of a run).
        entry_name: the entry's name (for the neutral run folder).

    Returns:
        A scrubbed copy.
    """
    scrubbed = json.loads(json.dumps(config, default=str))  # deep copy of plain data
    dataset = scrubbed.get("dataset") or {}
    for key in ("csv", "msd"):
        if dataset.get(key):
            dataset[key] = NOT_SHIPPED
    for pattern in (dataset.get("folders") or {}).values():
        if isinstance(pattern, dict) and pattern.get("path"):
            pattern["path"] = NOT_SHIPPED
    if (scrubbed.get("split") or {}).get("file"):
        scrubbed["split"]["file"] = NOT_SHIPPED
    init_from = (scrubbed.get("transfer") or {}).get("init_from") or {}
    if _looks_like_path(str(init_from.get("source", ""))):
        init_from["source"] = NOT_SHIPPED
    if "system" in scrubbed:
        scrubbed["system"]["run_dir"] = f"runs/{entry_name}"
    if "preprocessing" in scrubbed:
        scrubbed["preprocessing"]["cache_dir"] = None
    for key, value in _leaves(scrubbed):
        if isinstance(value, str) and _looks_like_path(value) and Path(value).is_absolute():
            logger.warning("packed config keeps the absolute path %s = %r", key, value)
    return scrubbed


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith((".pt", ".safetensors", ".ckpt"))


def _leaves(data: object, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [item for k, v in data.items() for item in _leaves(v, f"{prefix}{k}.")]
    if isinstance(data, list):
        return [item for i, v in enumerate(data) for item in _leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), data)]


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def _entry_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("._-") or "model"


#: how floating-point weights are stored in an entry
WEIGHT_PRECISIONS = {"float32": torch.float32, "float16": torch.float16}


def _write_files(
    staging: Path,
    application: Application,
    fitted: Mapping[str, Any] | None,
    weights_format: str,
    plugins: Sequence[PathLike],
    precision: str = "float32",
) -> dict[str, Any]:
    from voxelflow.zoo.network import inference_module_names

    (staging / "weights").mkdir()
    weights = {}
    for module in inference_module_names(application):
        state = application.modules[module].state_dict()
        file = f"weights/{module}.{weights_format}"
        dtype = WEIGHT_PRECISIONS[precision]
        tensors = {
            key: value.detach()
            .cpu()
            .to(dtype if value.is_floating_point() else value.dtype)
            .contiguous()
            .clone()
            for key, value in state.items()
        }
        if weights_format == "safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(staging / file))
        else:
            torch.save(tensors, staging / file)
        weights[module] = file
    files: dict[str, Any] = {"config": "config.yaml", "weights": weights, "readme": "README.md"}
    if fitted is not None:
        (staging / "preprocessing.json").write_text(json.dumps(fitted, indent=1), encoding="utf-8")
        files["preprocessing"] = "preprocessing.json"
    if plugins:
        files["plugins"] = copy_plugins(staging, plugins)
    return files


def copy_plugins(staging: Path, plugins: Sequence[PathLike]) -> list[str]:
    """Copy plugin ``.py`` files into ``staging/plugins``; returns their entry paths."""
    (staging / "plugins").mkdir()
    for plugin in map(Path, plugins):
        if plugin.suffix != ".py" or not plugin.is_file():
            raise DataError(f"plugin: expected an existing .py file, got {str(plugin)!r}")
        shutil.copyfile(plugin, staging / "plugins" / plugin.name)
    return [f"plugins/{Path(plugin).name}" for plugin in plugins]


def required_torch(weights_format: str) -> str:
    """The torch version an entry needs: voxelflow's own lower bound for safetensors weights
    (read without ``torch.load``), the packer's version for pickled ``.pt`` weights."""
    if weights_format == "safetensors":
        return _declared_torch_lower_bound() or torch.__version__.split("+")[0]
    return torch.__version__.split("+")[0]


def _declared_torch_lower_bound() -> str | None:
    """``2.4`` from voxelflow's installed requirement ``torch>=2.4``, or None."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        requirements = requires("voxelflow") or []
    except PackageNotFoundError:
        return None
    for requirement in requirements:
        match = re.match(r"^torch\s*>=\s*([0-9][0-9.]*)", requirement)
        if match:
            return match.group(1)
    return None


def _generated_card(
    application: Application,
    experiment: ExperimentConfig,
    checkpoint: Mapping[str, Any],
    fitted: Mapping[str, Any] | None,
    name: str,
    version: str,
) -> dict[str, Any]:
    from voxelflow.zoo.network import describe_network

    shape = describe_network(application, experiment)
    preprocessing = experiment.preprocessing
    label_values = preprocessing.label_values or (fitted or {}).get("label_values")
    return {
        "name": name,
        "version": version,
        "application": str(experiment.application),
        "requires": {
            "voxelflow": __version__.split("+")[0],
            "torch": torch.__version__.split("+")[0],
        },
        "inputs": {
            "modalities": list(experiment.dataset.inputs.get("image", [])),
            "orientation": preprocessing.orientation,
            "spacing": preprocessing.spacing,
            "normalization": [step.name for step in preprocessing.normalization],
            "intensity": intensity_assumption(preprocessing.normalization),
            "spatial_dims": shape.spatial_dims,
            "window": list(experiment.sampling.window),
        },
        "outputs": {
            "channels": shape.out_channels,
            "labels": _output_labels(application, shape.out_channels, fitted),
            "label_values": list(label_values) if label_values else None,
        },
        "network": {
            **experiment.network.model_dump(mode="json"),
            "spatial_dims": shape.spatial_dims,
            "in_channels": shape.in_channels,
            "out_channels": shape.out_channels,
        },
        "metrics": _best_metric(checkpoint, experiment),
    }


def evaluation_figures(folder: Path) -> tuple[dict[str, float], dict[int, str]]:
    """Mean per label and metric from a run's ``evaluation/summary.csv`` (``test_<metric>_<label>``)
    and the label names of its ``per_case.csv``; empty when the run was not evaluated."""
    import csv

    figures: dict[str, float] = {}
    names: dict[int, str] = {}
    per_case = folder / "per_case.csv"
    if per_case.is_file():
        with per_case.open(newline="", encoding="utf-8") as stream:
            for row in csv.DictReader(stream):
                if row.get("label_name") and str(row.get("label", "")).lstrip("-").isdigit():
                    names[int(row["label"])] = row["label_name"]
    summary = folder / "summary.csv"
    if summary.is_file():
        with summary.open(newline="", encoding="utf-8") as stream:
            for row in csv.DictReader(stream):
                label, metric, mean = (
                    row.get("label", ""),
                    row.get("metric", ""),
                    row.get("mean", ""),
                )
                try:
                    value = float(mean)
                except ValueError:
                    continue
                if value == value and metric:
                    name = names.get(int(label), label) if label.lstrip("-").isdigit() else label
                    figures[f"test_{metric}_{name}"] = value
    return figures, names


def intensity_assumption(steps: Sequence[Any]) -> str | None:
    """What the normalisation says about the input intensities, in words (None: nothing)."""
    names = [step.name for step in steps]
    if "ct" in names or "ct_window" in names:
        return "CT in Hounsfield units (air at -1000)"
    if any(step.name == "zscore" and step.kwargs.get("mask") == "body" for step in steps):
        return "MR-like (any scale: z-scored inside the body; zero and noisy backgrounds alike)"
    return None


def _output_labels(
    application: Application, channels: int, fitted: Mapping[str, Any] | None
) -> dict[int, str]:
    """Class index → name: a classification task's classes, ``class_<i>`` for segmentation."""
    task = (fitted or {}).get("task") or {}
    if task.get("kind") == "class" and task.get("classes"):
        return {index: str(label) for index, label in enumerate(task["classes"])}
    if isinstance(getattr(application, "num_classes", None), int):
        return {index: f"class_{index}" for index in range(channels)}
    return {}


def _best_metric(checkpoint: Mapping[str, Any], experiment: ExperimentConfig) -> dict[str, float]:
    """The packed checkpoint's validation metrics, and the run's best value of ``best_metric``."""
    figures = {
        f"validation_{key}": float(value)
        for key, value in (checkpoint.get("metrics") or {}).items()
        if isinstance(value, int | float) and value == value
    }
    trainer_state = checkpoint.get("trainer_state") or {}
    for key in ("best_metric", "best_value"):
        best = trainer_state.get(key) if isinstance(trainer_state, Mapping) else None
        if isinstance(best, int | float) and best == best and abs(best) != float("inf"):
            figures[experiment.training.best_metric] = float(best)
            break
    return figures


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "labels":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validated(data: Mapping[str, Any]) -> ModelCard:
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"zoo card: {problems}") from exc


def _emit(staging: Path, out: Path, name: str) -> None:
    kind = archive_kind(out)
    if kind is None:
        if out.exists():
            raise DataError(
                f"expected a new folder or a .zip/.tar.gz path, got existing {str(out)!r}"
            )
        shutil.copytree(staging, out, ignore=shutil.ignore_patterns(".*"))
        return
    handle, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(handle)
    try:
        files = relative_files(staging)
        if kind == "zip":
            with zipfile.ZipFile(temp_name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for file in files:
                    archive.write(staging / file, f"{name}/{file}")
        else:
            mode: Literal["w:gz", "w"] = "w:gz" if not str(out).endswith(".tar") else "w"
            with tarfile.open(temp_name, mode) as archive:
                for file in files:
                    archive.add(staging / file, f"{name}/{file}")
        os.replace(temp_name, out)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def readme_text(card: ModelCard) -> str:
    """A Markdown README generated from the card."""
    labels = "\n".join(f"| {index} | {label} |" for index, label in card.outputs.labels.items())
    metrics = (
        ", ".join(f"{key} = {value:.4g}" for key, value in card.metrics.items()) or "not recorded"
    )
    inputs = card.inputs
    return (
        f"# {card.name} {card.version}\n\n{card.description or '(no description)'}\n\n"
        f"- application: {card.application}\n- network: {card.network.get('name', '?')}\n"
        f"- inputs: {', '.join(inputs.modalities) or '?'}; orientation {inputs.orientation}; "
        f"spacing {inputs.spacing}; normalisation {', '.join(inputs.normalization) or 'none'}\n"
        f"- intensities: {inputs.intensity or 'not stated'}\n"
        f"- training data: {card.training_data or 'not described'}\n- metrics: {metrics}\n"
        f"- checked on: {card.checked_on or 'not stated'}\n"
        f"- limitations: {card.limitations or 'not stated'}\n"
        f"- licence: {card.license}\n- requires: voxelflow >= {card.requires.voxelflow}, "
        f"torch >= {card.requires.torch}\n\n| class | label |\n|---|---|\n{labels}\n\n"
        f"## Citation\n\n{card.citation or 'none given'}\n\n## Use\n\n"
        f"```\nvoxelflow zoo install <this archive>\n"
        f"voxelflow infer --model {card.name} --input IMAGES/ --out PREDICTIONS/\n```\n"
    )
