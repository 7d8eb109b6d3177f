"""The chat page (/) and the admin page (/admin): static files shipped in the package."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
