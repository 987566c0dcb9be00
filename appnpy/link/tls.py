"""
Links: TLS 1.3 connections between adjacent nodes, mutually authenticated.

Each side presents its node certificate and requires the other's.  The peer's
node ID is computed from its certificate's public key and, when the address
pinned one (C{appn://<nodeid>@host:port}), compared with it in constant time
before a single application byte is processed; a mismatch aborts the link.

Trust modes:

  - C{open}: any key may join; the peer must present exactly one
    self-signed certificate, valid now;
  - C{network}: the peer's certificate must be signed by the network CA
    (C{network-ca.crt} in the data directory).

L{LinkContextFactory} is used as the server B{and} the client context factory
of L{twisted.protocols.tls.TLSMemoryBIOFactory}; application protocols derive
from L{AuthenticatedProtocol}.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import weakref
from typing import Any, cast

import attrs
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLContextFactory,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.errors import AddressError, ConfigurationError, IdentityError, PeerAuthenticationError
from appnpy.link.bulktls import bulkContext
from appnpy.link.identity import (
    NETWORK_CA_FILE,
    Identity,
    _isSelfSigned,
    certifiedCPName,
    isNodeID,
    nodeIDFromCertificate,
)

OPEN = "open"
NETWORK = "network"

DEFAULT_HANDSHAKE_TIMEOUT = 10.0

# One namespace for every link refusal line, whatever the protocol subclass.
_log = Logger(namespace="appnpy.link.tls")

# X.509 verification results we name in log lines (OpenSSL's X509_V_ERR_*).
_X509_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}
_DEPTH_ZERO_SELF_SIGNED_CERT = 18


# -- trust policy --------------------------------------------------------------


def _checkMode(instance: TrustPolicy, attribute: attrs.Attribute[str], mode: str) -> None:
    if mode not in (OPEN, NETWORK):
        raise ConfigurationError(f"trust mode {mode!r}: it must be 'open' or 'network'")


@attrs.frozen
class TrustPolicy:
    """
    Which peer certificates a node accepts.

    @ivar mode: C{"open"} or C{"network"}.
    @ivar caCertificate: the network CA (network mode only).
    """

    mode: str = attrs.field(validator=_checkMode)
    caCertificate: x509.Certificate | None = None

    def __attrs_post_init__(self) -> None:
        if (self.mode == NETWORK) != (self.caCertificate is not None):
            raise ConfigurationError(
                "network trust mode needs the network CA certificate, open mode none"
            )

    @classmethod
    def open(cls) -> TrustPolicy:
        """
        Accept any single self-signed certificate.
        """
        return cls(OPEN, None)

    @classmethod
    def network(cls, caCertificate: x509.Certificate) -> TrustPolicy:
        """
        Accept only certificates signed by C{caCertificate}.
        """
        return cls(NETWORK, caCertificate)


def loadTrustPolicy(mode: str, dataDir: str | os.PathLike[str]) -> TrustPolicy:
    """
    The trust policy for C{mode}; network mode reads C{network-ca.crt} from
    the node's data directory.
    """
    if mode == OPEN:
        return TrustPolicy.open()
    if mode != NETWORK:
        raise ConfigurationError(f"trust mode {mode!r}: it must be 'open' or 'network'")
    path = os.path.join(os.fspath(dataDir), NETWORK_CA_FILE)
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except FileNotFoundError:
        raise IdentityError(
            f"network trust mode needs {path}: create the network CA once with "
            "`appn ca create`, then sign this node with `appn ca sign` (which also "
            "copies the CA certificate here)"
        ) from None
    try:
        return TrustPolicy.network(x509.load_pem_x509_certificate(pem))
    except ValueError as e:
        raise IdentityError(f"cannot read the network CA certificate {path}: {e}") from e


# -- TLS context ---------------------------------------------------------------


# Why the verify callback refused a connection's peer certificate, for the
# log line written when the TLS layer reports the failed handshake.
_verifyFailures: weakref.WeakKeyDictionary[SSL.Connection, str] = weakref.WeakKeyDictionary()


def _refuseCertificate(connection: SSL.Connection, errno: int, depth: int, why: str) -> bool:
    name = _X509_ERRORS.get(errno, f"X.509 error {errno}") if errno else why
    _verifyFailures.setdefault(connection, f"{name} (depth {depth}); {why}")
    return False


def _verifyOpen(
    connection: SSL.Connection, cert: X509, errno: int, depth: int, preverifyOK: int
) -> bool:
    # Only the leaf is acceptable, and only for "it is self-signed" (chain
    # trust is not used in open mode); every other problem, including
    # expiry (10) and not-yet-valid (9), is fatal.
    if depth != 0:
        return _refuseCertificate(
            connection, errno, depth, "open trust mode accepts one self-signed certificate"
        )
    if errno == _DEPTH_ZERO_SELF_SIGNED_CERT:
        # OpenSSL does not check the signature of an untrusted self-signed
        # certificate; a forged or garbled one is refused here.
        if not _isSelfSigned(cert.to_cryptography()):
            return _refuseCertificate(connection, 7, depth, "bad self-signature")
        return True
    if preverifyOK:
        return True
    return _refuseCertificate(connection, errno, depth, "open trust mode")


def _verifyNetwork(
    connection: SSL.Connection, cert: X509, errno: int, depth: int, preverifyOK: int
) -> bool:
    if preverifyOK:
        return True
    return _refuseCertificate(
        connection, errno, depth, "network trust mode needs a certificate signed by the network CA"
    )


@implementer(IOpenSSLContextFactory)
class LinkContextFactory:
    """
    The TLS context for every link of one node: TLS 1.3 only, the node's key
    and certificate, a peer certificate required and checked by the trust
    policy.  Used as both the server and the client context factory.

    The C{OpenSSL.SSL.Context} is built once: pyOpenSSL refuses to change a
    context after it has made a connection.
    """

    def __init__(self, identity: Identity, trustPolicy: TrustPolicy) -> None:
        self.identity = identity
        self.trustPolicy = trustPolicy
        cert = identity.certificate
        if trustPolicy.mode == OPEN and not _isSelfSigned(cert):
            raise IdentityError(
                "open trust mode needs a self-signed node certificate, but node.crt is "
                "signed by a network CA; use network trust mode, or delete node.crt and "
                "the node re-issues a self-signed one for the same key"
            )
        if trustPolicy.mode == NETWORK:
            assert trustPolicy.caCertificate is not None
            try:
                cert.verify_directly_issued_by(trustPolicy.caCertificate)
            except Exception:
                raise IdentityError(
                    "network trust mode needs a node certificate signed by the network "
                    "CA; sign this node with `appn ca sign`"
                ) from None
        # One SSL_write per write, all its records (appnpy.link.bulktls).
        ctx = bulkContext(SSL.Context(SSL.TLS_METHOD))
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.use_certificate(cert)
        ctx.use_privatekey(identity.privateKey)
        ctx.check_privatekey()
        # Resumption is not needed (links are long-lived) and would skip the
        # peer certificate check on a resumed session.
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        # Free OpenSSL's read and write buffers while a link is idle: about
        # 20 KiB per link, at no measured cost to bulk throughput.
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        if trustPolicy.mode == NETWORK:
            assert trustPolicy.caCertificate is not None
            store = ctx.get_cert_store()
            assert store is not None
            store.add_cert(X509.from_cryptography(trustPolicy.caCertificate))
            callback = _verifyNetwork
        else:
            callback = _verifyOpen
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, callback)
        self._context = ctx

    def getContext(self) -> SSL.Context:
        """
        The one context for all links of this node.
        """
        return self._context


# -- peer checks ---------------------------------------------------------------


def checkPeer(
    transport: Any,
    expectedNodeID: str | None,
    ownNodeID: str,
    *,
    trustMode: str = OPEN,
) -> str:
    """
    Authenticate the peer of C{transport} after the TLS handshake and return
    its node ID.

    In open mode the peer must have sent exactly one certificate.  If
    C{expectedNodeID} is given, the peer's ID must equal it (compared in
    constant time).  Self-dial detection (the result equals C{ownNodeID}) is
    left to the caller.

    @raise PeerAuthenticationError: with the reason.
    """
    peerCert = transport.getPeerCertificate()
    if peerCert is None:
        raise PeerAuthenticationError("the peer presented no certificate")
    leaf = peerCert.to_cryptography()
    peerNodeID = nodeIDFromCertificate(leaf)
    if trustMode == OPEN:
        # OpenSSL includes the peer's own certificate in this chain on the
        # client side and leaves it out on the server side; count the others.
        chain = transport.getHandle().get_peer_cert_chain(as_cryptography=True) or []
        others = [c for c in chain if c != leaf]
        if others:
            raise PeerAuthenticationError(
                f"node {peerNodeID} sent a chain of {len(others) + 1} certificates; "
                "open trust mode accepts exactly one self-signed certificate"
            )
    if expectedNodeID is not None and not hmac.compare_digest(
        expectedNodeID.encode("ascii", "replace"), peerNodeID.encode("ascii")
    ):
        raise PeerAuthenticationError(f"expected node {expectedNodeID}, got {peerNodeID}")
    return peerNodeID


def _describeTLSError(error: SSL.Error) -> str:
    reasons = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return "; ".join(r for r in reasons if r) or str(error) or type(error).__name__


def _describePeer(transport: Any) -> str:
    try:
        address = transport.getPeer()
    except Exception:
        return "unknown peer"
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def setNoDelay(transport: object) -> None:
    """
    Turn Nagle's algorithm off on a link's TCP connection (dialled and
    accepted alike).  A link carries small messages that wait for an answer
    (pings, BINDs, one echo): with Nagle holding a short write back until the
    previous one is acknowledged, and the peer delaying that acknowledgement,
    a write-write-read exchange costs about 40 ms instead of one round trip,
    and the RTT measured on the link feeds route weights.  Bulk data is not
    slowed: yamux already sends whole frames in one write.

    The TLS transport of a link provides what its TCP transport provides
    (and forwards the call to it); the in-memory transports of tests are no
    TCP and are left alone.
    """
    if ITCPTransport.providedBy(transport):
        try:
            transport.setTcpNoDelay(True)
        except OSError as e:
            # The connection is already gone; its loss is reported anyway.
            _log.debug("could not set TCP_NODELAY: {error}", error=e)


@implementer(IHandshakeListener)
class AuthenticatedProtocol(Protocol):
    """
    Base class for the protocol running over a link.  Nothing reaches the
    application until the peer is authenticated: until then received bytes
    are dropped.  Subclasses implement L{linkAuthenticated} and
    L{authenticatedDataReceived}.

    A refused, failed or timed-out handshake is logged as one line and the
    connection is aborted.

    @ivar peerNodeID: the peer's node ID once authenticated, else L{None}.
    @ivar peerCertifiedName: in network trust mode, the CP name the network
        CA certified in the peer's certificate (L{certifiedCPName}), else
        L{None}; the peer's Hello must claim exactly that name.
    """

    peerNodeID: str | None = None
    peerCertifiedName: str | None = None

    def __init__(
        self,
        reactor: IReactorTime,
        ownNodeID: str,
        expectedNodeID: str | None = None,
        handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        trustMode: str = OPEN,
    ) -> None:
        self.reactor = reactor
        self.ownNodeID = ownNodeID
        self.expectedNodeID = expectedNodeID
        self.handshakeTimeout = handshakeTimeout
        self.trustMode = trustMode
        self.peerNodeID = None
        self._deadline: IDelayedCall | None = None
        self._refused = False
        #: Why the link was refused before it came up, if it was.
        self.refusal: tuple[str, str] | None = None

    # -- hooks for subclasses --

    def linkAuthenticated(self, peerNodeID: str) -> None:
        """
        The peer is authenticated as C{peerNodeID}; application data flows
        to L{authenticatedDataReceived} from now on.
        """

    def authenticatedDataReceived(self, data: bytes) -> None:
        """
        Application bytes from the authenticated peer.
        """

    # -- machinery --

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        self._deadline = self.reactor.callLater(self.handshakeTimeout, self._handshakeTimedOut)

    def dataReceived(self, data: bytes) -> None:
        # Not authenticated yet (or refused): drop.  On success this method
        # is shadowed by an instance attribute, so the data path costs no
        # extra call.
        return None

    def refusedBeforeTLS(self, reason: str, detail: str) -> None:
        """
        The listener refused this dialled connection with a refusal line
        (it is busy): one log line with its reason; the connection closes.
        """
        if self._refused:
            return
        self._refused = True
        self._cancelDeadline()
        self.refusal = (reason, detail)
        _log.warn(
            "link to {peer} refused by the peer before TLS: {reason} {detail}",
            peer=_describePeer(self.transport),
            reason=reason,
            detail=detail,
        )
        self.authenticationFailed(f"refused by the peer: {reason}")

    def evict(self) -> None:
        """
        Drop this connection, still in its handshake, to make room for a
        newer one (admission control drops the oldest first).  Admission
        control summarises evictions, so this logs nothing itself.
        """
        if self.peerNodeID is not None or self._refused:
            return
        self._refused = True
        self._cancelDeadline()
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def authenticationFailed(self, why: str) -> None:
        """
        The link was refused before the peer was authenticated (a hook for
        subclasses; the refusal is already logged).
        """

    def _refuse(self, why: str) -> None:
        if not self._refused:
            self._refused = True
            _log.warn(
                "refused link from {peer}: {why}", peer=_describePeer(self.transport), why=why
            )
            self.authenticationFailed(why)
        self._cancelDeadline()
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def _handshakeTimedOut(self) -> None:
        self._deadline = None
        if self.peerNodeID is None and not self._refused:
            self._refuse(f"not authenticated within {self.handshakeTimeout:g} s")

    def handshakeCompleted(self) -> None:
        transport = self.transport
        if transport is None or getattr(transport, "disconnecting", False) or self._refused:
            return
        try:
            peerNodeID = checkPeer(
                transport, self.expectedNodeID, self.ownNodeID, trustMode=self.trustMode
            )
        except PeerAuthenticationError as e:
            self._refuse(str(e.args[0]) if e.args else str(e))
            return
        self._cancelDeadline()
        self.peerNodeID = peerNodeID
        if self.trustMode == NETWORK:
            # checkPeer has just read this certificate (Any: ITransport
            # declares no getPeerCertificate; the TLS transport has it).
            tls: Any = transport
            self.peerCertifiedName = certifiedCPName(tls.getPeerCertificate().to_cryptography())
        self.dataReceived = self.authenticatedDataReceived  # type: ignore[method-assign]
        self.linkAuthenticated(peerNodeID)

    def _tlsHandle(self) -> SSL.Connection | None:
        getHandle = getattr(self.transport, "getHandle", None)
        handle = getHandle() if getHandle is not None else None
        return handle if isinstance(handle, SSL.Connection) else None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        if self.peerNodeID is None and not self._refused:
            # The TLS layer reports a failed handshake here, with the
            # OpenSSL error; one line, no traceback.
            self._refused = True
            if isinstance(reason.value, SSL.Error):
                why = "TLS handshake failed: " + _describeTLSError(reason.value)
                handle = self._tlsHandle()
                if handle is not None and handle in _verifyFailures:
                    why += f" ({_verifyFailures.pop(handle)})"
            else:
                why = "connection closed before authentication: " + (
                    reason.getErrorMessage() or type(reason.value).__name__
                )
            _log.warn(
                "refused link from {peer}: {why}", peer=_describePeer(self.transport), why=why
            )
            self.authenticationFailed(why)


# -- addresses -----------------------------------------------------------------

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_FORMS = "host:port, [ipv6]:port or appn://<52-character node ID>@host:port"


def _checkPort(instance: LinkAddress, attribute: attrs.Attribute[int], port: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AddressError(f"port {port!r} is not between 1 and 65535")


def _checkHost(instance: LinkAddress, attribute: attrs.Attribute[str], host: str) -> None:
    if not isinstance(host, str) or not host:
        raise AddressError(f"host {host!r} is empty")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"host {host!r} is not a valid IPv6 address") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise AddressError(f"host {host!r} is not a valid host name or IPv4 address")


def _checkNodeID(instance: LinkAddress, attribute: attrs.Attribute[Any], nodeID: Any) -> None:
    if nodeID is not None and not isNodeID(nodeID):
        raise AddressError(f"node ID {nodeID!r} must be 52 lowercase base32 characters (a-z, 2-7)")


@attrs.frozen
class LinkAddress:
    """
    Where a neighbour listens, and optionally which node must answer there.
    """

    host: str = attrs.field(validator=_checkHost)
    port: int = attrs.field(validator=_checkPort)
    nodeID: str | None = attrs.field(default=None, validator=_checkNodeID)

    def __str__(self) -> str:
        hostPort = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.nodeID is None:
            return hostPort
        return f"appn://{self.nodeID}@{hostPort}"

    def clientEndpointString(self) -> str:
        """
        A Twisted client endpoint string for this address.
        """
        host = quoteStringArgument(self.host)
        return f"tcp:host={host}:port={self.port}"


def parseAddress(text: str) -> LinkAddress:
    """
    Parse C{host:port}, C{[v6]:port} or C{appn://<nodeid>@host:port}.

    @raise AddressError: naming the expected forms.
    """
    if not isinstance(text, str):
        raise AddressError(f"{text!r} is not a string; use {_FORMS}")
    rest = text
    nodeID: str | None = None
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme != "appn":
            raise AddressError(f"{text!r}: unknown scheme {scheme!r}; use {_FORMS}")
        nodeID, at, rest = rest.partition("@")
        if not at:
            raise AddressError(f"{text!r}: no node ID before '@'; use {_FORMS}")
        if not isNodeID(nodeID):
            raise AddressError(
                f"{text!r}: the node ID must be 52 lowercase base32 characters "
                f"(a-z, 2-7); use {_FORMS}"
            )
    if rest.startswith("["):
        host, close, portText = rest[1:].partition("]")
        if not close or not portText.startswith(":") or ":" not in host:
            raise AddressError(f"{text!r}: use {_FORMS}")
        portText = portText[1:]
    else:
        host, colon, portText = rest.rpartition(":")
        if not colon or ":" in host:
            raise AddressError(f"{text!r}: use {_FORMS} (IPv6 addresses go in brackets)")
    if not _PORT_RE.fullmatch(portText):
        raise AddressError(f"{text!r}: port {portText!r} is not a number; use {_FORMS}")
    try:
        return LinkAddress(host, int(portText), nodeID)
    except AddressError as e:
        raise AddressError(f"{text!r}: {e.args[0]}; use {_FORMS}") from None
