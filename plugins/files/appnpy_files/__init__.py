"""
The files session plugin: shares, an index, search and verified downloads.

The entry point (group C{appnpy.session_plugins}, name C{files}) names
L{filesPlugin}, the plugin object of the node C{twist appnnode} runs.
docs/files.md is the user's guide; docs/protocol.md section 18 the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from appnpy_files.plugin import FilesPlugin

__all__ = ["FilesPlugin", "__version__", "filesPlugin"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import appnpy_files.wire` (and the
    # serving side's modules) do not pull in the whole plugin.
    if name == "filesPlugin":
        from appnpy_files.plugin import FilesPlugin

        plugin = FilesPlugin()
        globals()["filesPlugin"] = plugin
        return plugin
    if name == "FilesPlugin":
        from appnpy_files.plugin import FilesPlugin

        return FilesPlugin
    raise AttributeError(name)
