"""Security headers of the dashboard's pages, API answers and static files."""

from __future__ import annotations

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def secure(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(HEADERS)
    if cache:
        response.headers["Cache-Control"] = "public, max-age=3600"
    return response


class SecureStatic(StaticFiles):
    """Static files with the same headers (cacheable: they change only with the package)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        return secure(await super().get_response(path, scope), cache=True)
