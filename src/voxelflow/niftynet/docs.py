"""Generate ``docs/migration-niftynet.md`` from the importer's own tables and output.

Every table of the page comes from code: the key table converts each NiftyNet key (with
NiftyNet's default from :mod:`voxelflow.niftynet.defaults`, or an example value) and
prints the importer's note; the name tables print the importer's dictionaries; each worked
example is converted while the page is generated. ``tests/config/test_niftynet_docs.py``
fails when the committed page differs from what this module renders. Regenerate::

    python -m voxelflow.niftynet.docs docs/migration-niftynet.md
"""

from __future__ import annotations

import configparser
import contextlib
import html
import logging
import os
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxelflow.niftynet import keys as keys
from voxelflow.niftynet.conversion import (
    APPLICATION_KEYS,
    AUTOENCODER_MODES,
    NIFTYNET_DEFAULTS,
    SYSTEM_SECTIONS,
    convert_parser,
)
from voxelflow.niftynet.defaults import NIFTYNET_DEFAULTS as TABLE

__all__ = ["render_page"]

#: example values for keys whose NiftyNet default says nothing (None, empty)
EXAMPLES: dict[str, str] = {
    "cuda_devices": "0",
    "model_dir": "./models/brain_parcellation",
    "name": "highres3dnet",
    "decay": "0.0001",
    "normalisation": "True",
    "whitening": "True",
    "normalise_foreground_only": "True",
    "volume_padding_size": "(21, 21, 21)",
    "keep_prob": "0.5",
    "sample_per_volume": "32",
    "rotation_angle": "(-10.0, 10.0)",
    "rotation_angle_x": "(-10.0, 10.0)",
    "rotation_angle_y": "(-10.0, 10.0)",
    "rotation_angle_z": "(-10.0, 10.0)",
    "scaling_percentage": "(-10.0, 10.0)",
    "random_flipping_axes": "(0, 1)",
    "do_elastic_deformation": "True",
    "bias_field_range": "(-0.5, 0.5)",
    "vars_to_restore": "^.*(conv_1|conv_2).*$",
    "vars_to_freeze": "^.*(conv_1|conv_2).*$",
    "exclude_fraction_for_validation": "0.1",
    "exclude_fraction_for_inference": "0.1",
    "validation_every_n": "100",
    "spatial_window_size": "(64, 64, 64)",
    "border": "(8, 8, 8)",
    "dataset_to_infer": "inference",
    "evaluations": "dice, hausdorff_distance",
    "path_to_search": "./data/T1",
    "filename_contains": "T1",
    "filename_not_contains": "seg",
    "filename_removefromid": "_T1",
    "pixdim": "(1.0, 1.0, 1.0)",
    "axcodes": "(R, A, S)",
    "num_classes": "160",
    "noise_size": "100",
    "inference_type": "sample",
    "noise_stddev": "1",
    "loss_type": "Dice",
    "csv_file": "T1_list.csv",
    "csv_data_file": "labels.csv",
}
_BASE_INI = {
    "T1": {"path_to_search": "./data", "filename_contains": "T1"},
    "parcellation": {"path_to_search": "./data", "filename_contains": "Label"},
    "NETWORK": {"name": "highres3dnet"},
    "SEGMENTATION": {"image": "T1", "label": "parcellation"},
}
_ROLE_SECTIONS = ("SEGMENTATION", "REGRESSION", "CLASSIFICATION", "AUTOENCODER", "GAN")


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")" if value else ""
    return "" if value is None else str(value)


