"""
The echo and ping session plugins: the smallest useful plugins, the probe for
interop checks, and the template to copy when writing a plugin.

A plugin is an object providing L{appnpy.api.ISessionPlugin}; its protocols
are ordinary Twisted protocols.  Publish it under the entry-point group
C{appnpy.session_plugins} (see this distribution's pyproject.toml) and enable
it by name in the node's configuration.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver

from appnpy.api import ConfigurationError, ISessionInfo, ISessionPlugin, implementer

__version__ = "0.1.0"


class Echo(Protocol):
    """
    Sends back every byte it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None  # set by makeConnection before any data
        self.transport.write(data)


class Pong(LineReceiver):
    """
    Answers each line C{PING <token>} with C{PONG <token>}; anything else
    with C{ERROR}.  Shows that a stock Twisted C{LineReceiver} runs over a
    session unchanged.
    """

    MAX_LENGTH = 1024

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"PING "):
            self.sendLine(b"PONG " + line[5:])  # type: ignore[no-untyped-call]  # unannotated Twisted method
        else:
            self.sendLine(b"ERROR expected PING <token>")  # type: ignore[no-untyped-call]  # unannotated Twisted method


@implementer(ISessionPlugin)
class SimplePlugin:
    """
    A plugin that answers every session with a protocol from C{protocol},
    configurable only in its session limit.
    """

    version = __version__
    defaultCOS = "interactive"

    def __init__(self, name: str, protocol: type[Protocol], sessionLimit: int = 64) -> None:
        self.name = name
        self.protocol = protocol
        self.sessionLimit = sessionLimit

    def configure(self, section: dict[str, Any]) -> None:
        for key, value in section.items():
            if key != "session-limit":
                raise ConfigurationError(f"[plugin.{self.name}] has no key {key!r}")
            if type(value) is not int or value < 0:
                raise ConfigurationError(
                    f"[plugin.{self.name}] session-limit must be a whole number >= 0"
                )
            self.sessionLimit = value

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Protocol:
        return self.protocol()


#: The objects the entry points name.
echoPlugin = SimplePlugin("echo", Echo)
pingPlugin = SimplePlugin("ping", Pong)
