"""The daemon's HTTP listener (aiohttp, on the daemon's own event loop): metrics, health, the timeline page.

Routes (GET only; anything else is 405):

* ``/healthz``: liveness, 200 while the process serves HTTP at all (``{"status": "alive", "phase"}``);
* ``/readyz``: readiness, 200 or 503 with :meth:`memory_agent.status.Readiness.to_json`;
* ``/metrics``: Prometheus text (or OpenMetrics, by ``Accept``), see :mod:`memory_agent.metrics`;
* ``/`` and ``/static/*``: the timeline page (no build step, no external requests: a strict
  Content-Security-Policy allows nothing but this origin);
* ``/api/*``: the page's JSON (:mod:`memory_agent.web.api`), 503 until the daemon serves.

Health and metrics read :class:`memory_agent.status.DaemonStatus`, which takes no I/O, so they answer
at once however many reports wait in the inbox. The page and its API show what agents reported, so when
a token is configured the API needs it, as ``Authorization: Bearer <token>`` or ``?token=`` (the page's
files hold no data); off loopback without a token the daemon serves no page at all
(:attr:`memory_agent.config.HttpConfig.page_needs_token`). Health and metrics carry no event data and
need no token.

aiohttp rather than Starlette on uvicorn: ``AppRunner``/``TCPSite`` start and stop a server inside a
running loop and leave signal handling to the daemon, while uvicorn's ``Server.serve()`` installs its own
SIGINT/SIGTERM handlers, which the daemon's drain-on-signal needs to own.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from memory_agent.config import HttpConfig
from memory_agent.errors import ConfigError, QueryError, internal_error_id
from memory_agent.metrics import Metrics
from memory_agent.status import DaemonStatus, readiness
from memory_agent.web.api import PageApi

__all__ = ["STATIC_DIR", "HttpServer"]

log = logging.getLogger(__name__)

#: The page's files: index.html, app.js, app.css.
STATIC_DIR = Path(__file__).with_name("static")
_STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_JSON = "application/json"

ApiCall = Callable[[Mapping[str, str]], Awaitable[dict[str, Any]]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, ensure_ascii=False), status=status, content_type=_JSON,
                        headers={"Cache-Control": "no-store"})


class HttpServer:
    """Serves the routes above on ``host:port`` (port 0: any free one, see :attr:`port`).

    ``status``: the daemon's snapshot function; ``page``: the page's API, ``None`` to serve no page;
    ``token``: required by the page and its API when set. ``start()`` raises ConfigError naming the
    address and the flag when it cannot listen (port in use, address not on this host).
    """

    def __init__(self, *, host: str, port: int, status: Callable[[], DaemonStatus], metrics: Metrics,
                 page: PageApi | None, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self._status = status
        self._metrics = metrics
        self._page = page
        self._token = token
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        if self._page is None:
            app.router.add_get("/", self._page_off)
        else:
            page = self._page
            app.router.add_get("/", self._index)
            app.router.add_get("/static/{name}", self._static)
            app.router.add_get("/api/search", self._api(page.search))
            app.router.add_get("/api/timeline", self._api(page.timeline))
            app.router.add_get("/api/daily", self._api(page.daily))
        return app

    async def start(self) -> None:
        """Listen. Raises ConfigError when the address cannot be bound."""
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            what = f"{self.host}:{self.port}"
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"HTTP port {self.port} is in use ({what}): stop what uses it, or pick another "
                                  "with --listen HOST:PORT (http.listen; \"\" turns the listener off)",
                                  key="http.listen") from None
            raise ConfigError(f"cannot listen on {what} ({exc.strerror or exc}): fix --listen / http.listen",
                              key="http.listen") from None
        self._runner = runner
        if self.port == 0:  # the port the system chose
            self.port = int(runner.addresses[0][1])
        log.info("HTTP on %s: /metrics, /healthz, /readyz%s", self.url,
                 (", timeline page at /" + (" (token required)" if self._token else "")) if self._page else "")

    async def close(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- middleware ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """The token for the page's API (constant-time comparison). The page's files hold no data and health
        and metrics no event data: they are open."""
        if self._token and request.path.startswith("/api/"):
            given = request.query.get("token", "")
            header = request.headers.get("Authorization", "")
            if header.lower().startswith("bearer "):
                given = header[7:].strip()
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                return _json({"status": "error", "error": "this page needs the token: open it as /?token=... or "
                              "send Authorization: Bearer <token>"}, status=401)
        return await handler(request)

    # --- health and metrics ------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        s = self._status()
        return _json({"status": "alive", "phase": s.phase, "uptime_s": s.uptime_s})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = readiness(self._status())
        return _json(ready.to_json(), status=200 if ready.ready else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.exposition(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    # --- the page ---------------------------------------------------------------------------

    async def _page_off(self, request: web.Request) -> web.Response:
        return web.Response(status=403, text="The timeline page is off: this listener is reachable from other hosts "
                            "and no token is set. Set http.token_env or http.token_file in @memory's config (or "
                            "listen on 127.0.0.1). /metrics, /healthz and /readyz are served.\n")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={**_PAGE_HEADERS, "Content-Type": "text/html"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:  # a fixed list: no directory listing, no path tricks
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC_DIR / name, headers={**_PAGE_HEADERS, "Content-Type": _STATIC[name]})

    def _api(self, call: ApiCall) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            if self._status().phase != "serving":
                return _json({"status": "error", "error": "@memory is not serving yet; try again shortly"}, 503)
            try:
                return _json(await call(request.query))
            except QueryError as exc:
                return _json({"status": "error", "error": str(exc)}, status=400)
            except Exception:
                error_id = internal_error_id()
                log.exception("page request %s failed (error %s)", request.path, error_id)
                return _json({"status": "error", "error": f"internal error (error id {error_id}); the @memory "
                              "operator's log has the details"}, status=500)

        return handle


def http_server(
    http: HttpConfig, *, status: Callable[[], DaemonStatus], metrics: Metrics, page: PageApi
) -> HttpServer | None:
    """The listener ``[http]`` asks for, not started; ``None`` when ``http.listen`` is off.

    The timeline ``page`` is left out (logged) when the address is reachable from other hosts and no
    token is set. Raises ``ConfigError`` when the named token variable or file is missing.
    """
    address = http.address
    if address is None:
        return None
    token = http.token()
    served: PageApi | None = page
    if token is None and http.page_needs_token:
        served = None
        log.warning("the timeline page is off: http.listen = %s is reachable from other hosts and no token "
                    "is set (http.token_env or http.token_file); /metrics, /healthz and /readyz are served",
                    http.listen)
    return HttpServer(host=address[0], port=address[1], status=status, metrics=metrics, page=served, token=token)
