"""Who may see and do what: HTTP Basic auth, the ``authorize`` hook, read-only mode, and
the checks every action passes (a POST, a CSRF token, the same origin).

The CSRF token is stateless: a random cookie per browser (``SameSite=Strict``, HttpOnly)
and, in each form, an HMAC of that cookie under the app's secret. A page of another site
can neither read the cookie nor compute the token; and the ``Origin`` (or ``Referer``)
header of the POST must name this site.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

CSRF_COOKIE = "pgtasq_csrf"
CSRF_FIELD = "csrf_token"
USER_ENV = "PGTASQ_WEB_USER"
PASSWORD_ENV = "PGTASQ_WEB_PASSWORD"

# What the ``authorize`` hook is asked: "view" for every page, or the action a POST performs.
ACTIONS = ("view", "download", "cancel", "retry", "delete", "run_now", "pause", "resume")

Authorize = Callable[[Request, str], "bool | Awaitable[bool]"]

log = logging.getLogger("pgtasq.web")


class BasicAuth:
    """ASGI middleware: every request (pages, actions, static files) needs the credentials.

    Compared in constant time; a refusal is a 401 with a ``WWW-Authenticate`` challenge
    and no detail. The user name is kept in ``scope["pgtasq.user"]`` for the action log.
    """

    def __init__(self, app: ASGIApp, user: str, password: str, realm: str = "pgtasq") -> None:
        self.app = app
        self._expected = f"{user}:{password}".encode()
        self._user = user
        self._realm = realm

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, encoded = value.partition(b" ")
                if scheme.lower() != b"basic":
                    return False
                try:
                    given = base64.b64decode(encoded.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                return hmac.compare_digest(given, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            if scope["type"] in ("http", "websocket"):
                scope["pgtasq.user"] = self._user
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", f'Basic realm="{self._realm}"'.encode()),
                    (b"content-type", b"text/plain; charset=utf-8"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"authentication required\n"})


def parse_basic_auth(value: str) -> tuple[str, str]:
    """``user:password`` as a pair; ValueError (without the value) when it is not one."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("basic auth must be USER:PASSWORD, both non-empty")
    return user, password


def who(request: Request) -> str:
    """Who is acting, for the log: the Basic auth user, else the client's address."""
    user = request.scope.get("pgtasq.user")
    if user:
        return str(user)
    client = request.client
    return f"anonymous@{client.host}" if client is not None else "anonymous"


async def authorize(hook: Authorize | None, request: Request, action: str) -> None:
    """Ask the embedding app's hook; a False answer is a 403."""
    if hook is None:
        return
    allowed = hook(request, action)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    if not allowed:
        raise HTTPException(403, f"not allowed: {action}")


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(secret: bytes, cookie: str) -> str:
    return hmac.new(secret, cookie.encode(), hashlib.sha256).hexdigest()


def csrf_cookie(request: Request) -> str:
    """This browser's CSRF cookie: the one it sent, or a new one (set on the response by
    `pgtasq.web._app`)."""
    existing = getattr(request.state, "csrf_cookie", None)
    if existing is not None:
        return str(existing)
    value = request.cookies.get(CSRF_COOKIE) or ""
    if len(value) < 32:
        value = new_csrf_cookie()
        request.state.csrf_new = True
    request.state.csrf_cookie = value
    return value


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, trusted: tuple[str, ...]) -> bool:
    """The POST comes from a page of this site: its ``Origin`` (else ``Referer``) is this
    request's own scheme and host, or one of ``trusted`` (for a TLS-terminating proxy)."""
    source = request.headers.get("origin")
    if source is None or source == "null":
        referer = request.headers.get("referer")
        source = _origin_of(referer) if referer else None
    if not source:
        return False
    source = source.lower().rstrip("/")
    host = request.headers.get("host", "").lower()
    own = {f"{request.url.scheme}://{host}"}
    return source in own or source in {t.lower().rstrip("/") for t in trusted}


async def check_action(
    request: Request,
    form: Any,
    *,
    action: str,
    secret: bytes,
    read_only: bool,
    hook: Authorize | None,
    trusted_origins: tuple[str, ...],
) -> None:
    """Everything an action must pass, in order: not read-only (403), the hook (403), the
    same origin (403), a valid CSRF token (403)."""
    if read_only:
        raise HTTPException(403, "the dashboard is read-only")
    await authorize(hook, request, action)
    if not same_origin(request, trusted_origins):
        log.warning("refused %s by %s: not from this site", action, who(request))
        raise HTTPException(403, "cross-origin request refused")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get(CSRF_FIELD)
    if not cookie or not isinstance(given, str):
        raise HTTPException(403, "missing CSRF token: reload the page")
    if not hmac.compare_digest(given, csrf_token(secret, cookie)):
        raise HTTPException(403, "invalid CSRF token: reload the page")
