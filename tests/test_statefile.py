"""
Tests for L{appnpy.link.statefile}: the one atomic writer of state files,
and that every state file of the package goes through it.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from appnpy.link import statefile
from appnpy.link.statefile import writeAtomically

PACKAGE = Path(__file__).resolve().parent.parent / "appnpy"


class WriteAtomicallyTests(SynchronousTestCase):
    def test_writes(self) -> None:
        """
        The file gets the bytes and the mode; no temporary file is left.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "state.json")
        writeAtomically(path, b"one", 0o600)
        writeAtomically(path, b"two", 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(os.listdir(directory), ["state.json"])

    def test_failureLeavesOldFile(self) -> None:
        """
        A failure before the rename keeps the old file and removes the
        temporary one; the directory is fsynced after the rename.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "state.json")
        writeAtomically(path, b"old", 0o600)
        synced: list[int] = []
        realFsync = os.fsync

        def failingFsync(fd: int) -> None:
            synced.append(fd)
            raise OSError(28, "No space left on device")

        self.patch(statefile.os, "fsync", failingFsync)
        self.assertRaises(OSError, writeAtomically, path, b"new", 0o600)
        self.patch(statefile.os, "fsync", realFsync)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir(directory), ["state.json"])

        calls: list[str] = []

        def recordingFsync(fd: int) -> None:
            calls.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
            realFsync(fd)

        realReplace = os.replace

        def recordingReplace(a: str, b: str) -> None:
            calls.append("rename")
            realReplace(a, b)

        self.patch(statefile.os, "fsync", recordingFsync)
        self.patch(statefile.os, "replace", recordingReplace)
        writeAtomically(path, b"new", 0o600)
        self.assertEqual(calls, ["file", "rename", "dir"])


class OneWriterTests(SynchronousTestCase):
    def test_noOtherWriter(self) -> None:
        """
        No module but statefile renames files into place or opens one for
        writing: every state file (identity, certificate, API token and
        address, peers.json, topology.json) is written by writeAtomically.
        The lock file (lockfile.py) is the one exception: it is locked, not
        replaced.
        """
        offenders = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if path.name in ("statefile.py", "lockfile.py"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("replace", "rename") and isinstance(func, ast.Attribute):
                    if isinstance(func.value, ast.Name) and func.value.id == "os":
                        offenders.append(f"{path.name}:{node.lineno} os.{name}")
                if name == "open" and len(node.args) > 1:
                    mode = node.args[1]
                    if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax"):
                        offenders.append(f"{path.name}:{node.lineno} open(..., {mode.value!r})")
        self.assertEqual(offenders, [])
