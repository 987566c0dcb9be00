"""
The files plugin in real C{twist appnnode} processes on loopback, driven by
C{appn files ...} commands run as subprocesses: three nodes A - B - C in a
line (A and C each have B as their only neighbour).

Every wait is on a log event or a poll of the node's API with a deadline;
nothing sleeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.interop.harness import NodeHarness, NodeProcess, spawn

MIB = 1024 * 1024
#: Only the plugins these tests use: another installed distribution's
#: plugin cannot stop the nodes.
PLUGINS = ["--plugin", "files", "--plugin", "echo"]
#: Seconds any one poll loop may take.
DEADLINE = 60.0


async def appn(node: NodeProcess, *args: str, stdin: bytes = b"") -> tuple[str, str, int]:
    """
    Run C{appn --data-dir <node's> ARGS}; answer (stdout, stderr, exit code).
    """
    out, err, code = await spawn(
        [sys.executable, "-m", "appnpy.cli", "--data-dir", node.dataDir, *args], stdin
    )
    return out.decode(), err.decode(), code


async def appnJSON(node: NodeProcess, *args: str, stdin: bytes = b"") -> Any:
    out, err, code = await appn(node, "--json", *args, stdin=stdin)
    if code != 0:
        raise AssertionError(f"appn {' '.join(args)} exited {code}: {out} {err}")
    try:
        return json.loads(out)
    except ValueError:
        # Commands that stream (search, get) print one object per line.
        return json.loads(out.strip().splitlines()[-1])


def pause(seconds: float) -> Deferred[None]:
    """
    The reactor's pause between two polls of a node's API (each poll loop
    has a deadline).
    """
    return deferLater(reactor, seconds)  # type: ignore[arg-type]


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


class FilesProcessTests(TestCase):
    timeout = 240

    async def setUpNodes(self) -> None:
        self.harness = NodeHarness(self, reactor)
        self.b = await self.harness.startReady("b", maxPeers=2, extra=PLUGINS)
        self.a = self.harness.start("a", peers=[self.b.hostPort()], maxPeers=1, extra=PLUGINS)
        self.c = self.harness.start("c", peers=[self.b.hostPort()], maxPeers=1, extra=PLUGINS)
        await gatherResults([Deferred.fromCoroutine(n.whenReady()) for n in (self.a, self.c)])
        await gatherResults(
            [
                Deferred.fromCoroutine(n.whenLinked(k))
                for n, k in ((self.a, 1), (self.c, 1), (self.b, 2))
            ]
        )
        self.assertNotIn(self.c.nodeID, self.a.links)
        self.work = os.path.join(self.harness.root, "work")
        self.shared = os.path.join(self.work, "shared")
        self.data = os.urandom(12 * MIB + 12345)
        write(os.path.join(self.shared, "films", "holiday.mkv"), self.data)
        self.sha = hashlib.sha256(self.data).hexdigest()
        out, err, code = await appn(self.c, "files", "share", "add", "media", self.shared)
        self.assertEqual(code, 0, err)
        await self.indexed(self.c, "media", 1)

    async def indexed(self, node: NodeProcess, share: str, files: int) -> None:
        for _ in range(int(DEADLINE / 0.5)):
            shares = await appnJSON(node, "files", "share", "list")
            counts = {s["name"]: s["files"] for s in shares["shares"]}
            if counts.get(share, 0) >= files:
                return
            await pause(0.5)
        raise AssertionError(f"{share} never indexed {files} files")

    async def waitForRoute(self, node: NodeProcess, target: NodeProcess) -> None:
        # The topology learns of both links within a flood: until then a
        # routed session has no path.
        for _ in range(int(DEADLINE / 0.5)):
            out, err, code = await appn(node, "route", target.nodeID or "")
            if code == 0:
                return
            await pause(0.5)
        raise AssertionError("no route")

    async def test_direct_and_routed(self) -> None:
        """
        B (C's neighbour) downloads directly and A (two hops away) through B;
        both files are byte-identical; A finds the file by a word first.
        """
        await self.setUpNodes()
        await self.waitForRoute(self.a, self.c)
        out, err, code = await appn(self.a, "--json", "files", "search", "holiday")
        self.assertEqual(code, 0, err)
        hits = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.assertEqual(
            [(h["node"], h["path"], h["sha256"]) for h in hits],
            [(self.c.nodeID, "films/holiday.mkv", self.sha)],
        )

        direct = os.path.join(self.work, "direct.mkv")
        t = await appnJSON(
            self.b, "files", "get", f"{self.c.nodeID}:media/films/holiday.mkv", "-o", direct
        )
        self.assertEqual(t["state"], "complete")
        self.assertEqual(sha(direct), self.sha)

        routed = os.path.join(self.work, "routed")
        os.makedirs(routed)
        t = await appnJSON(self.a, "files", "get", self.sha, "-o", routed)
        self.assertEqual(t["state"], "complete", t)
        # Named after the hit; every source used.
        self.assertEqual(t["target"], os.path.join(routed, "holiday.mkv"))
        self.assertEqual(sha(t["target"]), self.sha)
        self.assertEqual([s["node"] for s in t["sources"] if s["bytes"]], [self.c.nodeID])

        out, err, code = await appn(self.a, "files", "ls", f"{self.c.nodeID}:media/films")
        self.assertEqual(code, 0, err)
        self.assertIn("holiday.mkv", out)

    async def test_receiver_killed_and_resumed(self) -> None:
        """
        A, downloading through B at a limited rate, is SIGKILLed past half
        way; restarted, the same get resumes from the verified chunks (not
        from zero) and the file is byte-identical.
        """
        await self.setUpNodes()
        await self.waitForRoute(self.a, self.c)
        target = os.path.join(self.work, "resumed.mkv")
        where = f"{self.c.nodeID}:media/films/holiday.mkv"
        started = await appnJSON(
            self.a, "files", "get", where, "-o", target, "--limit", "1M", "--no-wait"
        )
        half = len(self.data) // 2
        for _ in range(int(DEADLINE / 0.25)):
            t = await appnJSON(self.a, "files", "transfers")
            mine = [x for x in t["transfers"] if x["id"] == started["id"]][0]
            if mine["done_bytes"] >= half:
                # At 1 MiB/s, twelve seconds in all: even a slow `appn`
                # on a loaded machine catches it before the end.
                self.assertEqual(mine["state"], "downloading", mine)
                break
            self.assertEqual(mine["state"], "downloading", mine)
            await pause(0.25)
        else:
            raise AssertionError("the download never got half way")
        self.a.signal(signal.SIGKILL)
        await self.a.whenExited()
        self.assertFalse(os.path.exists(target))
        self.assertTrue(os.path.exists(target + ".appn-partial"))

        again = await self.harness.startReady(
            "a2", dataDir=self.a.dataDir, peers=[self.b.hostPort()], maxPeers=1, extra=PLUGINS
        )
        await again.whenLinked(1)
        await self.waitForRoute(again, self.c)
        t = await appnJSON(again, "files", "get", where, "-o", target)
        self.assertEqual(t["state"], "complete", t)
        self.assertGreaterEqual(t["resumed_bytes"], half - MIB)
        self.assertEqual(sha(target), self.sha)
        self.assertFalse(os.path.exists(target + ".appn-partial"))
        self.assertFalse(os.path.exists(target + ".appn-partial.json"))
        # The node said so in its log too.
        await again.waitForText("resuming holiday.mkv from")

    async def test_corrupted_source(self) -> None:
        """
        B and C both share the file; C's copy is damaged on disk behind the
        index's back (same size and mtime).  A's download detects it, drops
        C and takes every chunk from B; the file is right.
        """
        await self.setUpNodes()
        bShared = os.path.join(self.work, "b-shared")
        write(os.path.join(bShared, "copy.mkv"), self.data)
        out, err, code = await appn(self.b, "files", "share", "add", "mirror", bShared)
        self.assertEqual(code, 0, err)
        await self.indexed(self.b, "mirror", 1)
        await self.waitForRoute(self.a, self.c)
        path = os.path.join(self.shared, "films", "holiday.mkv")
        st = os.stat(path)
        with open(path, "r+b") as f:
            for offset in range(0, len(self.data), MIB):
                f.seek(offset + 100)
                f.write(b"\x00garbage\x00")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        target = os.path.join(self.work, "checked.mkv")
        t = await appnJSON(self.a, "files", "get", self.sha, "-o", target)
        self.assertEqual(t["state"], "complete", t)
        self.assertEqual(sha(target), self.sha)
        sources = {s["node"]: s for s in t["sources"]}
        self.assertEqual(sources[self.b.nodeID]["bytes"], len(self.data))
        if self.c.nodeID in sources:
            self.assertFalse(sources[self.c.nodeID]["active"])

    async def test_protected_share(self) -> None:
        """
        A share added with a password (read from stdin) is refused to A
        without it and served with it; the password is in no log and no
        answer.
        """
        await self.setUpNodes()
        vault = os.path.join(self.work, "vault")
        write(os.path.join(vault, "plans.txt"), b"the plans\n" * 1000)
        password = "correct horse battery staple"
        out, err, code = await appn(
            self.c,
            "files",
            "share",
            "add",
            "vault",
            vault,
            "--password",
            stdin=password.encode() + b"\n",
        )
        self.assertEqual(code, 0, err)
        self.assertIn("password protected", out)
        await self.waitForRoute(self.a, self.c)
        where = f"{self.c.nodeID}:vault/plans.txt"
        target = os.path.join(self.work, "plans.txt")
        out, err, code = await appn(self.a, "files", "get", where, "-o", target)
        self.assertNotEqual(code, 0)
        self.assertIn("password", err)
        self.assertFalse(os.path.exists(target))
        out, err, code = await appn(
            self.a, "files", "get", where, "-o", target, stdin=b"wrong guess\n"
        )
        self.assertNotEqual(code, 0)
        self.assertIn("wrong password", err)
        out, err, code = await appn(
            self.a, "files", "ls", f"{self.c.nodeID}:vault", stdin=password.encode() + b"\n"
        )
        self.assertEqual(code, 0, err)
        self.assertIn("plans.txt", out)
        out, err, code = await appn(
            self.a, "--json", "files", "get", where, "-o", target, stdin=password.encode() + b"\n"
        )
        self.assertEqual(code, 0, err)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"the plans\n" * 1000)
        # Search never shows a protected share's files.
        out, err, code = await appn(self.a, "--json", "files", "search", "plans")
        self.assertEqual(out.strip(), "")
        for node in (self.a, self.b, self.c):
            with open(os.path.join(self.harness.root, f"{node.label}.log"), "rb") as f:
                self.assertNotIn(password.encode(), f.read())
            self.assertNotIn(password, json.dumps(await appnJSON(node, "files", "share", "list")))
