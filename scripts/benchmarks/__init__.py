"""The benchmarks behind ``scripts/bench.py``: one module per benchmark (``ingest``, ``ask``,
``retrieval``, ``stores``) and the helpers they share in ``common``."""
