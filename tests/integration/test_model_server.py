"""Self-tests for :mod:`rag_pipeline.testing.model_api`: real clients over real HTTP on
127.0.0.1."""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import dashscope
import httpx
import openai
import pytest
import requests
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from rag_pipeline.testing.model_api import (
    DASHSCOPE_TEXT_EMBEDDING_PATH,
    DASHSCOPE_TEXT_RERANK_PATH,
    HOST,
    RERANK_PATH,
    STREAM_CHUNK_CHARS,
    ModelServer,
    default_chat_reply,
    stub_embedding,
    stub_rerank_score,
)

QUESTION = "请问你们的退货政策是什么？购买后多少天内可以无理由退货，需要满足哪些条件？"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "你是客服助手。"},
    {"role": "user", "content": QUESTION},
]
EXPECTED_REPLY = "根据资料[1]，" + QUESTION[:30]


@pytest.fixture
def stub(model_server: ModelServer) -> ModelServer:
    """A running stub, stopped after the test (the plugin's fixture)."""
    return model_server


@pytest.fixture
def client(stub: ModelServer) -> OpenAI:
    """An official openai client pointed at the stub."""
    return OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def _raw_request(
    stub: ModelServer, method: str, path: str, body: Any = None, api_key: str = "sk-test"
) -> tuple[int, dict[str, str], Any]:
    """Send one request with http.client; return status, headers and decoded JSON."""
    conn = http.client.HTTPConnection(HOST, stub.port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data)
    finally:
        conn.close()


# -- basics ----------------------------------------------------------------------------


def test_urls_and_default_reply(stub: ModelServer) -> None:
    assert stub.base_url == f"http://127.0.0.1:{stub.port}/v1"
    assert stub.dashscope_base_url == f"http://127.0.0.1:{stub.port}/api/v1"
    assert default_chat_reply(cast(list[dict[str, Any]], MESSAGES)) == EXPECTED_REPLY
    assert "[1]" in EXPECTED_REPLY


def test_not_running_has_no_url() -> None:
    with pytest.raises(RuntimeError):
        _ = ModelServer().base_url


def test_unknown_endpoint_is_404_json(stub: ModelServer) -> None:
    status, _headers, body = _raw_request(stub, "GET", "/v1/models")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    status, _headers, body = _raw_request(stub, "POST", "/api/v1/services/nope", {"x": 1})
    assert status == 404
    assert body["code"] == "NotFound" and body["request_id"]


def test_invalid_json_is_400(stub: ModelServer) -> None:
    conn = http.client.HTTPConnection(HOST, stub.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=b"{not json",
            headers={"Authorization": "Bearer sk-test"},
        )
        response = conn.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["error"]["type"] == "invalid_request_error"
    finally:
        conn.close()
    assert stub.requests()[0].body is None


def test_stop_closes_port_and_open_connections() -> None:
    with ModelServer() as stub:
        port = stub.port
        # leave a keep-alive connection open across the stop
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/v1/nothing", headers={"Authorization": "Bearer sk-test"})
        conn.getresponse().read()
        started = time.monotonic()
    assert time.monotonic() - started < 2
    conn.close()
    assert not any(t.name == f"ModelServer:{port}" for t in threading.enumerate())
    with pytest.raises(OSError), socket.create_connection((HOST, port), timeout=2):
        pass


# -- openai SDK ------------------------------------------------------------------------


def test_openai_chat_non_stream(stub: ModelServer, client: OpenAI) -> None:
    completion = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "qwen-plus"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == EXPECTED_REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    [recorded] = stub.chat_requests()
    assert recorded.body["messages"] == MESSAGES
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert stub.embedding_requests() == []


def test_openai_chat_custom_reply(stub: ModelServer, client: OpenAI) -> None:
    stub.chat_reply = lambda messages: f"{len(messages)} messages"
    completion = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.choices[0].message.content == "2 messages"


