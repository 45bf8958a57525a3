"""Check a whole experiment in one pass and list every problem, before anything runs.

:func:`check_experiment` is what ``voxelflow config validate`` reports and what ``voxelflow
train`` runs first: every named component goes through the one build path
(:mod:`voxelflow.config.build`: name, options against the signature, then construction where
it is cheap: optimiser and schedule on a dummy parameter, every augmentation and normalisation
step, the sampler, the network on PyTorch's ``meta`` device with the window's size rules), and
the data are checked without reading voxels: the table, every file named in it, the channel
count and dimensionality of each image from its header, the window's dimensionality against
the images. Each problem is one line that names the key, file or value at fault.

Example:
    >>> from voxelflow.config.schema import ExperimentConfig
    >>> config = ExperimentConfig(optimizer={"name": "sgdd"}, augmentation=[{"name": "flip", "axis": 0}])
    >>> for problem in check_experiment(config, data=False):
    ...     print(problem)  # doctest: +ELLIPSIS
    optimizer.name: unknown optimizer 'sgdd'. Did you mean: 'sgd'? ...
    augmentation[0].axis: unknown option of augmentation 'flip'. Did you mean: 'axes'? ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from voxelflow.config import build
from voxelflow.config.build import build_component, check_component
from voxelflow.config.schema import ExperimentConfig
from voxelflow.errors import ConfigProblems, VoxelflowError

if TYPE_CHECKING:  # applications sit above config in the layers; annotations only
    from voxelflow.applications.base import Application

T = TypeVar("T")

#: at most this many missing or unreadable files are listed one by one
MAX_FILES_LISTED = 10
#: problems that are about the data (files, headers), not the config
DATA_PROBLEM = re.compile(r"^dataset( \(|: \d+ file\(s\)|\.inputs\.image: )")
_INDEX_KEY = re.compile(r"^(augmentation|preprocessing\.normalization)\.(\d+)")


def _keyed(key: str, text: str) -> str:
    """``text`` prefixed with ``key`` unless it already starts with a key under it."""
    text = _INDEX_KEY.sub(lambda m: f"{m.group(1)}[{m.group(2)}]", text.strip())
    return text if text.startswith(key) else f"{key}: {text}"


def _attempt(problems: list[str], key: str, check: Callable[[], T]) -> T | None:
    """Run one step of the build path; its problems (every one of them) go to ``problems``."""
    try:
        return check()
    except ConfigProblems as exc:
        problems += [_keyed(key, problem) for problem in exc.problems]
    except (VoxelflowError, TypeError, ValueError) as exc:
        problems.append(_keyed(key, str(exc)))
    except KeyError as exc:
        problems.append(_keyed(key, str(exc.args[0]) if exc.args else repr(exc)))
    return None


def check_components(
    experiment: ExperimentConfig, *, in_channels: int | None = None, training: bool = True
) -> list[str]:
    """Every component of ``experiment`` through the build path in check mode: each is built
    (or, where building needs the data, checked against its signature) and every problem of
    every component is listed, one line each, in config order. ``training`` adds the
    ``dataset.inputs`` roles the application needs to train (inference needs only images)."""
    problems: list[str] = []
    application = _attempt(problems, "application", lambda: build.application_class(experiment))
    if application is not None and training:
        inputs = experiment.dataset.inputs
        _attempt(problems, "dataset.inputs", lambda: application.check_training_roles(inputs))
    problems += _check_optimisation(experiment)
    problems += _check_data_components(experiment)
    channels = in_channels or len(experiment.dataset.inputs.get("image", [1]))
    problems += _check_network_for(application, experiment, channels)
    return problems


def _check_network_for(
    application: type[Application] | None, experiment: ExperimentConfig, in_channels: int
) -> list[str]:
    """The network built on the window where the application gives the sizes
    (:meth:`~voxelflow.applications.base.Application.network_check`), else its options."""
    problems: list[str] = []
    if application is None:
        return _check_network_options(experiment)
    shape = _attempt(problems, "sampling.window", lambda: application.network_check(experiment))
    if problems:
        return problems
    if shape is None:
        return _check_network_options(experiment)
    return _check_network(experiment, in_channels, *shape)


def _dense_output(experiment: ExperimentConfig) -> bool:
    """Whether the application's output has the images' dimensionality (an unknown
    application is reported by :func:`check_components`)."""
    try:
        return build.application_class(experiment).dense_output
    except VoxelflowError:
        return False


def _check_optimisation(experiment: ExperimentConfig) -> list[str]:
    """Loss, optimiser (built over a dummy parameter), schedule and hooks."""
    import torch

    from voxelflow.losses import LOSSES
    from voxelflow.optim import SCHEDULERS

    problems: list[str] = []
    _attempt(problems, "loss", lambda: check_component(LOSSES, experiment.loss, key="loss"))
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = _attempt(
        problems, "optimizer", lambda: build.build_optimizer(experiment, [parameter])
    )
    if optimizer is not None:
        _attempt(problems, "scheduler", lambda: build.build_scheduler(experiment, optimizer))
    else:  # no optimiser to schedule: still check the schedule's name and options
        fixed = ("max_iterations",)
        scheduler = experiment.scheduler
        _attempt(
            problems,
            "scheduler",
            lambda: check_component(SCHEDULERS, scheduler, key="scheduler", fixed=fixed),
        )
    hooks = build.hook_registry()
    for index, component in enumerate(experiment.training.hooks):
        key = f"training.hooks[{index}]"
        _attempt(problems, key, partial(check_component, hooks, component, key=key))
    return problems


def _check_data_components(experiment: ExperimentConfig) -> list[str]:
    """The sampler, every augmentation and every normalisation step, built."""
    from voxelflow.sampling import SAMPLERS
    from voxelflow.transforms.compose import AUGMENTATIONS
    from voxelflow.transforms.normalize import NORMALIZERS

    problems: list[str] = []
    sampling = experiment.sampling
    _attempt(
        problems,
        "sampling.sampler",
        lambda: build_component(
            SAMPLERS, sampling.sampler, key="sampling.sampler", window=sampling.window,
            windows_per_subject=sampling.windows_per_subject,
            label_window=sampling.label_window, pad_value=sampling.pad_value,
        ),
    )  # fmt: skip
    for index, component in enumerate(experiment.augmentation):
        key = f"augmentation[{index}]"
        _attempt(problems, key, partial(build_component, AUGMENTATIONS, component, key=key))
    for index, component in enumerate(experiment.preprocessing.normalization):
        key = f"preprocessing.normalization[{index}]"
        _attempt(problems, key, partial(build_component, NORMALIZERS, component, key=key))
    return problems


#: network arguments every application sets itself
_SET_BY_APPLICATIONS = ("spatial_dims", "in_channels", "out_channels")
#: network arguments some applications set when the config leaves them out (a GAN's sizes)
_SET_WHEN_ABSENT = ("noise_size", "image_size", "conditioning_channels")


def _check_network_options(experiment: ExperimentConfig) -> list[str]:
    """The network's name and options against its signature (its size needs the data)."""
    from voxelflow.networks import NETWORKS

    given = experiment.network.kwargs
    fixed = _SET_BY_APPLICATIONS + tuple(n for n in _SET_WHEN_ABSENT if n not in given)
    problems: list[str] = []
    _attempt(
        problems,
        "network",
        lambda: check_component(NETWORKS, experiment.network, key="network", fixed=fixed),
    )
    return problems


