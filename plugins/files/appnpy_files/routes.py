"""
The files plugin's management API routes, below C{/api/v1/plugins/files/}.

| method | path | body / query | answer |
|---|---|---|---|
| GET | shares | | {"shares": [share...]} |
| POST | shares/add | {name, directory, password?} | the share (never its password or hash) |
| POST | shares/remove | {name} | {"removed": name} |
| POST | search | {keywords: [...], max?} | {"id"} |
| GET | search | id, after (int), wait (s) | {"results": [...], "next", "done"} (long poll) |
| POST | ls | {node, share?, path?, password?} | {"shares"} or {"entries", "truncated"} |
| POST | get | {sha256 or node+share+path(+single_source), target or directory(+default_name), limit?, password?} | the transfer |
| GET | transfers | | {"transfers": [...]} |
| GET | transfer | id, wait (s) | the transfer (after a change or C{wait}) |
| POST | cancel | {id} | the transfer |

A password travels only in a request body (never a query string, which
access logs may keep) and is never answered or logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from appnpy.api import APIError, NoSuchNode, PluginRequest
from appnpy_files import wire
from appnpy_files.client import RemoteError, SourceGone
from appnpy_files.searches import cleanKeywords
from appnpy_files.transfers import GetError, refusalMessage

if TYPE_CHECKING:
    from appnpy_files.plugin import FilesPlugin

#: Entries one C{ls} answers at most (pages of 1000 are fetched until then).
MAX_LS_ENTRIES = 20000
_NODE_ID = re.compile(r"[a-z2-7]{52}")
_HASH = re.compile(r"[0-9a-f]{64}")
#: Status codes for the error codes of a node or a download.
_STATUS = {
    wire.NO_SUCH_SHARE: 404,
    wire.NO_SUCH_FILE: 404,
    "not-found": 404,
    wire.PASSWORD_REQUIRED: 403,
    wire.BAD_PASSWORD: 403,
    wire.SLOW_DOWN: 429,
    "busy": 409,
    "target-exists": 409,
    "unreachable": 502,
    "bad-request": 400,
}


def _text(body: Mapping[str, Any], key: str, required: bool = True, maxLength: int = 4096) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if type(value) is not str or (required and not value) or len(value) > maxLength:
        raise APIError(400, "bad-request", f"{key} must be text")
    return value


def _password(body: Mapping[str, Any]) -> str | None:
    value = body.get("password")
    if value is None:
        return None
    if type(value) is not str or len(value) > wire.MAX_PASSWORD:
        raise APIError(400, "bad-request", "password must be text")
    return value


def _remote(e: Exception) -> APIError:
    if isinstance(e, RemoteError):
        return APIError(_STATUS.get(e.code, 502), e.code, refusalMessage(e))
    if isinstance(e, GetError):
        return APIError(_STATUS.get(e.code, 502), e.code, e.message)
    if isinstance(e, SourceGone):
        return APIError(502, "unreachable", e.message)
    return APIError(502, "unreachable", str(e))


class FilesAPI:
    """
    The route handlers, reading the plugin's state at call time.
    """

    def __init__(self, plugin: FilesPlugin) -> None:
        self.plugin = plugin

    def routes(self) -> Mapping[tuple[str, str], Callable[[PluginRequest], object]]:
        return {
            ("GET", "shares"): self.shares,
            ("POST", "shares/add"): self.shareAdd,
            ("POST", "shares/remove"): self.shareRemove,
            ("POST", "search"): self.searchStart,
            ("GET", "search"): self.searchPoll,
            ("POST", "ls"): self.ls,
            ("POST", "get"): self.get,
            ("GET", "transfers"): self.transfers,
            ("GET", "transfer"): self.transfer,
            ("POST", "cancel"): self.cancel,
        }

    def _running(self) -> FilesPlugin:
        p = self.plugin
        if p.node is None or p.serve is None or p.transfers is None or p.jobs is None:
            raise APIError(503, "unavailable", "the files plugin is not running")
        return p

    # -- shares --

    def shares(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.serve is not None
        shares = p.serve.describeShares()
        for share in shares:
            # A share whose directory vanished still lists its last index;
            # say so rather than let downloads fail with "file changed".
            share["missing"] = not os.path.isdir(share["directory"])
        return {"shares": shares}

    async def shareAdd(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.serve is not None
        name = _text(request.body, "name", maxLength=wire.MAX_SHARE_NAME)
        directory = _text(request.body, "directory")
        if not os.path.isabs(directory):
            raise APIError(400, "bad-request", "directory must be an absolute path")
        password = _password(request.body)
        return await p.serve.addShare(name, directory, password)

    def shareRemove(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.serve is not None
        name = _text(request.body, "name", maxLength=wire.MAX_SHARE_NAME)
        p.serve.removeShare(name)
        return {"removed": name}

    # -- search --

    def searchStart(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.jobs is not None
        try:
            words = cleanKeywords(request.body.get("keywords"))
        except ValueError as e:
            raise APIError(400, "bad-request", str(e)) from None
        maximum = request.body.get("max", 100)
        if type(maximum) is not int or not 1 <= maximum <= 200:
            raise APIError(400, "bad-request", "max must be 1..200")
        job = p.jobs.start(words, maximum)
        return {"id": job.id}

    async def searchPoll(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.jobs is not None
        try:
            after = int(request.query.get("after", "0"))
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            raise APIError(400, "bad-request", "after and wait must be numbers") from None
        try:
            return await p.jobs.poll(request.query.get("id", ""), max(0, after), wait)
        except KeyError:
            raise APIError(404, "not-found", "no such search (they are kept 5 minutes)") from None

    # -- browse --

    def _nodeID(self, name: str) -> str:
        p = self._running()
        assert p.node is not None
        try:
            return p.node.resolveNode(name)
        except NoSuchNode as e:
            if _NODE_ID.fullmatch(name):
                return name
            raise APIError(404, "no-such-node", str(e)) from None

    async def ls(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.transfers is not None and p.node is not None
        nodeID = self._nodeID(_text(request.body, "node", maxLength=128))
        share = _text(request.body, "share", required=False, maxLength=wire.MAX_SHARE_NAME)
        path = _text(request.body, "path", required=False).strip("/")
        password = _password(request.body)
        try:
            client = await p.transfers.connect(p.node, nodeID)
        except Exception as e:
            raise _remote(e) from None
        try:
            if not share:
                shares = await client.shares()
                return {"node": nodeID, "shares": [s.toWire() for s in shares]}
            if password is not None:
                await client.auth(share, password)
            entries: list[dict[str, Any]] = []
            cursor = 0
            truncated = False
            while True:
                page = await client.listPage(share, path, cursor)
                entries.extend(e.toWire() for e in page.entries)
                if page.next is None:
                    break
                if len(entries) >= MAX_LS_ENTRIES:
                    truncated = True
                    break
                cursor = page.next
            return {
                "node": nodeID,
                "share": share,
                "path": path,
                "entries": entries,
                "truncated": truncated,
            }
        except (RemoteError, SourceGone) as e:
            raise _remote(e) from None
        finally:
            client.close()

    # -- downloads --

    async def get(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.transfers is not None
        body = request.body
        limit = body.get("limit")
        if limit is not None and (type(limit) not in (int, float) or limit <= 0):
            raise APIError(400, "bad-request", "limit must be bytes per second above zero")
        password = _password(body)
        sha = body.get("sha256")
        try:
            if sha is not None:
                if type(sha) is not str or not _HASH.fullmatch(sha):
                    raise APIError(400, "bad-request", "sha256 must be 64 lowercase hex digits")
                if "target" in body:
                    t = await p.transfers.getByHash(sha, self._target(body, sha[:16]), limit)
                else:
                    # Named after the file the first hit names.
                    self._target(body, sha[:16])
                    t = await p.transfers.getByHash(
                        sha, lambda name: self._target(body, sha[:16], name), limit
                    )
            else:
                nodeID = self._nodeID(_text(body, "node", maxLength=128))
                share = _text(body, "share", maxLength=wire.MAX_SHARE_NAME)
                path = _text(body, "path").strip("/")
                target = self._target(body, path.rsplit("/", 1)[-1])
                single = body.get("single_source", False)
                if type(single) is not bool:
                    raise APIError(400, "bad-request", "single_source must be true or false")
                t = await p.transfers.getByPath(
                    nodeID, share, path, target, limit, password, singleSource=single
                )
        except GetError as e:
            raise _remote(e) from None
        return t.describe()

    def _target(self, body: Mapping[str, Any], fallback: str, name: str | None = None) -> str:
        target = body.get("target")
        if target is not None:
            if type(target) is not str or not os.path.isabs(target):
                raise APIError(400, "bad-request", "target must be an absolute path")
            return os.path.normpath(target)
        directory = body.get("directory")
        if type(directory) is not str or not os.path.isabs(directory):
            raise APIError(400, "bad-request", "give target (a file) or directory (absolute)")
        wanted = body.get("default_name")
        base = safeName(name or (wanted if type(wanted) is str else "") or fallback) or fallback
        return os.path.join(os.path.normpath(directory), base)

    def transfers(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.transfers is not None
        return {"transfers": p.transfers.describe()}

    async def transfer(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.transfers is not None and p.node is not None
        t = p.transfers.get(request.query.get("id", ""))
        if t is None:
            raise APIError(404, "not-found", "no such transfer")
        try:
            wait = max(0.0, min(float(request.query.get("wait", "0")), 20.0))
        except ValueError:
            raise APIError(400, "bad-request", "wait must be seconds") from None
        if wait and t.ended is None:
            d: Deferred[None] = Deferred()
            timer = p.node.reactor.callLater(wait, d.callback, None)
            ended = t.whenDone()

            def fire(_: object) -> None:
                if not d.called:
                    timer.cancel()
                    d.callback(None)

            ended.addBoth(fire)
            await d
        return t.describe()

    def cancel(self, request: PluginRequest) -> Any:
        p = self._running()
        assert p.transfers is not None
        transferID = _text(request.body, "id", maxLength=64)
        t = p.transfers.get(transferID)
        if t is None:
            raise APIError(404, "not-found", "no such transfer")
        t.cancel()
        return t.describe()


def safeName(name: str) -> str:
    """
    A file name from another node, made safe to create here: one path
    component, no control characters, not hidden, not C{.}/C{..}.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable() and c not in "\x00/")
    base = base.lstrip(".").strip()
    return base[:200]
