"""
Discovery: the twist dropin and the session plugins are found through their
entry points and provide their interfaces; a broken plugin is reported with
its name and distribution.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from appnpy.errors import PluginError
from appnpy.interfaces import ISessionPlugin
from appnpy.session import plugins


@attrs.frozen
class FakeDistribution:
    name: str
    version: str


@attrs.frozen
class FakeEntryPoint:
    """
    Stands in for an installed entry point whose code is broken.
    """

    name: str
    value: str
    dist: FakeDistribution
    loaded: Any = None

    def load(self) -> Any:
        if self.loaded is None:
            raise ImportError(f"No module named {self.value.split(':')[0]!r}")
        return self.loaded


class DropinTests(SynchronousTestCase):
    def test_appnnodeFound(self) -> None:
        """
        `twist` finds the appnnode service maker through the dropin, and it
        provides IServiceMaker and IPlugin.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("appnnode", makers)
        verifyObject(IServiceMaker, makers["appnnode"])
        verifyObject(IPlugin, makers["appnnode"])


class SessionPluginDiscoveryTests(SynchronousTestCase):
    def test_builtinsInstalled(self) -> None:
        """
        The echo and ping plugins are installed under the entry-point group
        by their own distribution, load, and provide ISessionPlugin.
        """
        available = plugins.availablePlugins()
        for name in ("echo", "ping"):
            self.assertIn(name, available)
            self.assertEqual(available[name].dist.name, "appnpy-echo")
            plugin = plugins.loadPlugin(name)
            verifyObject(ISessionPlugin, plugin)
            self.assertEqual(plugin.name, name)

    def test_notInstalled(self) -> None:
        """
        Asking for a plugin that is not installed names it and lists the
        installed ones.
        """
        e = self.assertRaises(PluginError, plugins.loadPlugin, "no-such-plugin")
        self.assertIn("no-such-plugin", str(e))
        self.assertIn("echo", str(e))

    def test_brokenImportNamesDistribution(self) -> None:
        """
        A plugin whose code fails to import is reported with its name and
        its distribution, so the operator knows what to fix or uninstall.
        """
        broken = FakeEntryPoint("chatty", "chatty_plugin:plugin", FakeDistribution("chatty", "0.3"))
        self.patch(plugins, "availablePlugins", lambda: {"chatty": broken})
        e = self.assertRaises(PluginError, plugins.loadPlugin, "chatty")
        self.assertIn("'chatty'", str(e))
        self.assertIn("chatty 0.3", str(e))

    def test_notAPlugin(self) -> None:
        """
        An entry point naming an object that does not provide
        ISessionPlugin is refused, naming its distribution.
        """
        wrong = FakeEntryPoint("odd", "odd:thing", FakeDistribution("odd-dist", "1.0"), object())
        self.patch(plugins, "availablePlugins", lambda: {"odd": wrong})
        e = self.assertRaises(PluginError, plugins.loadPlugin, "odd")
        self.assertIn("odd-dist 1.0", str(e))
        self.assertIn("ISessionPlugin", str(e))


    def test_classMadeForEachNode(self) -> None:
        """
        An entry point naming a plugin class gives every load (every node) a
        fresh object, so per-node state is never shared.
        """
        from appnpy_echo import EchoPlugin

        named = FakeEntryPoint("echo", "e:EchoPlugin", FakeDistribution("e", "1"), EchoPlugin)
        self.patch(plugins, "availablePlugins", lambda: {"echo": named})
        first, second = plugins.loadPlugin("echo"), plugins.loadPlugin("echo")
        self.assertIsInstance(first, EchoPlugin)
        self.assertIsNot(first, second)

class ExtensionPointTests(SynchronousTestCase):
    def test_echoProvidesEveryExtensionPoint(self) -> None:
        """
        The installed echo plugin, the template, provides each operator-tool
        extension point; ping provides none of them.
        """
        from appnpy.api import IAPIRoutesPlugin, ICommandPlugin, IMetricsPlugin, IStatusPagePlugin

        echo, ping = plugins.loadPlugin("echo"), plugins.loadPlugin("ping")
        for interface in (ICommandPlugin, IAPIRoutesPlugin, IStatusPagePlugin, IMetricsPlugin):
            verifyObject(interface, echo)
            self.assertFalse(interface.providedBy(ping))
