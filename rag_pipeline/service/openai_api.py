"""The OpenAI-compatible API: /v1/models and /v1/chat/completions (stream or not), with
``sources`` and ``refused`` beside the standard fields."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