def _escape(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _note(section: str, key: str, value: str) -> tuple[str, str]:
    """The importer's (status, detail) for ``[section] key = value`` in a minimal INI."""
    from voxelflow.errors import VoxelflowError

    application = {
        "REGRESSION": "regression",
        "CLASSIFICATION": "classification",
        "AUTOENCODER": "autoencoder",
        "GAN": "gan",
    }.get(section, "segmentation")
    sections = {k: dict(v) for k, v in _BASE_INI.items()}
    if application != "segmentation":
        roles = sections.pop("SEGMENTATION")
        sections[section] = {"image": roles["image"]}
        sections["TRAINING"] = {
            "loss_type": {
                "regression": "L2Loss",
                "classification": "CrossEntropy",
                "autoencoder": "VariationalLowerBound",
                "gan": "CrossEntropy",
            }[application]
        }
        if application == "gan":
            sections[section]["noise_size"] = "100"
    target = "T1" if section == "INPUT" else section
    sections.setdefault(target, {})[key] = value
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    try:
        with scratch_folder():
            converted = convert_parser(parser, origin="example.ini", config_dir=".")
    except VoxelflowError as exc:
        return "refused", " ".join(str(exc).split())
    found = [n for n in converted.notes if n.section == target and n.key == key]
    return (found[0].status, found[0].detail) if found else ("ignored", "")


def _key_table(section: str, names: list[str]) -> str:
    lines = [
        "| key | NiftyNet default | example | status | in voxelflow |",
        "|---|---|---|---|---|",
    ]
    defaults = TABLE.get(section, {})
    for key in names:
        default = _ini_value(defaults.get(key)) if key in defaults else ""
        example = EXAMPLES.get(key, default) or "1"
        status, detail = _note(section, key, example)
        shown = f"`{_escape(default)}`" if default else "—"
        lines.append(f"| `{key}` | {shown} | `{_escape(example)}` | {status} | {_escape(detail)} |")
    return "\n".join(lines)


def _keys_markdown() -> str:
    parts = []
    for section, table in SYSTEM_SECTIONS.items():
        names = sorted(set(table) | set(TABLE.get(section, {})))
        parts.append(f"### [{section}]\n\n{_key_table(section, names)}")
    parts.append(
        "### Input sections (`[T1]`, `[label]`, ...)\n\n"
        + _key_table("INPUT", sorted(TABLE["INPUT"]))
    )
    for section in _ROLE_SECTIONS:
        names = sorted(set(TABLE[section]))
        parts.append(f"### [{section}]\n\n{_key_table(section, names)}")
    known = {k for s in _ROLE_SECTIONS for k in TABLE[s]}
    extra = sorted(APPLICATION_KEYS - known - set(keys.ROLES) - {"inferred", "value", "feature"})
    if extra:
        parts.append(
            "Also accepted in an application section: " + ", ".join(f"`{k}`" for k in extra)
        )
    return "\n\n".join(parts)


def _names_markdown() -> str:
    lines = [
        "| NiftyNet class path | NiftyNet name | voxelflow network | remark |",
        "|---|---|---|---|",
    ]
    for path, short in keys.NETWORK_CLASSES.items():
        name, options, remark = keys.NETWORKS[short]
        shown = ", ".join([f"name: {name}", *(f"{k}: {v}" for k, v in options.items())])
        lines.append(f"| `{path}` | `{short}` | `{{{shown}}}` | {_escape(remark)} |")
    parts = ["\n".join(lines)]
    for title, table in (
        ("segmentation loss", keys.SEGMENTATION_LOSSES),
        ("regression loss", keys.REGRESSION_LOSSES),
        ("optimiser", keys.OPTIMIZERS),
    ):
        rows = [f"| NiftyNet {title} | voxelflow | remark |", "|---|---|---|"]
        for niftynet_name, (name, options, *rest) in table.items():
            shown = ", ".join([f"name: {name}", *(f"{k}: {v}" for k, v in options.items())])
            remark = rest[0] if rest else ""
            rows.append(f"| `{niftynet_name}` | `{{{shown}}}` | {_escape(remark)} |")
        parts.append("\n".join(rows))
    modes = ["| NiftyNet inference_type | voxelflow inference.mode |", "|---|---|"]
    modes += [f"| `{k}` | `{v}` |" for k, v in AUTOENCODER_MODES.items()]
    parts.append("\n".join(modes))
    metrics = ["| NiftyNet evaluation | voxelflow metric |", "|---|---|"]
    metrics += [f"| `{k}` | `{v}` |" for k, v in keys.EVALUATIONS.items()]
    parts.append("\n".join(metrics))
    return "\n\n".join(parts)


def _defaults_markdown() -> str:
    lines = ["| voxelflow key | value a converted file keeps |", "|---|---|"]
    for key, value in NIFTYNET_DEFAULTS.items():
        lines.append(f"| `{key}` | `{_escape(repr(value))}` |")
    return "\n".join(lines)


#: one worked example per application: (title, command, INI text)
WORKED_EXAMPLES: list[tuple[str, str, str]] = [
    (
        "Segmentation",
        "net_segment",
        """\
        [T1]
        path_to_search = ./data
        filename_contains = T1
        spatial_window_size = (32, 32, 32)
        [label]
        path_to_search = ./data
        filename_contains = Label
        interp_order = 0
        [NETWORK]
        name = niftynet.network.highres3dnet.HighRes3DNet
        normalisation = False
        norm_type = percentile
        whitening = True
        [TRAINING]
        loss_type = Dice
        scaling_percentage = (-10, 10)
        max_iter = 1000
        [INFERENCE]
        border = (4, 4, 4)
        [SEGMENTATION]
        image = T1
        label = label
        num_classes = 4
        """,
    ),
    (
        "Regression",
        "net_regress",
        """\
        [mr]
        path_to_search = ./data/mr
        spatial_window_size = (32, 32, 32)
        [ct]
        path_to_search = ./data/ct
        [SYSTEM]
        model_dir = ./models/mr_ct
        [NETWORK]
        name = highres3dnet
        decay = 0.0001
        reg_type = L1
        [TRAINING]
        loss_type = L1Loss
        [REGRESSION]
        image = mr
        output = ct
        """,
    ),
    (
        "Classification",
        "net_classify",
        """\
        [image]
        path_to_search = ./data/images
        spatial_window_size = (32, 32, 32)
        [label]
        path_to_search = ./data/labels
        [NETWORK]
        name = resnet
        [TRAINING]
        loss_type = CrossEntropy
        [CLASSIFICATION]
        image = image
        label = label
        num_classes = 2
        """,
    ),
    (
        "Autoencoder",
        "net_autoencoder",
        """\
        [IXI image]
        path_to_search = ./data/IXI
        filename_contains = T1
        spatial_window_size = (24, 24, 24)
        [NETWORK]
        name = vae
        [TRAINING]
        loss_type = VariationalLowerBound
        [AUTOENCODER]
        image = IXI image
        inference_type = sample
        n_interpolations = 10
        """,
    ),
    (
        "GAN (2-D windows)",
        "net_gan",
        """\
        [usimage]
        path_to_search = ./data/us
        filename_contains = frame,img
        spatial_window_size = (64, 64, 1)
        [coordX]
        path_to_search = ./data/us
        filename_contains = frame,coordX
        spatial_window_size = (64, 64, 1)
        [NETWORK]
        name = niftynet.network.simulator_gan.SimulatorGAN
        [TRAINING]
        loss_type = CrossEntropy
        [GAN]
        image = usimage
        conditioning = coordX
        noise_size = 100
        """,
    ),
]


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """An empty working folder for example conversions: converting may list data folders into
    ``<model_dir>/niftynet_subjects.csv``, which must never land in the caller's folder."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(previous)


def _worked_example(title: str, command: str, text: str) -> str:
    body = textwrap.dedent(text)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(body)
    with scratch_folder():
        converted = convert_parser(parser, origin="example.ini", config_dir=".")
    report = [str(n) for n in converted.notes if n.status != "mapped"] or ["(every key mapped)"]
    settings = converted.settings
    return "\n".join(
        [
            f"### {title}",
            "",
            "```ini",
            body.rstrip(),
            "```",
            "",
            "```bash",
            f"{command} train -c example.ini --max_iter 100",
            f"{command} inference -c example.ini",
            *(
                [f"{command} evaluation -c example.ini"]
                if command not in ("net_gan", "net_autoencoder")
                else []
            ),
            "```",
            "",
            f"Runs as `application: {converted.experiment.application}`, network "
            f"`{converted.experiment.network.name}`, loss `{converted.experiment.loss.name}`, "
            f"model folder `{settings.model_dir}`, outputs in `{settings.save_seg_dir}`. "
            "What did not map exactly:",
            "",
            "```text",
            *report,
            "```",
        ]
    )


INTRO = """\
# Migrating from NiftyNet

<!-- Generated by `python -m voxelflow.niftynet.docs docs/migration-niftynet.md` from the
importer's tables; tests/config/test_niftynet_docs.py keeps it fresh. Do not edit by hand. -->

voxelflow reads NiftyNet 0.6 `.ini` files and runs them with NiftyNet's own commands. Every
`[SECTION] key = value` of a file gets a note; a file voxelflow cannot run faithfully is refused
with one line naming the key (exit code 2), never run with a silent substitute.

| status | meaning |
|---|---|
| `mapped` | an exact voxelflow equivalent was set |
| `approximated` | a close equivalent was set; the note says what differs |
| `not supported` | voxelflow has no equivalent; the key has no effect (the note says what to do) |
| `ignored` | not needed in voxelflow (the note gives the reason) |
| `misplaced` | a key in the wrong section, which NiftyNet silently ignored; applied where it belongs |
| `unknown` | not a NiftyNet 0.6 key (NiftyNet refused the file); ignored, closest key suggested |

## Commands

| NiftyNet | voxelflow |
|---|---|
| `net_segment train -c config.ini` | the same; also `net_regress`, `net_classify`, `net_autoencoder`, `net_gan` |
| `net_run train -a net_segment -c config.ini` | the same; `-a` also takes NiftyNet's class path, e.g. `niftynet.application.segmentation_application.SegmentationApplication` |
| `net_segment inference -c config.ini` | the same, with NiftyNet's subjects, checkpoint and output names (below) |
| `net_segment evaluation -c config.ini` | the same: predictions paired with the label files by subject id, results in `save_csv_dir` |
| `net_segment train -c config.ini --lr 0.01 --max_iter 10` | the same: any `--key value` of the system or application sections; an unknown key is refused |
| `net_download highres3dnet_brain_parcellation` | refused: NiftyNet's zoo holds TensorFlow weights; nothing is downloaded |
| `net_download NAME` | installs a voxelflow zoo entry (folder, archive or index name), as `voxelflow zoo install` |

The application comes from the command, as in NiftyNet: `net_segment` needs a `[SEGMENTATION]`
section (exactly that name; a lowercase `[segmentation]` is an input section). `--set a.b=value`
overrides the converted experiment. `voxelflow train -c config.ini` and
`voxelflow config convert config.ini > experiment.yaml` accept the same files.

## NiftyNet's rules kept

- **Paths.** A relative `model_dir` is relative to the working folder; without `model_dir` it is
  `<config folder>/model`. Relative `save_seg_dir`, `save_csv_dir`, `dataset_split_file` and
  `histogram_ref_file` are inside `model_dir`; `path_to_search` folders are relative to the
  working folder, and every folder of a comma-separated list is searched.
- **Devices.** `cuda_devices` sets `CUDA_VISIBLE_DEVICES`; a machine without that GPU runs on
  the CPU, as NiftyNet did.
- **Training.** `starting_iter = 0` starts from random weights (an earlier run in `model_dir` is
  moved to `superseded/`); `-1` resumes the latest checkpoint.
- **Inference subjects.** `dataset_to_infer` if set; else the inference subset of the split if it
  is not empty; else every subject, training ones included. The checkpoint is `inference_iter`
  (`-1` = the latest). Each subject's output is `<subject><output_postfix>.nii.gz` (default
  `_niftynet_out`) in `save_seg_dir`, listed in NiftyNet's two-column `inferred.csv`
  (`subject,path`, no header). Subject ids are the file name minus the `filename_contains`
  strings, for inference and evaluation alike.
