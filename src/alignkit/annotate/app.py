"""The annotation web application (FastAPI, server-rendered pages, one small script).

Pages: ``/login``, ``/annotate`` (annotators), ``/admin`` and ``/admin/export.jsonl`` (admins).
JSON API: ``POST /api/session`` (log in with a token), ``GET /api/next``, ``POST /api/labels``,
``GET /api/progress``, ``GET /api/admin/stats``, ``DELETE /api/session``.

Security model:

* every page and API call except the login page and static assets needs a valid session;
  a missing or bad session is 401, a valid session of the wrong role is 403;
* annotator and admin are separate roles with separate tokens; neither can use the other's pages;
* state-changing form posts carry the session's CSRF token (the login form a double-submit
  cookie); API writes carry it in ``X-CSRF-Token``; a cross-site ``Origin`` or
  ``Sec-Fetch-Site`` on a POST/DELETE is refused before any handler runs;
* failed logins are rate limited per client address (429 with ``Retry-After``);
* request bodies above ``max_body_bytes`` are refused with 413 before parsing;
* every response carries a strict Content-Security-Policy, ``nosniff``, ``Referrer-Policy: same-origin``,
  ``frame-ancestors 'none'`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from alignkit.annotate import assignment, auth, render, stats
from alignkit.annotate.db import Database
from alignkit.annotate.export import preference_rows
from alignkit.httpguard import BodyLimit, send_json

FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" '
           'fill="#2f5bea"/><path d="M9 22l7-13 7 13" stroke="#fff" stroke-width="3" fill="none" '
           'stroke-linecap="round" stroke-linejoin="round"/></svg>')
SESSION_COOKIE = "ak_session"
LOGIN_CSRF_COOKIE = "ak_login_csrf"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'; connect-src 'self'")


@dataclass(frozen=True)
class ServerSettings:
    """Runtime knobs of the server (``alignkit annotate serve`` flags)."""

    lease_s: float = 1800.0  # an open assignment holds its slot this long after it was last shown
    session_lifetime_s: float = 12 * 3600.0
    max_body_bytes: int = 64 * 1024  # a label form is a few hundred bytes; comments are capped at 4000 chars
    login_max_failures: int = 10  # per client address per window
    login_window_s: float = 300.0
    secure_cookies: bool = False  # set when served behind HTTPS


# --- ASGI guard: body size, cross-site writes, security headers ---------------------------------


class Guard:
    """Pure ASGI middleware applied to every HTTP request before routing: cross-site writes, security headers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]
                if not any(k.lower() == b"cache-control" for k, _ in message.get("headers", [])):
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE") and _cross_site(headers):
            return await _plain(send_with_headers, 403, "cross-site request refused")

        return await self.app(scope, receive, send_with_headers)


