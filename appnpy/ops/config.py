"""
The node's configuration: defaults, the TOML config file and the command
line, merged and validated into one L{NodeConfig}.

The file has one C{[node]} table whose keys are the long command-line options
(C{data-dir}, C{name}, C{listen}, C{peers}, C{max-peers}, C{inbound-slack},
C{role}, C{trust},
C{api}, C{plugins}) plus file-only tuning keys (C{keepalive-interval},
C{keepalive-timeout}, C{suspect-timeout-min}, C{suspect-dead-factor}, C{cds},
C{cds-node}, the path-switch keys), one C{[plugin.<name>]} table per
session plugin, handed to that plugin's C{configure}, one C{[cos.<name>]}
table per class of service defined or redefined here, and one
C{[link.<selector>]} table per link (or neighbour) whose cost or security
level is configured.  An unknown key or table is an error
naming it and the file (Tahoe's C{_common_valid_config}); a value given on the
command line overrides the file's.  docs/configuration.md documents every key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.endpoints import serverFromString

from appnpy import ROLES
from appnpy.errors import AddressError, ConfigurationError
from appnpy.link.identity import validateCPName
from appnpy.link.tls import NETWORK, OPEN, parseAddress
from appnpy.net.peers import DEFAULT_SLACK
from appnpy.net.routing import ClassOfService, LinkSettings, parseCOSTables, parseLinkSections

#: The default port of the node's links.
DEFAULT_PORT = 7700
DEFAULT_LISTEN = f"tcp:{DEFAULT_PORT}"
#: The default endpoint of the management API: loopback only.
DEFAULT_API = "tcp:7701:interface=127.0.0.1"
DEFAULT_MAX_PEERS = 8
MAX_MAX_PEERS = 1000
#: Inbound links accepted beyond max-peers before newcomers are refused as
#: busy: room for nodes that dial this one (a node in the middle of a line
#: dials one neighbour and is dialled by the next).
DEFAULT_INBOUND_SLACK = DEFAULT_SLACK
#: The value of C{api} that turns the management API off.
API_OFF = "none"

#: Keys of the C{[node]} table and their TOML types.
NODE_KEYS: dict[str, tuple[type, ...]] = {
    "data-dir": (str,),
    "name": (str,),
    "listen": (str, list),
    "peers": (list,),
    "max-peers": (int,),
    "inbound-slack": (int,),
    "role": (str,),
    "trust": (str,),
    "api": (str,),
    "plugins": (list,),
    "keepalive-interval": (int, float),
    "keepalive-timeout": (int, float),
    "suspect-timeout-min": (int, float),
    "suspect-dead-factor": (int, float),
    "cds": (bool,),
    "cds-node": (str,),
    "path-switch": (bool,),
    "path-switch-timeout": (int, float),
    "path-switch-progress-timeout": (int, float),
}


def defaultDataDir(environ: Mapping[str, str] | None = None) -> str:
    """
    C{$XDG_DATA_HOME/appnpy}, or C{~/.local/share/appnpy} when
    C{XDG_DATA_HOME} is unset or not absolute (as the XDG spec says).
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".local", "share")
    return os.path.join(base, "appnpy")


