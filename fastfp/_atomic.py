"""Atomic file writes: write to a temporary file in the target's folder, then rename onto it, so a
reader (or a resumed run) never sees half a file and a failed write leaves the old one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "check_writable", "TMP_MARK"]

TMP_MARK = ".fastfp-tmp-"  # in every temporary name, so that leftovers of a killed writer can be found


def check_writable(path, argument: str = "path", *, probe: bool = False) -> None:
    """Refuse a target that a write-and-rename would mishandle, naming ``argument``: a folder that
    does not exist or cannot be written, an empty name, a folder, and anything but a regular file
    where it exists (a device such as /dev/null or a FIFO would be *replaced* by the rename)."""
    from .errors import InvalidOptionError

    path = Path(path)
    if str(path) in ("", "."):
        raise InvalidOptionError(f"argument {argument!r}: got {str(path)!r}, expected a file path")
    if path.exists():
        if path.is_dir():
            raise InvalidOptionError(f"argument {argument!r}: {str(path)!r} is a folder, expected a file path")
        if not path.is_file():
            raise InvalidOptionError(
                f"argument {argument!r}: {str(path)!r} exists and is not a regular file (a device, FIFO or socket), "
                "which a save would replace; expected a file path"
            )
    folder = path.parent
    if not folder.is_dir():
        raise InvalidOptionError(f"argument {argument!r}: got {str(path)!r}, but the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidOptionError(f"argument {argument!r}: got {str(path)!r}, but the folder {str(folder)!r} is not writable")
    if probe:  # permissions do not tell everything (root, read-only mounts, /proc): try it
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name[:64]}{TMP_MARK}", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise InvalidOptionError(
                f"argument {argument!r}: got {str(path)!r}, but no file can be created in {str(folder)!r} "
                f"({exc.strerror or exc})"
            ) from None
        os.close(fd)
        os.unlink(name)


@contextmanager
def atomic_path(path, *, fsync: bool = False):
    """Yield a temporary Path next to ``path``; on success rename it onto ``path``.

    The file gets the permissions of the file it replaces, or those a plain ``open`` would give
    (mkstemp's 0600 would make shared results unreadable to others); a symbolic link at ``path``
    is followed, so its target is replaced and the link kept, as a plain ``open`` would write
    through it. ``fsync`` flushes the file to disk before the rename (results that a resumed run
    will trust)."""
    path = Path(path)
    if path.is_symlink() and path.exists():  # a dangling link is replaced, as before
        path = path.resolve()
    check_writable(path)
    # The temporary name carries at most 64 characters of the target's, so that a target whose
    # name is near the file system's limit (255 bytes) still gets one.
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name[:64]}{TMP_MARK}", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        from .errors import InvalidOptionError

        raise InvalidOptionError(f"argument 'path': cannot write {str(path)!r} ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        if path.exists():
            mode = path.stat().st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        yield tmp  # still mkstemp's 0600 while it is written: a read-only mode is set only after
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
