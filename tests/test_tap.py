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
from appnpy.session.plugins import availablePlugins
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
        self.assertEqual(set(node.plugins), set(availablePlugins()))
        self.assertTrue({"echo", "ping"} <= set(node.plugins))
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


def _optionsClasses() -> list[type[usage.Options]]:
    """
    Every twisted Options class in appnpy (the twist plugin's, and any
    subcommand's).
    """
    import appnpy.tap

    found: list[type[usage.Options]] = []
    todo: list[type[usage.Options]] = [appnpy.tap.Options]
    while todo:
        cls = todo.pop()
        found.append(cls)
        for _, _, sub, _ in getattr(cls, "subCommands", None) or []:
            todo.append(sub)
    return found


class HelpTests(TestCase):
    """
    Every option of both entry points says what it does.
    """

    def test_twistOptionsHaveHelp(self) -> None:
        """
        Every parameter, flag and opt_ method of every Options class has
        help text, and --help mentions --inbound-slack.
        """
        for cls in _optionsClasses():
            options = cls()
            declared = list(getattr(cls, "optParameters", None) or [])
            declared += list(getattr(cls, "optFlags", None) or [])
            for entry in declared:
                self.assertTrue(entry[-1], f"{cls.__name__} --{entry[0]} has no help")
            for name in dir(cls):
                if name.startswith("opt_"):
                    doc = getattr(cls, name).__doc__
                    self.assertTrue(doc and doc.strip(), f"{cls.__name__}.{name} has no help")
            self.assertIn("--inbound-slack", str(options))

    def test_appnOptionsHaveHelp(self) -> None:
        """
        Every argument of every appn command has help text.
        """
        import argparse

        from appnpy.cli import buildParser

        todo = [("appn", buildParser())]
        while todo:
            where, parser = todo.pop()
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for choice in action._choices_actions:
                        self.assertTrue(choice.help, f"{where} {choice.dest} has no help")
                    todo.extend((f"{where} {n}", p) for n, p in action.choices.items())
                elif not isinstance(action, argparse._HelpAction):
                    self.assertTrue(
                        action.help and action.help != argparse.SUPPRESS,
                        f"{where} {action.option_strings or action.dest} has no help",
                    )

    def test_inboundSlackOption(self) -> None:
        """
        --inbound-slack is parsed as a whole number and reaches the config.
        """
        line = parse("--inbound-slack", "0").commandLine()
        self.assertEqual(line["inbound-slack"], 0)
        self.assertIsNone(parse().commandLine()["inbound-slack"])
        e = self.assertRaises(usage.UsageError, parse, "--inbound-slack", "some")
        self.assertEqual(str(e), "--inbound-slack 'some' is not a whole number")


class DataDirectoryMessageTests(TestCase):
    """
    Each OSError on the data directory reads as what is wrong and what to do.
    """

    def test_messages(self) -> None:
        import errno

        from appnpy.ops.lockfile import dataDirectoryProblem

        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        missing = os.path.join(root, "missing", "node")
        cases = [
            (root, errno.EACCES, "cannot write to the data directory", "chown or chmod"),
            (
                missing,
                errno.EACCES,
                "cannot create the data directory",
                f"permission denied on {root}",
            ),
            (root, errno.EROFS, "read-only file system", "remount it read-write"),
            (root, errno.ENOSPC, "no space left", "free some space"),
            (root, errno.EIO, "Input/output error", "fix it"),
        ]
        for path, code, first, second in cases:
            message = str(dataDirectoryProblem(path, OSError(code, os.strerror(code), path)))
            self.assertIn(first, message)
            self.assertIn(second, message)
            self.assertIn("--data-dir", message)
            self.assertNotIn("\n", message)

    def test_deployRaisesOneError(self) -> None:
        """
        deployNode on a data directory below a file raises
        DataDirectoryError, which makeService turns into one line.
        """
        from appnpy.ops.lockfile import DataDirectoryError

        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w"):
            pass
        dataDir = os.path.join(blocker, "node")
        options = parse("--data-dir", dataDir, "--listen", "tcp:0", "--api", "none")
        config = resolveConfig(options.commandLine(), Clock())
        self.assertRaises(DataDirectoryError, deployNode, Clock(), config)
        exit = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(
            exit.code,
            f"ERROR: cannot use the data directory {dataDir}: {blocker} is a file, not a "
            "directory; move it away or choose another directory with --data-dir",
        )


class ReadinessTests(TestCase):
    """
    The readiness line and the status view show addresses a peer can dial,
    and the log is in words.
    """

    async def _wildcard(self) -> None:
        from twisted.internet import reactor
        from twisted.logger import formatEvent, globalLogPublisher

        from appnpy.link.identity import generateIdentity
        from appnpy.node import buildNode
        from appnpy.ops.config import NodeConfig
        from appnpy.ops.describe import describeNode

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        nodes = []
        for listen in ("tcp:0", "tcp:0:interface=127.0.0.1"):
            node = buildNode(
                reactor,
                NodeConfig(dataDir=None, listen=(listen,), api=None),
                generateIdentity(),
                managePeers=False,
            )
            node.startService()
            self.addCleanup(node.stopService)
            await node.whenStarted()
            nodes.append(node)
        wildcard, loopback = nodes
        port = wildcard.ports[0].getHost().port
        await loopback.connect(f"127.0.0.1:{port}")
        [ready] = [
            e
            for e in events
            if e.get("log_format", "")
            == "node {node_id} ({name}) ready, role {role}, listening on {addresses}"
            and e.get("node_id") == wildcard.nodeID
        ]
        shown = str(ready["addresses"]).split()
        self.assertIn(f"appn://{wildcard.nodeID}@127.0.0.1:{port}", shown)
        self.assertNotIn("0.0.0.0", str(ready["addresses"]))
        self.assertEqual(describeNode(wildcard)["listen"], shown)
        texts = [formatEvent(e) or "" for e in events]
        self.assertIn(f"listening on 0.0.0.0:{port}", texts)
        for text in texts:
            self.assertNotIn(" at 0x", text)
            self.assertNotIn("Address(type=", text)

    def test_wildcardShownDialable(self) -> None:
        """
        A node listening on all interfaces announces the host's addresses
        (loopback included), not 0.0.0.0, and C{appn status} shows the same;
        no log line of starting, listening or linking carries a repr.
        """
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._wildcard())
