"""The package's exceptions: one base class, each error says what to do next."""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error raised on purpose by rag_pipeline."""


class ConfigurationError(RagError):
    """A setting is missing, invalid, or inconsistent with another one."""


class MissingAPIKeyError(ConfigurationError):
    """A provider needs a key that is not set; names the variable to set."""

    def __init__(self, variable: str, provider: str) -> None:
        super().__init__(
            f"{provider} needs an API key: set the environment variable {variable} "
            f"(or put it in .env), or choose another provider."
        )
        self.variable = variable


class MissingExtraError(ConfigurationError):
    """An optional backend was chosen but its extra is not installed."""

    def __init__(self, feature: str, extra: str, cause: str = "") -> None:
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"{feature} needs optional packages that are not installed{detail}: "
            f'pip install "rag-pipeline[{extra}]"'
        )


class EmbeddingMismatchError(RagError):
    """The collection was built with another embedding model than the configured one."""

    def __init__(self, collection: str, stored: str, configured: str) -> None:
        super().__init__(
            f"collection {collection!r} was built with embeddings {stored!r}, but the settings "
            f"now use {configured!r}; vectors of different models cannot be mixed. Either switch "
            f"the embeddings settings back, or re-index with the new model: "
            f"rag ingest --rebuild (drops and re-creates the collection)."
        )
        self.stored = stored
        self.configured = configured


class EmptyIndexError(RagError):
    """Nothing has been ingested into the configured collection yet."""


class ProviderError(RagError):
    """A remote model API failed after retries; the message never contains secrets."""
