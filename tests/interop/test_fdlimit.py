"""
File-descriptor exhaustion (robustness checklist A): a real C{twist
appnnode} run with C{ulimit -n 64} (through C{prlimit}) and flooded with idle
TCP connections stays up, never hits EMFILE, summarises what it shed, and
honest nodes link both during the flood and after it.
"""

from __future__ import annotations

import errno
import shutil
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from appnpy.errors import SessionClosed
from appnpy.link.identity import generateIdentity
from appnpy.node import Node
from tests.interop.harness import NodeHarness, exitedCleanly
from tests.test_robustness import PlainClient, _OneProtocolFactory, whenSome, withTimeout

#: The node's file-descriptor limit (soft and hard).
NOFILE = 64
#: Idle connections the flood opens, in batches the listen backlog holds.
FLOOD = 300
BATCH = 25
#: What the node's admission control allows open at once for that limit
#: (appnpy.net.admission.FD_RESERVE kept free).
ALLOWED = NOFILE - 32


class _Gone:
    """
    The transport of a flood connection reset while it connected.
    """

    def loseConnection(self) -> None:
        pass


class FileDescriptorLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if shutil.which("prlimit") is None:
            raise SkipTest("needs prlimit (util-linux)")

    async def honestLink(self, address: str) -> int:
        """
        Link a fresh node to C{address}; a refusal over the node's accept
        rate (busy, right after a flood) is retried as a peer manager would,
        after a short backoff.  Returns how many attempts were refused.
        """
        node = Node(reactor, generateIdentity())
        node.startService()
        self.addCleanup(node.stopService)
        for attempt in range(20):
            try:
                await withTimeout(node.connect(address), 10)
                return attempt
            except SessionClosed as e:
                if e.reason != "busy":
                    raise
                await deferLater(reactor, 0.25)
        raise AssertionError("still refused after 20 attempts")

    async def test_floodUnderLowLimit(self) -> None:
        harness = NodeHarness(self, reactor)
        seed = await harness.start(
            "seed", wrap=["prlimit", f"--nofile={NOFILE}:{NOFILE}"]
        ).whenReady()
        address = seed.addresses[0]
        host, _, port = seed.hostPort().rpartition(":")
        clients: list[PlainClient] = []
        for _ in range(FLOOD // BATCH):
            batch = [PlainClient() for _i in range(BATCH)]
            clients += batch
            endpoint = TCP4ClientEndpoint(reactor, host, int(port))
            await gatherResults([Deferred.fromCoroutine(self._connect(endpoint, c)) for c in batch])
            # The node sheds all but the connections it has room for.
            if len(clients) > ALLOWED:
                await withTimeout(whenSome([c.lost for c in clients], len(clients) - ALLOWED), 10)
        self.assertLessEqual(sum(not c.lost.called for c in clients), ALLOWED)

        # While the flood is held, an honest node links.
        await self.honestLink(address)
        self.assertFalse(seed.ended)
        texts = [e["text"] for e in seed.events]
        self.assertEqual([t for t in texts if "EMFILE" in t or "Too many open" in t], [])
        await seed.waitFor(lambda e: "dropped {dropped}" in e.get("log_format", ""), "a summary")
        self.assertEqual([e for e in seed.events if "log_failure" in e], [])

        # The flood goes: the node accepts again as before.
        for c in clients:
            if not c.lost.called:
                c.transport.loseConnection()
        await withTimeout(gatherResults([c.lost for c in clients]), 10)
        await self.honestLink(address)
        self.assertFalse(seed.ended)

        # A clean stop; what was shed is summarised in a few lines, not one
        # line a connection.
        seed.signal(signal.SIGTERM)
        await seed.whenExited()
        self.assertTrue(exitedCleanly(seed))
        summaries = [e for e in seed.events if "dropped {dropped}" in e.get("log_format", "")]
        shed = sum(e["dropped"] + e["full"] + e["rate"] for e in summaries)
        self.assertGreaterEqual(shed, FLOOD - ALLOWED)
        self.assertLess(len(summaries), 20)
        self.assertEqual([e for e in seed.events if "log_failure" in e], [])

    async def _connect(self, endpoint: Any, client: PlainClient) -> None:
        try:
            await withTimeout(endpoint.connect(_OneProtocolFactory(client)))
        except ConnectError as e:
            # Shed so fast that the reset came before this end saw its
            # connect complete: as closed as any other shed connection.
            if e.osError != errno.ECONNRESET:
                raise
            client.transport = _Gone()
            client.lost.callback(e)
