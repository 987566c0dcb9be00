"""
RPC data as JSON, for the management API and C{appn rpc}: bytes, which
JSON lacks, travel as C{{"$bytes": "<base64>"}}.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from appnpy_rpc.data import MAX_DEPTH, Mismatch


def toJSON(value: Any, depth: int = 0) -> Any:
    """
    Plain RPC data as JSON-encodable data.
    """
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, list):
        return [toJSON(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: toJSON(v, depth + 1) for k, v in value.items()}
    return value


def fromJSON(value: Any, depth: int = 0) -> Any:
    """
    Decoded JSON as RPC data (C{{"$bytes": ...}} maps become bytes).

    @raise Mismatch: for a malformed C{$bytes} or too deep nesting.
    """
    if depth > MAX_DEPTH:
        raise Mismatch(f"nested more than {MAX_DEPTH} deep")
    if isinstance(value, list):
        return [fromJSON(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            try:
                return base64.b64decode(value["$bytes"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise Mismatch("$bytes must hold base64 text") from None
        return {k: fromJSON(v, depth + 1) for k, v in value.items()}
    return value
