"""
Node identity: the key pair, the certificate, the node ID and the CP name.

A node's identity lives in its data directory::

    node.key          PKCS#8 PEM Ed25519 private key, mode 0600, never rewritten
    node.crt          PEM X.509 certificate for that key (self-signed, or signed
                      by the network CA with `appn ca sign`)
    network-ca.crt    the network CA's certificate (network trust mode only)

The B{node ID} is the lowercase, unpadded base32 of SHA-256 over the DER
SubjectPublicKeyInfo of the node's public key (52 characters).  It depends on
the key only, so renewing the certificate keeps the ID.

A network CA lives in its own directory (C{ca.key}, mode 0600, and C{ca.crt});
see L{createNetworkCA} and L{signNodeCertificate}.

In C{network} trust mode the CA binds the node's B{CP name} to its key: the
certificate it issues carries a subjectAltName URI C{urn:appn:cp:NETID.NAME}
(L{CP_NAME_URI}), and L{certifiedCPName} reads it back.  A node's Hello, its
topology node record and its resource names must agree with that name, so
only the holder of the key the CA named can be C{NETID.NAME}.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
from typing import Any

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID
from twisted.logger import Logger

from appnpy.errors import (
    IdentityError,
    InvalidCPName,
    KeyPermissionsError,
    MissingKeyError,
)
from appnpy.link.statefile import writeAtomically

log = Logger()

KEY_FILE = "node.key"
CERTIFICATE_FILE = "node.crt"
NETWORK_CA_FILE = "network-ca.crt"
CA_KEY_FILE = "ca.key"
CA_CERTIFICATE_FILE = "ca.crt"

# Certificates are renewed this long before they expire.
RENEW_BEFORE = datetime.timedelta(days=30)
# Validity starts a little in the past so that a peer whose clock is slightly
# behind ours still accepts a freshly made certificate.
BACKDATE = datetime.timedelta(hours=1)
VALIDITY = datetime.timedelta(days=3650)
#: The subjectAltName URI prefix under which the network CA certifies a CP name.
CP_NAME_URI = "urn:appn:cp:"
#: Largest certificate a node record or a resource record may carry (DER).
MAX_CERTIFICATE_SIZE = 2048

_NODE_ID_RE = re.compile(r"[a-z2-7]{52}")
_CP_PART_RE = re.compile(r"[A-Z$#@][A-Z0-9$#@]{0,7}")
_CP_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$#@")
# Only ASCII letters are folded: str.upper() would turn some non-ASCII
# characters (for example the dotless i) into valid ASCII letters.
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


# -- node IDs ------------------------------------------------------------------


def nodeIDFromSPKI(spkiDER: bytes) -> str:
    """
    The node ID for a public key given as DER SubjectPublicKeyInfo bytes.
    """
    digest = hashlib.sha256(spkiDER).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def _spki(publicKey: Any) -> bytes:
    return bytes(
        publicKey.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


def nodeIDFromPublicKey(publicKey: Any) -> str:
    """
    The node ID for a C{cryptography} public key object.
    """
    return nodeIDFromSPKI(_spki(publicKey))


def nodeIDFromCertificate(cert: x509.Certificate) -> str:
    """
    The node ID for the public key in C{cert}.
    """
    return nodeIDFromPublicKey(cert.public_key())


def isNodeID(text: object) -> bool:
    """
    Is C{text} a node ID in canonical form (52 lowercase base32 characters
    encoding exactly 32 bytes)?
    """
    if not isinstance(text, str) or not _NODE_ID_RE.fullmatch(text):
        return False
    # 52 characters carry 260 bits; the 4 bits past the digest must be zero,
    # or two spellings would name the same node.
    raw = base64.b32decode(text.upper() + "====")
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower() == text


# -- CP names ------------------------------------------------------------------


def _checkCPPart(name: str, label: str, part: str) -> None:
    if not part:
        raise InvalidCPName(f"{name!r}: the {label} part is empty")
    if len(part) > 8:
        raise InvalidCPName(
            f"{name!r}: the {label} part {part!r} has {len(part)} characters (at most 8)"
        )
    bad = sorted({c for c in part if c not in _CP_ALLOWED})
    if bad:
        raise InvalidCPName(
            f"{name!r}: the {label} part {part!r} contains {''.join(bad)!r} "
            "(allowed: A-Z, 0-9, $, #, @)"
        )
    if part[0].isdigit():
        raise InvalidCPName(f"{name!r}: the {label} part {part!r} starts with a digit")


def validateCPName(name: str) -> str:
    """
    Check an APPN CP name C{NETID.NAME} and return it in canonical (upper)
    case.

    @raise InvalidCPName: saying what is wrong with C{name}.
    """
    if not isinstance(name, str):
        raise InvalidCPName(f"{name!r} is not a string")
    canonical = name.translate(_ASCII_UPPER)
    parts = canonical.split(".")
    if len(parts) != 2:
        raise InvalidCPName(f"{name!r} has {len(parts) - 1} dots; it must be exactly NETID.NAME")
    _checkCPPart(name, "NETID", parts[0])
    _checkCPPart(name, "NAME", parts[1])
    assert _CP_PART_RE.fullmatch(parts[0]) and _CP_PART_RE.fullmatch(parts[1])
    return canonical


def defaultCPName(nodeID: str) -> str:
    """
    The CP name a node uses when none is configured: C{APPN.N} followed by
    the first 7 characters of its node ID.
    """
    return validateCPName("APPN.N" + nodeID[:7].upper())


# -- signatures ----------------------------------------------------------------


def verifySignature(spkiDER: bytes, signature: bytes, data: bytes) -> bool:
    """
    Does C{signature} over C{data} verify with the Ed25519 public key given as
    DER SubjectPublicKeyInfo?  Never raises: anything malformed is C{False}.
    """
    if not all(isinstance(v, bytes) for v in (spkiDER, signature, data)):
        return False
    try:
        publicKey = serialization.load_der_public_key(spkiDER)
    except Exception:
        return False
    if not isinstance(publicKey, Ed25519PublicKey):
        return False
    try:
        publicKey.verify(signature, data)
    except InvalidSignature:
        return False
    except Exception:
        return False
    return True


#: Prefixes what a plugin signs through the node (L{pluginSignedBytes}): the
#: protocol's own signed bytes are all CBOR maps, and these begin with a byte
#: no CBOR map begins with, so neither verifies as the other.
PLUGIN_SIGNATURE_PREFIX = b"appnpy-plugin-signature-v1\x00"


def pluginSignedBytes(context: str, data: bytes) -> bytes:
    """
    The bytes a node signs for a plugin: the prefix, C{context} and C{data}.

    @raise ValueError: for an empty C{context}, one over 64 characters or
        one holding NUL (it would run into the data).
    """
    if not isinstance(context, str) or not 0 < len(context) <= 64 or "\x00" in context:
        raise ValueError("a signature context is 1 to 64 characters, without NUL")
    if not isinstance(data, bytes):
        raise TypeError("only bytes are signed")
    return PLUGIN_SIGNATURE_PREFIX + context.encode("utf-8") + b"\x00" + data


def verifyNodeSignature(
    nodeID: str, publicKey: bytes, context: str, data: bytes, signature: bytes
) -> bool:
    """
    Did node C{nodeID} sign C{data} for C{context}?  True only when
    C{publicKey} (DER SubjectPublicKeyInfo) is the key C{nodeID} is derived
    from and C{signature} verifies with it.  Never raises.
    """
    if not isinstance(publicKey, bytes) or not isinstance(nodeID, str):
        return False
    if nodeIDFromSPKI(publicKey) != nodeID:
        return False
    try:
        signed = pluginSignedBytes(context, data)
    except (TypeError, ValueError):
        return False
    return verifySignature(publicKey, signature, signed)


def _checkKeyMatchesCertificate(
    instance: Identity, attribute: attrs.Attribute[x509.Certificate], cert: x509.Certificate
) -> None:
    if _spki(cert.public_key()) != _spki(instance.privateKey.public_key()):
        raise IdentityError(
            "the certificate does not belong to the private key (node ID "
            f"{nodeIDFromCertificate(cert)} in the certificate, "
            f"{nodeIDFromPublicKey(instance.privateKey.public_key())} from the key)"
        )


def _checkEd25519(instance: Identity, attribute: attrs.Attribute[Any], key: object) -> None:
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"the node key must be Ed25519, not {type(key).__name__}")


@attrs.frozen
class Identity:
    """
    A node's key pair and certificate.

    @ivar nodeID: the node ID derived from the public key.
    @ivar publicKeyBytes: the DER SubjectPublicKeyInfo of the public key.
    """

    privateKey: Ed25519PrivateKey = attrs.field(validator=_checkEd25519, repr=False, eq=False)
    certificate: x509.Certificate = attrs.field(validator=_checkKeyMatchesCertificate)
    publicKeyBytes: bytes = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: _spki(self.privateKey.public_key()), takes_self=True),
        repr=False,
    )
    nodeID: str = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: nodeIDFromSPKI(self.publicKeyBytes), takes_self=True),
    )

    def sign(self, data: bytes) -> bytes:
        """
        Sign C{data} with the node key (Ed25519, 64 bytes).
        """
        return self.privateKey.sign(data)

    @property
    def isSelfSigned(self) -> bool:
        """
        Is the certificate self-signed (as opposed to signed by a network CA)?
        """
        return _isSelfSigned(self.certificate)


# -- files ---------------------------------------------------------------------


def _now(reactorSeconds: float | None) -> datetime.datetime:
    if reactorSeconds is not None:
        return datetime.datetime.fromtimestamp(reactorSeconds, datetime.UTC)
    # The wall clock is used only here, for certificate validity dates, when
    # the caller has no reactor time to give (for example the `appn ca` CLI).
    return datetime.datetime.now(datetime.UTC)


def _ensureDirectory(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        # makedirs honours the umask, which could only make it stricter; be
        # explicit anyway.
        os.chmod(path, 0o700)


def _checkKeyPermissions(keyPath: str) -> None:
    mode = os.stat(keyPath).st_mode & 0o777
    if mode & 0o077:
        raise KeyPermissionsError(
            f"{keyPath} has mode {mode:04o}; fix it with: chmod 600 {keyPath}"
        )


def _readPrivateKey(keyPath: str) -> Ed25519PrivateKey:
    _checkKeyPermissions(keyPath)
    try:
        with open(keyPath, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"cannot read the private key {keyPath}: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{keyPath} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _writePrivateKey(keyPath: str, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    writeAtomically(keyPath, pem, 0o600)


def _readCertificate(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except ValueError as e:
        raise IdentityError(f"cannot read the certificate {path}: {e}") from e


def _writeCertificate(path: str, cert: x509.Certificate) -> None:
    writeAtomically(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _isSelfSigned(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _nodeCertificate(
    publicKey: Ed25519PublicKey,
    issuerKey: Ed25519PrivateKey,
    issuerName: x509.Name | None,
    now: datetime.datetime,
    notAfter: datetime.datetime | None = None,
    cpName: str | None = None,
) -> x509.Certificate:
    nodeID = nodeIDFromPublicKey(publicKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, nodeID)])
    end = now + VALIDITY
    if notAfter is not None:
        end = min(end, notAfter)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuerName if issuerName is not None else subject)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if issuerName is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuerKey.public_key()),
            critical=False,
        )
    if cpName is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(CP_NAME_URI + validateCPName(cpName))]
            ),
            critical=False,
        )
    return builder.sign(issuerKey, algorithm=None)


def _needsRenewal(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc > now or cert.not_valid_after_utc - RENEW_BEFORE <= now


def generateIdentity(reactorSeconds: float | None = None) -> Identity:
    """
    A new identity held only in memory (for the test harness and for
    C{appn probe}'s throwaway identity); nothing is written to disk.
    """
    key = Ed25519PrivateKey.generate()
    return Identity(key, _nodeCertificate(key.public_key(), key, None, _now(reactorSeconds)))


def loadOrCreateIdentity(
    dataDir: str | os.PathLike[str], reactorSeconds: float | None = None
) -> Identity:
    """
    Load the node's identity from C{dataDir}, creating it on first start.

      - neither C{node.key} nor C{node.crt}: a new Ed25519 key and a
        self-signed certificate are made;
      - C{node.key} readable by group or others: L{KeyPermissionsError};
      - C{node.crt} without C{node.key}: L{MissingKeyError} (no silent new
        identity);
      - a self-signed certificate that is missing, expired, not yet valid or
        expiring within 30 days is re-issued for the same key (same node ID);
      - a CA-signed certificate is never replaced here; an expired one is an
        L{IdentityError} asking for `appn ca sign`.

    @param reactorSeconds: "now", from C{reactor.seconds()}; the wall clock
        if not given.
    """
    directory = os.fspath(dataDir)
    _ensureDirectory(directory)
    keyPath = os.path.join(directory, KEY_FILE)
    certPath = os.path.join(directory, CERTIFICATE_FILE)
    now = _now(reactorSeconds)

    keyExists = os.path.lexists(keyPath)
    certExists = os.path.lexists(certPath)

    if not keyExists:
        if certExists:
            raise MissingKeyError(f"{certPath} exists but {keyPath} does not")
        key = Ed25519PrivateKey.generate()
        _writePrivateKey(keyPath, key)
        cert = _nodeCertificate(key.public_key(), key, None, now)
        _writeCertificate(certPath, cert)
        identity = Identity(key, cert)
        log.info("created a new identity {nodeID} in {dir}", nodeID=identity.nodeID, dir=directory)
        return identity

    key = _readPrivateKey(keyPath)
    if certExists:
        cert = _readCertificate(certPath)
        if _spki(cert.public_key()) != _spki(key.public_key()):
            raise IdentityError(
                f"{certPath} is for node {nodeIDFromCertificate(cert)} but {keyPath} "
                f"is the key of node {nodeIDFromPublicKey(key.public_key())}; restore the "
                "matching files, or delete node.crt to re-issue it for the key"
            )
        if not _needsRenewal(cert, now):
            return Identity(key, cert)
        if not _isSelfSigned(cert):
            if now < cert.not_valid_after_utc and now >= cert.not_valid_before_utc:
                log.warn(
                    "the CA-signed certificate {path} expires on {date}; re-sign it "
                    "with `appn ca sign`",
                    path=certPath,
                    date=cert.not_valid_after_utc.isoformat(),
                )
                return Identity(key, cert)
            raise IdentityError(
                f"{certPath} is signed by the network CA and is not valid now "
                f"(valid {cert.not_valid_before_utc.isoformat()} to "
                f"{cert.not_valid_after_utc.isoformat()}); re-sign it with `appn ca sign`"
            )
        log.info("re-issuing the certificate {path}", path=certPath)
    cert = _nodeCertificate(key.public_key(), key, None, now)
    _writeCertificate(certPath, cert)
    return Identity(key, cert)


# -- network CA ----------------------------------------------------------------


def createNetworkCA(
    caDir: str | os.PathLike[str], netID: str, reactorSeconds: float | None = None
) -> None:
    """
    Create a network CA (C{ca.key}, mode 0600, and C{ca.crt}) in C{caDir}.

    @raise IdentityError: if a CA already exists there.
    @raise InvalidCPName: if C{netID} is not a valid NETID.
    """
    netID = validateCPName(f"{netID}.CA").split(".")[0]
    directory = os.fspath(caDir)
    _ensureDirectory(directory)
    keyPath = os.path.join(directory, CA_KEY_FILE)
    certPath = os.path.join(directory, CA_CERTIFICATE_FILE)
    for path in (keyPath, certPath):
        if os.path.lexists(path):
            raise IdentityError(f"{path} already exists; refusing to replace a network CA")
    now = _now(reactorSeconds)
    key = Ed25519PrivateKey.generate()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, netID),
            x509.NameAttribute(NameOID.COMMON_NAME, f"appnpy network CA {netID}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, algorithm=None)
    )
    _writePrivateKey(keyPath, key)
    _writeCertificate(certPath, cert)


def loadNetworkCA(
    caDir: str | os.PathLike[str],
) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """
    Load the network CA's key and certificate from C{caDir}.
    """
    directory = os.fspath(caDir)
    keyPath = os.path.join(directory, CA_KEY_FILE)
    certPath = os.path.join(directory, CA_CERTIFICATE_FILE)
    if not os.path.lexists(keyPath):
        if os.path.lexists(certPath):
            raise MissingKeyError(f"{certPath} exists but {keyPath} does not")
        raise IdentityError(f"no network CA in {directory}; create one with `appn ca create`")
    key = _readPrivateKey(keyPath)
    if not os.path.lexists(certPath):
        raise IdentityError(f"{keyPath} exists but {certPath} does not")
    cert = _readCertificate(certPath)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise IdentityError(f"{certPath} does not belong to {keyPath}")
    return key, cert


def signNodeCertificate(
    caDir: str | os.PathLike[str],
    dataDir: str | os.PathLike[str],
    reactorSeconds: float | None = None,
    cpName: str | None = None,
) -> None:
    """
    Replace the node's C{node.crt} in C{dataDir} with one for the same public
    key, issued and signed by the network CA in C{caDir}, and copy the CA
    certificate into C{dataDir} as C{network-ca.crt}.

    C{cpName} is the CP name the CA certifies for the node (its NETID must be
    the CA's); a node runs in network trust mode only with a certified name.

    The node's public key is taken from C{node.crt} if present, else from
    C{node.key}; the private key is not needed, so the CA operator may work
    on a copy of the node's certificate.
    """
    caKey, caCert = loadNetworkCA(caDir)
    directory = os.fspath(dataDir)
    keyPath = os.path.join(directory, KEY_FILE)
    certPath = os.path.join(directory, CERTIFICATE_FILE)
    publicKey: Any
    if os.path.lexists(certPath):
        publicKey = _readCertificate(certPath).public_key()
        if os.path.lexists(keyPath):
            nodeKey = _readPrivateKey(keyPath)
            if _spki(nodeKey.public_key()) != _spki(publicKey):
                raise IdentityError(f"{certPath} does not belong to {keyPath}")
    elif os.path.lexists(keyPath):
        publicKey = _readPrivateKey(keyPath).public_key()
    else:
        raise IdentityError(f"{directory} has no node identity; start the node once to create it")
    if not isinstance(publicKey, Ed25519PublicKey):
        raise IdentityError(f"the node key in {directory} is not Ed25519")
    now = _now(reactorSeconds)
    cert = issueNodeCertificate(caKey, caCert, publicKey, cpName, now)
    _writeCertificate(certPath, cert)
    _writeCertificate(os.path.join(directory, NETWORK_CA_FILE), caCert)


def _caNetID(caCert: x509.Certificate) -> str | None:
    values = caCert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else None


def issueNodeCertificate(
    caKey: Ed25519PrivateKey,
    caCert: x509.Certificate,
    publicKey: Ed25519PublicKey,
    cpName: str | None,
    now: datetime.datetime,
) -> x509.Certificate:
    """
    A certificate for C{publicKey} signed by the network CA, certifying
    C{cpName} (whose NETID must be the CA's) when given.

    @raise IdentityError: if C{cpName} is outside the CA's network.
    """
    if cpName is not None:
        cpName = validateCPName(cpName)
        netID = _caNetID(caCert)
        if netID is not None and cpName.split(".")[0] != netID:
            raise IdentityError(
                f"the CA of network {netID} cannot certify {cpName} (another NETID)"
            )
    return _nodeCertificate(
        publicKey,
        caKey,
        caCert.subject,
        now,
        notAfter=caCert.not_valid_after_utc,
        cpName=cpName,
    )


def certifiedCPName(cert: x509.Certificate) -> str | None:
    """
    The CP name the certificate's issuer certified (its subjectAltName URI
    C{urn:appn:cp:NETID.NAME}), or C{None} if it names none or several.
    Whether the issuer is to be trusted is the caller's check.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    names = [
        uri[len(CP_NAME_URI) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(CP_NAME_URI)
    ]
    if len(names) != 1:
        return None
    try:
        canonical = validateCPName(names[0])
    except InvalidCPName:
        return None
    return canonical if canonical == names[0] else None


def verifyCertifiedName(
    certDER: object, caCert: x509.Certificate, spkiDER: bytes, now: float
) -> str | None:
    """
    The CP name that C{certDER} certifies for the key C{spkiDER}, if it is a
    certificate for that key, signed by C{caCert} and valid at C{now}
    (seconds); else C{None}.  Never raises: anything malformed is C{None}.

    This is how a node checks a name another node claims in a record: the
    record carries the owner's certificate and the CA vouches for the name.
    """
    if not isinstance(certDER, bytes) or len(certDER) > MAX_CERTIFICATE_SIZE:
        return None
    try:
        cert = x509.load_der_x509_certificate(certDER)
        if _spki(cert.public_key()) != spkiDER:
            return None
        cert.verify_directly_issued_by(caCert)
        when = _now(now)
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            return None
    except Exception:
        return None
    return certifiedCPName(cert)


def certificateBytes(cert: x509.Certificate) -> bytes:
    """
    The DER encoding of C{cert}, as node and resource records carry it.
    """
    return cert.public_bytes(serialization.Encoding.DER)
