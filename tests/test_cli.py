"""
The appn command line, run in-process (in a thread, so the reactor keeps
serving the node's API) or as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from appnpy.cli import buildParser, main
from appnpy.net.routing import SECURE_FLOOR
from tests.test_management import makeNode, nodeAddress, startLab, startManaged, until


async def runCLI(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await deferToThread(main, argv, out, err)
    return code, out.getvalue(), err.getvalue()


class NoNodeTests(unittest.TestCase):
    def test_noApiFile(self) -> None:
        """
        No api.json: a clear message naming the directory and how to start a
        node, exit status 1.
        """
        d = self.mktemp()
        os.makedirs(d)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["--data-dir", d, "status"], out, err), 1)
        self.assertEqual(
            err.getvalue(),
            f"ERROR: no node is running in {d}; start one with: twist appnnode --data-dir {d}\n",
        )
        self.assertEqual(out.getvalue(), "")

    def test_stalePid(self) -> None:
        """
        An api.json left by a dead process counts as no node.
        """
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "api.json"), "w") as f:
            json.dump({"url": "http://127.0.0.1:1/", "pid": 2**22 + 12345, "node_id": "x"}, f)
        with open(os.path.join(d, "api-token"), "w") as f:
            f.write("t")
        err = io.StringIO()
        self.assertEqual(main(["--data-dir", d, "peers"], io.StringIO(), err), 1)
        self.assertIn("no node is running", err.getvalue())

    def test_connectionRefused(self) -> None:
        """
        A live pid but nothing listening counts as no node.
        """
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "api.json"), "w") as f:
            json.dump({"url": "http://127.0.0.1:1/", "pid": os.getpid(), "node_id": "x"}, f)
        with open(os.path.join(d, "api-token"), "w") as f:
            f.write("t")
        err = io.StringIO()
        self.assertEqual(main(["--data-dir", d, "sessions"], io.StringIO(), err), 1)
        self.assertIn("no node is running", err.getvalue())

    def test_usage(self) -> None:
        """
        A bad command line is an ERROR line and exit status 2.
        """
        err = io.StringIO()
        self.assertEqual(main(["frobnicate"], io.StringIO(), err), 2)
        self.assertIn("ERROR:", err.getvalue())

    def test_jsonAfterCommand(self) -> None:
        """
        --json is accepted before or after the command.
        """
        parser = buildParser()
        self.assertTrue(parser.parse_args(["status", "--json"]).json)
        self.assertTrue(parser.parse_args(["--json", "status"]).json)
        self.assertFalse(parser.parse_args(["status"]).json)

    def test_defaultDataDir(self) -> None:
        """
        The default data directory follows XDG_DATA_HOME, as the node's does.
        """
        from appnpy import cli

        self.patch(os, "environ", {"XDG_DATA_HOME": "/x/data", "HOME": "/home/u"})
        self.assertEqual(cli.defaultDataDir(), "/x/data/appnpy")


class CATests(unittest.TestCase):
    def test_createAndSign(self) -> None:
        """
        ca create makes a CA; ca sign issues the node's certificate with it.
        """
        from appnpy.link.identity import certifiedCPName, loadOrCreateIdentity

        ca, nodeDir = self.mktemp(), self.mktemp()
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["ca", "create", "--ca-dir", ca, "--netid", "LAB"], out, err), 0)
        self.assertIn("LAB", out.getvalue())
        self.assertTrue(os.path.exists(os.path.join(ca, "ca.crt")))
        before = loadOrCreateIdentity(nodeDir)
        out = io.StringIO()
        argv = ["--json", "ca", "sign", "--ca-dir", ca, "--data-dir", nodeDir, "--name", "lab.a"]
        code = main(argv, out, err)
        self.assertEqual(code, 0, err.getvalue())
        self.assertEqual(json.loads(out.getvalue())["data_dir"], os.path.abspath(nodeDir))
        after = loadOrCreateIdentity(nodeDir)
        self.assertEqual(certifiedCPName(after.certificate), "LAB.A")
        self.assertEqual(before.nodeID, after.nodeID)
        self.assertFalse(after.isSelfSigned)
        self.assertTrue(os.path.exists(os.path.join(nodeDir, "network-ca.crt")))

    def test_createTwice(self) -> None:
        """
        Creating a CA over an existing one is an ERROR, not a traceback.
        """
        ca = self.mktemp()
        main(["ca", "create", "--ca-dir", ca, "--netid", "LAB"], io.StringIO(), io.StringIO())
        err = io.StringIO()
        self.assertEqual(
            main(["ca", "create", "--ca-dir", ca, "--netid", "LAB"], io.StringIO(), err), 1
        )
        self.assertTrue(err.getvalue().startswith("ERROR: "))
        self.assertNotIn("Traceback", err.getvalue())


class LiveTests(unittest.TestCase):
    """
    Commands against a node's real management API.
    """

    async def _commands(self) -> None:
        node, service = await startManaged(self)
        other = makeNode(self, "LAB.BETA")
        address = await nodeAddress(other)
        d = service.dataDir

        code, out, err = await runCLI(["--data-dir", d, "connect", address])
        self.assertEqual(code, 0, err)
        self.assertIn("LAB.BETA", out)

        code, out, err = await runCLI(["--data-dir", d, "status", "--json"])
        self.assertEqual(code, 0, err)
        status = json.loads(out)
        for key in ("node_id", "name", "role", "listen", "neighbours"):
            self.assertIn(key, status)
        self.assertEqual(status["node_id"], node.nodeID)
        self.assertEqual(
            {k: status["neighbours"][0][k] for k in ("node_id", "name")},
            {"node_id": other.nodeID, "name": "LAB.BETA"},
        )
        for key in ("address", "rtt_ms"):
            self.assertIn(key, status["neighbours"][0])

        code, out, err = await runCLI(["--data-dir", d, "status"])
        self.assertEqual(code, 0, err)
        self.assertIn(node.nodeID, out)
        self.assertIn("LAB.BETA", out)
        self.assertIn("RTT_MS", out)

        code, out, err = await runCLI(["--data-dir", d, "peers"])
        self.assertIn("LAB.BETA", out)
        code, out, err = await runCLI(["--data-dir", d, "plugins"])
        self.assertIn("echo", out)
        self.assertIn("ping", out)
        code, out, err = await runCLI(["--data-dir", d, "sessions", "--json"])
        self.assertEqual(json.loads(out), [])

        code, out, err = await runCLI(
            ["--data-dir", d, "--json", "echo", "LAB.BETA", "--count", "2", "--size", "10"]
        )
        self.assertEqual(code, 0, err)
        result = json.loads(out)
        self.assertEqual((result["sent"], result["received"]), (2, 2))
        self.assertIsInstance(result["rtt_ms_median"], float)
        code, out, err = await runCLI(["--data-dir", d, "echo", "LAB.BETA"])
        self.assertIn("5 sent, 5 received", out)

        code, out, err = await runCLI(["--data-dir", d, "echo", "LAB.NOBODY"])
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("ERROR: "), err)
        self.assertNotIn("Traceback", err)

        code, out, err = await runCLI(["--data-dir", d, "disconnect", "LAB.BETA"])
        self.assertEqual(code, 0, err)
        self.assertEqual(node.links, {})

        code, out, err = await runCLI(["--data-dir", d, "connect", "127.0.0.1:1"])
        self.assertEqual(code, 1)
        self.assertIn("ERROR: could not link to 127.0.0.1:1", err)

    def test_commands(self) -> Deferred[None]:
        """
        connect, status (table and --json contract), peers, plugins, sessions,
        echo, disconnect; errors from the node are ERROR lines.
        """
        return Deferred.fromCoroutine(self._commands())

    async def _wrongToken(self) -> None:
        node, service = await startManaged(self)
        with open(os.path.join(service.dataDir, "api-token"), "w") as f:
            f.write("not-the-token\n")
        code, out, err = await runCLI(["--data-dir", service.dataDir, "status"])
        self.assertEqual(code, 1)
        self.assertIn("ERROR: missing or wrong API token", err)

    def test_wrongToken(self) -> Deferred[None]:
        """
        A 401 from the node is an ERROR line.
        """
        return Deferred.fromCoroutine(self._wrongToken())

    async def _brokenPipe(self) -> None:
        node, service = await startManaged(self)

        def closedReader() -> tuple[int, bytes]:
            # The reader is gone before appn writes a byte, as when `head`
            # has read its lines: every write fails with EPIPE.
            process = subprocess.Popen(
                [sys.executable, "-m", "appnpy.cli", "--data-dir", service.dataDir, "status"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ),
            )
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            err = process.stderr.read()
            return process.wait(timeout=60), err

        code, err = await deferToThread(closedReader)
        self.assertEqual((code, err), (0, b""))

    def test_brokenPipe(self) -> Deferred[None]:
        """
        `appn status | head -3`: when the reader stops reading, appn exits
        quietly (status 0, nothing on stderr), not with a BrokenPipeError
        traceback.
        """
        return Deferred.fromCoroutine(self._brokenPipe())

    async def _probe(self) -> Any:
        node = makeNode(self, "LAB.TARGET")
        address = await nodeAddress(node)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "appnpy.cli", "probe", address], env=env, reactor=reactor
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"PASS  echo-inbound", out)
        self.assertIn(b"all steps passed", out)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "appnpy.cli", "probe", "--json", "127.0.0.1:1", "--timeout", "3"],
            env=env,
            reactor=reactor,
        )
        self.assertEqual(code, 1)
        self.assertFalse(json.loads(out)["ok"])

    def test_probeSubprocess(self) -> Deferred[None]:
        """
        `python -m appnpy.cli probe` passes against a node and exits 1 when
        there is none.
        """
        return Deferred.fromCoroutine(self._probe())


class NetworkServicesCLITests(unittest.TestCase):
    """
    topology, resources, locate and route against nodes with the network
    services installed (tests.test_management.startLab).
    """

    async def _commands(self) -> None:
        lab = await startLab(self)
        d1, dE = lab.api1.dataDir, lab.apiE.dataDir
        n1, n2, n3, n4 = (x.nodeID for x in (lab.n1, lab.n2, lab.n3, lab.n4))

        code, out, err = await runCLI(["--data-dir", d1, "topology"])
        self.assertEqual(code, 0, err)
        self.assertIn(f"digest    {lab.n1.topology.digest()}", out)
        for header in ("RESISTANCE", "END_NODES", "RTT_MS", "COST", "ROUTABLE"):
            self.assertIn(header, out)
        self.assertRegex(out, r"LAB\.N1 +LAB\.N4 +\d+ +\d+ +200 ")
        code, out, err = await runCLI(["--data-dir", d1, "topology", "--json"])
        topo = json.loads(out)
        self.assertEqual(len(topo["nodes"]), 4)
        self.assertEqual(topo["digest"], lab.n1.topology.digest())
        code, out, err = await runCLI(["--data-dir", dE, "topology"])
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out,
            "LAB.E is an end node: it keeps no topology database; its network-node "
            f"server is LAB.N1 ({n1})\n",
        )

        code, out, err = await runCLI(["--data-dir", d1, "resources"])
        self.assertEqual(code, 0, err)
        self.assertIn("  echo:LAB.N1\n", out)
        self.assertRegex(out, rf"chat:lobby +LAB\.E +{lab.e.nodeID[:12]} ")
        code, out, err = await runCLI(["--data-dir", dE, "resources", "--json"])
        res = json.loads(out)
        self.assertEqual((res["server"], res["role"]), (n1, "end"))
        self.assertIn("chat:lobby", res["local"])
        code, out, err = await runCLI(["--data-dir", dE, "resources"])
        self.assertIn(f"server    LAB.N1 ({n1})", out)

        code, out, err = await runCLI(["--data-dir", d1, "locate", "files:music"])
        self.assertEqual(code, 0, err)
        self.assertIn(f"files:music is offered by LAB.N3 ({n3})\n", out)
        self.assertIn("route     LAB.N1 -> LAB.N2 -> LAB.N3\n", out)
        code, out, err = await runCLI(["--data-dir", dE, "--json", "locate", "files:music"])
        found = json.loads(out)
        self.assertEqual(found["route"], [lab.e.nodeID, n1, n2, n3])
        code, out, err = await runCLI(["--data-dir", d1, "locate", "files:none"])
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("ERROR: "), err)

        code, out, err = await runCLI(["--data-dir", d1, "route", "LAB.N3"])
        self.assertEqual(code, 0, err)
        route = lab.n1.topology.explainRoute(n1, n3, "interactive")
        lines = out.splitlines()
        self.assertEqual(lines[0], "route to LAB.N3 for class of service interactive:")
        self.assertEqual(lines[1].split(), ["HOP", "NAME", "NODE", "WEIGHT"])
        self.assertEqual(lines[2].split(), ["0", "LAB.N1", n1[:12], "-"])
        self.assertEqual(
            lines[3].split(), ["1", "LAB.N2", n2[:12], f"{route.route.hopWeights[0]:.2f}"]
        )
        self.assertEqual(
            lines[4].split(), ["2", "LAB.N3", n3[:12], f"{route.route.hopWeights[1]:.2f}"]
        )
        self.assertEqual(lines[5], f"total     {route.route.weight:.2f}")
        self.assertEqual(lines[6], "alternatives:")
        alt = route.alternatives[0]
        self.assertEqual(
            lines[7],
            f"  LAB.N1 -> LAB.N4 -> LAB.N3  total {alt['weight']:.2f}  ({alt['why']})",
        )
        self.assertIn("more", alt["why"])
        code, out, err = await runCLI(
            ["--data-dir", d1, "route", "LAB.N3", "--cos", "batch", "--json"]
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["cos"], "batch")
        code, out, err = await runCLI(["--data-dir", dE, "route", n3])
        self.assertEqual(code, 0, err)
        self.assertIn("(chosen by LAB.N1)", out)
        # The end node shows its server's explanation: weights and alternatives.
        fromServer = lab.n1.topology.explainRoute(n1, n3, "interactive")
        self.assertIn(f"total     {fromServer.route.weight:.2f}\n", out)
        self.assertIn("alternatives:\n  LAB.N1 -> LAB.N4 -> LAB.N3", out)
        code, out, err = await runCLI(["--data-dir", d1, "route", "LAB.NOBODY"])
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("ERROR: "), err)
        self.assertNotIn("Traceback", err)
        code, out, err = await runCLI(["--data-dir", d1, "route", "LAB.N3", "--cos", "nope"])
        self.assertEqual(code, 1)
        self.assertIn("no class of service 'nope'", err)

        code, out, err = await runCLI(["--data-dir", dE, "echo", n3, "--count", "2"])
        self.assertEqual(code, 0, err)
        self.assertIn("2 sent, 2 received", out)

        # A link below the secure class's security floor: the shorter path is excluded.
        lab.n1.topology.setLinkCharacteristics(n2, security=0)
        await until(lambda: lab.n1.topology.explainRoute(n1, n3, "secure").rejected != [], [lab.n1])
        code, out, err = await runCLI(["--data-dir", d1, "route", "LAB.N3", "--cos", "secure"])
        self.assertEqual(code, 0, err)
        self.assertIn("1    LAB.N4  ", out)
        why = lab.n1.topology.explainRoute(n1, n3, "secure").rejected[0]["excludedBy"][0]["why"]
        self.assertIn(f"security 0 not in {SECURE_FLOOR}..inf", why)
        self.assertIn(
            f"excluded by the class of service:\n  LAB.N1 -> LAB.N2 -> LAB.N3  "
            f"(LAB.N1 -> LAB.N2: {why})\n",
            out,
        )

    def test_commands(self) -> Deferred[None]:
        """
        topology (database tables; an end node names its server), resources,
        locate (owner and route), route (hop table with per-hop weights, the
        total, alternatives and why they lost), each with --json; echo to a
        non-adjacent node; errors are ERROR lines.
        """
        return Deferred.fromCoroutine(self._commands())


class PluginCommandTests(unittest.TestCase):
    """
    Commands that installed plugins add (ICommandPlugin).
    """

    def test_echoStatsListed(self) -> None:
        """
        The installed echo plugin's `echo-stats` is a command, with no node
        running; the core `echo` command is still appn's own.
        """
        from appnpy.cli import cmdEcho

        parser = buildParser()
        args = parser.parse_args(["echo-stats", "--json"])
        self.assertTrue(args.json)
        self.assertIs(parser.parse_args(["echo", "LAB.B"]).func, cmdEcho)

    def test_brokenPluginSkipped(self) -> None:
        """
        A plugin that fails to load, or whose addCommands raises or takes a
        core command's name, costs only its own commands.
        """
        from zope.interface import implementer

        from appnpy import cli
        from appnpy.api import ICommandPlugin
        from appnpy.errors import PluginError

        @implementer(ICommandPlugin)
        class Greedy:
            name = "greedy"

            def addCommands(self, add: Any) -> None:
                add("greedy-ok", "fine", lambda args, api, out: 0)
                add("status", "mine now", lambda args, api, out: 0)

        @implementer(ICommandPlugin)
        class Crashing:
            name = "crashing"

            def addCommands(self, add: Any) -> None:
                raise RuntimeError("bug")

        def load(name: str) -> Any:
            if name == "missing":
                raise PluginError("failed to load")
            return {"greedy": Greedy(), "crashing": Crashing()}[name]

        self.patch(
            cli, "availablePlugins", lambda: dict.fromkeys(["missing", "greedy", "crashing"])
        )
        self.patch(cli, "loadPlugin", load)
        parser = buildParser()
        self.assertIs(parser.parse_args(["status"]).func, cli.cmdStatus)
        self.assertEqual(parser.parse_args(["greedy-ok"]).command, "greedy-ok")
        d = self.mktemp()
        os.makedirs(d)
        err = io.StringIO()
        self.assertEqual(main(["--data-dir", d, "peers"], io.StringIO(), err), 1)
        self.assertIn("no node is running", err.getvalue())

    async def _echoStats(self) -> None:
        from appnpy_echo import echoPlugin

        node, service = await startManaged(self)
        node.addSessionPlugin(echoPlugin)
        other = makeNode(self, "LAB.BETA")
        await node.connect(await nodeAddress(other))
        # The node's own echo plugin answers LAB.BETA's echo.
        before = echoPlugin.echoedBytes
        code, out, err = await runCLI(["--data-dir", service.dataDir, "--json", "echo-stats"])
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["echoed_bytes"], before)
        code, out, err = await runCLI(["--data-dir", service.dataDir, "echo-stats"])
        self.assertEqual(code, 0, err)
        self.assertIn(f"echoed    {before} bytes", out)
        code, out, err = await runCLI(["--data-dir", self.mktemp(), "echo-stats"])
        self.assertEqual(code, 1)
        self.assertIn("ERROR: no node is running", err)

    def test_echoStats(self) -> Deferred[None]:
        """
        `appn echo-stats` asks the node's API for the echo plugin's counts,
        as a table or --json; with no node, an ERROR line.
        """
        return Deferred.fromCoroutine(self._echoStats())
