"""Pack the fold runs of a cross-validation run folder as one ensemble zoo entry.

``voxelflow zoo pack RUN_DIR --folds all --out X.zip`` (``RUN_DIR``: the folder holding
``fold_K/``, i.e. ``system.run_dir`` of the config trained with ``voxelflow train --fold all``)
writes one entry with one card::

    model.yaml                                  the card; ``files.members`` lists the members
    config.yaml                                 the first fold's resolved config (scrubbed)
    members/fold_K/weights/<module>.<format>    every member's weights (.pt or .safetensors)
    members/fold_K/preprocessing.json           every member's own fitted state
    postprocessing.json                         ``cv/postprocessing.json`` when ``voxelflow cv``
                                                decided one (segmentation)
    README.md

Every file has its sha256 on the card, as in a single-model entry. The card's metrics are the
out-of-fold figures of ``cv/summary.csv`` (``cv_<metric>_<label>``: means over subjects) when
``voxelflow cv`` ran. ``voxelflow infer --model NAME`` then runs the members one after another,
accumulating their outputs, exactly as ``voxelflow infer -c X --folds all``
(:func:`voxelflow.cv.ensemble.ensemble_rows`).

Example:
    >>> pack_folds("runs/brain", out="brain_cv.zip", folds="all")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelflow.errors import ConfigError
from voxelflow.types import PathLike

if TYPE_CHECKING:
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.zoo.entry import ModelCard

logger = logging.getLogger(__name__)

MEMBERS_FOLDER = "members"


def pack_folds(
    run_dir: PathLike,
    *,
    out: PathLike,
    folds: str = "all",
    name: str | None = None,
    version: str = "1.0.0",
    card: Mapping[str, Any] | None = None,
    which: str = "best",
    weights_format: str = "pt",
    plugins: Sequence[PathLike] = (),
    precision: str = "float32",
) -> Path:
    """Pack the fold runs ``run_dir/fold_K`` (``folds``: ``all`` or ``0,2``) as one entry.

    Raises:
        ConfigError: no fold runs; a fold out of range or unfinished (with the command that
            finishes it); an autoencoder/GAN; members with different label sets (named).
    """
    from voxelflow.cv.ensemble import fold_members
    from voxelflow.cv.folds import fold_count, parse_folds, unfinished_reason
    from voxelflow.engine.run import application_class
    from voxelflow.zoo.archive import relative_files
    from voxelflow.zoo.entry import CARD_NAME, dump_card, sha256_of
    from voxelflow.zoo.pack import (
        _emit,
        _entry_name,
        _generated_card,
        _merge,
        _read_yaml,
        _validated,
        _write_files,
        copy_plugins,
        evaluation_figures,
        readme_text,
        required_torch,
        scrub_config,
    )

    root, out = Path(run_dir), Path(out)
    base = _base_experiment(root)
    count = fold_count(base)
    chosen = sorted(
        {k for part in str(folds).split(",") for k in parse_folds(part, count, option="--folds")}
    )
    for fold in chosen:
        reason = unfinished_reason(base, root, fold)
        if reason is not None:
            raise ConfigError(
                f"--folds: fold {fold} is not ready to pack: {reason}; finish it with "
                f"voxelflow train -c CONFIG --fold {fold}"
            )
    members = fold_members(base, root, ",".join(map(str, chosen)), which=which)
    first = members[0]
    entry_name = _entry_name(name or root.resolve().name)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pack-", dir=out.parent))
    try:
        config = scrub_config(_read_yaml(root / first.name / "config.yaml"), entry_name=entry_name)
        (staging / "config.yaml").write_text(_yaml(config))
        listed = []
        for member in members:
            folder = staging / MEMBERS_FOLDER / member.name
            folder.mkdir(parents=True)
            written = _write_files(
                folder, member.application, member.fitted_state, weights_format, (), precision
            )
            prefix = f"{MEMBERS_FOLDER}/{member.name}/"
            listed.append(
                {
                    "name": member.name,
                    "weights": {k: prefix + v for k, v in written["weights"].items()},
                    "preprocessing": prefix + written["preprocessing"]
                    if written.get("preprocessing")
                    else None,
                }
            )
        files: dict[str, Any] = {
            "config": "config.yaml",
            "weights": listed[0]["weights"],
            "preprocessing": listed[0]["preprocessing"],
            "readme": "README.md",
            "members": listed,
        }
        if plugins:
            files["plugins"] = copy_plugins(staging, plugins)
        decision = application_class(first.experiment).postprocess_decision(root)
        if decision is not None:
            (staging / "postprocessing.json").write_text(json.dumps(decision, indent=1))
            files["postprocessing"] = "postprocessing.json"
        generated = _generated_card(
            first.application, first.experiment, {}, first.fitted_state, entry_name, version
        )
        generated["files"] = files
        generated["requires"]["torch"] = required_torch(weights_format)
        generated["description"] = (
            f"Ensemble of {len(members)} cross-validation fold models "
            f"({', '.join(m.name for m in members)}): outputs averaged before the argmax."
        )
        figures, names = cv_figures(root / "cv", evaluation_figures)
        generated["metrics"] = figures
        labels = generated["outputs"]["labels"]
        for index, value in enumerate(generated["outputs"].get("label_values") or []):
            if value in names and index in labels:
                labels[index] = names[value]
        model_card = _validated(_merge(generated, dict(card or {})))
        (staging / "README.md").write_text(
            ensemble_readme(model_card, readme_text), encoding="utf-8"
        )
        digests = {path: sha256_of(staging / path) for path in relative_files(staging)}
        dump_card(model_card.model_copy(update={"sha256": digests}), staging / CARD_NAME)
        _emit(staging, out, model_card.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "packed %d fold runs of %s as ensemble zoo entry %s %s (%s checkpoints)",
        len(members), root, model_card.name, out, which,
    )  # fmt: skip
    return out


def _yaml(data: object) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _base_experiment(root: Path) -> ExperimentConfig:
    """The saved config of the first fold run under ``root`` (its application, split.folds)."""
    from voxelflow.config.load import load_experiment

    runs = sorted(
        (p for p in root.glob("fold_*") if (p / "config.yaml").is_file()),
        key=lambda p: int(p.name.removeprefix("fold_")) if p.name[5:].isdigit() else 1 << 30,
    )
    if not runs:
        raise ConfigError(
            f"--folds: expected fold runs {root}/fold_K/ (voxelflow train -c CONFIG --fold all), "
            f"got none in {str(root)!r}"
        )
    return load_experiment(runs[0] / "config.yaml")


def cv_figures(
    folder: Path, reader: Callable[[Path], tuple[dict[str, float], dict[int, str]]]
) -> tuple[dict[str, float], dict[int, str]]:
    """``cv/summary.csv`` means as ``cv_<metric>[_<label>]`` (empty when ``voxelflow cv`` has not
    run), and the label names of ``cv/per_case.csv``."""
    figures, names = reader(folder)
    renamed = {
        "cv_" + key.removeprefix("test_").rstrip("_"): value for key, value in figures.items()
    }
    return renamed, names


def ensemble_readme(card: ModelCard, readme_text: Callable[[ModelCard], str]) -> str:
    """The generated README with a section on the members."""
    members = "\n".join(f"- {member.name}" for member in card.files.members)
    post = (
        f"\nThe postprocessing decided by `voxelflow cv` ({card.files.postprocessing}) is applied "
        "to the ensemble's labels.\n"
        if card.files.postprocessing
        else ""
    )
    return (
        readme_text(card)
        + f"\n## Ensemble\n\n{len(card.files.members)} members, run one after another; their "
        "outputs (class probabilities, regression values) are averaged in each input's original "
        f"geometry before the argmax, as `voxelflow infer -c X --folds all`:\n\n{members}\n{post}"
    )
