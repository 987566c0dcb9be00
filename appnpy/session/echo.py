"""
The framework's own minimal C{echo} plugin: every session sends back what it
receives.

The prober's throwaway node needs one (the probed node opens an echo session
back to it) and so does the in-memory harness's default node; both use this
one, so the framework never depends on the echo plugin distribution.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from zope.interface import implementer

import appnpy
from appnpy.interfaces import ISessionInfo, ISessionPlugin

#: Bytes of a session an L{Echo} keeps, for the probe to check.
KEEP = 1024


class Echo(Protocol):
    """
    Sends back what it receives, and keeps the first L{KEEP} bytes in
    C{echoed}.
    """

    def __init__(self) -> None:
        self.echoed = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self.echoed) < KEEP:
            self.echoed += data[: KEEP - len(self.echoed)]
        assert self.transport is not None  # set by makeConnection before any data
        self.transport.write(data)


@implementer(ISessionPlugin)
class EchoPlugin:
    """
    A plugin answering every session with an L{Echo}.
    """

    version = appnpy.__version__
    defaultCOS = "interactive"

    def __init__(self, name: str = "echo", sessionLimit: int = 64) -> None:
        self.name = name
        self.sessionLimit = sessionLimit

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Echo:
        return Echo()
