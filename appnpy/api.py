"""
The stable import surface for session plugin authors and embedders.

Everything a plugin needs is importable from here; the modules behind it may
move between releases, this list will not.
"""

from zope.interface import implementer

from appnpy.errors import (
    APPNError,
    ConfigurationError,
    NoRoute,
    NoSuchNode,
    Reason,
    ResourceNotFound,
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
    "APPNError",
    "ConfigurationError",
    "NoRoute",
    "NoSuchNode",
    "ResourceNotFound",
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

# Plugin extension points of the operator's tools: appn commands, management
# API routes, status page sections, metrics (docs/writing-plugins.md).
from appnpy.cli import APIClient, APIRequestFailed  # noqa: E402
from appnpy.interfaces import (  # noqa: E402  # kept as one block after the core names
    IAPIClient,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IMetricsPlugin,
    IStatusPagePlugin,
)
from appnpy.ops.extensions import APIError, PageSection, PluginRequest  # noqa: E402

__all__ += [
    "APIClient",
    "APIError",
    "APIRequestFailed",
    "IAPIClient",
    "IAPIRoutesPlugin",
    "ICommandPlugin",
    "IMetricsPlugin",
    "IStatusPagePlugin",
    "PageSection",
    "PluginRequest",
]