def _cross_site(headers: dict[str, str]) -> bool:
    """True when a browser tells us the request comes from another origin.

    Browsers send ``Sec-Fetch-Site``; only ``same-origin`` and ``none`` (typed URL, bookmark) are
    accepted, since ``same-site`` includes other ports of the same host. Without it (older
    browsers, scripts) an ``Origin`` header, when present, must name this host.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


async def _plain(send, status: int, text: str):
    await send_json(send, status, json.dumps({"detail": text}).encode())


# --- application --------------------------------------------------------------------------------


def create_app(db: Database, settings: ServerSettings | None = None) -> FastAPI:
    """Build the application around an open database: middleware, static files and the routers."""
    settings = settings or ServerSettings()
    app = FastAPI(title="alignkit annotate", docs_url=None, redoc_url=None, openapi_url=None)
    # the last middleware added runs first: Guard adds security headers to BodyLimit's refusals too
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, respond=_plain)
    app.add_middleware(Guard)
    app.mount("/static", StaticFiles(directory=str(render.STATIC_DIR)), name="static")
    app.state.db = db
    app.state.settings = settings
    ctx = _Context(db, settings)
    for routes in (_home_routes, _auth_routes, _session_routes, _annotator_routes, _annotator_api_routes, _admin_routes):
        app.include_router(routes(ctx))
    return app


class _Context:
    """What every router shares: the database, the settings, and the request helpers."""

    def __init__(self, db: Database, settings: ServerSettings):
        self.db, self.settings = db, settings
        self.criteria: list[str] = list(db.setting("criteria"))
        self.scale: int = int(db.setting("scale"))
        self.limiter = auth.LoginRateLimiter(settings.login_max_failures, settings.login_window_s)

    def who(self, request: Request) -> auth.Principal | None:
        return auth.session_principal(self.db, request.cookies.get(SESSION_COOKIE))

    def html(self, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(render.page(name, **ctx), status_code=status)

    def login_page(self, request: Request, status: int = 200, error: str | None = None,
                   next_path: str = "") -> HTMLResponse:
        pre = secrets.token_urlsafe(24)
        resp = self.html("login.html", status, csrf_token=pre, error=error, next_path=_safe_next(next_path))
        resp.set_cookie(LOGIN_CSRF_COOKIE, pre, httponly=True, samesite="strict", secure=self.settings.secure_cookies,
                        path="/login", max_age=3600)
        return resp

    def require_html(self, request: Request, role: str) -> auth.Principal | HTMLResponse:
        p = self.who(request)
        if p is None:
            return self.login_page(request, 401, "Please log in.", request.url.path)
        if p.role != role:
            return self.html("error.html", 403, title="Forbidden", message=f"This page is for {role}s.", principal=p)
        return p

    def require_api(self, request: Request, role: str | None = None,
                    write: bool = False) -> auth.Principal | JSONResponse:
        p = self.who(request)
        if p is None:
            return JSONResponse({"detail": "not logged in"}, status_code=401)
        if role is not None and p.role != role:
            return JSONResponse({"detail": f"requires the {role} role"}, status_code=403)
        if write and not auth.csrf_matches(p.csrf_token, request.headers.get("x-csrf-token")):
            return JSONResponse({"detail": "missing or wrong X-CSRF-Token"}, status_code=403)
        return p

    def set_session(self, resp: Response, cookie: str) -> None:
        resp.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", secure=self.settings.secure_cookies,
                        path="/", max_age=int(self.settings.session_lifetime_s))

    @staticmethod
    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def try_login(self, request: Request, token: str) -> tuple[Any, str | None]:
        """``((user_id, name, role), None)`` or ``(status, message)`` for a refused login."""
        wait = self.limiter.retry_after(self.client(request))
        if wait > 0:
            return 429, f"Too many failed logins; try again in {int(wait) + 1} s."
        found = auth.verify_token(self.db, token or "")
        if found is None:
            self.limiter.record_failure(self.client(request))
            return 401, "Unknown or revoked token."
        return found, None

    def annotate_page(self, p: auth.Principal, status: int = 200, message: str | None = None,
                      error: str | None = None, form: dict[str, str] | None = None) -> HTMLResponse:
        task = assignment.next_task(self.db, p.user_id, self.settings.lease_s)
        prog = assignment.progress(self.db, p.user_id, self.settings.lease_s)
        return self.html("annotate.html", status, principal=p, task=task, progress=prog, criteria=self.criteria,
                         scale=self.scale, message=message, error=error, form=form or {})


def _home_routes(ctx: _Context) -> APIRouter:
    """The start page (redirects by role) and the favicon."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request):
        p = ctx.who(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        return RedirectResponse("/admin" if p.role == "admin" else "/annotate", status_code=303)

    @router.get("/favicon.svg")
    def favicon():
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    return router


def _auth_routes(ctx: _Context) -> APIRouter:
    """Login and logout with the HTML form."""
    router = APIRouter()

    @router.get("/login", response_class=HTMLResponse)
    def login_get(request: Request, next: str = ""):
        return ctx.login_page(request, next_path=next)

    @router.post("/login", response_class=HTMLResponse)
    async def login_post(request: Request):
        form = {k: str(v) for k, v in (await request.form()).items()}
        return await _in_thread(login_submit, request, form)

    def login_submit(request: Request, form: dict[str, str]) -> Response:
        if not auth.csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf_token")):
            return ctx.login_page(request, 403, "The login form expired; please try again.")
        found, error = ctx.try_login(request, form.get("token", ""))
        if error is not None:
            resp = ctx.login_page(request, found, error, form.get("next", ""))
            if found == 429:
                resp.headers["Retry-After"] = str(int(ctx.limiter.retry_after(ctx.client(request))) + 1)
            return resp
        user_id, _name, role = found
        cookie, _csrf = auth.create_session(ctx.db, user_id, ctx.settings.session_lifetime_s)
        default = "/admin" if role == "admin" else "/annotate"
        resp = RedirectResponse(_safe_next(form.get("next", "")) or default, status_code=303)
        ctx.set_session(resp, cookie)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @router.post("/logout")
    async def logout(request: Request):
        form = {k: str(v) for k, v in (await request.form()).items()}
        return await _in_thread(logout_submit, request, form)

    def logout_submit(request: Request, form: dict[str, str]) -> Response:
        p = ctx.who(request)
        if p is None:
            return ctx.login_page(request, 401, "Please log in.")
        if not auth.csrf_matches(p.csrf_token, form.get("csrf_token")):
            return ctx.html("error.html", 403, title="Forbidden", message="Missing or wrong CSRF token.", principal=p)
        auth.end_session(ctx.db, p.session_id)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    return router


def _session_routes(ctx: _Context) -> APIRouter:
    """Login and logout through the JSON API (a session cookie plus a CSRF token)."""
    router = APIRouter()

    @router.post("/api/session")
    async def api_login(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"detail": "expected Content-Type: application/json"}, status_code=415)
        return await _in_thread(api_login_submit, request, await request.body())

    def api_login_submit(request: Request, raw: bytes) -> Response:
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"detail": "invalid JSON body"}, status_code=400)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            return JSONResponse({"detail": "field 'token': expected a string"}, status_code=422)
        found, error = ctx.try_login(request, token)
        if error is not None:
            headers = {"Retry-After": str(int(ctx.limiter.retry_after(ctx.client(request))) + 1)} if found == 429 else None
            return JSONResponse({"detail": error}, status_code=found, headers=headers)
        user_id, name, role = found
        cookie, csrf = auth.create_session(ctx.db, user_id, ctx.settings.session_lifetime_s)
        resp = JSONResponse({"user": name, "role": role, "csrf_token": csrf})
        ctx.set_session(resp, cookie)
        return resp

    @router.delete("/api/session")
    def api_logout(request: Request):
        p = ctx.require_api(request, write=True)
        if not isinstance(p, auth.Principal):
            return p
        auth.end_session(ctx.db, p.session_id)
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    return router


