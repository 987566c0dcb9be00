"""
Sessions: BIND acceptance, adjacent sessions (one stream on one link),
the ends of routed sessions (TLS end to end over a chain of relayed
streams), and finding and checking session plugins.
"""
