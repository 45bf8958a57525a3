"""NiftyNet key tables: one small handler per ``[SECTION] key`` (used by :mod:`.niftynet`).

Each handler receives the conversion state and the raw INI value, writes into the experiment
dict and returns ``(status, detail)`` for the conversion report. Statuses: ``mapped``,
``approximated`` (a close but not identical voxelflow equivalent), ``not supported`` and
``ignored`` (no effect needed in voxelflow, with the reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxelflow.errors import ConfigError

Outcome = tuple[str, str]


@dataclass(frozen=True)
class ConversionNote:
    """What became of one ``[SECTION] key = value`` of the NiftyNet file."""

    section: str
    key: str
    value: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.section}] {self.key} = {self.value}: {self.status}: {self.detail}"


@dataclass
class State:
    """What the conversion has built so far."""

    data: dict[str, Any] = field(default_factory=dict)
    config_dir: Path = Path(".")
    application: str = "segmentation"
    normalizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    mask: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, dict[str, Any]] = field(default_factory=dict)
    border: list[int] | None = None
    save_every_zero: bool = False
    #: histogram-standardisation options (norm_type, cutoff); used only with normalisation = True
    histogram: dict[str, Any] = field(default_factory=dict)
    #: [NETWORK] decay and reg_type, combined at the end (either may come first in the file)
    regulariser: dict[str, Any] = field(default_factory=dict)
    #: settings only the ``net_*`` commands use (save_seg_dir, dataset_to_infer, cuda_devices ...)
    extras: dict[str, Any] = field(default_factory=dict)
    #: (section, key, status, detail) replacing a key's note once the whole file is known
    notes_later: list[tuple[str, str, str, str]] = field(default_factory=list)

    def put(self, dotted: str, value: Any) -> str:
        """Set ``a.b.c`` in the experiment dict; returns the dotted key (for the report)."""
        node = self.data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        return dotted

    def get(self, dotted: str, default: Any = None) -> Any:
        """Read ``a.b.c`` from the experiment dict."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


# --------------------------------------------------------------------------- value parsing
def as_list(value: str) -> list[str]:
    """``(a, b)``, ``{a, b}``, ``[a, b]`` or ``a, b`` → ``["a", "b"]`` (quotes stripped)."""
    text = value.strip().strip("()[]{}")
    return [item.strip().strip("'\"") for item in text.split(",") if item.strip().strip("'\"")]


def as_bool(value: str, *, key: str) -> bool:
    """NiftyNet booleans: yes/no/true/false/t/f/y/n/1/0."""
    text = value.strip().strip("'\"").lower()
    if text in ("yes", "true", "t", "y", "1"):
        return True
    if text in ("no", "false", "f", "n", "0"):
        return False
    raise ConfigError(f"{key}: expected a boolean (yes/no/true/false/1/0), got {value!r}")


def as_number(value: str, *, key: str) -> float:
    """A number (int-valued floats stay usable as ints through :func:`as_int`)."""
    try:
        return float(value.strip().strip("'\""))
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None


def as_int(value: str, *, key: str) -> int:
    """An integer."""
    number = as_number(value, key=key)
    if number != int(number):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return int(number)


def as_ints(
    value: str, *, key: str, pad_to: int | None = None, fill: int | None = None
) -> list[int]:
    """Integers; ``pad_to`` repeats the last (``fill=None``) or appends ``fill`` up to that length."""
    numbers = [as_int(v, key=key) for v in as_list(value)]
    while pad_to and numbers and len(numbers) < pad_to:
        numbers.append(numbers[-1] if fill is None else fill)
    return numbers


