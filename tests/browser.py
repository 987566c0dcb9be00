"""
A headless Chromium for tests, driven over the DevTools protocol on a pipe
(C{--remote-debugging-pipe}: commands on the child's fd 3, answers and
events on its fd 4, each JSON message ended by a NUL byte).  No WebSocket
client, no Playwright, no network: Debian's C{chromium} package and the
reactor are all it needs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: Where Debian's C{chromium} package puts the browser.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: The flags CI needs: no sandbox (CI runs as root), no GPU, nothing from the
#: network, a fresh profile.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
]


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


class BrowserError(Exception):
    """
    The browser answered a command with an error, or ended.
    """


class _Pipe(ProcessProtocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.pending: dict[int, Deferred[dict[str, Any]]] = {}
        self.nextID = 0
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()

    def send(self, method: str, params: dict[str, Any], session: str | None) -> Deferred[Any]:
        self.nextID += 1
        message: dict[str, Any] = {"id": self.nextID, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        d: Deferred[dict[str, Any]] = Deferred()
        self.pending[self.nextID] = d
        assert self.transport is not None
        self.transport.writeToChild(3, json.dumps(message).encode() + b"\0")
        return d

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self.stderr = (self.stderr + data)[-20000:]
            return
        if childFD != 4:
            return
        self.buffer += data
        *messages, self.buffer = self.buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            d = self.pending.pop(message.get("id", -1), None)
            if d is None:
                continue  # an event: the tests poll the DOM instead
            if "error" in message:
                d.errback(BrowserError(f"{message['error']}"))
            else:
                d.callback(message.get("result", {}))

    def processEnded(self, reason: Failure) -> None:
        for d in self.pending.values():
            d.errback(BrowserError("the browser ended: " + self.stderr.decode(errors="replace")))
        self.pending.clear()
        self.ended.callback(None)


class Browser:
    """
    One headless Chromium with a fresh profile and one page.
    """

    def __init__(self, reactor: Any, width: int = 1280, height: int = 800) -> None:
        self.reactor = reactor
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="appn-chromium-")
        self.pipe = _Pipe()
        self.session: str | None = None

    async def start(self) -> None:
        args = [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.reactor.spawnProcess(
            self.pipe,
            CHROMIUM,
            args,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )
        target = await self.command("Target.createTarget", url="about:blank")
        attached = await self.command(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session = attached["sessionId"]
        await self.command(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def command(self, method: str, **params: Any) -> Deferred[Any]:
        """
        Send a DevTools command: to the browser (C{Target.*}, C{Browser.*})
        or to the page.
        """
        toBrowser = method.startswith(("Target.", "Browser."))
        session = None if toBrowser else self.session
        return self.pipe.send(method, params, session).addTimeout(30, self.reactor)

    async def open(self, url: str) -> None:
        await self.command("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """
        The value of C{expression} in the page (awaited if a promise).
        """
        result = await self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def waitFor(self, expression: str, seconds: float = 15.0) -> Any:
        """
        Poll C{expression} in the page until it is truthy (the page changes
        on events from the node, which the test cannot see): its value, or
        L{BrowserError} after C{seconds}.
        """
        script = (
            "new Promise((resolve, reject) => { const end = Date.now() + %d;"
            " (function poll() { let v = null; try { v = (%s); } catch (e) {}"
            " if (v) resolve(v); else if (Date.now() > end) reject(new Error('timed out'));"
            " else setTimeout(poll, 25); })(); })"
        ) % (int(seconds * 1000), expression)
        for attempt in range(3):
            try:
                return await self.evaluate(script)
            except BrowserError as e:
                # A navigation (the page's login redirect) ends an evaluation
                # under way: ask the new document.
                if "navigated" not in str(e) or attempt == 2:
                    raise BrowserError(f"waiting for {expression}: {e}") from None

    async def screenshot(self, path: str) -> None:
        shot = await self.command("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    async def stop(self) -> None:
        if not self.pipe.ended.called:
            try:
                await self.pipe.send("Browser.close", {}, None).addTimeout(10, self.reactor)
            except Exception:
                assert self.pipe.transport is not None
                self.pipe.transport.signalProcess("KILL")
            await self.pipe.ended
        shutil.rmtree(self.profile, ignore_errors=True)
