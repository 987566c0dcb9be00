"""
The stable import surface for session plugin authors and embedders.

Everything a plugin needs is importable from here; the modules behind it may
move between releases, this list will not.
"""

from zope.interface import implementer

from appnpy.errors import (
    ConfigurationError,
    Reason,
    SessionClosed,
    SessionError,
    SessionRefused,
)
from appnpy.interfaces import (
    IKeywordSearchable,
    INode,
    IPluginLifecycle,
    IResourceDirectory,
    ISession,
    ISessionInfo,
    ISessionPlugin,
)

__all__ = [
    "ConfigurationError",
    "IKeywordSearchable",
    "INode",
    "IPluginLifecycle",
    "IResourceDirectory",
    "ISession",
    "ISessionInfo",
    "ISessionPlugin",
    "Reason",
    "SessionClosed",
    "SessionError",
    "SessionRefused",
    "implementer",
]
