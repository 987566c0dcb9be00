"""
Tests for L{appnpy.link.identity}: node IDs, the key and certificate files, CP
names, signatures and the network CA.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from appnpy.errors import (
    IdentityError,
    InvalidCPName,
    KeyPermissionsError,
    MissingKeyError,
)
from appnpy.link.identity import (
    Identity,
    createNetworkCA,
    defaultCPName,
    isNodeID,
    loadNetworkCA,
    loadOrCreateIdentity,
    nodeIDFromCertificate,
    nodeIDFromPublicKey,
    nodeIDFromSPKI,
    signNodeCertificate,
    validateCPName,
    verifySignature,
)

DAY = 86400.0


def utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class NodeIDTests(TestCase):
    """
    Node IDs are base32(SHA-256(SPKI)).
    """

    def test_format(self) -> None:
        """
        A node ID is 52 lowercase base32 characters.
        """
        nodeID = nodeIDFromPublicKey(Ed25519PrivateKey.generate().public_key())
        self.assertEqual(len(nodeID), 52)
        self.assertEqual(nodeID, nodeID.lower())
        self.assertTrue(set(nodeID) <= set("abcdefghijklmnopqrstuvwxyz234567"))
        self.assertTrue(isNodeID(nodeID))

    def test_derivation(self) -> None:
        """
        The node ID is the unpadded base32 of SHA-256 over the DER
        SubjectPublicKeyInfo, the same from key, SPKI and certificate.
        """
        identity = loadOrCreateIdentity(self.mktemp())
        spki = identity.privateKey.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        expected = base64.b32encode(hashlib.sha256(spki).digest()).decode().rstrip("=").lower()
        self.assertEqual(identity.nodeID, expected)
        self.assertEqual(identity.publicKeyBytes, spki)
        self.assertEqual(nodeIDFromSPKI(spki), expected)
        self.assertEqual(nodeIDFromCertificate(identity.certificate), expected)
        self.assertEqual(
            identity.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value,
            expected,
        )

    def test_isNodeIDRejectsNonCanonical(self) -> None:
        """
        Upper case, wrong lengths and non-zero trailing bits are not node IDs.
        """
        nodeID = nodeIDFromPublicKey(Ed25519PrivateKey.generate().public_key())
        self.assertFalse(isNodeID(nodeID.upper()))
        self.assertFalse(isNodeID(nodeID[:-1]))
        self.assertFalse(isNodeID(nodeID + "a"))
        self.assertFalse(isNodeID(nodeID[:-1] + "b"))
        self.assertFalse(isNodeID(None))


class IdentityFileTests(TestCase):
    """
    L{loadOrCreateIdentity} and the files in the data directory.
    """

    def test_sameDirectorySameID(self) -> None:
        """
        Loading the same data directory again gives the same node ID and
        certificate; another directory gives another ID.
        """
        dataDir = self.mktemp()
        first = loadOrCreateIdentity(dataDir)
        second = loadOrCreateIdentity(dataDir)
        self.assertEqual(first.nodeID, second.nodeID)
        self.assertEqual(first.certificate, second.certificate)
        self.assertNotEqual(loadOrCreateIdentity(self.mktemp()).nodeID, first.nodeID)

    def test_fileModes(self) -> None:
        """
        The data directory is 0700 and the key file 0600, whatever the umask.
        """
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        dataDir = self.mktemp()
        loadOrCreateIdentity(dataDir)
        self.assertEqual(stat.S_IMODE(os.stat(dataDir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(dataDir, "node.key")).st_mode), 0o600)
        self.assertEqual(sorted(os.listdir(dataDir)), ["node.crt", "node.key"])

    def test_keyIsPKCS8(self) -> None:
        """
        node.key is an unencrypted PKCS#8 PEM Ed25519 key.
        """
        dataDir = self.mktemp()
        identity = loadOrCreateIdentity(dataDir)
        with open(os.path.join(dataDir, "node.key"), "rb") as f:
            pem = f.read()
        self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----"))
        key = serialization.load_pem_private_key(pem, password=None)
        self.assertEqual(nodeIDFromPublicKey(key.public_key()), identity.nodeID)

    def test_groupReadableKeyRefused(self) -> None:
        """
        A key readable by group or others (chmod 644) is refused with an
        error naming the file and the fix.
        """
        dataDir = self.mktemp()
        loadOrCreateIdentity(dataDir)
        keyPath = os.path.join(dataDir, "node.key")
        for mode in (0o644, 0o640, 0o604):
            os.chmod(keyPath, mode)
            e = self.assertRaises(KeyPermissionsError, loadOrCreateIdentity, dataDir)
            self.assertIn(f"chmod 600 {keyPath}", str(e))
        os.chmod(keyPath, 0o600)
        loadOrCreateIdentity(dataDir)

    def test_certificateWithoutKey(self) -> None:
        """
        A certificate without its key is an error, not a new identity.
        """
        dataDir = self.mktemp()
        identity = loadOrCreateIdentity(dataDir)
        os.unlink(os.path.join(dataDir, "node.key"))
        e = self.assertRaises(MissingKeyError, loadOrCreateIdentity, dataDir)
        self.assertIn("node.key", str(e))
        self.assertFalse(os.path.exists(os.path.join(dataDir, "node.key")))
        with open(os.path.join(dataDir, "node.crt"), "rb") as f:
            self.assertEqual(
                nodeIDFromCertificate(x509.load_pem_x509_certificate(f.read())), identity.nodeID
            )

    def test_validityUsesReactorTime(self) -> None:
        """
        The certificate is valid from an hour before "now" for ten years,
        BasicConstraints CA=False.
        """
        now = 2_000_000_000.0
        identity = loadOrCreateIdentity(self.mktemp(), reactorSeconds=now)
        cert = identity.certificate
        self.assertEqual(cert.not_valid_before_utc, utc(now - 3600))
        self.assertEqual(cert.not_valid_after_utc, utc(now + 3650 * DAY))
        self.assertFalse(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertTrue(identity.isSelfSigned)

    def test_expiredCertificateReissued(self) -> None:
        """
        An expired (or nearly expired) self-signed certificate is re-issued
        for the same key: same node ID, new validity.
        """
        dataDir = self.mktemp()
        start = 1_000_000_000.0
        first = loadOrCreateIdentity(dataDir, reactorSeconds=start)
        # Still valid with more than 30 days left: kept.
        kept = loadOrCreateIdentity(dataDir, reactorSeconds=start + 3000 * DAY)
        self.assertEqual(kept.certificate, first.certificate)
        # Within 30 days of expiry: renewed.
        later = start + 3630 * DAY
        renewed = loadOrCreateIdentity(dataDir, reactorSeconds=later)
        self.assertEqual(renewed.nodeID, first.nodeID)
        self.assertNotEqual(renewed.certificate, first.certificate)
        self.assertEqual(renewed.certificate.not_valid_after_utc, utc(later + 3650 * DAY))
        # Long expired: renewed too, and written to disk.
        muchLater = start + 20000 * DAY
        again = loadOrCreateIdentity(dataDir, reactorSeconds=muchLater)
        self.assertEqual(again.nodeID, first.nodeID)
        self.assertEqual(loadOrCreateIdentity(dataDir, reactorSeconds=muchLater), again)

    def test_missingCertificateReissued(self) -> None:
        """
        With the key present and the certificate gone, a certificate is
        re-issued for the same node ID.
        """
        dataDir = self.mktemp()
        first = loadOrCreateIdentity(dataDir)
        os.unlink(os.path.join(dataDir, "node.crt"))
        self.assertEqual(loadOrCreateIdentity(dataDir).nodeID, first.nodeID)

    def test_certificateForAnotherKey(self) -> None:
        """
        A node.crt for another key is a loud error, not silently replaced.
        """
        dataDir = self.mktemp()
        loadOrCreateIdentity(dataDir)
        otherDir = self.mktemp()
        loadOrCreateIdentity(otherDir)
        os.replace(os.path.join(otherDir, "node.crt"), os.path.join(dataDir, "node.crt"))
        self.assertRaises(IdentityError, loadOrCreateIdentity, dataDir)

    def test_garbledKey(self) -> None:
        """
        An unreadable key file is an IdentityError, and is not replaced.
        """
        dataDir = self.mktemp()
        loadOrCreateIdentity(dataDir)
        keyPath = os.path.join(dataDir, "node.key")
        with open(keyPath, "wb") as f:
            f.write(b"not a key")
        self.assertRaises(IdentityError, loadOrCreateIdentity, dataDir)
        with open(keyPath, "rb") as f:
            self.assertEqual(f.read(), b"not a key")

    def test_identityRejectsMismatchedPair(self) -> None:
        """
        An Identity cannot be built from a key and someone else's
        certificate.
        """
        cert = loadOrCreateIdentity(self.mktemp()).certificate
        self.assertRaises(IdentityError, Identity, Ed25519PrivateKey.generate(), cert)


class CPNameTests(TestCase):
    """
    L{validateCPName} and L{defaultCPName}.
    """

    def test_valid(self) -> None:
        """
        Valid names are returned upper-cased.
        """
        self.assertEqual(validateCPName("LAB.ALPHA"), "LAB.ALPHA")
        self.assertEqual(validateCPName("lab.alpha"), "LAB.ALPHA")
        self.assertEqual(validateCPName("A.B"), "A.B")
        self.assertEqual(validateCPName("$NET#@12.@X9ABCDE"), "$NET#@12.@X9ABCDE")

    def test_invalid(self) -> None:
        """
        Invalid names raise InvalidCPName saying what is wrong.
        """
        for name, why in [
            ("LAB", "dots"),
            ("A.B.C", "dots"),
            (".ALPHA", "NETID part is empty"),
            ("LAB.", "NAME part is empty"),
            ("LABORATORY.A", "10 characters"),
            ("LAB.ALPHABETA", "9 characters"),
            ("1LAB.ALPHA", "starts with a digit"),
            ("LAB.9ALPHA", "starts with a digit"),
            ("LAB.AL-PHA", "contains '-'"),
            ("LAB.\u0131X", "contains"),
            ("LAB.ALPHA\n", "contains"),
        ]:
            e = self.assertRaises(InvalidCPName, validateCPName, name)
            self.assertIn(why, str(e), name)

    @given(
        st.from_regex(r"[A-Za-z$#@][A-Za-z0-9$#@]{0,7}", fullmatch=True),
        st.from_regex(r"[A-Za-z$#@][A-Za-z0-9$#@]{0,7}", fullmatch=True),
    )
    def test_validRoundTrip(self, netID: str, name: str) -> None:
        """
        Every valid name validates to its upper-case form, which is stable.
        """
        canonical = validateCPName(f"{netID}.{name}")
        self.assertEqual(canonical, f"{netID}.{name}".upper())
        self.assertEqual(validateCPName(canonical), canonical)

    @given(st.text(max_size=20) | st.from_regex(r"[a-z0-9.#]{1,19}", fullmatch=True))
    def test_anyString(self, text: str) -> None:
        """
        Any string either validates to a well-formed ASCII name or raises
        InvalidCPName.
        """
        try:
            canonical = validateCPName(text)
        except InvalidCPName:
            return
        self.assertRegex(canonical, r"\A[A-Z$#@][A-Z0-9$#@]{0,7}\.[A-Z$#@][A-Z0-9$#@]{0,7}\Z")
        self.assertEqual(canonical.lower(), text.lower())

    def test_default(self) -> None:
        """
        The default CP name is valid and derived from the node ID.
        """
        nodeID = nodeIDFromPublicKey(Ed25519PrivateKey.generate().public_key())
        name = defaultCPName(nodeID)
        self.assertEqual(name, "APPN.N" + nodeID[:7].upper())
        self.assertEqual(validateCPName(name), name)
        self.assertEqual(defaultCPName("2" * 52), "APPN.N2222222")


class SignatureTests(TestCase):
    """
    L{Identity.sign} and L{verifySignature}.
    """

    def setUp(self) -> None:
        self.identity = loadOrCreateIdentity(self.mktemp())

    def test_roundTrip(self) -> None:
        """
        A signature verifies with the node's SPKI.
        """
        signature = self.identity.sign(b"record")
        self.assertTrue(verifySignature(self.identity.publicKeyBytes, signature, b"record"))

    def test_tampered(self) -> None:
        """
        A changed message, signature or key does not verify.
        """
        signature = self.identity.sign(b"record")
        self.assertFalse(verifySignature(self.identity.publicKeyBytes, signature, b"recorD"))
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        self.assertFalse(verifySignature(self.identity.publicKeyBytes, flipped, b"record"))
        other = loadOrCreateIdentity(self.mktemp())
        self.assertFalse(verifySignature(other.publicKeyBytes, signature, b"record"))

    def test_onlyEd25519(self) -> None:
        """
        A valid signature by a non-Ed25519 key is not accepted.
        """
        key = generate_private_key(SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signature = key.sign(b"record", ECDSA(SHA256()))
        self.assertFalse(verifySignature(spki, signature, b"record"))

    @given(st.binary(max_size=100), st.binary(max_size=100), st.binary(max_size=100))
    def test_garbageNeverRaises(self, spki: bytes, signature: bytes, data: bytes) -> None:
        """
        Arbitrary bytes never raise, and never verify.
        """
        self.assertFalse(verifySignature(spki, signature, data))

    @given(st.binary(min_size=64, max_size=64), st.binary(max_size=100))
    def test_garbageSignatureRealKey(self, signature: bytes, data: bytes) -> None:
        """
        Random 64-byte signatures under a real key do not verify.
        """
        self.assertFalse(verifySignature(self.identity.publicKeyBytes, signature, data))

    def test_wrongTypes(self) -> None:
        """
        Non-bytes arguments give False, not an exception.
        """
        self.assertFalse(verifySignature(None, b"", b""))  # type: ignore[arg-type]
        self.assertFalse(verifySignature(self.identity.publicKeyBytes, "sig", b""))  # type: ignore[arg-type]


class NetworkCATests(TestCase):
    """
    The network CA: create, load, sign node certificates.
    """

    def test_createAndSign(self) -> None:
        """
        A CA-signed node keeps its node ID, its certificate is issued by the
        CA and verifies with it, and network-ca.crt is copied alongside.
        """
        base = self.mktemp()
        caDir, dataDir = os.path.join(base, "ca"), os.path.join(base, "node")
        createNetworkCA(caDir, "lab")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(caDir, "ca.key")).st_mode), 0o600)
        caKey, caCert = loadNetworkCA(caDir)
        self.assertTrue(caCert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        before = loadOrCreateIdentity(dataDir)
        signNodeCertificate(caDir, dataDir)
        after = loadOrCreateIdentity(dataDir)
        self.assertEqual(after.nodeID, before.nodeID)
        self.assertFalse(after.isSelfSigned)
        self.assertEqual(after.certificate.issuer, caCert.subject)
        after.certificate.verify_directly_issued_by(caCert)
        with open(os.path.join(dataDir, "network-ca.crt"), "rb") as f:
            self.assertEqual(x509.load_pem_x509_certificate(f.read()), caCert)

    def test_refuseExistingCA(self) -> None:
        """
        Creating a CA where one exists is refused and leaves it untouched.
        """
        caDir = self.mktemp()
        createNetworkCA(caDir, "LAB")
        key, cert = loadNetworkCA(caDir)
        self.assertRaises(IdentityError, createNetworkCA, caDir, "LAB")
        self.assertEqual(loadNetworkCA(caDir)[1], cert)

    def test_invalidNetID(self) -> None:
        """
        The CA's NETID must be a valid NETID.
        """
        self.assertRaises(InvalidCPName, createNetworkCA, self.mktemp(), "9LAB")

    def test_expiredCASignedCertificate(self) -> None:
        """
        An expired CA-signed certificate cannot be re-issued without the CA:
        the error says to run `appn ca sign`; an unexpired one is kept.
        """
        base = self.mktemp()
        caDir, dataDir = os.path.join(base, "ca"), os.path.join(base, "node")
        start = 1_000_000_000.0
        createNetworkCA(caDir, "LAB", reactorSeconds=start)
        loadOrCreateIdentity(dataDir, reactorSeconds=start)
        signNodeCertificate(caDir, dataDir, reactorSeconds=start)
        signed = loadOrCreateIdentity(dataDir, reactorSeconds=start + 3640 * DAY)
        self.assertFalse(signed.isSelfSigned)
        e = self.assertRaises(
            IdentityError, loadOrCreateIdentity, dataDir, reactorSeconds=start + 4000 * DAY
        )
        self.assertIn("appn ca sign", str(e))
        with open(os.path.join(dataDir, "node.crt"), "rb") as f:
            self.assertEqual(x509.load_pem_x509_certificate(f.read()), signed.certificate)
