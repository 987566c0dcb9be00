"""
Hostile nodes against relays and routed-session ends: a neighbour that
writes BINDs by hand (claiming another origin, unsigned, signed by the wrong
key, replayed, from identities it makes up) and an origin that never runs
its end-to-end TLS.  Each is a real node of the harness with a real key:
its link is authenticated, its BINDs are real messages; what it says in
them is the lie.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.python.failure import Failure

from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import Message, SessionOpen, encodeMessage
from appnpy.link.identity import Identity, generateIdentity
from appnpy.node import Node
from appnpy.session.adjacent import newSessionID
from appnpy.session.bind import signBind
from appnpy.testing import MemoryNetwork

__all__ = ["BindSender", "CapturingRelay", "makeBind"]


def makeBind(
    route: list[str],
    signer: Identity | None,
    now: float,
    publicKey: bytes | None = None,
    **fields: Any,
) -> SessionOpen:
    """
    A routed BIND for C{route} (origin C{route[0]} unless C{fields} says
    otherwise), signed by C{signer} at time C{now} (unsigned if L{None});
    C{publicKey} replaces the key the BIND carries after signing.
    """
    values: dict[str, Any] = dict(
        session_id=newSessionID(),
        origin=route[0],
        destination=route[-1],
        plugin="echo",
        cos="interactive",
        window=256 * 1024,
        route=route,
    )
    values.update(fields)
    req = SessionOpen(**values)
    if signer is not None:
        req = signBind(req, signer.publicKeyBytes, signer.sign, now)
    if publicKey is not None:
        req = attrs.evolve(req, public_key=publicKey)
    return req


class BindSender:
    """
    A node that sends hand-made BINDs to a neighbour and keeps the streams
    it gets accepted without ever starting TLS on them (an origin that
    holds what a relay gives it and never authenticates).
    """

    def __init__(self, net: MemoryNetwork, node: Node) -> None:
        self.net = net
        self.node = node
        #: Streams of accepted BINDs, left open and silent.
        self.held: list[Any] = []

    def send(self, via: Node, req: SessionOpen, flush: bool = True) -> list[Message | Failure]:
        """
        Write C{req} on a new stream to neighbour C{via}; returns the list
        the answer will be appended to (filled once the network is flushed).
        """
        stream = self.node.links[via.nodeID].mux.openStream()
        answers: list[Message | Failure] = []

        def answered(msg: Message, leftover: bytes) -> None:
            answers.append(msg)
            if msg.typeName == "SessionAccept":
                self.held.append(stream)
            else:
                stream.loseConnection()

        stream.attachProtocol(BindReader(answered, answers.append))
        stream.write(encodeMessage(req))
        if flush:
            self.net.flush()
        return answers

    def sybils(self, count: int) -> list[Identity]:
        """
        C{count} fresh identities: origins the hostile node makes up, each
        with a valid key of its own.
        """
        return [generateIdentity(self.net.clock.seconds()) for _ in range(count)]


class CapturingRelay:
    """
    A relay that records every BIND it relays (a hostile relay on an honest
    route keeps them to replay later).
    """

    def __init__(self, node: Node) -> None:
        assert node.relay is not None
        self.captured: list[SessionOpen] = []
        relay = node.relay
        honest = relay.bindReceived

        def record(cp: Any, stream: Any, req: SessionOpen) -> None:
            self.captured.append(req)
            honest(cp, stream, req)

        relay.bindReceived = record  # type: ignore[method-assign]
