"""Turn a failing disk (read-only, full, no permission) into one clear line naming the file.

Every file voxelflow writes is written atomically (a temporary file renamed into place), so a
failed write leaves the previous file as it was. What the user needs is the file that could not
be written, the reason in words, and what to do; not an ``OSError`` traceback from deep inside
``torch.save`` or nibabel. :func:`writing` wraps a write, :func:`make_folder` creates a folder
named by a config key.

Example:
    >>> with writing("out/seg.nii.gz", what="prediction"):  # doctest: +SKIP
    ...     nib.save(image, "out/seg.nii.gz")
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from voxelflow.errors import VoxelflowError

#: errno → the reason as the message says it.
REASONS = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class DiskWriteError(VoxelflowError, OSError):
    """A file or folder could not be written (read-only, full, no permission); exit code 1."""


def reason(exc: OSError) -> str:
    """The reason of an ``OSError`` in words (``"no space left on device"`` ...)."""
    if exc.errno in REASONS:
        return REASONS[exc.errno]
    return (exc.strerror or type(exc).__name__).lower()


def _advice(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space and rerun"
    return "choose a writable location and rerun"


@contextmanager
def writing(path: str | os.PathLike[str], *, what: str = "file", keeps: str = "") -> Iterator[None]:
    """Run a write; an ``OSError`` becomes a :class:`DiskWriteError` naming ``path``.

    Args:
        path: the file being written.
        what: what it is, for the message (``"checkpoint"``, ``"prediction"`` ...).
        keeps: what is still intact, said in the message (e.g. ``"previous checkpoint
            step_00000010.pt intact"``); empty says nothing.

    Raises:
        DiskWriteError: ``cannot write checkpoint 'run/checkpoints/step_00000020.pt': no space
            left on device; previous checkpoint ... intact; free space and rerun``.
    """
    try:
        yield
    except VoxelflowError:
        raise  # already one clear line (a MissingFileError is also an OSError)
    except OSError as exc:
        intact = f"; {keeps}" if keeps else ""
        raise DiskWriteError(
            f"cannot write {what} {str(path)!r}: {reason(exc)}{intact}; {_advice(exc)}"
        ) from exc


def disk_error_message(exc: OSError) -> str | None:
    """One line for an ``OSError`` of a failing disk that no writer wrapped, or None for others.

    The CLI's safety net: every write voxelflow makes on purpose goes through :func:`writing`;
    this covers the rest (a log line, a CSV row) so that a full disk is never a traceback.
    """
    if exc.errno not in REASONS:
        return None
    where = f" {str(exc.filename)!r}" if exc.filename else ""
    return f"cannot write{where}: {reason(exc)}; {_advice(exc)}"


def make_folder(path: str | os.PathLike[str], *, key: str) -> Path:
    """Create ``path`` (and its parents) or raise one line naming the config ``key``.

    Raises:
        DiskWriteError: ``cannot create system.run_dir 'ro/run': read-only file system``.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiskWriteError(
            f"cannot create {key} {str(path)!r}: {reason(exc)}; {_advice(exc)}"
        ) from exc
    return folder
