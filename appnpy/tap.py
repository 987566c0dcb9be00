"""
C{twist appnnode}: command-line options and the service that runs a node.

Only this module (and the CLI) touches the global reactor.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from appnpy.errors import APPNError, ConfigurationError
from appnpy.interfaces import IPluginLifecycle
from appnpy.link.identity import loadOrCreateIdentity
from appnpy.link.tls import loadTrustPolicy
from appnpy.link.yamux import MuxConfig
from appnpy.net.peers import AdmissionControl, PeerManager
from appnpy.network import installNetworkServices
from appnpy.node import Node
from appnpy.ops.config import (
    DEFAULT_API,
    DEFAULT_MAX_PEERS,
    NodeConfig,
    resolveConfig,
)
from appnpy.ops.lockfile import DataDirectoryLock, lockDataDirectory
from appnpy.session.plugins import availablePlugins, loadPlugin

log = Logger(namespace="appnpy.tap")


class Options(usage.Options):
    """
    C{twist appnnode [options]}; every option may also be set in the config
    file (docs/configuration.md).
    """

    synopsis = "[options]"
    longdesc = (
        "Run an appnpy node in the foreground.  Values given here override the "
        "config file's [node] table."
    )
    optParameters = [
        ["config", "c", None, "Read settings from this TOML file."],
        ["data-dir", "d", None, "Data directory (default: $XDG_DATA_HOME/appnpy)."],
        ["name", "n", None, "CP name NETID.NAME (default: APPN.N<node ID prefix>)."],
        ["max-peers", None, None, f"Neighbours to keep linked (default: {DEFAULT_MAX_PEERS})."],
        ["role", None, None, "network or end (default: network)."],
        ["trust", None, None, "open or network (default: open)."],
        ["api", None, None, f"Management API endpoint, or 'none' (default: {DEFAULT_API})."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self["listen"] = []
        self["peers"] = []
        self["plugins"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        Server endpoint string to accept links on; repeatable
        (default: tcp:7700, all interfaces).
        """
        self["listen"].append(endpoint)

    def opt_peer(self, address: str) -> None:
        """
        Peer to dial at start: host:port or appn://<nodeid>@host:port; repeatable.
        """
        self["peers"].append(address)

    def opt_plugin(self, name: str) -> None:
        """
        Session plugin to enable; repeatable (default: every installed plugin).
        """
        self["plugins"].append(name)

    opt_l = opt_listen
    opt_p = opt_peer

    def postOptions(self) -> None:
        if self["max-peers"] is not None:
            try:
                self["max-peers"] = int(self["max-peers"])
            except ValueError:
                raise usage.UsageError(
                    f"--max-peers {self['max-peers']!r} is not a whole number"
                ) from None

    def commandLine(self) -> dict[str, Any]:
        """
        The values given on the command line, by config key.
        """
        return {
            "config": self["config"],
            "data-dir": self["data-dir"],
            "name": self["name"],
            "listen": list(self["listen"]),
            "peers": list(self["peers"]),
            "max-peers": self["max-peers"],
            "role": self["role"],
            "trust": self["trust"],
            "api": self["api"],
            "plugins": list(self["plugins"]),
        }


class _DataDirectoryLockService(Service):
    """
    Holds the data directory lock until the node has stopped.
    """

    def __init__(self, lock: DataDirectoryLock) -> None:
        self.lock = lock

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self.lock.release()


class _AdmissionService(Service):
    def __init__(self, admission: AdmissionControl) -> None:
        self.admission = admission

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self.admission.stop()


def loadPlugins(config: NodeConfig) -> list[Any]:
    """
    Load and configure the enabled plugins (all installed ones when the
    configuration names none).
    """
    installed = availablePlugins()
    names = list(config.plugins) if config.plugins is not None else sorted(installed)
    for name in config.pluginSections:
        if name not in installed:
            raise ConfigurationError(
                f"{config.configFile}: section [plugin.{name}] is for a plugin that is not "
                f"installed (installed: {', '.join(sorted(installed)) or 'none'})"
            )
    plugins = []
    for name in names:
        plugin = loadPlugin(name)
        plugin.configure(dict(config.pluginSections.get(name, {})))
        plugins.append(plugin)
    return plugins


