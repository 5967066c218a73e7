"""Files written so that a killed process never leaves half of one: atomic writes and copies, the partial-name
convention, digests, and OSErrors said in the user's terms."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# Every file or folder the toolkit writes in two moves (first under a temporary name, then renamed into place) carries
# this suffix until the rename, so whatever a killed process left half-written is found by its name alone.
PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """The fixed temporary name of `path` while it is being written: a hidden sibling ending in PARTIAL_SUFFIX."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a killed process never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX,
                                         delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` (contents and times) through a temporary name, so `target` is never half a file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(target)
    try:
        shutil.copy2(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# What to do about the OSErrors a user can fix, by errno.
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "free space on that disk, or point workspace, output_dir or cache_dir at another one",
    errno.EDQUOT: "free space within your quota, or point workspace, output_dir or cache_dir at another disk",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.EROFS: "that disk is read-only: choose a folder on a writable one",
    errno.ENAMETOOLONG: "choose a shorter name or path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.ENOENT: "check the path",
}


def describe_os_error(error: OSError) -> str:
    """An OSError from any library, as one line in the user's terms with what to do, instead of a traceback."""
    where = f": {error.filename}" if error.filename else ""
    advice = _OS_ERROR_ADVICE.get(error.errno)
    return f"{error.strerror or error}{where}" + (f"; {advice}" if advice else "")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num_bytes) < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")
