"""voxelflow.niftynet: NiftyNet's ``.ini`` configs and ``net_*`` commands, on voxelflow.

* :mod:`.conversion` reads an ``.ini`` into an :class:`~voxelflow.config.schema.ExperimentConfig`
  with a note per key; :mod:`.keys` and :mod:`.training` hold the per-section key handlers,
  :mod:`.assembly` the rules that combine keys, :mod:`.defaults` NiftyNet 0.6.0's defaults
  (extracted by :mod:`.wheel`), :mod:`.slices` and :mod:`.optim` the NiftyNet behaviours
  voxelflow has no native key for.
* :mod:`.commands` parses ``net_segment``/``net_run``/... command lines, :mod:`.actions` runs
  NiftyNet's train/inference/evaluation actions, :mod:`.download` is ``net_download``.
* :mod:`.docs` generates ``docs/migration-niftynet.md`` from these tables.
"""
