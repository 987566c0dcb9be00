"""
Bootstrap: real C{twist appnnode} processes on loopback, timed from their logs.

1. Start-up: time from spawning C{twist appnnode} to its readiness line,
   on a first start (the identity is created) and again on the same data
   directory (the identity exists), alternating, median of N each.  The
   baseline is a process that only imports what the node imports
   (C{twist} + C{appnpy.tap} + the management API) and exits: the part of
   start-up that is Python imports, not the node.
2. Swarm: one seed, then N nodes started at once, each with
   C{--peer <seed host:port> --max-peers M}; the seed has the same
   C{--max-peers} (so it sheds inbound links beyond M + 2 with C{busy},
   and the swarm must spread by peer exchange).  Measured from the spawn of
   the N nodes until every node (seed included) has at least M links up at
   the same instant, from the C{link up} / C{link down} events of each node
   (timestamps are the events' own C{log_time}).  Also: the seed's peak CPU
   (C{/proc/<pid>/stat} sampled every 0.25 s; 100 = one core) and peak RSS
   (C{VmHWM}), the machine's CPU use over the same window, every failed or
   refused dial by reason, and dials with no outcome (a C{dialling} debug
   event with no C{link up}, C{could not link}, refusal or duplicate-link
   close for that address or node by the end, after a grace period longer
   than the handshake timeout).

Every node has its own temporary data directory and listens on
C{tcp:0:interface=127.0.0.1}; the swarm runs with C{--api none} (not needed:
everything comes from the logs), start-up runs with an API on C{tcp:0}, as a
real node would.  Nodes log JSON at debug level (for the C{dialling}
events).  Nothing sleeps: every wait is on log events, with a timeout.  At
the end every node gets SIGTERM, then SIGKILL after 15 s, and the temporary
directory is removed (C{APPN_KEEP_TEMP=1} keeps it, with each node's log).

    python benchmarks/bootstrap.py [--quick | --smoke] [--nodes N] [--max-peers M]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred, DeferredList  # noqa: E402
from twisted.internet.error import ProcessExitedAlready  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.internet.task import LoopingCall  # noqa: E402
from twisted.logger import formatEvent  # noqa: E402

LISTEN = "tcp:0:interface=127.0.0.1"
#: The real console script next to this interpreter (the pyenv shim in PATH
#: would add a shell and a second interpreter lookup to every start).
_TWIST_SCRIPT = os.path.join(os.path.dirname(sys.executable), "twist")
_TWIST_INLINE = (
    "import sys; from twisted.application.twist._twist import Twist; Twist.main(sys.argv)"
)
_IMPORT_ONLY = (
    "import twisted.application.twist._twist, appnpy.tap, appnpy.node, "
    "appnpy.ops.management, appnpy.session.plugins, time, sys; sys.stdout.write(repr(time.time()))"
)
#: Longer than the link handshake timeout (appnpy.link.tls.DEFAULT_HANDSHAKE_TIMEOUT).
DIAL_GRACE = 15.0
STOP_GRACE = 15.0
CPU_SAMPLE = 0.25


def twistCommand() -> list[str]:
    if os.access(_TWIST_SCRIPT, os.X_OK):
        return [sys.executable, _TWIST_SCRIPT]
    return [sys.executable, "-c", _TWIST_INLINE]


def _peerOf(address: str) -> str | None:
    if address.startswith("appn://") and "@" in address:
        return address[len("appn://") :].split("@", 1)[0]
    return None


class NodeProcess(ProcessProtocol):
    """
    One C{twist appnnode} process: its JSON log events as they arrive, the
    links it has up, its dials and their outcomes, and counters of every
    refusal.
    """

    def __init__(self, label: str, dataDir: str, logPath: str, onLinks: Callable[[], None]):
        self.label = label
        self.dataDir = dataDir
        self.onLinks = onLinks
        self.spawnedAt = 0.0
        self.pid: int | None = None
        #: When this process read the readiness line, and the line's own log_time.
        self.readyAt: float | None = None
        self.readyLogTime: float | None = None
        self.nodeID: str | None = None
        self.addresses: list[str] = []
        self.links: set[str] = set()
        #: (log_time, peer, up?) for every link up / link down event.
        self.linkEvents: list[tuple[float, str, bool]] = []
        #: Dialled address -> log_time of the dial still waiting for an outcome.
        self.pending: dict[str, float] = {}
        self.dials: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()
        self.failReasons: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=25)
        self.ended = False
        self.exitCode: int | None = None
        self.exitSignal: int | None = None
        self._buffer = b""
        self._log = open(logPath, "ab")
        self._ready: list[Deferred[NodeProcess]] = []
        self._exited: list[Deferred[NodeProcess]] = []

    # -- process protocol --

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        self._log.write(data)
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip(b"\x1e \r")
            if line:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"log_format": "{text}", "text": line.decode("utf-8", "replace")}
                self.eventReceived(event)

    def errReceived(self, data: bytes) -> None:
        self._log.write(data)
        self.tail.append("stderr: " + data.decode("utf-8", "replace").strip()[-500:])

    def processEnded(self, reason: Any) -> None:
        self.ended = True
        self.exitCode = getattr(reason.value, "exitCode", None)
        self.exitSignal = getattr(reason.value, "signal", None)
        self._log.close()
        why = f"{self.label} exited (code {self.exitCode}, signal {self.exitSignal})"
        ready, self._ready = self._ready, []
        for d in ready:
            d.errback(RuntimeError(why + "\n" + "\n".join(self.tail)))
        exited, self._exited = self._exited, []
        for d in exited:
            d.callback(self)

    # -- events --

    def eventReceived(self, event: dict[str, Any]) -> None:
        fmt = str(event.get("log_format", ""))
        when = float(event.get("log_time") or time.time())
        try:
            text = formatEvent(event)
        except Exception:
            text = fmt
        self.tail.append(text)
        level = (
            str(event.get("log_level", {}).get("name", ""))
            if isinstance(event.get("log_level"), dict)
            else str(event.get("log_level", ""))
        )
        if level in ("error", "critical") or "log_failure" in event:
            self.errors.append(text[:2000])
        if fmt.startswith("node {node_id}") and "ready" in fmt:
            self.readyAt = time.time()
            self.readyLogTime = when
            self.nodeID = event.get("node_id")
            self.addresses = str(event.get("addresses", "")).split()
            ready, self._ready = self._ready, []
            for d in ready:
                d.callback(self)
        elif fmt.startswith("link up with"):
            peer = event["peer"]
            self.links.add(peer)
            self.linkEvents.append((when, peer, True))
            if event.get("direction") == "dialled":
                self._resolve("linked", address=event.get("address"))
            self.onLinks()
        elif fmt.startswith("link down with"):
            self.counts[f"link_down:{event.get('reason')}"] += 1
            if event["peer"] in self.links:
                self.links.discard(event["peer"])
                self.linkEvents.append((when, event["peer"], False))
                self.onLinks()
        elif fmt.startswith("dialling"):
            self.dials["started"] += 1
            self.pending[str(event.get("address"))] = when
        elif fmt.startswith("could not link to"):
            self.counts["could_not_link"] += 1
            self.failReasons[_shortReason(str(event.get("why", "")))] += 1
            self._resolve("failed", address=event.get("address"))
        elif fmt.startswith("link to {peer} refused by the peer"):
            self.counts[f"refused_by_peer:{event.get('reason')}"] += 1
            self._resolve("refused", peer=event.get("peer"))
        elif fmt.startswith("closing link with"):
            self.counts[f"closed_by_us:{event.get('reason')}"] += 1
            self._resolve("closed", peer=event.get("peer"))
        elif fmt.startswith("shedding link from"):
            self.counts["shed_busy"] += 1
        elif fmt.startswith("refused {count} inbound connections"):
            self.counts["admission_refused"] += int(event.get("count", 0))
        elif fmt.startswith("refused link from"):
            self.counts["tls_refused"] += 1
        elif fmt.startswith("dropped a link to this node itself"):
            self.counts["self_dial"] += 1
            self._resolve("self", address=event.get("address"))

    def _resolve(self, outcome: str, address: Any = None, peer: Any = None) -> None:
        if address is not None and str(address) in self.pending:
            del self.pending[str(address)]
            self.dials[outcome] += 1
            return
        if peer is not None:
            for pending in list(self.pending):
                if _peerOf(pending) == peer:
                    del self.pending[pending]
                    self.dials[outcome] += 1
                    return

    # -- waiting and control --

    def whenReady(self) -> Deferred[NodeProcess]:
        d: Deferred[NodeProcess] = Deferred()
        if self.readyAt is not None:
            d.callback(self)
        elif self.ended:
            d.errback(RuntimeError(f"{self.label} has exited:\n" + "\n".join(self.tail)))
        else:
            self._ready.append(d)
        return d

    def whenExited(self) -> Deferred[NodeProcess]:
        d: Deferred[NodeProcess] = Deferred()
        if self.ended:
            d.callback(self)
        else:
            self._exited.append(d)
        return d

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except (ProcessExitedAlready, OSError):
            pass

    def hostPort(self) -> str:
        return self.addresses[0].rpartition("@")[2]

    def cpuSeconds(self) -> float | None:
        try:
            return C.cpuSeconds(self.pid)
        except (OSError, TypeError):
            return None

    def status(self, field: str) -> int | None:
        """
        A C{/proc/<pid>/status} figure in KiB (C{VmHWM}, C{VmRSS}).
        """
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None


def _shortReason(why: str) -> str:
    return why.split(":")[0].strip()[:80] or "?"


class Fleet:
    """
    Every process of one measurement, under one temporary root; always
    cleaned up (SIGTERM, SIGKILL after a bound, temp dir removed).
    """

    def __init__(self, reactor: Any, root: str) -> None:
        self.reactor = reactor
        self.root = root
        self.nodes: list[NodeProcess] = []
        self.onLinks: Callable[[], None] = lambda: None

    def start(
        self,
        label: str,
        dataDir: str | None = None,
        extra: tuple[str, ...] | list[str] = (),
        api: bool = False,
    ) -> NodeProcess:
        dataDir = dataDir or os.path.join(self.root, label)
        os.makedirs(dataDir, mode=0o700, exist_ok=True)
        args = twistCommand() + [
            "--log-format=json",
            "--log-level=debug",
            "appnnode",
            "--data-dir",
            dataDir,
            "--listen",
            LISTEN,
            "--api",
            LISTEN if api else "none",
            *extra,
        ]
        node = NodeProcess(
            label, dataDir, os.path.join(self.root, f"{label}.log"), lambda: self.onLinks()
        )
        node.spawnedAt = time.time()
        self.reactor.spawnProcess(node, args[0], args, env=dict(os.environ))
        self.nodes.append(node)
        return node

    async def stop(self, nodes: list[NodeProcess] | None = None) -> dict[str, int]:
        """
        SIGTERM, then SIGKILL whatever is left after L{STOP_GRACE} seconds.
        """
        nodes = [n for n in (nodes if nodes is not None else self.nodes) if not n.ended]
        for n in nodes:
            n.signal(signal.SIGTERM)
        waits = DeferredList([n.whenExited() for n in nodes], consumeErrors=True)
        await withTimeout(self.reactor, waits, STOP_GRACE)
        killed = [n for n in nodes if not n.ended]
        for n in killed:
            n.signal(signal.SIGKILL)
        if killed:
            await withTimeout(
                self.reactor, DeferredList([n.whenExited() for n in killed]), STOP_GRACE
            )
        clean = sum(1 for n in nodes if n.exitCode == 0 and n.exitSignal is None)
        return {"stopped": len(nodes), "clean_exits": clean, "killed": len(killed)}

    def killAll(self) -> None:
        for n in self.nodes:
            if not n.ended:
                n.signal(signal.SIGKILL)


async def withTimeout(reactor: Any, d: Deferred[Any], seconds: float) -> bool:
    """
    Wait for C{d} at most C{seconds}; whether it fired in time.
    """
    done: Deferred[bool] = Deferred()
    timer = reactor.callLater(seconds, lambda: done.called or done.callback(False))

    def fired(result: Any) -> Any:
        if not done.called:
            timer.cancel()
            done.callback(True)
        return result

    d.addBoth(fired)
    d.addErrback(lambda f: None)
    return await done


class Condition:
    """
    A Deferred that fires the first time C{check()} holds, re-checked on
    every call to L{poke} (made from the log-event handlers).
    """

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check = check
        self.d: Deferred[None] = Deferred()

    def poke(self) -> None:
        if not self.d.called and self.check():
            self.d.callback(None)


def machineCPU() -> tuple[float, float]:
    """
    (busy, total) jiffies of the whole machine from C{/proc/stat}.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# -- 1. start-up ----------------------------------------------------------------


