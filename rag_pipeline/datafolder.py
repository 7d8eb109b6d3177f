"""The data folder: created on first use, or one clear line saying why it cannot be used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from rag_pipeline.config import Settings


def ensure_data_dir(settings: Settings) -> None:
    """Create the data folder, or say in one line why it cannot be used."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigurationError(
            f"cannot use the data folder {settings.data_dir} ({e.strerror or e}): make it a "
            "writable folder, or point RAG_DATA_DIR / --data-dir elsewhere"
        ) from e
