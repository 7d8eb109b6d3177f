"""The load process of ``bench.py serve``: N client threads posting questions to a running
service's ``/v1/chat/completions``, run as its own process so that the client's work does not
share the server's interpreter (it still shares the machine's cores: the report says so).

    python scripts/benchmarks/load.py URL QUESTIONS.json --concurrency 16 [--key KEY]

Prints one JSON object: wall seconds, and per request its latency, HTTP status and error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def post_all(
    url: str, questions: list[str], concurrency: int, key: str | None, timeout: float
) -> dict[str, Any]:
    """Send every question once, ``concurrency`` at a time; each thread keeps one connection."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    results: list[dict[str, Any] | None] = [None] * len(questions)
    cursor = iter(range(len(questions)))
    take = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            while True:
                with take:
                    index = next(cursor, None)
                if index is None:
                    return
                body = {
                    "model": "rag",
                    "messages": [{"role": "user", "content": questions[index]}],
                }
                started = time.perf_counter()
                try:
                    response = client.post("/v1/chat/completions", json=body)
                    status, error = response.status_code, None
                    if status != 200:
                        error = response.text[:300]
                    elif "choices" not in response.json():
                        error = "no choices in the response"
                except httpx.HTTPError as e:
                    status, error = 0, f"{type(e).__name__}: {e}"
                results[index] = {
                    "seconds": time.perf_counter() - started,
                    "status": status,
                    "error": error,
                }

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"wall_s": time.perf_counter() - started, "requests": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("questions", type=Path, help="a JSON list of question strings")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--key", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    questions = json.loads(args.questions.read_text(encoding="utf-8"))
    print(json.dumps(post_all(args.url, questions, args.concurrency, args.key, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
