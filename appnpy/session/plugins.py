"""
Finding and checking session plugins.

Plugins are published under the entry-point group C{appnpy.session_plugins};
each entry point names an object providing L{ISessionPlugin}.  A plugin that
fails to import or does not provide the interface is reported with its name
and distribution, so the operator knows what to fix or uninstall.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from appnpy.errors import ConfigurationError, PluginError
from appnpy.interfaces import ISessionPlugin

ENTRY_POINT_GROUP = "appnpy.session_plugins"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")


def availablePlugins() -> dict[str, EntryPoint]:
    """
    The installed session plugins by name.
    """
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def checkPlugin(plugin: object, origin: str = "") -> ISessionPlugin:
    """
    Check that C{plugin} provides L{ISessionPlugin} with a valid name.

    @raise PluginError: naming the plugin and where it came from.
    """
    where = f" from {origin}" if origin else ""
    try:
        verifyObject(ISessionPlugin, plugin)
    except Invalid as e:
        raise PluginError(f"{plugin!r}{where} does not provide ISessionPlugin: {e}") from None
    name = plugin.name  # type: ignore[attr-defined]
    if not isinstance(name, str) or not _NAME.match(name):
        raise PluginError(f"plugin name {name!r}{where} must be 1-32 of a-z 0-9 -")
    limit = plugin.sessionLimit  # type: ignore[attr-defined]
    if type(limit) is not int or limit < 0:
        raise PluginError(f"plugin {name}{where}: sessionLimit must be a non-negative int")
    return plugin  # type: ignore[return-value]


def loadPlugin(name: str) -> ISessionPlugin:
    """
    Load the installed plugin called C{name}.

    @raise PluginError: if it is not installed, fails to import, or is not a
        valid plugin.
    """
    ep = availablePlugins().get(name)
    if ep is None:
        known = ", ".join(sorted(availablePlugins())) or "none"
        raise PluginError(f"no session plugin {name!r} is installed (installed: {known})")
    try:
        plugin: ISessionPlugin = ep.load()
        # An entry point may name a class: a plugin that keeps state for the
        # node it serves (shares, rooms, services) gets a fresh object for
        # every node, even when one process runs several.
        if isinstance(plugin, type):
            plugin = plugin()
    except Exception as e:
        raise PluginError(f"plugin {name!r} from {_origin(ep)} failed to load: {e!r}") from None
    checkPlugin(plugin, _origin(ep))
    if plugin.name != name:
        raise PluginError(
            f"entry point {name!r} from {_origin(ep)} names a plugin called {plugin.name!r}"
        )
    return plugin


def loadPlugins(
    names: Iterable[str] | None,
    sections: Mapping[str, Mapping[str, object]],
    configFile: str | None = None,
) -> list[ISessionPlugin]:
    """
    Load and configure the enabled plugins: C{names}, or every installed one
    when L{None}.  Each is handed its C{[plugin.<name>]} section.

    @raise ConfigurationError: for a section whose plugin is not installed.
    @raise PluginError: for a plugin that is missing or broken.
    """
    installed = availablePlugins()
    for name in sections:
        if name not in installed:
            raise ConfigurationError(
                f"{configFile or 'the configuration'}: section [plugin.{name}] is for a plugin "
                f"that is not installed (installed: {', '.join(sorted(installed)) or 'none'})"
            )
    plugins = []
    for name in list(names) if names is not None else sorted(installed):
        plugin = loadPlugin(name)
        plugin.configure(dict(sections.get(name, {})))
        plugins.append(plugin)
    return plugins
