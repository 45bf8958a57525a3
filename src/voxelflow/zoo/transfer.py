"""Transfer learning (``init_from``, ``freeze``): moved to :mod:`voxelflow.engine.transfer`.

The engine applies a config's ``transfer`` section, so the code lives below the zoo; zoo entries
stay a weight source through the ``voxelflow.weight_sources`` entry point. These names are
re-exported so that code importing them from here keeps working.
"""

from __future__ import annotations

from voxelflow.engine.transfer import (
    REGEX_PREFIX,
    TransferReport,
    apply_transfer,
    freeze,
    load_pretrained,
    read_source_state,
    rename_keys,
    trainable_parameters,
)

__all__ = [
    "REGEX_PREFIX",
    "TransferReport",
    "apply_transfer",
    "freeze",
    "load_pretrained",
    "read_source_state",
    "rename_keys",
    "trainable_parameters",
]
