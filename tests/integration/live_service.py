"""The service on a real uvicorn server on a free 127.0.0.1 port, in a thread of the test
process (so a test can also look at the state it serves).

>>> with live_service(settings) as service:                  # doctest: +SKIP
...     httpx.get(service.url + "/healthz").json()
{'status': 'ok'}
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import uvicorn

from rag_pipeline.testing.chroma import HOST, free_port

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.service.state import ServiceState

START_TIMEOUT = 120.0  # the real local model loads in a few seconds, more on a busy machine


@dataclass
class LiveService:
    url: str
    state: ServiceState
    server: uvicorn.Server


@contextmanager
def live_service(
    settings: Settings, *, wait_ready: bool = True, log_config: dict | None = None
) -> Iterator[LiveService]:
    """Serve ``create_app(settings)`` until the block ends; with ``wait_ready`` the block starts
    once ``/readyz`` answers 200 (a load failure fails the test with its message)."""
    from rag_pipeline.service import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", log_config=log_config, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    state = app.state.service
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start on {url}")
        time.sleep(0.02)
    if wait_ready:
        if not state.ready.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"the service on {url} did not load in {START_TIMEOUT:.0f} s")
        if state.load_error:
            server.should_exit = True
            thread.join(10)
            raise RuntimeError(f"the service failed to load: {state.load_error}")
    try:
        yield LiveService(url, state, server)
    finally:
        server.should_exit = True
        thread.join(30)


def wait_until_ready(
    url: str, timeout: float = START_TIMEOUT, process: subprocess.Popen[str] | None = None
) -> None:
    """Poll ``/readyz`` of a service started elsewhere (``rag serve`` in a subprocess); when
    that ``process`` is given and exits first, fail at once with what it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            said = ((out or "") + (err or ""))[-3000:]
            raise RuntimeError(f"the service for {url} exited with {process.returncode}: {said}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready in {timeout:.0f} s")
