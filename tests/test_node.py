"""
The composition root: L{appnpy.node.buildNode} builds every node, with its
services by role, and runs the plugins' lifecycle.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from appnpy.api import INode, IPluginLifecycle, ISessionInfo, ISessionPlugin
from appnpy.testing import EchoPlugin, MemoryNetwork, resultOf


@implementer(ISessionPlugin, IPluginLifecycle)
class LifecyclePlugin:
    name = "life"
    version = "1"
    defaultCOS = "interactive"
    sessionLimit = 4

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Protocol:
        return Protocol()

    def attach(self, node: INode) -> None:
        self.events.append(("attach", node))

    def detach(self) -> None:
        self.events.append(("detach", None))


class BuildNodeTests(SynchronousTestCase):
    def test_lifecycle(self) -> None:
        """
        A plugin providing IPluginLifecycle is attached to its node once,
        when the node is built, and detached once the node has stopped.
        """
        net = MemoryNetwork()
        plugin = LifecyclePlugin()
        node = net.addNode("LAB.A", plugins=[plugin, EchoPlugin()])
        self.assertEqual(plugin.events, [("attach", node)])
        stopped = node.stopService()
        net.flush(advance=10)
        resultOf(stopped)
        self.assertEqual(plugin.events, [("attach", node), ("detach", None)])

    def test_servicesByRole(self) -> None:
        """
        The harness builds nodes as twist appnnode does: a network node gets
        the topology database, the relay, the directory and routed-session
        ends; an end node the directory and routed-session ends only.  Every
        node answers the probe.
        """
        from appnpy.ops.probe import ProbeRequest

        net = MemoryNetwork()
        network = net.addNode("LAB.N")
        end = net.addNode("LAB.E", role="end")
        self.assertIsNotNone(network.topology)
        self.assertIsNotNone(network.relay)
        self.assertIsNone(end.topology)
        self.assertIsNone(end.relay)
        for node in (network, end):
            self.assertIsNotNone(node.directory)
            self.assertIsNotNone(node.routedSessions)
            self.assertIsNotNone(node.controlHandler(ProbeRequest))
        net.stop()

    def test_bare(self) -> None:
        """
        With services=False (tests of links and adjacent sessions only) a
        node has no network services, but still answers the probe.
        """
        from appnpy.ops.probe import ProbeRequest

        net = MemoryNetwork(services=False)
        node = net.addNode("LAB.B")
        self.assertEqual(
            (node.topology, node.relay, node.directory, node.routedSessions),
            (None, None, None, None),
        )
        self.assertIsNotNone(node.controlHandler(ProbeRequest))
        net.stop()