def buildService(config: NodeConfig, reactor: Any) -> MultiService:
    """
    The whole node as one service: the data directory lock, the node with
    its peer manager and (if installed) its management API.

    @raise APPNError: for anything the operator must fix.
    """
    lock = lockDataDirectory(config.dataDir)
    try:
        identity = loadOrCreateIdentity(config.dataDir, reactor.seconds())
        trust = loadTrustPolicy(config.trust, config.dataDir)
        plugins = loadPlugins(config)
        node = Node(
            reactor,
            identity,
            name=config.name,
            role=config.role,
            trust=trust,
            listen=config.listen,
            muxConfig=MuxConfig(
                keepaliveInterval=config.keepaliveInterval,
                keepaliveTimeout=config.keepaliveTimeout,
            ),
        )
        for plugin in plugins:
            node.addSessionPlugin(plugin)
            if IPluginLifecycle.providedBy(plugin):
                plugin.attach(node)
        installNetworkServices(
            node,
            stateDir=config.dataDir,
            cds=config.cds,
            cdsNode=config.cdsNode,
            cosSections=config.cosSections,
        )
        admission = AdmissionControl(reactor)
        node.admission = admission
        peers = PeerManager(
            node, dataDir=config.dataDir, bootstrap=config.peers, maxPeers=config.maxPeers
        )
        peers.setName("peers")  # type: ignore[no-untyped-call]  # unannotated Twisted method
        peers.setServiceParent(node)  # type: ignore[no-untyped-call]  # unannotated Twisted method
        node.peerManager = peers  # type: ignore[attr-defined]
        if config.api is not None:
            management = _managementService(node, config)
            if management is not None:
                management.setName("management")
                management.setServiceParent(node)
    except BaseException:
        lock.release()
        raise
    top = MultiService()
    # The node is not named: a service name would overwrite its CP name.
    top.node = node  # type: ignore[attr-defined]
    # Children stop in reverse order: the node first, the lock last.
    lockService = _DataDirectoryLockService(lock)
    lockService.setName("lock")  # type: ignore[no-untyped-call]  # unannotated Twisted method
    lockService.setServiceParent(top)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    _AdmissionService(admission).setServiceParent(top)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    node.setServiceParent(top)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    return top


def _managementService(node: Node, config: NodeConfig) -> IService | None:
    try:
        from appnpy.ops.management import ManagementService
    except ImportError:
        log.info("no management API in this installation (appnpy.ops.management is missing)")
        return None
    assert config.api is not None  # the only caller checks it
    service: IService = ManagementService(node, config.api, config.dataDir, config.asDict())
    return service


def _exitCleanlyOnSignals(reactor: Any) -> None:
    # twist re-raises a terminating signal after the reactor stops, so the
    # process would die "by SIGTERM"; a graceful stop is a success, exit 0.
    def handler(signum: int, frame: object) -> None:
        log.info("received signal {signal}, stopping", signal=signal.Signals(signum).name)
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def makeService(options: Options) -> MultiService:
    """
    The dropin's entry point.  A problem the operator must fix ends the
    process with one line, C{ERROR: ...}, and exit status 1.
    """
    from twisted.internet import reactor

    try:
        config = resolveConfig(options.commandLine())
        service = buildService(config, reactor)
    except APPNError as e:
        raise SystemExit(f"ERROR: {e}") from None
    reactor.addSystemEventTrigger("after", "startup", _exitCleanlyOnSignals, reactor)
    service.node.whenStarted().addErrback(_startFailed, reactor)  # type: ignore[attr-defined]
    return service


def _startFailed(failure: Any, reactor: Any) -> None:
    # The node could not listen (a port in use, no permission...): say so in
    # one line and end the process with a failure status, not run on idle.
    # twist redirects sys.stderr into the log; the operator's terminal is
    # the process's real standard error.
    print(
        f"ERROR: the node could not start: {failure.getErrorMessage()}. "
        "Free the port or choose another with --listen.",
        file=sys.__stderr__,
        flush=True,
    )

    def exitFailed() -> None:
        sys.stdout.flush()
        os._exit(1)

    reactor.addSystemEventTrigger("after", "shutdown", exitFailed)
    reactor.stop()
