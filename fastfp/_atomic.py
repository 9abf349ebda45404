"""Atomic file writes: write to a temporary file in the target's folder, then rename onto it, so a
reader (or a resumed run) never sees half a file and a failed write leaves the old one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "TMP_MARK"]

TMP_MARK = ".fastfp-tmp-"  # in every temporary name, so that leftovers of a killed writer can be found


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
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=".tmp", dir=path.parent)
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
