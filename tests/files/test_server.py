"""
Tests for the serving side of a files session (appnpy_files.server), driven
by a hostile or honest peer writing real frames into the protocol over a
string transport; the index hashes in real threads on the real reactor, and
the tests wait on answers (Deferreds), never on time.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

from appnpy_files import index as indexmod
from appnpy_files import server, shares, wire
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

MiB = 1024 * 1024
PEER = "a" * 64
PASSWORD = "Tr0ub4dor&3-unique-marker"


class SessionTransport(StringTransport):
    """
    A session transport: decodes what the server writes, fires waiters as
    answers arrive, and records the close reason.
    """

    def __init__(self) -> None:
        super().__init__()
        self.decoder = wire.FrameDecoder(rawAfterData=True)
        self.answers: list[wire.Received] = []
        self.closeReason: str | None = None
        self.waiters: list[tuple[int, Deferred[list[wire.Received]]]] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.answers.extend(self.decoder.feed(data))
        for n, d in list(self.waiters):
            if len(self.answers) >= n:
                self.waiters.remove((n, d))
                d.callback(self.answers[:n])

    def loseConnectionWithReason(self, reason: str, detail: str = "") -> None:
        self.closeReason = reason
        self.loseConnection()

    def wait(self, n: int) -> Deferred[list[wire.Received]]:
        d: Deferred[list[wire.Received]] = Deferred()
        if len(self.answers) >= n:
            d.callback(self.answers[:n])
        else:
            self.waiters.append((n, d))
        return d


class Session:
    peerNodeID = PEER


class ServerTestCase(TestCase):
    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.pub = os.path.join(base, "pub")
        self.priv = os.path.join(base, "priv")
        os.makedirs(os.path.join(self.pub, "sub"))
        os.makedirs(self.priv)
        self.data = os.urandom(2 * MiB + 100)
        self.write(self.pub, "big.bin", self.data)
        self.write(self.pub, "sub/small.txt", b"small")
        self.write(self.priv, "secret.txt", b"the secret")
        with open(os.path.join(base, "outside"), "wb") as f:
            f.write(b"outside")
        os.symlink(os.path.join(base, "outside"), os.path.join(self.pub, "escape"))
        self.shareSet = shares.ShareSet()
        self.shareSet.loadConfig(
            {"pub": self.pub, "priv": {"path": self.priv, "password-hash": shares.hashPassword(PASSWORD, n=2**10)}}
        )
        self.now = 1000.0
        self.limiter = shares.AttemptLimiter(lambda: self.now)

    def write(self, root: str, rel: str, data: bytes) -> None:
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)

    async def connect(self, uploadLimit: int = 0, clock: Any = None, **kw: Any) -> SessionTransport:
        self.index = indexmod.Index(reactor, self.shareSet, None, rescanInterval=0)
        self.addCleanup(self.index.stop)
        await self.index.start()
        await self.index.whenIndexed()
        self.factory = server.FilesServerFactory(
            clock or reactor,
            self.shareSet,
            self.index,
            self.limiter,
            shares.ServeSettings(uploadLimit=uploadLimit),
            **kw,
        )
        self.protocol = self.factory.buildProtocol(Session())  # type: ignore[arg-type]
        transport = SessionTransport()
        self.protocol.makeConnection(transport)
        return transport

    def send(self, *requests: dict[str, Any]) -> None:
        self.protocol.dataReceived(b"".join(wire.encodeFrame(r) for r in requests))

    async def ask(self, transport: SessionTransport, *requests: dict[str, Any]) -> list[wire.Received]:
        before = len(transport.answers)
        self.send(*requests)
        got = await transport.wait(before + len(requests))
        return got[before:]

    def sha(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class OpsTests(ServerTestCase):
    async def test_sharesListStatChunksRead(self) -> None:
        """
        An honest client lists shares, browses, stats, fetches chunk hashes
        and reads every chunk; the bytes are the file's.
        """
        t = await self.connect()
        sha = self.sha(self.data)
        [shares_, listing, stat, byHash, chunks] = await self.ask(
            t,
            {"op": "shares", "id": 1},
            {"op": "list", "id": 2, "share": "pub", "path": ""},
            {"op": "stat", "id": 3, "share": "pub", "path": "big.bin"},
            {"op": "stat", "id": 4, "sha256": sha},
            {"op": "chunks", "id": 5, "sha256": sha, "start": 0, "count": 16384},
        )
        infos = wire.parseAnswer("shares", shares_.message)
        assert isinstance(infos, wire.SharesAnswer)
        self.assertEqual(
            infos.shares,
            (wire.ShareInfo("priv", True, None, None), wire.ShareInfo("pub", False, 2, len(self.data) + 5)),
        )
        entries = wire.parseAnswer("list", listing.message)
        assert isinstance(entries, wire.ListAnswer)
        self.assertEqual([e.name for e in entries.entries], ["big.bin", "sub"])
        info = wire.parseAnswer("stat", stat.message)
        assert isinstance(info, wire.StatAnswer)
        self.assertEqual((info.file.sha256, info.file.chunkCount, info.file.size), (sha, 3, len(self.data)))
        self.assertEqual(wire.parseAnswer("stat", byHash.message), wire.StatAnswer(4, info.file))
        hashes = wire.parseAnswer("chunks", chunks.message)
        assert isinstance(hashes, wire.ChunksAnswer)
        self.assertEqual(len(hashes.hashes), 96)
        reads = await self.ask(t, *({"op": "read", "id": 10 + i, "sha256": sha, "index": i} for i in range(3)))
        self.assertEqual([r.message["id"] for r in reads], [10, 11, 12])
        self.assertEqual(b"".join(r.payload or b"" for r in reads), self.data)
        for i, r in enumerate(reads):
            self.assertEqual(hashlib.sha256(r.payload or b"").digest(), hashes.hashes[i * 32 : i * 32 + 32])

    async def test_errors(self) -> None:
        """
        Unknown shares, files and hashes, bad paths, traversal, symlinks,
        reads past the end and unknown ops each get their error code, and
        the session stays open.
        """
        t = await self.connect()
        sha = self.sha(self.data)
        cases = [
            ({"op": "list", "share": "nope", "path": ""}, wire.NO_SUCH_SHARE),
            ({"op": "list", "share": "pub", "path": "missing"}, wire.NO_SUCH_FILE),
            ({"op": "list", "share": "pub", "path": "../"}, wire.BAD_REQUEST),
            ({"op": "stat", "share": "pub", "path": "../outside"}, wire.BAD_REQUEST),
            ({"op": "stat", "share": "pub", "path": "/etc/passwd"}, wire.BAD_REQUEST),
            ({"op": "stat", "share": "pub", "path": "sub\\..\\..\\outside"}, wire.BAD_REQUEST),
            ({"op": "stat", "share": "pub", "path": "%2e%2e%2foutside"}, wire.NO_SUCH_FILE),
            ({"op": "stat", "share": "pub", "path": "．．／outside"}, wire.BAD_REQUEST),
            ({"op": "stat", "share": "pub", "path": "a\x00.txt"}, wire.BAD_REQUEST),
            ({"op": "stat", "share": "pub", "path": "escape"}, wire.NO_SUCH_FILE),
            ({"op": "stat", "sha256": self.sha(b"outside")}, wire.NO_SUCH_FILE),
            ({"op": "read", "sha256": "0" * 64, "index": 0}, wire.NO_SUCH_FILE),
            ({"op": "read", "sha256": sha, "index": 3}, wire.BAD_REQUEST),
            ({"op": "chunks", "sha256": sha, "start": 0, "count": 16385}, wire.BAD_REQUEST),
            ({"op": "index-search", "keywords": ["x"]}, wire.BAD_REQUEST),
            ({"op": "rm", "path": "/"}, wire.BAD_REQUEST),
        ]
        got = await self.ask(t, *({**req, "id": i} for i, (req, _) in enumerate(cases)))
        self.assertEqual([r.message.get("error") for r in got], [code for _, code in cases])
        self.assertEqual([r.message["id"] for r in got], list(range(len(cases))))
        self.assertIsNone(t.closeReason)
        # Nothing outside the share was ever written back.
        self.assertNotIn(b"outside\x00", t.value())

    async def test_answersInOrder(self) -> None:
        """
        A slow request (a chunk read in a thread) followed by a fast one
        (shares, answered at once) is still answered first.
        """
        t = await self.connect()
        got = await self.ask(
            t,
            {"op": "read", "id": 7, "sha256": self.sha(self.data), "index": 2},
            {"op": "shares", "id": 8},
        )
        self.assertEqual([r.message["id"] for r in got], [7, 8])

    async def test_fileChangedWhileServed(self) -> None:
        """
        A file rewritten in place (same size and mtime) answers
        file-changed, and is indexed again under its new hash.
        """
        t = await self.connect()
        path = os.path.join(self.pub, "big.bin")
        st = os.stat(path)
        with open(path, "r+b") as f:
            f.seek(MiB + 5)
            f.write(b"X")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        sha = self.sha(self.data)
        [r] = await self.ask(t, {"op": "read", "id": 1, "sha256": sha, "index": 1})
        self.assertEqual(r.message["error"], wire.FILE_CHANGED)
        await self.index.whenIndexed()
        changed = bytearray(self.data)
        changed[MiB + 5] = ord("X")
        [old, new] = await self.ask(
            t, {"op": "stat", "id": 2, "sha256": sha}, {"op": "stat", "id": 3, "sha256": self.sha(bytes(changed))}
        )
        self.assertEqual(old.message["error"], wire.NO_SUCH_FILE)
        self.assertEqual(new.message["file"]["path"], "big.bin")

    async def test_extraOps(self) -> None:
        """
        The hook for extra ops: a handler answers index-search; one that
        refuses with a code (and retry_after) gets that error; one that
        raises something else is internal, without a traceback on the wire.
        """

        class Refused(Exception):
            code = wire.SLOW_DOWN
            message = "slow"
            retryAfter = 4

        def search(peer: str, request: wire.Request) -> wire.Answer:
            assert isinstance(request, wire.IndexSearch)
            if request.keywords == ("slow",):
                raise Refused()
            if request.keywords == ("boom",):
                raise ZeroDivisionError("secret detail")
            return wire.HitsAnswer(request.id, ({"peer": peer},))

        t = await self.connect(extraOps={wire.OP_INDEX_SEARCH: search})
        got = await self.ask(
            t,
            {"op": "index-search", "id": 1, "keywords": ["x"]},
            {"op": "index-search", "id": 2, "keywords": ["slow"]},
            {"op": "index-search", "id": 3, "keywords": ["boom"]},
        )
        self.assertEqual(got[0].message["hits"], [{"peer": PEER}])
        self.assertEqual((got[1].message["error"], got[1].message["retry_after"]), (wire.SLOW_DOWN, 4))
        self.assertEqual(got[2].message["error"], wire.INTERNAL)
        self.assertNotIn(b"secret detail", t.value())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_cdsHandler(self) -> None:
        """
        A CDS index passed to buildProtocol answers index-search and
        index-upload with the session's peer.
        """

        class CDS:
            def __init__(self) -> None:
                self.uploads: list[tuple[str, Any, bool]] = []

            def searchFor(self, peer: str, keywords: list[str]) -> list[dict[str, Any]]:
                return [{"k": keywords[0], "p": peer}]

            def upload(self, peer: str, hits: Any, final: bool) -> None:
                self.uploads.append((peer, hits, final))

        t = await self.connect()
        cds = CDS()
        self.protocol = self.factory.buildProtocol(Session(), cds)  # type: ignore[arg-type]
        t = SessionTransport()
        self.protocol.makeConnection(t)
        got = await self.ask(
            t,
            {"op": "index-search", "id": 1, "keywords": ["w"]},
            {"op": "index-upload", "id": 2, "hits": [{"a": 1}], "final": True},
        )
        self.assertEqual(got[0].message["hits"], [{"k": "w", "p": PEER}])
        self.assertEqual(got[1].message, {"id": 2, "ok": True})
        self.assertEqual(cds.uploads, [(PEER, [{"a": 1}], True)])


class PasswordTests(ServerTestCase):
    async def test_protectedShare(self) -> None:
        """
        Without auth a protected share shows no counts and refuses list,
        stat and lookups by hash; a wrong password is refused; the right
        one unlocks it for this session only.
        """
        t = await self.connect()
        secret = self.sha(b"the secret")
        got = await self.ask(
            t,
            {"op": "list", "id": 1, "share": "priv", "path": ""},
            {"op": "stat", "id": 2, "share": "priv", "path": "secret.txt"},
            {"op": "stat", "id": 3, "sha256": secret},
            {"op": "read", "id": 4, "sha256": secret, "index": 0},
            {"op": "auth", "id": 5, "share": "priv", "password": "wrong"},
            {"op": "auth", "id": 6, "share": "nope", "password": "x"},
        )
        self.assertEqual(
            [r.message["error"] for r in got],
            [wire.PASSWORD_REQUIRED, wire.PASSWORD_REQUIRED, wire.NO_SUCH_FILE, wire.NO_SUCH_FILE, wire.BAD_PASSWORD, wire.NO_SUCH_SHARE],
        )
        got = await self.ask(
            t,
            {"op": "auth", "id": 7, "share": "priv", "password": PASSWORD},
            {"op": "shares", "id": 8},
            {"op": "read", "id": 9, "sha256": secret, "index": 0},
        )
        self.assertEqual(got[0].message, {"id": 7, "ok": True})
        self.assertIn({"name": "priv", "protected": True, "files": 1, "bytes": 10}, got[1].message["shares"])
        self.assertEqual(got[2].payload, b"the secret")
        # Another session of the same peer starts locked.
        other = self.factory.buildProtocol(Session())  # type: ignore[arg-type]
        t2 = SessionTransport()
        other.makeConnection(t2)
        other.dataReceived(wire.encodeFrame({"op": "stat", "id": 1, "sha256": secret}))
        [r] = await t2.wait(1)
        self.assertEqual(r.message["error"], wire.NO_SUCH_FILE)

    async def test_hundredWrongPasswords(self) -> None:
        """
        100 wrong passwords: after the free ones the peer is told to slow
        down (with retry_after) without a password check; even the right
        password waits out the delay; the delays grow.
        """
        t = await self.connect()
        checks = []
        realCheck = self.factory.checkPassword

        def counting(password: str, stored: str) -> Deferred[bool]:
            checks.append(1)
            return realCheck(password, stored)

        self.factory.checkPassword = counting  # type: ignore[method-assign]
        got = []
        for batch in range(10):
            got += await self.ask(
                t,
                *({"op": "auth", "id": i, "share": "priv", "password": f"guess{i}"} for i in range(batch * 10, batch * 10 + 10)),
            )
        codes = [r.message["error"] for r in got]
        self.assertEqual(codes[:3], [wire.BAD_PASSWORD] * 3)
        self.assertEqual(set(codes[3:]), {wire.SLOW_DOWN})
        self.assertEqual(len(checks), 3)
        self.assertEqual(got[3].message["retry_after"], 1)
        [right] = await self.ask(t, {"op": "auth", "id": 200, "share": "priv", "password": PASSWORD})
        self.assertEqual(right.message["error"], wire.SLOW_DOWN)
        self.now += 1
        [wrong] = await self.ask(t, {"op": "auth", "id": 201, "share": "priv", "password": "again"})
        self.assertEqual((wrong.message["error"], wrong.message["retry_after"]), (wire.BAD_PASSWORD, 2))
        self.now += 2
        [right] = await self.ask(t, {"op": "auth", "id": 202, "share": "priv", "password": PASSWORD})
        self.assertEqual(right.message, {"id": 202, "ok": True})

    async def test_passwordNeverLogged(self) -> None:
        """
        Neither a wrong nor the right password appears in any log event
        (formatted or raw) or in any answer.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        t = await self.connect()
        wrong = "Wr0ng-unique-marker"
        await self.ask(
            t,
            {"op": "auth", "id": 1, "share": "priv", "password": wrong},
            {"op": "auth", "id": 2, "share": "priv", "password": PASSWORD},
            {"op": "auth", "id": 3, "share": "priv\x00", "password": PASSWORD},
        )
        logged = "".join((formatEvent(e) or "") + repr(e) for e in events)
        self.assertIn("wrong password", logged)
        for secret in (wrong, PASSWORD):
            self.assertNotIn(secret, logged)
            self.assertNotIn(secret.encode(), t.value())


