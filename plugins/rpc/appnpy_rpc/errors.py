"""
RPC errors: one class, a stable code and a message.

A remote error never carries a traceback: the callee logs its own failure
and sends only the code and a short message (docs/protocol.md, section 20).
"""

from __future__ import annotations

import re

#: The codes the plugin itself uses; an application may raise others.
UNKNOWN_SERVICE = "unknown-service"
UNKNOWN_METHOD = "unknown-method"
BAD_ARGUMENTS = "bad-arguments"
BAD_RESULT = "bad-result"
REMOTE_ERROR = "remote-error"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
TOO_MANY_CALLS = "too-many-calls"
DEPTH_EXCEEDED = "depth-exceeded"
SESSION_CLOSED = "session-closed"
NOT_AUTHORIZED = "not-authorized"
PROTOCOL_ERROR = "protocol-error"

CODES = (
    UNKNOWN_SERVICE,
    UNKNOWN_METHOD,
    BAD_ARGUMENTS,
    BAD_RESULT,
    REMOTE_ERROR,
    TIMEOUT,
    CANCELLED,
    TOO_MANY_CALLS,
    DEPTH_EXCEEDED,
    SESSION_CLOSED,
    NOT_AUTHORIZED,
    PROTOCOL_ERROR,
)

#: An error code on the wire: what an application may choose, too.
CODE_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,63}\Z")
#: Longest error message sent or accepted, in characters.
MAX_MESSAGE = 1024


class RPCError(Exception):
    """
    A remote call failed.  C{code} is stable (see docs/rpc.md for the list);
    C{message} says what happened, for a person.

    A handler raises C{RPCError("not-found", "no key 'x'")} to answer its
    caller with its own code; any other exception reaches the caller as
    C{remote-error} without its text.
    """

    def __init__(self, code: str, message: str = "") -> None:
        if not isinstance(code, str) or not CODE_PATTERN.match(code):
            raise ValueError(
                f"an RPC error code is 1-64 of a-z 0-9 - starting with a letter: {code!r}"
            )
        super().__init__(code, message)
        self.code = code
        self.message = str(message)[:MAX_MESSAGE]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return f"RPCError({self.code!r}, {self.message!r})"