def test_openai_chat_stream(stub: ModelServer, client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen-plus",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    pieces = [d for d in deltas if d]
    assert len(pieces) >= 3
    assert all(len(p) <= STREAM_CHUNK_CHARS for p in pieces)
    assert "".join(pieces) == EXPECTED_REPLY
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(EXPECTED_REPLY)


def test_openai_chat_stream_without_usage(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == EXPECTED_REPLY


def test_openai_embeddings(stub: ModelServer, client: OpenAI) -> None:
    texts = ["退货政策", "发票怎么开"]
    first = client.embeddings.create(model="text-embedding-v4", input=texts, dimensions=16)
    second = client.embeddings.create(model="text-embedding-v4", input=texts, dimensions=16)
    assert first.object == "list" and first.model == "text-embedding-v4"
    assert [d.index for d in first.data] == [0, 1]
    assert first.usage.prompt_tokens == sum(len(t) for t in texts)
    for item, again, text in zip(first.data, second.data, texts, strict=True):
        assert len(item.embedding) == 16
        assert item.embedding == again.embedding
        assert math.isclose(math.sqrt(sum(v * v for v in item.embedding)), 1.0, rel_tol=1e-5)
        expected = stub_embedding(text, 16)
        assert all(
            math.isclose(a, b, abs_tol=1e-6) for a, b in zip(item.embedding, expected, strict=True)
        )
    assert first.data[0].embedding != first.data[1].embedding
    # the SDK asks for base64 unless told otherwise; the stub answers float32 base64
    assert stub.embedding_requests()[0].body["encoding_format"] == "base64"


def test_openai_embeddings_float_default_dim_and_tokens(client: OpenAI) -> None:
    single = client.embeddings.create(
        model="text-embedding-v4", input="退货政策", encoding_format="float"
    )
    assert len(single.data) == 1
    assert single.data[0].embedding == stub_embedding("退货政策", 8)
    tokens = client.embeddings.create(model="text-embedding-v4", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.total_tokens == 5


def test_embeddings_similarity_tracks_shared_characters(client: OpenAI) -> None:
    texts = ["退货政策", "退货政策是什么", "发票开具流程"]
    data = client.embeddings.create(model="text-embedding-v4", input=texts, dimensions=256).data
    query, related, unrelated = (d.embedding for d in data)
    assert _cosine(query, related) > _cosine(query, unrelated)


def test_openai_wrong_key_is_authentication_error(stub: ModelServer) -> None:
    bad = OpenAI(base_url=stub.base_url, api_key="sk-wrong", max_retries=2)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "Incorrect API key provided" in info.value.message
    assert len(stub.requests()) == 1  # 401 is not retried


def test_openai_bad_request_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="qwen-plus", messages=[])


def test_fail_next_429_then_retry_succeeds(stub: ModelServer) -> None:
    retrying = OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=2)
    stub.fail_next(429, retry_after=0.01)
    completion = retrying.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.choices[0].message.content == EXPECTED_REPLY
    assert len(stub.requests()) == 2
    assert [r.headers["x-stainless-retry-count"] for r in stub.chat_requests()] == ["0", "1"]


def test_fail_next_exhausts_retries(stub: ModelServer) -> None:
    retrying = OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=2)
    stub.fail_next(503, times=3, retry_after=0.01)
    with pytest.raises(openai.InternalServerError) as info:
        retrying.embeddings.create(model="text-embedding-v4", input="x")
    assert info.value.status_code == 503
    assert len(stub.embedding_requests()) == 3


def test_fail_next_error_body_and_retry_after_header(stub: ModelServer) -> None:
    stub.fail_next(429, retry_after=2)
    status, headers, body = _raw_request(stub, "POST", "/v1/embeddings", {"model": "m"})
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert set(body["error"]) >= {"message", "type", "code"}
    assert body["error"]["code"] == "rate_limit_exceeded"
    stub.fail_next(500)
    status, headers, body = _raw_request(stub, "POST", DASHSCOPE_TEXT_EMBEDDING_PATH, {})
    assert status == 500
    assert "Retry-After" not in headers
    assert body["code"] == "InternalError" and body["message"] and body["request_id"]


def test_reset(stub: ModelServer, client: OpenAI) -> None:
    client.embeddings.create(model="text-embedding-v4", input="x")
    stub.fail_next(500, times=5)
    stub.reset()
    assert stub.requests() == []
    client.embeddings.create(model="text-embedding-v4", input="x")
    assert len(stub.requests()) == 1


def test_chat_reply_errors_become_500_without_retry(stub: ModelServer) -> None:
    def broken(messages: list[dict[str, Any]]) -> str:
        raise RuntimeError("boom")

    stub.chat_reply = broken
    retrying = OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=2)
    with pytest.raises(openai.InternalServerError, match="boom"):
        retrying.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert len(stub.requests()) == 1