# --------------------------------------------------------------------------- name tables
NETWORKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "toynet": ("toynet", {}, ""),
    "unet": (
        "unet",
        {},
        "voxelflow's U-Net uses same-size convolutions; NiftyNet's UNet3D used valid ones",
    ),
    "unet_2d": ("unet", {}, "same-size convolutions; set spatial window (h, w, 1) for 2-D"),
    "nonewnet": (
        "unet",
        {"norm": "instance", "act": "leaky_relu"},
        "nnU-Net-style U-Net with instance norm",
    ),
    "vnet": ("vnet", {}, ""),
    "highres3dnet": ("highresnet", {}, ""),
    "highres3dnet_small": ("highresnet", {"variant": "small"}, ""),
    "highres3dnet_large": ("highresnet", {"variant": "large"}, ""),
    "dense_vnet": ("dense_vnet", {}, ""),
    "deepmedic": ("deepmedic", {}, ""),
    "scalenet": ("scalenet", {}, ""),
    "holisticnet": ("holistic_net", {}, ""),
    "holistic_scalenet": ("holistic_net", {}, ""),  # NiftyNet 0.2's name of HolisticNet
    "resnet": ("resnet", {}, ""),
    "se_resnet": ("se_resnet", {}, ""),
    "vae": ("vae", {}, ""),
    "simple_gan": (
        "generator",
        {},
        "the generator; the discriminator is built by the gan application",
    ),
    "simulator_gan": ("generator", {}, "image-conditioned generator"),
}
#: NiftyNet's network class paths (niftynet/engine/application_factory.py SUPPORTED_NETWORK)
NETWORK_CLASSES: dict[str, str] = {
    "niftynet.network.simulator_gan.SimulatorGAN": "simulator_gan",
    "niftynet.network.simple_gan.SimpleGAN": "simple_gan",
    "niftynet.network.highres3dnet.HighRes3DNet": "highres3dnet",
    "niftynet.network.highres3dnet_small.HighRes3DNetSmall": "highres3dnet_small",
    "niftynet.network.highres3dnet_large.HighRes3DNetLarge": "highres3dnet_large",
    "niftynet.network.toynet.ToyNet": "toynet",
    "niftynet.network.unet.UNet3D": "unet",
    "niftynet.network.no_new_net.UNet3D": "nonewnet",
    "niftynet.network.vnet.VNet": "vnet",
    "niftynet.network.dense_vnet.DenseVNet": "dense_vnet",
    "niftynet.network.deepmedic.DeepMedic": "deepmedic",
    "niftynet.network.scalenet.ScaleNet": "scalenet",
    "niftynet.network.holistic_net.HolisticNet": "holisticnet",
    "niftynet.network.unet_2d.UNet2D": "unet_2d",
    "niftynet.network.resnet.ResNet": "resnet",
    "niftynet.network.se_resnet.SE_ResNet": "se_resnet",
    "niftynet.network.vae.VAE": "vae",
}
SEGMENTATION_LOSSES: dict[str, tuple[str, dict[str, Any], str]] = {
    "dice": ("dice", {"squared": True}, ""),
    "dice_ns": ("dice", {"squared": False}, ""),
    "dice_dense": ("dice", {"squared": True}, "dense/one-hot targets are accepted by 'dice'"),
    "dice_dense_ns": ("dice", {"squared": False}, "dense/one-hot targets are accepted by 'dice'"),
    "gdsc": ("generalized_dice", {"weight_type": "square"}, ""),
    "diceplusxent": (
        "dice_ce",
        {},
        "NiftyNet's value is shifted by -1 (negative Dice); same gradients",
    ),
    "crossentropy": ("cross_entropy", {}, ""),
    "crossentropy_dense": ("cross_entropy", {}, "dense targets are accepted by 'cross_entropy'"),
    "tversky": (
        "tversky",
        {},
        "NiftyNet pooled TP/FP/FN over classes; voxelflow averages per class",
    ),
    "sensspec": ("sensitivity_specificity", {}, ""),
    "wgdl": ("wasserstein_dice", {}, ""),
}
REGRESSION_LOSSES: dict[str, tuple[str, dict[str, Any], str]] = {
    "l1loss": ("l1", {}, ""),
    "mae": ("l1", {}, ""),
    "mse": ("l2", {}, ""),  # NiftyNet 0.2's mean squared error; voxelflow's l2 is that mean
    "l2loss": ("l2", {}, "NiftyNet's L2Loss is a sum/2; voxelflow's l2 is a mean (rescale lr)"),
    "rmse": ("rmse", {}, ""),
    "huber": ("huber", {}, ""),
    "smoothl1": ("smooth_l1", {}, "threshold definitions differ slightly"),
}
#: NiftyNet optimiser → (voxelflow optimiser, options, what still differs); the options are the
#: TensorFlow settings of niftynet/engine/application_optimiser.py.
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "adam": ("adam", {"betas": [0.9, 0.999], "eps": 1e-8}, ""),
    "gradientdescent": ("sgd", {"momentum": 0.0}, ""),
    "momentum": ("sgd", {"momentum": 0.9}, ""),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}, ""),
    "adagrad": (
        "adagrad",
        {"initial_accumulator_value": 0.1},
        "torch adds eps 1e-10 to the root; TensorFlow did not",
    ),
    "rmsprop": (
        "rmsprop",
        {"alpha": 0.9, "eps": 1e-10},
        "TensorFlow added eps inside the square root, torch outside",
    ),
}
ACTIVATIONS = {
    "relu": "relu",
    "elu": "elu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "prelu": "prelu",
    "selu": "selu",
    "leakyrelu": "leaky_relu",
}
FOREGROUND = {"otsu_plus": "otsu", "threshold_plus": "threshold", "mean_plus": "mean"}
EVALUATIONS = {
    "dice": "dice",
    "jaccard": "jaccard",
    "intersection_over_union": "jaccard",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "false_positive_rate": "fpr",
    "positive_predictive_values": "precision",
    "negative_predictive_values": "npv",
    "informedness": "informedness",
    "markedness": "markedness",
    "tp": "tp",
    "fp": "fp",
    "fn": "fn",
    "tn": "tn",
    "average_distance": "assd",
    "hausdorff_distance": "hd",
    "hausdorff95_distance": "hd95",
}
ROLES = {
    "image": "image",
    "label": "label",
    "weight": "weight",
    "sampler": "sampling_map",
    "output": "target",
    "conditioning": "conditioning",
}


