"""
This node's own records: what it announces of itself and of its links, and
when.

Changes to the own records (a link up or down, a measurement that moved, a
configured characteristic, the attached end nodes) mark them dirty; they are
re-issued under a new RSN and flooded, damped to at most once per
C{damping} seconds, so a flapping link cannot flood the network.  A link
that goes down after being announced up is announced at once (sessions
are being routed over it): that costs at most one extra announcement per
damped one.  Every
C{refreshInterval} all own records are re-issued so no other node ages them
out; a link down longer than C{maxAge} stops being announced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from appnpy.cp._interfaces import ILinkRegistry
from appnpy.errors import ConfigurationError
from appnpy.link.identity import Identity
from appnpy.net.routing import LinkSetting, LinkSettings
from appnpy.net.topology._interfaces import IRelayLoad
from appnpy.net.topology.database import RecordStore
from appnpy.net.topology.flooding import Flooder
from appnpy.net.topology.measurement import DOWN_LINK_BODY, NodeLoad, OwnLink
from appnpy.net.topology.records import LINK, MAX_END_NODES, NODE, Key, TopologyRecord
from appnpy.net.topology.rsn import OwnRSN

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["OwnRecords"]


class OwnRecords:
    """
    Issues this node's node record and link records.

    @ivar active: whether changes are announced (the service is running).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        identity: Identity,
        name: str,
        store: RecordStore,
        flooder: Flooder,
        ownRSN: OwnRSN,
        stats: dict[str, int],
        changed: Callable[[], None],
        damping: float,
        maxAge: float,
        rttChange: float,
        resistance: int = 0,
        cds: bool = False,
        linkSettings: LinkSettings | None = None,
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.nodeID = identity.nodeID
        self.name = name
        self.store = store
        self.flooder = flooder
        self.ownRSN = ownRSN
        self.stats = stats
        self.changed = changed
        self.damping = damping
        self.maxAge = maxAge
        self.rttChange = rttChange
        #: The C{[link.<selector>]} settings of the config file.
        self.linkSettings = linkSettings or LinkSettings()
        #: Characteristics of this node's own record.
        self.resistance = resistance
        self.load = 0
        self.measuredLoad = NodeLoad()
        self.cds = cds
        self.endNodes: list[str] = []
        self.active = False
        self.links: dict[str, OwnLink] = {}
        #: Characteristics set at run time (management API, tests), by
        #: peer: they win over the config file's.
        self._linkConfig: dict[str, dict[str, int]] = {}
        self.dirty: set[Key] = set()
        self._lastAnnounce: float | None = None
        self._announceCall: IDelayedCall | None = None

    def start(self) -> None:
        self.active = True
        self.dirty.add((NODE, self.nodeID, ""))

    def stop(self) -> None:
        self.active = False
        if self._announceCall is not None and self._announceCall.active():
            self._announceCall.cancel()
        self._announceCall = None

    # -- changes ------------------------------------------------------------

    def linkUp(self, cp: ControlPoint, now: float) -> None:
        peer = cp.peerNodeID
        own = self.links.get(peer)
        first = not any(link.up for link in self.links.values())
        if own is None:
            own = self.links[peer] = OwnLink()
        setting = self._settingFor(cp)
        own.cost = setting.cost if setting.cost is not None else 0
        own.securityCap = setting.security
        own.linkUp(cp, now)
        self.markDirty((LINK, self.nodeID, peer))
        if first:
            # The first link after none: the others may have withdrawn our
            # records (tombstoned at their RSNs), so issue a newer node record.
            self.markDirty((NODE, self.nodeID, ""))

    def _settingFor(self, cp: ControlPoint) -> LinkSetting:
        """
        The cost and security configured for C{cp}'s link: set at run time,
        else from the config file's most specific section.
        """
        configured = self.linkSettings.lookup(cp.peerNodeID, cp.peerName, cp.address)
        cfg = self._linkConfig.get(cp.peerNodeID, {})
        return LinkSetting(
            cfg.get("cost", configured.cost), cfg.get("security", configured.security)
        )

    def linkDown(self, peer: str, now: float) -> None:
        own = self.links.get(peer)
        if not self.active or own is None or not own.up:
            return
        own.up = False
        own.downSince = now
        urgent = own.announced is not None and bool(own.announced.get("up"))
        self.markDirty((LINK, self.nodeID, peer), urgent=urgent)

    def ownSeen(self, key: Key) -> None:
        """
        A neighbour holds a version of our own record C{key} as new as ours:
        re-issue it (above the RSN already jumped past).
        """
        self.dirty.add(key)

    def setLinkCharacteristics(
        self, peer: str, cost: int | None = None, security: int | None = None
    ) -> None:
        cfg = self._linkConfig.setdefault(peer, {})
        own = self.links.get(peer)
        for name, value in (("cost", cost), ("security", security)):
            if value is None:
                continue
            if type(value) is not int or not 0 <= value <= 255:
                raise ConfigurationError(f"link {name} must be 0..255")
            cfg[name] = value
            if own is None:
                continue
            if name == "cost":
                own.cost = value
            else:
                # The announced level stays at most what the link provides.
                own.securityCap = value
        if own is not None:
            self.markDirty((LINK, self.nodeID, peer))

    def setNodeCharacteristics(
        self, resistance: int | None = None, load: int | None = None, cds: bool | None = None
    ) -> None:
        for name, value in (("resistance", resistance), ("load", load)):
            if value is not None:
                if type(value) is not int or not 0 <= value <= 255:
                    raise ConfigurationError(f"{name} must be 0..255")
                setattr(self, name, value)
        if cds is not None:
            self.cds = bool(cds)
        self.markDirty((NODE, self.nodeID, ""))

    def setAttachedEndNodes(self, ids: Iterable[str]) -> None:
        ends = sorted(set(ids))
        if len(ends) > MAX_END_NODES:
            self.log.warn(
                "{count} end nodes attached; only {max} are announced in the topology",
                count=len(ends),
                max=MAX_END_NODES,
            )
            ends = ends[:MAX_END_NODES]
        if ends != self.endNodes:
            self.endNodes = ends
            self.markDirty((NODE, self.nodeID, ""))

    # -- issuing ------------------------------------------------------------

    def markDirty(self, key: Key, urgent: bool = False) -> None:
        self.dirty.add(key)
        if not self.active:
            return
        if urgent and self._announceCall is not None:
            self._announceCall.cancel()
            self._announceCall = None
        if self._announceCall is not None:
            return
        now = self.reactor.seconds()
        delay = 0.0
        if self._lastAnnounce is not None and not urgent:
            delay = max(0.0, self._lastAnnounce + self.damping - now)
        self._announceCall = self.reactor.callLater(delay, self.announce)

    def _nodeBody(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": "network",
            "public_key": self.identity.publicKeyBytes,
            "resistance": self.resistance,
            "load": self.load,
            "cds": self.cds,
            "end_nodes": list(self.endNodes),
        }

    def announce(self) -> None:
        """
        Issue new versions of the dirty own records and flood them (damped:
        at most once per C{damping} seconds).
        """
        self._announceCall = None
        if not self.active:
            return
        self._lastAnnounce = self.reactor.seconds()
        dirty, self.dirty = self.dirty, set()
        self._originate(dirty)

    def _originate(self, keys: Iterable[Key]) -> None:
        entries = []
        now = self.reactor.seconds()
        for kind, _, subject in sorted(keys):
            if kind == NODE:
                body = self._nodeBody()
            elif subject in self.links:
                body = self.links[subject].body()
                self.links[subject].announced = body
            else:
                body = dict(DOWN_LINK_BODY)
            record = TopologyRecord.create(self.identity, kind, subject, self.ownRSN.next(), body)
            entries.append(self.store.apply(record, None, now))
            self.stats["originated"] += 1
        if entries:
            self.flooder.flood(entries, None, now)
            self.changed()

    def refresh(self) -> None:
        """
        Re-issue every own record, and stop announcing links that have been
        down longer than C{maxAge}.
        """
        now = self.reactor.seconds()
        for peer, own in list(self.links.items()):
            if not own.up and own.downSince is not None and now - own.downSince > self.maxAge:
                del self.links[peer]
                self.store.remove((LINK, self.nodeID, peer))
        keys = {(NODE, self.nodeID, "")} | {(LINK, self.nodeID, p) for p in self.links}
        self.dirty -= keys
        self._lastAnnounce = self.reactor.seconds()
        self._originate(keys)

    def measure(self, registry: ILinkRegistry) -> None:
        """
        Sample every own link that is up; re-announce those whose
        characteristics moved (see L{OwnLink.changed}).
        """
        now = self.reactor.seconds()
        for peer, own in self.links.items():
            cp = registry.links.get(peer)
            if cp is None or not own.up:
                continue
            own.sample(cp, now)
            if own.changed(self.rttChange):
                self.markDirty((LINK, self.nodeID, peer))

    def measureLoad(self, relay: IRelayLoad) -> None:
        """
        Sample the sessions C{relay} carries; re-issue the node record when
        the smoothed load moved far enough or fell back to 0 (see
        L{NodeLoad}).  A load set by L{setNodeCharacteristics} stays
        announced until the measurement next moves that far.
        """
        level = self.measuredLoad.sample(relay.sessionCount, relay.maxSessions)
        if level is not None and level != self.load:
            self.load = level
            self.markDirty((NODE, self.nodeID, ""))
