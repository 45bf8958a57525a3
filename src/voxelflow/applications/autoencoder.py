"""The autoencoder application (being written: see the issue on the other four applications)."""

from __future__ import annotations

from voxelflow.applications.base import Application


class AutoencoderApplication(Application):
    """Placeholder until the module lands; refuses to build."""

    name = "autoencoder"

    @classmethod
    def from_experiment(cls, experiment, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError("the autoencoder application is not implemented yet")
