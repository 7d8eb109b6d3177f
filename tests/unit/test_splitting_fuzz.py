"""Fuzz: the splitter's chunks are slices of the text, in order, covering it.

The property, from splitting.py: the text of one plain-text Document is cut by LangChain's
RecursiveCharacterTextSplitter (``add_start_index``, ``strip_whitespace``), with the overlap
``min(chunk_overlap, chunk_size // 2)`` for the "chinese" strategy and ``chunk_overlap`` for
"langchain". Taking the kept chunks and the dropped ones (``dropped=``) together, in order:

- each chunk is ``text[start_index : start_index + len(chunk)]``, 1..``chunk_size`` long, and
  ``start_index >= previous start_index + len(previous chunk) - overlap`` (LangChain finds a
  chunk's offset by searching from there, so in repetitive text it may name an earlier equal
  occurrence: the offset is a place the chunk occurs, not necessarily where it was cut);
- chunk_index numbers the kept chunks 0, 1, 2...;
- the chunks can be laid over the text one after the other, each overlapping the one before
  by at most the overlap, with only whitespace before the first, between two, and after the
  last: no non-blank text is lost or reordered.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document

from rag_pipeline.config import SplitSettings
from rag_pipeline.splitting import split_documents

# Few distinct characters, separators among them: repeats and every cutting rule get exercised.
ALPHABET = st.sampled_from(list("退货运费ab1 \n\n。！？；，、…!?;. ,") + ["\n\n", ". ", ", "])
TEXTS = st.lists(ALPHABET, min_size=1, max_size=400).map("".join)


@st.composite
def split_settings(draw: st.DrawFn) -> SplitSettings:
    size = draw(st.integers(min_value=10, max_value=60))
    overlap = draw(st.integers(min_value=0, max_value=size - 1))
    strategy = draw(st.sampled_from(["chinese", "langchain"]))
    return SplitSettings(chunk_size=size, chunk_overlap=overlap, strategy=strategy)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=TEXTS, split=split_settings())
def test_chunks_are_ordered_exact_slices_covering_the_text(text: str, split: SplitSettings) -> None:
    doc = Document(page_content=text, metadata={"source": "f.txt", "markup": "text"})
    dropped: list[Document] = []
    kept = split_documents([doc], split, dropped=dropped)
    assert [c.metadata["chunk_index"] for c in kept] == list(range(len(kept)))
    overlap = (
        min(split.chunk_overlap, split.chunk_size // 2)
        if split.strategy == "chinese"
        else split.chunk_overlap
    )
    # Dropped chunks are handed back separately; their offsets put them back in sequence.
    chunks = sorted(kept + dropped, key=lambda c: c.metadata["start_index"])
    previous: tuple[int, int] | None = None  # start_index and length of the chunk before
    end = 0  # where the chunks laid over the text so far end
    for chunk in chunks:
        start, body = chunk.metadata["start_index"], chunk.page_content
        assert text[start : start + len(body)] == body
        assert 0 < len(body) <= split.chunk_size
        if previous is not None:
            assert start >= previous[0] + previous[1] - overlap
        previous = (start, len(body))
        # Lay the chunk as far right as it occurs without skipping non-blank text.
        first_text = end + len(text[end:]) - len(text[end:].lstrip())
        places = [
            q for q in range(max(0, end - overlap), first_text + 1) if text.startswith(body, q)
        ]
        assert places, (body, end)
        end = max(end, places[-1] + len(body))
    assert not text[end:].strip()
