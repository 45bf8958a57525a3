"""voxelflow.zoo: share trained models (entries), transfer learning and export.

- :mod:`~voxelflow.zoo.entry`: the ``model.yaml`` card (:class:`ModelCard`).
- :mod:`~voxelflow.zoo.archive`: path-safe extraction of ``.zip`` / ``.tar.gz`` entries.
- :mod:`~voxelflow.zoo.store`: the zoo home; install, list, resolve, remove, plugin trust.
- :mod:`~voxelflow.zoo.network`: an entry's or run's application rebuilt, every module loaded.
- :mod:`~voxelflow.zoo.infer`: `voxelflow infer --model`: inference with an installed entry.
- :mod:`~voxelflow.zoo.pack`: a run folder → an entry (config scrubbed of machine paths).
- :mod:`~voxelflow.zoo.transfer`: ``init_from`` (renames, include/exclude) and ``freeze``
  (re-exported from :mod:`voxelflow.engine.transfer`).
- :mod:`~voxelflow.zoo.export`: ONNX / ``torch.export`` with the preprocessing JSON.
"""

from __future__ import annotations

from voxelflow.zoo.entry import ModelCard, load_card
from voxelflow.zoo.network import application_from_entry, application_from_run, load_entry_modules
from voxelflow.zoo.store import (
    InstalledModel,
    install,
    installed_entries,
    load_weights,
    remove,
    resolve_model,
    trusted_plugins,
    verify_entry,
    zoo_home,
)
from voxelflow.zoo.transfer import TransferReport, apply_transfer, freeze, load_pretrained

__all__ = [
    "InstalledModel",
    "ModelCard",
    "TransferReport",
    "application_from_entry",
    "application_from_run",
    "apply_transfer",
    "freeze",
    "install",
    "installed_entries",
    "load_card",
    "load_entry_modules",
    "load_pretrained",
    "load_weights",
    "remove",
    "resolve_model",
    "trusted_plugins",
    "verify_entry",
    "zoo_home",
]