async def importOnly(reactor: Any) -> float:
    """
    Seconds from spawning a process to the end of its imports (it prints
    the time then, and exits).
    """
    proto = _Imports()
    start = time.time()
    reactor.spawnProcess(proto, sys.executable, [sys.executable, "-c", _IMPORT_ONLY], env=None)
    await proto.ended
    return float(proto.out) - start


class _Imports(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


async def startup(reactor: Any, runs: int, timeout: float) -> dict[str, float]:
    first: list[float] = []
    existing: list[float] = []
    logged: list[float] = []
    baseline: list[float] = []
    root = tempfile.mkdtemp(prefix="appn-bench-startup-")
    fleet = Fleet(reactor, root)
    try:
        for i in range(runs):
            dataDir = os.path.join(root, f"n{i}")
            for label, into in ((f"first{i}", first), (f"again{i}", existing)):
                node = fleet.start(label, dataDir=dataDir, api=True)
                if not await withTimeout(reactor, node.whenReady(), timeout):
                    raise RuntimeError(
                        f"{label} not ready in {timeout} s:\n" + "\n".join(node.tail)
                    )
                into.append(node.readyAt - node.spawnedAt)
                logged.append(node.readyLogTime - node.spawnedAt)
                stopped = await fleet.stop([node])
                if stopped["clean_exits"] != 1:
                    C.log(f"  {label}: did not exit cleanly ({node.exitCode}, {node.exitSignal})")
            baseline.append(await importOnly(reactor))
            C.log(
                f"  start-up run {i + 1}/{runs}: first {first[-1]:.3f} s, "
                f"existing identity {existing[-1]:.3f} s, import only {baseline[-1]:.3f} s"
            )
    finally:
        fleet.killAll()
        _removeTemp(root)
    return {
        "ready_first_start_s": round(C.median(first), 3),
        "ready_existing_identity_s": round(C.median(existing), 3),
        "ready_line_log_time_s": round(C.median(logged), 3),
        "import_only_s": round(C.median(baseline), 3),
    }


# -- 2. the swarm -----------------------------------------------------------------


def allAtMaxInstant(nodes: list[NodeProcess], maxPeers: int) -> float | None:
    """
    The first log_time at which every node had at least C{maxPeers} links
    up, replaying every node's link events merged in time order.
    """
    merged = sorted(
        (when, i, peer, up) for i, n in enumerate(nodes) for when, peer, up in n.linkEvents
    )
    links: list[set[str]] = [set() for _ in nodes]
    atMax = 0
    for when, i, peer, up in merged:
        before = len(links[i]) >= maxPeers
        (links[i].add if up else links[i].discard)(peer)
        after = len(links[i]) >= maxPeers
        atMax += int(after) - int(before)
        if atMax == len(nodes):
            return when
    return None


def firstAtMax(node: NodeProcess, maxPeers: int) -> float | None:
    links: set[str] = set()
    for when, peer, up in node.linkEvents:
        (links.add if up else links.discard)(peer)
        if len(links) >= maxPeers:
            return when
    return None


async def swarm(reactor: Any, count: int, maxPeers: int, timeout: float) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="appn-bench-bootstrap-")
    fleet = Fleet(reactor, root)
    sampler: LoopingCall | None = None
    try:
        seed = fleet.start("seed", extra=["--max-peers", str(maxPeers)])
        if not await withTimeout(reactor, seed.whenReady(), 60):
            raise RuntimeError("seed not ready:\n" + "\n".join(seed.tail))
        seedRSSBefore = seed.status("VmRSS")
        seedAddress = seed.hostPort()
        C.log(f"  seed ready at {seedAddress}; starting {count} nodes at once")

        everyone: list[NodeProcess] = [seed]
        allReached = Condition(lambda: all(len(n.links) >= maxPeers for n in everyone))
        fleet.onLinks = allReached.poke

        # The seed's CPU, sampled; and the machine's, over the whole window.
        samples: list[tuple[float, float]] = []

        def sample() -> None:
            cpu = seed.cpuSeconds()
            if cpu is not None:
                samples.append((time.time(), cpu))

        sampler = LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(CPU_SAMPLE, now=True)
        machineBefore = machineCPU()
        seedCPUBefore = seed.cpuSeconds() or 0.0

        t0 = time.time()
        extra = ["--peer", seedAddress, "--max-peers", str(maxPeers)]
        nodes = [fleet.start(f"node{i:03d}", extra=extra) for i in range(count)]
        everyone.extend(nodes)
        spawnSeconds = time.time() - t0

        reached = await withTimeout(reactor, allReached.d, timeout)
        tReachedLive = time.time()
        C.log(
            f"  {'all' if reached else 'NOT all'} nodes at max-peers after "
            f"{tReachedLive - t0:.1f} s (live view)"
        )
        machineAfter = machineCPU()
        seedCPUAfter = seed.cpuSeconds() or 0.0

        # Let outstanding dials finish: done when none is pending, or after
        # the grace period (longer than the handshake timeout).
        noPending = Condition(lambda: all(not n.pending for n in everyone))
        fleet.onLinks = noPending.poke
        noPending.poke()
        if not noPending.d.called:
            settle = LoopingCall(noPending.poke)
            settle.clock = reactor
            settle.start(0.5, now=False)
            await withTimeout(reactor, noPending.d, DIAL_GRACE)
            settle.stop()
        sampler.stop()
        sampler = None
        sample()

        seedPeakRSS = seed.status("VmHWM")
        fleetCPU = sum(n.cpuSeconds() or 0.0 for n in everyone)
        # What the bootstrap did, before the stop adds its own link events.
        counts: collections.Counter[str] = collections.Counter()
        dials: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        for n in everyone:
            counts.update(n.counts)
            dials.update(n.dials)
            reasons.update(n.failReasons)
        hanging = [(n, a, t) for n in everyone for a, t in n.pending.items()]
        errors = [(n.label, e) for n in everyone for e in n.errors]
        finalLinks = [len(n.links) for n in everyone]
        stopped = await fleet.stop()
    finally:
        if sampler is not None and sampler.running:
            sampler.stop()
        fleet.killAll()

    peak = 0.0
    for (ta, ca), (tb, cb) in zip(samples, samples[1:], strict=False):
        if tb > ta:
            peak = max(peak, (cb - ca) / (tb - ta))
    busy = machineAfter[0] - machineBefore[0]
    total = machineAfter[1] - machineBefore[1]

    allAt = allAtMaxInstant(everyone, maxPeers)
    firsts = [firstAtMax(n, maxPeers) for n in nodes]
    reachedTimes = [f - t0 for f in firsts if f is not None]
    readyTimes = [n.readyAt - t0 for n in nodes if n.readyAt is not None]
    never = [n for n in everyone if firstAtMax(n, maxPeers) is None]

    for n in never:
        C.log(
            f"  {n.label} never reached {maxPeers} links ({len(n.links)} at the end); last lines:"
        )
        for line in list(n.tail)[-12:]:
            C.log(f"    {line}")
    for n, address, when in hanging[:20]:
        C.log(f"  hanging dial: {n.label} -> {address}, started at +{when - t0:.1f} s")
    for label, text in errors[:10]:
        C.log(f"  error logged by {label}: {text[:600]}")
    C.log(f"  counters: {dict(counts)}")
    C.log(f"  dials: {dict(dials)}; failure reasons: {dict(reasons)}")
    C.log(f"  stop: {stopped}")
    _removeTemp(root)

    return {
        "nodes": count,
        "max_peers": maxPeers,
        "spawn_s": round(spawnSeconds, 3),
        "swarm_ready_median_s": round(C.median(readyTimes), 3) if readyTimes else None,
        "swarm_ready_max_s": round(max(readyTimes), 3) if readyTimes else None,
        "all_at_max_peers_s": round(allAt - t0, 3) if allAt is not None else None,
        "all_at_max_after_last_ready_s": (
            round(allAt - max(n.readyAt for n in nodes), 3)
            if allAt is not None and readyTimes and len(readyTimes) == len(nodes)
            else None
        ),
        "node_at_max_peers_median_s": round(C.median(reachedTimes), 3) if reachedTimes else None,
        "nodes_never_at_max_peers": len(never),
        "nodes_below_max_peers_at_end": sum(1 for k in finalLinks if k < maxPeers),
        "links_per_node_max_at_end": max(finalLinks),
        "seed_peak_cpu_pct": round(100 * peak, 1),
        "seed_cpu_s": round(seedCPUAfter - seedCPUBefore, 3),
        "seed_rss_before_MiB": round((seedRSSBefore or 0) / 1024, 1),
        "seed_peak_rss_MiB": round((seedPeakRSS or 0) / 1024, 1),
        "machine_cpu_busy_pct": round(100 * busy / total, 1) if total else None,
        "fleet_cpu_s": round(fleetCPU, 1),
        "dials_started": dials["started"],
        "dials_linked": dials["linked"],
        "dials_failed": dials["failed"],
        "dials_refused_or_duplicate": dials["refused"] + dials["closed"] + dials["self"],
        "dials_hanging": len(hanging),
        "refused_busy": counts["refused_by_peer:busy"],
        "shed_busy": counts["shed_busy"],
        "admission_refused": counts["admission_refused"],
        "duplicate_links": counts["closed_by_us:duplicate-link"],
        "errors_logged": len(errors),
        "clean_exits": stopped["clean_exits"],
        "killed_at_stop": stopped["killed"],
    }


