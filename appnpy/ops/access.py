"""
Who may use the management API, and what its access log says of them.

Three secrets, all new on each start: the API token (written to
C{<dataDir>/api-token}, sent as C{Authorization: Bearer}), the page cookie's
value (a separate secret, so the token itself is never stored by a browser)
and the page's CSRF value (embedded in the page, sent back in
C{X-APPN-CSRF} with each action).  None of them is ever logged: Twisted's
stock access log writes the whole URI and the referrer, and the page's first
URL carries C{?token=}, so L{AccessLogSite} writes the path only.
"""

from __future__ import annotations

import hmac
import secrets

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.server import Request

#: The page cookie's name.
COOKIE = b"appn_page"
#: The header that carries the page's CSRF value with a cookie-authenticated request.
CSRF_HEADER = b"x-appn-csrf"


def _header(request: Request, name: bytes) -> bytes:
    value = request.getHeader(name) or b""
    return value.encode("latin-1") if isinstance(value, str) else value


def _same(candidate: bytes, secret: str) -> bool:
    return bool(secret) and hmac.compare_digest(candidate, secret.encode("ascii"))


class Credentials:
    """
    The secrets of one start of the management API and the checks of a
    request against them; empty (nothing passes) until L{renew}.
    """

    def __init__(self) -> None:
        self.token = ""
        self.pageSecret = ""
        self.csrf = ""

    def renew(self) -> None:
        self.token = secrets.token_urlsafe(32)
        self.pageSecret = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(24)

    def checkToken(self, candidate: bytes) -> bool:
        return _same(candidate, self.token)

    def bearer(self, request: Request) -> bool:
        """
        Whether C{request} carries C{Authorization: Bearer <token>}.
        """
        scheme, _, value = _header(request, b"authorization").partition(b" ")
        return scheme.lower() == b"bearer" and self.checkToken(value.strip())

    def pageCookie(self, request: Request) -> bool:
        """
        Whether C{request} carries this start's page cookie.
        """
        return _same(request.getCookie(COOKIE) or b"", self.pageSecret)

    def setPageCookie(self, request: Request) -> None:
        request.addCookie(
            COOKIE, self.pageSecret.encode("ascii"), path=b"/", httpOnly=True, sameSite="strict"
        )

    def authorised(self, request: Request) -> bool:
        """
        An API request: the bearer token, or the page's cookie with its CSRF
        header.  A page of another origin on the same host is "same site"
        (ports do not count), so the browser would send it the cookie; but
        it can neither read the CSRF value nor send a custom header without
        a CORS preflight, which this API never grants.
        """
        if self.bearer(request):
            return True
        csrf = _header(request, CSRF_HEADER)
        return self.pageCookie(request) and _same(csrf, self.csrf)


class AccessLogSite(server.Site):
    """
    The management API's site, whose access log line has the method, path
    and status only, at debug level (an operator's C{appn status} is no
    news): never a query string, a referrer or a header.
    """

    accessLog = Logger(namespace="appnpy.ops.access")
    displayTracebacks = False
    #: No "Starting factory <...object at 0x...>" lines.
    noisy = False

    def logPrefix(self) -> str:
        # What the listening port logs: "management API starting on 7701".
        return "management API"

    def log(self, request: http.Request) -> None:
        self.accessLog.debug(
            "management API: {method} {path} answered {code}",
            method=request.method.decode("ascii", "replace"),
            path=request.path[:200].decode("ascii", "replace"),
            code=request.code,
        )
