"""
Where the characteristics route selection weighs come from: the security
level a link's actual protection earns, the per-link C{[link.<selector>]}
settings of the config file, and the mapping of a node's measured load to
the 0..255 of its node record.

Security levels reuse APPN's scale (0..255, higher is better protected).
Every link is mutual TLS 1.3, so the level is earned by what the handshake
proved, not by what the operator claims: L{linkSecurity} maps the
negotiated cipher's key size and whether the peer's certificate was issued
by the network CA to a level, and a configured C{security} can only lower
that (L{LinkSettings.securityFor} takes the minimum).  Configuring a link
higher than its protection would let an operator's typo route C{secure}
sessions over a link that does not deserve it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from appnpy.errors import AddressError, ConfigurationError, InvalidCPName
from appnpy.link.identity import isNodeID, validateCPName
from appnpy.link.tls import parseAddress

__all__ = [
    "SECURITY_UNKNOWN",
    "SECURITY_TLS13_128",
    "SECURITY_TLS13_256",
    "SECURITY_CA_128",
    "SECURITY_CA_256",
    "MAX_LEVEL",
    "LINK_DEFAULT",
    "linkSecurity",
    "LinkSetting",
    "LinkSettings",
    "parseLinkSections",
    "loadLevel",
]

#: A link whose protection could not be read (APPN's "nonsecure").
SECURITY_UNKNOWN = 1
#: TLS 1.3 with a 128-bit AEAD (AES-128-GCM/CCM); the peer self-certified (open trust).
SECURITY_TLS13_128 = 128
#: TLS 1.3 with a 256-bit AEAD (AES-256-GCM, ChaCha20-Poly1305); open trust.
SECURITY_TLS13_256 = 160
#: TLS 1.3, 128-bit AEAD, the peer's certificate issued by the network CA.
SECURITY_CA_128 = 192
#: TLS 1.3, 256-bit AEAD, the peer's certificate issued by the network CA.
SECURITY_CA_256 = 224
#: The highest value of every 0..255 characteristic.
MAX_LEVEL = 255
#: The selector of the section that applies to links no other section names.
LINK_DEFAULT = "*"

_LINK_KEYS = ("cost", "security")


def linkSecurity(protocol: str | None, cipherBits: int | None, caVerified: bool) -> int:
    """
    The security level a link's TLS session earns.

    @param protocol: the negotiated protocol version name (C{"TLSv1.3"}).
    @param cipherBits: the symmetric key size of the negotiated cipher.
    @param caVerified: whether the peer's certificate was verified against
        the network CA (C{network} trust mode: every link that comes up is).
    """
    if protocol != "TLSv1.3" or cipherBits is None or cipherBits < 128:
        return SECURITY_UNKNOWN
    if caVerified:
        return SECURITY_CA_256 if cipherBits >= 256 else SECURITY_CA_128
    return SECURITY_TLS13_256 if cipherBits >= 256 else SECURITY_TLS13_128


def loadLevel(sessions: float, capacity: int) -> int:
    """
    A node's load as its node record announces it: the share of the relay's
    session capacity in use, scaled to 0..255 (255 when the relay would
    refuse the next BIND as C{limit-reached}).
    """
    if capacity <= 0:
        return MAX_LEVEL
    return min(MAX_LEVEL, max(0, round(MAX_LEVEL * sessions / capacity)))


@attrs.frozen
class LinkSetting:
    """
    What one C{[link.<selector>]} section configures; C{None}: not set here.
    """

    cost: int | None = None
    security: int | None = None


@attrs.frozen
class LinkSettings:
    """
    The C{[link.<selector>]} sections, by kind of selector.  The most
    specific section that names a link wins, key by key: node ID, then CP
    name, then the address this node dialled, then C{[link."*"]}.
    """

    byNodeID: Mapping[str, LinkSetting] = attrs.field(factory=dict)
    byName: Mapping[str, LinkSetting] = attrs.field(factory=dict)
    byAddress: Mapping[tuple[str, int], LinkSetting] = attrs.field(factory=dict)
    default: LinkSetting = LinkSetting()

    def _matches(self, peerNodeID: str, peerName: str, address: str) -> list[LinkSetting]:
        found = []
        if peerNodeID in self.byNodeID:
            found.append(self.byNodeID[peerNodeID])
        if peerName:
            try:
                canonical = validateCPName(peerName)
            except InvalidCPName:
                canonical = ""
            if canonical in self.byName:
                found.append(self.byName[canonical])
        hostPort = _hostPort(address)
        if hostPort is not None and hostPort in self.byAddress:
            found.append(self.byAddress[hostPort])
        found.append(self.default)
        return found

    def lookup(self, peerNodeID: str, peerName: str, address: str) -> LinkSetting:
        """
        The settings for the link to C{peerNodeID}: each key from the most
        specific section that sets it.
        """
        found = self._matches(peerNodeID, peerName, address)
        cost = next((s.cost for s in found if s.cost is not None), None)
        security = next((s.security for s in found if s.security is not None), None)
        return LinkSetting(cost, security)


def _hostPort(address: str) -> tuple[str, int] | None:
    if not address:
        return None
    try:
        parsed = parseAddress(address)
    except AddressError:
        return None
    return (parsed.host.lower(), parsed.port)


def _level(where: str, key: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_LEVEL:
        raise ConfigurationError(f"{where}: {key} must be a whole number 0..{MAX_LEVEL}")
    return value


def parseLinkSections(sections: Mapping[str, Mapping[str, Any]], path: str = "") -> LinkSettings:
    """
    The C{[link.<selector>]} tables of a config file, checked.  A selector
    is a node ID, a CP name (C{NETID.NAME}, quoted in TOML), an address
    this node dials (C{host:port}, quoted), or C{"*"} for every other link.

    @raise ConfigurationError: naming the section and key.
    """
    byNodeID: dict[str, LinkSetting] = {}
    byName: dict[str, LinkSetting] = {}
    byAddress: dict[tuple[str, int], LinkSetting] = {}
    default = LinkSetting()
    prefix = f"{path}: " if path else ""
    for selector, section in sections.items():
        where = f"{prefix}[link.{selector!r}]" if "." in selector else f"{prefix}[link.{selector}]"
        if not isinstance(section, Mapping):
            raise ConfigurationError(f"{where} must be a table")
        unknown = sorted(set(section) - set(_LINK_KEYS))
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown key {unknown[0]!r} (expected {', '.join(_LINK_KEYS)})"
            )
        setting = LinkSetting(
            cost=_level(where, "cost", section["cost"]) if "cost" in section else None,
            security=(
                _level(where, "security", section["security"]) if "security" in section else None
            ),
        )
        if selector == LINK_DEFAULT:
            default = setting
        elif isNodeID(selector):
            byNodeID[selector] = setting
        elif ":" in selector:
            hostPort = _hostPort(selector)
            if hostPort is None:
                raise ConfigurationError(
                    f"{where}: not a node ID, CP name or host:port address to select a link by"
                )
            byAddress[hostPort] = setting
        else:
            try:
                byName[validateCPName(selector)] = setting
            except InvalidCPName:
                raise ConfigurationError(
                    f"{where}: not a node ID, CP name (NETID.NAME) or host:port address "
                    f'to select a link by, nor "{LINK_DEFAULT}"'
                ) from None
    return LinkSettings(byNodeID, byName, byAddress, default)
