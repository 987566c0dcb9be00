"""
C{appn files ...}: the files plugin's commands, driving the running node
through its management API (routes below C{/api/v1/plugins/files/}).

    appn files share add NAME DIR [--password]
    appn files share list
    appn files share remove NAME
    appn files search WORDS... [--json]
    appn files ls NODE[:SHARE[/PATH]]
    appn files get (HASH | NODE:SHARE/PATH) [-o TARGET] [--limit RATE] [--json]
    appn files transfers
    appn files cancel ID

A password is never a command-line argument (other users see those in
C{ps}): it is read with C{getpass} on a terminal, else as one line of
standard input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

from appnpy.api import APPNError, IAPIClient

ROUTE = "plugins/files/"
_HASH = re.compile(r"[0-9a-fA-F]{64}")
#: Seconds one long poll of the node may wait (below the client's timeout).
POLL_WAIT = 20.0

Command = Callable[[argparse.Namespace, IAPIClient, TextIO], int]


class FilesCommandError(APPNError):
    """
    The files command could not do what was asked; the message says why.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# -- argument parsing ------------------------------------------------------------------


def parseRate(text: str) -> int:
    """
    A rate such as C{500k}, C{2M}, C{1.5MiB} or C{100000} (bytes per second).
    """
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)(i?[bB])?(/s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate (e.g. 500k, 2M, 1.5MiB)")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    value = int(float(m.group(1)) * factor)
    if value <= 0:
        raise argparse.ArgumentTypeError("the rate must be above zero")
    return value


def parseLocation(text: str) -> tuple[str, str, str]:
    """
    C{NODE[:SHARE[/PATH]]} as (node, share, path).
    """
    node, _, rest = text.partition(":")
    share, _, path = rest.partition("/")
    if not node:
        raise FilesCommandError(f"{text!r}: name a node (NODE[:SHARE[/PATH]])")
    return node, share, path.strip("/")


def readPassword(prompt: str = "Password: ", stdin: TextIO | None = None) -> str:
    """
    The password from a prompt on a terminal, else one line of stdin.
    """
    stream = stdin or sys.stdin
    if stream.isatty():
        return getpass.getpass(prompt)
    line = stream.readline()
    if not line:
        raise FilesCommandError("a password is needed: none on standard input")
    return line.rstrip("\r\n")


def formatSize(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _sourceCount(t: dict[str, Any]) -> int:
    """
    Sources in use while a download runs; those that sent bytes once it
    ended (the command line and the web page count alike).
    """
    if t["state"] in ("preparing", "downloading", "verifying"):
        return sum(1 for s in t["sources"] if s["active"])
    return sum(1 for s in t["sources"] if s["bytes"])


#: What to do after a download failed with an error code (default: retry).
_NEXT_STEP = {
    "target-exists": "",
    "read-only": "; choose another target with -o",
    "permission-denied": "; choose another target with -o",
    "io-error": "; check the target (-o), then run the same get again",
    "disk-full": "; free some space, or choose another target with -o, then run the same get again",
    "bad-content": "; the sources' chunk list was wrong: search again for another copy",
}


def _nextStep(t: dict[str, Any]) -> str:
    """
    The advice after a failed download: a resume only helps when the
    failure was the network's, not the target's.
    """
    if t["state"] == "cancelled":
        return ""
    if "file changed on disk" in str(t.get("message") or ""):
        return "; the file changed at its source: search or ls again for its new content"
    return _NEXT_STEP.get(str(t.get("error") or ""), "; run the same get again to resume")


def _progressBar(t: dict[str, Any], stream: TextIO, provisional: bool) -> Any:
    """
    A tqdm bar for transfer C{t} on C{stream}; a provisional one (sources
    and the partial file still being checked) leaves no line behind.
    """
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs shipped

    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    name = _clean(t["name"] or t["sha256"][:16])[:30]
    return tqdm(
        total=t["size"],
        initial=t["resumed_bytes"],
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"{name} (checking)" if provisional else name,
        file=stream,
        leave=not provisional,
        # A terminal that reports no width (a fresh pseudo-terminal, some
        # IDE consoles) would get a bar of width 0: assume 80 columns.
        dynamic_ncols=columns > 0,
        ncols=None if columns > 0 else 80,
    )


def _clean(text: object) -> str:
    # Names come from other nodes: no terminal control sequences.
    return "".join(c if c.isprintable() else "?" for c in str(text))


# -- the commands --------------------------------------------------------------------


class FilesCommands:
    """
    The C{files} command of C{appn}, with its subcommands.
    """

    def __init__(
        self, stdin: TextIO | None = None, isatty: Callable[[TextIO], bool] | None = None
    ) -> None:
        self.stdin = stdin
        self.isatty = isatty or (lambda s: bool(getattr(s, "isatty", lambda: False)()))

    def addCommands(self, add: Callable[[str, str, Command], argparse.ArgumentParser]) -> None:
        files = add("files", "share, search and download files", self.run)
        sub = files.add_subparsers(dest="files_command", metavar="FILES_COMMAND")
        sub.required = True

        share = sub.add_parser("share", help="manage this node's shares")
        shareSub = share.add_subparsers(dest="share_command", metavar="SHARE_COMMAND")
        shareSub.required = True
        add_ = shareSub.add_parser("add", help="share a directory (read-only)")
        add_.add_argument("name", help="the share's name (letters, digits, - _ .)")
        add_.add_argument("directory", help="the directory to share")
        add_.add_argument(
            "--password",
            action="store_true",
            help="protect it with a password (asked for, or read from stdin)",
        )
        add_.set_defaults(files_run=self.shareAdd)
        shareList = shareSub.add_parser("list", help="this node's shares")
        shareList.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        shareList.set_defaults(files_run=self.shareList)
        remove = shareSub.add_parser("remove", help="stop sharing a directory")
        remove.add_argument("name", help="the share's name")
        remove.set_defaults(files_run=self.shareRemove)

        search = sub.add_parser("search", help="search the network for files by words")
        search.add_argument("words", nargs="+", help="words of the path, or a content hash")
        search.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per hit"
        )
        search.add_argument("--max", type=int, default=100, help="results at most (default 100)")
        search.set_defaults(files_run=self.search)

        ls = sub.add_parser("ls", help="browse a node's shares")
        ls.add_argument("location", help="NODE[:SHARE[/PATH]]")
        ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        ls.set_defaults(files_run=self.ls)

        get = sub.add_parser("get", help="download a file, verified, resumable")
        get.add_argument("what", help="a content hash, or NODE:SHARE/PATH")
        get.add_argument(
            "-o", "--output", default=None, help="where to write it (file or directory)"
        )
        get.add_argument(
            "--limit", type=parseRate, default=None, help="bandwidth limit, e.g. 2M (bytes/s)"
        )
        get.add_argument(
            "--password", action="store_true", help="the share needs a password (asked for)"
        )
        get.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="no progress bar; JSON result",
        )
        get.add_argument("--no-wait", action="store_true", help="start the download and return")
        get.add_argument(
            "--single-source",
            action="store_true",
            help="NODE:SHARE/PATH only from that node (not from others holding the same content)",
        )
        get.set_defaults(files_run=self.get)

        transfers = sub.add_parser("transfers", help="downloads and their progress")
        transfers.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        transfers.set_defaults(files_run=self.transfers)
        cancel = sub.add_parser("cancel", help="cancel a download (its partial file is kept)")
        cancel.add_argument("id", help="the transfer's ID (from appn files transfers)")
        cancel.set_defaults(files_run=self.cancel)

    def run(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        return int(args.files_run(args, api, out))

    def _json(self, api: IAPIClient, args: argparse.Namespace) -> bool:
        return bool(api.json or getattr(args, "json", False))

    # -- shares --

    def shareAdd(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        body: dict[str, object] = {
            "name": args.name,
            "directory": os.path.abspath(os.path.expanduser(args.directory)),
        }
        if args.password:
            password = readPassword("Password for the share: ", self.stdin)
            if self._stdin().isatty():
                again = readPassword("Again: ", self.stdin)
                if again != password:
                    raise FilesCommandError("the passwords differ")
            if not password:
                raise FilesCommandError("an empty password protects nothing")
            body["password"] = password
        share = api.post(ROUTE + "shares/add", body)
        if self._json(api, args):
            out.write(json.dumps(share) + "\n")
        else:
            assert isinstance(share, dict)
            protected = " (password protected)" if share.get("protected") else ""
            out.write(f"sharing {share['directory']} as {share['name']}{protected}\n")
        return 0

    def shareList(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        answer = api.get(ROUTE + "shares")
        if self._json(api, args):
            out.write(json.dumps(answer, indent=2) + "\n")
            return 0
        assert isinstance(answer, dict)
        shares = answer.get("shares", [])
        if not shares:
            out.write("no shares (add one: appn files share add NAME DIR)\n")
        for s in shares:
            flags = []
            if s.get("protected"):
                flags.append("password")
            if s.get("origin") == "config":
                flags.append("config")
            if s.get("missing"):
                flags.append("directory missing: serves nothing until it is back")
            counts = ""
            if s.get("files") is not None:
                counts = f"{s['files']} files, {formatSize(s.get('bytes') or 0)}"
            extra = f"  [{', '.join(flags)}]" if flags else ""
            out.write(f"{s['name']:<20} {s['directory']}  {counts}{extra}\n")
        return 0

    def shareRemove(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        api.post(ROUTE + "shares/remove", {"name": args.name})
        if not self._json(api, args):
            out.write(f"share {args.name} removed\n")
        else:
            out.write(json.dumps({"removed": args.name}) + "\n")
        return 0

    # -- search --

    def search(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        wantJSON = self._json(api, args)
        job = api.post(ROUTE + "search", {"keywords": args.words, "max": args.max})
        assert isinstance(job, dict)
        groups: dict[str, int] = {}
        count = 0
        after = 0
        while True:
            page = api.get(
                ROUTE + "search", {"id": job["id"], "after": str(after), "wait": str(POLL_WAIT)}
            )
            assert isinstance(page, dict)
            for hit in page["results"]:
                count += 1
                first = groups.setdefault(hit["sha256"], count)
                if wantJSON:
                    out.write(json.dumps({**hit, "group": first}) + "\n")
                else:
                    who = _clean(hit.get("node_name") or hit["node"][:12])
                    same = f"   (same content as #{first})" if first != count else ""
                    out.write(
                        f"#{count:<3} {formatSize(hit['size']):>10}  {hit['sha256']}  "
                        f"{who}:{_clean(hit['share'])}/{_clean(hit['path'])}{same}\n"
                    )
                out.flush()
            after = page["next"]
            if page["done"]:
                break
        if not wantJSON:
            if count == 0:
                out.write("no files found\n")
            else:
                out.write(
                    f"{count} hit(s), {len(groups)} distinct file(s); "
                    "download one with: appn files get HASH\n"
                )
        return 0 if count else 1

    # -- browse --

    def ls(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        node, share, path = parseLocation(args.location)
        body: dict[str, object] = {"node": node, "share": share, "path": path}
        try:
            answer = self._withPassword(api, "ls", body, share)
        except APPNError as error:
            if getattr(error, "code", "") != "no-such-file" or not path:
                raise
            # The holder cannot tell "no such directory" from "a file".
            raise FilesCommandError(
                f"{args.location}: no such directory (ls lists directories; "
                f"fetch a file with: appn files get {args.location})"
            ) from None
        if self._json(api, args):
            out.write(json.dumps(answer, indent=2) + "\n")
            return 0
        assert isinstance(answer, dict)
        if not share:
            for s in answer["shares"]:
                counts = (
                    f"{s['files']} files, {formatSize(s['bytes'] or 0)}"
                    if s.get("files") is not None
                    else ""
                )
                lock = "  [password]" if s.get("protected") else ""
                out.write(f"{_clean(s['name'])}/  {counts}{lock}\n")
            return 0
        for e in answer["entries"]:
            if e["dir"]:
                out.write(f"{'':>10}  {'':16}  {_clean(e['name'])}/\n")
            else:
                out.write(f"{formatSize(e['size']):>10}  {e['sha256'][:16]}  {_clean(e['name'])}\n")
        if answer.get("truncated"):
            out.write("(listing cut short: too many entries)\n")
        return 0

    def _withPassword(
        self, api: IAPIClient, route: str, body: dict[str, object], share: str
    ) -> Any:
        """
        Call C{route}; when the share turns out protected, ask for the
        password (prompt or stdin) and call again with it.
        """
        try:
            return api.post(ROUTE + route, body)
        except APPNError as e:
            if getattr(e, "code", "") != "password-required" or "password" in body:
                raise
        body["password"] = readPassword(f"Password for {share}: ", self.stdin)
        return api.post(ROUTE + route, body)

    # -- downloads --

    def get(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        wantJSON = self._json(api, args)
        body: dict[str, object] = {}
        if args.limit:
            body["limit"] = args.limit
        share = ""
        if _HASH.fullmatch(args.what):
            body["sha256"] = args.what.lower()
            default = ""
        else:
            node, share, path = parseLocation(args.what)
            if not share or not path:
                raise FilesCommandError(
                    f"{args.what!r}: give a content hash or NODE:SHARE/PATH to a file"
                )
            body.update(node=node, share=share, path=path)
            if args.single_source:
                body["single_source"] = True
            default = path.rsplit("/", 1)[-1]
        target = os.path.abspath(os.path.expanduser(args.output or "."))
        if args.output and args.output.endswith(("/", os.sep)) and not os.path.isdir(target):
            # "-o dir/" means a directory: never write a file named "dir".
            raise FilesCommandError(f"no directory {target}: create it first, or name a file")
        if os.path.isdir(target):
            body["directory"] = target
            if default:
                body["default_name"] = default
        else:
            body["target"] = target
        if args.password:
            body["password"] = readPassword(f"Password for {share or 'the share'}: ", self.stdin)
            started = api.post(ROUTE + "get", body)
        else:
            started = self._withPassword(api, "get", body, share)
        assert isinstance(started, dict)
        transferID = started["id"]
        if args.no_wait:
            out.write(
                (json.dumps(started) if wantJSON else f"started {transferID}: {started['target']}")
                + "\n"
            )
            return 0
        try:
            final = self._follow(api, transferID, out, bar=not wantJSON and self.isatty(sys.stderr))
        except KeyboardInterrupt:
            try:
                api.post(ROUTE + "cancel", {"id": transferID})
            finally:
                sys.stderr.write(
                    "\ncancelled; the verified part is kept: run the same get again to resume\n"
                )
            raise
        if wantJSON:
            out.write(json.dumps(final) + "\n")
        elif final["state"] == "complete":
            resumed = (
                f", {formatSize(final['resumed_bytes'])} resumed from an earlier download"
                if final["resumed_bytes"]
                else ""
            )
            sources = sum(1 for s in final["sources"] if s["bytes"])
            out.write(
                f"{final['target']}: {formatSize(final['size'])}, SHA-256 verified, "
                f"from {sources} source(s){resumed}\n"
            )
        if final["state"] != "complete":
            raise FilesCommandError(
                f"download failed: {final.get('message') or final['state']}"
                + _nextStep(final)
            )
        return 0

    def _follow(self, api: IAPIClient, transferID: str, out: TextIO, bar: bool) -> dict[str, Any]:
        progress = None
        # While the node finds sources and re-hashes a partial file, how
        # much is resumed is unknown: that bar is replaced once it is known,
        # so that the rate counts only what comes over the network.
        provisional = False
        try:
            wait = "0"
            while True:
                t = api.get(ROUTE + "transfer", {"id": transferID, "wait": wait})
                wait = "1"
                assert isinstance(t, dict)
                if bar:
                    if progress is not None and provisional and t["state"] != "preparing":
                        progress.close()
                        progress = None
                    if progress is None:
                        provisional = t["state"] == "preparing"
                        progress = _progressBar(t, sys.stderr, provisional)
                    progress.update(t["done_bytes"] - progress.n)
                    progress.set_postfix_str(f"{_sourceCount(t)} source(s)", refresh=False)
                if t["state"] in ("complete", "failed", "cancelled"):
                    return t
        finally:
            if progress is not None:
                progress.close()

    def transfers(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        answer = api.get(ROUTE + "transfers")
        if self._json(api, args):
            out.write(json.dumps(answer, indent=2) + "\n")
            return 0
        assert isinstance(answer, dict)
        rows = answer["transfers"]
        if not rows:
            out.write("no transfers\n")
        for t in rows:
            pct = 100.0 * t["done_bytes"] / t["size"] if t["size"] else 100.0
            rate = f"{formatSize(t['rate'])}/s" if t["state"] == "downloading" else ""
            sources = _sourceCount(t)
            out.write(
                f"{t['id']}  {t['state']:<11} {pct:5.1f}%  {formatSize(t['size']):>10}  "
                f"{rate:>12}  {sources} src  {_clean(t['target'])}"
                + (f"  ({t['message']})" if t.get("message") and t["state"] == "failed" else "")
                + "\n"
            )
        return 0

    def cancel(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        api.post(ROUTE + "cancel", {"id": args.id})
        out.write(f"cancelled {args.id}; its partial file is kept for a resume\n")
        return 0

    def _stdin(self) -> TextIO:
        return self.stdin or sys.stdin
