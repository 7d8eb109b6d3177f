"""What a test process must not inherit from the developer's shell: provider keys and RAG_*
settings. Used by the chroma server the plugin starts, and by our own suite's hermetic fixture.

>>> "RAG_DATA_DIR" in clean_env(RAG_DATA_DIR="/tmp/x")
True
"""

from __future__ import annotations

import os

from rag_pipeline.config import ENV_PREFIX

# Provider variables a developer may have exported; no test server or test may see them.
PROVIDER_VARIABLES = (
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_HTTP_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
)


def is_leaky(name: str) -> bool:
    """Whether an environment variable would change what rag_pipeline or a provider SDK does."""
    return name.startswith(ENV_PREFIX) or name in PROVIDER_VARIABLES


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RAG_* and provider variables, Chroma's telemetry
    off, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not is_leaky(k)}
    env["ANONYMIZED_TELEMETRY"] = "False"
    env.update(extra)
    return env