def _component(
    table: dict[str, tuple[str, dict[str, Any], str]], value: str, *, key: str, what: str
) -> tuple[str, dict[str, Any], str]:
    name = value.strip().strip("'\"")
    entry = table.get(name.lower())
    if entry is None:
        raise LookupError(f"no voxelflow {what} for {name!r} (known: {', '.join(sorted(table))})")
    return entry


# --------------------------------------------------------------------------- [NETWORK]
def network_name(state: State, value: str) -> Outcome:
    """A NiftyNet network name (``highres3dnet``), class path
    (``niftynet.network.toynet.ToyNet``) or a voxelflow plugin ``package.module:Class``.

    Raises:
        ConfigError: a network voxelflow cannot build (no silent fallback to another network).
    """
    given = value.strip().strip("'\"")
    if ":" in given:  # a voxelflow plugin path: built as given
        return "mapped", state.put("network.name", given) + f" = {given} (voxelflow plugin)"
    short = NETWORK_CLASSES.get(given, given)
    entry = NETWORKS.get(short.lower())
    if entry is None:
        what = (
            "a TensorFlow network class, which voxelflow cannot run"
            if "." in given
            else "not a NiftyNet network name"
        )
        raise ConfigError(
            f"{given!r} is {what}; expected one of {', '.join(sorted(NETWORKS))}, a NiftyNet "
            "class path such as niftynet.network.toynet.ToyNet, or a voxelflow plugin "
            "'package.module:Class'"
        )
    name, options, remark = entry
    state.put("network.name", name)
    for option, option_value in options.items():
        state.put(f"network.{option}", option_value)
    via = f" (NiftyNet class {given} = {short})" if short != given else ""
    return ("approximated" if remark else "mapped"), f"network.name = {name}{via}" + (
        f"; approximated: {remark}" if remark else ""
    )


def activation(state: State, value: str) -> Outcome:
    name = ACTIVATIONS.get(value.strip().lower())
    if name is None:
        return (
            "not supported",
            f"no voxelflow activation {value!r} (known: {', '.join(sorted(ACTIVATIONS))})",
        )
    return "mapped", state.put(
        "network.act", name
    ) + f" = {name} (networks without 'act' reject it at build)"


def keep_prob(state: State, value: str) -> Outcome:
    probability = as_number(value, key="keep_prob")
    if probability >= 1.0:
        return "ignored", "keep_prob 1 means no dropout (the default)"
    return "mapped", state.put(
        "network.dropout", round(1.0 - probability, 6)
    ) + f" = {1 - probability:g}"


def decay(state: State, value: str) -> Outcome:
    amount = as_number(value, key="decay")
    if amount < 0:
        raise ConfigError(f"expected decay >= 0, got {value!r}")
    state.regulariser["decay"] = amount
    return "mapped", f"regularisation strength {amount:g} (see reg_type)"


def reg_type(state: State, value: str) -> Outcome:
    kind = value.strip().strip("'\"").upper()
    if kind not in ("L1", "L2"):
        raise ConfigError(f"expected reg_type L1 or L2, got {value!r}")
    state.regulariser["type"] = kind
    return "mapped", f"{kind} penalty decay·{'Σ|w|' if kind == 'L1' else 'Σw²/2'} (see decay)"


def window_sampling(state: State, value: str) -> Outcome:
    name = value.strip().lower()
    if name not in ("uniform", "weighted", "balanced", "resize"):
        return (
            "not supported",
            f"sampler {name!r}; voxelflow has uniform, weighted, balanced, resize",
        )
    return "mapped", state.put("sampling.sampler", {"name": name}) + f" = {name}"


def normalisation(state: State, value: str) -> Outcome:
    if as_bool(value, key="normalisation"):
        state.normalizers.setdefault("histogram_standardization", {})
        return "mapped", "preprocessing.normalization += histogram_standardization (Nyúl)"
    state.normalizers.pop("histogram_standardization", None)
    return "mapped", "no histogram standardisation"


def whitening(state: State, value: str) -> Outcome:
    if as_bool(value, key="whitening"):
        state.normalizers.setdefault("zscore", {})
        return "mapped", "preprocessing.normalization += zscore"
    state.normalizers.pop("zscore", None)
    return "mapped", "no whitening"


