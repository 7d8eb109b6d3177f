"""Bearer-key checks: user keys for ask/chat/search/feedback, admin keys for documents and
gaps. With no key configured at all the service is open (``rag serve`` then binds loopback
only, see ``check_bind``)."""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request

from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from rag_pipeline.config import ServeSettings


def _matches(key: str, keys: list[str]) -> bool:
    # Constant-time comparison against every key: no early exit that times which one matched.
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def auth_enabled(cfg: ServeSettings) -> bool:
    return bool(cfg.api_keys or cfg.admin_keys)


def require_user(request: Request) -> None:
    """FastAPI dependency of the user routes: an API key or an admin key."""
    cfg: ServeSettings = request.app.state.service.settings.serve
    if not auth_enabled(cfg):
        return
    key = _bearer(request)
    keys = [k.get_secret_value() for k in (*cfg.api_keys, *cfg.admin_keys)]
    if key is None or not _matches(key, keys):
        raise HTTPException(
            401,
            "missing or wrong API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_admin(request: Request) -> None:
    """FastAPI dependency of the admin routes: 401 without a valid key, 403 for a user key."""
    cfg: ServeSettings = request.app.state.service.settings.serve
    if not auth_enabled(cfg):
        return
    key = _bearer(request)
    admin = [k.get_secret_value() for k in cfg.admin_keys]
    if key is not None and _matches(key, admin):
        return
    user = [k.get_secret_value() for k in cfg.api_keys]
    if key is not None and _matches(key, user):
        raise HTTPException(403, "this route needs an admin key (RAG_SERVE__ADMIN_KEYS)")
    raise HTTPException(
        401,
        "missing or wrong admin key: send Authorization: Bearer <admin key>",
        headers={"WWW-Authenticate": "Bearer"},
    )


def check_bind(cfg: ServeSettings, host: str) -> None:
    """Without keys the service may only listen on loopback: anyone who reaches it could read
    the knowledge base and upload to it."""
    if auth_enabled(cfg):
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"refusing to serve on {host} without API keys: set RAG_SERVE__API_KEYS (and "
            "RAG_SERVE__ADMIN_KEYS for uploads) or bind 127.0.0.1"
        )
