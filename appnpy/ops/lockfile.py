"""
The data directory: checked, created and locked, one running node per
directory.

C{node.lock} is locked with C{flock(LOCK_EX | LOCK_NB)} for the life of the
process.  The kernel drops the lock when the process dies, however it dies
(SIGKILL included), so a stale lock file never blocks a restart.

Before anything else is written the directory is checked by writing a file
in it, so an operator's mistake (a file where the directory should be, no
write permission, a read-only mount, an unwritable parent) is one clear
L{DataDirectoryError} at start, not a traceback from whichever state file
happens to be written first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets

from appnpy.errors import APPNError, DataDirectoryLocked

LOCK_FILE = "node.lock"

_CHOOSE_ANOTHER = "or choose another directory with --data-dir"


class DataDirectoryError(APPNError):
    """
    The data directory cannot be used.
    """

    def __str__(self) -> str:
        # The message says what is wrong and what to do; no preamble.
        return Exception.__str__(self)


def _firstNonDirectory(path: str) -> str | None:
    """
    The first component of C{path} that exists and is not a directory.
    """
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i])
        if os.path.lexists(prefix) and not os.path.isdir(prefix):
            return prefix
        if not os.path.lexists(prefix):
            return None
    return None


def _nearestExisting(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def dataDirectoryProblem(dataDir: str, error: OSError) -> DataDirectoryError:
    """
    The one-line explanation, with what to do, of C{error} met while using
    the data directory C{dataDir}.
    """
    blocker = _firstNonDirectory(dataDir)
    if blocker is not None or error.errno in (errno.ENOTDIR, errno.EEXIST):
        what = blocker or dataDir
        return DataDirectoryError(
            f"cannot use the data directory {dataDir}: {what} is a file, not a directory; "
            f"move it away {_CHOOSE_ANOTHER}"
        )
    exists = os.path.isdir(dataDir)
    where = dataDir if exists else _nearestExisting(dataDir)
    verb = "write to the data directory" if exists else "create the data directory"
    if error.errno == errno.EROFS:
        return DataDirectoryError(
            f"cannot {verb} {dataDir}: {where} is on a read-only file system; "
            f"remount it read-write {_CHOOSE_ANOTHER}"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        fix = (
            f"give the user running the node write access to it (chown or chmod {where})"
            if exists
            else f"create it as a user allowed to write to {where} and chown it to the user "
            "running the node"
        )
        return DataDirectoryError(
            f"cannot {verb} {dataDir}: permission denied on {where}; {fix}, {_CHOOSE_ANOTHER}"
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataDirectoryError(
            f"cannot write to the data directory {dataDir}: no space left on its file system; "
            f"free some space {_CHOOSE_ANOTHER}"
        )
    name = f" ({error.filename})" if error.filename else ""
    return DataDirectoryError(
        f"cannot use the data directory {dataDir}: {error.strerror or error}{name}; "
        f"fix it {_CHOOSE_ANOTHER}"
    )


class DataDirectoryLock:
    """
    The held lock on a data directory; L{release} (or process exit) frees it.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _checkWritable(dataDir: str) -> None:
    # Opening an existing lock file needs no write access to the directory;
    # every state file does (a temporary file beside it), so try one now.
    probe = os.path.join(dataDir, f".write-check.{secrets.token_hex(4)}.tmp")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    os.unlink(probe)


def lockDataDirectory(dataDir: str) -> DataDirectoryLock:
    """
    Lock C{dataDir} (created, mode 0700, if missing) for this process.

    @raise DataDirectoryLocked: another process holds the lock; the message
        names the directory and, when known, that process's ID.
    @raise DataDirectoryError: the directory cannot be created or written.
    """
    try:
        os.makedirs(dataDir, mode=0o700, exist_ok=True)
        _checkWritable(dataDir)
        path = os.path.join(dataDir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise dataDirectoryProblem(dataDir, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        by = f" by process {holder}" if holder.isdigit() else ""
        raise DataDirectoryLocked(f"{dataDir} is locked{by}") from None
    except BaseException:
        os.close(fd)
        raise
    # For the operator's benefit only: the lock is the flock, not this text.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return DataDirectoryLock(path, fd)
