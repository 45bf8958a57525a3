"""The autoencoder application: see :mod:`.application` (the Application), :mod:`.task` and :mod:`.evaluation`."""

from voxelflow.applications.autoencoder.application import AutoencoderApplication

__all__ = ["AutoencoderApplication"]
