"""The page for people at `/`: static files from `api/web`, served with the headers that keep it safe.

No build step and nothing from another site: the HTML, one script and one
style sheet ship in the package. The page talks to the same API as every other
client, with the key (if the server has keys) in the Authorization header.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

WEB = Path(__file__).resolve().parent / "web"
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "app.css": "text/css; charset=utf-8"}
# no inline script or style, nothing from elsewhere, never inside another site's frame
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self' blob:; "
          "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": POLICY, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
           "referrer-policy": "no-referrer", "cache-control": "no-cache"}


def add_page(api: FastAPI) -> None:
    """`GET /` and `GET /web/{name}`: the page and its two assets."""

    @api.get("/", include_in_schema=False)
    async def page() -> Response:
        return _file("index.html")

    @api.get("/web/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in FILES or name == "index.html":
            return Response("no such file", status_code=404, media_type="text/plain", headers=HEADERS)
        return _file(name)


def _file(name: str) -> Response:
    return FileResponse(WEB / name, media_type=FILES[name], headers=HEADERS)
