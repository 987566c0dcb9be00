"""
The listings in docs/ run as they stand.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

DOCS = Path(__file__).resolve().parent.parent / "docs"


def listing(doc: str, name: str) -> str:
    text = (DOCS / doc).read_text()
    match = re.search(rf"<!-- listing: {name} -->\s*```python\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError(f"no listing {name!r} in docs/{doc}")
    return match.group(1)


def loadListing(doc: str, name: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": f"docs_{name}"}
    exec(compile(listing(doc, name), f"docs/{doc}:{name}", "exec"), namespace)
    return namespace


class WritingPluginsListing(SynchronousTestCase):
    def test_listingTestsPass(self) -> None:
        """
        The plugin listing in docs/writing-plugins.md defines tests, and
        they pass.
        """
        from twisted.trial.reporter import TestResult
        from twisted.trial.runner import TestLoader

        namespace = loadListing("writing-plugins.md", "upper")
        suite = TestLoader().loadClass(namespace["UpperTests"])  # type: ignore[arg-type]
        result = TestResult()
        suite.run(result)
        self.assertEqual(result.testsRun, 2)
        self.assertEqual((result.errors, result.failures), ([], []))

    def test_listingPluginIsValid(self) -> None:
        """
        The listing's plugin provides ISessionPlugin.
        """
        from zope.interface.verify import verifyObject

        from appnpy.interfaces import ISessionPlugin

        namespace = loadListing("writing-plugins.md", "upper")
        verifyObject(ISessionPlugin, namespace["UpperPlugin"]())  # type: ignore[operator]


del TestCase


class ExtensionPointsDocumented(SynchronousTestCase):
    def test_everyExtensionPointDocumented(self) -> None:
        """
        docs/writing-plugins.md names every plugin extension point that
        appnpy.api exports, and the echo plugin provides each of them.
        """
        from appnpy_echo import echoPlugin

        from appnpy import api

        text = (DOCS / "writing-plugins.md").read_text()
        for name in (
            "ICommandPlugin",
            "IAPIRoutesPlugin",
            "IStatusPagePlugin",
            "IMetricsPlugin",
        ):
            interface = getattr(api, name)
            self.assertIn(f"`{name}`", text)
            self.assertTrue(interface.providedBy(echoPlugin), name)

    def test_everyPublicInterfaceDocumented(self) -> None:
        """
        docs/writing-plugins.md names every interface appnpy.api exports.
        """
        from appnpy import api

        text = (DOCS / "writing-plugins.md").read_text()
        names = [n for n in api.__all__ if n.startswith("I") and n[1:2].isupper()]
        self.assertIn("ISessionPlugin", names)
        missing = [n for n in names if f"`{n}`" not in text and f"`appnpy.api.{n}`" not in text]
        self.assertEqual(missing, [])
