"""
The rpc session plugin: symmetric, typed remote calls between appnpy nodes.

A service is a class with exported, annotated methods::

    class Calculator(Service):
        name = "calc"

        @exported
        def add(self, a: int, b: int) -> int:
            return a + b

    rpcPlugin.expose(Calculator())        # offers rpc:calc

and a caller, anywhere in the network::

    calc = await RPCClient(node).connect("rpc:calc")
    await calc.call("add", 1, 2)          # 3

docs/rpc.md is the guide; docs/protocol.md section 20 the wire protocol.
"""

from appnpy_rpc.accounting import Limits
from appnpy_rpc.client import RPCClient
from appnpy_rpc.errors import RPCError
from appnpy_rpc.plugin import RPCPlugin, __version__
from appnpy_rpc.protocol import RemoteService, RPCProtocol
from appnpy_rpc.service import Caller, Service, exported

__all__ = [
    "Caller",
    "Limits",
    "RPCClient",
    "RPCError",
    "RPCPlugin",
    "RPCProtocol",
    "RemoteService",
    "Service",
    "__version__",
    "exported",
    "rpcPlugin",
]

#: The object the entry point names.
rpcPlugin = RPCPlugin()
