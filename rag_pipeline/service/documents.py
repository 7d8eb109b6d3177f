"""Documents of the served collection: upload (admin), list, delete; uploads go to the
managed folder and are ingested under the writer lock."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
