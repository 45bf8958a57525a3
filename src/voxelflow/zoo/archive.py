"""Path-safe extraction of zoo archives (``.zip``, ``.tar.gz``) and copies of entry folders.

Every member is checked before anything is written: absolute paths, ``..`` components, drive
letters, device files, and links (symbolic or hard) whose target leaves the destination are
refused with a :class:`~voxelflow.errors.SecurityError` naming the archive and the member.

Example:
    >>> safe_extract("entry.zip", "zoo-home/.incoming-xyz")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from voxelflow.errors import DataError, SecurityError
from voxelflow.types import PathLike

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
MAX_TOTAL_BYTES = 32 * 1024**3


def archive_kind(path: PathLike) -> str | None:
    """``"zip"``, ``"tar"`` or None (not an archive name)."""
    name = str(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    return None


def check_member_name(name: str, *, archive: str) -> str:
    """Return the member's normalised relative path, or raise if it could escape.

    Raises:
        SecurityError: absolute path, drive letter, ``..`` component or empty name.
    """
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise SecurityError(
            f"{archive}: refused member {name!r}: expected a relative path, got an absolute one"
        )
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise SecurityError(
            f"{archive}: refused member {name!r}: expected no '..', got a path traversal"
        )
    if not parts:
        raise SecurityError(f"{archive}: refused member {name!r}: expected a file name, got none")
    return "/".join(parts)


def _check_link_target(member: str, target: str, *, archive: str, hard: bool) -> None:
    unified = target.replace("\\", "/")
    kind = "hard link" if hard else "symlink"
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise SecurityError(
            f"{archive}: refused {kind} {member!r} → {target!r}: expected a target inside the entry"
        )
    base = "" if hard else posixpath.dirname(member)
    resolved = posixpath.normpath(posixpath.join(base, unified))
    if resolved == ".." or resolved.startswith("../"):
        raise SecurityError(
            f"{archive}: refused {kind} {member!r} → {target!r}: "
            "expected a target inside the entry, got one escaping it"
        )


def _check_tar(archive: tarfile.TarFile, *, label: str) -> None:
    total = 0
    for member in archive.getmembers():
        name = check_member_name(member.name, archive=label)
        if member.issym() or member.islnk():
            _check_link_target(name, member.linkname, archive=label, hard=member.islnk())
        elif not (member.isfile() or member.isdir()):
            raise SecurityError(
                f"{label}: refused member {member.name!r}: expected a file or folder, "
                "got a device, FIFO or other special file"
            )
        total += member.size
    _check_total(total, label)


def _check_zip(archive: zipfile.ZipFile, *, label: str) -> None:
    total = 0
    for info in archive.infolist():
        check_member_name(info.filename, archive=label)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise SecurityError(
                f"{label}: refused member {info.filename!r}: expected a file or folder, "
                "got a symlink (links are not allowed in zip entries)"
            )
        total += info.file_size
    _check_total(total, label)


def _check_total(total: int, label: str) -> None:
    if total > MAX_TOTAL_BYTES:
        raise SecurityError(
            f"{label}: expected at most {MAX_TOTAL_BYTES} bytes once extracted, got {total}"
        )


def safe_extract(archive_path: PathLike, destination: PathLike) -> Path:
    """Check every member of a zip / tar(.gz) archive, then extract it into ``destination``.

    Args:
        archive_path: the archive file.
        destination: a folder that does not exist yet (created here).

    Returns:
        ``destination``.

    Raises:
        SecurityError: a member could write outside ``destination`` (nothing is written then).
        DataError: not a readable archive, or ``destination`` already exists.
    """
    archive_path, destination = Path(archive_path), Path(destination)
    label = str(archive_path)
    kind = archive_kind(archive_path)
    if kind is None:
        raise DataError(f"expected a .zip, .tar.gz or .tar archive, got {label!r}")
    if destination.exists():
        raise DataError(f"expected a new extraction folder, got existing {str(destination)!r}")
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive_path) as archive:
                _check_zip(archive, label=label)
                destination.mkdir(parents=True)
                archive.extractall(destination)
        else:
            with tarfile.open(archive_path, "r:*") as archive:
                _check_tar(archive, label=label)
                destination.mkdir(parents=True)
                archive.extractall(destination, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise DataError(f"{label}: expected a readable {kind} archive, got: {exc}") from exc
    return destination


def safe_copy_tree(source: PathLike, destination: PathLike) -> Path:
    """Copy an entry folder, refusing symlinks that point outside it (links inside are copied as files).

    Raises:
        SecurityError: a symlink escapes ``source`` (checked before anything is copied).
    """
    source, destination = Path(source).resolve(), Path(destination)
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(source):
                raise SecurityError(
                    f"{source}: refused symlink {str(path.relative_to(source))!r} → "
                    f"{os.readlink(path)!r}: expected a target inside the entry, got one escaping it"
                )
    shutil.copytree(source, destination, symlinks=False)
    return destination


def relative_files(root: PathLike) -> list[str]:
    """Every regular file under ``root`` as a POSIX path relative to it."""
    root = Path(root)
    return sorted(
        str(PurePosixPath(*path.relative_to(root).parts))
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    )
