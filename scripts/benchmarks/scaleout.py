"""``bench.py scaleout``: ingest workers side by side on one Chroma server and one PostgreSQL
state database, and a ``rag serve`` replica answering while they write (issue 11).

One run starts a Chroma server (``chroma run``), a throwaway PostgreSQL cluster and a remote-like
embeddings API (the testing kit's model stub in its own process, each embeddings request held
``--delay-ms``, OpenAI wire format), writes a synthetic Chinese help-centre corpus of about
``--chunks`` chunks in two disjoint halves (Markdown files of a few chunks each), then:

(a) one worker, a ``rag ingest`` process with its own data folder, ingests both halves into
    collection A: chunks/s;
(b) two workers, separate processes with separate data folders, same Chroma server and same
    PostgreSQL database, each ingest one half into collection B at the same time: total
    chunks/s over the span from the first worker's start of ingest to the last one's end;
(c) a ``rag serve`` replica on collection B (own data folder, same state URL, extractive
    answerer) is asked ``--questions`` questions one after the other over ``POST /v1/ask``
    while idle, then continuously while the two workers ingest a further corpus of new files
    into collection B, then idle again: latency p50/p90 of each;

and at the end checks collection B (and A): the store's chunk count, the record count and the
keyword index count are equal, the three id sets are the same, no id is stored twice, and
``rag verify`` agrees.

Throughput is chunks / seconds inside ``ingest()`` (the ``seconds`` of ``rag ingest --json``),
placed on the parent's clock by each process's exit time; the process wall time, which adds
interpreter start and imports, is reported beside it. Every process shares the machine's cores
(the workers, Chroma, PostgreSQL, the stub, the replica and this client): the CPU seconds of
each are recorded per phase with the load average, so a figure that does not scale can be
traced to the cores. Targets (reported, never asserted): two workers >= 1.7 x one worker's
chunks/s; replica p50 while the workers ingest <= 1.5 x idle.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .common import (
    RESULTS,
    load_average,
    machine_info,
    met,
    percentile,
    portable_path,
    target,
    write_results,
)
from .ingest import file_chunks, load_and_split

STUB_SCRIPT = Path(__file__).with_name("model_stub.py")
PACKAGES = (
    "chromadb",
    "langchain-core",
    "langchain-chroma",
    "langchain-openai",
    "openai",
    "sqlalchemy",
    "psycopg",
    "fastapi",
    "uvicorn",
)
EMBEDDING_MODEL = "text-embedding-v4"
START_TIMEOUT = 120.0
WARMUP_ASKS = 5
SPEEDUP_TARGET = 1.7
LATENCY_TARGET = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=2000, help="corpus size in chunks (a+b)")
    parser.add_argument(
        "--extra-chunks",
        type=int,
        default=None,
        help="chunks of the further corpus ingested while the replica is asked (default: --chunks)",
    )
    parser.add_argument("--delay-ms", type=float, default=100.0, help="per embeddings request")
    # DashScope's text-embedding-v4 takes at most 10 texts per request: a remote-like default.
    parser.add_argument("--batch-size", type=int, default=10, help="texts per embeddings request")
    parser.add_argument("--dimensions", type=int, default=1024, help="vector size")
    parser.add_argument("--per-file", type=int, default=4, help="sections (about chunks) a file")
    parser.add_argument("--questions", type=int, default=40, help="idle asks, before and after")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "scaleout.json")


# ---------------------------------------------------------------------------------- corpus

PRODUCTS_A = ("智能", "便携", "无线", "家用", "商用", "迷你", "静音", "节能", "旗舰", "轻薄")
PRODUCTS_B = (
    "空气净化器",
    "扫地机器人",
    "电热水壶",
    "蓝牙耳机",
    "咖啡机",
    "电动牙刷",
    "加湿器",
    "投影仪",
    "洗碗机",
    "护眼台灯",
    "破壁机",
    "智能门锁",
)
TOPICS = (
    "退货政策",
    "保修期限",
    "配送时间",
    "发票开具",
    "会员积分",
    "安装服务",
    "价格保护",
    "售后维修",
    "支付方式",
    "以旧换新",
)
CITIES = ("北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆")
ISSUES = ("无法开机", "噪音偏大", "指示灯闪烁", "漏水", "充电缓慢", "连接中断", "异味", "屏幕花屏")
PAYMENTS = ("支付宝", "微信支付", "银联卡", "信用卡", "花呗", "企业对公转账")
LEVELS = ("白银", "黄金", "铂金", "钻石")
SENTENCES: tuple[Callable[[random.Random, str, str], str], ...] = (
    lambda r, p, t: (
        f"{p}自签收之日起{r.randint(7, 30)}天内，如商品完好、配件齐全，可申请办理{t}相关手续。"
    ),
    lambda r, p, t: (
        f"请在订单详情页点击“申请售后”，选择“{r.choice(ISSUES)}”，客服会在{r.randint(2, 48)}"
        "小时内完成审核并短信通知您。"
    ),
    lambda r, p, t: (
        f"遇到{r.choice(ISSUES)}等问题，可拨打客服热线400-{r.randint(100, 999)}-"
        f"{r.randint(1000, 9999)}，服务时间为每天{r.randint(7, 9)}:00至{r.randint(20, 23)}:00。"
    ),
    lambda r, p, t: (
        f"{r.choice(CITIES)}地区的订单一般在{r.randint(1, 3)}个工作日内送达，偏远地区可能顺延"
        f"{r.randint(1, 5)}天，大促期间以页面提示为准。"
    ),
    lambda r, p, t: (
        f"{r.choice(LEVELS)}会员购买{p}可额外获得{r.randint(2, 15)}%的积分返还，积分有效期"
        f"{r.randint(6, 24)}个月，可在结算时抵扣现金。"
    ),
    lambda r, p, t: (
        f"保修期内因{r.choice(ISSUES)}产生的检测和维修费用由我们承担，人为损坏、进水或私自拆机"
        f"的情况除外，维修周期约{r.randint(3, 15)}天。"
    ),
    lambda r, p, t: (
        f"如需开具增值税{r.choice(('普通', '专用'))}发票，请在下单后{r.randint(3, 90)}天内提交"
        "抬头和税号，电子发票将发送到您的邮箱。"
    ),
    lambda r, p, t: (
        f"本店支持{r.choice(PAYMENTS)}和{r.choice(PAYMENTS)}付款，满{r.randint(5, 50) * 100}元"
        f"可享最长{r.choice((3, 6, 12, 24))}期分期免息。"
    ),
    lambda r, p, t: (
        f"下单后{r.randint(7, 30)}天内如遇降价，可凭订单号申请补差价，每个订单限申请"
        f"{r.randint(1, 3)}次。"
    ),
)


@dataclass
class CorpusFile:
    """One generated file: its path, how many chunks the real splitter makes of it, and a
    question a customer could ask about it."""

    path: Path
    chunks: int
    question: str


def section(rng: random.Random, product: str, topic: str, chars: int) -> str:
    """Sentences about ``topic`` until about ``chars`` characters."""
    text = ""
    while len(text) < chars:
        text += rng.choice(SENTENCES)(rng, product, topic)
    return text


def write_corpus(
    root: Path, wanted: int, per_file: int, seed: int, first: int, split: Any
) -> list[CorpusFile]:
    """Markdown files under ``root`` until the real loader + splitter make ``wanted`` chunks
    (the last file may add a few more); file numbers start at ``first`` so that every file of
    every folder names a different product model."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    files: list[CorpusFile] = []
    total, number = 0, first
    while total < wanted:
        product = f"{rng.choice(PRODUCTS_A)}{rng.choice(PRODUCTS_B)}"
        model = f"{chr(65 + number % 26)}{number:05d}"
        topics = rng.sample(TOPICS, per_file)
        body = [f"# {product}（型号 {model}）服务说明\n"]
        for topic in topics:
            # Under the 250-character chunk size with the heading path: a section is a chunk.
            body.append(f"## {topic}\n\n{section(rng, product, topic, rng.randint(150, 200))}\n")
        path = root / f"{model}.md"
        path.write_text("\n".join(body), encoding="utf-8")
        count = file_chunks(path, root, split)
        question = f"{product}{model}的{rng.choice(topics)}是怎样的？"
        files.append(CorpusFile(path, count, question))
        total += count
        number += 1
    return files


