"""
The rate limiter of the network services: L{appnpy.link.ratelimit.TokenBucket},
named here for them.
"""

from __future__ import annotations

from appnpy.link.ratelimit import TokenBucket

__all__ = ["TokenBucket"]