def _removeTemp(root: str) -> None:
    if os.environ.get("APPN_KEEP_TEMP") == "1":
        C.log(f"APPN_KEEP_TEMP: kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    runs = args.runs or C.pick(args, 5, 3, 1)
    count = args.nodes or C.pick(args, 50, 20, 5)
    maxPeers = args.max_peers or C.pick(args, 4, 4, 3)
    timeout = args.timeout or C.pick(args, 240.0, 120.0, 60.0)
    C.log(f"bootstrap: start-up x{runs}, then {count} nodes with --max-peers {maxPeers}")
    started = time.time()
    result: dict[str, Any] = {"benchmark": "bootstrap"}
    result.update(await startup(reactor, runs, 30.0))
    result.update(await swarm(reactor, count, maxPeers, timeout))
    result["cores"] = os.cpu_count()
    result["wall_s"] = round(time.time() - started, 1)
    C.emit(result)


def parseArgs() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--quick", action="store_true", help="20 nodes, 3 start-up runs")
    p.add_argument("--smoke", action="store_true", help="5 nodes, 1 start-up run (for tests)")
    p.add_argument("--runs", type=int, default=None, help="start-up runs of each kind")
    p.add_argument("--nodes", type=int, default=None, help="nodes joining the seed at once")
    p.add_argument("--max-peers", type=int, default=None, help="--max-peers of every node")
    p.add_argument("--timeout", type=float, default=None, help="bound on the swarm wait, s")
    p.add_argument("--profile", default=None, help="write a cProfile of this process here")
    return p.parse_args()


if __name__ == "__main__":
    args = parseArgs()
    C.runMain(lambda reactor: main(reactor, args), args)
