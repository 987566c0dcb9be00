"""
Signed search hits.

A hit says "node N holds a file of this size and SHA-256 at this path of this
share", signed by N's identity key, so that no relay of a keyword search and
no central directory server can forge or alter one:

    {"v": 1, "node", "share", "path", "size", "sha256", "mtime",
     "key": SPKI DER of N's key, "sig": Ed25519 signature}

C{sig} is C{node.sign(HIT_CONTEXT, canonical CBOR of {v, node, share, path,
size, sha256, mtime}))}.  A receiver keeps a hit only if the key belongs to
the node it names (node IDs derive from keys), the signature verifies, the
fields are well formed and, for a hit that came through the directory's
search, the named node is the one the directory reported.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import cbor2

from appnpy.api import INode, verifyNodeSignature
from appnpy_files import wire

HIT_CONTEXT = "appnpy-files-hit-v1"
HIT_VERSION = 1
#: The most a hit may take encoded (the directory's own limit per result).
MAX_HIT = 4096
_NODE_ID = re.compile(r"[a-z2-7]{52}")
_SIGNED = ("v", "node", "share", "path", "size", "sha256", "mtime")


@attrs.frozen
class Hit:
    """
    A verified hit.
    """

    node: str
    share: str
    path: str
    size: int
    sha256: str
    mtime: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def toJSON(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "share": self.share,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "mtime": self.mtime,
        }


def _signedBytes(fields: dict[str, Any]) -> bytes:
    return cbor2.dumps({k: fields[k] for k in _SIGNED}, canonical=True)


def makeHit(
    node: INode, share: str, path: str, size: int, sha256: str, mtime: int
) -> dict[str, Any]:
    """
    This node's signed hit for one file.
    """
    fields: dict[str, Any] = {
        "v": HIT_VERSION,
        "node": node.nodeID,
        "share": share,
        "path": path,
        "size": size,
        "sha256": sha256,
        "mtime": mtime,
    }
    signature = node.sign(HIT_CONTEXT, _signedBytes(fields))
    return {**fields, "key": node.publicKey, "sig": signature}


def verifyHit(raw: object, reportedNode: str | None = None) -> Hit | None:
    """
    The hit C{raw} as L{Hit} if it is well formed and signed by the node it
    names (and that node is C{reportedNode}, when given); else L{None}.
    """
    if not isinstance(raw, dict):
        return None
    try:
        if len(cbor2.dumps(raw, canonical=True)) > MAX_HIT:
            return None
    except Exception:
        return None
    v, node, share, path = raw.get("v"), raw.get("node"), raw.get("share"), raw.get("path")
    size, sha, mtime = raw.get("size"), raw.get("sha256"), raw.get("mtime")
    key, sig = raw.get("key"), raw.get("sig")
    if (
        v != HIT_VERSION
        or type(node) is not str
        or not _NODE_ID.fullmatch(node)
        or type(share) is not str
        or not wire.validShareName(share)
        or type(path) is not str
        or not _validPath(path)
        or type(size) is not int
        or not 0 <= size <= wire.MAX_UINT63
        or type(sha) is not str
        or not wire.SHA256_HEX.fullmatch(sha)
        or type(mtime) is not int
        or abs(mtime) > wire.MAX_UINT63
        or type(key) is not bytes
        or type(sig) is not bytes
    ):
        return None
    if reportedNode is not None and reportedNode != node:
        return None
    try:
        ok = verifyNodeSignature(node, key, HIT_CONTEXT, _signedBytes(raw), sig)
    except Exception:
        return None
    if not ok:
        return None
    return Hit(node, share, path, size, sha, mtime)


def _validPath(path: str) -> bool:
    if not 0 < len(path) <= wire.MAX_PATH or "\x00" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