class LimitsTests(ServerTestCase):
    async def test_oversizedFrame(self) -> None:
        """
        A length prefix over 1 MiB closes the session with protocol-error,
        from the four bytes alone.
        """
        t = await self.connect()
        self.protocol.dataReceived(struct.pack(">I", wire.MAX_FRAME + 1))
        self.assertEqual(t.closeReason, wire.PROTOCOL_ERROR)
        self.protocol.dataReceived(wire.encodeFrame({"op": "shares", "id": 1}))
        self.assertEqual(t.answers, [])

    async def test_garbageAndNoID(self) -> None:
        """
        Undecodable bytes, or a request without a usable id, close the
        session with protocol-error.
        """
        for data in (b"\x00\x00\x00\x02\xff\xff", wire.encodeFrame({"op": "shares"}), wire.encodeFrame({"op": "shares", "id": -1})):
            t = await self.connect()
            self.protocol.dataReceived(data)
            self.assertEqual(t.closeReason, wire.PROTOCOL_ERROR)

    async def test_tooManyOutstanding(self) -> None:
        """
        A peer that keeps more than 32 requests unanswered (here while the
        session is paused by flow control) is closed with protocol-error;
        32 are fine.
        """
        t = await self.connect()
        self.protocol.pauseProducing()
        self.send(*({"op": "shares", "id": i} for i in range(32)))
        self.assertIsNone(t.closeReason)
        self.send({"op": "shares", "id": 32})
        self.assertEqual(t.closeReason, wire.PROTOCOL_ERROR)

    async def test_flowControl(self) -> None:
        """
        While the session is paused nothing is written; on resume the
        answers go out in order.  The server registered as the session's
        push producer.
        """
        t = await self.connect()
        self.assertIs(t.producer, self.protocol)
        self.assertTrue(t.streaming)
        self.protocol.pauseProducing()
        sha = self.sha(self.data)
        self.send(*({"op": "read", "id": i, "sha256": sha, "index": i} for i in range(3)))
        self.send({"op": "shares", "id": 3})
        self.assertEqual(t.value(), b"")
        self.protocol.resumeProducing()
        got = await t.wait(4)
        self.assertEqual([r.message["id"] for r in got], [0, 1, 2, 3])
        self.assertEqual(b"".join(r.payload or b"" for r in got[:3]), self.data)

    async def test_uploadLimit(self) -> None:
        """
        With upload-limit 1 MiB/s, the first chunk goes at once and each
        next one waits its second (on the factory's clock).
        """
        clock = Clock()
        t = await self.connect(uploadLimit=MiB, clock=clock)
        sha = self.sha(self.data)
        self.send(*({"op": "read", "id": i, "sha256": sha, "index": i} for i in range(3)))
        await t.wait(1)
        self.assertEqual(len(t.answers), 1)
        clock.advance(0.5)
        self.assertEqual(len(t.answers), 1)
        clock.advance(0.5)
        await t.wait(2)
        clock.advance(1)
        got = await t.wait(3)
        self.assertEqual(b"".join(r.payload or b"" for r in got), self.data)

    async def test_connectionLostMidRead(self) -> None:
        """
        A session lost while chunks are being read writes nothing more and
        leaves nothing behind.
        """
        t = await self.connect()
        sha = self.sha(self.data)
        self.send(*({"op": "read", "id": i, "sha256": sha, "index": i} for i in range(3)))
        self.protocol.connectionLost(None)
        await self.index.inThread(lambda: None)
        self.assertEqual(self.factory.open, 0)
        self.assertLessEqual(len(t.answers), 3)


