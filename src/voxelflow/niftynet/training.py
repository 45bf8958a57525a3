"""NiftyNet ``[SYSTEM]``, ``[TRAINING]``, ``[INFERENCE]`` and ``[EVALUATION]`` key handlers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from voxelflow.errors import ConfigError
from voxelflow.niftynet.keys import (
    EVALUATIONS,
    OPTIMIZERS,
    REGRESSION_LOSSES,
    SEGMENTATION_LOSSES,
    Outcome,
    State,
    _fixed,
    _setter,
    as_bool,
    as_int,
    as_ints,
    as_list,
    as_number,
    queue_length,
)

Handler = Callable[[State, str], Outcome]


# --------------------------------------------------------------------------- [SYSTEM]
def cuda_devices(state: State, value: str) -> Outcome:
    devices = ",".join(as_list(value))
    if not devices:
        return "ignored", "empty: the system's visible devices (system.device = auto)"
    state.extras["cuda_devices"] = devices
    # NiftyNet only set CUDA_VISIBLE_DEVICES: on a machine without that GPU it ran on the CPU
    return "mapped", (
        f"system.device = auto with CUDA_VISIBLE_DEVICES={devices} (set by the net_* commands; "
        "the CPU when no such GPU exists, as in NiftyNet)"
    )


def num_gpus(state: State, value: str) -> Outcome:
    if as_int(value, key="num_gpus") <= 1:
        return "mapped", "one device"
    return (
        "approximated",
        "trains on one device; for data parallelism run "
        "`torchrun --nproc_per_node=N voxelflow train ...`",
    )


def model_dir(state: State, value: str) -> Outcome:
    path = Path(value.strip().strip("'\"")).expanduser()
    # NiftyNet made a relative model_dir absolute against the working folder (os.path.abspath)
    state.extras["model_dir"] = str(path)
    return "mapped", state.put(
        "system.run_dir", str(path)
    ) + f" = {path} (relative to the working folder)"


def split_file(state: State, value: str) -> Outcome:
    # resolved against model_dir at the end: model_dir may come later in the file
    state.extras["dataset_split_file"] = value.strip().strip("'\"")
    return "mapped", "split.file (resolved against model_dir; used when it exists)"


SYSTEM_KEYS: dict[str, Handler] = {
    "cuda_devices": cuda_devices,
    "num_threads": _setter("training.num_workers", lambda v: as_int(v, key="num_threads")),
    "num_gpus": num_gpus,
    "model_dir": model_dir,
    "dataset_split_file": split_file,
    "event_handler": _fixed(
        "not supported", "voxelflow's trainer takes hooks in Python, not by name"
    ),
    "iteration_generator": _fixed(
        "not supported", "the training loop is fixed; use training.validate_every"
    ),
}


# --------------------------------------------------------------------------- [TRAINING]
def optimiser(state: State, value: str) -> Outcome:
    entry = OPTIMIZERS.get(value.strip().strip("'\"").lower())
    if entry is None:
        raise ConfigError(f"expected one of {', '.join(OPTIMIZERS)}, got {value.strip()!r}")
    name, options, remark = entry
    kept = {k: v for k, v in state.get("optimizer", {}).items() if k in ("lr", "weight_decay")}
    state.put("optimizer", {"name": name, **options, **kept})
    detail = f"optimizer.name = {name}" + "".join(f", {k} = {v}" for k, v in options.items())
    return ("approximated", f"{detail}; approximated: {remark}") if remark else ("mapped", detail)


def loss_type(state: State, value: str) -> Outcome:
    """NiftyNet's ``loss_type`` for the application being converted.

    Raises:
        ConfigError: a loss voxelflow does not have for this application (no fallback).
    """
    name = value.strip().strip("'\"")
    state.extras["loss_type"] = name
    if state.application == "regression":
        table = REGRESSION_LOSSES
    elif state.application in ("classification", "gan") and name.lower() == "crossentropy":
        mapped = (
            "classification_ce" if state.application == "classification" else "gan_nonsaturating"
        )
        return "mapped", state.put("loss", {"name": mapped}) + f".name = {mapped}"
    elif state.application == "autoencoder":
        if name.lower() != "variationallowerbound":
            raise ConfigError(f"expected VariationalLowerBound for autoencoder, got {name!r}")
        return "approximated", state.put("loss", {"name": "vae"}) + (
            ".name = vae; approximated: reconstruction + KL, weighting as voxelflow's vae loss"
        )
    elif state.application in ("classification", "gan"):
        raise ConfigError(f"expected CrossEntropy for {state.application}, got {name!r}")
    else:
        table = SEGMENTATION_LOSSES
    entry = table.get(name.lower())
    if entry is None:
        raise ConfigError(
            f"no voxelflow {state.application} loss for {name!r} "
            f"(known: {', '.join(sorted(table))})"
        )
    mapped, options, remark = entry
    state.put("loss", {"name": mapped, **options})
    detail = f"loss.name = {mapped}" + "".join(f", {k} = {v}" for k, v in options.items())
    return ("approximated", f"{detail}; approximated: {remark}") if remark else ("mapped", detail)


def starting_iter(state: State, value: str) -> Outcome:
    step = as_int(value, key="starting_iter")
    state.extras["starting_iter"] = step
    if step == 0:
        return "mapped", "random weights (the net_* commands move earlier checkpoints aside)"
    if step < 0:
        return "mapped", "resume from the latest checkpoint of model_dir"
    return "approximated", (
        f"resumes from the latest checkpoint of model_dir, not necessarily step {step}"
    )


def save_every(state: State, value: str) -> Outcome:
    every = as_int(value, key="save_every_n")
    if every <= 0:
        state.save_every_zero = True
        return "mapped", "training.checkpoint_every = training.max_iterations (only at the end)"
    return "mapped", state.put("training.checkpoint_every", every) + f" = {every}"


def tensorboard_every(state: State, value: str) -> Outcome:
    every = as_int(value, key="tensorboard_every_n")
    if every <= 0:
        return (
            "not supported",
            "logging cannot be switched off; training.log_every keeps its default",
        )
    return "mapped", state.put("training.log_every", every) + f" = {every}"


def validation_every(state: State, value: str) -> Outcome:
    every = max(as_int(value, key="validation_every_n"), 0)
    return "mapped", state.put("training.validate_every", every) + f" = {every}"


def max_checkpoints(state: State, value: str) -> Outcome:
    keep = max(as_int(value, key="max_checkpoints"), 1)
    return "mapped", state.put("training.keep_last", keep) + f" = {keep}"


def _range(value: str, key: str) -> list[float]:
    numbers = [as_number(v, key=key) for v in as_list(value)]
    return numbers if len(numbers) == 2 else [-abs(numbers[0]), abs(numbers[0])] if numbers else []


def rotation(axis: int | None) -> Handler:
    def handler(state: State, value: str) -> Outcome:
        bounds = _range(value, "rotation_angle")
        if not bounds:
            return "ignored", "empty: no rotation"
        affine = state.augment.setdefault("affine", {})
        if axis is None:
            affine["rotation"] = bounds
        else:
            per_axis = affine.get("rotation_per_axis", [[0.0, 0.0]] * 3)
            per_axis = [list(b) for b in per_axis]
            per_axis[axis] = bounds
            affine["rotation_per_axis"] = per_axis
        return "mapped", f"augmentation affine rotation {bounds} degrees" + (
            f" about axis {axis}" if axis is not None else ""
        )

    return handler


def scaling(state: State, value: str) -> Outcome:
    bounds = _range(value, "scaling_percentage")
    if not bounds:
        return "ignored", "empty: no scaling"
    factors = [1.0 + bounds[0] / 100.0, 1.0 + bounds[1] / 100.0]
    affine = state.augment.setdefault("affine", {})
    affine["scaling"] = factors
    affine.setdefault("isotropic", False)  # NiftyNet's isotropic_scaling defaults to False
    return (
        "approximated",
        f"augmentation affine scaling {factors} (per axis unless isotropic_scaling); "
        "approximated: NiftyNet zoomed the whole volume before sampling, voxelflow scales "
        "the sampled region",
    )


def isotropic_scaling(state: State, value: str) -> Outcome:
    isotropic = as_bool(value, key="isotropic_scaling")
    state.augment.setdefault("affine", {})["isotropic"] = isotropic
    return "mapped", f"augmentation affine isotropic = {isotropic}"


def flipping_axes(state: State, value: str) -> Outcome:
    axes = [a for a in as_ints(value, key="random_flipping_axes") if a >= 0]
    if not axes:
        return "ignored", "-1: no flipping"
    state.augment["flip"] = {"axes": axes, "flip_probability": 0.5}
    return "mapped", f"augmentation flip axes {axes}, probability 0.5 each"


def elastic(state: State, value: str) -> Outcome:
    if as_bool(value, key="do_elastic_deformation"):
        state.augment.setdefault("elastic", {})
        return "mapped", "augmentation elastic"
    return "ignored", "no elastic deformation"


def elastic_option(option: str, convert: Callable[[str], object], remark: str = "") -> Handler:
    def handler(state: State, value: str) -> Outcome:
        state.augment.setdefault("elastic_options", {})[option] = convert(value)
        return (
            "approximated" if remark else "mapped"
        ), f"elastic {option} = {convert(value)} {remark}".strip()

    return handler


TRAINING_KEYS: dict[str, Handler] = {
    "optimiser": optimiser,
    "lr": _setter("optimizer.lr", lambda v: as_number(v, key="lr")),
    "loss_type": loss_type,
    "sample_per_volume": _setter(
        "sampling.windows_per_subject", lambda v: as_int(v, key="sample_per_volume")
    ),
    "starting_iter": starting_iter,
    "max_iter": _setter("training.max_iterations", lambda v: as_int(v, key="max_iter")),
    "save_every_n": save_every,
    "tensorboard_every_n": tensorboard_every,
    "max_checkpoints": max_checkpoints,
    "validation_every_n": validation_every,
    "validation_max_iter": _fixed("ignored", "validation runs on whole validation subjects"),
    "exclude_fraction_for_validation": _setter(
        "split.validation", lambda v: as_number(v, key="validation")
    ),
    "exclude_fraction_for_inference": _setter(
        "split.test", lambda v: as_number(v, key="inference")
    ),
    "vars_to_restore": _fixed(
        "not supported", "partial restore: start from a zoo model with renaming"
    ),
    "vars_to_freeze": _fixed("not supported", "freezing layers by regex"),
    "rotation_angle": rotation(None),
    "rotation_angle_x": rotation(0),
    "rotation_angle_y": rotation(1),
    "rotation_angle_z": rotation(2),
    "scaling_percentage": scaling,
    "isotropic_scaling": isotropic_scaling,
    "antialiasing": _fixed("ignored", "patch-region resampling interpolates; no whole-volume zoom"),
    "random_flipping_axes": flipping_axes,
    "do_elastic_deformation": elastic,
    "num_ctrl_points": elastic_option(
        "control_points", lambda v: max(as_int(v, key="num_ctrl_points"), 4)
    ),
    "deformation_sigma": elastic_option(
        "max_displacement",
        lambda v: as_number(v, key="deformation_sigma"),
        "(NiftyNet's sigma in voxels; here the largest displacement in mm)",
    ),
    "proportion_to_deform": elastic_option("p", lambda v: as_number(v, key="proportion_to_deform")),
    "bias_field_range": _fixed(
        "not supported", "add a bias-field augmentation to `augmentation` by hand"
    ),
    "bf_order": _fixed("not supported", "add a bias-field augmentation to `augmentation` by hand"),
    "patience": _setter(
        "training.early_stopping_patience", lambda v: max(as_int(v, key="patience"), 1)
    ),
    "early_stopping_mode": _fixed(
        "approximated", "voxelflow stops when training.best_metric stops improving"
    ),
    "queue_length": queue_length,
}


# --------------------------------------------------------------------------- [INFERENCE]
def inference_window(state: State, value: str) -> Outcome:
    window = as_ints(value, key="spatial_window_size", pad_to=3, fill=1)
    if not window:
        return "ignored", "empty: the training window"
    # NiftyNet: a size <= 0 is the whole image along that axis, as voxelflow's 0 / -1
    return "mapped", state.put("inference.window", window) + f" = {window}" + (
        " (<= 0: the whole image along that axis)" if any(size <= 0 for size in window) else ""
    )


def border(state: State, value: str) -> Outcome:
    state.border = as_ints(value, key="border", pad_to=3)
    return "approximated", (
        "inference.blend = crop with inference.overlap = 2·border/window "
        "(each window keeps its centre)"
    )


def inference_iter(state: State, value: str) -> Outcome:
    step = as_int(value, key="inference_iter")
    state.extras["inference_iter"] = step
    if step < 0:
        return "mapped", state.put("inference.checkpoint", "last") + " = last (-1: the latest)"
    state.put("inference.checkpoint", "last")
    return "mapped", (
        f"the net_* commands infer with the checkpoint of step {step} "
        "(`voxelflow infer` takes best or last)"
    )


PHASES = {"training": "train", "validation": "validation", "inference": "test"}


def dataset_to_infer(state: State, value: str) -> Outcome:
    phase = value.strip().strip("'\"").lower()
    if phase and phase not in PHASES:
        raise ConfigError(f"expected training, validation, inference or empty, got {value!r}")
    state.extras["dataset_to_infer"] = phase
    if not phase:
        return "mapped", "the inference split if it is not empty, else every subject (NiftyNet)"
    return "mapped", f"the net_* commands infer the {PHASES[phase]} split"


def _extra(name: str, detail: str) -> Handler:
    def handler(state: State, value: str) -> Outcome:
        state.extras[name] = value.strip().strip("'\"")
        return "mapped", detail

    return handler


def output_interp(state: State, value: str) -> Outcome:
    if as_int(value, key="output_interp_order") == 0:
        return "mapped", "labels are mapped back to the original grid with nearest interpolation"
    return (
        "approximated",
        "labels go back with nearest, regression outputs with linear interpolation",
    )


def fill_constant(state: State, value: str) -> Outcome:
    if as_number(value, key="fill_constant") == 0:
        return "ignored", "0 is voxelflow's fill value too"
    return "not supported", "every voxel is covered by a window; no fill value is needed"


INFERENCE_KEYS: dict[str, Handler] = {
    "spatial_window_size": inference_window,
    "border": border,
    "inference_iter": inference_iter,
    "dataset_to_infer": dataset_to_infer,
    "save_seg_dir": _extra(
        "save_seg_dir", "the net_* commands' output folder (relative: inside model_dir)"
    ),
    "output_postfix": _extra(
        "output_postfix", "the net_* commands write <subject><output_postfix>.nii.gz"
    ),
    "output_interp_order": output_interp,
    "fill_constant": fill_constant,
}


# --------------------------------------------------------------------------- [EVALUATION]
def evaluations(state: State, value: str) -> Outcome:
    names = as_list(value)
    mapped = [EVALUATIONS[n.lower()] for n in names if n.lower() in EVALUATIONS]
    missing = [n for n in names if n.lower() not in EVALUATIONS]
    if mapped:
        state.put("evaluation.metrics", list(dict.fromkeys(mapped)))
    detail = f"evaluation.metrics = {mapped}" + (
        f"; no equivalent for {missing}" if missing else ""
    )
    detail += (
        " (distances are in mm in voxelflow, in voxels in NiftyNet)"
        if {"assd", "hd", "hd95"} & set(mapped)
        else ""
    )
    return ("approximated" if missing else "mapped"), detail


EVALUATION_KEYS: dict[str, Handler] = {
    "evaluations": evaluations,
    "save_csv_dir": _extra(
        "save_csv_dir", "the net_* evaluation's output folder (relative: inside model_dir)"
    ),
}
