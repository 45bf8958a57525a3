"""A progress bar for sliding-window inference: windows done, windows/s and the time left.

Inference of one large volume can take minutes; :func:`~voxelflow.sampling.grid.sliding_window`
therefore reports its windows through :func:`window_bar`, which draws a ``tqdm`` bar while
:func:`window_progress` is active (``voxelflow infer``, zoo inference and the demo turn it on
when standard error is a terminal; the Python API on request) and does nothing otherwise, so
library calls and tests stay silent. A context variable carries the switch, so the applications
between the inference loop and the sliding window need no extra argument.

The same way, :func:`stage_clock` collects the wall seconds of named inference stages
(``read``, ``preprocess``, ``window``, ``invert``, ``write``) that the code doing them marks
with :func:`timed_stage`; ``voxelflow infer`` writes them per subject into its table. Without an
active clock :func:`timed_stage` costs one context-variable lookup.

Example:
    >>> with window_progress(False):
    ...     with window_bar(10) as bar:
    ...         bar.update(10)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_ENABLED: ContextVar[bool] = ContextVar("voxelflow_window_progress", default=False)
_LABEL: ContextVar[str] = ContextVar("voxelflow_window_label", default="sliding window")
_STAGES: ContextVar[dict[str, float] | None] = ContextVar("voxelflow_stage_clock", default=None)
INFERENCE_STAGES = ("read", "preprocess", "window", "invert", "write")


@contextlib.contextmanager
def stage_clock() -> Iterator[dict[str, float]]:
    """Collect stage seconds inside the block into the yielded dict (stage name → seconds).

    Example:
        >>> with stage_clock() as stages:
        ...     with timed_stage("read"):
        ...         pass
        >>> list(stages)
        ['read']
    """
    stages: dict[str, float] = {}
    token = _STAGES.set(stages)
    try:
        yield stages
    finally:
        _STAGES.reset(token)


@contextlib.contextmanager
def timed_stage(name: str) -> Iterator[None]:
    """Add the block's wall seconds to stage ``name`` of the active :func:`stage_clock` (if any).

    A stage inside another (the same name re-entered) is counted once, by the outer block.
    """
    stages = _STAGES.get()
    if stages is None or name in _OPEN.get():
        yield
        return
    token, start = _OPEN.set(_OPEN.get() | {name}), time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
        _OPEN.reset(token)


def stages_timed() -> bool:
    """Whether a :func:`stage_clock` is collecting (e.g. to wait for a GPU before a stage ends)."""
    return _STAGES.get() is not None


_OPEN: ContextVar[frozenset[str]] = ContextVar("voxelflow_open_stages", default=frozenset())


@contextlib.contextmanager
def window_progress(enabled: bool | None = None, *, label: str | None = None) -> Iterator[None]:
    """Show (or hide) sliding-window progress bars inside the block.

    Args:
        enabled: True/False; None: only when standard error is a terminal (a log file or a
            pipe gets no carriage-return bars).
        label: the bar's description (e.g. the subject id); None keeps the current one.
    """
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    token = _ENABLED.set(bool(enabled))
    named = _LABEL.set(label if label is not None else _LABEL.get())  # restored on exit
    try:
        yield
    finally:
        _LABEL.reset(named)
        _ENABLED.reset(token)


def set_window_label(label: str) -> None:
    """Name the bars that follow (e.g. the subject id being inferred) in the current context."""
    _LABEL.set(label)


class _Silent:
    """The bar when progress is off: counts, draws nothing."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, count: int = 1) -> None:
        self.n += count

    def close(self) -> None:
        pass


@contextlib.contextmanager
def window_bar(total: int) -> Iterator[Any]:
    """A bar over ``total`` windows (``update(k)`` after each network call); silent when off."""
    if not _ENABLED.get():
        yield _Silent()
        return
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, desc=_LABEL.get(), unit="window", leave=True, dynamic_ncols=True,
        mininterval=0.5,
    )  # fmt: skip
    try:
        yield bar
    finally:
        bar.close()
