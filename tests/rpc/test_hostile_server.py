"""
The caller's side of hostility: a node whose "rpc" plugin lies.  It answers
DESCRIBE with malformed signatures, answers calls with results that do not
fit, with answers to calls never made, or not at all; the caller gets one
clear RPCError each time and its node stays up.
"""

from __future__ import annotations

from typing import Any

from appnpy_rpc import RPCClient, RPCError
from appnpy_rpc.wire import FrameReader, decodeBody, frame
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from appnpy.api import ISessionInfo, ISessionPlugin, implementer
from appnpy.testing import MemoryNetwork, resultOf

GOOD_ADD = {
    "name": "add",
    "params": [
        {"name": "a", "type": "int", "optional": False},
        {"name": "b", "type": "int", "optional": False},
    ],
    "returns": "int",
    "doc": "",
}


class Liar(Protocol):
    """
    Answers DESCRIBE with C{description} and each CALL with
    C{answer(message)} (a list of messages to send, maybe none).
    """

    def __init__(self, plugin: LiarPlugin) -> None:
        self.plugin = plugin
        self.reader = FrameReader()

    def dataReceived(self, data: bytes) -> None:
        for body in self.reader.feed(data):
            m = decodeBody(body)
            self.plugin.seen.append(m)
            if m[0] == 4:
                self.transport.write(frame([1, m[1], self.plugin.description]))  # type: ignore[union-attr]
            elif m[0] == 0:
                for reply in self.plugin.answer(m):
                    self.transport.write(reply)  # type: ignore[union-attr]


@implementer(ISessionPlugin)
class LiarPlugin:
    name = "rpc"
    version = "0"
    defaultCOS = "interactive"
    sessionLimit = 16

    def __init__(self) -> None:
        self.description: Any = {"service": "calc", "methods": [GOOD_ADD]}
        self.answer: Any = lambda m: [frame([1, m[1], 3])]
        self.seen: list[list[Any]] = []

    def configure(self, section: dict[str, Any]) -> None:
        pass

    def resources(self) -> list[str]:
        return ["rpc:calc"]

    def buildProtocol(self, session: ISessionInfo) -> Liar:
        return Liar(self)


class HostileServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.liar = LiarPlugin()
        self.a = self.net.addNode("LAB.A")
        self.c = self.net.addNode("LAB.C", plugins=[self.liar])
        self.net.link(self.a, self.c)
        self.net.flush(advance=5)
        self.client = RPCClient(self.a)

    def wait(self, d: Any) -> Any:
        self.net.flush()
        return resultOf(d)

    def error(self, d: Any) -> RPCError:
        self.net.flush()
        with self.assertRaises(RPCError) as e:
            resultOf(d)
        return e.exception

    def test_honest(self) -> None:
        calc = self.wait(self.client.connect("rpc:calc"))
        self.assertEqual(self.wait(calc.call("add", 1, 2)), 3)

    def test_malformedDescriptions(self) -> None:
        for description in [
            None,
            [],
            {"service": "calc"},
            {"service": "calc", "methods": "add"},
            {"service": "calc", "methods": [{"name": "add"}]},
            {"service": "calc", "methods": [{**GOOD_ADD, "name": "no such name!"}]},
            {"service": "calc", "methods": [{**GOOD_ADD, "returns": "complex"}]},
            {"service": "calc", "methods": [{**GOOD_ADD, "returns": {"list": {"list": {}}}}]},
            {"service": "calc", "methods": [{**GOOD_ADD, "params": [{"name": 1}]}]},
            {"service": "calc", "methods": [{**GOOD_ADD, "params": [GOOD_ADD["params"][0]] * 65}]},
            {"service": "calc", "methods": [{**GOOD_ADD, "returns": {"union": []}}]},
            {
                "service": "calc",
                "methods": [
                    {**GOOD_ADD, "returns": {"record": "R", "fields": [["x", "int"], ["x", "int"]]}}
                ],
            },
            {"service": "calc", "methods": [GOOD_ADD] * 1025},
        ]:
            self.liar.description = description
            e = self.error(self.client.connect("rpc:calc"))
            self.assertEqual(e.code, "bad-result", description)
            self.assertIn("describe", e.message)
        # Too deep for a descriptor (over 32): refused as a description.
        deep: Any = "int"
        for _ in range(34):
            deep = {"list": deep}
        self.liar.description = {"service": "calc", "methods": [{**GOOD_ADD, "returns": deep}]}
        self.assertEqual(self.error(self.client.connect("rpc:calc")).code, "bad-result")
        # Too deep for a frame (CBOR nesting over 40): a protocol error.
        for _ in range(10):
            deep = {"list": deep}
        self.liar.description = {"service": "calc", "methods": [{**GOOD_ADD, "returns": deep}]}
        self.assertEqual(self.error(self.client.connect("rpc:calc")).code, "session-closed")

    def test_resultThatDoesNotFit(self) -> None:
        calc = self.wait(self.client.connect("rpc:calc"))
        for value in ("3", 3.5, None, [3], True, {"a": 1}, b"3"):
            self.liar.answer = lambda m, v=value: [frame([1, m[1], v])]
            e = self.error(calc.call("add", 1, 2))
            self.assertEqual(e.code, "bad-result", value)

    def test_answersToCallsNeverMade(self) -> None:
        """
        An answer to an id the caller never used closes the session:
        pending calls fail with session-closed.
        """
        calc = self.wait(self.client.connect("rpc:calc"))
        self.liar.answer = lambda m: [frame([1, m[1] + 1000, 3])]
        e = self.error(calc.call("add", 1, 2))
        self.assertEqual(e.code, "session-closed")

    def test_duplicateAnswerIgnored(self) -> None:
        calc = self.wait(self.client.connect("rpc:calc"))
        self.liar.answer = lambda m: [frame([1, m[1], 3]), frame([2, m[1], "late", "x"])]
        self.assertEqual(self.wait(calc.call("add", 1, 2)), 3)
        self.assertEqual(self.wait(calc.call("add", 1, 2)), 3)

    def test_neverAnswers(self) -> None:
        """
        A callee that never answers costs the caller its timeout, then a
        CANCEL; nothing is left pending.
        """
        calc = self.wait(self.client.connect("rpc:calc"))
        self.liar.answer = lambda m: []
        ds = [calc.withTimeout(3).call("add", 1, i) for i in range(50)]
        self.net.flush(advance=3.1)
        for d in ds:
            self.assertEqual(self.error(d).code, "timeout")
        self.assertEqual(calc.connection.inFlight(), 0)
        self.assertEqual(sum(1 for m in self.liar.seen if m[0] == 3), 50)
        self.assertIsNone(calc.connection._timer)

    def test_foreignErrorCodes(self) -> None:
        calc = self.wait(self.client.connect("rpc:calc"))
        self.liar.answer = lambda m: [frame([2, m[1], "weird-code", "x" * 1024])]
        e = self.error(calc.call("add", 1, 2))
        self.assertEqual((e.code, len(e.message)), ("weird-code", 1024))
