"""
One hierarchy of errors.  Each class docstring is what the user reads: the
problem and what to do next.  C{str()} of an instance adds the specifics.

On the wire, errors are never tracebacks: they are the stable reason codes in
L{Reason} (documented in docs/protocol.md).
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """
    Stable reason codes carried by session refusals (BIND answers), UNBIND and
    link refusals.  Values never change meaning; new ones may be added, and a
    receiver treats an unknown value as C{protocol-error}'s sibling: it logs the
    text and proceeds as for a refusal.
    """

    NORMAL = "normal"
    UNKNOWN_PLUGIN = "unknown-plugin"
    REFUSED_BY_PLUGIN = "refused-by-plugin"
    LIMIT_REACHED = "limit-reached"
    PROTOCOL_ERROR = "protocol-error"
    SHUTTING_DOWN = "shutting-down"
    LINK_FAILURE = "link-failure"
    TIMEOUT = "timeout"
    INCOMPATIBLE_VERSION = "incompatible-version"
    DUPLICATE_LINK = "duplicate-link"
    SELF_DIAL = "self-dial"
    BAD_SIGNATURE = "bad-signature"
    ABORTED = "aborted"
    BUSY = "busy"
    NO_ROUTE = "no-route"
    RATE_LIMITED = "rate-limited"
    NAME_NOT_CERTIFIED = "name-not-certified"
    AMBIGUOUS_NAME = "ambiguous-name"


class APPNError(Exception):
    """
    Something went wrong in appnpy.
    """

    def __str__(self) -> str:
        doc = " ".join((type(self).__doc__ or "").split())
        detail = super().__str__()
        return f"{doc} ({detail})" if detail else doc


class ConfigurationError(APPNError):
    """
    The node's configuration is invalid.  Fix the option or key named here and
    start again; `twist appnnode --help` and docs/configuration.md list them all.
    """

    def __str__(self) -> str:
        # The detail names the option or key and what is wrong with it; the
        # class's explanation would be the same long preamble before every
        # one, so it is shown only when there is no detail.
        return Exception.__str__(self) or super().__str__()


class InvalidCPName(ConfigurationError):
    """
    A CP name must be NETID.NAME: two parts of 1 to 8 characters each, letters,
    digits, $, # or @, not starting with a digit (for example LAB.ALPHA).
    """

    def __str__(self) -> str:
        # Here the class's text is the rule the name broke: worth showing.
        return APPNError.__str__(self)


class IdentityError(APPNError):
    """
    The node's identity (its key and certificate in the data directory) could
    not be used.
    """


class KeyPermissionsError(IdentityError):
    """
    The node's private key file is readable by other users, so it may have been
    copied.  Run `chmod 600` on it (and check who could have read it) before
    starting the node again.
    """


class MissingKeyError(IdentityError):
    """
    The data directory has a certificate but no private key.  appnpy will not
    silently make a new identity: restore the key file from your backup, or
    move the data directory aside to start as a brand-new node.
    """


class DataDirectoryLocked(APPNError):
    """
    Another node is already running on this data directory.  Stop it first, or
    give this node its own directory with --data-dir.
    """


class AddressError(ConfigurationError):
    """
    A peer address must be host:port or appn://<nodeid>@host:port.
    """


class LinkError(APPNError):
    """
    A link to a neighbour failed.
    """


class PeerAuthenticationError(LinkError):
    """
    The neighbour's TLS certificate was refused: it is not the node that was
    asked for, or it does not meet this node's trust mode.  Check the node ID
    in the address, or (in network trust mode) that both nodes' certificates
    are signed by the same network CA.
    """


class ProtocolError(LinkError):
    """
    The neighbour sent something that breaks the appnpy protocol; the link or
    session was closed.  If the neighbour runs another implementation, check it
    with `appn probe`.
    """


class LinkRefused(LinkError):
    """
    The neighbour refused the link.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class StreamLimitExceeded(LinkError):
    """
    Too many streams are open or pending on this link; wait for some to close.
    """


class GoAwayReceived(LinkError):
    """
    The neighbour is shutting the link down and accepts no new sessions on it.
    """


class SessionError(APPNError):
    """
    A session could not be opened, or ended abnormally.
    """


class SessionRefused(SessionError):
    """
    The other node refused to open the session.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SessionClosed(SessionError):
    """
    The session was closed.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class NoSuchNode(SessionError):
    """
    No link to that node exists.  Connect to it first (`appn connect`), or use
    its full node ID, a unique prefix of it, or its CP name.
    """


class AmbiguousName(NoSuchNode):
    """
    Several nodes claim that name (open trust mode lets any node call itself
    anything); the name is not resolved to one of them.  Name the node by its
    node ID or an appn://<nodeid>@ address: `appn locate` lists the claimants.
    """


class NoRoute(SessionError):
    """
    There is no route to the destination: no path of active links reaches
    it, or every path crosses a link or node the class of service excludes.
    `appn topology` shows what this node can reach, and `appn route DEST
    --cos NAME` what the class of service excludes.
    """


class DestinationGone(NoRoute):
    """
    The topology database holds no link of the destination any more (none
    it announces, none announced to it) while this node still has links: it
    left the network or crashed.  A path switch gives up at once instead of
    waiting for a path to come back (one merely cut off by a partition is
    waited for).
    """


class ResourceNotFound(SessionError):
    """
    No node in the network answered for that resource name.  Check the name
    (`<kind>:<name>`, e.g. `files:music`) and that the node offering it is
    running and linked (`appn locate NAME`).
    """


class PluginError(APPNError):
    """
    A session plugin could not be loaded.  Fix or uninstall the distribution
    named here, or remove the plugin from the configuration.
    """
