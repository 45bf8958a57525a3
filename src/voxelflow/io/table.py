"""Dataset tables: CSV, folder patterns or an MSD ``dataset.json`` → one row per subject."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SubjectRow:
    """One subject of a dataset table.

    Args:
        name: subject id, unique in the table.
        columns: column → raw value (a file path for image columns, text otherwise).
        base_dir: folder relative paths are resolved against (the CSV's folder).
    """

    name: str
    columns: dict[str, str] = field(default_factory=dict)
    base_dir: Path = Path(".")

    def path(self, column: str) -> Path:
        """The file named in ``column``, resolved against :attr:`base_dir`."""
        value = Path(self.columns[column])
        return value if value.is_absolute() else self.base_dir / value
