"""The one output-folder rule: nothing voxelflow writes goes inside a folder holding inputs.

Run folders, caches, inference outputs (and plan or cross-validation outputs) are all checked by
:func:`refuse_inside_inputs`. An input file's folder counts as an input folder; an input that
is itself a folder (a DICOM series) counts as that folder, not its parent, so an output folder
beside a series folder is allowed. A dataset searched by folder pattern (``dataset.folders``)
adds its search folder, whose recursive glob would otherwise pick up the outputs next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from voxelflow.errors import ConfigError


def input_folders(paths: Iterable[Path]) -> set[Path]:
    """The folders that hold these inputs: a file's parent, or the input itself when a folder."""
    folders = set()
    for path in paths:
        resolved = Path(path).resolve()
        folders.add(resolved if resolved.is_dir() else resolved.parent)
    return folders


def refuse_inside_inputs(output: Path, folders: Iterable[Path], *, key: str) -> None:
    """Refuse ``output`` when it is, or lies inside, any of ``folders``.

    Args:
        output: the folder about to be written (need not exist).
        folders: input folders (see :func:`input_folders`), already resolved or not.
        key: the config key or option naming ``output``, for the message.

    Raises:
        ConfigError: naming ``key``, the output and the input folder.

    Example:
        >>> refuse_inside_inputs(Path("data/run"), [Path("data")], key="system.run_dir")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        voxelflow.errors.ConfigError: system.run_dir: expected a folder outside the input folders, got 'data/run' inside '...data'; nothing is written next to inputs
    """
    out = Path(output).resolve()
    for folder in sorted({Path(f).resolve() for f in folders}):
        if out == folder or folder in out.parents:
            raise ConfigError(
                f"{key}: expected a folder outside the input folders, got {str(output)!r} "
                f"inside {str(folder)!r}; nothing is written next to inputs"
            )
