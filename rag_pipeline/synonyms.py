"""Synonym and typo groups: every variant of a word is read as its canonical form.

A synonym file is UTF-8 text, one group per line, words separated by spaces or commas
(``,``, ``，`` or ``、``); the first word is the canonical one. ``#`` starts a comment line.

    优惠券 优惠卷 優惠券 優惠卷
    退货, 退换, 退貨

Normalisation replaces each variant with its canonical word (longest variants first, lower-cased
text), so "优惠卷" and "优惠券" give the same keyword tokens and the same FAQ match. It is
applied to questions and to stored chunks alike: on the keyword side (``bm25``) and in FAQ
direct answers (``chain.faq_direct_answer``). The package ships a small default list
(``rag_pipeline/data/synonyms.txt``) of common customer-service typos and variants; a user file
(``retriever.synonyms``, or ``synonyms.txt`` at the top of an ingested corpus folder) adds
groups, and its canonical word wins where a word is in both.

>>> groups = parse_synonyms("优惠券 优惠卷\\n退货,退换", "example")
>>> groups.normalise("优惠卷怎么用，能退换吗")
'优惠券怎么用，能退货吗'
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from rag_pipeline.errors import ConfigurationError

FILE_NAME = "synonyms.txt"  # the user file's name at the top of a corpus folder
_SEPARATORS = re.compile(r"[\s,，、]+")


def _as_pattern(word: str) -> str:
    # Latin words match whole words only ("pwd" not inside "pwdx"); Chinese has no spaces, so
    # a Chinese variant matches wherever it occurs.
    if word.isascii():
        return rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])"
    return re.escape(word)


class Synonyms:
    """Variant -> canonical word, with one compiled pattern for all variants."""

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        # A canonical word that is also a variant elsewhere would make the result depend on
        # the order of replacement; resolve chains once so one pass is enough.
        self.mapping = {
            v: self._resolve(c, mapping or {}) for v, c in (mapping or {}).items() if v != c
        }
        variants = sorted(self.mapping, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(_as_pattern, variants))) if variants else None

    @staticmethod
    def _resolve(word: str, mapping: dict[str, str]) -> str:
        seen = {word}
        while word in mapping and mapping[word] not in seen:
            word = mapping[word]
            seen.add(word)
        return word

    def __len__(self) -> int:
        return len(self.mapping)

    def __bool__(self) -> bool:
        return bool(self.mapping)

    def merged(self, other: Synonyms) -> Synonyms:
        """These groups, then ``other``'s: where a word is in both, ``other`` decides."""
        mapping = dict(self.mapping)
        for variant, canonical in other.mapping.items():
            mapping[variant] = canonical
            # The new canonical word must not be rewritten by an older group.
            mapping.pop(canonical, None)
        return Synonyms(mapping)

    def matches(self, text: str) -> bool:
        """Whether normalising ``text`` (lower-cased) would change it."""
        return self._pattern is not None and self._pattern.search(text.lower()) is not None

    def normalise(self, text: str) -> str:
        """``text`` lower-cased, every variant replaced by its canonical word."""
        text = text.lower()
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.mapping[m.group(0)], text)


def parse_synonyms(text: str, origin: str) -> Synonyms:
    """Parse synonym-file text; ``origin`` (a file name) is named in every error."""
    mapping: dict[str, str] = {}
    where: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = [w.lower() for w in _SEPARATORS.split(line) if w]
        if len(words) < 2:
            raise ConfigurationError(
                f"{origin}, line {number}: a synonym group needs at least two words (the "
                f"canonical one first), separated by spaces or commas; got {line!r}"
            )
        canonical = words[0]
        for word in words:
            if word in where and mapping.get(word, word) != canonical:
                raise ConfigurationError(
                    f"{origin}, line {number}: {word!r} is already in the group of line "
                    f"{where[word]}; a word can belong to one group only"
                )
            where.setdefault(word, number)
            if word != canonical:
                mapping[word] = canonical
    return Synonyms(mapping)


def load_synonyms(path: Path) -> Synonyms:
    """Read a synonym file; a missing, unreadable or malformed file is a ConfigurationError
    that names it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigurationError(f"synonym file {path} is not UTF-8 text ({e.reason})") from e
    except OSError as e:
        raise ConfigurationError(f"cannot read synonym file {path}: {e.strerror or e}") from e
    return parse_synonyms(text, str(path))


@lru_cache(maxsize=1)
def default_synonyms() -> Synonyms:
    """The list shipped in the package (``rag_pipeline/data/synonyms.txt``)."""
    from importlib.resources import files

    text = files("rag_pipeline.data").joinpath(FILE_NAME).read_text(encoding="utf-8")
    return parse_synonyms(text, f"rag_pipeline/data/{FILE_NAME}")


def build_synonyms(
    user_file: Path | None, *, use_defaults: bool, roots: list[Path] | None = None
) -> Synonyms:
    """The groups in force: the packaged defaults (unless switched off), then ``synonyms.txt``
    at the top of each corpus root that has one, then ``user_file``."""
    groups = default_synonyms() if use_defaults else Synonyms()
    for root in roots or []:
        candidate = root / FILE_NAME
        if candidate.is_file():
            groups = groups.merged(load_synonyms(candidate))
    if user_file is not None:
        groups = groups.merged(load_synonyms(user_file))
    return groups
