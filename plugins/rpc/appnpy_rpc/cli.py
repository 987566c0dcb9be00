"""
C{appn rpc}: the operator's view of RPC services.

    appn rpc ls [NODE]                          services and method signatures
    appn rpc call SERVICE METHOD [ARG ...]      each ARG one JSON value
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO

from appnpy.api import APPNError, IAPIClient


class UsageError(APPNError):
    """
    The command line is not right; `appn rpc --help` shows how it goes.
    """


def addCommands(
    add: Callable[
        [str, str, Callable[[argparse.Namespace, IAPIClient, TextIO], int]],
        argparse.ArgumentParser,
    ],
) -> None:
    parser = add("rpc", "list and call RPC services", run)
    sub = parser.add_subparsers(dest="rpcCommand", metavar="ls|call")
    ls = sub.add_parser("ls", help="services and their method signatures")
    ls.add_argument("node", nargs="?", help="a node (ID, prefix or CP name); this node if none")
    ls.add_argument("--json", dest="rpcJSON", action="store_true", help="JSON output")
    call = sub.add_parser("call", help="call a method; each ARG is one JSON value")
    call.add_argument("service", help="rpc:NAME or NAME")
    call.add_argument("method", help="the method's name (appn rpc ls shows them)")
    call.add_argument(
        "args", nargs="*", metavar="ARG", help='a JSON value: 1, "text", [1, 2], {"$bytes": "aGk="}'
    )
    call.add_argument("--node", help="call the service on this node (otherwise located by name)")
    call.add_argument("--timeout", type=float, help="seconds to wait for the answer")
    call.add_argument("--json", dest="rpcJSON", action="store_true", help="JSON output")


def run(args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
    wantJSON = bool(api.json or getattr(args, "rpcJSON", False))
    if args.rpcCommand == "ls":
        query = {"node": args.node} if args.node else None
        answer = api.get("plugins/rpc/services", query)
        if wantJSON:
            out.write(json.dumps(answer, indent=2) + "\n")
        else:
            _printServices(answer, out)
        return 0
    if args.rpcCommand == "call":
        values = []
        for i, text in enumerate(args.args):
            try:
                values.append(json.loads(text))
            except ValueError:
                raise UsageError(
                    f"argument {i + 1} is not a JSON value: {text[:60]!r} (text needs quotes: '\"{text[:20]}\"')"
                ) from None
        body: dict[str, object] = {"service": args.service, "method": args.method, "args": values}
        if args.node:
            body["node"] = args.node
        if args.timeout is not None:
            body["timeout"] = args.timeout
        answer = api.post("plugins/rpc/call", body)
        if wantJSON:
            out.write(json.dumps(answer, indent=2) + "\n")
        else:
            assert isinstance(answer, dict)
            out.write(json.dumps(answer["result"]) + "\n")
        return 0
    raise UsageError("say `appn rpc ls [NODE]` or `appn rpc call SERVICE METHOD [ARG ...]`")


def _printServices(answer: Any, out: TextIO) -> None:
    services = answer.get("services", []) if isinstance(answer, dict) else []
    if not services:
        out.write(f"no services on {answer.get('node', 'this node')}\n")
        return
    for service in services:
        out.write(f"rpc:{service['service']}\n")
        for method in service["methods"]:
            doc = f"    {method['doc']}" if method.get("doc") else ""
            out.write(f"  {method['signature']}{doc}\n")
