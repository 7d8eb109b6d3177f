"""Test helpers: an embeddings wrapper that counts calls, tiny corpora, settings factories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import EmbeddingModel, HashingEmbeddings
from rag_pipeline.testing.settings import fresh_collection


class CountingEmbeddings(Embeddings):
    """Delegates to another Embeddings and counts the texts it was asked to embed."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.documents_embedded = 0
        self.queries_embedded = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents_embedded += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.queries_embedded += 1
        return self.inner.embed_query(text)


def counting_model(dimension: int = 256) -> tuple[EmbeddingModel, CountingEmbeddings]:
    counter = CountingEmbeddings(HashingEmbeddings(dimension))
    return EmbeddingModel(counter, "fake", "hashed-char-ngrams", dimension), counter


def fake_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: fake embeddings, persistent Chroma under ``data_dir``."""
    embeddings = {"provider": "fake", **overrides.pop("embeddings", {})}
    return Settings(data_dir=data_dir, embeddings=embeddings, **overrides)


def memory_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Fake embeddings and an in-memory Chroma collection with a fresh name: in-memory clients
    of one process share their collections, so a fixed name would leak between tests. Records
    and the keyword index go to ``data_dir``."""
    store = {"mode": "memory", "collection": fresh_collection()}
    store.update(overrides.pop("store", {}))
    return fake_settings(data_dir, store=store, **overrides)


SMALL_CORPUS = {
    "returns.md": (
        "# 退货政策\n\n## 七天无理由退货\n\n签收后7天内可申请无理由退货，商品需保持完好。"
        "退货运费由买家承担，质量问题除外。\n\n## 退款时效\n\n"
        "退款将在仓库验收后3个工作日内原路退回。"
    ),
    "shipping.txt": (
        "配送说明\n\n订单满99元包邮，不满99元收取运费8元。\n\n新疆、西藏等偏远地区运费另计，"
        "一般需要5到7天送达。"
    ),
    "faq.csv": (
        "question,answer,alternatives\n"
        "怎么修改收货地址,在订单发货前可以在“我的订单”中修改收货地址。,地址填错了怎么办|能改地址吗\n"
        "支持哪些支付方式,支持微信支付、支付宝和银行卡。,可以用什么付款\n"
    ),
}


def write_corpus(folder: Path, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or SMALL_CORPUS).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


# Paragraphs that stay under a chunk size of 80, so every file splits the same way each run.
# "元" occurs in every chunk of shipping.txt: replacing it keeps the chunk boundaries and changes
# every chunk.
STORE_CORPUS = {
    "returns.md": (
        "# 退货政策\n\n## 七天无理由退货\n\n签收后7天内可申请无理由退货，商品需保持完好，"
        "配件和赠品需一并寄回。\n\n## 退款时效\n\n退款将在仓库验收后3个工作日内原路退回，"
        "信用卡退款以银行入账时间为准。"
    ),
    "shipping.txt": (
        "配送说明：订单满99元包邮，不满99元收取运费8元，偏远地区另计。\n\n"
        "加急配送另收15元，当天16点前下单当天发货，次日送达主要城市。\n\n"
        "偏远地区运费每单加收20元，一般需要5到7天送达，节假日顺延。"
    ),
    "payment.md": (
        "# 支付方式\n\n支持微信支付、支付宝、银联卡和花呗分期。\n\n"
        "## 发票\n\n电子发票在确认收货后自动开具，可在订单详情中下载。"
    ),
}


def use_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The same settings for ``rag`` commands run through ``main``, as environment variables
    (fake embeddings without cache, the extractive answerer, the store and split sections)."""
    for name in ("RAG_STORE__BACKEND", "RAG_STORE__URI", "RAG_STORE__MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAG_EMBEDDINGS__PROVIDER", "fake")
    monkeypatch.setenv("RAG_EMBEDDINGS__CACHE", "false")
    monkeypatch.setenv("RAG_LLM__PROVIDER", "extractive")
    for section in ("store", "split"):
        values = getattr(settings, section).model_dump(mode="json", exclude_defaults=True)
        for key, value in values.items():
            monkeypatch.setenv(f"RAG_{section.upper()}__{key.upper()}", str(value))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``rag ARGV...`` in process: exit code, stdout, stderr."""
    from rag_pipeline.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def hermetic(folder: Path) -> Iterator[None]:
    """What tests/conftest.py's autouse fixture does, for module-scoped fixtures (which are set
    up before it): no RAG_* or provider variables, ``folder`` as the working directory."""
    from rag_pipeline.testing.environment import is_leaky

    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if is_leaky(name):
                patch.delenv(name)
        patch.setenv("ANONYMIZED_TELEMETRY", "False")
        patch.chdir(folder)
        yield
