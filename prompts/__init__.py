"""The packaged prompt templates (plain Markdown files beside this one).

This folder sits at the top of the repository so that prompts are easy to find and edit, and
ships inside the wheel as ``rag_pipeline.prompts``; ``rag_pipeline.chain.read_prompt`` reads
the files with ``importlib.resources``, so any install (wheel, git URL, editable) can answer.
"""
