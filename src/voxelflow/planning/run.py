"""``voxelflow.plan(...)``: fingerprint a dataset, plan its configurations, write them.

Example:
    >>> import voxelflow
    >>> plan = voxelflow.plan(dataset="Task04_Hippocampus", out="plan")  # doctest: +SKIP
    >>> [c.name for c in plan.configurations]  # doctest: +SKIP
    ['2d', '3d_fullres']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voxelflow.applications.base import PlanningRules
from voxelflow.config.load import load_experiment
from voxelflow.config.schema import DatasetConfig, ExperimentConfig
from voxelflow.errors import ConfigError, MissingFileError
from voxelflow.io.folders import input_folders, refuse_inside_inputs
from voxelflow.io.table import SubjectRow, load_table, read_dataset_json
from voxelflow.planning.fingerprint import Fingerprint, fingerprint_dataset
from voxelflow.planning.planner import Plan, PlanOptions, plan_dataset, planning_rules
from voxelflow.planning.write import FINGERPRINT_FILE, write_plan

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: words that mark label files in a plain folder of scans
LABEL_WORDS = ("_label", "_seg", "_mask", "-label", "-seg", "_labels")


def dataset_section(dataset: PathLike, *, application: str) -> dict[str, Any]:
    """The ``dataset`` config section for a table, an MSD/nnU-Net folder or a folder of scans.

    A folder of scans pairs images and labels by name: label files carry one of
    :data:`LABEL_WORDS` (``brain1_label.nrrd``), images the rest (``brain1_image.nrrd``).

    Raises:
        MissingFileError: the path does not exist.
        ConfigError: a folder without label files for an application planned on label maps
            (segmentation).
    """
    path = Path(dataset).expanduser().resolve()
    if not path.exists():
        raise MissingFileError(
            f"plan --dataset: expected a table, folder or dataset.json, got {str(dataset)!r}"
        )
    if path.name == "dataset.json":
        path = path.parent
    if path.is_file():
        return {"csv": str(path)}
    if (path / "dataset.json").is_file():
        return {"msd": str(path)}
    names = [p.name for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
    word = next((w for w in LABEL_WORDS if any(w in n for n in names)), None)
    if word is None:
        if planning_rules(application).labels:
            raise ConfigError(
                f"plan --dataset {dataset}: no label files found (names containing one of "
                f"{list(LABEL_WORDS)}); give a table (CSV) with image and label columns instead"
            )
        return {"folders": {"image": {"path": str(path)}}, "inputs": {"image": ["image"]}}
    image_word = "_image" if any("_image" in n for n in names) else None
    image = {"path": str(path), "not_contains": [word]}
    if image_word:
        image = {"path": str(path), "contains": [image_word]}
    return {
        "folders": {"image": image, "label": {"path": str(path), "contains": [word]}},
        "inputs": {"image": ["image"], "label": ["label"]},
    }


def _modalities(experiment: ExperimentConfig, given: Mapping[int, str] | None) -> dict[int, str]:
    found: dict[int, str] = {}
    if experiment.dataset.msd is not None:
        info = read_dataset_json(Path(experiment.dataset.msd))
        names = info.get("channel_names") or info.get("modality") or {}
        found = {int(k): str(v) for k, v in names.items()}
    return {**found, **dict(given or {})}


def _roles(experiment: ExperimentConfig, rows: Sequence[SubjectRow]) -> dict[str, list[str]]:
    inputs = experiment.dataset.inputs
    if "image" not in inputs:
        raise ConfigError("dataset.inputs: plan needs an 'image' role")
    columns = list(inputs["image"])
    if experiment.dataset.msd is not None and rows and "image" not in rows[0].columns:
        columns = sorted(c for c in rows[0].columns if c.startswith("image_"))
    roles = {"image": columns}
    if planning_rules(experiment.application).labels:
        if "label" not in inputs:
            raise ConfigError(
                f"dataset.inputs: application {experiment.application!r} needs a 'label' role"
            )
        roles["label"] = list(inputs["label"])[:1]
    return roles


def plan(
    config: PathLike | Mapping[str, Any] | ExperimentConfig | None = None,
    *,
    dataset: PathLike | None = None,
    application: str | None = None,
    out: PathLike = "plan",
    gpu_memory: float = 8.0,
    device: str = "cuda",
    modalities: Mapping[int, str] | None = None,
    iterations: int | None = None,
    overrides: Sequence[str] = (),
    workers: int | None = None,
    progress: bool = True,
) -> Plan:
    """Fingerprint a dataset and write ``plan.json`` plus one commented YAML per configuration.

    Args:
        config: an experiment (YAML path, mapping or config) whose ``dataset`` section (and
            other choices) the plan starts from; or None with ``dataset``.
        dataset: a CSV table, an MSD / nnU-Net folder (``dataset.json``) or a folder of scans.
        application: the application (default: the config's, else segmentation).
        out: output folder (``fingerprint.json``, ``plan.json``, ``<configuration>.yaml``).
        gpu_memory: memory budget in GB of one training step (RAM with ``device="cpu"``).
        device: ``"cuda"`` or ``"cpu"``.
        modalities: channel → modality (e.g. ``{0: "CT"}``), overriding ``dataset.json``.
        iterations: training iterations written into every configuration.
        overrides: ``key=value`` overrides applied to the config before planning.
        workers: fingerprint worker processes (default: the available cores).
        progress: show the fingerprint progress bar.

    Returns:
        The :class:`~voxelflow.planning.planner.Plan` (also written to ``out``).

    Raises:
        ConfigError: neither or both of ``config`` and ``dataset``; an output folder inside the
            dataset's folders; a memory budget too small (with the minimum).
        DataError: unreadable files, grid mismatches, differing channel counts, no foreground.
    """
    if (config is None) == (dataset is None):
        raise ConfigError("plan: expected a config (-c) or a dataset (--dataset), exactly one")
    if config is not None:
        experiment = load_experiment(config, overrides)
        if application is not None and application != experiment.application:
            experiment = load_experiment(
                experiment.model_dump(mode="json") | {"application": application}
            )
    else:
        app = application or "segmentation"
        from_dataset = _planned(app).from_dataset
        if from_dataset is not True:
            raise ConfigError(f"plan --application {app}: {from_dataset}")
        section = dataset_section(dataset, application=app)  # type: ignore[arg-type]
        experiment = load_experiment({"application": app, "dataset": section}, overrides)
    out_dir = Path(out).expanduser()
    rows = load_table(experiment.dataset)
    roles = _roles(experiment, rows)
    folders = input_folders(
        row.path(c) for row in rows for c in roles["image"] + roles.get("label", [])
    )
    if experiment.dataset.folders:
        folders |= {Path(f.path) for f in experiment.dataset.folders.values()}
    refuse_inside_inputs(out_dir, folders, key="plan --out")
    fingerprint = fingerprint_dataset(
        rows,
        roles=roles,
        orientation=experiment.preprocessing.orientation,
        cache=out_dir / FINGERPRINT_FILE,
        workers=workers,
        progress=progress,
    )
    options = PlanOptions(
        application=experiment.application,
        device=device,
        memory_gb=float(gpu_memory),
        modalities=_modalities(experiment, modalities),
        iterations=iterations,
        orientation=experiment.preprocessing.orientation,
    )
    template = _template(experiment, out_dir)
    result = plan_dataset(fingerprint, template, options)
    write_plan(result, out_dir)
    return result


def _planned(application: str) -> PlanningRules:
    """The application's planning rules; an unknown name is refused as ``plan --application``."""
    from voxelflow.errors import RegistryError

    try:
        return planning_rules(application)
    except RegistryError as exc:
        raise ConfigError(f"plan --application: {exc}") from None


def _template(experiment: ExperimentConfig, out_dir: Path) -> dict[str, Any]:
    """The experiment as a plain dict, dataset paths absolute, one run folder per configuration."""
    data = experiment.model_dump(mode="json")
    section = DatasetConfig.model_validate(data["dataset"])
    for key in ("csv", "msd"):
        if getattr(section, key) is not None:
            data["dataset"][key] = str(Path(getattr(section, key)).expanduser().resolve())
    for _column, spec in (data["dataset"].get("folders") or {}).items():
        spec["path"] = str(Path(spec["path"]).expanduser().resolve())
    data["system"]["run_dir"] = str((out_dir / "runs").resolve())
    return data


def load_fingerprint(path: PathLike) -> Fingerprint:
    """Read a ``fingerprint.json`` written by :func:`plan`."""
    import json

    return Fingerprint.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
