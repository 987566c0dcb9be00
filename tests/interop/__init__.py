"""
Interop tests: real C{twist appnnode} processes on loopback sockets.
"""