# -- langchain-openai ------------------------------------------------------------------


def test_langchain_chat_openai_invoke_and_stream(stub: ModelServer) -> None:
    llm = ChatOpenAI(
        base_url=stub.base_url, api_key=SecretStr("sk-test"), model="qwen-plus", max_retries=0
    )
    message = llm.invoke(QUESTION)
    assert message.content == EXPECTED_REPLY
    assert message.usage_metadata is not None
    chunks = list(llm.stream(QUESTION))
    assert len([c for c in chunks if c.content]) >= 3
    assert "".join(str(c.content) for c in chunks) == EXPECTED_REPLY
    streamed = ChatOpenAI(
        base_url=stub.base_url, api_key=SecretStr("sk-test"), model="qwen-plus", stream_usage=True
    )
    total = None
    for chunk in streamed.stream(QUESTION):
        total = chunk if total is None else total + chunk
    assert total is not None and total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == len(EXPECTED_REPLY)
    assert len(stub.chat_requests()) == 3


def test_langchain_openai_embeddings(stub: ModelServer) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=stub.base_url,
        api_key=SecretStr("sk-test"),
        model="text-embedding-v4",
        check_embedding_ctx_length=False,
    )
    docs = embeddings.embed_documents(["退货政策", "发票怎么开"])
    query = embeddings.embed_query("退货政策")
    assert len(docs) == 2 and all(len(v) == 8 for v in docs)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(docs[0], query, strict=True))
    sized = OpenAIEmbeddings(
        base_url=stub.base_url,
        api_key=SecretStr("sk-test"),
        model="text-embedding-v4",
        dimensions=32,
        check_embedding_ctx_length=False,
    )
    assert len(sized.embed_query("x")) == 32
    assert len(stub.embedding_requests()) == 3


# -- dashscope SDK ---------------------------------------------------------------------


