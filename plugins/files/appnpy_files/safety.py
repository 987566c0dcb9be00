"""
Only files inside a share are ever served.

Two layers, each enough on its own:

 1. L{splitPath} checks a peer's path as text.  A path is the index's own
    form: POSIX, relative, C{/}-separated, each component a name the index
    could have listed.  Nothing is ever decoded (no percent-decoding, no
    Unicode normalisation, no backslash conversion), so C{%2e%2e%2f} is
    only ever a file literally named so; and to stay safe on a system that
    would normalise, components whose NFKC form is C{.}, C{..} or holds a
    separator (full-width C{．．／}) are refused outright, as are
    backslashes, drive letters (C{C:}), NUL and control characters, empty,
    C{.} and C{..} components, over-long names (255 UTF-8 bytes) and paths
    (4096), and the names Windows reserves (C{CON}, C{NUL}, C{COM1}...,
    with any extension, and names ending in a dot or a space), which a
    downloader on Windows could not write safely.

 2. L{openInShare} opens the file component by component from a descriptor
    of the share's root (C{openat} through C{dir_fd}), every component with
    C{O_NOFOLLOW}: a symlink anywhere on the way is refused, wherever it
    points, even inside the share.  The opened descriptor is then checked
    with C{fstat}: a regular file, on the device and inode the index
    recorded (so a file swapped for another, or for a symlink, between the
    index's check and this open is refused: the swap is seen on the open
    descriptor, not on a name), and not hardlinked.

Hardlink policy: a regular file with more than one link (C{st_nlink > 1})
is neither indexed nor served unless the share's configuration sets
C{allow-hardlinks}: its other names may lie outside the share (a user who
can write into the share could link in a file of another tree), and a
hardlink cannot be told apart from the original.  Symlinks are never
followed, not even to targets inside the share.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata

import attrs

#: The longest component, in UTF-8 bytes (Linux NAME_MAX).
MAX_NAME_BYTES = 255
#: The longest path, in UTF-8 bytes (Linux PATH_MAX).
MAX_PATH_BYTES = 4096
#: The deepest path, in components.
MAX_DEPTH = 64

_WINDOWS_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
_SEPARATORS = ("/", "\\")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class UnsafePath(Exception):
    """
    A path that no file of a share can have; the peer gets C{bad-request}.
    """


class NotServable(Exception):
    """
    The path names nothing the share serves: absent, not a regular file, a
    symlink on the way, a hardlink, or unreadable.  The peer gets
    C{no-such-file} (it learns no more than that).
    """


class FileSwapped(NotServable):
    """
    The file at the path is not the one the index recorded (another device
    or inode): it was replaced since it was indexed.  The peer gets
    C{file-changed} and the file is indexed again.
    """


def nameProblem(name: str) -> str | None:
    """
    Why C{name} cannot be a component of a served path, or None if it can.
    The index uses it too, so it never lists a name a request could not use.
    """
    if not name:
        return "empty component"
    if name in (".", ".."):
        return "dot component"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "control character"
    if any(sep in name for sep in _SEPARATORS):
        return "separator in a name"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "not valid Unicode (a name that is not UTF-8 on disk)"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return "name too long"
    folded = unicodedata.normalize("NFKC", name)
    if folded in (".", "..") or any(sep in folded for sep in _SEPARATORS) or "\x00" in folded:
        return "a name that normalises to a dot or a separator"
    if _WINDOWS_RESERVED.fullmatch(folded.rstrip(" .")):
        return "a name Windows reserves"
    if name[-1] in ". ":
        return "a name ending in a dot or a space"
    return None


def splitPath(path: str) -> tuple[str, ...]:
    """
    The components of a peer's path inside a share; C{""} is the root.

    @raise UnsafePath: saying why the path is refused.
    """
    if path == "":
        return ()
    if "\x00" in path:
        raise UnsafePath("NUL in path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePath("path too long")
    if path.startswith(_SEPARATORS):
        raise UnsafePath("absolute path")
    if _DRIVE.match(path):
        raise UnsafePath("drive letter")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH:
        raise UnsafePath("path too deep")
    for part in parts:
        problem = nameProblem(part)
        if problem is not None:
            raise UnsafePath(problem)
    return parts


@attrs.frozen
class Checked:
    """
    What L{openInShare} checked of the file it opened.
    """

    fd: int
    size: int
    mtimeNs: int
    device: int
    inode: int


def _openDir(name: str, dirFD: int) -> int:
    return os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dirFD)


def openInShare(
    root: str,
    parts: tuple[str, ...],
    *,
    expect: tuple[int, int] | None = None,
    allowHardlinks: bool = False,
) -> Checked:
    """
    Open the regular file at C{parts} below the directory C{root}, without
    following any symlink, and check it.  Blocking: call it in a thread.

    @param expect: the (device, inode) the index recorded, if any.
    @return: the open descriptor (the caller closes it) and its C{fstat}.
    @raise NotServable: or L{FileSwapped}; the descriptor is closed then.
    """
    if not parts:
        raise NotServable("the root is a directory")
    try:
        dirFD = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError as e:
        raise NotServable(f"share directory unavailable: {errno.errorcode.get(e.errno or 0, e)}") from None
    fd = -1
    try:
        for part in parts[:-1]:
            try:
                nextFD = _openDir(part, dirFD)
            except OSError as e:
                raise NotServable(_why(e)) from None
            os.close(dirFD)
            dirFD = nextFD
        try:
            # O_NONBLOCK: a FIFO planted in the share must not hang the
            # thread in open(); it is refused by the fstat check below.
            fd = os.open(parts[-1], os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, dir_fd=dirFD)
        except OSError as e:
            raise NotServable(_why(e)) from None
        st = os.fstat(fd)
        checkStat(st, expect=expect, allowHardlinks=allowHardlinks)
        result = Checked(fd, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
        fd = -1
        return result
    finally:
        os.close(dirFD)
        if fd >= 0:
            os.close(fd)


def checkStat(
    st: os.stat_result, *, expect: tuple[int, int] | None = None, allowHardlinks: bool = False
) -> None:
    """
    Refuse anything but a regular, singly linked file (unless hardlinks are
    allowed) on the expected device and inode.

    @raise NotServable: or L{FileSwapped}.
    """
    if not stat.S_ISREG(st.st_mode):
        raise NotServable("not a regular file")
    if expect is not None and (st.st_dev, st.st_ino) != expect:
        raise FileSwapped("not the file that was indexed")
    if st.st_nlink > 1 and not allowHardlinks:
        raise NotServable("a hardlinked file (allow-hardlinks is off)")


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symlink on the way"
    if e.errno == errno.ENOTDIR:
        return "not a directory on the way"
    if e.errno == errno.ENOENT:
        return "no such file"
    return errno.errorcode.get(e.errno or 0, "unreadable")


def resolveShareRoot(directory: str) -> str:
    """
    The share's directory as an absolute path with symlinks resolved once,
    when the share is configured (the operator's choice; inside it, no
    symlink is followed).

    @raise NotADirectoryError: if it is not a directory.
    """
    root = os.path.realpath(os.path.expanduser(directory))
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    return root
