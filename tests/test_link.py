"""
Tests for L{appnpy.link.tls}: mutually authenticated TLS 1.3 links over real
loopback sockets, and link addresses.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLContextFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from appnpy.errors import (
    AddressError,
    IdentityError,
    PeerAuthenticationError,
)
from appnpy.link.identity import (
    Identity,
    createNetworkCA,
    loadOrCreateIdentity,
    nodeIDFromPublicKey,
    signNodeCertificate,
)
from appnpy.link.tls import (
    AuthenticatedProtocol,
    LinkAddress,
    LinkContextFactory,
    TrustPolicy,
    checkPeer,
    loadTrustPolicy,
    parseAddress,
)

TIMEOUT = 10


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def selfSignedCertificate(
    key: Ed25519PrivateKey,
    notBefore: datetime.datetime | None = None,
    notAfter: datetime.datetime | None = None,
    signer: Ed25519PrivateKey | None = None,
    issuer: x509.Certificate | None = None,
) -> x509.Certificate:
    """
    A node certificate for C{key}, self-signed unless C{signer}/C{issuer}.
    """
    now = _now()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, nodeIDFromPublicKey(key.public_key()))]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore or now - datetime.timedelta(hours=1))
        .not_valid_after(notAfter or now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(signer or key, algorithm=None)
    )


def makeIdentity(**kwargs: Any) -> Identity:
    key = Ed25519PrivateKey.generate()
    return Identity(key, selfSignedCertificate(key, **kwargs))


def issuerCertificate(key: Ed25519PrivateKey) -> x509.Certificate:
    """
    A self-signed CA-style certificate, for building 2-certificate chains.
    """
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm=None)
    )


@implementer(IOpenSSLContextFactory)
class RawContextFactory:
    """
    A context factory for a hand-built, misbehaving peer.
    """

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def getContext(self) -> SSL.Context:
        return self.context


def rawContext(
    cert: x509.Certificate | None = None,
    key: Ed25519PrivateKey | None = None,
    maxVersion: int | None = None,
    extraChain: tuple[x509.Certificate, ...] = (),
) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    if maxVersion is not None:
        ctx.set_max_proto_version(maxVersion)
    else:
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    if cert is not None:
        ctx.use_certificate(cert)
    if key is not None:
        ctx.use_privatekey(key)
    for extra in extraChain:
        ctx.add_extra_chain_cert(extra)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    return ctx


class RecordingProtocol(AuthenticatedProtocol):
    """
    Records what the link layer tells the application.
    """

    greeting = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authenticated: Deferred[str] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()
        self.received: list[bytes] = []
        self.tlsVersion: str | None = None

    def linkAuthenticated(self, peerNodeID: str) -> None:
        self.tlsVersion = self.transport.getHandle().get_protocol_version_name()
        if self.greeting:
            self.transport.write(self.greeting)
        self.authenticated.callback(peerNodeID)

    def authenticatedDataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(reason.value)


@implementer(IHandshakeListener)
class EagerTLSClient(Protocol):
    """
    A client that writes application data at once (the TLS layer sends it
    right after its Finished message), before the server has judged its
    certificate.
    """

    def __init__(self) -> None:
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"SECRET APPLICATION DATA")

    def handshakeCompleted(self) -> None:
        self.transport.write(b"MORE SECRET DATA")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(reason.value)


class PlainClient(Protocol):
    """
    A plain TCP client that sends C{payload} (maybe nothing) and waits.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        if self.payload:
            self.transport.write(self.payload)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(reason.value)


class ProtocolFactory(Factory):
    """
    Builds one given kind of protocol and queues each one built.
    """

    def __init__(self, make: Any) -> None:
        self.make = make
        self.built: DeferredQueue[Any] = DeferredQueue()

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = self.make()
        protocol.factory = self
        self.built.put(protocol)
        return protocol


def withTimeout(d: Deferred[Any]) -> Deferred[Any]:
    return d.addTimeout(TIMEOUT, reactor)


