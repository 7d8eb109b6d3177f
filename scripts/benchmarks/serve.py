"""``bench.py serve``: the HTTP service against the same questions asked in process.

Ingests the repository's ``corpus/`` with the default local model into a temp data folder,
then, with the extractive answerer:

- in process: ``Assistant.from_settings`` once, then the questions (``corpus/questions.jsonl``,
  cycled) asked one after the other with ``Assistant.ask``: requests per second and latency;
- over HTTP: ``rag serve`` in a subprocess, and a separate load process
  (``scripts/benchmarks/load.py``) posting the same questions to ``/v1/chat/completions`` at
  each concurrency (default 1, 16, 64): requests per second, p50/p95/p99 latency, errors, and
  the server process's CPU seconds per request.

Targets (reported, never asserted): no errors at any concurrency; throughput at concurrency
16 at least 0.9 x the in-process sequential throughput. The load process shares the machine's
cores with the server; on a 2-core machine that is part of what the figures show.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    REPO,
    RESULTS,
    default_settings,
    load_average,
    machine_info,
    met,
    percentile,
    target,
    timed,
    write_results,
)

LOAD_SCRIPT = Path(__file__).with_name("load.py")
START_TIMEOUT = 180.0
WARMUP = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency")
    parser.add_argument(
        "--concurrency", default="1,16,64", help="comma-separated client concurrencies"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")


def read_questions(count: int) -> list[str]:
    path = REPO / "corpus" / "questions.jsonl"
    with path.open(encoding="utf-8") as lines:
        pool = [json.loads(line)["question"] for line in lines if line.strip()]
    return [pool[i % len(pool)] for i in range(count)]


def throughput_stats(seconds: list[float], wall_s: float, errors: int) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "errors": errors,
        "wall_s": round(wall_s, 3),
        "req_per_s": round(len(ms) / wall_s, 3) if wall_s > 0 else None,
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def bench_in_process(settings: Any, questions: list[str]) -> dict[str, Any]:
    from rag_pipeline.assistant import Assistant

    assistant, build_s = timed(lambda: Assistant.from_settings(settings))
    for question in questions[:WARMUP]:
        assistant.ask(question)
    seconds = []
    started = time.perf_counter()
    for question in questions:
        _, s = timed(lambda q=question: assistant.ask(q))
        seconds.append(s)
    wall = time.perf_counter() - started
    return {"build_s": round(build_s, 3), **throughput_stats(seconds, wall, 0)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAG_LLM__PROVIDER": "extractive", "RAG_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "rag_pipeline.cli", "serve", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    import httpx

    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"rag serve exited {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"rag serve was not ready in {START_TIMEOUT:.0f} s")


def run_load(url: str, questions_file: Path, concurrency: int) -> dict[str, Any]:
    command = [
        sys.executable,
        str(LOAD_SCRIPT),
        url,
        str(questions_file),
        "--concurrency",
        str(concurrency),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load process exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def bench_service(
    data_dir: Path, questions: list[str], concurrencies: list[int], scratch: Path
) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server, start_s = timed(lambda: start_server(data_dir, port, scratch / "serve.log"))
    rows: dict[str, Any] = {"start_s": round(start_s, 3)}
    try:
        warm = scratch / "warm.json"
        warm.write_text(json.dumps(questions[:WARMUP], ensure_ascii=False), encoding="utf-8")
        run_load(url, warm, 1)
        questions_file = scratch / "questions.json"
        questions_file.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
        for concurrency in concurrencies:
            cpu_before, load_before = _cpu_seconds(server.pid), load_average()
            load = run_load(url, questions_file, concurrency)
            cpu = _cpu_seconds(server.pid) - cpu_before
            requests = load["requests"]
            errors = [r for r in requests if r["error"] is not None]
            stats = throughput_stats([r["seconds"] for r in requests], load["wall_s"], len(errors))
            rows[str(concurrency)] = {
                **stats,
                "server_cpu_s_per_request": round(cpu / len(requests), 4),
                "error_examples": [f"{r['status']}: {r['error']}" for r in errors[:3]],
                "load_avg_1_5_15min_before": load_before,
            }
            print(
                f"concurrency {concurrency:>3}: {stats['req_per_s']:.1f} req/s, "
                f"p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms, "
                f"{len(errors)} errors"
            )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    rows["server_exit_code"] = server.returncode
    return rows


def run(args: argparse.Namespace) -> int:
    from rag_pipeline.indexing import ingest

    start_load = load_average()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    questions = read_questions(args.requests)
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = default_settings(data_dir, llm={"provider": "extractive"})
        report, ingest_s = timed(lambda: ingest([REPO / "corpus"], settings))
        print(f"ingested corpus/: {report.chunks_added} chunks in {ingest_s:.1f} s")
        in_process = bench_in_process(settings, questions)
        print(f"in process: {in_process['req_per_s']:.1f} req/s, p50 {in_process['p50_ms']:.0f} ms")
        service = bench_service(data_dir, questions, concurrencies, Path(tmp))
    targets: dict[str, Any] = {
        f"errors_at_{c}": target(float(service[str(c)]["errors"]), "<=", 0) for c in concurrencies
    }
    if "16" in service and in_process["req_per_s"]:
        ratio = service["16"]["req_per_s"] / in_process["req_per_s"]
        targets["throughput_16_vs_in_process"] = target(ratio, ">=", 0.9)
    results = {
        "benchmark": "serve",
        "machine": machine_info(load_at_start=start_load),
        "data": {
            "corpus": "corpus/ (repository sample)",
            "chunks": report.chunks_added,
            "ingest_s": round(ingest_s, 3),
            "requests_per_concurrency": len(questions),
            "distinct_questions": len(set(questions)),
        },
        "settings": "package defaults (hybrid retriever, local e5), extractive answerer; one "
        "rag serve worker; the load process runs on the same machine",
        "in_process_sequential": in_process,
        "service": service,
        "targets": targets,
    }
    write_results(args.out, results)
    for name, t in targets.items():
        print(f"{name}: {t['value']} (target {t['target']}): {met(t)}")
    return 0
