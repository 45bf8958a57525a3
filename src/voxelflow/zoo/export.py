"""Export a network to ONNX or a ``torch.export`` program, with its preprocessing as JSON.

The exported graph takes ``(B, C, *spatial)`` images and returns logits, softmax probabilities
or the argmax label map (``head``). Batch and spatial sizes are dynamic where the network allows
(``torch.export.Dim.AUTO``: sizes the network constrains, e.g. to multiples of 16, stay symbolic
with that constraint or are specialised, and the JSON says which).

Example:
    >>> export_network(net, example_shape=(1, 1, 16, 16, 16), format="onnx", out="net.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.types import PathLike

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torch-export")
HEADS = ("logits", "softmax", "argmax")


class ExportHead(nn.Module):
    """The network followed by softmax or argmax over channels (dim 1).

    Shape:
        input ``(B, C, *spatial)``; output ``(B, K, *spatial)`` (logits, softmax) or
        ``(B, 1, *spatial)`` int64 (argmax).
    """

    def __init__(self, network: nn.Module, head: str) -> None:
        super().__init__()
        self.network = network
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.network(image)
        if isinstance(output, list | tuple):  # deep supervision: the full-resolution output
            output = output[0]
        if self.head == "softmax":
            return torch.softmax(output, dim=1)
        if self.head == "argmax":
            return torch.argmax(output, dim=1, keepdim=True)
        return output


def preprocessing_json_path(out: PathLike) -> Path:
    """``model.onnx`` → ``model.preprocessing.json`` (next to the exported file)."""
    out = Path(out)
    return out.with_name(f"{out.name.split('.')[0]}.preprocessing.json")


def _dynamic_shapes(example_shape: Sequence[int], dynamic: bool) -> Any:
    if not dynamic:
        return None
    return ({axis: torch.export.Dim.AUTO for axis in range(len(example_shape)) if axis != 1},)


def export_network(
    network: nn.Module,
    *,
    example_shape: Sequence[int],
    format: str,
    out: PathLike,
    head: str = "logits",
    dynamic: bool = True,
    preprocessing: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``network`` (eval mode, CPU, float32) and write the preprocessing JSON next to it.

    Args:
        network: the trained network.
        example_shape: ``(B, C, *spatial)`` of the example input used for tracing; choose a
            size the network accepts (e.g. the training window).
        format: ``"onnx"`` (needs onnxscript) or ``"torch-export"`` (a ``.pt2`` program).
        out: output file.
        head: ``"logits"``, ``"softmax"`` or ``"argmax"``.
        dynamic: dynamic batch and spatial sizes where the network allows.
        preprocessing: description written to ``<out stem>.preprocessing.json`` (config
            preprocessing section, fitted state, labels ...).

    Returns:
        The exported file.

    Raises:
        ConfigError: unknown format or head.
        ShapeError: ``example_shape`` is not ``(B, C, *spatial)`` with 2 or 3 spatial axes.

    Shape:
        exported input ``(B, C, *spatial)``; output ``(B, K, *spatial)`` (logits, softmax) or
        ``(B, 1, *spatial)`` int64 (argmax).

    Example:
        >>> shape = (2, 1, 32, 32, 32)
        >>> export_network(network, example_shape=shape, format="onnx", out="model.onnx")  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    if format not in FORMATS:
        raise ConfigError(f"export format: expected one of {FORMATS}, got {format!r}")
    if head not in HEADS:
        raise ConfigError(f"export head: expected one of {HEADS}, got {head!r}")
    if len(example_shape) not in (4, 5) or any(int(size) < 1 for size in example_shape):
        raise ShapeError(
            f"example_shape: expected (B, C, *spatial) with 2 or 3 spatial axes, got {tuple(example_shape)}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = ExportHead(network, head).eval().to("cpu", torch.float32)
    trace_shape = [int(size) for size in example_shape]
    if dynamic:  # a batch of 1 would be specialised (torch.export's 0/1 rule)
        trace_shape[0] = max(trace_shape[0], 2)
    example = torch.randn(*trace_shape)
    with torch.no_grad():
        program = torch.export.export(
            model, (example,), dynamic_shapes=_dynamic_shapes(example_shape, dynamic)
        )
    if format == "torch-export":
        torch.export.save(program, out)
    else:
        _export_onnx(program, out)
    _write_description(out, program, example_shape, format=format, head=head, extra=preprocessing)
    logger.info("exported %s (%s, head %s) to %s", type(network).__name__, format, head, out)
    return out


def _export_onnx(program: torch.export.ExportedProgram, out: Path) -> None:
    # dynamo=True always returns the ONNXProgram; the stub's None is the TorchScript exporter's
    exported = torch.onnx.export(program, dynamo=True, external_data=False)
    onnx_program = cast("torch.onnx.ONNXProgram", exported)
    onnx_program.save(str(out))


def _symbolic_axes(program: torch.export.ExportedProgram) -> list[str | int]:
    placeholder = next(
        node
        for node in program.graph.nodes
        if node.op == "placeholder"
        and node.name not in program.graph_signature.inputs_to_parameters
        and node.name not in program.graph_signature.inputs_to_buffers
    )
    return [size if isinstance(size, int) else str(size) for size in placeholder.meta["val"].shape]


def _write_description(
    out: Path,
    program: torch.export.ExportedProgram,
    example_shape: Sequence[int],
    *,
    format: str,
    head: str,
    extra: Mapping[str, Any] | None,
) -> Path:
    description = {
        "file": out.name,
        "format": format,
        "head": head,
        "input_name": "image",
        "example_shape": [int(size) for size in example_shape],
        "input_shape": _symbolic_axes(program),
        "layout": "(B, C, *spatial), float32, after preprocessing",
        **dict(extra or {}),
    }
    path = preprocessing_json_path(out)
    path.write_text(json.dumps(description, indent=1, default=str), encoding="utf-8")
    return path


def export_source(
    source: PathLike,
    *,
    format: str,
    out: PathLike,
    head: str = "logits",
    dynamic: bool = True,
    batch_size: int = 1,
    window: Sequence[int] | None = None,
    trust_code: bool = False,
) -> Path:
    """Export the network of a run folder or of an installed zoo entry (name or folder).

    The example input is ``(batch_size, in_channels, *window)`` with ``window`` defaulting to
    the inference window, else the training window; the preprocessing JSON carries the config's
    preprocessing section, the fitted state and the label values.
    """
    from voxelflow.zoo.network import (
        input_channels,
        network_from_entry,
        network_from_run,
        read_fitted_state,
    )

    path = Path(source)
    if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
        network, experiment, checkpoint = network_from_run(path)
        fitted = read_fitted_state(path, checkpoint)
    else:
        network, experiment, entry = network_from_entry(source, trust_code=trust_code)
        fitted = None
        if entry.fitted_state_path is not None:
            fitted = json.loads(entry.fitted_state_path.read_text(encoding="utf-8"))
    from voxelflow.applications.segmentation.application import network_window

    window = network_window(window or experiment.inference.window or experiment.sampling.window)
    in_channels = input_channels(network, len(window)) or max(
        len(experiment.dataset.inputs.get("image", [])), 1
    )
    description = {
        "application": str(experiment.application),
        "network": experiment.network.model_dump(mode="json"),
        "preprocessing": experiment.preprocessing.model_dump(mode="json"),
        "fitted_state": fitted,
    }
    return export_network(
        network,
        example_shape=(batch_size, in_channels, *window),
        format=format,
        out=out,
        head=head,
        dynamic=dynamic,
        preprocessing=description,
    )