def _annotator_routes(ctx: _Context) -> APIRouter:
    """The annotator's labelling page and its form submission."""
    router = APIRouter()

    @router.get("/annotate", response_class=HTMLResponse)
    def annotate_get(request: Request, m: str = ""):
        p = ctx.require_html(request, "annotator")
        if not isinstance(p, auth.Principal):
            return p
        return ctx.annotate_page(p, message=_MESSAGES.get(m))

    @router.post("/annotate/{assignment_id}", response_class=HTMLResponse)
    async def annotate_post(request: Request, assignment_id: int):
        form = {k: str(v) for k, v in (await request.form()).items()}
        return await _in_thread(annotate_submit, request, assignment_id, form)

    def annotate_submit(request: Request, assignment_id: int, form: dict[str, str]) -> Response:
        p = ctx.require_html(request, "annotator")
        if not isinstance(p, auth.Principal):
            return p
        if not auth.csrf_matches(p.csrf_token, form.get("csrf_token")):
            return ctx.html("error.html", 403, title="Forbidden", message="Missing or wrong CSRF token; reload the page.",
                        principal=p)
        ratings: dict[str, dict[str, str]] = {}
        for key, value in form.items():
            if key.startswith("rating.") and value:
                _, crit, side = (key.split(".", 2) + ["", ""])[:3]
                ratings.setdefault(crit, {})[side] = value
        try:
            choice, clean, comment = assignment.validate_label(form.get("choice"), ratings, form.get("comment", ""),
                                                               ctx.criteria, ctx.scale)
            result = assignment.submit_label(ctx.db, p.user_id, assignment_id, choice, clean, comment)
        except assignment.SubmitError as exc:
            if exc.status == 422:
                return ctx.annotate_page(p, 422, None, _human(str(exc)), form)
            if exc.status == 409:
                return RedirectResponse("/annotate?m=expired", status_code=303)
            return ctx.html("error.html", exc.status, title="Refused", message=str(exc), principal=p)
        return RedirectResponse("/annotate?m=" + ("duplicate" if result.duplicate else "saved"), status_code=303)

    return router


