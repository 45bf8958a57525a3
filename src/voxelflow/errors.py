"""Errors raised by voxelflow.

Every error a user can cause is a :class:`VoxelflowError` that also subclasses the matching
builtin (``ValueError``, ``FileNotFoundError`` ...), so ``except ValueError`` keeps working.
Messages say what was expected and what was found, and name the file, table row or config key.
"""

from __future__ import annotations


class VoxelflowError(Exception):
    """Base class of all errors raised on purpose by voxelflow."""


class ConfigError(VoxelflowError, ValueError):
    """A configuration value or key is invalid (the message names the key path)."""


class ConfigProblems(ConfigError):
    """Several configuration problems found at once; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class DataError(VoxelflowError, ValueError):
    """An input file, table row or image content is invalid (the message names the file)."""


class ShapeError(VoxelflowError, ValueError):
    """A tensor or window has the wrong shape (the message lists expected vs got)."""


class RegistryError(ConfigError, KeyError):
    """An unknown or duplicate component name."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(VoxelflowError, ValueError):
    """A checkpoint cannot be loaded into the current model or run."""


class GeometryError(DataError):
    """Images that must share a grid do not (shape, spacing, orientation or origin differ)."""


class SecurityError(VoxelflowError, PermissionError):
    """Refused for safety: path traversal, untrusted code, unsafe pickles."""


class MissingFileError(DataError, FileNotFoundError):
    """An input file or folder does not exist (the message names the path)."""
