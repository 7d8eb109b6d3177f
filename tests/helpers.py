"""Test helpers: an embeddings wrapper that counts calls, tiny corpora, settings factories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from rag_pipeline.config import Settings
from rag_pipeline.embeddings import EmbeddingModel, HashingEmbeddings


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
