"""
A hostile directory node: it answers every locate with far more valid,
really signed records (from fresh identities it made for the purpose) than
any search needs, in many non-final replies.
"""

from __future__ import annotations

from appnpy.cp.controlpoint import ControlPoint
from appnpy.link.identity import generateIdentity
from appnpy.net.directory.messages import LocateReply, LocateRequest
from appnpy.net.directory.records import ResourceRecord
from appnpy.node import Node


def amplify(node: Node, replies: int = 50, perReply: int = 16) -> list[LocateRequest]:
    """
    Make C{node} answer each LocateRequest with C{replies} non-final replies
    of C{perReply} valid records each, then a final one.  Returns the
    requests seen, so a test can reply again after the search ended.
    """
    identities = [generateIdentity() for _ in range(perReply)]
    seen: list[LocateRequest] = []

    def flood(cp: ControlPoint, msg: LocateRequest) -> None:
        seen.append(msg)
        for _ in range(replies):
            records = [ResourceRecord.create(i, msg.name, 1, 300).toBlob() for i in identities]
            cp.sendControl(LocateReply(search_id=msg.search_id, records=records, final=False))
        cp.sendControl(LocateReply(search_id=msg.search_id))

    node.controlHandlers[LocateRequest] = flood
    return seen
