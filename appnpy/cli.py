"""
C{appn}: the command-line client of a running node's management API, the
interop probe and the network CA tools.

    appn [--data-dir DIR] [--json] COMMAND ...

The node's API address comes from C{<data-dir>/api.json} and its token from
C{<data-dir>/api-token}, both written by the node when it starts.

It sits at the top of the package, beside C{tap.py}: like C{twist appnnode}
it is an entry point, and C{appn probe} builds its throwaway node with the
composition root (L{appnpy.node.buildProber}).  One module per command
would scatter what reads best as one table of commands, each a screenful:
hence its length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from zope.interface import implementer

import appnpy
from appnpy.errors import APPNError, ConfigurationError
from appnpy.interfaces import IAPIClient, ICommandPlugin, ISessionPlugin
from appnpy.ops.config import defaultDataDir
from appnpy.session.plugins import availablePlugins, loadPlugin

#: Seconds an API call may take (connect and echo wait on the network).
HTTP_TIMEOUT = 60.0


class NoNodeRunning(APPNError):
    """
    No node is running on this data directory.
    """

    def __init__(self, dataDir: str) -> None:
        super().__init__(dataDir)
        self.dataDir = dataDir

    def __str__(self) -> str:
        return (
            f"no node is running in {self.dataDir}; start one with: "
            f"twist appnnode --data-dir {self.dataDir}"
        )


class APIRequestFailed(APPNError):
    """
    The node answered the request with an error.
    """

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def errorCode(error: APPNError) -> str:
    """
    The stable code of an error for C{--json} output: the node's own code
    for an API error, else one fixed word per kind of error.
    """
    if isinstance(error, APIRequestFailed):
        if error.code:
            return error.code
        return "unreachable" if error.status == 0 else f"http-{error.status}"
    if isinstance(error, NoNodeRunning):
        return "no-node-running"
    if isinstance(error, UsageError):
        return "usage"
    if isinstance(error, ConfigurationError):
        return "configuration"
    return "error"


@implementer(IAPIClient)
class APIClient:
    """
    A synchronous client of one node's management API; what a plugin's
    C{appn} command gets (L{IAPIClient}).

    @ivar json: the user asked for JSON output.
    """

    def __init__(self, dataDir: str, wantJSON: bool = False) -> None:
        self.dataDir = dataDir
        self.json = wantJSON
        try:
            with open(os.path.join(dataDir, "api.json"), encoding="utf-8") as f:
                info = json.load(f)
            with open(os.path.join(dataDir, "api-token"), encoding="ascii") as f:
                self.token = f.read().strip()
            self.url = str(info["url"])
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            raise NoNodeRunning(dataDir) from None
        if not _alive(pid):
            raise NoNodeRunning(dataDir)

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        """
        C{GET /api/v1/<path>}, with C{query} as its query string.
        """
        return self.call("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def post(self, path: str, body: dict[str, object] | None = None) -> Any:
        """
        C{POST /api/v1/<path>} with the JSON object C{body}.
        """
        return self.call("POST", path, body if body is not None else {})

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(
            self.url.rstrip("/") + "/api/v1/" + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                error = json.loads(e.read())
                message, code = str(error["error"]), str(error.get("code", ""))
            except (ValueError, KeyError, TypeError):
                message, code = f"HTTP {e.code} {e.reason}", ""
            raise APIRequestFailed(e.code, message, code) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                raise NoNodeRunning(self.dataDir) from None
            raise APIRequestFailed(0, f"cannot reach the node at {self.url}: {e.reason}") from None
        except (TimeoutError, ConnectionError) as e:
            raise APIRequestFailed(0, f"the node at {self.url} did not answer: {e}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- output ----------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    return str(value)


def table(out: TextIO, headers: list[str], rows: list[list[Any]]) -> None:
    """
    Print rows as aligned columns.
    """
    cells = [headers] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    if not rows:
        out.write("(none)\n")


def _short(nodeID: str) -> str:
    return nodeID[:12]


def _neighbourRows(neighbours: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            n["name"],
            _short(n["node_id"]),
            n["address"],
            n["direction"],
            n["rtt_ms"],
            n["bytes_in"],
            n["bytes_out"],
            n["sessions"],
        ]
        for n in neighbours
    ]


_NEIGHBOUR_HEADERS = ["NAME", "NODE", "ADDRESS", "DIR", "RTT_MS", "IN", "OUT", "SESSIONS"]


# -- commands ---------------------------------------------------------------------


def cmdStatus(args: argparse.Namespace, out: TextIO) -> int:
    status = APIClient(args.data_dir).call("GET", "status")
    if args.json:
        _json(out, status)
        return 0
    out.write(f"node      {status['node_id']}\n")
    out.write(f"name      {status['name']}\n")
    out.write(f"role      {status['role']}\n")
    out.write(f"version   {status['version']}\n")
    out.write(f"listen    {_cell(status['listen'])}\n")
    out.write(f"uptime    {status['uptime_s']:.0f} s\n")
    out.write(f"sessions  {status.get('sessions', 0)}\n\n")
    table(out, _NEIGHBOUR_HEADERS, _neighbourRows(status["neighbours"]))
    return 0


def cmdPeers(args: argparse.Namespace, out: TextIO) -> int:
    neighbours = APIClient(args.data_dir).call("GET", "neighbours")
    if args.json:
        _json(out, neighbours)
    else:
        table(out, _NEIGHBOUR_HEADERS, _neighbourRows(neighbours))
    return 0


def cmdConnect(args: argparse.Namespace, out: TextIO) -> int:
    n = APIClient(args.data_dir).call("POST", "connect", {"address": args.address})
    if args.json:
        _json(out, n)
    else:
        out.write(f"linked with {n['name']} ({n['node_id']}) at {n['address']}\n")
    return 0


def cmdDisconnect(args: argparse.Namespace, out: TextIO) -> int:
    result = APIClient(args.data_dir).call("POST", "disconnect", {"node": args.node})
    if args.json:
        _json(out, result)
    else:
        out.write(f"closed the link with {result['name']} ({result['node_id']})\n")
    return 0


def cmdSessions(args: argparse.Namespace, out: TextIO) -> int:
    sessions = APIClient(args.data_dir).call("GET", "sessions")
    if args.json:
        _json(out, sessions)
    else:
        table(
            out,
            ["SESSION", "PLUGIN", "PEER", "DIR", "IN", "OUT"],
            [
                [
                    s["session_id"],
                    s["plugin"],
                    s["peer_name"] or _short(s["peer_node_id"]),
                    s["direction"],
                    s["bytes_in"],
                    s["bytes_out"],
                ]
                for s in sessions
            ],
        )
    return 0


def cmdPlugins(args: argparse.Namespace, out: TextIO) -> int:
    plugins = APIClient(args.data_dir).call("GET", "plugins")
    if args.json:
        _json(out, plugins)
    else:
        table(
            out,
            ["PLUGIN", "VERSION", "COS", "LIMIT"],
            [[p["name"], p["version"], p["default_cos"], p["session_limit"]] for p in plugins],
        )
    return 0


def cmdEcho(args: argparse.Namespace, out: TextIO) -> int:
    result = APIClient(args.data_dir).call(
        "POST", "echo", {"node": args.node, "count": args.count, "size": args.size}
    )
    if args.json:
        _json(out, result)
    else:
        for i, rtt in enumerate(result["rtt_ms"], 1):
            out.write(
                f"{result['size']} bytes echoed by {_short(result['node_id'])}: "
                f"seq={i} time={rtt:.2f} ms\n"
            )
        median = result["rtt_ms_median"]
        out.write(
            f"{result['sent']} sent, {result['received']} received, median "
            f"{'-' if median is None else f'{median:.2f} ms'}"
            + (f" ({result['error']})" if "error" in result else "")
            + "\n"
        )
    return 0 if result["received"] == result["sent"] else 1


def cmdProbe(args: argparse.Namespace, out: TextIO) -> int:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    from appnpy.node import buildProber
    from appnpy.ops.probe import probe

    async def run(reactor: Any) -> None:
        prober = buildProber(reactor, timeout=args.timeout)
        steps = await probe(reactor, prober, args.address, timeout=args.timeout)
        failed = not steps or not all(s.ok for s in steps)
        if args.json:
            _json(
                out,
                {"address": args.address, "ok": not failed, "steps": [s.asDict() for s in steps]},
            )
        else:
            for s in steps:
                out.write(f"{'PASS' if s.ok else 'FAIL'}  {s.name:<14} {s.detail}\n")
            out.write("all steps passed\n" if not failed else "probe FAILED\n")
        raise SystemExit(1 if failed else 0)

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        return int(e.code or 0)
    return 0  # pragma: no cover - react always exits


def cmdCACreate(args: argparse.Namespace, out: TextIO) -> int:
    from appnpy.link.identity import createNetworkCA

    createNetworkCA(args.ca_dir, args.netid)
    result = {"ca_dir": os.path.abspath(args.ca_dir), "netid": args.netid.upper()}
    if args.json:
        _json(out, result)
    else:
        out.write(f"created the network CA for {result['netid']} in {result['ca_dir']}\n")
    return 0


def cmdCASign(args: argparse.Namespace, out: TextIO) -> int:
    from appnpy.link.identity import signNodeCertificate

    signNodeCertificate(args.ca_dir, args.data_dir, cpName=args.name)
    result = {
        "ca_dir": os.path.abspath(args.ca_dir),
        "data_dir": os.path.abspath(args.data_dir),
        "name": args.name.upper(),
    }
    if args.json:
        _json(out, result)
    else:
        out.write(
            f"signed the node certificate in {result['data_dir']} for {result['name']}; "
            "restart the node "
            "with --trust network to use it\n"
        )
    return 0


def _nameOr(names: dict[str, Any], nodeID: str) -> str:
    return str(names.get(nodeID) or _short(nodeID))


def _path(names: dict[str, Any], hops: list[str]) -> str:
    return " -> ".join(_nameOr(names, h) for h in hops)


def cmdTopology(args: argparse.Namespace, out: TextIO) -> int:
    topo = APIClient(args.data_dir).call("GET", "topology")
    if args.json:
        _json(out, topo)
        return 0
    if not topo["has_database"]:
        server = topo["server"]
        where = (
            f"its network-node server is {server['name'] or '-'} ({server['node_id']})"
            if server
            else "it has no network-node server now"
        )
        out.write(f"{topo['name']} is an end node: it keeps no topology database; {where}\n")
        return 0
    names = {n["node_id"]: n["name"] for n in topo["nodes"]}
    out.write(f"digest    {topo['digest']}\n")
    out.write(f"records   {topo['records']}\n\n")
    table(
        out,
        ["NAME", "NODE", "ROLE", "RESISTANCE", "LOAD", "CDS", "END_NODES"],
        [
            [
                n["name"],
                _short(n["node_id"]),
                n.get("role", "network"),
                n["resistance"],
                n["load"],
                "yes" if n["cds"] else "no",
                len(n["end_nodes"]),
            ]
            for n in topo["nodes"]
        ],
    )
    out.write("\n")
    table(
        out,
        ["FROM", "TO", "RTT_MS", "THROUGHPUT", "COST", "SECURITY", "UP", "ROUTABLE"],
        [
            [
                _nameOr(names, link["owner"]),
                _nameOr(names, link["peer"]),
                link["rtt_ms"],
                link["throughput"],
                link["cost"],
                link["security"],
                "yes" if link["up"] else "no",
                "yes" if link["routable"] else "no",
            ]
            for link in topo["links"]
        ],
    )
    return 0


def cmdResources(args: argparse.Namespace, out: TextIO) -> int:
    res = APIClient(args.data_dir).call("GET", "resources")
    if args.json:
        _json(out, res)
        return 0
    if res["role"] == "end":
        server = res.get("server")
        where = f"{res.get('server_name') or '-'} ({server})" if server else "none"
        out.write(f"server    {where}\n\n")
    out.write("local resources:\n")
    for name in res["local"]:
        out.write(f"  {name}\n")
    if not res["local"]:
        out.write("  (none)\n")
    if res["role"] == "network":
        out.write("\nregistered by end nodes:\n")
        table(
            out,
            ["RESOURCE", "OWNER", "NODE", "EXPIRES_S"],
            [
                [name, e.get("owner_name"), _short(e["owner"]), e["expires_in"]]
                for name, owners in res["registered"].items()
                for e in owners
            ],
        )
    return 0


def cmdLocate(args: argparse.Namespace, out: TextIO) -> int:
    found = APIClient(args.data_dir).call(
        "GET", "locate?" + urllib.parse.urlencode({"name": args.name})
    )
    if args.json:
        _json(out, found)
        return 1 if found.get("conflict") else 0
    names = found.get("names", {})
    if found.get("conflict"):
        owners = found["owners"]
        out.write(f"CONFLICT: {found['name']} is claimed by {len(owners)} nodes:\n")
        for owner in owners:
            out.write(f"  {owner['name'] or '-'} ({owner['node_id']})\n")
        out.write("name the node by its node ID (appn://<node ID>@host:port) to reach one\n")
        return 1
    out.write(f"{found['name']} is offered by {found['owner_name'] or '-'} ({found['owner']})\n")
    record = found["record"]
    out.write(f"record    seq {record.get('seq')}, ttl {record.get('ttl')} s\n")
    route = found.get("route")
    out.write(f"route     {_path(names, route) if route else '-'}\n")
    return 0


def cmdRoute(args: argparse.Namespace, out: TextIO) -> int:
    query = {"destination": args.destination}
    if args.cos:
        query["cos"] = args.cos
    explanation = APIClient(args.data_dir).call("GET", "route?" + urllib.parse.urlencode(query))
    if args.json:
        _json(out, explanation)
        return 0
    names = explanation.get("names", {})
    route = explanation["route"]
    weights = route.get("hopWeights")
    chooser = explanation.get("computed_by")
    out.write(
        f"route to {_nameOr(names, explanation['destination'])} for class of service "
        f"{explanation['cos']}"
        + (
            f" (chosen by {_nameOr(names, chooser)})"
            if chooser not in (None, explanation["origin"])
            else ""
        )
        + ":\n"
    )
    rows = []
    for i, hop in enumerate(route["hops"]):
        # A hop's weight is what entering it adds: its link, and the node if intermediate.
        weight = None if i == 0 or weights is None else weights[i - 1]
        rows.append([i, names.get(hop), _short(hop), weight])
    table(out, ["HOP", "NAME", "NODE", "WEIGHT"], rows)
    total = route.get("weight")
    out.write(f"total     {'-' if total is None else _cell(float(total))}\n")
    alternatives = explanation.get("alternatives") or []
    if alternatives:
        out.write("alternatives:\n")
        for alt in alternatives:
            out.write(
                f"  {_path(names, alt['hops'])}  total {_cell(float(alt['weight']))}"
                f"  ({alt.get('why') or 'not chosen'})\n"
            )
    rejected = explanation.get("rejected") or []
    if rejected:
        out.write("excluded by the class of service:\n")
        for r in rejected:
            why = "; ".join(
                (_path(names, e["link"]) if "link" in e else _nameOr(names, e["node"]))
                + f": {e['why']}"
                for e in r["excludedBy"]
            )
            out.write(f"  {_path(names, r['hops'])}  ({why})\n")
    return 0


def _json(out: TextIO, value: Any) -> None:
    out.write(json.dumps(value, indent=2) + "\n")


# -- parsing and the one error dispatcher --------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")


class UsageError(APPNError):
    """
    The command line is not valid; see `appn --help`.
    """

    def __str__(self) -> str:
        return f"{Exception.__str__(self)} (see appn --help)"


#: What a plugin's command runs: C{run(args, api, out)} answers the exit status.
PluginCommand = Callable[[argparse.Namespace, IAPIClient, TextIO], int]


def installedPlugins() -> list[ISessionPlugin]:
    """
    The installed session plugins that load; a broken one is skipped, so
    it cannot break C{appn} (C{twist appnnode} reports it when enabled).
    """
    found = []
    for name in sorted(availablePlugins()):
        try:
            found.append(loadPlugin(name))
        except Exception:
            continue
    return found


def _addPluginCommands(commands: Any, common: argparse.ArgumentParser) -> None:
    """
    Let each installed plugin providing L{ICommandPlugin} add its commands.
    """
    for plugin in installedPlugins():
        if not ICommandPlugin.providedBy(plugin):
            continue

        def add(name: str, help: str, run: PluginCommand) -> argparse.ArgumentParser:
            if name in commands.choices:
                raise UsageError(f"appn already has a command {name!r}")
            p: argparse.ArgumentParser = commands.add_parser(name, help=help, parents=[common])
            p.set_defaults(func=_runPluginCommand(run))
            return p

        try:
            plugin.addCommands(add)
        except Exception:
            # A plugin's bug costs its own commands only.
            continue


def _runPluginCommand(run: PluginCommand) -> Callable[[argparse.Namespace, TextIO], int]:
    def func(args: argparse.Namespace, out: TextIO) -> int:
        return int(run(args, APIClient(args.data_dir, wantJSON=args.json), out))

    return func


def buildParser() -> argparse.ArgumentParser:
    parser = _Parser(prog="appn", description="Drive a running appnpy node.")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the node's data directory (default $XDG_DATA_HOME/appnpy)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON (errors too: {error, message})"
    )
    parser.add_argument(
        "--version", action="version", version=f"appn (appnpy) {appnpy.__version__}"
    )
    # Accepted after the command too, without overriding a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, parents=[common])  # type: ignore[list-item]  # typeshed: parents must be parser_class
        p.set_defaults(func=func)
        return p

    add("status", cmdStatus, "the node and its neighbours")
    add("peers", cmdPeers, "the node's neighbours")
    add("connect", cmdConnect, "link to a node").add_argument(
        "address", help="host:port or appn://<nodeid>@host:port"
    )
    add("disconnect", cmdDisconnect, "close the link with a neighbour").add_argument(
        "node", help="node ID, unique prefix or CP name"
    )
    add("sessions", cmdSessions, "bound sessions")
    add("plugins", cmdPlugins, "session plugins")
    echo = add("echo", cmdEcho, "measure round trips through an echo session")
    echo.add_argument("node", help="node ID, unique prefix or CP name")
    echo.add_argument(
        "--count", type=int, default=5, help="round trips to measure (default %(default)s)"
    )
    echo.add_argument(
        "--size", type=int, default=64, help="bytes in each echo (default %(default)s)"
    )
    add("topology", cmdTopology, "the topology database (network nodes)")
    add("resources", cmdResources, "local and registered resources")
    add("locate", cmdLocate, "find the node offering a resource").add_argument(
        "name", help="resource name <kind>:<name>, e.g. files:music"
    )
    route = add("route", cmdRoute, "explain the route to a node")
    route.add_argument("destination", help="node ID, unique prefix or CP name")
    route.add_argument("--cos", default=None, help="class of service (default interactive)")
    probe = add("probe", cmdProbe, "check a node against the protocol (no node needed)")
    probe.add_argument("address", help="host:port or appn://<nodeid>@host:port")
    probe.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each step may take (default 10)"
    )
    _addPluginCommands(commands, common)
    ca = commands.add_parser("ca", help="network CA tools", parents=[common])  # type: ignore[list-item]  # typeshed: parents must be parser_class
    caCommands = ca.add_subparsers(dest="ca_command", metavar="CA_COMMAND", parser_class=_Parser)
    caCommands.required = True
    create = caCommands.add_parser("create", help="create a network CA", parents=[common])  # type: ignore[list-item]  # typeshed: parents must be parser_class
    create.set_defaults(func=cmdCACreate)
    create.add_argument("--ca-dir", required=True, help="directory for the CA's key and cert")
    create.add_argument("--netid", required=True, help="the network ID the CA signs names in")
    sign = caCommands.add_parser("sign", help="sign a node's certificate", parents=[common])  # type: ignore[list-item]  # typeshed: parents must be parser_class
    sign.set_defaults(func=cmdCASign)
    sign.add_argument("--ca-dir", required=True, help="the network CA's directory")
    sign.add_argument("--data-dir", default=argparse.SUPPRESS, help="the node's data directory")
    sign.add_argument(
        "--name", required=True, help="the node's CP name NETID.NAME, certified by the CA"
    )
    return parser


def main(
    argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """
    Run one command; answer the exit status.  Errors are printed as
    C{ERROR: ...} on stderr, never as tracebacks.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = sys.argv[1:] if argv is None else argv
    # Known before parsing, so that even a usage error answers in JSON.
    wantJSON = "--json" in argv
    try:
        try:
            args = buildParser().parse_args(argv)
            if args.data_dir is None:
                args.data_dir = defaultDataDir()
            status = int(args.func(args, out))
        except APPNError as e:
            _reportError(out, err, wantJSON, errorCode(e), str(e))
            status = 2 if isinstance(e, UsageError) else 1
        except KeyboardInterrupt:
            _reportError(out, err, wantJSON, "interrupted", "interrupted")
            status = 130
        except SystemExit as e:
            # --help and --version print, then exit through argparse.
            status = e.code if isinstance(e.code, int) else 0
        out.flush()
    except BrokenPipeError:
        # The reader stopped reading (`appn status | head -3`): it has what
        # it wanted.  Point stdout at /dev/null so the interpreter's final
        # flush does not complain either, and exit quietly.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 0
    return status


def _reportError(out: TextIO, err: TextIO, wantJSON: bool, code: str, message: str) -> None:
    if wantJSON:
        # On stdout, where a script reads the answer it asked for.
        out.write(json.dumps({"error": code, "message": message}) + "\n")
    else:
        err.write(f"ERROR: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
