"""
The two Automat lifecycle machines on their own, without a network: the
link's (its core is a control point) and a relayed session's (its core is a
relay entry).  Each is driven with a small fake core that records what the
outputs ask of it, and each machine is compared with its diagram in
docs/state-machines.md, so the diagram stays the machine exactly.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from appnpy.errors import ProtocolError, SessionClosed

# Where the machines are built: the one place to update when modules move.
LINK_MACHINE = ("appnpy.cp.controlpoint", "newLinkMachine")
RELAY_MACHINE = ("appnpy.net.relaymachine", "_buildRelayMachine")
MESSAGES = "appnpy.cp.messages"

DOC = Path(__file__).resolve().parent.parent / "docs" / "state-machines.md"


def buildMachine(where: tuple[str, str]) -> Any:
    """
    A freshly built machine factory (call it with a core).
    """
    module, builder = where
    return getattr(importlib.import_module(module), builder)()


def message(name: str, **fields: Any) -> Any:
    return getattr(importlib.import_module(MESSAGES), name)(**fields)


# -- Automat introspection ---------------------------------------------------
#
# Automat's public view of a built TypeMachine is asDigraph(), which needs the
# graphviz package (not a dependency of appnpy).  The transition table, the
# current state and tracing are only reachable through its internals
# (automat 24.8 - 25.4): the rest of this module uses them only through the
# three functions below.

#: The output name for an input a state ignores (C{.loop().returns(value)}).
IGNORED = "-"


def transitionTable(factory: Any) -> set[tuple[str, str, str, str]]:
    """
    Every transition of a built machine: (state, input, new state, output
    name), output L{IGNORED} for an input the state ignores.
    """
    automaton = factory.__automat_automaton__

    def name(outputs: Any) -> str:
        # Automat names a .returns(value) output "returns(value)".
        names = "/".join(o.name for o in outputs)
        return IGNORED if names.startswith("returns(") else names

    return {
        (old.name, input, new.name, name(outputs))
        for old, input, new, outputs in automaton.allTransitions()
    }


def initialState(factory: Any) -> str:
    return str(factory.__automat_automaton__.initialState.name)


def startIn(factory: Any, core: object, state: str | None, trace: list[str]) -> Any:
    """
    A machine for C{core}, in C{state} (or its initial state), appending
    C{'old --input--> new'} to C{trace} for every input it takes.
    """
    automaton = factory.__automat_automaton__
    states = {s.name: s for s in automaton.states()}
    machine = factory(core) if state is None else factory(core, states[state])

    def tracer(old: Any, input: str, new: Any) -> None:
        trace.append(f"{old.name} --{input}--> {new.name}")

    machine.__automat_transitioner__.setTrace(tracer)
    return machine


def currentState(trace: list[str], initial: str) -> str:
    return trace[-1].rsplit(" ", 1)[1] if trace else initial


# -- fake cores ---------------------------------------------------------------


class Fake:
    """
    Anything an output asks of its core that a test does not set up: every
    attribute is another L{Fake}, every call is recorded in C{calls} by its
    dotted path.  Empty, false and iterable, so unknown collections are
    empty.
    """

    def __init__(self, calls: list[str], path: str) -> None:
        self.__dict__["_calls"] = calls
        self.__dict__["_path"] = path

    def __getattr__(self, name: str) -> Fake:
        if name.startswith("__"):
            raise AttributeError(name)
        return Fake(self._calls, f"{self._path}.{name}" if self._path else name)

    def __call__(self, *args: object, **kwargs: object) -> None:
        self._calls.append(self._path)

    def __bool__(self) -> bool:
        return False

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __format__(self, spec: str) -> str:
        return self._path


class FakeControlPoint(Fake):
    """
    The link machine's core: a control point with no link under it.
    """

    log = Logger()

    def __init__(self) -> None:
        super().__init__([], "")
        self.reactor = Clock()
        self.peerNodeID = "peer"
        self.sessions: dict[str, Any] = {}
        self.pendingInbound: dict[Any, Any] = {}
        self.outboundBinds: dict[str, Any] = {}
        self.peerDrained = False
        self.waiters: list[Deferred[Any]] = []
        self.closeReason: tuple[str, str] | None = None
        self.closeTimer: Any = None

    def cancelCloseTimer(self) -> None:
        self._calls.append("cancelCloseTimer")
        if self.closeTimer is not None and self.closeTimer.active():
            self.closeTimer.cancel()
        self.closeTimer = None


class FakeRelayEntry(Fake):
    """
    The relay machine's core: one relayed session between two fake streams.
    """

    def __init__(self) -> None:
        super().__init__([], "")
        self.sessionID = "5e" * 16
        self.unbound: set[int] = set()
        self.lost: set[int] = set()
        self.timer: Any = None
        self.relay = Fake(self._calls, "relay")
        self.relay.__dict__.update(log=Logger(), bindTimeout=30.0, startTimeout=60.0)
        self.startTimer: Any = None
        self.inStream = Fake(self._calls, "inStream")
        self.outStream = Fake(self._calls, "outStream")
        self.inCp = Fake(self._calls, "inCp")
        self.outCp = Fake(self._calls, "outCp")

    def cp(self, side: int) -> Fake:
        return self.inCp if side == 0 else self.outCp

    def stream(self, side: int) -> Fake:
        return self.inStream if side == 0 else self.outStream


class FakeStream(Fake):
    def __init__(self) -> None:
        super().__init__([], "stream")


class FakeSession(Fake):
    def __init__(self) -> None:
        super().__init__([], "session")


def linkArguments() -> dict[str, tuple[Any, ...]]:
    """
    Sample arguments for each input of the link machine.
    """
    bind = message(
        "SessionOpen",
        session_id="5e" * 16,
        origin="a" * 52,
        destination="b" * 52,
        plugin="echo",
        cos="interactive",
        window=262144,
    )
    return {
        "helloAccepted": (object(), 1, {"echo": 8}),
        "announced": (),
        "awaitActive": (Deferred(),),
        "streamAccepted": (FakeStream(),),
        "bindArrived": (FakeStream(), bind, b""),
        "refuseLink": ("busy", "too many links"),
        "peerRefused": ("busy", "too many links"),
        "peerControlStreamLost": (),
        "close": ("normal", ""),
        "multiplexerClosed": (Failure(ProtocolError("bad frame")),),
        "sessionsDrained": (),
        "closeTimedOut": (),
        "connectionLost": (Failure(ConnectionLost("gone")),),
        "superseded": (),
        "peerDraining": (),
        "drainCheck": (),
        "drained": (),
        "drainTimedOut": (),
    }


def relayArguments() -> dict[str, tuple[Any, ...]]:
    """
    Sample arguments for each input of the relay machine.
    """
    sid = "5e" * 16
    bind = message(
        "SessionOpen",
        session_id=sid,
        origin="a" * 52,
        destination="b" * 52,
        plugin="echo",
        cos="interactive",
        window=262144,
        route=["a" * 52, "c" * 52, "b" * 52],
    )
    return {
        "forwardBind": (bind,),
        "accepted": (message("SessionAccept", session_id=sid), b""),
        "refused": (message("SessionRefuse", session_id=sid, reason="busy"),),
        "badAnswer": (message("SessionClose", session_id=sid, reason="normal"),),
        "nextHopLost": (Failure(ConnectionLost("gone")),),
        "bindTimedOut": (),
        "cancelBind": ("protocol-error", "data before BIND answer"),
        "unbindReceived": (0, "normal", ""),
        "finReceived": (0,),
        "streamLost": (0, Failure(ConnectionDone())),
        "lingerExpired": (),
        "linkLost": (1, Failure(ConnectionLost("gone"))),
        "bothStreamsEnded": (),
        "started": (message("SessionStarted", session_id=sid),),
        "startTimedOut": (),
        "superseded": (),
        "shutDown": (),
    }


class MachineHarness(SynchronousTestCase):
    where: tuple[str, str]

    def setUp(self) -> None:
        self.factory = buildMachine(self.where)
        self.trace: list[str] = []

    def start(self, core: object, state: str | None = None) -> Any:
        self.trace = []
        self.initial = state or initialState(self.factory)
        return startIn(self.factory, core, state, self.trace)

    @property
    def state(self) -> str:
        return currentState(self.trace, self.initial)

    def assertEveryTransitionRuns(self, makeCore: Callable[[], Fake], arguments: Any) -> None:
        """
        Every transition in the table, taken from its state by a fresh
        machine with sample arguments, runs and lands where the table says
        (an output may feed a further input, which the trace shows too).
        """
        for old, input, new, output in sorted(transitionTable(self.factory)):
            machine = self.start(makeCore(), old)
            args = arguments()[input]
            getattr(machine, input)(*args)
            for arg in args:
                if isinstance(arg, Deferred):
                    arg.addErrback(lambda f: None)
            self.assertEqual(self.trace[0], f"{old} --{input}--> {new}", output)


class LinkMachineTests(MachineHarness):
    where = LINK_MACHINE

    def test_initial(self) -> None:
        """
        A link's lifecycle starts in Handshake.
        """
        self.assertEqual(initialState(self.factory), "Handshake")

    def test_comesUp(self) -> None:
        """
        An accepted Hello makes the link Active (and says so); waiters from
        before fire once the node has been told, later ones at once.
        """
        cp = FakeControlPoint()
        m = self.start(cp)
        early: Deferred[Any] = Deferred()
        m.awaitActive(early)
        self.assertNoResult(early)
        self.assertTrue(m.helloAccepted(object(), 1, {}))
        self.assertEqual(self.state, "Active")
        self.assertNoResult(early)
        m.announced()
        self.assertIs(self.successResultOf(early), cp)
        late: Deferred[Any] = Deferred()
        m.awaitActive(late)
        self.assertIs(self.successResultOf(late), cp)
        self.assertEqual(
            self.trace,
            [
                "Handshake --awaitActive--> Handshake",
                "Handshake --helloAccepted--> Active",
                "Active --announced--> Active",
                "Active --awaitActive--> Active",
            ],
        )

    def test_lateHello(self) -> None:
        """
        A Hello verified after the link began closing is ignored: it
        returns false and the link stays closing.
        """
        m = self.start(FakeControlPoint())
        m.close("normal", "")
        self.assertEqual(self.state, "Closing")
        self.assertFalse(m.helloAccepted(object(), 1, {}))
        self.assertEqual(self.state, "Closing")

    def test_refusedBeforeHello(self) -> None:
        """
        Refusing the link in Handshake closes it, and the connection's loss
        fails the waiters with the refusal's reason.
        """
        cp = FakeControlPoint()
        m = self.start(cp)
        d: Deferred[Any] = Deferred()
        m.awaitActive(d)
        m.refuseLink("busy", "too many links")
        self.assertEqual(self.state, "Closing")
        m.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.state, "Closed")
        why = self.failureResultOf(d, SessionClosed).value
        self.assertEqual((why.reason, why.detail), ("busy", "too many links"))
        # And a waiter after the end learns the same.
        after: Deferred[Any] = Deferred()
        m.awaitActive(after)
        self.assertEqual(self.failureResultOf(after, SessionClosed).value.reason, "busy")

    def test_lostBeforeHello(self) -> None:
        """
        A connection lost during the handshake fails its waiters with
        C{link-failure}.
        """
        m = self.start(FakeControlPoint())
        d: Deferred[Any] = Deferred()
        m.awaitActive(d)
        m.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(self.trace[-1], "Handshake --connectionLost--> Closed")
        self.assertEqual(self.failureResultOf(d, SessionClosed).value.reason, "link-failure")

    def test_gracefulCloseWaitsForSessions(self) -> None:
        """
        Closing an Active link with sessions UNBINDs them and waits; the
        last one ending, or the close timer, finishes the close.
        """
        for finish in ("sessionsDrained", "timer"):
            cp = FakeControlPoint()
            session = FakeSession()
            cp.sessions["s"] = session
            m = self.start(cp)
            m.helloAccepted(object(), 1, {})
            m.close("shutting-down", "stopping")
            self.assertEqual(self.state, "Closing")
            self.assertIn("session.loseConnectionWithReason", session._calls)
            self.assertEqual(len(cp.reactor.getDelayedCalls()), 1)
            if finish == "timer":
                cp.reactor.advance(60)
                self.assertEqual(self.trace[-1], "Closing --closeTimedOut--> Closing")
            else:
                m.sessionsDrained()
                self.assertEqual(cp.reactor.getDelayedCalls(), [])
            m.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(self.state, "Closed")

    def test_streamsWhileClosing(self) -> None:
        """
        A stream the peer opens is admitted until the link closes, then
        reset; a BIND is handled only while Active.
        """
        cp = FakeControlPoint()
        m = self.start(cp)
        args = linkArguments()
        m.bindArrived(*args["bindArrived"])
        m.helloAccepted(object(), 1, {})
        m.bindArrived(*args["bindArrived"])
        m.close("normal", "")
        stream = FakeStream()
        m.streamAccepted(stream)
        self.assertIn("stream.abortConnection", stream._calls)
        self.assertEqual(
            self.trace,
            [
                "Handshake --bindArrived--> Handshake",
                "Handshake --helloAccepted--> Active",
                "Active --bindArrived--> Active",
                "Active --close--> Closing",
                "Closing --streamAccepted--> Closing",
            ],
        )

    def test_peerEvents(self) -> None:
        """
        The peer's refusal and the end of its control stream close an Active
        link; in Handshake they are ignored.
        """
        for input, args in (("peerRefused", ("busy", "")), ("peerControlStreamLost", ())):
            m = self.start(FakeControlPoint())
            getattr(m, input)(*args)
            self.assertEqual(self.state, "Handshake")
            m.helloAccepted(object(), 1, {})
            getattr(m, input)(*args)
            self.assertEqual(self.state, "Closing")

    def test_everyTransitionRuns(self) -> None:
        self.assertEveryTransitionRuns(FakeControlPoint, linkArguments)


class RelayMachineTests(MachineHarness):
    where = RELAY_MACHINE

    def test_initial(self) -> None:
        """
        A relayed session's lifecycle starts in Binding.
        """
        self.assertEqual(initialState(self.factory), "Binding")

    def test_splicedThenEnded(self) -> None:
        """
        The BIND is forwarded; an accept splices the streams; once both
        have ended the entry is released, and late events change nothing.
        """
        e = FakeRelayEntry()
        m = self.start(e)
        args = relayArguments()
        m.forwardBind(*args["forwardBind"])
        self.assertIn("outStream.write", e._calls)
        m.accepted(*args["accepted"])
        self.assertEqual(self.state, "Starting")
        m.started(*args["started"])
        self.assertIn("inCp.send", e._calls)
        self.assertEqual(self.state, "Spliced")
        m.startTimedOut()
        m.finReceived(0)
        self.assertIn("outStream.loseConnection", e._calls)
        m.streamLost(0, Failure(ConnectionDone()))
        self.assertEqual(self.state, "Spliced")
        m.streamLost(1, Failure(ConnectionDone()))
        self.assertEqual(self.state, "Released")
        self.assertEqual(e.lost, {0, 1})
        m.lingerExpired()
        m.linkLost(0, Failure(ConnectionLost()))
        self.assertEqual(
            self.trace,
            [
                "Binding --forwardBind--> Binding",
                "Binding --accepted--> Starting",
                "Starting --started--> Spliced",
                "Spliced --startTimedOut--> Spliced",
                "Spliced --finReceived--> Spliced",
                "Spliced --streamLost--> Spliced",
                "Spliced --streamLost--> Spliced",
                "Spliced --bothStreamsEnded--> Released",
                "Released --lingerExpired--> Released",
                "Released --linkLost--> Released",
            ],
        )

    def test_refusalPassedBack(self) -> None:
        """
        A refusal from the next hop releases the entry; an accept after
        that only resets the next hop's stream.
        """
        e = FakeRelayEntry()
        m = self.start(e)
        args = relayArguments()
        m.forwardBind(*args["forwardBind"])
        m.refused(*args["refused"])
        self.assertEqual(self.state, "Released")
        del e._calls[:]
        m.accepted(*args["accepted"])
        self.assertEqual(self.state, "Released")
        self.assertEqual(e._calls, ["outStream.abortConnection"])

    def test_unbindWhileBinding(self) -> None:
        """
        An UNBIND from the previous hop while binding cancels the BIND (the
        next hop is told); one from the next hop is ignored.
        """
        m = self.start(FakeRelayEntry())
        m.unbindReceived(1, "normal", "")
        self.assertEqual(self.state, "Binding")
        m.unbindReceived(0, "aborted", "")
        self.assertEqual(
            self.trace[-2:],
            ["Binding --unbindReceived--> Binding", "Binding --cancelBind--> Released"],
        )

    def test_linkLostWhileBinding(self) -> None:
        """
        Losing the previous hop's link cancels the BIND; losing the next
        hop's is the next hop lost.
        """
        for side, fed in ((0, "cancelBind"), (1, "nextHopLost")):
            m = self.start(FakeRelayEntry())
            m.linkLost(side, Failure(ConnectionLost()))
            self.assertEqual(self.trace[-1], f"Binding --{fed}--> Released")

    def test_unbindPassedOnOnce(self) -> None:
        """
        Spliced, each side's UNBIND goes to the other side once.
        """
        e = FakeRelayEntry()
        m = self.start(e, "Spliced")
        m.unbindReceived(0, "normal", "")
        m.unbindReceived(0, "normal", "")
        self.assertEqual(e._calls.count("outCp.sendUnbind"), 1)
        self.assertEqual(e.unbound, {0})
        self.assertEqual(self.state, "Spliced")

    def test_sideReset(self) -> None:
        """
        A spliced stream reset tells the other side (UNBIND link-failure)
        and resets its stream.
        """
        e = FakeRelayEntry()
        m = self.start(e, "Spliced")
        m.streamLost(1, Failure(ConnectionLost()))
        self.assertIn("inCp.sendUnbind", e._calls)
        self.assertIn("inStream.abortConnection", e._calls)
        self.assertEqual(self.state, "Spliced")

    def test_unstartedSpliceTornDown(self) -> None:
        """
        A splice whose destination never confirms the end-to-end TLS is
        released when its deadline passes: both sides are told (timeout)
        and both streams reset.
        """
        e = FakeRelayEntry()
        m = self.start(e, "Starting")
        m.startTimedOut()
        self.assertEqual(self.state, "Released")
        self.assertEqual(e.unbound, {0, 1})
        self.assertIn("inStream.abortConnection", e._calls)
        self.assertIn("outStream.abortConnection", e._calls)

    def test_shutDown(self) -> None:
        """
        A stopping relay tells both ends of a spliced session
        shutting-down once, and refuses a BIND still on its way.
        """
        e = FakeRelayEntry()
        m = self.start(e, "Spliced")
        m.shutDown()
        m.shutDown()
        self.assertEqual(e._calls.count("inCp.sendUnbind"), 1)
        self.assertEqual(e._calls.count("outCp.sendUnbind"), 1)
        self.assertEqual(self.state, "Spliced")
        e = FakeRelayEntry()
        m = self.start(e, "Binding")
        m.shutDown()
        self.assertEqual(self.state, "Released")
        self.assertIn("relay.refuse", e._calls)

    def test_everyTransitionRuns(self) -> None:
        self.assertEveryTransitionRuns(FakeRelayEntry, relayArguments)


# -- the diagrams ------------------------------------------------------------


def docDiagram(initial: str) -> tuple[set[tuple[str, str, str, str]], set[tuple[str, str]]]:
    """
    The machine diagram in docs/state-machines.md that starts in C{initial}:
    its drawn transitions (state, input, new state, output) and the ignored
    inputs listed in the table under it (state, input).
    """
    text = DOC.read_text()
    for match in re.finditer(r"```mermaid\n(.*?)```", text, re.S):
        body = match.group(1)
        if re.search(rf"^\s*\[\*\] --> {initial}\s*$", body, re.M):
            break
    else:
        raise AssertionError(f"no diagram starting in {initial} in {DOC.name}")
    drawn = set()
    for line in body.splitlines():
        found = re.match(r"\s*(\w+) --> (\w+): (\w+) / (\w+)\s*$", line)
        if found:
            drawn.add(found.groups())
        elif "-->" in line and "[*]" not in line:
            raise AssertionError(f"unparsed transition line: {line.strip()!r}")
    after = text[match.end() :]
    table = re.search(r"\| State \| Inputs \|\n\|[-|]+\|\n((?:\|.*\|\n)+)", after)
    nextDiagram = after.find("```mermaid")
    if table is None or 0 <= nextDiagram < table.start():
        raise AssertionError(f"no ignored-inputs table under the {initial} diagram")
    ignored = set()
    for row in table.group(1).splitlines():
        state, inputs = (cell.strip() for cell in row.strip("|").split("|"))
        for item in inputs.split(","):
            ignored.add((state, item.split("(")[0].strip()))
    return {(a, i, b, o) for a, b, i, o in drawn}, ignored


class DiagramTests(SynchronousTestCase):
    maxDiff = None

    """
    Each machine diagram in docs/state-machines.md is its machine exactly:
    every drawn transition exists with that output, every transition of the
    machine is drawn, and the inputs the doc lists as ignored are the ones
    the machine ignores.
    """

    maxDiff = None

    def assertDiagram(self, where: tuple[str, str]) -> None:
        factory = buildMachine(where)
        table = transitionTable(factory)
        drawn, ignored = docDiagram(initialState(factory))
        actual = {t for t in table if t[3] != IGNORED}
        self.assertEqual(
            (sorted(drawn - actual), sorted(actual - drawn)),
            ([], []),
            "(drawn but not in the machine, in the machine but not drawn)",
        )
        actualIgnored = {(old, input) for old, input, new, output in table if output == IGNORED}
        self.assertTrue(all(old == new for old, input, new, output in table if output == IGNORED))
        self.assertEqual(
            (sorted(ignored - actualIgnored), sorted(actualIgnored - ignored)),
            ([], []),
            "(listed as ignored but not, ignored but not listed)",
        )

    def test_linkDiagram(self) -> None:
        self.assertDiagram(LINK_MACHINE)

    def test_relayDiagram(self) -> None:
        self.assertDiagram(RELAY_MACHINE)

    def test_parserCatchesDifferences(self) -> None:
        """
        The comparison is not vacuous: the parsed diagrams are not empty and
        a transition missing from the doc would be noticed.
        """
        for where in (LINK_MACHINE, RELAY_MACHINE):
            factory = buildMachine(where)
            drawn, ignored = docDiagram(initialState(factory))
            self.assertGreater(len(drawn), 10)
            self.assertGreater(len(ignored), 5)
            self.assertTrue(drawn <= transitionTable(factory))
