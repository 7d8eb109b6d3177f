"""The knowledge-gap report (/v1/gaps, admin) and answer feedback (/v1/feedback)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
