"""
The one way a node writes a state file (its key and certificate, the API
token and address, C{peers.json}, C{topology.json}): atomically.

It lives in the lowest layer so that every layer's state file goes through
the same code: a crash, a full disk or a power cut leaves either the old
file or the complete new one, never a partial one, and never a temporary
file behind.
"""

from __future__ import annotations

import os
import secrets


def writeAtomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Write C{data} to C{path}: a temporary file beside it (created with
    C{mode} from the start, so a key is never readable by others, not even
    briefly), fsync, rename over C{path}, then fsync the directory so the
    rename itself survives a power cut.  On any failure the temporary file
    is removed and the error raised.

    @raise OSError: the directory is missing, not writable, read-only, full...
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dirfd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
