"""
A reusable harness for running real C{twist appnnode} processes.

Each node runs as its own process (the same Python, C{twist} with JSON log
output) with its data directory in a temporary directory, listening and
serving its API on C{tcp:0} loopback ports.  Readiness and every later
check come from the structured log events the process writes to stdout:
nothing sleeps, every wait is a Deferred with a timeout.

Set C{APPN_KEEP_TEMP=1} to keep the temporary directory (each node's data
directory and C{node.log}) for inspection.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import formatEvent
from twisted.python.failure import Failure

#: Generous upper bound for any one wait.
TIMEOUT = 30.0
#: Runs twist in this interpreter (the package is installed editable).
_TWIST = "import sys; from twisted.application.twist._twist import Twist; Twist.main(sys.argv)"

Event = dict[str, Any]


class ProcessFailed(Exception):
    """
    The node process ended while a test was waiting for something from it.
    """


class NodeProcess(ProcessProtocol):
    """
    One running node: its log events, and Deferreds that fire on them.

    @ivar nodeID: from the readiness line, once ready.
    @ivar addresses: the advertised C{appn://} addresses from the readiness line.
    @ivar links: node IDs of the neighbours currently linked, from the log.
    """

    def __init__(self, reactor: Any, label: str, dataDir: str, logPath: str) -> None:
        self.reactor = reactor
        self.label = label
        self.dataDir = dataDir
        self.events: list[Event] = []
        self.stderr = b""
        self.links: set[str] = set()
        self.nodeID: str | None = None
        self.addresses: list[str] = []
        self.exitCode: int | None = None
        self.exitSignal: int | None = None
        self.ended = False
        self._buffer = b""
        self._log = open(logPath, "ab")
        self._waiters: list[tuple[Callable[[Event], bool], Deferred[Event]]] = []
        self._exitWaiters: list[Deferred[NodeProcess]] = []

    # -- process protocol --

    def outReceived(self, data: bytes) -> None:
        self._log.write(data)
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip(b"\x1e \r")
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"log_format": "{text}", "text": line.decode("utf-8", "replace")}
            self._eventReceived(event)

    def errReceived(self, data: bytes) -> None:
        self._log.write(data)
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.exitCode = getattr(reason.value, "exitCode", None)
        self.exitSignal = getattr(reason.value, "signal", None)
        self._log.close()
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(
                ProcessFailed(
                    f"{self.label} exited (code {self.exitCode}, signal {self.exitSignal}): "
                    f"{self.stderr.decode('utf-8', 'replace')[-2000:]}"
                )
            )
        exitWaiters, self._exitWaiters = self._exitWaiters, []
        for d in exitWaiters:
            d.callback(self)

    # -- events --

    def _eventReceived(self, event: Event) -> None:
        try:
            event["text"] = formatEvent(event)
        except Exception:
            event["text"] = str(event.get("log_format", ""))
        fmt = event.get("log_format", "")
        if fmt.startswith("node {node_id}") and "ready" in fmt:
            self.nodeID = event.get("node_id")
            self.addresses = str(event.get("addresses", "")).split()
        elif fmt.startswith("link up with"):
            self.links.add(event["peer"])
        elif fmt.startswith("link down with"):
            self.links.discard(event["peer"])
        self.events.append(event)
        for entry in list(self._waiters):
            predicate, d = entry
            if predicate(event):
                self._waiters.remove(entry)
                d.callback(event)

    def waitFor(
        self, predicate: Callable[[Event], bool], what: str, timeout: float = TIMEOUT
    ) -> Deferred[Event]:
        """
        Fire with the first event (already seen, or still to come) that
        matches C{predicate}; fail after C{timeout} seconds or if the process
        ends first.
        """
        for event in self.events:
            if predicate(event):
                return _succeed(event)
        d: Deferred[Event] = Deferred()
        if self.ended:
            d.errback(ProcessFailed(f"{self.label} has exited; never saw {what}"))
            return d
        entry = (predicate, d)
        self._waiters.append(entry)

        def timedOut(failure: Failure) -> Failure:
            if entry in self._waiters:
                self._waiters.remove(entry)
            return failure

        d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda r, t: _timeout(self, what))
        d.addErrback(timedOut)
        return d

    def waitForText(self, text: str, timeout: float = TIMEOUT) -> Deferred[Event]:
        """
        The first event whose formatted text contains C{text}.
        """
        return self.waitFor(lambda e: text in e["text"], repr(text), timeout)

    async def whenReady(self, timeout: float = TIMEOUT) -> NodeProcess:
        await self.waitFor(
            lambda e: e.get("log_format", "").startswith("node {node_id}"),
            "the readiness line",
            timeout,
        )
        return self

    async def whenLinked(self, count: int, timeout: float = TIMEOUT) -> set[str]:
        """
        Wait until at least C{count} links are up at once.
        """
        if len(self.links) < count:
            await self.waitFor(lambda e: len(self.links) >= count, f"{count} links", timeout)
        return set(self.links)

    def hostPort(self) -> str:
        """
        C{host:port} of the first advertised address.
        """
        return self.addresses[0].rpartition("@")[2]

    # -- process control --

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except ProcessExitedAlready:
            pass

    def whenExited(self, timeout: float = TIMEOUT) -> Deferred[NodeProcess]:
        d: Deferred[NodeProcess] = Deferred()
        if self.ended:
            d.callback(self)
        else:
            self._exitWaiters.append(d)
            d.addTimeout(timeout, self.reactor)
        return d


def _succeed(value: Any) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.callback(value)
    return d


def _timeout(process: NodeProcess, what: str) -> Any:
    tail = "\n".join(e["text"] for e in process.events[-15:])
    raise ProcessFailed(f"{process.label}: timed out waiting for {what}; last log lines:\n{tail}")


class NodeHarness:
    """
    Starts nodes for one test and always cleans up after it: every process
    still running is killed, and the temporary directory removed unless
    C{APPN_KEEP_TEMP=1}.
    """

    def __init__(self, testCase: Any, reactor: Any) -> None:
        self.reactor = reactor
        self.root = tempfile.mkdtemp(prefix="appn-interop-")
        self.processes: list[NodeProcess] = []
        testCase.addCleanup(self.cleanUp)

    def dataDir(self, label: str) -> str:
        return os.path.join(self.root, label)

    def start(
        self,
        label: str,
        peers: Iterable[str] = (),
        maxPeers: int | None = None,
        dataDir: str | None = None,
        extra: Iterable[str] = (),
        wrap: Sequence[str] = (),
        listen: str = "tcp:0:interface=127.0.0.1",
        twistOptions: Iterable[str] = (),
    ) -> NodeProcess:
        """
        Spawn C{twist appnnode} for a node labelled C{label} (its data
        directory defaults to C{<root>/<label>}).

        @param wrap: a command line that runs the node's command line, e.g.
            C{["ip", "netns", "exec", "NS"]} to run it in a network
            namespace; its first word is looked up on C{PATH}.  The wrapper
            must exec the node (so signals reach the node itself).
        @param listen: the endpoint for links.
        @param twistOptions: options of C{twist} itself, e.g. C{--log-level=debug}.
        """
        dataDir = dataDir or self.dataDir(label)
        os.makedirs(dataDir, mode=0o700, exist_ok=True)
        args = [
            *wrap,
            sys.executable,
            "-c",
            _TWIST,
            "--log-format=json",
            *twistOptions,
            "appnnode",
            "--data-dir",
            dataDir,
            "--listen",
            listen,
            "--api",
            "tcp:0:interface=127.0.0.1",
        ]
        for peer in peers:
            args += ["--peer", peer]
        if maxPeers is not None:
            args += ["--max-peers", str(maxPeers)]
        args += list(extra)
        process = NodeProcess(self.reactor, label, dataDir, os.path.join(self.root, f"{label}.log"))
        executable = (shutil.which(wrap[0]) or wrap[0]) if wrap else sys.executable
        self.reactor.spawnProcess(process, executable, args, env=dict(os.environ))
        self.processes.append(process)
        return process

    async def startReady(self, label: str, **kwargs: Any) -> NodeProcess:
        return await self.start(label, **kwargs).whenReady()

    def cleanUp(self) -> Deferred[Any]:
        waits = []
        for process in self.processes:
            if not process.ended:
                process.signal(signal.SIGKILL)
                waits.append(process.whenExited())
        d: Deferred[Any] = DeferredList(waits, consumeErrors=True)

        def removeTemp(result: object) -> None:
            if os.environ.get("APPN_KEEP_TEMP") == "1":
                sys.stderr.write(f"\nAPPN_KEEP_TEMP: node data kept in {self.root}\n")
            else:
                shutil.rmtree(self.root, ignore_errors=True)

        d.addCallback(removeTemp)
        return d


class _Collect(ProcessProtocol):
    """
    Writes C{stdin} to a short-lived process, closes its standard input,
    and collects its output until it ends.
    """

    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.done: Deferred[tuple[bytes, bytes, int]] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.stdin:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.done.callback((self.out, self.err, -1 if code is None else code))


def spawn(args: Sequence[str], stdin: bytes = b"") -> Deferred[tuple[bytes, bytes, int]]:
    """
    Run C{args} (its first word looked up on C{PATH}) with C{stdin} as its
    standard input; (stdout, stderr, exit code).
    """
    from twisted.internet import reactor

    proto = _Collect(stdin)
    executable = shutil.which(args[0]) or args[0]
    reactor.spawnProcess(proto, executable, list(args), env=dict(os.environ))  # type: ignore[attr-defined]
    return proto.done


def exitedCleanly(process: NodeProcess) -> bool:
    return process.exitCode == 0 and process.exitSignal is None


__all__ = ["NodeHarness", "NodeProcess", "ProcessDone", "ProcessFailed", "exitedCleanly"]
