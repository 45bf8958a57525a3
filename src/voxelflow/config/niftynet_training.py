"""NiftyNet ``[SYSTEM]``, ``[TRAINING]``, ``[INFERENCE]`` and ``[EVALUATION]`` key handlers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from voxelflow.config.niftynet_keys import (
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
    devices = as_list(value)
    if not devices:
        return "ignored", "empty: the default device (system.device = auto)"
    if len(devices) == 1:
        return "mapped", state.put("system.device", f"cuda:{devices[0]}") + f" = cuda:{devices[0]}"
    return "not supported", "several GPUs: run `torchrun --nproc_per_node=N voxelflow train ...`"


def num_gpus(state: State, value: str) -> Outcome:
    if as_int(value, key="num_gpus") <= 1:
        return "ignored", "one device is the default"
    return (
        "not supported",
        "data parallelism: run `torchrun --nproc_per_node=N voxelflow train ...`",
    )


def model_dir(state: State, value: str) -> Outcome:
    path = Path(value.strip().strip("'\""))
    resolved = path if path.is_absolute() else state.config_dir / path  # NiftyNet: config-relative
    return "mapped", state.put("system.run_dir", str(resolved)) + f" = {resolved}"


def split_file(state: State, value: str) -> Outcome:
    path = Path(value.strip().strip("'\""))
    run_dir = Path(state.get("system.run_dir", "."))
    resolved = path if path.is_absolute() else run_dir / path
    if resolved.is_file():
        return "mapped", state.put("split.file", str(resolved)) + f" = {resolved}"
    return (
        "ignored",
        f"{resolved} does not exist; voxelflow draws the split and saves it in the run folder",
    )


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
    entry = OPTIMIZERS.get(value.strip().lower())
    if entry is None:
        return "not supported", f"optimiser {value.strip()!r} (known: {', '.join(OPTIMIZERS)})"
    name, options = entry
    state.put("optimizer.name", name)
    for option, option_value in options.items():
        state.put(f"optimizer.{option}", option_value)
    return "mapped", f"optimizer.name = {name}" + "".join(
        f", {k} = {v}" for k, v in options.items()
    )


def loss_type(state: State, value: str) -> Outcome:
    name = value.strip().strip("'\"")
    if state.application == "regression":
        table = REGRESSION_LOSSES
    elif state.application in ("classification", "gan") and name.lower() == "crossentropy":
        mapped = (
            "classification_ce" if state.application == "classification" else "gan_nonsaturating"
        )
        return "mapped", state.put("loss", {"name": mapped}) + f".name = {mapped}"
    elif state.application == "autoencoder" and name.lower() == "variationallowerbound":
        return "approximated", state.put(
            "loss", {"name": "vae"}
        ) + ".name = vae (reconstruction + KL)"
    else:
        table = SEGMENTATION_LOSSES
    entry = table.get(name.lower())
    if entry is None:
        return (
            "not supported",
            f"loss {name!r} for {state.application} (known: {', '.join(sorted(table))})",
        )
    mapped, options, remark = entry
    state.put("loss", {"name": mapped, **options})
    detail = f"loss.name = {mapped}" + "".join(f", {k} = {v}" for k, v in options.items())
    return ("approximated" if remark else "mapped"), detail + (f" ({remark})" if remark else "")


def starting_iter(state: State, value: str) -> Outcome:
    if as_int(value, key="starting_iter") == 0:
        return "ignored", "0 = start from random weights (the default)"
    return "not supported", "resume with `voxelflow train --resume`, or start from a zoo model"


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
    state.augment.setdefault("affine", {})["scaling"] = factors
    return (
        "mapped",
        f"augmentation affine scaling {factors} (factor; NiftyNet zoomed the whole volume)",
    )


def isotropic_scaling(state: State, value: str) -> Outcome:
    state.augment.setdefault("affine", {})["isotropic"] = as_bool(value, key="isotropic_scaling")
    return "mapped", f"augmentation affine isotropic = {value.strip()}"


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
    return "mapped", state.put("inference.window", window) + f" = {window}"


def border(state: State, value: str) -> Outcome:
    state.border = as_ints(value, key="border", pad_to=3)
    return "approximated", (
        "inference.blend = crop with inference.overlap = 2·border/window "
        "(each window keeps its centre)"
    )


def inference_iter(state: State, value: str) -> Outcome:
    if as_int(value, key="inference_iter") < 0:
        return "mapped", state.put("inference.checkpoint", "last") + " = last"
    return "not supported", "a numbered checkpoint: voxelflow infers with 'best' or 'last'"


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
    "dataset_to_infer": _fixed(
        "ignored", "choose the subjects on the `voxelflow infer` command line"
    ),
    "save_seg_dir": _fixed("ignored", "give the output folder to `voxelflow infer -o`"),
    "output_postfix": _fixed("ignored", "voxelflow names outputs after the subject"),
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
    "save_csv_dir": _fixed("ignored", "give the output folder to `voxelflow evaluate`"),
}
