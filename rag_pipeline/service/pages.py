"""The chat page (/) and the admin page (/admin): static files shipped in the package.

The files live in ``rag_pipeline.service.static`` and are read with ``importlib.resources``,
so a wheel install serves them as the checkout does. Plain HTML, CSS and ES modules: no build
step, nothing from the network. Every response carries a strict Content-Security-Policy (no
inline script, only this origin), so even a rendering bug cannot run a document's markup.

The pages load without a key; their API calls carry the one the user enters.
"""

from __future__ import annotations

import re
from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

# Only this origin, no inline script or style, no plugins, no framing, no <base> tricks.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# A flat file name with a known extension: nothing that could climb out of the package.
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|css|js|svg)$")


def _asset(name: str) -> Response:
    if not _ASSET_NAME.match(name):
        raise HTTPException(404, f"no such file: {name}")
    resource = files("rag_pipeline.service.static").joinpath(name)
    if not resource.is_file():
        raise HTTPException(404, f"no such file: {name}")
    suffix = name[name.rindex(".") :]
    return Response(
        resource.read_bytes(),
        media_type=CONTENT_TYPES[suffix],
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # Small files that change with the package version: revalidate, never go stale.
            "Cache-Control": "no-cache",
        },
    )


@router.get("/")
def chat_page() -> Response:
    """The chat page for customers."""
    return _asset("chat.html")


@router.get("/admin")
def admin_page() -> Response:
    """The admin page: upload and delete documents, read the knowledge-gap log."""
    return _asset("admin.html")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """A script, style sheet or icon of the pages."""
    return _asset(name)