# ------------------------------------------------------------------------------- processes


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process, its live descendants and the children they
    have already reaped (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += used.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Running:
    """A worker process being watched: its exit time is taken on the parent's clock."""

    name: str
    process: subprocess.Popen[bytes]
    started: float
    stdout: Path
    stderr: Path
    ended: float | None = None
    watcher: threading.Thread | None = None
    chunks_planned: int = 0

    def watch(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()


def launch(
    name: str,
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    logs: Path,
    chunks_planned: int = 0,
) -> Running:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - this interpreter and our own arguments
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    running = Running(name, process, started, out, err, chunks_planned=chunks_planned)
    running.watcher = threading.Thread(target=running.watch, daemon=True)
    running.watcher.start()
    return running


def finish(running: Running, origin: float) -> dict[str, Any]:
    """Wait for a worker; its ``rag ingest --json`` report and times relative to ``origin``."""
    if running.watcher is not None:
        running.watcher.join()
    ended = running.ended or time.monotonic()
    out = running.stdout.read_text(encoding="utf-8", errors="replace")
    try:
        report: dict[str, Any] | None = json.loads(out)
    except ValueError:
        report = None
    ingest_s = float(report["seconds"]) if report else None
    row: dict[str, Any] = {
        "worker": running.name,
        "exit_code": running.process.returncode,
        "chunks_planned": running.chunks_planned,
        "process_start_s": round(running.started - origin, 3),
        "process_end_s": round(ended - origin, 3),
        "process_wall_s": round(ended - running.started, 3),
        "ingest_s": ingest_s,
        # ingest() ends just before the report is printed and the process exits.
        "ingest_start_s": round(ended - origin - ingest_s, 3) if ingest_s else None,
        "report": report,
    }
    if running.process.returncode != 0 or report is None:
        row["stderr_tail"] = running.stderr.read_text(errors="replace")[-3000:]
        row["stdout_tail"] = out[-1500:]
    return row


def worker_env(base: dict[str, str], data_dir: Path, collection: str) -> dict[str, str]:
    return {**base, "RAG_DATA_DIR": str(data_dir), "RAG_STORE__COLLECTION": collection}


def rag_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag_pipeline.cli", *args]


@dataclass
class Servers:
    """The shared engines of a run and the environment every rag process gets."""

    chroma_host: str
    chroma_port: int
    state_url: str
    stub_url: str
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        return {name: round(tree_cpu_seconds(pid), 2) for name, pid in self.pids.items()}


@contextmanager
def model_stub(
    delay_ms: float, dimensions: int, logs: Path
) -> Iterator[tuple[dict[str, Any], Any]]:
    """The stub process; yields (its ready line, a function giving what it received)."""
    from rag_pipeline.testing.environment import clean_env

    command = [sys.executable, str(STUB_SCRIPT), "--delay-ms", str(delay_ms)]
    command += ["--dimensions", str(dimensions)]
    with (logs / "stub.err").open("wb") as err:
        stub = subprocess.Popen(  # noqa: S603 - this interpreter and our own script
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=clean_env()
        )
    if stub.stdin is None or stub.stdout is None:  # both are pipes: never
        raise RuntimeError("the model stub has no pipes")
    stdin: IO[bytes] = stub.stdin
    ready: dict[str, Any] = json.loads(stub.stdout.readline() or b"null") or {}
    if "port" not in ready:
        stub.kill()
        raise RuntimeError(f"the model stub did not start: {(logs / 'stub.err').read_text()}")
    ready["pid"] = stub.pid
    totals: dict[str, Any] = {}

    def stop() -> dict[str, Any]:
        if not totals:
            stdin.close()
            line = stub.stdout.readline() if stub.stdout else b""
            totals.update(json.loads(line or b"{}"))
            stub.wait(10)
        return totals

    try:
        yield ready, stop
    finally:
        if stub.poll() is None:
            try:
                stop()
            except (OSError, ValueError, subprocess.TimeoutExpired):
                stub.kill()


@contextmanager
def servers(args: argparse.Namespace, scratch: Path) -> Iterator[tuple[Servers, Any]]:
    """Chroma server, PostgreSQL cluster (one fresh database) and the model stub."""
    from rag_pipeline.testing.chroma import ChromaServer
    from rag_pipeline.testing.environment import clean_env
    from rag_pipeline.testing.postgres import postgres_server

    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        chroma = ChromaServer(scratch / "chroma")
        chroma.start()
        stack.callback(chroma.stop)
        # No parent folder: the server runs as the postgres user, who cannot enter our 0700
        # scratch folder; the kit's default is the system temp folder.
        pg = stack.enter_context(postgres_server())
        state_url = pg.fresh_database("scaleout")
        stub, stub_totals = stack.enter_context(model_stub(args.delay_ms, args.dimensions, logs))
        env = clean_env(
            RAG_STORE__MODE="http",
            RAG_STORE__HOST=chroma.host,
            RAG_STORE__PORT=str(chroma.port),
            RAG_STATE__URL=state_url,
            RAG_EMBEDDINGS__PROVIDER="openai",
            RAG_EMBEDDINGS__BASE_URL=stub["base_url"],
            RAG_EMBEDDINGS__MODEL=EMBEDDING_MODEL,
            RAG_EMBEDDINGS__DIMENSIONS=str(args.dimensions),
            RAG_EMBEDDINGS__BATCH_SIZE=str(args.batch_size),
            RAG_LLM__PROVIDER="extractive",
            OPENAI_API_KEY=stub["api_key"],
        )
        found = Servers(chroma.host, chroma.port, state_url, stub["base_url"], env)
        pids = {"chroma": chroma.process.pid if chroma.process else None, "postgres": pg.pid}
        found.pids = {k: v for k, v in {**pids, "stub": stub["pid"]}.items() if v is not None}
        yield found, stub_totals


# ---------------------------------------------------------------------------------- ingest


def ingest_phase(
    name: str,
    jobs: Sequence[tuple[str, Path, str, list[Path], int]],
    srv: Servers,
    scratch: Path,
) -> dict[str, Any]:
    """Run ``rag ingest --json`` workers side by side: (name, data dir, collection, paths,
    chunks planned) each; their reports and the total throughput."""
    load_before, cpu_before, children_before = load_average(), srv.cpu(), children_cpu_seconds()
    origin = time.monotonic()
    running = [
        launch(
            worker,
            rag_command("ingest", *map(str, paths), "--json"),
            worker_env(srv.env, data_dir, collection),
            scratch,
            scratch / "logs" / name,
            planned,
        )
        for worker, data_dir, collection, paths, planned in jobs
    ]
    rows = [finish(r, origin) for r in running]
    return phase_figures(rows, load_before, cpu_before, children_before, srv)


def phase_figures(
    rows: list[dict[str, Any]],
    load_before: list[float],
    cpu_before: dict[str, float],
    children_before: float,
    srv: Servers,
) -> dict[str, Any]:
    cpu_after = srv.cpu()
    ok = all(r["exit_code"] == 0 and r["report"] for r in rows)
    chunks = sum(int(r["report"]["chunks_added"]) for r in rows if r["report"])
    figures: dict[str, Any] = {"workers": rows, "all_ok": ok, "chunks_added": chunks}
    if ok:
        span = max(r["process_end_s"] for r in rows) - min(r["ingest_start_s"] for r in rows)
        wall = max(r["process_end_s"] for r in rows) - min(r["process_start_s"] for r in rows)
        figures.update(
            ingest_span_s=round(span, 3),
            chunks_per_s=round(chunks / span, 2),
            process_span_s=round(wall, 3),
            chunks_per_s_process=round(chunks / wall, 2),
        )
    figures["cpu_s"] = {
        "workers": round(children_cpu_seconds() - children_before, 2),
        **{k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
    }
    figures["load_avg_1_5_15min_before"] = load_before
    figures["load_avg_1_5_15min_after"] = load_average()
    return figures


# --------------------------------------------------------------------------------- replica


@contextmanager
def replica(srv: Servers, data_dir: Path, collection: str, scratch: Path) -> Iterator[Any]:
    """``rag serve`` on ``collection``; yields (base URL, pid) once ``/readyz`` says ready."""
    import httpx

    from rag_pipeline.testing.chroma import free_port

    port = free_port()
    # Threshold 0: the stub's hashed vectors score low, and a refusal would skip the answer
    # step; every ask then runs the whole path (query embedding, hybrid search, answer).
    env = {**worker_env(srv.env, data_dir, collection), "RAG_RETRIEVER__SCORE_THRESHOLD": "0"}
    log = scratch / "logs" / "replica.log"
    with log.open("wb") as out:
        server = subprocess.Popen(  # noqa: S603 - this interpreter and our own arguments
            rag_command("serve", "--port", str(port)),
            cwd=scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"rag serve exited {server.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rag serve was not ready in {START_TIMEOUT:.0f} s")
            time.sleep(0.2)
        yield url, server.pid
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@dataclass
class Ask:
    started: float  # on the parent's monotonic clock
    seconds: float
    status: int
    refused: bool | None
    error: str | None


def ask_once(client: Any, question: str) -> Ask:
    import httpx

    started = time.monotonic()
    began = time.perf_counter()
    try:
        response = client.post("/v1/ask", json={"question": question})
        seconds = time.perf_counter() - began
        if response.status_code != 200:
            return Ask(started, seconds, response.status_code, None, response.text[:300])
        return Ask(started, seconds, 200, bool(response.json().get("refused")), None)
    except httpx.HTTPError as e:
        return Ask(started, time.perf_counter() - began, 0, None, f"{type(e).__name__}: {e}")


def ask_stats(asks: Sequence[Ask]) -> dict[str, Any]:
    ms = [a.seconds * 1000 for a in asks if a.error is None]
    errors = [a for a in asks if a.error is not None]
    stats: dict[str, Any] = {"n": len(ms), "errors": len(errors)}
    if ms:
        stats.update(
            p50_ms=round(percentile(ms, 50), 2),
            p90_ms=round(percentile(ms, 90), 2),
            p95_ms=round(percentile(ms, 95), 2),
            mean_ms=round(sum(ms) / len(ms), 2),
            min_ms=round(min(ms), 2),
            max_ms=round(max(ms), 2),
            n_over_1s=sum(1 for m in ms if m > 1000),
            refused=sum(1 for a in asks if a.refused),
        )
    if errors:
        stats["error_examples"] = [f"{a.status}: {a.error}" for a in errors[:3]]
    return stats


def questions_cycle(questions: Sequence[str]) -> Iterator[str]:
    while True:
        yield from questions


def ask_idle(client: Any, questions: Iterator[str], count: int) -> dict[str, Any]:
    load_before = load_average()
    asks = [ask_once(client, next(questions)) for _ in range(count)]
    return {**ask_stats(asks), "load_avg_1_5_15min_before": load_before}


def ask_during(
    client: Any,
    questions: Iterator[str],
    jobs: Sequence[tuple[str, Path, str, list[Path], int]],
    srv: Servers,
    scratch: Path,
    replica_pid: int,
) -> dict[str, Any]:
    """Ask one question after another while the workers ingest; the asks that lie wholly
    inside the time when every worker is inside ``ingest()`` are the figure."""
    load_before, cpu_before, children_before = load_average(), srv.cpu(), children_cpu_seconds()
    replica_before = tree_cpu_seconds(replica_pid)
    origin = time.monotonic()
    running = [
        launch(
            worker,
            rag_command("ingest", *map(str, paths), "--json"),
            worker_env(srv.env, data_dir, collection),
            scratch,
            scratch / "logs" / "further",
            planned,
        )
        for worker, data_dir, collection, paths, planned in jobs
    ]
    asks: list[Ask] = []
    while any(r.ended is None for r in running):
        asks.append(ask_once(client, next(questions)))
    replica_cpu = tree_cpu_seconds(replica_pid) - replica_before
    rows = [finish(r, origin) for r in running]
    ingest = phase_figures(rows, load_before, cpu_before, children_before, srv)
    ingest["cpu_s"]["replica"] = round(replica_cpu, 2)
    figures: dict[str, Any] = {"ingest": ingest, "asks_while_any_worker_ran": ask_stats(asks)}
    if ingest["all_ok"]:
        low = origin + max(r["ingest_start_s"] for r in rows)
        high = origin + min(r["process_end_s"] for r in rows)
        inside = [a for a in asks if a.started >= low and a.started + a.seconds <= high]
        figures["window_s"] = round(high - low, 3)
        figures["asks_while_all_workers_ingest"] = ask_stats(inside)
    return figures


# ----------------------------------------------------------------------------- correctness


def check_collection(
    srv: Servers, collection: str, expected_chunks: int, expected_files: int, data_dir: Path
) -> dict[str, Any]:
    """Store, records and keyword index of ``collection`` agree, and ``rag verify`` says so."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from pydantic import SecretStr

    from rag_pipeline.bookkeeping import Bookkeeping
    from rag_pipeline.config import EmbeddingsSettings, Settings, StateSettings, StoreSettings
    from rag_pipeline.embeddings import build_embedding_model
    from rag_pipeline.stores import connect

    client = chromadb.HttpClient(
        host=srv.chroma_host,
        port=srv.chroma_port,
        settings=ChromaSettings(anonymized_telemetry=False),
    )
    chroma = client.get_collection(collection)
    stored = chroma.get(include=[])["ids"]
    settings = Settings(
        data_dir=data_dir,
        store=StoreSettings(
            mode="http", host=srv.chroma_host, port=srv.chroma_port, collection=collection
        ),
        state=StateSettings(url=SecretStr(srv.state_url)),
        embeddings=EmbeddingsSettings(
            provider="openai",
            base_url=srv.stub_url,
            model=EMBEDDING_MODEL,
            dimensions=int(srv.env["RAG_EMBEDDINGS__DIMENSIONS"]),
        ),
        openai_api_key=SecretStr(srv.env["OPENAI_API_KEY"]),
    )
    backend = connect(settings, build_embedding_model(settings).embeddings)
    try:
        state = Bookkeeping(settings, backend.namespace)
        records = state.records.list_keys()
        keyword = state.keyword.ids()
        sources = len(state.manifest.rows())
    finally:
        backend.close()
    same = set(stored) == set(records) == keyword
    verify = subprocess.run(  # noqa: S603 - this interpreter and our own arguments
        rag_command("verify", "--json"),
        cwd=data_dir.parent,
        env=worker_env(srv.env, data_dir, collection),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        verified: dict[str, Any] = json.loads(verify.stdout)
    except ValueError:
        verified = {"stdout": verify.stdout[-1500:], "stderr": verify.stderr[-1500:]}
    counts = {
        "store_count": chroma.count(),
        "store_ids": len(stored),
        "store_duplicate_ids": len(stored) - len(set(stored)),
        "records": len(records),
        "record_duplicate_keys": len(records) - len(set(records)),
        "keyword_index": state.keyword.count(),
        "keyword_ids": len(keyword),
        "expected_chunks": expected_chunks,
        "sources": sources,
        "expected_sources": expected_files,
        "id_sets_equal": same,
        "verify_exit_code": verify.returncode,
        "verify_problems": verified.get("problems"),
    }
    counts["ok"] = bool(
        same
        and counts["store_count"] == counts["records"] == counts["keyword_index"] == expected_chunks
        and counts["store_duplicate_ids"] == 0
        and counts["record_duplicate_keys"] == 0
        and sources == expected_files
        and verify.returncode == 0
    )
    return counts


# -------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from rag_pipeline.config import Settings

    start_load = load_average()
    split = Settings().split
    extra = args.extra_chunks if args.extra_chunks is not None else args.chunks
    with tempfile.TemporaryDirectory(prefix="rag-bench-scaleout-") as tmp:
        scratch = Path(tmp)
        corpus = scratch / "corpus"
        halves = [
            write_corpus(
                corpus / f"h{n}", args.chunks // 2, args.per_file, args.seed + n, n * 50000, split
            )
            for n in (1, 2)
        ]
        further = [
            write_corpus(
                corpus / f"x{n}",
                extra // 2,
                args.per_file,
                args.seed + 10 + n,
                n * 50000 + 100000,
                split,
            )
            for n in (1, 2)
        ]
        data = corpus_figures(corpus, halves, further, split)
        print(
            f"corpus: {data['chunks']} chunks in {data['files']} files (two halves of "
            f"{data['half_chunks']}), further corpus {data['further_chunks']} chunks; "
            f"embeddings {args.delay_ms:g} ms per request of <= {args.batch_size} texts"
        )
        with servers(args, scratch) as (srv, stub_totals):
            results = run_phases(args, srv, scratch, corpus, halves, further)
            results["cpu_s_whole_run"] = srv.cpu()  # before the stub exits
            received = stub_totals()
        # Every chunk embedded once, and one query embedding per ask: nothing twice.
        expected = data["chunks"] * 2 + data["further_chunks"] + results["replica"]["asks_total"]
        results["correctness"]["embedding_texts"] = {
            **received,
            "expected_texts": expected,
            "ok": received.get("texts_embedded") == expected,
        }
    results = {
        "benchmark": "scaleout",
        "machine": machine_info(PACKAGES, load_at_start=start_load),
        "versions_extra": server_versions(),
        "setup": {
            **data,
            "delay_ms_per_embeddings_request": args.delay_ms,
            "batch_size": args.batch_size,
            "dimensions": args.dimensions,
            "embedding_model_name": EMBEDDING_MODEL,
            "stub": "rag_pipeline.testing.model_api.ModelServer in its own process (OpenAI "
            "wire format, ThreadingHTTPServer: concurrent requests are held side by side)",
            "chroma": "chroma run (one server process, persistent folder in a temp dir)",
            "postgres": "throwaway cluster from the testing kit (fsync, synchronous_commit "
            "and full_page_writes off)",
            "replica": "rag serve (one uvicorn worker), extractive answerer, hybrid retriever "
            "(package defaults) with the refusal threshold at 0 (every ask is answered), POST "
            "/v1/ask from this process, one request at a time",
        },
        **results,
    }
    write_results(args.out, results)
    print_summary(results)
    return 0


def corpus_figures(
    corpus: Path, halves: list[list[CorpusFile]], further: list[list[CorpusFile]], split: Any
) -> dict[str, Any]:
    main = [f for half in halves for f in half]
    texts = [c.page_content for c in load_and_split(corpus / "h1", split)]
    texts += [c.page_content for c in load_and_split(corpus / "h2", split)]
    more = [f for part in further for f in part]
    return {
        "generator": "synthetic Chinese help-centre Markdown (products x topics, random "
        "numbers), one heading + one section per chunk",
        "files": len(main),
        "chunks": sum(f.chunks for f in main),
        "half_chunks": [sum(f.chunks for f in half) for half in halves],
        "half_files": [len(half) for half in halves],
        "chunk_chars_mean": round(sum(len(t) for t in texts) / len(texts), 1),
        "duplicate_chunk_texts": len(texts) - len(set(texts)),
        "further_files": len(more),
        "further_chunks": sum(f.chunks for f in more),
        "folders": portable_path(corpus),
    }


def run_phases(
    args: argparse.Namespace,
    srv: Servers,
    scratch: Path,
    corpus: Path,
    halves: list[list[CorpusFile]],
    further: list[list[CorpusFile]],
) -> dict[str, Any]:
    sizes = [sum(f.chunks for f in half) for half in halves]
    more = [sum(f.chunks for f in part) for part in further]
    one = ingest_phase(
        "one_worker",
        [("w0", scratch / "w0", "scale_a", [corpus / "h1", corpus / "h2"], sum(sizes))],
        srv,
        scratch,
    )
    print(f"(a) one worker: {one.get('chunks_per_s')} chunks/s ({one['chunks_added']} chunks)")
    two = ingest_phase(
        "two_workers",
        [
            ("w1", scratch / "w1", "scale_b", [corpus / "h1"], sizes[0]),
            ("w2", scratch / "w2", "scale_b", [corpus / "h2"], sizes[1]),
        ],
        srv,
        scratch,
    )
    print(f"(b) two workers: {two.get('chunks_per_s')} chunks/s ({two['chunks_added']} chunks)")
    import httpx

    served: dict[str, Any] = {}
    b_files = [f for half in halves for f in half]
    with replica(srv, scratch / "replica", "scale_b", scratch) as (url, pid):
        rng = random.Random(args.seed)
        pool = [f.question for f in b_files]
        rng.shuffle(pool)
        questions = questions_cycle(pool)
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(WARMUP_ASKS):
                ask_once(client, next(questions))
            served["idle_before"] = ask_idle(client, questions, args.questions)
            print(f"(c) replica idle: p50 {served['idle_before'].get('p50_ms')} ms")
            served["during_ingest"] = ask_during(
                client,
                questions,
                [
                    ("w1", scratch / "w1", "scale_b", [corpus / "x1"], more[0]),
                    ("w2", scratch / "w2", "scale_b", [corpus / "x2"], more[1]),
                ],
                srv,
                scratch,
                pid,
            )
            during = served["during_ingest"].get("asks_while_all_workers_ingest", {})
            print(f"(c) replica while 2 workers ingest: p50 {during.get('p50_ms')} ms")
            served["idle_after"] = ask_idle(client, questions, args.questions)
            print(f"(c) replica idle again: p50 {served['idle_after'].get('p50_ms')} ms")
    served["asks_total"] = (
        WARMUP_ASKS
        + sum(served[name]["n"] + served[name]["errors"] for name in ("idle_before", "idle_after"))
        + sum(served["during_ingest"]["asks_while_any_worker_ran"][key] for key in ("n", "errors"))
    )
    further_files = [f for part in further for f in part]
    checks = {
        "collection_a": check_collection(srv, "scale_a", sum(sizes), len(b_files), scratch / "w0"),
        "collection_b": check_collection(
            srv,
            "scale_b",
            sum(sizes) + sum(more),
            len(b_files) + len(further_files),
            scratch / "w1",
        ),
    }
    return {
        "one_worker": one,
        "two_workers": two,
        "replica": served,
        "correctness": checks,
        "targets": targets_of(one, two, served),
    }


def targets_of(one: dict[str, Any], two: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if one.get("chunks_per_s") and two.get("chunks_per_s"):
        found["two_over_one_worker_chunks_per_s"] = target(
            two["chunks_per_s"] / one["chunks_per_s"], ">=", SPEEDUP_TARGET
        )
        found["two_over_one_worker_process_wall (info)"] = target(
            two["chunks_per_s_process"] / one["chunks_per_s_process"], ">=", SPEEDUP_TARGET
        )
    idle = served.get("idle_before", {}).get("p50_ms")
    during = served.get("during_ingest", {}).get("asks_while_all_workers_ingest", {})
    if idle and during.get("p50_ms"):
        found["replica_p50_during_over_idle"] = target(
            during["p50_ms"] / idle, "<=", LATENCY_TARGET
        )
        after = served.get("idle_after", {}).get("p50_ms")
        if after:
            found["replica_p50_during_over_idle_after (info)"] = target(
                during["p50_ms"] / after, "<=", LATENCY_TARGET
            )
    return found


def server_versions() -> dict[str, str | None]:
    """The PostgreSQL server's version (the Python packages are in ``machine``)."""
    from rag_pipeline.testing.postgres import find_bindir

    try:
        done = subprocess.run(  # noqa: S603 - the server's own program, a fixed argument
            [str(find_bindir() / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        return {"postgres": done.stdout.strip() or None}
    except (OSError, FileNotFoundError):
        return {"postgres": None}


def print_summary(results: dict[str, Any]) -> None:
    one, two, served = results["one_worker"], results["two_workers"], results["replica"]
    during = served.get("during_ingest", {}).get("asks_while_all_workers_ingest", {})
    print(
        f"\n== scaleout: {results['setup']['chunks']} chunks, "
        f"{results['setup']['delay_ms_per_embeddings_request']:g} ms per embeddings request =="
    )
    print(f"{'':34}{'chunks/s':>10}{'ingest s':>10}{'process s':>11}")
    for label, row in (("(a) 1 worker", one), ("(b) 2 workers", two)):
        print(
            f"{label:34}{row.get('chunks_per_s', 'failed')!s:>10}"
            f"{row.get('ingest_span_s', '-')!s:>10}{row.get('process_span_s', '-')!s:>11}"
        )
    print(f"{'':34}{'p50 ms':>10}{'p90 ms':>10}{'n':>6}")
    for label, row in (
        ("(c) replica idle", served.get("idle_before", {})),
        ("(c) replica, 2 workers ingesting", during),
        ("(c) replica idle, after", served.get("idle_after", {})),
    ):
        print(
            f"{label:34}{row.get('p50_ms', '-')!s:>10}{row.get('p90_ms', '-')!s:>10}"
            f"{row.get('n', 0):>6}"
        )
    texts = results["correctness"]["embedding_texts"]
    print(
        f"embedding stub: {texts.get('texts_embedded')} texts in "
        f"{texts.get('embedding_requests')} requests, expected {texts['expected_texts']}: "
        f"{'ok' if texts['ok'] else 'NOT ok'}"
    )
    for name in ("collection_a", "collection_b"):
        check = results["correctness"][name]
        print(
            f"{name}: store {check['store_count']}, records {check['records']}, keyword "
            f"{check['keyword_index']}, expected {check['expected_chunks']}, duplicates "
            f"{check['store_duplicate_ids']}, verify exit {check['verify_exit_code']}: "
            f"{'ok' if check['ok'] else 'NOT ok'}"
        )
    for name, t in results["targets"].items():
        print(f"{name}: {t['value']} (target {t['target']}): {met(t)}")
    print(f"load average 1/5/15 min at the end: {results['machine']['load_avg_1_5_15min']}")
