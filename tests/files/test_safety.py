"""
Tests for resolving a peer's path inside a share (appnpy_files.safety):
every item of section G of the robustness checklist, with real files,
symlinks and hardlinks in a temporary directory.
"""

from __future__ import annotations

import os

from appnpy_files import safety
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase


class SplitPathTests(SynchronousTestCase):
    def test_plain(self) -> None:
        """
        A relative POSIX path splits into its components; "" is the root.
        """
        self.assertEqual(safety.splitPath("a/b c/d.txt"), ("a", "b c", "d.txt"))
        self.assertEqual(safety.splitPath(""), ())
        self.assertEqual(safety.splitPath("ünïcode/日本.txt"), ("ünïcode", "日本.txt"))

    def test_refused(self) -> None:
        """
        Traversal in every spelling, absolute paths, drive letters, NUL,
        dot components, empty components, full-width dots and slashes,
        over-long names and paths and Windows' reserved names are refused.
        """
        for bad in (
            "../../etc/passwd",
            "a/../../etc/passwd",
            "..",
            ".",
            "./a",
            "a/./b",
            "..\\..\\windows",
            "a\\b",
            "/etc/passwd",
            "\\\\server\\share",
            "C:\\x",
            "C:x",
            "a\x00.txt",
            "a\x01b",
            "a//b",
            "a/",
            "．．／etc",
            "．．",
            "a／b",
            "x" * 256,
            "/".join(["d"] * 65),
            ("a" * 200 + "/") * 21 + "a",
            "CON",
            "nul.txt",
            "sub/COM1.log",
            "LPT9",
            "aux ",
            "trailing.",
            "ＣＯＮ",
        ):
            self.assertRaises(safety.UnsafePath, safety.splitPath, bad)

    def test_encodedIsLiteral(self) -> None:
        """
        Percent-encoded and double-encoded traversal is never decoded: it is
        a literal (harmless) file name.
        """
        self.assertEqual(safety.splitPath("%2e%2e%2fetc%2fpasswd"), ("%2e%2e%2fetc%2fpasswd",))
        self.assertEqual(safety.splitPath("%252e%252e%252f"), ("%252e%252e%252f",))
        self.assertEqual(safety.splitPath("..%2f..%2f"), ("..%2f..%2f",))

    @given(st.text(max_size=40))
    def test_componentsNeverEscape(self, path: str) -> None:
        """
        Whatever the text, an accepted path has no component that is empty,
        a dot or dot-dot, or holds a separator or NUL, even after NFKC.
        """
        import unicodedata

        try:
            parts = safety.splitPath(path)
        except safety.UnsafePath:
            return
        for part in parts:
            folded = unicodedata.normalize("NFKC", part)
            self.assertNotIn(folded, ("", ".", ".."))
            for bad in ("/", "\\", "\x00"):
                self.assertNotIn(bad, folded)


class OpenInShareTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = self.mktemp()
        self.root = os.path.join(base, "share")
        self.outside = os.path.join(base, "outside")
        os.makedirs(os.path.join(self.root, "sub"))
        os.makedirs(self.outside)
        self.secret = os.path.join(self.outside, "secret")
        self.write(self.secret, b"top secret")
        self.write(os.path.join(self.root, "a.txt"), b"hello")
        self.write(os.path.join(self.root, "sub", "b.txt"), b"inside")

    def write(self, path: str, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)

    def read(self, parts: tuple[str, ...], **kw: object) -> bytes:
        checked = safety.openInShare(self.root, parts, **kw)  # type: ignore[arg-type]
        try:
            return os.pread(checked.fd, 100, 0)
        finally:
            os.close(checked.fd)

    def test_opens(self) -> None:
        """
        Files inside the share open, in subdirectories too, and the checked
        stat is the file's.
        """
        self.assertEqual(self.read(("a.txt",)), b"hello")
        self.assertEqual(self.read(("sub", "b.txt")), b"inside")
        st = os.stat(os.path.join(self.root, "a.txt"))
        checked = safety.openInShare(self.root, ("a.txt",), expect=(st.st_dev, st.st_ino))
        os.close(checked.fd)
        self.assertEqual((checked.size, checked.inode), (5, st.st_ino))

    def test_symlinkedFileOutside(self) -> None:
        """
        A symlink in the share to a file outside is not followed.
        """
        os.symlink(self.secret, os.path.join(self.root, "link"))
        os.symlink("../outside/secret", os.path.join(self.root, "rel"))
        self.assertRaises(safety.NotServable, self.read, ("link",))
        self.assertRaises(safety.NotServable, self.read, ("rel",))

    def test_symlinkedDirectoryOutside(self) -> None:
        """
        A symlinked directory on the way is not followed either.
        """
        os.symlink(self.outside, os.path.join(self.root, "dirlink"))
        self.assertRaises(safety.NotServable, self.read, ("dirlink", "secret"))

    def test_symlinkInsideNotFollowed(self) -> None:
        """
        Even a symlink to a file inside the share is refused (one rule, no
        resolution to get wrong).
        """
        os.symlink("a.txt", os.path.join(self.root, "alias"))
        self.assertRaises(safety.NotServable, self.read, ("alias",))

    def test_hardlinkOutside(self) -> None:
        """
        A hardlink in the share to a file outside is refused by default and
        served only with allow-hardlinks.
        """
        os.link(self.secret, os.path.join(self.root, "hard"))
        self.assertRaises(safety.NotServable, self.read, ("hard",))
        self.assertEqual(self.read(("hard",), allowHardlinks=True), b"top secret")

    def test_swappedForSymlink(self) -> None:
        """
        A file indexed as a regular file and then swapped for a symlink to
        a secret (the check-then-open race) is refused.
        """
        path = os.path.join(self.root, "a.txt")
        st = os.stat(path)
        os.unlink(path)
        os.symlink(self.secret, path)
        self.assertRaises(
            safety.NotServable, self.read, ("a.txt",), expect=(st.st_dev, st.st_ino)
        )

    def test_swappedForAnotherFile(self) -> None:
        """
        A file replaced by another regular file (renamed over it) is seen
        on the open descriptor as a different inode: FileSwapped.
        """
        path = os.path.join(self.root, "a.txt")
        st = os.stat(path)
        self.write(path + ".new", b"other")
        os.replace(path + ".new", path)
        self.assertRaises(safety.FileSwapped, self.read, ("a.txt",), expect=(st.st_dev, st.st_ino))

    def test_directorySwappedForSymlink(self) -> None:
        """
        A directory on the way swapped for a symlink to outside is refused.
        """
        os.rename(os.path.join(self.root, "sub"), os.path.join(self.root, "sub.old"))
        os.symlink(self.outside, os.path.join(self.root, "sub"))
        self.write(os.path.join(self.outside, "b.txt"), b"outside b")
        self.assertRaises(safety.NotServable, self.read, ("sub", "b.txt"))

    def test_notRegular(self) -> None:
        """
        Directories, FIFOs (which would block a plain open) and absent
        files are not servable.
        """
        os.mkfifo(os.path.join(self.root, "fifo"))
        for parts in (("sub",), ("fifo",), ("missing",), ("a.txt", "x"), ()):
            self.assertRaises(safety.NotServable, self.read, parts)

    def test_rootGone(self) -> None:
        """
        A share whose directory is gone serves nothing, with a clear error.
        """
        self.assertRaises(
            safety.NotServable, safety.openInShare, self.root + "-gone", ("a.txt",)
        )

    def test_traversalViaOpenImpossible(self) -> None:
        """
        Even if a caller skipped splitPath, openInShare's component-wise
        opens refuse a symlink, and ".." is the only way up: splitPath
        refuses it first (both layers together).
        """
        self.assertRaises(safety.UnsafePath, safety.splitPath, "../outside/secret")
        os.symlink("..", os.path.join(self.root, "up"))
        self.assertRaises(safety.NotServable, self.read, ("up", "outside", "secret"))

    def test_resolveShareRoot(self) -> None:
        """
        The share root is resolved once to an absolute real directory; a
        file is refused.
        """
        os.symlink(os.path.abspath(self.root), self.root + "-link")
        self.assertEqual(safety.resolveShareRoot(self.root + "-link"), os.path.realpath(self.root))
        self.assertRaises(NotADirectoryError, safety.resolveShareRoot, self.secret)

    def test_noDescriptorLeaks(self) -> None:
        """
        Refusals close every descriptor they opened.
        """
        os.symlink(self.secret, os.path.join(self.root, "link"))
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            self.assertRaises(safety.NotServable, self.read, ("link",))
            self.assertRaises(safety.NotServable, self.read, ("sub", "missing"))
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