def _check_network(
    experiment: ExperimentConfig, in_channels: int, out_channels: int, net_window: list[int]
) -> list[str]:
    """Build the network on the meta device and check the window it sees against its size
    rules (:meth:`~voxelflow.applications.base.Application.network_check` gave both sizes)."""
    import torch

    problems: list[str] = []
    with torch.device("meta"):
        network = _attempt(
            problems,
            "network",
            lambda: build.build_network(
                experiment,
                in_channels=in_channels,
                out_channels=out_channels,
                spatial_dims=len(net_window),
            ),
        )
    check = getattr(network, "check_input_size", None)
    if check is not None and all(w > 0 for w in net_window):
        _attempt(problems, "sampling.window", lambda: check(net_window))
    return problems


def _image_header(path: Path) -> tuple[int, int] | str:
    """``(spatial_dims, channels)`` from a file's header (no voxels read), or what went wrong."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz", ".img", ".hdr", ".mgz", ".mgh")):
            import nibabel as nib
            from nibabel.spatialimages import SpatialImage

            # every suffix above loads as a SpatialImage (as in io.readers)
            shape = cast(SpatialImage, nib.load(str(path))).shape
        elif path.is_dir():
            return (3, 1)  # a DICOM series: one channel, a volume
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = list(reader.GetSize())
            channels = reader.GetNumberOfComponents()
            if len(size) == 3 and size[2] == 1:
                size = size[:2]
            return (len(size), channels) if len(size) in (2, 3) else (3, size[3])
    except Exception as exc:  # any reader failure is a problem to report, not a crash
        return f"{path}: unreadable image header ({type(exc).__name__}: {exc})"
    spatial = [s for s in shape[:3]]
    if len(shape) == 3 and shape[2] == 1:
        spatial = spatial[:2]
    channels = int(shape[3]) if len(shape) > 3 else 1
    return (len(spatial), channels)


def check_data(  # noqa: C901  (one branch per data check, each a line of the report)
    experiment: ExperimentConfig, *, base_dir: str | os.PathLike[str] | None = None
) -> tuple[list[str], int | None]:
    """The table, its files and their headers; returns the problems and the image channels."""
    from voxelflow.io.table import load_table

    problems: list[str] = []
    rows = _attempt(problems, "dataset", lambda: load_table(experiment.dataset, base_dir=base_dir))
    if rows is None:
        return problems, None
    inputs = experiment.dataset.inputs
    missing: list[str] = []
    headers: dict[str, list[tuple[str, int, int]]] = {}
    for row in rows:
        for role, columns in inputs.items():
            for column in columns:
                if not row.columns.get(column):
                    continue
                path = row.path(column)
                if not path.exists():
                    missing.append(f"{row.name}/{column}: {path}")
                    continue
                if role in ("image", "label", "target", "weight", "sampling_map"):
                    header = _image_header(path)
                    if isinstance(header, str):
                        problems.append(f"dataset ({row.name}, {column}): {header}")
                    else:
                        headers.setdefault(role, []).append((row.name, *header))
    if missing:
        shown = "; ".join(missing[:MAX_FILES_LISTED])
        more = (
            f" and {len(missing) - MAX_FILES_LISTED} more"
            if len(missing) > MAX_FILES_LISTED
            else ""
        )
        problems.append(
            f"dataset: {len(missing)} file(s) named in the table do not exist: {shown}{more}"
        )
    channels = None
    images = headers.get("image", [])
    if images:
        per_subject: dict[str, int] = {}
        for name, _, count in images:
            per_subject[name] = per_subject.get(name, 0) + count
        counts = sorted(set(per_subject.values()))
        usual = max(counts, key=list(per_subject.values()).count)
        for name, file_dims, count in images:
            if count > 1 and usual != per_subject[name]:
                column_files = [
                    row.path(c) for row in rows if row.name == name for c in inputs["image"]
                ]
                problems.append(
                    f"dataset ({name}): {', '.join(str(f) for f in column_files)}: got {count} "
                    f"channels (a {file_dims + 1}D file); the other subjects have {usual}"
                )
        if len(counts) > 1:
            by_count = {c: [n for n, v in per_subject.items() if v == c][:3] for c in counts}
            problems.append(
                "dataset.inputs.image: subjects have different channel counts: "
                + ", ".join(f"{c} ({', '.join(names)}...)" for c, names in by_count.items())
            )
        channels = counts[-1]
        found_dims = sorted({d for _, d, _ in images})
        window = list(experiment.sampling.window)
        if len(found_dims) == 1 and _dense_output(experiment) and len(window) != found_dims[0]:
            ndim = found_dims[0]
            hint = " (a 2D window on 3D images is written [h, w, 1])" if ndim == 3 else ""
            problems.append(
                f"sampling.window: expected {ndim} sizes, got {window} ({ndim}D images){hint}"
            )
    return problems, channels


def check_experiment(
    experiment: ExperimentConfig,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    data: bool = True,
) -> list[str]:
    """Every problem of ``experiment``: components, then (with ``data``) the dataset.

    Returns:
        One line per problem, in config order; empty when the experiment can run.
    """
    problems: list[str] = []
    channels = None
    if data:
        data_problems, channels = check_data(experiment, base_dir=base_dir)
    else:
        data_problems = []
    problems += check_components(experiment, in_channels=channels)
    seen: set[str] = set()
    unique = []
    for line in [*problems, *data_problems]:
        if line not in seen:
            seen.add(line)
            unique.append(line)
    return unique


def raise_if_problems(problems: Sequence[str], *, source: str) -> None:
    """One error listing every problem: a :class:`~voxelflow.errors.ConfigError` (exit code 2),
    or a :class:`~voxelflow.errors.DataError` (exit code 1) when only the data are at fault."""
    from voxelflow.errors import ConfigError, DataError

    if not problems:
        return
    listed = "\n".join(f"  - {p}" for p in problems)
    message = f"{source}: {len(problems)} problem(s):\n{listed}"
    if all(DATA_PROBLEM.match(p) for p in problems):
        raise DataError(message)
    raise ConfigError(message)