- **2-D windows.** A window `(h, w, 1)` is 2-D for every application: a 2-D network runs on
  slices (voxelflow's segmentation natively, the other applications through
  `voxelflow.niftynet.slices`); on 2-D image files the window is `[h, w]`.
- **Subject ids and file lists.** `filename_removefromid` removes the regex's matches from the
  file name, `csv_file` lists (`subject,path`) are used when they exist, and NiftyNet's
  classification labels (one class value per label image) become the class column
  `task.target_column`; these files are listed into `<model_dir>/niftynet_subjects.csv`.
- **Regularisation.** `reg_type = L2` with `decay` is TensorFlow's `decay·Σw²/2` (torch's
  coupled `weight_decay`); `reg_type = L1` adds the exact gradient of `decay·Σ|w|`
  (`voxelflow.niftynet.optim:l1_regularised`).
- **Normalisation.** Histogram standardisation only with `normalisation = True` (`norm_type`,
  `cutoff` are otherwise unused); scaling is per axis unless `isotropic_scaling = True`.

## Refused, with the reason

- NiftyNet model-zoo download manifests (sections with `url` and `action`): TensorFlow weights.
- NiftyNet 0.1 files (`[settings]`, `net_name`, no `[SYSTEM]`/`[NETWORK]`).
- `[REGISTRATION]` files (label-driven registration is out of scope).
- A network given by a TensorFlow class path outside NiftyNet's own networks, or no
  `[NETWORK] name` at all; a loss a NiftyNet application does not have (no fallback to
  another loss); a non-segmentation file without `loss_type` (NiftyNet's default `Dice` is a
  segmentation loss); a GAN without `noise_size`; `rgb_normalisation = True`.