class PacerTests(SynchronousTestCase):
    def test_pacing(self) -> None:
        """
        Reservations queue on a virtual clock at the rate; idle time is not
        saved up as a burst; rate 0 never waits.
        """
        now = [0.0]
        p = server.Pacer(lambda: now[0], 100)
        self.assertEqual([p.reserve(100), p.reserve(100), p.reserve(50)], [0.0, 1.0, 2.0])
        now[0] = 10.0
        self.assertEqual(p.reserve(100), 0.0)
        self.assertEqual(server.Pacer(lambda: 0.0, 0).reserve(10**9), 0.0)


class MemoryNetworkTests(SynchronousTestCase):
    """
    The server behind the real files plugin, over real sessions of an
    in-memory network (real TLS, simulated time, hashing threads).
    """

    def setUp(self) -> None:
        from tests.files.memnet import FilesNet

        self.net = FilesNet(self)
        pub = self.net.directory("pub")
        priv = self.net.directory("priv")
        self.data = os.urandom(3 * MiB + 11)
        with open(os.path.join(pub, "movie.bin"), "wb") as f:
            f.write(self.data)
        with open(os.path.join(priv, "diary.txt"), "wb") as f:
            f.write(b"dear diary")
        section = {
            "shares": {
                "pub": pub,
                "priv": {"path": priv, "password-hash": shares.hashPassword(PASSWORD, n=2**10)},
            }
        }
        self.a = self.net.addNode("LAB.A", section)
        self.b = self.net.addNode("LAB.B")
        self.net.link(self.a, self.b)
        self.net.indexed(self.a)

    def test_honestClient(self) -> None:
        """
        A client on another node lists shares, unlocks the protected one,
        and reads a whole file chunk by chunk, each chunk matching its hash.
        """
        from appnpy_files.transfers import connect

        client = self.net.wait(Deferred.fromCoroutine(connect(self.b, self.a.nodeID)))
        infos = self.net.wait(client.shares())
        self.assertEqual(
            [(s.name, s.protected, s.files) for s in infos], [("priv", True, None), ("pub", False, 1)]
        )
        sha = self.sha(self.data)
        info = self.net.wait(client.stat(sha256=sha))
        hashes = self.net.wait(client.chunkHashes(sha, 0, info.chunkCount))
        got = b""
        for i in range(info.chunkCount):
            chunk = self.net.wait(client.read(sha, i))
            self.assertEqual(hashlib.sha256(chunk).digest(), hashes[i * 32 : i * 32 + 32])
            got += chunk
        self.assertEqual(got, self.data)
        self.net.wait(client.auth("priv", PASSWORD))
        diary = self.net.wait(client.stat(sha256=self.sha(b"dear diary")))
        self.assertEqual(diary.path, "diary.txt")
        client.close()

    def test_hostilePeerClosedWithProtocolError(self) -> None:
        """
        A peer that sends an oversized frame over a real session sees the
        session closed with reason protocol-error; the node keeps serving.
        """
        from twisted.internet.protocol import Protocol

        lost: list[Any] = []

        class Hostile(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(struct.pack(">I", 2**31 - 1) + b"x" * 100)

            def connectionLost(self, reason: Any = None) -> None:
                lost.append(reason)

        self.net.wait(self.b.openSession(self.a.nodeID, "files", lambda info: Hostile(), {}))
        self.net.settle(lambda: bool(lost))
        self.assertEqual(getattr(lost[0].value, "reason", None), wire.PROTOCOL_ERROR)
        from appnpy_files.transfers import connect

        client = self.net.wait(Deferred.fromCoroutine(connect(self.b, self.a.nodeID)))
        self.assertEqual(len(self.net.wait(client.shares())), 2)
        client.close()

    def sha(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()
