"""An on-disk store of memory-mappable arrays, one folder per key.

The cache knows nothing of transforms: callers compute a key from whatever identifies an
entry (:func:`file_identity` of the inputs, the settings, fitted state; see :func:`cache_key`)
and store arrays under it. An entry is a folder ``<root>/<key>/`` holding:

* ``<role>.npy``: one uncompressed array per role, read back with ``np.load(mmap_mode="r")``
  so that slicing a window reads only its bytes and all workers share the page cache;
* ``class_locations.npy`` (optional): flat voxel indices of every label value, concatenated,
  with the values and offsets in the JSON;
* ``entry.json``: affine, record, kinds, shapes, dtypes, fields.

Writes go to a private temporary folder under ``<root>/.tmp`` and are published with one
atomic ``rename``: readers never see a half-written entry, and when two processes build the
same entry at once, the first rename wins and the second discards its copy. A changed input
or setting changes the key, so only the affected entries are rebuilt; :meth:`ArrayCache.prune`
removes stale ones.

Example:
    >>> cache = ArrayCache(tmp_path)                                   # doctest: +SKIP
    >>> key = cache_key("case1", {"inputs": [file_identity("t1.nii.gz")]})  # doctest: +SKIP
    >>> entry = cache.load(key) or cache.write(key, {"image": arr}, kinds={"image": "intensity"})  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxelflow.errors import DataError, SecurityError
from voxelflow.types import PathLike

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
ENTRY_FILE = "entry.json"
LOCATIONS_FILE = "class_locations.npy"
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def file_identity(path: PathLike) -> dict[str, Any]:
    """What identifies a file's content cheaply: resolved path, size and mtime (ns).

    Raises:
        DataError: when the file does not exist.
    """
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise DataError(f"expected an existing input file, got {str(path)!r}") from None
    if resolved.is_dir():  # a DICOM series folder: its files' sizes and times
        children = sorted(p for p in resolved.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in children)
        mtime = max((p.stat().st_mtime_ns for p in children), default=stat.st_mtime_ns)
        return {"path": str(resolved), "size": size, "mtime_ns": mtime, "files": len(children)}
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(name: str, *parts: object) -> str:
    """``<readable name>-<sha256 of the JSON of parts>`` (24 hex digits).

    Args:
        name: a readable prefix (the subject id); unsafe characters are replaced.
        parts: JSON-serialisable values (dicts are hashed with sorted keys).
    """
    text = json.dumps([CACHE_FORMAT, *parts], sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")[:80] or "entry"
    return f"{readable}-{digest}"


@dataclass
class CacheEntry:
    """One stored entry.

    Args:
        key: its key.
        folder: its folder.
        arrays: role → read-only ``np.memmap`` ``(C, *spatial)``.
        kinds: role → image kind.
        affine: 4×4 affine of the stored grid.
        record: the caller's JSON record (e.g. what preprocessing did).
        fields: JSON fields stored with the entry.
        class_locations: value → flat int64 indices (memory-mapped slices), or ``None``.
    """

    key: str
    folder: Path
    arrays: dict[str, np.ndarray]
    kinds: dict[str, str]
    affine: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    class_locations: dict[int, np.ndarray] | None = None


class ArrayCache:
    """A folder of entries keyed by strings (see :func:`cache_key`).

    Args:
        root: the cache folder (created on first write).
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    def folder(self, key: str) -> Path:
        """The folder of ``key``.

        Raises:
            SecurityError: when the key is not a plain file name (path traversal).
        """
        if not _KEY_PATTERN.match(key):
            raise SecurityError(f"expected a cache key of letters, digits, '._-', got {key!r}")
        return self.root / key

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.folder(key) / ENTRY_FILE).is_file()

    def keys(self) -> list[str]:
        """Keys of the complete entries, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / ENTRY_FILE).is_file())

    def load(self, key: str) -> CacheEntry | None:
        """The entry of ``key`` with memory-mapped arrays, or ``None`` when absent or unreadable."""
        folder = self.folder(key)
        try:
            meta = json.loads((folder / ENTRY_FILE).read_text())
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {meta.get('format')} != {CACHE_FORMAT}")
            arrays = {
                role: np.load(folder / f"{role}.npy", mmap_mode="r") for role in meta["roles"]
            }
            locations = _load_locations(folder, meta.get("class_locations"))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, OSError) as exc:
            logger.warning("cache entry %s is unreadable (%s); it will be rebuilt", folder, exc)
            self.remove(key)
            return None
        return CacheEntry(
            key,
            folder,
            arrays,
            dict(meta["kinds"]),
            np.asarray(meta["affine"]),
            meta.get("record", {}),
            meta.get("fields", {}),
            locations,
        )

    def write(
        self,
        key: str,
        arrays: dict[str, np.ndarray],
        *,
        kinds: Mapping[str, str],
        affine: np.ndarray | None = None,
        record: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
        class_locations: dict[int, np.ndarray] | None = None,
    ) -> CacheEntry:
        """Store ``arrays`` under ``key`` atomically and return the (memory-mapped) entry.

        If another process published the same key first, its entry is kept and returned.

        Args:
            key: the entry key.
            arrays: role → array ``(C, *spatial)``.
            kinds: role → image kind.
            affine: 4×4 affine (identity when omitted).
            record: JSON-serialisable record stored with the entry.
            fields: JSON-serialisable fields stored with the entry.
            class_locations: value → flat indices, stored as one concatenated array.

        Raises:
            DataError: when ``kinds`` does not name every role.
        """
        final = self.folder(key)
        missing = sorted(set(arrays) - set(kinds))
        if missing:
            raise DataError(
                f"cache entry {key!r}: expected a kind for every role, missing {missing}"
            )
        temporary = self.root / ".tmp" / f"{key}.{uuid.uuid4().hex}"
        temporary.mkdir(parents=True)
        try:
            meta = _write_files(temporary, arrays, class_locations)
            meta.update(
                format=CACHE_FORMAT,
                key=key,
                kinds={r: kinds[r] for r in arrays},
                affine=np.asarray(affine if affine is not None else np.eye(4)).tolist(),
                record=record or {},
                fields=fields or {},
            )
            (temporary / ENTRY_FILE).write_text(json.dumps(meta, default=str))
            _publish(temporary, final)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
        entry = self.load(key)
        if entry is None:
            raise DataError(f"cache entry {key!r} could not be read back from {final}")
        return entry

    def remove(self, key: str) -> None:
        """Delete one entry (moved aside first, so readers never see a partial folder)."""
        folder = self.folder(key)
        if not folder.exists():
            return
        trash = self.root / ".tmp" / f"trash-{key}.{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(folder, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: Iterable[str], *, stale_temporary_s: float = 3600.0) -> list[str]:
        """Remove every entry whose key is not in ``keep``; returns the removed keys.

        Temporary folders left by interrupted writes are removed too once older than
        ``stale_temporary_s`` seconds (younger ones may belong to a running build).
        """
        keep_set = set(keep)
        removed = [key for key in self.keys() if key not in keep_set]
        for key in removed:
            self.remove(key)
        temporary_root = self.root / ".tmp"
        if temporary_root.is_dir():
            now = time.time()
            for folder in temporary_root.iterdir():
                if now - folder.stat().st_mtime > stale_temporary_s:
                    shutil.rmtree(folder, ignore_errors=True)
        return removed


def _write_files(
    folder: Path, arrays: dict[str, np.ndarray], class_locations: dict[int, np.ndarray] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"roles": list(arrays), "shapes": {}, "dtypes": {}}
    for role, array in arrays.items():
        if not re.match(r"^[A-Za-z0-9_-]+$", role):
            raise SecurityError(f"expected a role name of letters, digits, '_-', got {role!r}")
        array = np.ascontiguousarray(array)
        np.save(folder / f"{role}.npy", array, allow_pickle=False)
        meta["shapes"][role] = list(array.shape)
        meta["dtypes"][role] = str(array.dtype)
    if class_locations is not None:
        values = sorted(class_locations)
        chunks = [np.asarray(class_locations[v], dtype=np.int64) for v in values]
        offsets = np.cumsum([0, *(len(c) for c in chunks)]).tolist()
        joined = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        np.save(folder / LOCATIONS_FILE, joined, allow_pickle=False)
        meta["class_locations"] = {"values": [int(v) for v in values], "offsets": offsets}
    return meta


def _load_locations(folder: Path, info: dict[str, Any] | None) -> dict[int, np.ndarray] | None:
    if info is None:
        return None
    joined = np.load(folder / LOCATIONS_FILE, mmap_mode="r")
    offsets = info["offsets"]
    return {int(v): joined[offsets[i] : offsets[i + 1]] for i, v in enumerate(info["values"])}


def _publish(temporary: Path, final: Path) -> None:
    """Atomically rename ``temporary`` to ``final``; a concurrent winner is kept."""
    try:
        os.rename(temporary, final)
    except OSError:
        if not (final / ENTRY_FILE).is_file():
            raise
        logger.debug("cache entry %s was published by another process; keeping it", final.name)