def norm_type(state: State, value: str) -> Outcome:
    landmarks = value.strip().strip("'\"").lower()
    if landmarks not in ("percentile", "quartile", "median"):
        raise ConfigError(f"expected norm_type percentile, quartile or median, got {value!r}")
    state.histogram["landmarks"] = landmarks
    return "mapped", f"histogram_standardization.landmarks = {landmarks}"


def cutoff(state: State, value: str) -> Outcome:
    bounds = [as_number(v, key="cutoff") * 100.0 for v in as_list(value)]
    if len(bounds) != 2:
        raise ConfigError(f"expected two fractions (low, high), got {value!r}")
    state.histogram["cutoff"] = bounds
    return "mapped", f"histogram_standardization.cutoff = [{bounds[0]:g}, {bounds[1]:g}] (percent)"


def histogram_ref_file(state: State, value: str) -> Outcome:
    # resolved against model_dir once the whole file is read (niftynet_assembly)
    state.extras["histogram_ref_file"] = value.strip().strip("'\"")
    return "mapped", "landmarks fitted on the training subjects, kept in the run folder"


def rgb_normalisation(state: State, value: str) -> Outcome:
    if as_bool(value, key="rgb_normalisation"):
        raise ConfigError("True: RGB histogram equalisation has no voxelflow equivalent")
    return "mapped", "no RGB histogram equalisation"


def foreground_only(state: State, value: str) -> Outcome:
    state.mask["enabled"] = as_bool(value, key="normalise_foreground_only")
    return "mapped", "normalisation statistics inside the foreground mask" if state.mask[
        "enabled"
    ] else "normalisation statistics over the whole image"


def foreground_type(state: State, value: str) -> Outcome:
    method = FOREGROUND.get(value.strip().lower())
    if method is None:
        return (
            "not supported",
            f"foreground {value.strip()!r}; voxelflow has {', '.join(FOREGROUND)}",
        )
    state.mask["mask"] = method
    return "mapped", f"normalisation mask = {method} (used with normalise_foreground_only)"


def multimod_foreground(state: State, value: str) -> Outcome:
    combine = {"and": "and", "or": "or", "multi": "per_channel"}.get(value.strip().lower())
    if combine is None:
        return "not supported", f"{value.strip()!r}; expected and, or, multi"
    state.mask["mask_combine"] = combine
    return "mapped", f"normalisation mask_combine = {combine}"


def queue_length(state: State, value: str) -> Outcome:
    return "mapped", state.put(
        "sampling.queue_length", as_int(value, key="queue_length")
    ) + f" = {value.strip()}"


def batch_size(state: State, value: str) -> Outcome:
    return "mapped", state.put(
        "training.batch_size", as_int(value, key="batch_size")
    ) + f" = {value.strip()}"


def _fixed(status: str, detail: str) -> Callable[[State, str], Outcome]:
    def handler(state: State, value: str) -> Outcome:
        return status, detail

    return handler


def _setter(dotted: str, parse: Callable[[str], Any]) -> Callable[[State, str], Outcome]:
    def handler(state: State, value: str) -> Outcome:
        parsed = parse(value)
        return "mapped", f"{state.put(dotted, parsed)} = {parsed}"

    return handler


NETWORK_KEYS: dict[str, Callable[[State, str], Outcome]] = {
    "name": network_name,
    "activation_function": activation,
    "batch_size": batch_size,
    "smaller_final_batch_mode": _fixed(
        "ignored",
        "training draws windows from an endless queue; inference runs partial last batches",
    ),
    "decay": decay,
    "reg_type": reg_type,
    "volume_padding_size": _fixed(
        "ignored",
        "windows reaching past the image are padded with "
        "sampling.pad_value, so every voxel can be sampled and inferred",
    ),
    "volume_padding_mode": _fixed("approximated", "padding uses the constant sampling.pad_value"),
    "volume_padding_to_size": _fixed(
        "ignored", "windows larger than the image are padded automatically"
    ),
    "window_sampling": window_sampling,
    "force_output_identity_resizing": _fixed(
        "not supported", "use the classification or resize sampler"
    ),
    "queue_length": queue_length,
    "normalisation": normalisation,
    "whitening": whitening,
    "rgb_normalisation": rgb_normalisation,
    "histogram_ref_file": histogram_ref_file,
    "norm_type": norm_type,
    "cutoff": cutoff,
    "normalise_foreground_only": foreground_only,
    "foreground_type": foreground_type,
    "multimod_foreground_type": multimod_foreground,
    "weight_initializer": _fixed("ignored", "networks use PyTorch's (He) initialisation"),
    "bias_initializer": _fixed("ignored", "biases start at PyTorch's default"),
    "weight_initializer_args": _fixed("ignored", "NiftyNet did not pass them on either"),
    "bias_initializer_args": _fixed("ignored", "NiftyNet did not pass them on either"),
    "keep_prob": keep_prob,
}