- `net_autoencoder evaluation`, `net_gan evaluation`: NiftyNet had none.
"""


def render_page() -> str:
    """The whole of ``docs/migration-niftynet.md``."""
    # the worked examples convert files whose notes would be logged; silence them for the
    # rendering only (a lasting level change would hide every later warning in the process)
    logger = logging.getLogger("voxelflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _render_page()
    finally:
        logger.setLevel(level)


def _render_page() -> str:
    examples = "\n\n".join(_worked_example(*example) for example in WORKED_EXAMPLES)
    return (
        INTRO
        + "\n## Worked examples\n\n"
        + examples
        + "\n\n## Networks, losses, optimisers, metrics\n\n"
        + "NiftyNet's class paths (as its documentation writes them) and names map to:\n\n"
        + _names_markdown()
        + "\n\n## Defaults a converted file keeps\n\n"
        + "From NiftyNet 0.6.0's source (`voxelflow.niftynet.defaults`, extracted from "
        + "the wheel), where they differ from voxelflow's:\n\n"
        + _defaults_markdown()
        + "\n\n## Every key\n\n"
        + "The importer's own note for each key, converted alone in a minimal file with NiftyNet's "
        + "default or an example value (other values may map differently).\n\n"
        + _keys_markdown()
        + "\n"
    )


if __name__ == "__main__":  # pragma: no cover - maintenance script
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/migration-niftynet.md")
    target.write_text(render_page(), encoding="utf-8")
    print(f"wrote {target}")