def test_dashscope_text_embedding(stub: ModelServer) -> None:
    global_url = dashscope.base_http_api_url
    texts = ["退货政策", "发票怎么开", "会员积分"]
    response = dashscope.TextEmbedding.call(
        model="text-embedding-v4",
        input=texts,
        api_key="sk-test",
        dimension=16,
        text_type="document",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 200, response
    assert response.request_id
    embeddings = sorted(response.output["embeddings"], key=lambda e: e["text_index"])
    assert [e["text_index"] for e in embeddings] == [0, 1, 2]
    for item, text in zip(embeddings, texts, strict=True):
        assert item["embedding"] == stub_embedding(text, 16)
    assert response.usage["total_tokens"] == sum(len(t) for t in texts)
    [recorded] = stub.embedding_requests()
    assert recorded.path == DASHSCOPE_TEXT_EMBEDDING_PATH
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.body == {
        "model": "text-embedding-v4",
        "input": {"texts": texts},
        "parameters": {"dimension": 16, "text_type": "document"},
    }
    assert dashscope.base_http_api_url == global_url  # nothing global was touched


def test_dashscope_default_dimension_and_single_string(stub: ModelServer) -> None:
    response = dashscope.TextEmbedding.call(
        model="text-embedding-v4",
        input="退货政策",
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 200
    [item] = response.output["embeddings"]
    assert len(item["embedding"]) == 8


def test_dashscope_batch_limit(stub: ModelServer) -> None:
    response = dashscope.TextEmbedding.call(
        model="text-embedding-v4",
        input=[f"文本{i}" for i in range(11)],
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 400
    assert response.code == "InvalidParameter"
    assert response.message == "batch size is invalid, it should not be larger than 10."
    assert response.request_id
    assert response.output is None


@pytest.mark.parametrize(
    ("model", "count", "status"),
    [
        ("text-embedding-v3", 10, 200),
        ("text-embedding-v3", 11, 400),
        ("text-embedding-v2", 25, 200),
        ("text-embedding-v1", 26, 400),
    ],
)
def test_dashscope_batch_limits_per_model(
    stub: ModelServer, model: str, count: int, status: int
) -> None:
    response = dashscope.TextEmbedding.call(
        model=model,
        input=[str(i) for i in range(count)],
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == status


def test_dashscope_wrong_key_and_injected_failure(stub: ModelServer) -> None:
    response = dashscope.TextEmbedding.call(
        model="text-embedding-v4",
        input=["x"],
        api_key="sk-wrong",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 401
    assert response.code == "InvalidApiKey"
    stub.fail_next(429)
    response = dashscope.TextEmbedding.call(
        model="text-embedding-v4",
        input=["x"],
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 429
    assert response.code == "Throttling.RateQuota"
    assert len(stub.embedding_requests()) == 2


# -- rerank ----------------------------------------------------------------------------

RERANK_QUERY = "退货政策"
RERANK_DOCS = ["发票怎么开", "政策说明", "退货政策：七天无理由退货", "会员积分", "退货流程"]
# scores: 0, 1/3 ("政策"), 1, 0, 1/3 ("退货") -> order 2, 1, 4, 0, 3 (ties keep input order)
RERANK_ORDER = [2, 1, 4, 0, 3]
RERANK_TOKENS = len(RERANK_QUERY) + sum(len(d) for d in RERANK_DOCS)


@pytest.fixture
def httpx_client(stub: ModelServer) -> Iterator[httpx.Client]:
    """An httpx client for the OpenAI-compatible root, authenticated with the stub's key."""
    with httpx.Client(
        base_url=stub.base_url, headers={"Authorization": "Bearer sk-test"}, timeout=10
    ) as client:
        yield client


def test_stub_rerank_score() -> None:
    assert stub_rerank_score("退货政策", "退货政策：七天无理由退货") == 1.0
    assert math.isclose(stub_rerank_score("退货政策", "政策说明"), 1 / 3)
    assert stub_rerank_score("退货政策", "发票怎么开") == 0.0
    # distinct bigrams: "aa" twice counts once
    assert stub_rerank_score("aaab", "xaax") == 0.5
    # lower-cased, whitespace removed on both sides
    assert stub_rerank_score("Re Turn", "RETURN policy") == 1.0
    assert stub_rerank_score("退 货", "退货") == 1.0
    # one-character queries: whether the character occurs
    assert stub_rerank_score("退", "可以退吗") == 1.0
    assert stub_rerank_score(" X ", "abc") == 0.0
    assert stub_rerank_score("", "abc") == 0.0
    assert stub_rerank_score("   ", "abc") == 0.0
    scores = [stub_rerank_score(RERANK_QUERY, d) for d in RERANK_DOCS]
    assert all(0.0 <= v <= 1.0 for v in scores)
    assert sorted(range(len(scores)), key=lambda i: -scores[i]) == RERANK_ORDER


def test_dashscope_text_rerank(stub: ModelServer) -> None:
    global_url = dashscope.base_http_api_url
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query=RERANK_QUERY,
        documents=RERANK_DOCS,
        top_n=3,
        return_documents=True,
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 200, response
    assert response.request_id
    results = response.output.results
    assert [r.index for r in results] == RERANK_ORDER[:3]
    for result in results:
        assert result.relevance_score == stub_rerank_score(RERANK_QUERY, RERANK_DOCS[result.index])
        # ReRankResult declares ``document: Dict = None`` as a dataclass default, so the
        # attribute reads that class default; the parsed value is only reachable by key
        assert result["document"] == {"text": RERANK_DOCS[result.index]}
    scores = [r.relevance_score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert response.usage.total_tokens == RERANK_TOKENS
    [recorded] = stub.rerank_requests()
    assert recorded.path == DASHSCOPE_TEXT_RERANK_PATH
    assert recorded.path == "/api/v1/services/rerank/text-rerank/text-rerank"
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.body == {
        "model": "gte-rerank-v2",
        "input": {"query": RERANK_QUERY, "documents": RERANK_DOCS},
        "parameters": {"top_n": 3, "return_documents": True},
    }
    assert stub.embedding_requests() == []
    assert dashscope.base_http_api_url == global_url  # nothing global was touched


def test_dashscope_text_rerank_defaults(stub: ModelServer) -> None:
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query=RERANK_QUERY,
        documents=RERANK_DOCS,
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 200, response
    results = response.output.results
    assert [r.index for r in results] == RERANK_ORDER  # no top_n: every document
    # ReRankResult always fills ``document`` (None when absent), so check the wire too
    assert all(r["document"] is None for r in results)
    status, _headers, body = _raw_request(
        stub,
        "POST",
        DASHSCOPE_TEXT_RERANK_PATH,
        {"model": "gte-rerank-v2", "input": {"query": RERANK_QUERY, "documents": RERANK_DOCS}},
    )
    assert status == 200
    assert all(set(r) == {"index", "relevance_score"} for r in body["output"]["results"])
    big = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query=RERANK_QUERY,
        documents=RERANK_DOCS,
        top_n=50,
        return_documents=False,
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert [r.index for r in big.output.results] == RERANK_ORDER
    assert all(r["document"] is None for r in big.output.results)


def test_dashscope_text_rerank_errors(stub: ModelServer) -> None:
    # the SDK refuses empty documents itself, so send those raw
    status, _headers, body = _raw_request(
        stub,
        "POST",
        DASHSCOPE_TEXT_RERANK_PATH,
        {"model": "gte-rerank-v2", "input": {"query": "q", "documents": []}},
    )
    assert status == 400
    assert body["code"] == "InvalidParameter" and body["message"] and body["request_id"]
    status, _headers, body = _raw_request(
        stub,
        "POST",
        DASHSCOPE_TEXT_RERANK_PATH,
        {"model": "gte-rerank-v2", "input": {"documents": ["a"]}},
    )
    assert status == 400
    assert body["code"] == "InvalidParameter" and "query" in body["message"]
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query="",
        documents=["a"],
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 400
    assert response.code == "InvalidParameter"
    assert response.output is None
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query="q",
        documents=["a"],
        top_n=0,
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 400
    assert response.code == "InvalidParameter"
    assert len(stub.rerank_requests()) == 4


def test_dashscope_text_rerank_wrong_key_and_injected_failure(stub: ModelServer) -> None:
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query="q",
        documents=["a"],
        api_key="sk-wrong",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 401
    assert response.code == "InvalidApiKey"
    stub.fail_next(503)
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query="q",
        documents=["a"],
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 503
    assert response.code == "ServiceUnavailable"
    assert response.output is None
    # the SDK does not retry; the next call succeeds
    response = dashscope.TextReRank.call(
        model="gte-rerank-v2",
        query="q",
        documents=["a"],
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
    )
    assert response.status_code == 200
    assert len(stub.rerank_requests()) == 3


def test_generic_rerank(stub: ModelServer, httpx_client: httpx.Client) -> None:
    response = httpx_client.post(
        "/rerank",
        json={
            "model": "bge-reranker-v2-m3",
            "query": RERANK_QUERY,
            "documents": RERANK_DOCS,
            "top_n": 3,
            "return_documents": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] and body["model"] == "bge-reranker-v2-m3"
    assert [r["index"] for r in body["results"]] == RERANK_ORDER[:3]
    for result in body["results"]:
        text = RERANK_DOCS[result["index"]]
        assert result["relevance_score"] == stub_rerank_score(RERANK_QUERY, text)
        assert result["document"] == {"text": text}
    assert body["usage"] == {"total_tokens": RERANK_TOKENS}
    [recorded] = stub.rerank_requests()
    assert recorded.path == RERANK_PATH
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.body["documents"] == RERANK_DOCS


def test_generic_rerank_text_objects(stub: ModelServer, httpx_client: httpx.Client) -> None:
    documents: list[Any] = [{"text": d} for d in RERANK_DOCS]
    documents[0] = RERANK_DOCS[0]  # strings and {"text"} objects may be mixed
    response = httpx_client.post(
        "/rerank",
        json={"model": "jina-reranker-v2", "query": RERANK_QUERY, "documents": documents},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == RERANK_ORDER
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    assert body["usage"]["total_tokens"] == RERANK_TOKENS
    response = httpx_client.post(
        "/rerank",
        json={
            "model": "jina-reranker-v2",
            "query": RERANK_QUERY,
            "documents": documents,
            "top_n": 1,
            "return_documents": True,
        },
    )
    [top] = response.json()["results"]
    assert top == {
        "index": 2,
        "relevance_score": 1.0,
        "document": {"text": RERANK_DOCS[2]},
    }
    assert len(stub.rerank_requests()) == 2


def test_generic_rerank_requires_key(stub: ModelServer) -> None:
    payload = {"model": "m", "query": "q", "documents": ["a"]}
    response = httpx.post(f"{stub.base_url}/rerank", json=payload, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.post(
        f"{stub.base_url}/rerank",
        json=payload,
        headers={"Authorization": "Bearer sk-wrong"},
        timeout=10,
    )
    assert response.status_code == 401
    assert len(stub.rerank_requests()) == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "m", "query": "q", "documents": []},
        {"model": "m", "query": "q"},
        {"model": "m", "documents": ["a"]},
        {"model": "m", "query": "q", "documents": [{"image": "x.png"}]},
        {"model": "m", "query": "q", "documents": ["a"], "top_n": 0},
        {"model": "m", "query": "q", "documents": ["a"], "return_documents": "yes"},
        {"query": "q", "documents": ["a"]},
    ],
)
def test_generic_rerank_bad_request(httpx_client: httpx.Client, payload: dict[str, Any]) -> None:
    response = httpx_client.post("/rerank", json=payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_generic_rerank_injected_failure(stub: ModelServer, httpx_client: httpx.Client) -> None:
    stub.fail_next(503, retry_after=1)
    payload = {"model": "m", "query": "q", "documents": ["a"]}
    response = httpx_client.post("/rerank", json=payload)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert httpx_client.post("/rerank", json=payload).status_code == 200
    assert len(stub.rerank_requests()) == 2


# -- fault modes -----------------------------------------------------------------------


def _post_raw(stub: ModelServer, path: str, body: Any, timeout: float = 10) -> tuple[int, bytes]:
    """POST with http.client; return status and the raw body (not decoded)."""
    conn = http.client.HTTPConnection(HOST, stub.port, timeout=timeout)
    try:
        headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _dashscope_embed(stub: ModelServer, texts: list[str], **extra: Any) -> Any:
    return dashscope.TextEmbedding.call(
        model="text-embedding-v4",
        input=texts,
        api_key="sk-test",
        base_address=stub.dashscope_base_url,
        **extra,
    )


def test_fault_next_rejects_unknown_modes(stub: ModelServer) -> None:
    with pytest.raises(ValueError, match="fault must be one of"):
        stub.fault_next("explode")
    with pytest.raises(ValueError, match="times"):
        stub.fault_next("nan", times=0)


@pytest.mark.parametrize("path", ["/v1/embeddings", DASHSCOPE_TEXT_EMBEDDING_PATH])
def test_fault_reset_drops_the_connection_without_an_answer(stub: ModelServer, path: str) -> None:
    stub.fault_next("reset")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        _post_raw(stub, path, {"model": "text-embedding-v4", "input": "x"})
    status, _ = _post_raw(stub, "/v1/embeddings", {"model": "text-embedding-v4", "input": "x"})
    assert status == 200  # one fault, one request


def test_fault_reset_is_a_connection_error_for_the_clients(
    stub: ModelServer, client: OpenAI
) -> None:
    stub.fault_next("reset")
    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(model="text-embedding-v4", input="x")
    stub.fault_next("reset", times=2)  # the dashscope SDK resends once on a dropped connection
    with pytest.raises(requests.exceptions.ConnectionError, match="reset"):
        _dashscope_embed(stub, ["x"])
    assert len(stub.embedding_requests()) == 3


@pytest.mark.parametrize("path", ["/v1/embeddings", DASHSCOPE_TEXT_EMBEDDING_PATH])
def test_fault_hang_reads_the_request_and_never_answers(stub: ModelServer, path: str) -> None:
    stub.fault_next("hang")
    with pytest.raises(TimeoutError):
        _post_raw(stub, path, {"model": "text-embedding-v4", "input": "x"}, timeout=0.3)
    assert len(stub.embedding_requests()) == 1  # it arrived


def test_fault_hang_is_bounded_by_hang_seconds(stub: ModelServer) -> None:
    stub.hang_seconds = 0.2
    stub.fault_next("hang")
    # The client would wait 10 s; the stub gives up first and closes without an answer.
    with pytest.raises(http.client.RemoteDisconnected):
        _post_raw(stub, "/v1/embeddings", {"model": "m", "input": "x"})


def test_fault_hang_is_released_by_stop() -> None:
    stub = ModelServer().start()
    stub.fault_next("hang")
    outcome: list[BaseException] = []

    def post() -> None:
        try:
            _post_raw(stub, "/v1/embeddings", {"model": "m", "input": "x"}, timeout=60)
        except (OSError, http.client.HTTPException) as e:
            outcome.append(e)

    thread = threading.Thread(target=post)
    thread.start()
    while not stub.embedding_requests():
        time.sleep(0.01)
    stub.stop()
    thread.join(timeout=30)
    assert not thread.is_alive() and len(outcome) == 1


@pytest.mark.parametrize("path", ["/v1/embeddings", DASHSCOPE_TEXT_EMBEDDING_PATH, "/v1/rerank"])
def test_fault_malformed_json_is_a_200_that_does_not_parse(stub: ModelServer, path: str) -> None:
    stub.fault_next("malformed_json")
    status, body = _post_raw(stub, path, {"model": "text-embedding-v4", "input": "x"})
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_fault_malformed_json_reaches_the_clients(stub: ModelServer, client: OpenAI) -> None:
    stub.fault_next("malformed_json")
    with pytest.raises(json.JSONDecodeError):
        client.embeddings.create(model="text-embedding-v4", input="x")
    stub.fault_next("malformed_json")
    with pytest.raises(ValueError):  # requests' JSONDecodeError
        _dashscope_embed(stub, ["x"])


def test_fault_missing_fields(stub: ModelServer, client: OpenAI) -> None:
    stub.fault_next("missing_fields", times=2)
    status, body = _post_raw(stub, "/v1/embeddings", {"model": "m", "input": "x"})
    parsed = json.loads(body)
    assert status == 200 and "data" not in parsed and "request_id" in parsed
    response = _dashscope_embed(stub, ["x"])
    assert response.status_code == 200 and response.output is None


def test_vector_faults_change_only_the_vectors(stub: ModelServer, client: OpenAI) -> None:
    texts = ["退货", "运费", "发票"]
    good = [stub_embedding(t, 8) for t in texts]
    stub.fault_next("short")
    short = client.embeddings.create(model="m", input=texts, encoding_format="float").data
    assert [d.embedding for d in short] == good[:2]
    stub.fault_next("nan")
    nan = client.embeddings.create(model="m", input=texts).data  # base64 on the wire
    assert math.isnan(nan[0].embedding[0]) and len(nan[0].embedding) == 8
    assert nan[1].embedding == pytest.approx(good[1])
    stub.fault_next("wrong_dimension")
    wide = client.embeddings.create(model="m", input=texts, dimensions=4).data
    assert [len(d.embedding) for d in wide] == [5, 5, 5]
    after = client.embeddings.create(model="m", input=texts, encoding_format="float").data
    assert [d.embedding for d in after] == good  # faults are used up


def test_vector_faults_on_the_dashscope_endpoint(stub: ModelServer) -> None:
    texts = ["退货", "运费"]
    stub.fault_next("short")
    assert len(_dashscope_embed(stub, texts).output["embeddings"]) == 1
    stub.fault_next("nan")
    vectors = _dashscope_embed(stub, texts).output["embeddings"]
    assert math.isnan(vectors[0]["embedding"][0])
    assert vectors[1]["embedding"] == stub_embedding("运费", 8)
    stub.fault_next("wrong_dimension")
    vectors = _dashscope_embed(stub, texts, dimension=16).output["embeddings"]
    assert [len(v["embedding"]) for v in vectors] == [17, 17]


def test_vector_faults_wait_for_an_embedding_request(stub: ModelServer, client: OpenAI) -> None:
    stub.fault_next("nan")
    completion = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.choices[0].message.content == EXPECTED_REPLY
    data = client.embeddings.create(model="m", input="x", encoding_format="float").data
    assert math.isnan(data[0].embedding[0])


def test_reset_forgets_pending_faults(stub: ModelServer, client: OpenAI) -> None:
    stub.fault_next("nan", times=3)
    stub.reset()
    data = client.embeddings.create(model="m", input="x", encoding_format="float").data
    assert data[0].embedding == stub_embedding("x", 8)


# -- scripting per test (what the plugin's model_server fixture offers) -------------------------


def test_answer_fixes_the_reply_and_several_replies_come_in_turn(
    model_server: ModelServer,
) -> None:
    client = OpenAI(base_url=model_server.base_url, api_key=model_server.api_key, max_retries=0)

    def ask() -> str | None:
        done = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        return done.choices[0].message.content

    model_server.answer("退款在3个工作日内到账[1]。")
    assert [ask(), ask()] == ["退款在3个工作日内到账[1]。"] * 2
    model_server.answer("第一[1]", "第二[2]")
    assert [ask(), ask(), ask()] == ["第一[1]", "第二[2]", "第二[2]"]
    with pytest.raises(ValueError, match="at least one reply"):
        model_server.answer()


def test_a_scripted_answer_streams_too(model_server: ModelServer) -> None:
    client = OpenAI(base_url=model_server.base_url, api_key=model_server.api_key, max_retries=0)
    model_server.answer("签收后7天内可退款[1]。")
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == "签收后7天内可退款[1]。"


def test_requests_by_kind(model_server: ModelServer) -> None:
    client = OpenAI(base_url=model_server.base_url, api_key=model_server.api_key, max_retries=0)
    assert model_server.requests() == [] and model_server.requests("chat") == []
    client.embeddings.create(model="text-embedding-v4", input=["退货"])
    client.chat.completions.create(model="m", messages=MESSAGES)
    assert [r.path for r in model_server.requests("chat")] == ["/v1/chat/completions"]
    assert [r.path for r in model_server.requests("embeddings")] == ["/v1/embeddings"]
    assert model_server.requests("rerank") == [] and len(model_server.requests()) == 2
    with pytest.raises(ValueError, match="kind must be one of chat, embeddings, rerank"):
        model_server.requests("completions")  # type: ignore[arg-type]
    model_server.reset()
    assert model_server.requests() == []


def test_fail_next_of_one_kind_lets_other_requests_pass(model_server: ModelServer) -> None:
    client = OpenAI(base_url=model_server.base_url, api_key=model_server.api_key, max_retries=0)
    model_server.fail_next(429, kind="chat")
    assert client.embeddings.create(model="e", input=["退货"]).data  # not a chat request
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    with pytest.raises(ValueError, match="kind must be"):
        model_server.fail_next(500, kind="completions")  # type: ignore[arg-type]


def test_timeout_next_and_nan_next(model_server: ModelServer) -> None:
    model_server.hang_seconds = 5
    client = OpenAI(
        base_url=model_server.base_url, api_key=model_server.api_key, max_retries=0, timeout=0.3
    )
    model_server.timeout_next()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices  # next: fine
    model_server.nan_next()
    vectors = client.embeddings.create(model="e", input=["a", "b"], encoding_format="float").data
    assert math.isnan(vectors[0].embedding[0]) and not math.isnan(vectors[1].embedding[0])


def test_settings_point_the_chat_model_and_embeddings_at_the_server(
    model_server: ModelServer, rag_settings: Any
) -> None:
    chat_only = model_server.settings(rag_settings)
    assert chat_only.llm.provider == "openai" and chat_only.llm.base_url == model_server.base_url
    assert chat_only.openai_api_key is not None
    assert chat_only.openai_api_key.get_secret_value() == model_server.api_key
    assert chat_only.embeddings.provider == "fake"  # unchanged
    qwen = model_server.settings(rag_settings, provider="dashscope", embeddings=True)
    assert qwen.llm_provider() == "dashscope" and qwen.dashscope_api_key is not None
    assert qwen.embeddings.provider == "openai"
    assert qwen.embeddings.base_url == model_server.base_url
    assert qwen.embeddings.dimensions == model_server.embedding_dim
    with pytest.raises(ValueError, match="provider must be"):
        model_server.settings(rag_settings, provider="ollama")


def test_delay_holds_requests_of_one_kind_and_they_overlap(model_server: ModelServer) -> None:
    quick = OpenAI(
        base_url=model_server.base_url, api_key=model_server.api_key, max_retries=0, timeout=10
    )
    model_server.delay(60, kind="embeddings")
    quick.chat.completions.create(model="m", messages=MESSAGES)  # another kind: not held
    model_server.delay(1.0, kind="embeddings")
    spans: list[tuple[float, float]] = []

    def embed() -> None:
        began = time.perf_counter()
        quick.embeddings.create(model="e", input=["退货"])
        spans.append((began, time.perf_counter()))

    threads = [threading.Thread(target=embed) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = [end - began for began, end in spans]
    assert len(held) == 3 and min(held) >= 1.0  # each one held its delay
    # Held side by side: every request was under way before the first one was answered.
    assert max(began for began, _ in spans) < min(end for _, end in spans)
    model_server.delay(0, kind="embeddings")
    quick.embeddings.create(model="e", input=["退货"])  # off again: within the 10 s timeout
    with pytest.raises(ValueError, match="kind must be"):
        model_server.delay(0.1, kind="completions")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds must be"):
        model_server.delay(-1)
