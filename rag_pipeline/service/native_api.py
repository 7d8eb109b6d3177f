"""The native API: /healthz, /readyz, /v1/ask (with sessions), /v1/search."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
