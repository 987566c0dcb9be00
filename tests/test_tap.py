"""
Tests for L{appnpy.tap}: the C{twist appnnode} options and service.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import TestCase

from appnpy.errors import ConfigurationError, DataDirectoryLocked, PluginError
from appnpy.net.admission import AdmissionControl
from appnpy.net.peers import PeerManager
from appnpy.node import Node, deployNode
from appnpy.ops.config import resolveConfig
from appnpy.ops.lockfile import LOCK_FILE, lockDataDirectory
from appnpy.tap import Options, makeService


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(TestCase):
    """
    The command line maps onto config keys; repeatable options accumulate.
    """

    def test_repeatable(self) -> None:
        """
        --peer, --plugin and --listen may be given several times.
        """
        options = parse(
            "--peer",
            "a.example:1",
            "-p",
            "b.example:2",
            "--plugin",
            "echo",
            "--listen",
            "tcp:0",
            "--max-peers",
            "4",
            "--name",
            "LAB.X",
        )
        line = options.commandLine()
        self.assertEqual(line["peers"], ["a.example:1", "b.example:2"])
        self.assertEqual(line["plugins"], ["echo"])
        self.assertEqual(line["listen"], ["tcp:0"])
        self.assertEqual(line["max-peers"], 4)
        self.assertEqual(line["name"], "LAB.X")

    def test_notGivenIsNone(self) -> None:
        """
        Options not given are None or empty, so the config file can set them.
        """
        line = parse().commandLine()
        self.assertIsNone(line["max-peers"])
        self.assertEqual(line["peers"], [])

    def test_badMaxPeers(self) -> None:
        """
        A non-numeric --max-peers is a usage error.
        """
        self.assertRaises(usage.UsageError, parse, "--max-peers", "many")


class ServiceTests(TestCase):
    """
    deployNode assembles lock, node, peer manager and admission control.
    """

    def config(self, *argv: str) -> tuple[object, str]:
        dataDir = self.mktemp()
        options = parse("--data-dir", dataDir, "--listen", "tcp:0", "--api", "none", *argv)
        return resolveConfig(options.commandLine(), Clock()), dataDir

    def stopLater(self, service: object) -> None:
        self.addCleanup(service.lock.release)  # type: ignore[attr-defined]

    def test_build(self) -> None:
        """
        The node gets its identity, every installed plugin, a PeerManager
        with the configured peers and max-peers, and admission control.
        """
        config, dataDir = self.config("--name", "LAB.T", "--max-peers", "3", "--peer", "h:1")
        top = deployNode(Clock(), config)
        self.stopLater(top)
        node = top.node
        self.assertIsInstance(node, Node)
        self.assertEqual(node.name, "LAB.T")
        self.assertEqual(set(node.plugins), {"echo", "ping"})
        self.assertIsInstance(node.admission, AdmissionControl)
        peers = node.getServiceNamed("peers")
        self.assertIsInstance(peers, PeerManager)
        self.assertEqual(peers.maxPeers, 3)
        self.assertEqual([str(a) for a in peers.bootstrap], ["h:1"])
        self.assertTrue(os.path.exists(os.path.join(dataDir, "node.key")))
        self.assertTrue(os.path.exists(os.path.join(dataDir, LOCK_FILE)))

    def test_sameIdentity(self) -> None:
        """
        A second start on the same data directory is the same node.
        """
        config, _ = self.config()
        first = deployNode(Clock(), config)
        nodeID = first.node.nodeID
        first.lock.release()
        second = deployNode(Clock(), config)
        self.stopLater(second)
        self.assertEqual(second.node.nodeID, nodeID)

    def test_pluginsChosen(self) -> None:
        """
        --plugin enables only the named plugins; an unknown one is an error.
        """
        config, _ = self.config("--plugin", "ping")
        top = deployNode(Clock(), config)
        self.stopLater(top)
        self.assertEqual(set(top.node.plugins), {"ping"})
        config, _ = self.config("--plugin", "nosuch")
        self.assertRaises(PluginError, deployNode, Clock(), config)

    def test_pluginSection(self) -> None:
        """
        [plugin.<name>] is passed to the plugin's configure; a section for a
        plugin that is not installed is an error naming it.
        """
        from appnpy_echo import echoPlugin

        self.addCleanup(setattr, echoPlugin, "sessionLimit", echoPlugin.sessionLimit)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[plugin.echo]\nsession-limit = 3\n")
        config, _ = self.config("--config", path)
        top = deployNode(Clock(), config)
        self.stopLater(top)
        self.assertEqual(top.node.plugins["echo"].sessionLimit, 3)
        with open(path, "w") as f:
            f.write("[plugin.nosuch]\n")
        config, _ = self.config("--config", path)
        e = self.assertRaises(ConfigurationError, deployNode, Clock(), config)
        self.assertIn("plugin.nosuch", str(e))

    def test_locked(self) -> None:
        """
        A second node on a locked data directory fails with
        DataDirectoryLocked, and makeService turns it into one line and a
        non-zero exit.
        """
        config, dataDir = self.config()
        lock = lockDataDirectory(dataDir)
        self.addCleanup(lock.release)
        e = self.assertRaises(DataDirectoryLocked, deployNode, Clock(), config)
        self.assertIn(f"by process {os.getpid()}", str(e))
        options = parse("--data-dir", dataDir, "--listen", "tcp:0", "--api", "none")
        exit = self.assertRaises(SystemExit, makeService, options)
        self.assertTrue(str(exit.code).startswith("ERROR: Another node is already running"))
        self.assertNotIn("\n", str(exit.code))

    def test_lockReleasedOnFailure(self) -> None:
        """
        When building fails after locking, the lock is released.
        """
        config, dataDir = self.config("--plugin", "nosuch")
        self.assertRaises(PluginError, deployNode, Clock(), config)
        lockDataDirectory(dataDir).release()
