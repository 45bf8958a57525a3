"""Training logs: console progress bar, log file, TensorBoard, a CSV of every scalar, MLflow.

Everything here writes on rank 0 only (``enabled=False`` elsewhere makes every method a no-op).
In the run folder: ``logs/train.log`` (Python logging of the ``voxelflow`` logger),
``tensorboard/`` (scalars, image montages, the network graph when it can be traced) and
``scalars.csv`` with columns ``step,name,value``. On resume, rows and TensorBoard events after
the resumed step are dropped, so a killed-and-resumed run logs the same curve as an
uninterrupted one. With ``logging.mlflow`` set, :class:`MlflowLogger` also logs the resolved
config as params and every scalar as a metric to MLflow (optional extra ``voxelflow[mlflow]``).

Example:
    >>> run_logger = RunLogger("runs/x", total_iterations=100)  # doctest: +SKIP
    >>> run_logger.log_scalars(10, {"train/loss": 0.5})  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from voxelflow.types import PathLike

logger = logging.getLogger(__name__)
CSV_HEADER = ["step", "name", "value"]


def read_scalars(path: PathLike) -> list[tuple[int, str, float]]:
    """Rows of a ``scalars.csv`` as ``(step, name, value)``; malformed lines are skipped."""
    rows: list[tuple[int, str, float]] = []
    path = Path(path)
    if not path.is_file():
        return rows
    with path.open(newline="") as stream:
        for record in csv.reader(stream):
            if len(record) != 3 or record == CSV_HEADER:
                continue
            try:
                rows.append((int(record[0]), record[1], float(record[2])))
            except ValueError:  # a line cut short by a killed process
                continue
    return rows


def _write_scalars(path: Path, rows: list[tuple[int, str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_HEADER)
        writer.writerows((step, name, repr(value)) for step, name, value in rows)


def _normalise(image: torch.Tensor) -> torch.Tensor:
    image = image.float()
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else torch.zeros_like(image)


def montage(volume: torch.Tensor) -> torch.Tensor:
    """A grey-level picture of a volume's first channel: the three central slices side by side.

    Args:
        volume: ``(C, X, Y)`` or ``(C, X, Y, Z)``.

    Returns:
        ``(1, H, W)`` float image in [0, 1] (a 2D image is returned as is, normalised).

    Shape:
        3D: H = max of the slice heights, W = sum of the slice widths.
    """
    data = volume.detach().cpu()[0]
    if data.ndim == 2:
        return _normalise(data)[None]
    centre = [size // 2 for size in data.shape]
    slices = [data[centre[0]], data[:, centre[1]], data[:, :, centre[2]]]
    height = max(s.shape[0] for s in slices)
    padded = [torch.nn.functional.pad(s, (0, 0, 0, height - s.shape[0])) for s in slices]
    return _normalise(torch.cat(padded, dim=1))[None]


def overlay_montage(images: Mapping[str, torch.Tensor]) -> np.ndarray | None:
    """The ``voxelflow view`` montage of a training window, or ``None`` without label maps.

    Args:
        images: ``input`` ``(C, *spatial)`` and ``label`` / ``prediction`` ``(1, *spatial)``
            label maps (integer values stored as floats) of one window, on the window's grid.

    Returns:
        ``(H, W, 3)`` uint8 picture.
    """
    from voxelflow.io.image import Image
    from voxelflow.io.plot import figure_rgb, plot_views

    if "input" not in images or not ({"label", "prediction"} & set(images)):
        return None
    image = Image(images["input"].detach().float().cpu())
    maps = {
        role: Image(images[role].detach().cpu().round().to(torch.int16), kind="label")
        for role in ("label", "prediction")
        if role in images
    }
    figure = plot_views(image, label=maps.get("label"), pred=maps.get("prediction"),
                        title="training window")  # fmt: skip
    return figure_rgb(figure)


class RunLogger:
    """Progress bar, log file, TensorBoard and CSV of one training run (rank 0).

    Args:
        run_dir: the run folder.
        total_iterations: iterations of the whole run, for the progress bar's ETA.
        start_iteration: where this invocation starts (after a resume); later logs are dropped.
        enabled: False on every rank but 0.
        progress: show the console progress bar.
        tensorboard: write TensorBoard event files.
    """

    def __init__(
        self,
        run_dir: PathLike,
        *,
        total_iterations: int,
        start_iteration: int = 0,
        enabled: bool = True,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.root = Path(run_dir)
        self.csv_path = self.root / "scalars.csv"
        self._writer: Any = None
        self._mlflow: MlflowLogger | None = None
        self._bar: Any = None
        self._file_handler: logging.Handler | None = None
        if not enabled:
            return
        self._truncate_csv(start_iteration)
        self._csv_stream = self.csv_path.open("a", newline="")
        self._csv = csv.writer(self._csv_stream)
        self._attach_log_file(self.root / "logs" / "train.log")
        self._mlflow = open_mlflow(self.root)  # logging.mlflow of the run's config.yaml
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = start_iteration + 1 if start_iteration > 0 else None
            self._writer = SummaryWriter(str(self.root / "tensorboard"), purge_step=purge)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_iterations, initial=start_iteration, unit="it", dynamic_ncols=True
            )

    def _truncate_csv(self, start_iteration: int) -> None:
        rows = [row for row in read_scalars(self.csv_path) if row[0] <= start_iteration]
        _write_scalars(self.csv_path, rows)

    def _attach_log_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package_logger = logging.getLogger("voxelflow")
        package_logger.addHandler(handler)
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        self._file_handler = handler

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Append scalars (``"train/loss"``, ``"val/dice"``, ``"lr/default"`` ...) to CSV and TensorBoard."""
        if not self.enabled:
            return
        for name, value in scalars.items():
            value = float(value)
            self._csv.writerow((step, name, repr(value)))
            if self._writer is not None and math.isfinite(value):
                self._writer.add_scalar(name, value, step)
        self._csv_stream.flush()
        if self._mlflow is not None:
            self._mlflow.log_scalars(step, scalars)

    def log_images(self, step: int, images: Mapping[str, torch.Tensor]) -> None:
        """Montages of a few central slices of each volume, name → ``(C, *spatial)``.

        When the volumes hold an ``input`` and a ``label`` and/or ``prediction`` label map
        (segmentation), ``images/overlay`` also shows the montage of ``voxelflow view``:
        orthogonal slices through the label's centre with the label maps as coloured overlays.
        """
        if not self.enabled or self._writer is None:
            return
        for name, volume in images.items():
            self._writer.add_image(f"images/{name}", montage(volume), step)
        overlay = overlay_montage(images)
        if overlay is not None:
            self._writer.add_image("images/overlay", overlay, step, dataformats="HWC")

    def log_graph(self, module: nn.Module, example: torch.Tensor) -> None:
        """The network graph, traced on an example input; skipped with a note when tracing fails."""
        if not self.enabled or self._writer is None:
            return
        try:
            with warnings.catch_warnings():  # tracer chatter about shape checks is expected here
                warnings.simplefilter("ignore")
                self._writer.add_graph(module, example)
        except Exception as exc:  # tracing fails for many dynamic networks; the graph is optional
            logger.info(
                "network graph not written to TensorBoard (%s: %s)", type(exc).__name__, exc
            )

    def update_progress(self, steps: int = 1, **postfix: float) -> None:
        """Advance the progress bar; ``postfix`` values (loss ...) are shown next to it."""
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(
                {key: f"{value:.4g}" for key, value in postfix.items()}, refresh=False
            )
        self._bar.update(steps)

    def close(self) -> None:
        """Flush and close every output (safe to call twice)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._csv_stream.closed:
            self._csv_stream.close()
        if self._mlflow is not None:
            # called from the trainer's ``finally``: an exception on its way out means failure
            raised = sys.exc_info()[0]
            status = "FINISHED" if raised is None else "FAILED"
            if raised is not None and issubclass(raised, KeyboardInterrupt):
                status = "KILLED"
            self._mlflow.log_artifact(self.csv_path)
            self._mlflow.close(status)
            self._mlflow = None
        if self._file_handler is not None:
            logging.getLogger("voxelflow").removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None


# --------------------------------------------------------------------------------------- MLflow

#: where a run folder remembers its MLflow run, so a resumed training logs into the same run
MLFLOW_RUN_FILE = "mlflow.json"
#: MLflow's limits on a parameter's key and value length
_PARAM_KEY_LIMIT, _PARAM_VALUE_LIMIT = 250, 6000


def mlflow_settings(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``logging.mlflow`` of a resolved config (plain mapping), or ``None`` when it is off."""
    if not config:
        return None
    section = (config.get("logging") or {}).get("mlflow")
    return dict(section) if section else None


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ModuleNotFoundError:
        from voxelflow.errors import ConfigError

        raise ConfigError(
            "logging.mlflow: MLflow is not installed; install the optional extra: "
            "pip install 'voxelflow[mlflow]' (or set logging.mlflow: null)"
        ) from None
    return mlflow


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params ``{"network.name": "unet", ...}``.

    Lists become their YAML flow text (``[32, 64]``); a list of components (augmentation) is
    one param per item (``augmentation.0.name``). Keys and values are cut to MLflow's limits.
    """
    params: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            params.update(flat_params(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                params.update(flat_params(item, f"{name}.{index}."))
        else:
            text = "null" if value is None else _flow_text(value)
            params[name[:_PARAM_KEY_LIMIT]] = text[:_PARAM_VALUE_LIMIT]
    return params


def _flow_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        import json

        return json.dumps(list(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class MlflowLogger:
    """One MLflow run per run folder: params at the start, scalars as they are logged.

    The MLflow run id is kept in ``<run_dir>/mlflow.json``: a resumed training, and later
    :func:`log_artifacts` calls (evaluation report, zoo entry), go to the same MLflow run. A
    tracking server that stops answering mid-run costs a warning, not the training.

    Args:
        run_dir: the run folder.
        settings: ``logging.mlflow`` (``tracking_uri``, ``experiment``, ``run_name``,
            ``artifact_location``).
        config: the resolved config, logged as params on a new run.
        training: a training (the run is marked running until :meth:`close`); false for
            adding artefacts to a run that may be finished.

    Raises:
        ConfigError: MLflow is not installed (the extra is named).
    """

    def __init__(
        self,
        run_dir: PathLike,
        settings: Mapping[str, Any],
        config: Mapping[str, Any] | None,
        *,
        training: bool = True,
    ) -> None:
        self.mlflow = _import_mlflow()
        self.root = Path(run_dir)
        self.client = self._client(settings)
        self.run_id, resumed = self._open_run(settings, training=training)
        self.failed = False
        if config and not resumed:
            self._safely(self._log_params, config)
        logger.info(
            "MLflow: %s run %s (experiment %r, %s)",
            "resumed" if resumed else "started", self.run_id, settings.get("experiment"),
            self.client.tracking_uri,
        )  # fmt: skip

    def _client(self, settings: Mapping[str, Any]) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=settings.get("tracking_uri") or None)

    def _open_run(self, settings: Mapping[str, Any], *, training: bool) -> tuple[str, bool]:
        import json

        record = self.root / MLFLOW_RUN_FILE
        if record.is_file():
            saved = json.loads(record.read_text(encoding="utf-8"))
            if saved.get("tracking_uri") == self.client.tracking_uri:
                run = self.client.get_run(saved["run_id"])
                if run is not None:
                    if training:  # adding artefacts later leaves a finished run finished
                        self.client.update_run(run.info.run_id, status="RUNNING")
                    return run.info.run_id, True
        name = settings.get("experiment") or "voxelflow"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(
                name, artifact_location=settings.get("artifact_location") or None
            )
        )
        run = self.client.create_run(
            experiment_id,
            run_name=settings.get("run_name") or self.root.resolve().name,
            tags={"voxelflow.run_dir": str(self.root.resolve())},
        )
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"run_id": run.info.run_id, "tracking_uri": self.client.tracking_uri})
        record.write_text(text + "\n", encoding="utf-8")
        return run.info.run_id, False

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def _safely(self, action: Callable[..., object], *args: object) -> None:
        if self.failed:
            return
        try:
            action(*args)
        except Exception as exc:  # a tracking outage must not end a training
            self.failed = True
            logger.warning(
                "MLflow logging stopped (%s: %s); the run folder keeps every log",
                type(exc).__name__, exc,
            )  # fmt: skip

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log finite scalars at ``step`` (names as in ``scalars.csv``: ``train/loss`` ...)."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), stamp, int(step))
            for name, value in scalars.items()
            if math.isfinite(float(value))
        ]
        if metrics:
            self._safely(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def log_artifact(self, path: PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's files (under ``artifact_path`` in the run)."""
        path = Path(path)
        if path.is_dir():
            self._safely(self.client.log_artifacts, self.run_id, str(path), artifact_path)
        else:
            self._safely(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        """Mark the MLflow run ended (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        self._safely(self.client.set_terminated, self.run_id, status)


def open_mlflow(run_dir: PathLike, *, training: bool = True) -> MlflowLogger | None:
    """The MLflow logger of a run folder whose ``config.yaml`` enables ``logging.mlflow``.

    Reads the resolved config the run folder holds (written before training starts), so the
    trainer and later steps (evaluation, zoo pack) find the same settings without passing them.
    """
    from voxelflow.config.load import read_yaml

    path = Path(run_dir) / "config.yaml"
    config = read_yaml(path) if path.is_file() else None
    settings = mlflow_settings(config)
    if settings is None:
        return None
    return MlflowLogger(run_dir, settings, config, training=training)


def log_artifacts(run_dir: PathLike, paths: Mapping[str, PathLike]) -> bool:
    """Upload ``{artifact folder: file or folder}`` to the run folder's MLflow run, if enabled.

    Called after evaluation (the report) and zoo packing (the entry). Returns whether MLflow
    is enabled for this run folder.
    """
    tracker = open_mlflow(run_dir, training=False)
    if tracker is None:
        return False
    for artifact_path, path in paths.items():
        tracker.log_artifact(path, artifact_path or None)
    return True
