"""
C{twist appnnode}: command-line options and the service that runs a node.

Only this module (and the CLI) touches the global reactor.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

import appnpy
from appnpy.errors import APPNError
from appnpy.node import deployNode
from appnpy.ops.config import (
    DEFAULT_API,
    DEFAULT_INBOUND_SLACK,
    DEFAULT_MAX_PEERS,
    resolveConfig,
)
from appnpy.ops.lockfile import dataDirectoryProblem

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
        [
            "max-peers",
            None,
            None,
            f"Neighbours to dial and keep linked, 1-1000 (default: {DEFAULT_MAX_PEERS}).",
        ],
        [
            "inbound-slack",
            None,
            None,
            "Inbound links accepted beyond --max-peers before newcomers are refused as "
            f"busy, 0-1000 (default: {DEFAULT_INBOUND_SLACK}).",
        ],
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

    def opt_version(self) -> None:
        """
        Print appnpy's version and exit.
        """
        print(f"appnpy {appnpy.__version__}")
        sys.exit(0)

    opt_l = opt_listen
    opt_p = opt_peer

    def postOptions(self) -> None:
        for option in ("max-peers", "inbound-slack"):
            if self[option] is not None:
                try:
                    self[option] = int(self[option])
                except ValueError:
                    raise usage.UsageError(
                        f"--{option} {self[option]!r} is not a whole number"
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
            "inbound-slack": self["inbound-slack"],
            "role": self["role"],
            "trust": self["trust"],
            "api": self["api"],
            "plugins": list(self["plugins"]),
        }


def _exitCleanlyOnSignals(reactor: Any) -> None:
    # twist re-raises a terminating signal after the reactor stops, so the
    # process would die "by SIGTERM"; a graceful stop is a success, exit 0.
    def handler(signum: int, frame: object) -> None:
        log.info("received signal {signal}, stopping", signal=signal.Signals(signum).name)
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def makeService(options: Options) -> IService:
    """
    The dropin's entry point.  A problem the operator must fix ends the
    process with one line, C{ERROR: ...}, and exit status 1.
    """
    from twisted.internet import reactor

    try:
        config = resolveConfig(options.commandLine(), reactor)
        service = deployNode(reactor, config)
    except APPNError as e:
        raise SystemExit(f"ERROR: {e}") from None
    except OSError as e:
        dataDir = options["data-dir"] or (e.filename and os.path.dirname(str(e.filename)))
        raise SystemExit(f"ERROR: {dataDirectoryProblem(str(dataDir or '.'), e)}") from None
    reactor.addSystemEventTrigger("after", "startup", _exitCleanlyOnSignals, reactor)
    service.whenStarted().addErrback(_startFailed, reactor)
    return service


def _startFailed(failure: Any, reactor: Any) -> None:
    # The node or its management API could not listen (a port in use, no
    # permission...): say so in one line and end the process with a failure
    # status, not run on idle.  twist redirects sys.stderr into the log; the
    # operator's terminal is the process's real standard error.
    error = failure.value
    # An APPNError's own words, without its class's general preamble.
    why = str(error.args[0]) if isinstance(error, APPNError) and error.args else str(error)
    why = why.rstrip(".")
    if "management API" in why:
        advice = "Free the port, choose another with --api, or turn the API off with --api none."
    else:
        advice = "Free the port or choose another with --listen."
    print(f"ERROR: the node could not start: {why}. {advice}", file=sys.__stderr__, flush=True)

    def exitFailed() -> None:
        sys.stdout.flush()
        os._exit(1)

    if not reactor.running:
        # Failed while starting, before the reactor runs (a port is taken
        # at once): nothing listens and nothing was announced yet, so exit
        # now, before the node would log its readiness.
        exitFailed()
    reactor.addSystemEventTrigger("after", "shutdown", exitFailed)
    reactor.stop()
