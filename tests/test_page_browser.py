"""
The live web page in a real browser: headless Chromium (Debian's
C{chromium} package) loads the page of a node linked to real nodes on
loopback, and the test reads the DOM as the page's script draws it from the
event stream.

Skipped only where Chromium is absent and this is not CI: C{.ci/run}
installs it and sets C{APPN_CI=1}, and there a missing browser fails.
Set C{APPN_PAGE_SCREENSHOT=docs/page.png} to write the screenshot the docs
show.
"""

from __future__ import annotations

import json
import os

from appnpy_echo import Echo, EchoPlugin, Pong, SimplePlugin
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from zope.interface import implementer

from appnpy.api import IStatusPagePlugin, PageSection
from appnpy.link.identity import generateIdentity
from appnpy.node import Node, buildNode
from appnpy.ops.config import NodeConfig
from appnpy.ops.management import ManagementService
from appnpy.ops.probe import EchoClient

from . import browser
from .test_management import nodeAddress


def inCI() -> bool:
    return bool(os.environ.get("APPN_CI") or os.environ.get("CI"))


@implementer(IStatusPagePlugin)
class Notes(SimplePlugin):
    """
    A plugin whose page section appears once it has something to say, and
    says it in markup, which the page must show as text.
    """

    note: str | None = None

    def pageSection(self) -> PageSection | None:
        if self.note is None:
            return None
        return PageSection("<i>Notes</i>", ["<b>note</b>"], [[self.note]])


def makeNode(testCase: unittest.TestCase, name: str, *extra: SimplePlugin) -> Node:
    """
    A started network node on a real loopback port, with the echo plugin
    (which has a page section) and C{extra}, stopped at cleanup.
    """
    config = NodeConfig(
        dataDir=None, name=name, role="network", listen=("tcp:0:interface=127.0.0.1",), api=None
    )
    plugins = [EchoPlugin(), SimplePlugin("ping", Pong, sessionLimit=3), *extra]
    node = buildNode(
        reactor,
        config,
        generateIdentity(),
        plugins,
        services=True,
        managePeers=False,
        topologyOptions={"damping": 0.0},
    )
    node.startService()
    testCase.addCleanup(node.stopService)
    return node


def js(value: str) -> str:
    return json.dumps(value)


class BrowserPageTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not browser.available():
            if inCI():
                self.fail(f"no browser at {browser.CHROMIUM}: apt-get install -y chromium")
            raise unittest.SkipTest("chromium is not installed (apt-get install -y chromium)")

    async def _page(self) -> None:
        notes = Notes("notes", Echo)
        alpha = makeNode(self, "LAB.ALPHA", notes)
        beta, gamma = makeNode(self, "LAB.BETA"), makeNode(self, "LAB.GAMMA")
        api = ManagementService(alpha, "tcp:0:interface=127.0.0.1", self.mktemp(), {})
        api.events.period = 0.5  # RTTs change with no event: the test waits for one
        api.startService()
        self.addCleanup(api.stopService)
        await api.whenListening()
        await beta.connect(await nodeAddress(alpha))
        await gamma.connect(await nodeAddress(beta))

        chromium = browser.Browser(reactor)
        self.addCleanup(chromium.stop)
        await chromium.start()
        assert api.url is not None
        await chromium.open(f"{api.url}?token={api.token}")

        row = f"#neighbours tr[data-node-id={js(beta.nodeID)}]"
        dot = f"#topology g[data-node-id={js(gamma.nodeID)}]"
        # A neighbour, and the node behind it once the topology floods.
        await chromium.waitFor(f"document.querySelector({js(row)})")
        await chromium.waitFor(f"document.querySelector({js(dot)})")
        self.assertEqual(await chromium.evaluate("location.search"), "")
        self.assertEqual(await chromium.evaluate("document.cookie"), "")  # HttpOnly
        # The RTT, once the link measured one.
        await alpha.links[beta.nodeID].mux.ping()
        await chromium.waitFor(f"document.querySelector({js(row)}).cells[4].textContent !== '-'")
        cells = await chromium.evaluate(
            f"[...document.querySelector({js(row)}).cells].map(c => c.textContent)"
        )
        self.assertEqual(cells[0], "LAB.BETA")
        self.assertRegex(cells[4], r"^\d+\.\d\d ms$")
        self.assertEqual(
            await chromium.evaluate("document.querySelectorAll('#topology line').length"), 2
        )
        await chromium.waitFor("document.getElementById('live').textContent === 'live'")
        uptime = await chromium.evaluate(
            "document.querySelector('#node tr:nth-child(2) td:last-child').textContent"
        )
        self.assertRegex(uptime, r"^\d+ s$")

        # A session, shown as it is bound; the echo plugin's section.
        client = await beta.openSession(alpha.nodeID, "echo", lambda info: EchoClient(reactor))
        await chromium.waitFor("document.querySelector('#sessions tr[data-session-id]')")
        sections = await chromium.evaluate(
            "[...document.querySelectorAll('#plugin-sections h2')].map(h => h.textContent)"
        )
        self.assertEqual(sections, ["Echo"])

        # An action: echo to the neighbour, from its row's button.
        await chromium.evaluate(
            f"document.querySelector({js(row + ' button[data-action=echo]')}).click()"
        )
        result = await chromium.waitFor(
            "document.getElementById('action-result').className === 'done'"
            " && document.getElementById('action-result').textContent"
        )
        self.assertIn("echo LAB.BETA: 3/3 back", result)

        # A laptop screen: no sideways scrolling.
        self.assertLessEqual(
            await chromium.evaluate("document.documentElement.scrollWidth"), chromium.width
        )
        shot = os.environ.get("APPN_PAGE_SCREENSHOT")
        if shot:
            await chromium.screenshot(shot)

        # A plugin's section, live, its markup shown as text.
        notes.note = "<img src=x onerror=alert(1)>"
        await chromium.waitFor("document.querySelectorAll('#plugin-sections h2').length === 2")
        self.assertEqual(
            await chromium.evaluate(
                "[...document.querySelectorAll('#plugin-sections section:last-child *')]"
                ".map(e => e.tagName + ':' + (e.children.length ? '' : e.textContent))"
            ),
            [
                "H2:<i>Notes</i>",
                "TABLE:",
                "TR:",
                "TH:<b>note</b>",
                "TR:",
                "TD:<img src=x onerror=alert(1)>",
            ],
        )

        # A node that leaves disappears: beta's row, and gamma behind it.
        client.transport.loseConnection()
        await beta.stopService()
        await chromium.waitFor(f"!document.querySelector({js(row)})")
        await chromium.waitFor(f"!document.querySelector({js(dot)})")
        self.assertEqual(
            await chromium.evaluate("document.querySelectorAll('#topology g.node').length"), 1
        )

    def test_page(self) -> Deferred[None]:
        """
        The page shows the neighbour with its RTT, the topology graph and a
        session, live; its echo button works; it fits 1280x800; a plugin's
        section appears live, as text; a node that stops disappears from it.
        """
        return Deferred.fromCoroutine(self._page())
