"""
Five hosts in a ring, for real node processes: five network namespaces,
neighbours joined by veth pairs, one C{twist appnnode} in each, and links
cut silently by dropping their packets with iptables (the TCP connections
stay established for both kernels: nothing is reset, nothing is closed).
Used by tests/interop/test_ring.py and benchmarks/path_switch.py.

    node 1 --- link 1 --- node 2 --- link 2 --- node 3
      |                                           |
    link 5                                      link 3
      |                                           |
    node 5 ------------- link 4 ------------- node 4

Link k joins node k (10.98.k.1, on veth C{rK}) and node k+1 (10.98.k.2, on
veth C{lK}; node 5's link 5 goes back to node 1).  Node k+1 dials node k
(node 1 dials node 5); every node runs with C{--max-peers 1}, so peer
exchange adds no other link.  The shortest path from node 1 to node 3 is
1-2-3; without link 1 it is 1-5-4-3.

Needs root, C{ip netns} with veth pairs, and iptables inside a namespace:
L{unavailable} says why not, and L{requireRing} skips a test for it, or
fails it under CI (C{APPN_CI=1}, set by C{.ci/run}, which installs the
system packages), where a missing tool must not pass as a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SkipTest

from tests.interop.harness import Event, NodeHarness, NodeProcess, spawn

SIZE = 5
PORT = 7700
#: Only the plugins the ring uses: another installed distribution's plugin
#: cannot stop the nodes.
PLUGINS = ("--plugin", "files", "--plugin", "echo")


def inCI() -> bool:
    return bool(os.environ.get("APPN_CI") or os.environ.get("CI"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=15)


def _orFail(*args: str) -> None:
    result = _run(*args)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


def unavailable(iptables: bool = True) -> str | None:
    """
    Why the ring cannot be built here, or None if it can: create and delete
    a throwaway namespace with a veth pair in it (and, if C{iptables}, a
    DROP rule on it).
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if iptables and shutil.which("iptables") is None:
        return "iptables is not installed"
    name = f"appn-probe-{os.getpid()}"
    try:
        made = _run("ip", "netns", "add", name)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        veth = _run("ip", "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        if veth.returncode != 0:
            return f"no veth pairs in a namespace: {veth.stderr.strip()}"
        if iptables:
            rule = _run(
                "ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-i", "p0", "-j", "DROP"
            )
            if rule.returncode != 0:
                return f"iptables does not work in a namespace: {rule.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as e:
        return f"ip netns does not work here: {e}"
    finally:
        _run("ip", "netns", "del", name)
    return None


def requireNamespaces(iptables: bool = True) -> None:
    """
    Skip the calling test where namespaces (or iptables) are unavailable;
    under CI, fail it instead.
    """
    reason = unavailable(iptables)
    if reason is None:
        return
    if inCI():
        raise FailTest(f"{reason} (CI installs the system packages and runs as root)")
    raise SkipTest(reason)


requireRing = requireNamespaces


class Ring:
    """
    The five namespaces and their veth pairs (no processes): made by
    L{create}, removed by L{delete}, which is safe to call more than once.
    """

    def __init__(self, tag: str) -> None:
        self.namespaces = [f"{tag}-{k}" for k in range(1, SIZE + 1)]
        self.made: list[str] = []

    @staticmethod
    def next(k: int) -> int:
        return k % SIZE + 1

    def ns(self, k: int) -> str:
        return self.namespaces[k - 1]

    @staticmethod
    def address(link: int, end: int) -> str:
        """
        The address of end C{end} (1: node C{link}, 2: the next node) of link
        C{link}.
        """
        return f"10.98.{link}.{end}"

    def create(self) -> None:
        for ns in self.namespaces:
            _orFail("ip", "netns", "add", ns)
            self.made.append(ns)
            _orFail("ip", "-n", ns, "link", "set", "lo", "up")
        for k in range(1, SIZE + 1):
            here, there = self.ns(k), self.ns(self.next(k))
            right, left = f"r{k}", f"l{k}"
            _orFail(
                "ip", "-n", here, "link", "add", right, "type", "veth",
                "peer", "name", left, "netns", there,
            )  # fmt: skip
            _orFail("ip", "-n", here, "addr", "add", f"{self.address(k, 1)}/24", "dev", right)
            _orFail("ip", "-n", there, "addr", "add", f"{self.address(k, 2)}/24", "dev", left)
            _orFail("ip", "-n", here, "link", "set", right, "up")
            _orFail("ip", "-n", there, "link", "set", left, "up")

    def delete(self) -> list[str]:
        """
        Delete every namespace made (their veth ends go with them); the
        failures, if any.
        """
        failures = []
        for ns in self.made:
            result = _run("ip", "netns", "del", ns)
            if result.returncode != 0:
                failures.append(f"{ns}: {result.stderr.strip()}")
        self.made = []
        return failures

    def wrap(self, k: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(k)]

    def listen(self, k: int) -> list[str]:
        # Both of node k's veth ends: link k (end 1) and link k-1 (end 2).
        previous = (k - 2) % SIZE + 1
        return [
            f"tcp:{PORT}:interface={self.address(k, 1)}",
            f"tcp:{PORT}:interface={self.address(previous, 2)}",
        ]

    def peer(self, k: int) -> str:
        # Node k dials the node before it, on the link between them.
        previous = (k - 2) % SIZE + 1
        return f"{self.address(previous, 1)}:{PORT}"

    def _dropRules(self, link: int, flag: str) -> list[list[str]]:
        # INPUT on both ends: each side's packets leave as usual and vanish
        # on arrival, like a path that died between the hosts.
        a, b = link, self.next(link)
        return [
            [*self.wrap(a), "iptables", flag, "INPUT", "-i", f"r{link}", "-j", "DROP"],
            [*self.wrap(b), "iptables", flag, "INPUT", "-i", f"l{link}", "-j", "DROP"],
        ]

    def cut(self, link: int) -> Deferred[None]:
        """
        Drop every packet of link C{link}, both directions.
        """
        return _all([run(*rule) for rule in self._dropRules(link, "-A")])

    def heal(self, link: int) -> Deferred[None]:
        return _all([run(*rule) for rule in self._dropRules(link, "-D")])


def _all(ds: list[Deferred[Any]]) -> Deferred[None]:
    d = gatherResults(ds, consumeErrors=True)
    d.addCallback(lambda _: None)
    return d


async def _runChecked(*args: str) -> None:
    out, err, code = await spawn(args)
    if code != 0:
        raise RuntimeError(f"{' '.join(args)} exited {code}: {err.decode('utf-8', 'replace')}")


def run(*args: str) -> Deferred[None]:
    return Deferred.fromCoroutine(_runChecked(*args))


async def appn(wrap: Sequence[str], node: NodeProcess, *args: str) -> tuple[int, Any, str]:
    """
    C{appn --data-dir <node's> --json ARGS} run by C{wrap}, e.g. inside the
    node's namespace (L{Ring.wrap}: the node's API listens on that
    namespace's loopback): exit code,
    parsed JSON (of the last line, for commands that stream one object a line) or None, stderr.
    """
    out, err, code = await spawn(
        [*wrap, sys.executable, "-m", "appnpy.cli", "--data-dir", node.dataDir,
         "--json", *args]
    )  # fmt: skip
    text = out.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            parsed = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            parsed = None
    return code, parsed, err.decode("utf-8", "replace")


def writeConfig(path: str, **node: float | bool) -> str:
    """
    A node config file with C{[node]} keys (underscores become dashes).
    """
    with open(path, "w") as f:
        f.write("[node]\n")
        for key, value in node.items():
            text = str(value).lower() if isinstance(value, bool) else repr(value)
            f.write(f"{key.replace('_', '-')} = {text}\n")
    return path


def isTopology(event: Event, reachable: int, links: int) -> bool:
    return (
        event.get("log_format", "").startswith("topology: {nodes}")
        and event.get("reachable") == reachable
        and event.get("links") == links
    )


def startNode(
    harness: NodeHarness,
    ring: Ring,
    k: int,
    config: str,
    label: str | None = None,
    dataDir: str | None = None,
) -> NodeProcess:
    """
    Spawn node C{k} in its namespace (again, with C{dataDir}, after a kill).
    """
    extra = [*PLUGINS, "--config", config, "--name", f"RING.N{k}"]
    for endpoint in ring.listen(k)[1:]:
        extra += ["--listen", endpoint]
    return harness.start(
        label or f"n{k}",
        peers=[ring.peer(k)],
        maxPeers=1,
        dataDir=dataDir,
        wrap=ring.wrap(k),
        listen=ring.listen(k)[0],
        extra=extra,
    )


async def startNodes(
    harness: NodeHarness, ring: Ring, config: str, timeout: float = 60.0
) -> list[NodeProcess]:
    """
    One node in each namespace, linked in the ring; answers once every node
    is ready, has its two links, and node 1's topology knows all five nodes
    and links.  C{nodes[k - 1]} is node C{k}.
    """
    nodes = [startNode(harness, ring, k, config) for k in range(1, SIZE + 1)]
    await gatherResults([Deferred.fromCoroutine(n.whenReady(timeout)) for n in nodes])
    await gatherResults([Deferred.fromCoroutine(n.whenLinked(2, timeout)) for n in nodes])
    await nodes[0].waitFor(lambda e: isTopology(e, SIZE, SIZE), "the whole ring", timeout)
    return nodes


#: Opens echo sessions from a node's API until one succeeds, printing one
#: JSON line per attempt ({start, end, ok, why}, wall-clock seconds), and
#: exits.  It says "ready" once its imports are done and starts at the line
#: "go" on its stdin: one process, started before the fault, instead of one
#: `appn` per attempt, so the first attempt follows the fault at once and
#: the next follow each other closely.
_ECHO_LOOP = """
import json, sys, time
from appnpy.cli import APIClient, APIRequestFailed
client = APIClient(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
deadline = time.time() + float(sys.argv[3])
while True:
    start = time.time()
    try:
        answer = client.call("POST", "echo", {"node": sys.argv[2], "count": 1})
        ok, why = answer["received"] == 1, answer.get("error")
    except APIRequestFailed as e:
        ok, why = False, str(e)
    end = time.time()
    print(json.dumps({"start": start, "end": end, "ok": ok, "why": why}), flush=True)
    if ok or end > deadline:
        break
"""


class EchoLoop(ProcessProtocol):
    """
    New echo sessions from a node, one after another until one is answered:
    L{start} it, then L{go} at the fault; L{done} fires with every attempt
    (the one answered last).
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ready: Deferred[None] = Deferred()
        self.done: Deferred[list[dict[str, Any]]] = Deferred()

    @classmethod
    async def start(
        cls, wrap: Sequence[str], node: NodeProcess, destination: str, timeout: float
    ) -> EchoLoop:
        from twisted.internet import reactor

        proto = cls()
        args = [*wrap, sys.executable, "-c", _ECHO_LOOP, node.dataDir, destination, str(timeout)]
        reactor.spawnProcess(  # type: ignore[attr-defined]
            proto, shutil.which(args[0]) or args[0], args, env=dict(os.environ)
        )
        await proto.ready
        return proto

    def go(self) -> None:
        assert self.transport is not None
        self.transport.write(b"go\n")

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.ready.called and b"ready\n" in self.out:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        error = RuntimeError(f"echo loop exited {code}: {self.err.decode('utf-8', 'replace')}")
        if not self.ready.called:
            self.ready.errback(error)
        if code != 0:
            self.done.errback(error)
            return
        lines = self.out.decode().splitlines()
        self.done.callback([json.loads(line) for line in lines if line.startswith("{")])


def relayed(process: NodeProcess, origin: str, destination: str) -> list[Event]:
    """
    The sessions C{process} relayed from C{origin} to C{destination}.
    """
    return [
        e
        for e in process.events
        if e.get("log_format", "").startswith("relaying session")
        and e.get("origin") == origin
        and e.get("destination") == destination
    ]


def resumed(process: NodeProcess) -> list[Event]:
    """
    The path switches C{process} finished: C{session ... resumed on path}.
    """
    return [e for e in process.events if "resumed on path" in e.get("log_format", "")]


def sessionFailures(process: NodeProcess) -> list[str]:
    return [
        e["text"]
        for e in process.events
        if e.get("log_format", "").startswith("routed session {sid} with {peer} failed")
    ]


class Cleanups:
    """
    C{addCleanup} for code that is not a test (the benchmark): callables
    run last-in first-out by L{run}, awaiting any Deferred they return.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def addCleanup(self, f: Any, *args: Any) -> None:
        self.calls.append((f, args))

    async def run(self) -> None:
        while self.calls:
            f, args = self.calls.pop()
            result = f(*args)
            if isinstance(result, Deferred):
                await result