def _annotator_api_routes(ctx: _Context) -> APIRouter:
    """The annotator's JSON API: next item, labels, progress."""
    router = APIRouter()

    @router.get("/api/next")
    def api_next(request: Request):
        p = ctx.require_api(request, "annotator")
        if not isinstance(p, auth.Principal):
            return p
        task = assignment.next_task(ctx.db, p.user_id, ctx.settings.lease_s)
        body: dict[str, Any] = {"task": None, "criteria": ctx.criteria, "scale": ctx.scale}
        if task is not None:
            body["task"] = {"assignment_id": task.assignment_id, "item_id": task.item_id, "prompt": task.prompt,
                            "left": task.left, "right": task.right}
        body["progress"] = _progress_json(assignment.progress(ctx.db, p.user_id, ctx.settings.lease_s))
        return body

    @router.post("/api/labels")
    async def api_label(request: Request):
        return await _in_thread(api_label_submit, request, await request.body())

    def api_label_submit(request: Request, raw: bytes) -> Response:
        p = ctx.require_api(request, "annotator", write=True)
        if not isinstance(p, auth.Principal):
            return p
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"detail": "invalid JSON body"}, status_code=400)
        if not isinstance(body, dict) or type(body.get("assignment_id")) is not int:
            return JSONResponse({"detail": "field 'assignment_id': expected an integer"}, status_code=422)
        try:
            choice, clean, comment = assignment.validate_label(body.get("choice"), body.get("ratings"),
                                                               body.get("comment", ""), ctx.criteria, ctx.scale)
            result = assignment.submit_label(ctx.db, p.user_id, body["assignment_id"], choice, clean, comment)
        except assignment.SubmitError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        return JSONResponse({"label_id": result.label_id, "duplicate": result.duplicate},
                            status_code=200 if result.duplicate else 201)

    @router.get("/api/progress")
    def api_progress(request: Request):
        p = ctx.require_api(request, "annotator")
        if not isinstance(p, auth.Principal):
            return p
        return _progress_json(assignment.progress(ctx.db, p.user_id, ctx.settings.lease_s))

    return router


def _admin_routes(ctx: _Context) -> APIRouter:
    """The admin dashboard, the export download and the statistics API."""
    router = APIRouter()

    @router.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request, page: int = 1):
        p = ctx.require_html(request, "admin")
        if not isinstance(p, auth.Principal):
            return p
        page = max(1, page)
        per_page = 50
        s = stats.summary(ctx.db, item_offset=(page - 1) * per_page, item_limit=per_page)
        pages = max(1, -(-s["n_items"] // per_page))
        return ctx.html("admin.html", principal=p, s=s, page=page, pages=pages, criteria=ctx.criteria, scale=ctx.scale)

    @router.get("/admin/export.jsonl")
    def admin_export(request: Request, min_labels: int = 1, min_agreement: float = 0.0):
        p = ctx.require_html(request, "admin")
        if not isinstance(p, auth.Principal):
            return p
        try:
            rows, _report = preference_rows(ctx.db, min_labels, min_agreement)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return Response(body, media_type="application/jsonl",
                        headers={"Content-Disposition": 'attachment; filename="preferences.jsonl"'})

    @router.get("/api/admin/stats")
    def api_stats(request: Request, offset: int = 0, limit: int = 50):
        p = ctx.require_api(request, "admin")
        if not isinstance(p, auth.Principal):
            return p
        return stats.summary(ctx.db, item_offset=max(0, offset), item_limit=max(1, min(limit, 1000)))

    return router


_MESSAGES = {
    "saved": "Saved.",
    "duplicate": "That label was already recorded; it was not stored twice.",
    "expired": "Your previous item expired and went to someone else, so that label was not stored.",
}


def _human(message: str) -> str:
    """Form-level wording for a validation error about an API field name."""
    if message.startswith("field 'choice'"):
        return "Pick an overall choice (A better, B better, tie or both bad)."
    if message.startswith("field 'ratings"):
        return "Rate both responses on every criterion."
    return message


def _progress_json(p: assignment.Progress) -> dict[str, Any]:
    return {"done": p.done, "remaining": p.remaining, "total_labels": p.total_labels,
            "total_slots": p.total_slots, "percent": round(p.percent, 1)}


def _safe_next(path: str) -> str:
    """Only same-site absolute paths are followed after login (no open redirect)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path and path not in ("/login", "/logout"):
        return path
    return ""


async def _in_thread(fn, *args):
    """Run blocking database work off the event loop (async handlers need ``await request.form()``)."""
    return await run_in_threadpool(fn, *args)
