"""
The stable import surface for session plugin authors and embedders.

Everything a plugin needs is importable from here; the modules behind it may
move between releases, this list will not.
"""

from zope.interface import implementer

from appnpy.cp.messages import decodePeerCBOR as decodeCBOR
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
    IAPIClient,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IKeywordSearchable,
    IMetricsPlugin,
    INode,
    IPluginLifecycle,
    IResourceDirectory,
    ISession,
    ISessionInfo,
    ISessionPlugin,
    IStatusPagePlugin,
)
from appnpy.link.identity import verifyNodeSignature
from appnpy.ops.extensions import (
    APIError,
    PageSection,
    PluginRequest,
)

__all__ = [
    "APIError",
    "APPNError",
    "ConfigurationError",
    "IAPIClient",
    "IAPIRoutesPlugin",
    "ICommandPlugin",
    "IKeywordSearchable",
    "IMetricsPlugin",
    "INode",
    "IPluginLifecycle",
    "IResourceDirectory",
    "ISession",
    "ISessionInfo",
    "ISessionPlugin",
    "IStatusPagePlugin",
    "NoRoute",
    "NoSuchNode",
    "PageSection",
    "PluginRequest",
    "Reason",
    "ResourceNotFound",
    "SessionClosed",
    "SessionError",
    "SessionRefused",
    "decodeCBOR",
    "implementer",
    "verifyNodeSignature",
]
