"""
An in-memory network whose nodes run the files plugin with real threads.

The files plugin hashes and writes in thread pools, which hand results back
with C{reactor.callFromThread}.  L{ThreadClock} is a test L{Clock} that
queues those calls; L{FilesNet.settle} runs the network and the queued
calls until a condition holds, blocking on the queue (an event, not a
sleep) with a bounded deadline, so tests stay deterministic in what they
check and never depend on timing.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from appnpy_files.plugin import FilesPlugin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.node import Node
from appnpy.testing import MemoryNetwork

#: The most a settle waits for threads, in real seconds.
DEADLINE = 60.0


@implementer(IReactorFromThreads)
class ThreadClock(Clock):
    """
    A Clock that also takes calls from other threads (queued until drained).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThreads: queue.Queue[
            tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fromThreads.put((f, args, kwargs))

    def drain(self, block: float = 0.0) -> bool:
        """
        Run the calls queued from threads; with C{block}, wait up to that
        long for the first.  Answers whether any ran.
        """
        ran = False
        try:
            f, a, k = (
                self.fromThreads.get(timeout=block) if block else self.fromThreads.get_nowait()
            )
        except queue.Empty:
            return False
        while True:
            f(*a, **k)
            ran = True
            try:
                f, a, k = self.fromThreads.get_nowait()
            except queue.Empty:
                return ran


class FilesNet:
    """
    A L{MemoryNetwork} of nodes that each run their own L{FilesPlugin},
    with a data directory each under a temporary root.
    """

    def __init__(self, testCase: Any, **networkOptions: Any) -> None:
        self.clock = ThreadClock()
        self.net = MemoryNetwork(clock=self.clock, **networkOptions)
        self.root = tempfile.mkdtemp(prefix="appn-files-")
        self.plugins: dict[str, FilesPlugin] = {}
        testCase.addCleanup(self.stop)

    def addNode(self, name: str, section: dict[str, Any] | None = None, **kwargs: Any) -> Node:
        dataDir = os.path.join(self.root, name)
        os.makedirs(dataDir, mode=0o700, exist_ok=True)
        plugin = FilesPlugin()
        plugin.configure(section or {})
        node = self.net.addNode(name, plugins=[plugin], dataDir=dataDir, **kwargs)
        self.plugins[node.nodeID] = plugin
        self.settle(lambda: plugin.serve is not None)
        return node

    def plugin(self, node: Node) -> FilesPlugin:
        return self.plugins[node.nodeID]

    def link(self, a: Node, b: Node) -> None:
        """
        Link C{a} to C{b} and let the topology learn of it (its records
        flood on timers), so routed sessions find their path.
        """
        self.net.link(a, b)
        self.settle(advance=5)

    def directory(self, name: str) -> str:
        path = os.path.join(self.root, "shared", name)
        os.makedirs(path, exist_ok=True)
        return path

    def settle(self, until: Callable[[], bool] | None = None, advance: float = 0.0) -> None:
        """
        Move the network and the threads' results until C{until()} holds
        (or, without one, until nothing moves); fails after L{DEADLINE}.
        """
        deadline = time.monotonic() + DEADLINE
        if advance:
            self.net.flush(advance=advance)
        while True:
            self.net.flush()
            ran = self.clock.drain()
            if until is not None and until():
                return
            if until is None and not ran and self._idle():
                return
            if time.monotonic() > deadline:
                raise AssertionError("the network did not settle in time")
            if not ran:
                if not self.clock.drain(block=0.05) and until is not None:
                    # Nothing from the threads: move simulated time on, so
                    # timers (search timeouts, retries) fire.
                    self.net.flush(advance=0.5)

    def _idle(self) -> bool:
        for plugin in self.plugins.values():
            serve = plugin.serve
            if serve is None:
                continue
            p = serve.index.progress
            if p.scanning or p.pendingFiles:
                return False
            if plugin.transfers is not None and plugin.transfers.active():
                return False
        return self.clock.fromThreads.empty()

    def wait(self, d: Deferred[Any]) -> Any:
        """
        Settle until C{d} has fired; answer its result (raise its failure).
        """
        box: list[Any] = []
        d.addBoth(box.append)
        self.settle(lambda: bool(box))
        result = box[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def indexed(self, node: Node) -> None:
        plugin = self.plugin(node)
        assert plugin.serve is not None
        self.wait(plugin.serve.index.whenIndexed())

    def stop(self) -> None:
        for node in self.net.nodes:
            d = node.stopService()
            box: list[Any] = []
            d.addBoth(box.append)
            self.settle(lambda box=box: bool(box), advance=10)  # type: ignore[misc]
        shutil.rmtree(self.root, ignore_errors=True)
