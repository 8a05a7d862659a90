"""The dashboard's pages: `/admin` (server-rendered, then refreshed by its script), the login form
and logout. The session cookie is HttpOnly, SameSite=Strict, scoped to /admin, and Secure when
the page was reached over HTTPS."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from tiergate import __version__
from tiergate.errors import TiergateError
from tiergate.service.dashboard import access, formats, panels
from tiergate.service.dashboard.headers import secure
from tiergate.service.dashboard.session import COOKIE
from tiergate.service.dashboard.state import Dashboard, dashboard
from tiergate.service.deps import Services, services

MAX_FORM_BYTES = 4096


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    t.env.globals.update(fmt=formats.fmt, tables=panels.TABLES, charts=panels.CHARTS, version=__version__)
    return t


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages = templates()

    @router.get("/admin")
    async def page(request: Request, svc: Services = Depends(services),
                   dash: Dashboard = Depends(dashboard)) -> Response:
        try:
            who = access.check(request, dash.signer)
        except TiergateError:
            return secure(RedirectResponse("/admin/login", status_code=303))
        overview = await asyncio.to_thread(dash.sampler.overview)
        context = {
            "o": overview, "csrf": who.csrf, "login": dash.signer is not None and who.via == "session",
            "interval_ms": int(dash.config.sample_interval_s * 1000),
            "categories": [c.name for c in svc.settings.cache.categories],
            "models": list(svc.router.by_model),
        }
        return secure(pages.TemplateResponse(request, "dashboard.html", context))

    @router.get("/admin/login")
    async def login_form(request: Request, dash: Dashboard = Depends(dashboard)) -> Response:
        if dash.signer is None:
            return secure(RedirectResponse("/admin", status_code=303))
        return secure(pages.TemplateResponse(request, "login.html", {"error": None}))

    @router.post("/admin/login")
    async def login(request: Request, svc: Services = Depends(services),
                    dash: Dashboard = Depends(dashboard)) -> Response:
        if dash.signer is None:
            return secure(RedirectResponse("/admin", status_code=303))
        body = await request.body()
        key = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).get("key", [""])[0].strip()
        admin_key = svc.settings.auth.admin_key() or ""
        if not key or not hmac.compare_digest(key.encode(), admin_key.encode()):
            response = pages.TemplateResponse(request, "login.html", {"error": "That is not the admin key."},
                                              status_code=401)
            return secure(response)
        response = RedirectResponse("/admin", status_code=303)
        response.set_cookie(COOKIE, dash.signer.issue(), max_age=int(dash.config.session_ttl_s), path="/admin",
                            secure=_https(request), httponly=True, samesite="strict")
        return secure(response)

    @router.post("/admin/logout")
    async def logout() -> Response:
        response = RedirectResponse("/admin/login", status_code=303)
        response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict")
        return secure(response)

    return router
