"""Cross-validation: fold runs, out-of-fold evaluation, model comparison, ensembles, postprocessing.

The pieces, each a small module:

* :mod:`voxelflow.cv.folds`: ``voxelflow train --fold K|all``: fold ``K`` of the saved k-fold
  split trained into ``<run_dir>/fold_K/`` (an ordinary run folder); the shared split file and
  preprocessing cache built once under their own locks.
* :mod:`voxelflow.cv.oof`: ``voxelflow cv``: each fold's validation subjects inferred with that
  fold's checkpoint and evaluated by the application's own evaluation into ``<run_dir>/cv/``.
* :mod:`voxelflow.cv.compare`: ``voxelflow cv --compare``: ranking, paired Wilcoxon tests, Holm.
* :mod:`voxelflow.cv.ensemble`: ``voxelflow infer --folds all``: fold models averaged.
* :mod:`voxelflow.cv.postprocess`: per-class connected-component postprocessing decided from the
  out-of-fold predictions.
"""