@attrs.frozen
class NodeConfig:
    """
    The effective, validated configuration of one node.

    @ivar plugins: the plugin names to enable, or L{None} for every
        installed one.
    @ivar pluginSections: the C{[plugin.<name>]} tables, by plugin name.
    @ivar api: the management API endpoint, or L{None} when turned off.
    """

    #: The data directory, or L{None} for a node that keeps nothing on
    #: disk (the in-memory harness, the prober).
    dataDir: str | None
    name: str | None = None
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    peers: tuple[str, ...] = ()
    maxPeers: int = DEFAULT_MAX_PEERS
    inboundSlack: int = DEFAULT_INBOUND_SLACK
    role: str = "network"
    trust: str = OPEN
    api: str | None = DEFAULT_API
    plugins: tuple[str, ...] | None = None
    pluginSections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    configFile: str | None = None
    keepaliveInterval: float = 15.0
    keepaliveTimeout: float = 60.0
    #: Failure detection (L{appnpy.link.yamux.MuxConfig.suspectMinimum}).
    suspectMinimum: float = 1.0
    deadFactor: float = 3.0
    #: Whether this network node is a central directory server.
    cds: bool = False
    #: The node ID or CP name of the central directory server to use.
    cdsNode: str | None = None
    #: Whether routed sessions opened here can switch paths (protocol 15.8).
    pathSwitch: bool = True
    #: Seconds a routed session may be without a path before it ends
    #: with no-route.
    pathSwitchTimeout: float = 30.0
    #: Seconds a session with bytes unacknowledged waits for an ACK before
    #: it takes its path for failed (0: never).
    pathSwitchProgressTimeout: float = 5.0
    #: The C{[cos.<name>]} tables, by class-of-service name, as written.
    cosSections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: The same classes of service, parsed (added to or replacing the
    #: built-in ones).
    cosTables: Mapping[str, ClassOfService] = attrs.field(factory=dict)
    #: The C{[link.<selector>]} tables, by selector, as written.
    linkSections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: The same, parsed: what the topology database announces per link.
    linkSettings: LinkSettings = attrs.field(factory=LinkSettings)

    def asDict(self) -> dict[str, Any]:
        """
        The effective configuration in the config file's own key names (for
        the management API and `appn config`).
        """
        return {
            "node": {
                "data-dir": self.dataDir,
                "name": self.name,
                "listen": list(self.listen),
                "peers": list(self.peers),
                "max-peers": self.maxPeers,
                "inbound-slack": self.inboundSlack,
                "role": self.role,
                "trust": self.trust,
                "api": self.api if self.api is not None else API_OFF,
                "plugins": list(self.plugins) if self.plugins is not None else None,
                "keepalive-interval": self.keepaliveInterval,
                "keepalive-timeout": self.keepaliveTimeout,
                "suspect-timeout-min": self.suspectMinimum,
                "suspect-dead-factor": self.deadFactor,
                "cds": self.cds,
                "cds-node": self.cdsNode,
                "path-switch": self.pathSwitch,
                "path-switch-timeout": self.pathSwitchTimeout,
                "path-switch-progress-timeout": self.pathSwitchProgressTimeout,
            },
            "plugin": {name: dict(section) for name, section in self.pluginSections.items()},
            "cos": {name: dict(section) for name, section in self.cosSections.items()},
            "link": {name: dict(section) for name, section in self.linkSections.items()},
            "config-file": self.configFile,
        }


def readConfigFile(
    path: str,
) -> tuple[
    dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]
]:
    """
    Read a config file: its C{[node]} table, its C{[plugin.<name>]} tables,
    its C{[cos.<name>]} tables and its C{[link.<selector>]} tables.  Only
    the shape is checked here; values are checked by L{resolveConfig}.

    @raise ConfigurationError: unreadable file, bad TOML, unknown table or
        key, or a value of the wrong type, naming the file.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigurationError(f"cannot read the config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"{path} is not valid TOML: {e}") from None
    node: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    cosSections: dict[str, dict[str, Any]] = {}
    linkSections: dict[str, dict[str, Any]] = {}
    for table, value in document.items():
        if table == "node" and isinstance(value, dict):
            node = value
        elif table == "plugin" and isinstance(value, dict):
            for name, section in value.items():
                if not isinstance(section, dict):
                    raise ConfigurationError(f"{path}: 'plugin.{name}' must be a table")
                sections[name] = section
        elif table == "cos" and isinstance(value, dict):
            for name, section in value.items():
                if not isinstance(section, dict):
                    raise ConfigurationError(f"{path}: 'cos.{name}' must be a table")
                cosSections[name] = section
        elif table == "link" and isinstance(value, dict):
            for name, section in value.items():
                if not isinstance(section, dict):
                    raise ConfigurationError(f"{path}: 'link.{name}' must be a table")
                linkSections[name] = section
        else:
            raise ConfigurationError(
                f"{path}: unknown section or key {table!r} "
                "(expected [node], [plugin.<name>], [cos.<name>] and [link.<selector>])"
            )
    for key, value in node.items():
        types = NODE_KEYS.get(key)
        if types is None:
            raise ConfigurationError(
                f"{path}: unknown key {key!r} in [node] (known: {', '.join(NODE_KEYS)})"
            )
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigurationError(
                f"{path}: [node] {key} must be "
                # A float key takes whole numbers too: just "a number".
                + " or ".join(_TYPE_WORDS[t] for t in types if not (t is int and float in types))
            )
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigurationError(f"{path}: [node] {key} must be a list of strings")
    return node, sections, cosSections, linkSections


#: How a usage error names a TOML type.
_TYPE_WORDS = {
    str: "a string",
    list: "a list",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
}

#: The command-line option of a config key, where it is not --<key>.
_OPTION_OF = {"peers": "--peer", "plugins": "--plugin"}


def _wholeNumber(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigurationError(f"{where} {value!r} is not a whole number") from None
    if type(value) is not int or not low <= value <= high:
        raise ConfigurationError(f"{where} must be between {low} and {high}, not {value}")
    return value


def _checkEndpoint(reactor: object, option: str, description: str) -> str:
    try:
        # Parsing builds the endpoint object without listening; it catches
        # unknown endpoint types and bad arguments.
        serverFromString(reactor, description)
    except Exception as e:
        raise ConfigurationError(
            f"{option} {description!r} is not a server endpoint string "
            f"(for example tcp:{DEFAULT_PORT}:interface=127.0.0.1): {e}"
        ) from None
    return description


def resolveConfig(
    commandLine: Mapping[str, Any], reactor: object, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """
    Merge defaults, the config file (C{commandLine["config"]}) and the
    command line, and validate the result.

    @param commandLine: the long option names with the values given on the
        command line; L{None} (or an empty list) for options not given.
    @param reactor: the reactor the endpoints will be built with (parsing
        an endpoint string needs one; nothing listens yet).
    @raise ConfigurationError: (or its subclasses L{InvalidCPName},
        L{AddressError}) naming the bad option or key.
    """
    configFile = commandLine.get("config")
    fileNode: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    cosSections: dict[str, dict[str, Any]] = {}
    linkSections: dict[str, dict[str, Any]] = {}
    if configFile:
        fileNode, sections, cosSections, linkSections = readConfigFile(configFile)

    def pick(key: str) -> tuple[Any, str]:
        value = commandLine.get(key)
        if value not in (None, []):
            return value, _OPTION_OF.get(key, f"--{key}")
        if key in fileNode:
            return fileNode[key], f"{configFile}: [node] {key}"
        return None, key

    dataDir, _ = pick("data-dir")
    dataDir = os.path.abspath(os.path.expanduser(dataDir or defaultDataDir(environ)))

    name, where = pick("name")
    if name is not None:
        name = validateCPName(name)

    listen, where = pick("listen")
    if listen is None:
        listen = [DEFAULT_LISTEN]
    elif isinstance(listen, str):
        listen = [listen]
    if not listen:
        raise ConfigurationError(f"{where}: give at least one endpoint to listen on")
    for description in listen:
        _checkEndpoint(reactor, where, description)

    peers, where = pick("peers")
    peers = list(peers or [])
    for peer in peers:
        try:
            parseAddress(peer)
        except AddressError as e:
            raise AddressError(f"{where}: {e.args[0]}") from None

    maxPeers, where = pick("max-peers")
    if maxPeers is None:
        maxPeers = DEFAULT_MAX_PEERS
    maxPeers = _wholeNumber(maxPeers, where, 1, MAX_MAX_PEERS)

    inboundSlack, where = pick("inbound-slack")
    if inboundSlack is None:
        inboundSlack = DEFAULT_INBOUND_SLACK
    inboundSlack = _wholeNumber(inboundSlack, where, 0, MAX_MAX_PEERS)

    role, where = pick("role")
    role = role or "network"
    if role not in ROLES:
        raise ConfigurationError(f"{where} must be one of {', '.join(ROLES)}, not {role!r}")

    trust, where = pick("trust")
    trust = trust or OPEN
    if trust not in (OPEN, NETWORK):
        raise ConfigurationError(f"{where} must be {OPEN} or {NETWORK}, not {trust!r}")

    api, where = pick("api")
    if api is None:
        api = DEFAULT_API
    if api.lower() == API_OFF:
        api = None
    else:
        _checkEndpoint(reactor, where, api)

    plugins, where = pick("plugins")
    if plugins is not None:
        plugins = list(dict.fromkeys(plugins))

    interval = float(fileNode.get("keepalive-interval", 15.0))
    timeout = float(fileNode.get("keepalive-timeout", 60.0))
    if interval < 0 or timeout < 0 or (timeout and interval >= timeout):
        raise ConfigurationError(
            f"{configFile}: [node] keepalive-interval ({interval:g} s) must be shorter than "
            f"keepalive-timeout ({timeout:g} s), and neither negative"
        )
    suspectMinimum = float(fileNode.get("suspect-timeout-min", 1.0))
    deadFactor = float(fileNode.get("suspect-dead-factor", 3.0))
    if not 0 <= suspectMinimum <= 3600:
        raise ConfigurationError(
            f"{configFile}: [node] suspect-timeout-min ({suspectMinimum:g} s) must be "
            "between 0 (off) and 3600"
        )
    if not 1 <= deadFactor <= 100:
        raise ConfigurationError(
            f"{configFile}: [node] suspect-dead-factor ({deadFactor:g}) must be between 1 and 100"
        )
    switchTimeout = float(fileNode.get("path-switch-timeout", 30.0))
    if not switchTimeout > 0:
        raise ConfigurationError(
            f"{configFile}: [node] path-switch-timeout ({switchTimeout:g} s) must be positive"
        )
    # A far end holding bytes for a plugin that does not read repeats its
    # ACK every second: a shorter wait would take it for a dead path.
    progressTimeout = float(fileNode.get("path-switch-progress-timeout", 5.0))
    if not (progressTimeout == 0 or 2 <= progressTimeout <= 3600):
        raise ConfigurationError(
            f"{configFile}: [node] path-switch-progress-timeout ({progressTimeout:g} s) must "
            "be 0 (off) or between 2 and 3600"
        )
    cds = bool(fileNode.get("cds", False))
    if cds and role != "network":
        raise ConfigurationError(f"{configFile}: [node] cds = true needs role network")
    # Parsed once, here: errors name the key, and the node uses these tables.
    cosTables = parseCOSTables(cosSections)
    linkSettings = parseLinkSections(linkSections, configFile or "")

    return NodeConfig(
        dataDir=dataDir,
        name=name,
        listen=tuple(listen),
        peers=tuple(peers),
        maxPeers=maxPeers,
        inboundSlack=inboundSlack,
        role=role,
        trust=trust,
        api=api,
        plugins=tuple(plugins) if plugins is not None else None,
        pluginSections=sections,
        configFile=os.path.abspath(configFile) if configFile else None,
        keepaliveInterval=interval,
        keepaliveTimeout=timeout,
        suspectMinimum=suspectMinimum,
        deadFactor=deadFactor,
        cds=cds,
        cdsNode=fileNode.get("cds-node"),
        pathSwitch=bool(fileNode.get("path-switch", True)),
        pathSwitchTimeout=switchTimeout,
        pathSwitchProgressTimeout=progressTimeout,
        cosSections=cosSections,
        cosTables=cosTables,
        linkSections=linkSections,
        linkSettings=linkSettings,
    )
