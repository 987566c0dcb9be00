"""
Pieces shared by the files benchmarks: real C{twist appnnode} processes
with the files plugin, driven through their management API; a test file;
an HTTPS (TLS 1.3) static file server as the baseline.

API calls are blocking HTTP (the C{appn} client), so they run in a thread.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from appnpy.cli import APIClient

MIB = 1024 * 1024
_TWIST = "import sys; from twisted.application.twist._twist import Twist; Twist.main(sys.argv)"
# The same under cProfile, the stats written to sys.argv[1] when the node exits
# (APPN_BENCH_NODE_PROFILE=directory: one <label>.prof per node).
_TWIST_PROFILED = (
    "import cProfile, sys\n"
    "from twisted.application.twist._twist import Twist\n"
    "out = sys.argv.pop(1)\n"
    "p = cProfile.Profile()\n"
    "p.enable()\n"
    "try:\n"
    "    Twist.main(sys.argv)\n"
    "finally:\n"
    "    p.disable()\n"
    "    p.dump_stats(out)\n"
)


def parseSize(text: str) -> int:
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    text = text.strip().lower().rstrip("b").rstrip("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def makeFile(path: str, size: int) -> None:
    """
    C{size} bytes of random data (a 64 MiB random block repeated: chunks
    repeat, which changes nothing in the transfer).
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = os.urandom(min(size, 64 * MIB))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


class _Quiet(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.out = b""

    def outReceived(self, data: bytes) -> None:
        self.out = (self.out + data)[-20000:]

    def errReceived(self, data: bytes) -> None:
        self.out = (self.out + data)[-20000:]

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


class Node:
    """
    One node process with the files plugin.
    """

    def __init__(self, reactor: Any, root: str, label: str, config: str | None = None) -> None:
        self.reactor = reactor
        self.dataDir = os.path.join(root, label)
        self.label = label
        self.config = config
        self.proto = _Quiet()
        self.nodeID = ""
        self.address = ""

    async def start(self, peers: list[str] = ()) -> Node:  # type: ignore[assignment]
        os.makedirs(self.dataDir, mode=0o700, exist_ok=True)
        profileDir = os.environ.get("APPN_BENCH_NODE_PROFILE")
        script = [_TWIST_PROFILED, os.path.join(profileDir, f"{self.label}.prof")] if profileDir else [_TWIST]
        args = [
            sys.executable,
            "-c",
            *script,
            "--log-format=text",
            "--log-level=warn",
            "appnnode",
            "--data-dir",
            self.dataDir,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--api",
            "tcp:0:interface=127.0.0.1",
            "--max-peers",
            "8",
            "--plugin",
            "files",
        ]
        if self.config:
            args += ["--config", self.config]
        for p in peers:
            args += ["--peer", p]
        self.reactor.spawnProcess(self.proto, sys.executable, args, env=dict(os.environ))
        for _ in range(400):
            if os.path.exists(os.path.join(self.dataDir, "api.json")):
                try:
                    info = await self.get("node")
                    self.nodeID = info["node_id"]
                    self.address = info["listen"][0] if info.get("listen") else ""
                    return self
                except Exception:
                    pass
            await deferLater(self.reactor, 0.05)
        raise RuntimeError(f"node {self.label} did not start: {self.proto.out[-2000:]!r}")

    def client(self) -> APIClient:
        return APIClient(self.dataDir, wantJSON=True)

    def get(self, path: str, query: dict[str, str] | None = None) -> Deferred[Any]:
        return deferToThread(lambda: self.client().get(path, query))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Deferred[Any]:
        return deferToThread(lambda: self.client().post(path, body))

    async def share(self, name: str, directory: str, files: int) -> None:
        await self.post("plugins/files/shares/add", {"name": name, "directory": directory})
        for _ in range(6000):
            shares = await self.get("plugins/files/shares")
            if any(s["name"] == name and s["files"] >= files for s in shares["shares"]):
                return
            await deferLater(self.reactor, 0.1)
        raise RuntimeError("share never indexed")

    async def linkedTo(self, other: Node) -> None:
        for _ in range(600):
            peers = await self.get("neighbours")
            ids = json.dumps(peers)
            if other.nodeID in ids:
                return
            await deferLater(self.reactor, 0.05)
        raise RuntimeError("never linked")

    async def download(self, body: dict[str, Any]) -> dict[str, Any]:
        """
        Start a download and wait for its end; answers the transfer.
        """
        t = await self.post("plugins/files/get", body)
        while t["state"] not in ("complete", "failed", "cancelled"):
            t = await self.get("plugins/files/transfer", {"id": t["id"], "wait": "20"})
        if t["state"] != "complete":
            raise RuntimeError(f"download {t['state']}: {t.get('message')}")
        return t  # type: ignore[no-any-return]

    def cpuSeconds(self) -> float:
        """
        User + system CPU seconds the node process used so far (Linux; NaN
        where there is no /proc).
        """
        pid = self.proto.transport.pid  # type: ignore[union-attr]
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        try:
            self.proto.transport.signalProcess("TERM")  # type: ignore[union-attr]
        except Exception:
            return
        await self.proto.ended


HTTPS_SERVER = r"""
import datetime, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet import reactor, ssl
from twisted.internet.ssl import TLSVersion
from twisted.web import server, static

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256()))
options = ssl.CertificateOptions(
    privateKey=crypto.PKey.from_cryptography_key(key),
    certificate=crypto.X509.from_cryptography(cert),
    raiseMinimumTo=TLSVersion.TLSv1_3,
)
site = server.Site(static.File(sys.argv[1]))
site.log = lambda request: None
port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
print(json.dumps({"port": port.getHost().port}), flush=True)
reactor.run()
"""


class HTTPSServer(ProcessProtocol):
    """
    C{twisted.web.static.File} over TLS 1.3 (self-signed P-256), in its own
    process.
    """

    def __init__(self, reactor: Any, directory: str) -> None:
        self.reactor = reactor
        self.directory = directory
        self.ready: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._buf = b""

    def outReceived(self, data: bytes) -> None:
        self._buf += data
        if b"\n" in self._buf and not self.ready.called:
            self.ready.callback(int(json.loads(self._buf.split(b"\n")[0])["port"]))

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(reason)
        self.ended.callback(None)

    async def start(self) -> int:
        self.reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-c", HTTPS_SERVER, self.directory],
            env=dict(os.environ),
        )
        return await self.ready

    async def stop(self) -> None:
        self.transport.signalProcess("TERM")  # type: ignore[union-attr]
        await self.ended


async def curl(reactor: Any, url: str, out: str) -> float:
    """
    Seconds C{curl} takes to fetch C{url} into C{out} (TLS 1.3, the
    self-signed certificate accepted).
    """
    proto = _Quiet()
    start = reactor.seconds()
    reactor.spawnProcess(
        proto, "curl", ["curl", "-s", "-S", "-k", "--tlsv1.3", "-o", out, url], env=dict(os.environ)
    )
    await proto.ended
    elapsed: float = reactor.seconds() - start
    return elapsed


def tempRoot() -> str:
    return tempfile.mkdtemp(prefix="appn-files-bench-", dir=os.environ.get("APPN_BENCH_DIR"))


def remove(*paths: str) -> None:
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.unlink(p)
