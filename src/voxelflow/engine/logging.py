"""Training logs: console progress bar, log file, TensorBoard and a CSV of every scalar.

Everything here writes on rank 0 only (``enabled=False`` elsewhere makes every method a no-op).
In the run folder: ``logs/train.log`` (Python logging of the ``voxelflow`` logger),
``tensorboard/`` (scalars, image montages, the network graph when it can be traced) and
``scalars.csv`` with columns ``step,name,value``. On resume, rows and TensorBoard events after
the resumed step are dropped, so a killed-and-resumed run logs the same curve as an
uninterrupted one.

Example:
    >>> run_logger = RunLogger("runs/x", total_iterations=100)  # doctest: +SKIP
    >>> run_logger.log_scalars(10, {"train/loss": 0.5})  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
        self._bar: Any = None
        self._file_handler: logging.Handler | None = None
        if not enabled:
            return
        self._truncate_csv(start_iteration)
        self._csv_stream = self.csv_path.open("a", newline="")
        self._csv = csv.writer(self._csv_stream)
        self._attach_log_file(self.root / "logs" / "train.log")
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

    def log_images(self, step: int, images: Mapping[str, torch.Tensor]) -> None:
        """Montages of a few central slices of each volume, name → ``(C, *spatial)``."""
        if not self.enabled or self._writer is None:
            return
        for name, volume in images.items():
            self._writer.add_image(f"images/{name}", montage(volume), step)

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
        if self._file_handler is not None:
            logging.getLogger("voxelflow").removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
