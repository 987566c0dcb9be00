"""
Every public interface of appnpy.

A session plugin provides L{ISessionPlugin}.  The node hands each session to an
ordinary Twisted protocol whose transport provides L{ISession}: a full
C{ITransport} with push-producer and consumer backpressure, so a
C{LineReceiver}, AMP or any other protocol runs over an appnpy session
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    import argparse

    from prometheus_client.registry import CollectorRegistry


class ISessionInfo(Interface):
    """
    What both ends know about a session once it is bound.
    """

    sessionID = Attribute(
        "C{str}: the global session ID, 32 lowercase hex digits chosen at "
        "random by the node that opened the session."
    )
    plugin = Attribute("C{str}: the plugin (APPN mode) name, e.g. C{'echo'}.")
    cos = Attribute("C{str}: the class of service the session was bound with.")
    parameters = Attribute(
        "C{dict}: the plugin parameters sent by the opener (CBOR values: "
        "str, bytes, int, float, bool, None, lists and str-keyed dicts)."
    )
    direction = Attribute(
        "C{'inbound'} when the peer opened the session, C{'outbound'} when this node did."
    )
    localNodeID = Attribute("C{str}: this node's node ID.")
    peerNodeID = Attribute(
        "C{str}: the node ID of the other end, authenticated by its TLS certificate."
    )
    peerName = Attribute("C{str}: the other end's CP name (C{NETID.NAME}).")


class ISession(ISessionInfo, ITransport, IPushProducer, IConsumer):
    """
    The transport of a session plugin's protocol.

    Writes are flow controlled end to end: when the peer stops reading, a
    producer registered with C{registerProducer} is paused.  Calling
    C{pauseProducing} stops delivery to C{dataReceived} and, once the stream
    window is used up, stops the sender.  C{loseConnection} sends everything
    already written, then UNBIND with reason C{normal}; the other side's
    protocol sees C{connectionLost} with a L{appnpy.errors.SessionClosed}
    carrying the reason.
    """

    def loseConnectionWithReason(reason: str, detail: str = "") -> None:
        """
        Like C{loseConnection}, but UNBIND carries C{reason} (one of
        L{appnpy.errors.Reason}) and a short human-readable C{detail}.
        """

    def abortConnection() -> None:
        """
        Close at once: unsent data is discarded and the stream is reset.
        """


class ISessionPlugin(Interface):
    """
    A session plugin: an application that runs over appnpy sessions.

    Plugins are found through the entry-point group C{appnpy.session_plugins}
    (the entry point names the plugin object) or added with
    C{Node.addSessionPlugin}.  The echo plugin (C{plugins/echo}) is the
    template.
    """

    name = Attribute(
        "C{str}: the plugin (mode) name sent in BIND; lowercase letters, "
        "digits and C{-}, at most 32 characters."
    )
    version = Attribute("C{str}: the plugin's version, shown by C{appn plugins}.")
    defaultCOS = Attribute(
        "C{str}: the class of service used when the opener names none "
        "(C{'interactive'}, C{'batch'}, C{'secure'} or a configured one)."
    )
    sessionLimit = Attribute(
        "C{int}: the most sessions of this plugin this node accepts with any "
        "one neighbour at a time.  Offered in Hello; the lower of the two "
        "nodes' limits applies to the pair (APPN CNOS)."
    )

    def configure(section: dict[str, object]) -> None:
        """
        Called once before the node starts, with this plugin's section of the
        node configuration (empty when there is none).

        @raise appnpy.errors.ConfigurationError: for an unknown key or bad
            value, naming it.
        """

    def resources() -> list[str]:
        """
        The resource names this plugin offers on this node, each
        C{'<kind>:<name>'} (e.g. C{'echo:LAB.ALPHA'}).
        """

    def buildProtocol(session: ISessionInfo) -> object:
        """
        Make the protocol for a session a peer opened.

        @return: an C{IProtocol} provider, which will be connected to an
            L{ISession} transport; or C{None} to refuse the session with
            reason C{refused-by-plugin}.
        @raise appnpy.errors.SessionRefused: to refuse with a specific reason.
        """


class INode(Interface):
    """
    The part of a running node that plugins and embedding code use.
    """

    nodeID = Attribute("C{str}: this node's node ID.")
    name = Attribute("C{str}: this node's CP name.")
    reactor = Attribute(
        "The reactor the node runs on: schedule with it (C{callLater}), run "
        "blocking work in a thread pool of your own with "
        "C{deferToThreadPool(node.reactor, pool, ...)}."
    )
    publicKey = Attribute(
        "C{bytes}: the node's public key (Ed25519, DER SubjectPublicKeyInfo); "
        "the node ID is derived from it."
    )
    centralDirectory = Attribute(
        "C{str | None}: the node ID of the central directory server this node "
        "registers with (its own when it is one), or C{None} when there is none."
    )

    def addSessionPlugin(plugin: ISessionPlugin) -> None:
        """
        Enable a plugin object directly (tests and embeddings); it is
        checked with C{verifyObject}.
        """

    def openSession(
        destination: str,
        plugin: str,
        protocolFactory: object,
        parameters: dict[str, object] | None = None,
        cos: str | None = None,
    ) -> object:
        """
        Open a session to C{destination} (a node ID, unique prefix or CP name
        of a neighbour) for C{plugin}.

        @param protocolFactory: called with the L{ISessionInfo} once the peer
            accepts; returns the C{IProtocol} to connect.
        @return: a C{Deferred} firing with the connected protocol, or failing
            with L{appnpy.errors.SessionRefused} (with its reason code).
        """

    def dataDirectory(plugin: str) -> str | None:
        """
        A private directory for C{plugin}'s state files
        (C{<data dir>/plugins/<plugin>}, created with mode 0700), or C{None}
        when the node keeps no state on disk.
        """

    def sign(context: str, data: bytes) -> bytes:
        """
        Sign C{data} with the node's identity key, for C{context} (a short
        name of what is signed, e.g. C{"appnpy-files-hit-v1"}): the signature
        is over C{context} and C{data} together, so it never verifies for
        another context nor as any of the protocol's own signatures.  Check
        it with L{appnpy.api.verifyNodeSignature}.
        """

    def search(
        kind: str,
        keywords: list[str],
        maxResults: int = 100,
        onResults: Callable[[list[dict[str, Any]]], object] | None = None,
    ) -> object:
        """
        Search the network by keyword: every node the search reaches asks its
        plugins that offer C{kind} resources and provide
        L{IKeywordSearchable}.

        @param onResults: called with each batch of results as it arrives
            (this node's own first).
        @return: a C{Deferred} firing with every result (each a dict with the
            answering node's ID under C{"node"}, as reported by the
            directory: sign what you need to trust) once every node
            answered, C{maxResults} arrived or the search timed out.
        """

    def locate(name: str) -> object:
        """
        The nodes that offer the resource C{name} (C{<kind>:<name>}).

        @return: a C{Deferred} firing with their node IDs (several when
            several nodes offer it), or failing with
            L{appnpy.errors.ResourceNotFound}.
        """

    def resolveNode(name: str) -> str:
        """
        The node ID for C{name}: a node ID, a unique prefix of one or a CP
        name of a neighbour or of a node in the topology database.

        @raise appnpy.errors.NoSuchNode: if no known node matches exactly
            one way.
        """

    def nodeName(nodeID: str) -> str:
        """
        The CP name of C{nodeID} as far as this node knows it, or C{""}.
        """

    def neighbours() -> list[str]:
        """
        The node IDs of this node's current neighbours (active links).
        """


class IPluginLifecycle(Interface):
    """
    Optional, for a session plugin that needs the running node (to open
    sessions of its own, offer resources that change, serve API routes...).

    The composition root calls L{attach} once the node is built, before it
    starts, and L{detach} once it has stopped.
    """

    def attach(node: INode) -> None:
        """
        The plugin now belongs to C{node}; keep it to use later.
        """

    def detach() -> None:
        """
        The node has stopped: release whatever the plugin holds (threads,
        files, timers).
        """


# -- directory hooks for plugins ----------------------------------------------


class IKeywordSearchable(Interface):
    """
    Optional, for a session plugin whose resources can be searched by
    keyword: the directory asks it (on every node a keyword search for one of
    its kinds reaches) when it provides this interface, and only then.
    """

    def search(keywords: list[str]) -> list[dict[str, object]]:
        """
        The plugin's matches for C{keywords} (at most 16, each at most 64
        characters): plain CBOR data (text-keyed maps of text, bytes,
        numbers, lists), at most 4 KiB encoded each.  The directory adds this
        node's ID under C{"node"}.
        """


class IResourceDirectory(Interface):
    """
    Provided by the node a plugin is attached to (L{IPluginLifecycle.attach}):
    check with C{IResourceDirectory.providedBy(node)}.
    """

    def resourcesChanged(plugin: ISessionPlugin) -> None:
        """
        C{plugin.resources()} now answers differently: the directory reads it
        again, registers the new set with the network-node server (end node)
        or the central directory server, so other nodes can locate them.
        """


# -- plugin extension points: the operator's side ------------------------------
#
# Each is optional; the node and the appn command ask C{IFoo.providedBy(plugin)}
# and use only what a plugin declares.  The echo plugin (plugins/echo) shows
# all four; docs/writing-plugins.md explains them.


class IAPIClient(Interface):
    """
    What an C{appn} command contributed by a plugin gets to talk to the
    running node's management API (paths below C{/api/v1/}, token included).
    """

    json = Attribute("C{bool}: the user asked for JSON output (C{appn --json}).")

    def get(path: str, query: dict[str, str] | None = None) -> object:
        """
        C{GET /api/v1/<path>}; answers the decoded JSON.

        @raise appnpy.errors.APPNError: when no node runs or it answers an
            error (the C{appn} dispatcher prints it as C{ERROR: ...}).
        """

    def post(path: str, body: dict[str, object] | None = None) -> object:
        """
        C{POST /api/v1/<path>} with the JSON object C{body}; answers the
        decoded JSON.
        """


class ICommandPlugin(Interface):
    """
    A plugin that adds subcommands to C{appn}.  The command line finds it
    through the plugin's entry point, without a running node; a plugin that
    fails to load or to add its commands is skipped.
    """

    def addCommands(
        add: Callable[
            [str, str, Callable[[argparse.Namespace, IAPIClient, TextIO], int]],
            argparse.ArgumentParser,
        ],
    ) -> None:
        """
        Add commands by calling C{add(name, help, run)}, which answers the
        command's C{argparse.ArgumentParser} (to add arguments to).

        C{run(args, api, out)} runs the command: C{args} is the parsed
        C{argparse.Namespace}, C{api} an L{IAPIClient}, C{out} the text
        stream to print to; it answers the exit status.  Names taken by
        C{appn}'s own commands or another plugin are refused.
        """


class IAPIRoutesPlugin(Interface):
    """
    A plugin that serves management API routes, below
    C{/api/v1/plugins/<plugin name>/}: token-protected and answering errors
    as JSON like every other route.
    """

    def apiRoutes() -> Mapping[tuple[str, str], Callable[[Any], object]]:
        """
        The routes by (HTTP method, path below the plugin's prefix), e.g.
        C{{("GET", "stats"): handler}}.

        A handler is called with an L{appnpy.api.PluginRequest} and answers
        a JSON value, or an awaitable of one; it raises
        L{appnpy.api.APIError} for an error answer.
        """


class IStatusPagePlugin(Interface):
    """
    A plugin that adds a section to the node's HTML status page.
    """

    def pageSection() -> object:
        """
        An L{appnpy.api.PageSection} (a title, column headers and rows of
        plain values, which the page escapes), or C{None} for no section
        now.  Plugins never write HTML: the page stays free of injection.
        Asked again for every snapshot of the live page (every 2 s while
        one is open), so keep it cheap; the section is live.
        """


class IMetricsPlugin(Interface):
    """
    A plugin that exports Prometheus metrics with the node's.
    """

    def registerMetrics(registry: CollectorRegistry) -> None:
        """
        Register collectors or metrics in C{registry}, the node's
        C{prometheus_client.CollectorRegistry}; called once per node that
        serves metrics (several nodes may share a process and a plugin
        object, so prefer a custom collector reading the plugin's state).
        """
