"""
The data directory lock: one running node per data directory.

C{node.lock} is locked with C{flock(LOCK_EX | LOCK_NB)} for the life of the
process.  The kernel drops the lock when the process dies, however it dies
(SIGKILL included), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os

from appnpy.errors import DataDirectoryLocked

LOCK_FILE = "node.lock"


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


def lockDataDirectory(dataDir: str) -> DataDirectoryLock:
    """
    Lock C{dataDir} (created, mode 0700, if missing) for this process.

    @raise DataDirectoryLocked: another process holds the lock; the message
        names the directory and, when known, that process's ID.
    """
    os.makedirs(dataDir, mode=0o700, exist_ok=True)
    path = os.path.join(dataDir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
