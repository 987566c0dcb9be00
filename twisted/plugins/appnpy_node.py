# The twist dropin: `twist appnnode`.  No __init__.py beside this file, ever.
from twisted.application.service import ServiceMaker

appnnode = ServiceMaker(
    "appnpy node",
    "appnpy.tap",
    "Run an appnpy peer-to-peer node (APPN on TLS 1.3 and yamux).",
    "appnnode",
)
