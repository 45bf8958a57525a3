"""Self-configuration: ``voxelflow plan`` turns a dataset into complete, commented configs.

:mod:`~voxelflow.planning.fingerprint` measures every subject once (cached); :mod:`~voxelflow.planning.rules`
holds the decisions (spacing, window, strides, batch size, normalisation) as small pure
functions; :mod:`~voxelflow.planning.planner` combines them into configurations (``2d``,
``3d_fullres``, ``3d_lowres``) and :mod:`~voxelflow.planning.write` writes ``plan.json`` and one
commented YAML config per configuration.
"""
