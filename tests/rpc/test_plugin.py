"""
The rpc plugin as the node and the operator see it: configuration,
resources, the management API routes, C{appn rpc}, the status page and the
metrics.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from appnpy_rpc import RPCPlugin, rpcPlugin
from appnpy_rpc.examples import Calculator
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from appnpy.api import (
    APIError,
    ConfigurationError,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IMetricsPlugin,
    IPluginLifecycle,
    ISessionPlugin,
    IStatusPagePlugin,
    PluginRequest,
)
from appnpy.testing import resultOf
from tests.rpc.helpers import Line


class ConfigTests(SynchronousTestCase):
    def test_provides(self) -> None:
        for interface in (
            ISessionPlugin,
            IPluginLifecycle,
            IAPIRoutesPlugin,
            ICommandPlugin,
            IStatusPagePlugin,
            IMetricsPlugin,
        ):
            verifyObject(interface, rpcPlugin)

    def test_servicesByModulePath(self) -> None:
        plugin = RPCPlugin()
        plugin.configure(
            {
                "services": ["appnpy_rpc.examples:Calculator", "appnpy_rpc.examples:KeyValue"],
                "call-timeout": 5,
                "max-timeout": 60.5,
                "max-calls-in-flight": 32,
                "max-depth": 4,
                "session-limit": 8,
            }
        )
        self.assertEqual(plugin.resources(), ["rpc:calc", "rpc:kv"])
        self.assertEqual(
            (plugin.limits.callTimeout, plugin.limits.maxTimeout, plugin.limits.maxInFlight),
            (5.0, 60.5, 32),
        )
        self.assertEqual((plugin.limits.maxDepth, plugin.sessionLimit), (4, 8))

    def test_badConfig(self) -> None:
        for section, says in [
            ({"colour": 1}, "no key 'colour'"),
            ({"services": "calc"}, "list of names"),
            ({"services": ["no-such-service"]}, "no service 'no-such-service'"),
            ({"services": ["no.such.module:X"]}, "failed to load"),
            ({"services": ["appnpy_rpc.examples:WATCHER_SERVICE"]}, "services"),
            ({"max-calls-in-flight": 0}, "whole number >= 1"),
            ({"max-calls-in-flight": 1.5}, "whole number"),
            ({"call-timeout": "5"}, "number"),
            ({"call-timeout": True}, "number"),
            ({"session-limit": -1}, "session-limit"),
        ]:
            with self.assertRaises(ConfigurationError) as e:
                RPCPlugin().configure(section)
            self.assertIn(says, str(e.exception), section)

    def test_exposeAnnouncesTheResource(self) -> None:
        """
        expose and withdraw change the resources, and the directory hears
        of it: another node locates rpc:calc, then no longer.
        """
        line = Line()
        plugin = line.plugins[1]
        plugin.expose(Calculator())
        line.net.flush(advance=5)
        self.assertIn("rpc:calc", plugin.resources())
        plugin.withdraw("calc")
        self.assertNotIn("rpc:calc", plugin.resources())


class FakeAPI:
    """
    An IAPIClient calling the plugin's route handlers directly.
    """

    def __init__(self, line: Line, plugin: RPCPlugin, json: bool = False) -> None:
        self.line = line
        self.routes = plugin.apiRoutes()
        self.json = json
        self.requests: list[tuple[str, str, Any]] = []

    def _run(self, method: str, path: str, query: Any, body: Any) -> Any:
        assert path.startswith("plugins/rpc/")
        self.requests.append((method, path, query or body))
        handler = self.routes[(method, path[len("plugins/rpc/") :])]
        result = handler(PluginRequest(method, path, query or {}, body or {}))
        d = Deferred.fromCoroutine(result)  # type: ignore[arg-type]
        self.line.net.flush()
        return resultOf(d)

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        return self._run("GET", path, query, None)

    def post(self, path: str, body: dict[str, object] | None = None) -> Any:
        return self._run("POST", path, None, body)


def runCommand(api: FakeAPI, *argv: str) -> str:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    runs = {}

    def add(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        runs[name] = run
        return sub.add_parser(name, help=help)

    rpcPlugin.addCommands(add)
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    assert runs[args.command](args, api, out) == 0
    return out.getvalue()


class OperatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.line = Line()
        self.api = FakeAPI(self.line, self.line.plugins[0])

    def test_lsLocal(self) -> None:
        out = runCommand(self.api, "rpc", "ls")
        self.assertEqual(out, "rpc:bounce\n  bounce(n: int) -> int\n")

    def test_lsThisNodeByName(self) -> None:
        self.assertEqual(
            runCommand(self.api, "rpc", "ls", "LAB.A"), "rpc:bounce\n  bounce(n: int) -> int\n"
        )

    def test_lsRemote(self) -> None:
        out = runCommand(self.api, "rpc", "ls", "LAB.C")
        self.assertIn("rpc:calc\n  add(a: int, b: int) -> int    The sum of a and b.\n", out)
        self.assertIn("  watch(key: str) -> None", out)
        answer = json.loads(runCommand(self.api, "rpc", "ls", "LAB.C", "--json"))
        self.assertEqual(answer["node"], self.line.c.nodeID)
        calc = [s for s in answer["services"] if s["service"] == "calc"][0]
        add = [m for m in calc["methods"] if m["name"] == "add"][0]
        self.assertEqual(add["params"][0], {"name": "a", "type": "int", "optional": False})

    def test_call(self) -> None:
        self.assertEqual(runCommand(self.api, "rpc", "call", "rpc:calc", "add", "1", "2"), "3\n")
        answer = json.loads(
            runCommand(self.api, "rpc", "call", "calc", "stats", "[1, 2]", "--json")
        )
        self.assertEqual(answer["result"], {"count": 2, "mean": 1.5})
        self.assertEqual(answer["node"], self.line.c.nodeID)

    def test_callOnANamedNode(self) -> None:
        out = runCommand(self.api, "rpc", "call", "kv", "set", '"k"', '"v"', "--node", "LAB.C")
        self.assertEqual(out, "null\n")
        self.assertEqual(self.line.kv.values, {"k": "v"})

    def test_callLocal(self) -> None:
        """
        A service of the node itself is called in place, with the same
        checks.
        """
        api = FakeAPI(self.line, self.line.plugins[2])
        self.assertEqual(runCommand(api, "rpc", "call", "calc", "mul", "2", "2.5"), "5.0\n")
        with self.assertRaises(APIError) as e:
            runCommand(api, "rpc", "call", "calc", "add", '"x"', "2")
        self.assertEqual(e.exception.code, "bad-arguments")

    def test_manyCallsAtOnceWithinTheSessionLimit(self) -> None:
        """
        API calls made all at once each open a session, but no more run at
        once than the neighbours' session limit allows: none is refused with
        limit-reached, every one answers.
        """
        self.line = Line(sessionLimit=4)
        plugin = self.line.plugins[0]
        calls = [
            Deferred.fromCoroutine(
                # The management API asks for the routes on every request.
                plugin.apiRoutes()[("POST", "call")](  # type: ignore[arg-type]
                    PluginRequest(
                        "POST", "call", {}, {"service": "calc", "method": "add", "args": [i, 1]}
                    )
                )
            )
            for i in range(20)
        ]
        self.line.net.flush()
        self.assertEqual([resultOf(d)["result"] for d in calls], [i + 1 for i in range(20)])

    def test_callsAtOnceShareOneSession(self) -> None:
        """
        API calls made together share one session to the node, closed once
        it has been idle for a while; a call after that opens a new one.
        """
        plugin = self.line.plugins[0]

        def call(i: int) -> Deferred[Any]:
            return Deferred.fromCoroutine(
                # The management API asks for the routes on every request.
                plugin.apiRoutes()[("POST", "call")](  # type: ignore[arg-type]
                    PluginRequest(
                        "POST", "call", {}, {"service": "calc", "method": "add", "args": [i, 1]}
                    )
                )
            )

        calls = [call(i) for i in range(10)]
        self.line.net.flush()
        self.assertEqual([resultOf(d)["result"] for d in calls], list(range(1, 11)))
        self.assertEqual(self.line.plugins[2].stats.sessions, 1)
        self.line.net.flush(advance=11)
        self.assertEqual(self.line.plugins[2].stats.sessions, 0)
        d = call(41)
        self.line.net.flush()
        self.assertEqual(resultOf(d)["result"], 42)
        self.assertEqual(self.line.plugins[2].stats.sessions, 1)

    def test_errorsAnsweredWithTheirCodes(self) -> None:
        for argv, code in [
            (("calc", "div", "1", "0"), "division-by-zero"),
            (("calc", "nope"), "unknown-method"),
            (("calc", "add", "1"), "bad-arguments"),
            (("faulty", "boom"), "remote-error"),
            (("nothing-here", "x"), "resource-not-found"),
        ]:
            with self.assertRaises(APIError) as e:
                runCommand(self.api, "rpc", "call", *argv)
            self.assertEqual(e.exception.code, code, argv)
            self.assertNotIn("Traceback", e.exception.message)
        self.flushLoggedErrors(ValueError)

    def test_badArgumentJSON(self) -> None:
        from appnpy.api import APPNError

        with self.assertRaises(APPNError) as e:
            runCommand(self.api, "rpc", "call", "calc", "add", "one", "2")
        self.assertIn("not a JSON value", str(e.exception))

    def test_bytesAsBase64(self) -> None:
        from appnpy_rpc import Service, exported

        class Bytes(Service):
            name = "bytes"

            @exported
            def rev(self, b: bytes) -> bytes:
                return b[::-1]

        self.line.plugins[2].expose(Bytes())
        self.line.net.flush(advance=5)
        out = runCommand(self.api, "rpc", "call", "bytes", "rev", '{"$bytes": "YWJj"}')
        self.assertEqual(json.loads(out), {"$bytes": "Y2Jh"})

    def test_pageAndMetrics(self) -> None:
        plugin = self.line.plugins[2]
        runCommand(self.api, "rpc", "call", "calc", "add", "1", "2")
        with self.assertRaises(APIError):
            runCommand(self.api, "rpc", "call", "calc", "div", "1", "0")
        section = plugin.pageSection()
        rows = {row[0]: row for row in section.rows}
        self.assertEqual(rows["rpc:calc"][2:], [2, 1])
        registry = CollectorRegistry()
        plugin.registerMetrics(registry)
        self.assertEqual(
            registry.get_sample_value(
                "appn_rpc_calls_served_total", {"service": "calc", "code": "ok"}
            ),
            1,
        )
        self.assertEqual(
            registry.get_sample_value(
                "appn_rpc_calls_served_total", {"service": "calc", "code": "division-by-zero"}
            ),
            1,
        )
        self.assertEqual(registry.get_sample_value("appn_rpc_services"), 5)
        # A's counters: the peer's own code is not a label.
        callerRegistry = CollectorRegistry()
        self.line.plugins[0].registerMetrics(callerRegistry)
        self.assertEqual(
            callerRegistry.get_sample_value("appn_rpc_calls_made_total", {"code": "application"}),
            1,
        )
        self.assertEqual(registry.get_sample_value("appn_rpc_calls_in_flight"), 0)
