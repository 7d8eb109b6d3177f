"""The package's exceptions: one base class, each error says what to do next.

Every error raised on purpose is a ``RagError``; the CLI maps each kind to an exit code
(``EXIT_CODES``) and prints its message on one line (tracebacks only with ``--debug``):

- 1 ``ProviderError`` and any other ``RagError``: a remote model API failed;
- 2 ``ConfigurationError`` (and its subclasses), ``EmptyIndexError``,
  ``EmbeddingMismatchError``: fix the settings, the command or ingest first;
- 3 ingest finished but some files failed (``LoadError``s, listed in the report);
- 4 ``StoreUnavailableError``: a vector store server is unreachable or a store file is locked;
- 5 ``CollectionLockedError``: another writer holds the collection (see ``rag_pipeline.locking``);
- 6 ``rag verify`` found problems (without ``--repair``, or some that need ``--rebuild``).

>>> issubclass(StoreUnavailableError, RagError)
True
"""

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


class IndexSettingsMismatchError(ConfigurationError):
    """The collection's index was built with another distance space or graph parameters."""


class CorruptDataError(ConfigurationError):
    """A file of the data folder is not what it should be (garbage, truncated, another
    program's); the message names the file and the way out."""


class EmptyIndexError(RagError):
    """Nothing has been ingested into the configured collection yet."""


class ProviderError(RagError):
    """A remote model API failed after retries; the message never contains secrets."""


class StoreUnavailableError(RagError):
    """A vector store server cannot be reached, or a store file is held by another process."""


class CollectionLockedError(RagError):
    """Another process is writing the collection (ingest, migrate, rename, ...)."""


class LoadError(RagError):
    """A file cannot be read; the message says why (ingest reports it and goes on)."""


class NeedsExtraError(LoadError):
    """Only an optional extra that is not installed could read the whole file (an image, a
    fully scanned PDF without ``[ocr]``): ingest lists it as skipped, with the install hint,
    rather than failed, so a default install ingests the rest and exits 0."""
