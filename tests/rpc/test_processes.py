"""
RPC across real C{twist appnnode} processes on a line of three nodes
A - B - C, C offering the example services calc and kv: C{appn rpc ls} and
C{appn rpc call} run as subprocesses on A, and a program (this test, an
appnpy node of its own linked to A) calls kv on C, three hops away, and is
called back when another client changes the key.
"""

from __future__ import annotations

import os

from appnpy_rpc import RPCClient, Service, exported
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import SkipTest, TestCase

from appnpy.link.identity import generateIdentity
from appnpy.node import buildNode
from appnpy.ops.config import NodeConfig
from tests.interop.harness import NodeHarness
from tests.interop.test_network import appn, run, topology

PLUGINS = ["--plugin", "rpc", "--plugin", "echo"]


class Watcher(Service):
    name = "kv-watcher"

    def __init__(self) -> None:
        self.changes: list[tuple[str, str | None]] = []
        self.arrived: Deferred[None] = Deferred()

    @exported
    def changed(self, key: str, value: str | None) -> None:
        self.changes.append((key, value))
        d, self.arrived = self.arrived, Deferred()
        d.callback(None)


class RPCProcessTests(TestCase):
    timeout = 120

    def test_lineOfThree(self) -> None:
        from importlib.metadata import entry_points

        if not any(ep.name == "rpc" for ep in entry_points(group="appnpy.session_plugins")):
            raise SkipTest("appnpy-rpc is not installed: pip install -e ./plugins/rpc")
        return run(self._lineOfThree())

    async def _lineOfThree(self) -> None:
        harness = NodeHarness(self, reactor)
        config = os.path.join(harness.root, "c.toml")
        with open(config, "w") as f:
            f.write('[plugin.rpc]\nservices = ["calc", "kv"]\n')
        a = await harness.startReady("a", maxPeers=1, extra=["--name", "LAB.A", *PLUGINS])
        b = await harness.startReady(
            "b", peers=[a.hostPort()], maxPeers=1, extra=["--name", "LAB.B", *PLUGINS]
        )
        c = harness.start(
            "c",
            peers=[b.hostPort()],
            maxPeers=1,
            extra=["--name", "LAB.C", "--config", config, *PLUGINS],
        )
        converged = [topology(a, 3, links=2), topology(c, 3, links=2)]
        await run(c.whenReady())
        await gatherResults(converged)

        # appn rpc ls: locally on C, and C's from A.
        code, listing, err = await appn(c, "rpc", "ls")
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(s["service"] for s in listing["services"]), ["calc", "kv"])
        code, listing, err = await appn(a, "rpc", "ls", "LAB.C")
        self.assertEqual(code, 0, err)
        self.assertEqual(listing["node"], c.nodeID)
        calc = {s["service"]: s for s in listing["services"]}["calc"]
        signatures = {m["signature"] for m in calc["methods"]}
        self.assertIn("add(a: int, b: int) -> int", signatures)

        # appn rpc call from A, by resource name, through B.
        code, answer, err = await appn(a, "rpc", "call", "rpc:calc", "add", "20", "22")
        self.assertEqual(code, 0, err)
        self.assertEqual((answer["result"], answer["node"]), (42, c.nodeID))
        code, answer, err = await appn(a, "rpc", "call", "calc", "stats", "[1, 2, 6]")
        self.assertEqual(code, 0, err)
        self.assertEqual(answer["result"], {"count": 3, "mean": 3.0})
        code, answer, err = await appn(a, "rpc", "call", "calc", "div", "1", "0")
        self.assertEqual(code, 1)
        self.assertEqual(answer["error"], "division-by-zero", answer)
        code, answer, err = await appn(a, "rpc", "call", "calc", "add", '"one"', "2")
        self.assertEqual(code, 1)
        self.assertEqual(answer["error"], "bad-arguments", answer)
        self.assertNotIn("Traceback", err)

        # A program three hops from C: it watches a key and is called back
        # when A's command line sets it.
        node = buildNode(
            reactor,
            NodeConfig(dataDir=None, name="LAB.PROG", listen=(), api=None),
            generateIdentity(),
            [],
            managePeers=False,
        )
        node.startService()
        self.addCleanup(node.stopService)
        await node.connect(a.addresses[0])
        await topology(a, 4)
        watcher = Watcher()
        kv = await RPCClient(node).connect("rpc:kv", expose=[watcher])
        self.assertEqual(kv.connection.peerNodeID, c.nodeID)
        self.assertIsNone(await kv.call("watch", "colour"))
        arrived = watcher.arrived
        code, answer, err = await appn(a, "rpc", "call", "kv", "set", '"colour"', '"blue"')
        self.assertEqual(code, 0, err)
        await arrived
        self.assertEqual(watcher.changes, [("colour", "blue")])
        self.assertEqual(await kv.call("get", "colour"), "blue")
        kv.close()
        await kv.connection.closed