class LinkTests(TestCase):
    """
    Real TLS links on loopback sockets.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.serverIdentity = makeIdentity()
        self.clientIdentity = makeIdentity()

    def linkLines(self) -> list[dict[str, Any]]:
        """
        The link refusal lines logged so far.
        """
        return [e for e in self.events if e.get("log_namespace") == "appnpy.link.tls"]

    def assertNoErrorsLogged(self) -> None:
        errors = [e for e in self.events if "log_failure" in e]
        self.assertEqual(errors, [])

    async def listen(
        self,
        identity: Identity | None = None,
        policy: TrustPolicy | None = None,
        handshakeTimeout: float = 10.0,
        expectedNodeID: str | None = None,
    ) -> tuple[int, ProtocolFactory]:
        identity = identity or self.serverIdentity
        policy = policy or TrustPolicy.open()
        factory = ProtocolFactory(
            lambda: RecordingProtocol(
                reactor,
                identity.nodeID,
                expectedNodeID=expectedNodeID,
                handshakeTimeout=handshakeTimeout,
                trustMode=policy.mode,
            )
        )
        contextFactory = LinkContextFactory(identity, policy)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            TLSMemoryBIOFactory(contextFactory, False, factory)
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    async def connect(self, port: int, contextFactory: Any, protocol: Protocol) -> Protocol:
        endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")
        factory = ProtocolFactory(lambda: protocol)
        await withTimeout(endpoint.connect(TLSMemoryBIOFactory(contextFactory, True, factory)))
        return protocol

    async def connectPlain(self, port: int, protocol: Protocol) -> Protocol:
        endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")
        factory = ProtocolFactory(lambda: protocol)
        await withTimeout(endpoint.connect(factory))
        return protocol

    def linkClient(
        self,
        identity: Identity | None = None,
        expectedNodeID: str | None = None,
        mode: str = "open",
    ) -> RecordingProtocol:
        identity = identity or self.clientIdentity
        return RecordingProtocol(
            reactor, identity.nodeID, expectedNodeID=expectedNodeID, trustMode=mode
        )

    async def assertGoodLink(
        self,
        port: int,
        serverFactory: ProtocolFactory,
        clientIdentity: Identity | None = None,
        policy: TrustPolicy | None = None,
        serverNodeID: str | None = None,
    ) -> None:
        """
        A well-behaved client gets a link: both sides authenticated, TLS 1.3,
        each knowing the other's ID, data flowing both ways.
        """
        clientIdentity = clientIdentity or self.clientIdentity
        policy = policy or TrustPolicy.open()
        serverNodeID = serverNodeID or self.serverIdentity.nodeID
        client = self.linkClient(clientIdentity, serverNodeID, mode=policy.mode)
        client.greeting = b"hello from client"
        await self.connect(port, LinkContextFactory(clientIdentity, policy), client)
        server = await withTimeout(serverFactory.built.get())
        self.assertEqual(await withTimeout(client.authenticated), serverNodeID)
        self.assertEqual(await withTimeout(server.authenticated), clientIdentity.nodeID)
        self.assertEqual(client.tlsVersion, "TLSv1.3")
        self.assertEqual(server.tlsVersion, "TLSv1.3")
        self.assertEqual(client.peerNodeID, serverNodeID)
        self.assertEqual(server.peerNodeID, clientIdentity.nodeID)
        server.transport.write(b"hello from server")
        while b"".join(server.received) != b"hello from client":
            await withTimeout(deferLater())
        while b"".join(client.received) != b"hello from server":
            await withTimeout(deferLater())
        client.transport.loseConnection()
        await withTimeout(client.lost)
        await withTimeout(server.lost)

    async def test_goodMutualHandshake(self) -> None:
        """
        Two nodes with valid self-signed certificates negotiate TLS 1.3 and
        each learns the other's node ID; the server then accepts another.
        """
        port, serverFactory = await self.listen()
        await self.assertGoodLink(port, serverFactory)
        await self.assertGoodLink(port, serverFactory, clientIdentity=makeIdentity())
        self.assertEqual(self.linkLines(), [])
        self.assertNoErrorsLogged()

    async def test_wrongPinnedNodeID(self) -> None:
        """
        A client that expects another node ID aborts the link, saying which
        node it expected and which it got; the server sees the connection
        close and still accepts a good client afterwards.
        """
        port, serverFactory = await self.listen()
        other = makeIdentity().nodeID
        client = self.linkClient(expectedNodeID=other)
        await self.connect(
            port, LinkContextFactory(self.clientIdentity, TrustPolicy.open()), client
        )
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(client.lost)
        await withTimeout(server.lost)
        self.assertIsNone(client.peerNodeID)
        self.assertFalse(client.authenticated.called)
        [clientLine] = [e for e in self.linkLines() if e["peer"] == f"127.0.0.1:{port}"]
        self.assertIn(f"expected node {other}, got {self.serverIdentity.nodeID}", clientLine["why"])
        # The server logs at most its own line for the closed connection.
        self.assertLessEqual(len(self.linkLines()), 2)
        self.assertNoErrorsLogged()
        await self.assertGoodLink(port, serverFactory)

    async def test_serverPinnedNodeID(self) -> None:
        """
        A server that pins the client's ID refuses another client, and none
        of the data that client sent right after its handshake is delivered
        to the server's application.
        """
        expected = makeIdentity().nodeID
        port, serverFactory = await self.listen(expectedNodeID=expected)
        client = EagerTLSClient()
        await self.connect(
            port, LinkContextFactory(self.clientIdentity, TrustPolicy.open()), client
        )
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(client.lost)
        await withTimeout(server.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertEqual(server.received, [])
        [line] = self.linkLines()
        self.assertIn(f"expected node {expected}, got {self.clientIdentity.nodeID}", line["why"])
        self.assertNoErrorsLogged()

    async def test_clientWithoutCertificate(self) -> None:
        """
        A client presenting no certificate is refused: the server logs the
        TLS failure, the client is told a certificate was required.
        """
        port, serverFactory = await self.listen()
        client = self.linkClient()
        await self.connect(port, RawContextFactory(rawContext()), client)
        server = await withTimeout(serverFactory.built.get())
        serverReason = await withTimeout(server.lost)
        clientReason = await withTimeout(client.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertIsInstance(serverReason, SSL.Error)
        self.assertIsInstance(clientReason, SSL.Error)
        self.assertIn("certificate required", str(clientReason))
        serverLines = [e for e in self.linkLines() if "certificate" in e["why"]]
        self.assertTrue(serverLines, self.linkLines())
        await self.assertGoodLink(port, serverFactory)

    async def test_tls12Client(self) -> None:
        """
        A client that speaks at most TLS 1.2 is refused on protocol version;
        neither side authenticates.
        """
        port, serverFactory = await self.listen()
        key = Ed25519PrivateKey.generate()
        client = self.linkClient()
        ctx = rawContext(selfSignedCertificate(key), key, maxVersion=SSL.TLS1_2_VERSION)
        await self.connect(port, RawContextFactory(ctx), client)
        server = await withTimeout(serverFactory.built.get())
        serverReason = await withTimeout(server.lost)
        clientReason = await withTimeout(client.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertIsNone(client.peerNodeID)
        self.assertIn("unsupported protocol", str(serverReason))
        self.assertIn("protocol version", str(clientReason))
        await self.assertGoodLink(port, serverFactory)

    async def assertClientCertificateRefused(
        self, ctx: SSL.Context, why: str, policy: TrustPolicy | None = None
    ) -> None:
        """
        A client using C{ctx} is refused by the server's TLS layer (the
        server logs C{why}), and the application data it sent never reaches
        the server's application; a good client is accepted afterwards.
        """
        port, serverFactory = await self.listen(
            identity=self.serverIdentity, policy=policy or TrustPolicy.open()
        )
        client = EagerTLSClient()
        await self.connect(port, RawContextFactory(ctx), client)
        server = await withTimeout(serverFactory.built.get())
        serverReason = await withTimeout(server.lost)
        clientReason = await withTimeout(client.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertEqual(server.received, [])
        self.assertIsInstance(serverReason, SSL.Error)
        self.assertIsInstance(clientReason, SSL.Error)
        [line] = self.linkLines()
        self.assertIn(why, line["why"])
        self.assertNoErrorsLogged()
        del self.events[:]
        await self.assertGoodLink(port, serverFactory, policy=policy)

    async def test_expiredClientCertificate(self) -> None:
        """
        An expired client certificate is refused, and the data the client
        sent is not delivered.
        """
        key = Ed25519PrivateKey.generate()
        cert = selfSignedCertificate(
            key,
            notBefore=_now() - datetime.timedelta(days=20),
            notAfter=_now() - datetime.timedelta(days=1),
        )
        await self.assertClientCertificateRefused(rawContext(cert, key), "has expired")

    async def test_notYetValidClientCertificate(self) -> None:
        """
        A client certificate that is not valid yet is refused.
        """
        key = Ed25519PrivateKey.generate()
        cert = selfSignedCertificate(
            key,
            notBefore=_now() + datetime.timedelta(days=1),
            notAfter=_now() + datetime.timedelta(days=20),
        )
        await self.assertClientCertificateRefused(rawContext(cert, key), "not yet valid")

    async def test_forgedSelfSignature(self) -> None:
        """
        A certificate for the client's key but signed by a different key (a
        garbled self-signature, which OpenSSL itself does not check on an
        untrusted self-signed certificate) is refused.
        """
        key = Ed25519PrivateKey.generate()
        cert = selfSignedCertificate(key, signer=Ed25519PrivateKey.generate())
        await self.assertClientCertificateRefused(rawContext(cert, key), "signature")

    def test_keyNotMatchingCertificate(self) -> None:
        """
        A certificate made for one key cannot be used with a different
        private key: Identity and the link context refuse the pair, and
        OpenSSL refuses to load it into any context, so no handshake can be
        offered with it (a foreign stack would fail CertificateVerify).
        """
        key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        cert = selfSignedCertificate(key)
        self.assertRaises(IdentityError, Identity, other, cert)
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.use_certificate(cert)
        self.assertRaises(SSL.Error, ctx.use_privatekey, other)

    async def test_twoCertificateChainSignedByIssuer(self) -> None:
        """
        In open mode a client certificate issued by another certificate (a
        2-certificate chain) is refused.
        """
        issuerKey, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        issuer = issuerCertificate(issuerKey)
        leaf = selfSignedCertificate(key, signer=issuerKey, issuer=issuer)
        await self.assertClientCertificateRefused(
            rawContext(leaf, key, extraChain=[issuer]), "depth 1"
        )

    async def test_twoCertificateChainFromClient(self) -> None:
        """
        In open mode a client that sends its self-signed certificate plus
        another one is refused by the server's peer check (after TLS accepted
        the leaf), and its early data is not delivered.
        """
        port, serverFactory = await self.listen()
        key = Ed25519PrivateKey.generate()
        extra = issuerCertificate(Ed25519PrivateKey.generate())
        client = EagerTLSClient()
        ctx = rawContext(selfSignedCertificate(key), key, extraChain=[extra])
        await self.connect(port, RawContextFactory(ctx), client)
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(server.lost)
        await withTimeout(client.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertEqual(server.received, [])
        [line] = self.linkLines()
        self.assertIn("chain of 2 certificates", line["why"])
        await self.assertGoodLink(port, serverFactory)

    async def test_twoCertificateChainFromServer(self) -> None:
        """
        The same check in the other role: a client refuses a server that
        sends two certificates.
        """
        key = Ed25519PrivateKey.generate()
        serverCert = selfSignedCertificate(key)
        ctx = rawContext(serverCert, key, extraChain=[issuerCertificate(key)])
        ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        serverFactory = ProtocolFactory(Protocol)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            TLSMemoryBIOFactory(RawContextFactory(ctx), False, serverFactory)
        )
        self.addCleanup(port.stopListening)
        client = self.linkClient()
        await self.connect(
            port.getHost().port,
            LinkContextFactory(self.clientIdentity, TrustPolicy.open()),
            client,
        )
        await withTimeout(client.lost)
        self.assertIsNone(client.peerNodeID)
        [line] = self.linkLines()
        self.assertIn("chain of 2 certificates", line["why"])

    async def test_networkMode(self) -> None:
        """
        In network trust mode a node signed by the network CA is accepted
        and a self-signed node is refused, the server saying why.
        """
        base = self.mktemp()
        caDir = os.path.join(base, "ca")
        createNetworkCA(caDir, "LAB")
        identities = []
        for name in ("server", "client"):
            dataDir = os.path.join(base, name)
            loadOrCreateIdentity(dataDir)
            signNodeCertificate(caDir, dataDir)
            identities.append(loadOrCreateIdentity(dataDir))
        serverIdentity, clientIdentity = identities
        policy = loadTrustPolicy("network", os.path.join(base, "server"))
        port, serverFactory = await self.listen(identity=serverIdentity, policy=policy)
        await self.assertGoodLink(
            port,
            serverFactory,
            clientIdentity=clientIdentity,
            policy=policy,
            serverNodeID=serverIdentity.nodeID,
        )
        self.assertEqual(self.linkLines(), [])

        key = Ed25519PrivateKey.generate()
        client = EagerTLSClient()
        await self.connect(
            port, RawContextFactory(rawContext(selfSignedCertificate(key), key)), client
        )
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(server.lost)
        await withTimeout(client.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertEqual(server.received, [])
        [line] = self.linkLines()
        self.assertIn("self-signed certificate", line["why"])
        self.assertIn("network CA", line["why"])
        await self.assertGoodLink(
            port,
            serverFactory,
            clientIdentity=clientIdentity,
            policy=policy,
            serverNodeID=serverIdentity.nodeID,
        )

    def test_networkModeNeedsSignedOwnCertificate(self) -> None:
        """
        A node cannot run network trust mode with a self-signed certificate,
        nor open mode with a CA-signed one: both are clear startup errors.
        """
        base = self.mktemp()
        createNetworkCA(os.path.join(base, "ca"), "LAB")
        with open(os.path.join(base, "ca", "ca.crt"), "rb") as f:
            caCert = x509.load_pem_x509_certificate(f.read())
        e = self.assertRaises(
            IdentityError, LinkContextFactory, self.serverIdentity, TrustPolicy.network(caCert)
        )
        self.assertIn("appn ca sign", str(e))
        dataDir = os.path.join(base, "node")
        loadOrCreateIdentity(dataDir)
        signNodeCertificate(os.path.join(base, "ca"), dataDir)
        e = self.assertRaises(
            IdentityError, LinkContextFactory, loadOrCreateIdentity(dataDir), TrustPolicy.open()
        )
        self.assertIn("self-signed", str(e))

    def test_loadTrustPolicyMissingCA(self) -> None:
        """
        Network trust mode without network-ca.crt is an error that says how
        to get one; open mode needs nothing.
        """
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        e = self.assertRaises(IdentityError, loadTrustPolicy, "network", dataDir)
        self.assertIn("appn ca create", str(e))
        self.assertEqual(loadTrustPolicy("open", dataDir), TrustPolicy.open())

    async def assertPlainClientDropped(self, payload: bytes, why: str) -> None:
        port, serverFactory = await self.listen()
        client = await self.connectPlain(port, PlainClient(payload))
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(client.lost)
        await withTimeout(server.lost)
        self.assertIsNone(server.peerNodeID)
        self.assertEqual(server.received, [])
        [line] = self.linkLines()
        self.assertEqual(line["log_format"], "refused link from {peer}: {why}")
        self.assertIn(why, line["why"])
        self.assertTrue(line["peer"].startswith("127.0.0.1:"))
        self.assertNoErrorsLogged()
        del self.events[:]
        await self.assertGoodLink(port, serverFactory)

    async def test_httpRequest(self) -> None:
        """
        A plain HTTP request is dropped with exactly one log line and no
        logged error.
        """
        await self.assertPlainClientDropped(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "TLS handshake failed"
        )

    async def test_randomBytes(self) -> None:
        """
        Random bytes are dropped with exactly one log line and no logged
        error.
        """
        await self.assertPlainClientDropped(os.urandom(3000), "TLS handshake failed")

    async def test_handshakeTimeout(self) -> None:
        """
        A client that connects and says nothing is cut off at the handshake
        deadline, with one log line.
        """
        port, serverFactory = await self.listen(handshakeTimeout=0.5)
        start = reactor.seconds()
        client = await self.connectPlain(port, PlainClient(b""))
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(client.lost)
        await withTimeout(server.lost)
        self.assertGreaterEqual(reactor.seconds() - start, 0.4)
        [line] = self.linkLines()
        self.assertIn("not authenticated within 0.5 s", line["why"])
        self.assertNoErrorsLogged()
        del self.events[:]
        await self.assertGoodLink(port, serverFactory)

    async def test_deadlineCancelledOnSuccess(self) -> None:
        """
        An authenticated link outlives the handshake deadline.
        """
        port, serverFactory = await self.listen(handshakeTimeout=0.2)
        client = self.linkClient(expectedNodeID=self.serverIdentity.nodeID)
        client.handshakeTimeout = 0.2
        await self.connect(
            port, LinkContextFactory(self.clientIdentity, TrustPolicy.open()), client
        )
        server = await withTimeout(serverFactory.built.get())
        await withTimeout(server.authenticated)
        await withTimeout(client.authenticated)
        await deferLater(0.5)
        self.assertFalse(client.lost.called)
        self.assertFalse(server.lost.called)
        client.transport.loseConnection()
        await withTimeout(client.lost)
        await withTimeout(server.lost)
        self.assertEqual(self.linkLines(), [])


def deferLater(delay: float = 0.01) -> Deferred[None]:
    from twisted.internet.task import deferLater as _deferLater

    return _deferLater(reactor, delay, lambda: None)


class FakeHandle:
    """
    The parts of an OpenSSL Connection that L{checkPeer} reads.
    """

    def __init__(self, chain: list[x509.Certificate]) -> None:
        self.chain = chain

    def get_peer_cert_chain(self, as_cryptography: bool = False) -> list[x509.Certificate]:
        return self.chain

    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"


class FakeTLSTransport(StringTransport):
    """
    A StringTransport whose TLS handshake is done, with this peer cert.
    """

    def __init__(self, cert: x509.Certificate, chain: list[x509.Certificate] | None = None):
        super().__init__()
        self.cert = cert
        self.handle = FakeHandle([cert] if chain is None else chain)

    def getPeerCertificate(self) -> X509:
        return X509.from_cryptography(self.cert)

    def getHandle(self) -> FakeHandle:
        return self.handle


class AuthenticatedProtocolUnitTests(TestCase):
    """
    L{AuthenticatedProtocol} with a fake transport and a fake clock.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = MemoryReactorClock()
        self.peer = makeIdentity()

    def lines(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_namespace") == "appnpy.link.tls"]

    def connect(
        self, expectedNodeID: str | None = None
    ) -> tuple[RecordingProtocol, FakeTLSTransport]:
        protocol = RecordingProtocol(self.clock, "own", expectedNodeID=expectedNodeID)
        transport = FakeTLSTransport(self.peer.certificate)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_dataDroppedUntilAuthenticated(self) -> None:
        """
        Bytes before authentication are dropped; afterwards they go straight
        to authenticatedDataReceived (dataReceived is replaced by it).
        """
        protocol, transport = self.connect(self.peer.nodeID)
        protocol.dataReceived(b"early")
        self.assertEqual(protocol.received, [])
        protocol.handshakeCompleted()
        self.assertEqual(protocol.peerNodeID, self.peer.nodeID)
        self.assertEqual(protocol.dataReceived, protocol.authenticatedDataReceived)
        protocol.dataReceived(b"late")
        self.assertEqual(protocol.received, [b"late"])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refusedPeerDataDropped(self) -> None:
        """
        A pin mismatch aborts the transport with one log line, and later
        bytes are still dropped.
        """
        protocol, transport = self.connect(makeIdentity().nodeID)
        protocol.handshakeCompleted()
        self.assertTrue(transport.disconnected)
        self.assertIsNone(protocol.peerNodeID)
        protocol.dataReceived(b"data")
        self.assertEqual(protocol.received, [])
        protocol.connectionLost(connectionDone)
        [line] = self.lines()
        self.assertIn("expected node", line["why"])

    def test_deadline(self) -> None:
        """
        The handshake deadline aborts an unauthenticated connection exactly
        when it expires, with one log line even after connectionLost.
        """
        protocol, transport = self.connect()
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(connectionDone)
        [line] = self.lines()
        self.assertIn("not authenticated within 10 s", line["why"])

    def test_lossCancelsDeadline(self) -> None:
        """
        Losing the connection cancels the deadline.
        """
        protocol, transport = self.connect()
        protocol.connectionLost(connectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handshakeAfterDisconnect(self) -> None:
        """
        A handshake that completes on a connection already closing does not
        authenticate it.
        """
        protocol, transport = self.connect()
        transport.loseConnection()
        protocol.handshakeCompleted()
        self.assertIsNone(protocol.peerNodeID)
        self.assertFalse(protocol.authenticated.called)


class CheckPeerTests(TestCase):
    """
    L{checkPeer} on a fake transport.
    """

    def test_noCertificate(self) -> None:
        """
        A transport without a peer certificate is refused.
        """

        class Transport:
            def getPeerCertificate(self) -> None:
                return None

        self.assertRaises(PeerAuthenticationError, checkPeer, Transport(), None, "x")


class AddressTests(TestCase):
    """
    L{parseAddress} and L{LinkAddress}.
    """

    nodeID = makeIdentity().nodeID

    def test_hostPort(self) -> None:
        """
        host:port parses and formats back.
        """
        address = parseAddress("example.net:7700")
        self.assertEqual(address, LinkAddress("example.net", 7700, None))
        self.assertEqual(str(address), "example.net:7700")
        self.assertEqual(address.clientEndpointString(), "tcp:host=example.net:port=7700")

    def test_ipv6(self) -> None:
        """
        [v6]:port parses; the endpoint string escapes the colons.
        """
        address = parseAddress("[::1]:7700")
        self.assertEqual(address, LinkAddress("::1", 7700, None))
        self.assertEqual(str(address), "[::1]:7700")
        self.assertEqual(address.clientEndpointString(), r"tcp:host=\:\:1:port=7700")

    def test_pinned(self) -> None:
        """
        appn://<nodeid>@host:port carries the node ID.
        """
        address = parseAddress(f"appn://{self.nodeID}@[fe80::1]:1")
        self.assertEqual(address, LinkAddress("fe80::1", 1, self.nodeID))
        self.assertEqual(str(address), f"appn://{self.nodeID}@[fe80::1]:1")

    def test_badAddresses(self) -> None:
        """
        Malformed addresses raise AddressError naming the expected form.
        """
        for text in [
            "",
            "host",
            "host:",
            "host:0",
            "host:65536",
            "host:12x",
            "::1:7700",
            "[::1]7700",
            "[nothost]:7700",
            "http://host:80",
            f"appn://{self.nodeID.upper()}@host:1",
            f"appn://{self.nodeID[:-1]}@host:1",
            f"appn://{self.nodeID[:-1]}1@host:1",
            "appn://host:1",
            "ho st:1",
        ]:
            e = self.assertRaises(AddressError, parseAddress, text)
            self.assertIn("appn://<", str(e), text)

    @given(st.text(max_size=80))
    def test_parseNeverCrashes(self, text: str) -> None:
        """
        Any string either parses into an address that formats back to an
        equivalent address, or raises AddressError.
        """
        try:
            address = parseAddress(text)
        except AddressError:
            return
        self.assertEqual(parseAddress(str(address)), address)

    @given(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5}){0,2}", fullmatch=True)
        | st.ip_addresses().map(str),
        st.integers(1, 65535),
        st.booleans(),
    )
    def test_roundTrip(self, host: str, port: int, pinned: bool) -> None:
        """
        Every valid address formats and parses back to itself.
        """
        address = LinkAddress(host, port, self.nodeID if pinned else None)
        self.assertEqual(parseAddress(str(address)), address)
