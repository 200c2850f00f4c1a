"""The pgtasq dashboard: queues, tasks, workers and schedules in a browser.

``pip install "pgtasq[web]"``, then ``pgtasq web`` serves it, or mount `create_app` inside
your own ASGI app (FastAPI, Starlette, Django's ASGI router)::

    from pgtasq.web import create_app

    app.mount("/pgtasq", create_app(dsn, basic_auth=("admin", secret)))

A Starlette app with Jinja2 templates (autoescaped), htmx served from the package and
charts drawn as SVG on the server: nothing is fetched from the network. Every action is a
POST with a CSRF token and a same-origin check, can be refused by ``read_only`` or an
``authorize(request, action)`` hook, and is logged on the ``pgtasq.web`` logger. See
docs/web.md.
"""

from __future__ import annotations

try:
    import jinja2 as _jinja2  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        f'pgtasq.web needs the web extra ({exc.name} is missing): pip install "pgtasq[web]"'
    ) from exc

from pgtasq.web._app import WebSettings, create_app
from pgtasq.web._security import ACTIONS, Authorize

__all__ = ["ACTIONS", "Authorize", "WebSettings", "create_app"]
