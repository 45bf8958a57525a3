"""The Python API: the command line's power from a notebook, with no file writing required.

:class:`Experiment` wraps the validated config (:class:`voxelflow.config.schema.ExperimentConfig`,
exported as ``voxelflow.ExperimentConfig``) and runs the same code as ``voxelflow train``,
``voxelflow infer`` and ``voxelflow evaluate``:

- :meth:`Experiment.train` trains (or resumes) into the run folder, like ``voxelflow train``;
- :meth:`Experiment.infer` predicts in memory on :class:`~voxelflow.io.image.Image` s,
  :class:`~voxelflow.io.image.Subject` s or ``(array, affine)`` pairs and returns
  :class:`~voxelflow.applications.base.Prediction` s in each input's original geometry;
- :meth:`Experiment.infer_files` reads files and writes predictions, like ``voxelflow infer``;
- :meth:`Experiment.evaluate` scores predictions against references and returns a table
  (a list of dict rows, or a pandas DataFrame when asked for).

:mod:`voxelflow.api.inputs` turns in-memory inputs into Subjects; :mod:`voxelflow.api.evaluation`
builds the evaluation table.

Example:
    >>> import voxelflow as vf
    >>> experiment = vf.Experiment.from_dict({"network": {"name": "unet", "channels": [4, 8]}})
    >>> experiment.config.network.kwargs
    {'channels': [4, 8]}
    >>> experiment.train()  # doctest: +SKIP
    >>> predictions = experiment.infer([(volume, affine)])  # doctest: +SKIP
    >>> table = experiment.evaluate(predictions, {"case01": reference})  # doctest: +SKIP
"""

from __future__ import annotations

from voxelflow.api.experiment import Experiment

__all__ = ["Experiment"]
