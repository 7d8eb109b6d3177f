"""The remote-like model API of ``bench.py scaleout``: the testing kit's ``ModelServer`` with
each embeddings request held ``--delay-ms`` before it is answered, run as its own process so
that its threads share no interpreter (and no GIL) with the client that times the asks.

    python scripts/benchmarks/model_stub.py --delay-ms 100 --dimensions 1024

Prints one JSON line once it listens (``{"port": ..., "base_url": ..., "api_key": ...}``), then
serves until its standard input closes; then prints one more JSON line with what it received
(embedding requests, texts embedded, chat requests) and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rag_pipeline.testing.model_api import ModelServer

API_KEY = "sk-bench"


def received(stub: ModelServer) -> dict[str, Any]:
    """How many requests of each kind came in, and how many texts were embedded."""
    embeddings = stub.embedding_requests()
    texts = 0
    for request in embeddings:
        body = request.body if isinstance(request.body, dict) else {}
        given = body.get("input")
        texts += len(given) if isinstance(given, list) else 1
    return {
        "embedding_requests": len(embeddings),
        "texts_embedded": texts,
        "chat_requests": len(stub.chat_requests()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--dimensions", type=int, default=1024)
    args = parser.parse_args()
    with ModelServer(api_key=API_KEY, embedding_dim=args.dimensions) as stub:
        stub.delay(args.delay_ms / 1000, kind="embeddings")
        ready = {"port": stub.port, "base_url": stub.base_url, "api_key": API_KEY}
        print(json.dumps(ready), flush=True)
        sys.stdin.read()  # the parent closes our stdin to stop us
        print(json.dumps(received(stub)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
