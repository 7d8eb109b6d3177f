"""``rag verify``: check that a collection and everything kept beside it agree, and repair.

Checks, for the configured collection:

- the chunk ids of the store, the record manager and the keyword index are the same sets;
- every stored chunk's source is in the source manifest, and every source in the manifest
  still has its file (a run killed before pruning, or a lost record-manager file, can leave
  chunks of deleted files that answers would cite);
- the stored embedding fingerprint is the configured model's, and the index settings
  (distance space, graph parameters) are the configured ones.

``repair=True`` fixes what it can without embedding anything: missing keyword rows come from
the store's texts, extra ones go; records without a chunk go (the next ingest re-adds the
chunk, its vector from the embedding cache); chunks without a record are recorded when their
file still exists and deleted when it does not; sources whose files are gone are deleted. A
fingerprint or index-settings mismatch cannot be repaired in place: the report says to run
``rag ingest --rebuild``.

>>> report = verify(load_settings(), repair=False)     # doctest: +SKIP
>>> report.ok                                           # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_pipeline.batching import batched
from rag_pipeline.bookkeeping import KEY_BATCH, Bookkeeping
from rag_pipeline.errors import ConfigurationError, EmbeddingMismatchError
from rag_pipeline.stores.base import group_of

if TYPE_CHECKING:
    from rag_pipeline.config import Settings
    from rag_pipeline.stores.base import VectorBackend

SHOWN = 10  # ids / sources listed per problem (the counts are complete)


@dataclass
class Problem:
    """One kind of disagreement: how many, a few examples, and what was done about it."""

    kind: str
    count: int
    examples: list[str]
    repaired: int = 0
    needs: str | None = None  # what the user must run when it cannot be repaired here


@dataclass
class VerifyReport:
    """What ``verify`` found; ``to_dict`` is ``rag verify --json``."""

    collection: str
    location: str
    chunks: int
    records: int
    keyword_rows: int
    sources: int
    problems: list[Problem] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """No problem is left (none found, or every one repaired)."""
        return all(p.needs is None and p.repaired >= p.count for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _problem(kind: str, items: set[str] | list[str]) -> Problem:
    listed = sorted(items)
    return Problem(kind, len(listed), listed[:SHOWN])


def _file_of(key: str, manifest: dict[str, str], roots: dict[str, str]) -> Path | None:
    """The file a source key stands for: ``root path / path`` (None when unknown)."""
    if key in manifest:
        label, _, relative = key.partition("/")
        if label in roots and roots[label] == manifest[key]:
            return Path(manifest[key]) / relative
        return Path(manifest[key]) / key  # a key of the earlier layout: the bare path
    label, _, relative = key.partition("/")
    if label in roots and relative:
        return Path(roots[label]) / relative
    return None


def verify(settings: Settings, *, repair: bool = False) -> VerifyReport:
    """Check the configured collection (see the module docstring); ``repair`` holds the
    collection's write lock and fixes what needs no re-embedding."""
    from rag_pipeline.admin import opened

    with opened(settings, writing="rag verify --repair" if repair else None) as store:
        state = Bookkeeping(settings, store.namespace)
        report = _check(settings, store, state)
        if repair:
            _repair(settings, store, state, report)
            report.repaired = True
            store.flush()
    return report


def _check(settings: Settings, store: VectorBackend, state: Bookkeeping) -> VerifyReport:
    groups: dict[str, str | None] = {}
    for batch in store.scan():
        for record in batch:
            groups[record.id] = group_of(record.metadata)
    stored = set(groups)
    recorded = set(state.records.list_keys())
    indexed = state.keyword.ids()
    manifest = dict(state.manifest.rows())
    roots = state.roots()
    report = VerifyReport(
        collection=store.name,
        location=store.location,
        chunks=len(stored),
        records=len(recorded),
        keyword_rows=len(indexed),
        sources=len(manifest),
    )
    checks = [
        ("chunks without a record", stored - recorded),
        ("records without a chunk", recorded - stored),
        ("chunks missing from the keyword index", stored - indexed),
        ("keyword rows without a chunk", indexed - stored),
    ]
    unlisted = {g for g in groups.values() if g is not None and g not in manifest}
    checks.append(("sources missing from the manifest", unlisted))
    gone = {
        key
        for key in manifest
        if (path := _file_of(key, manifest, roots)) is not None and not path.exists()
    }
    checks.append(("sources whose file is gone", gone))
    report.problems = [_problem(kind, items) for kind, items in checks if items]
    if not state.keyword.statistics_agree():
        # Rows changed behind the index's back: BM25 would use wrong counts and lengths.
        report.problems.append(Problem("keyword statistics out of step", 1, []))
    report.problems.extend(_model_problems(settings, store))
    return report


def _model_problems(settings: Settings, store: VectorBackend) -> list[Problem]:
    from rag_pipeline.embeddings import build_embedding_model
    from rag_pipeline.stores import check_index_settings

    found: list[Problem] = []
    model = build_embedding_model(settings)
    stored = store.stored_fingerprint()
    configured = model.fingerprint if model.dimension is not None else None
    if stored is None:
        found.append(Problem("no embedding fingerprint", 1, [], needs="rag ingest --rebuild"))
    elif (configured is not None and stored != configured) or not stored.startswith(
        f"{model.provider}:{model.model}:"
    ):
        mismatch = EmbeddingMismatchError(store.name, stored, model.fingerprint)
        found.append(
            Problem("embedding model mismatch", 1, [str(mismatch)], needs="rag ingest --rebuild")
        )
    try:
        check_index_settings(settings, store, writing=False)
    except ConfigurationError as e:
        found.append(Problem("index settings mismatch", 1, [str(e)], needs="rag ingest --rebuild"))
    return found


def _repair(
    settings: Settings, store: VectorBackend, state: Bookkeeping, report: VerifyReport
) -> None:
    by_kind = {p.kind: p for p in report.problems}
    manifest = dict(state.manifest.rows())
    roots = state.roots()

    # Orphan chunks first: deleted when their file is gone; otherwise recorded, also when
    # their folder is unknown (its roots were lost with the records): nothing is deleted that
    # is not known to be stale, and the next ingest of the folder takes them over.
    if (problem := by_kind.get("chunks without a record")) is not None:
        recorded = set(state.records.list_keys())
        orphans = [
            (r.id, group_of(r.metadata))
            for batch in store.scan()
            for r in batch
            if r.id not in recorded
        ]
        stale = {
            i
            for i, g in orphans
            if g is not None and (path := _file_of(g, manifest, roots)) and not path.exists()
        }
        keep = [(i, g) for i, g in orphans if i not in stale]
        for pairs in batched(keep, KEY_BATCH):
            state.record([i for i, _ in pairs], [g for _, g in pairs])
        state.delete_ids(store, sorted(stale))
        problem.repaired = len(orphans)
    if (problem := by_kind.get("records without a chunk")) is not None:
        stored = {r.id for batch in store.scan() for r in batch}
        stale_keys = [k for k in state.records.list_keys() if k not in stored]
        for keys in batched(stale_keys, KEY_BATCH):
            state.records.delete_keys(list(keys))
        problem.repaired = len(stale_keys)
    if (problem := by_kind.get("sources whose file is gone")) is not None:
        gone = [
            key
            for key in manifest
            if (path := _file_of(key, manifest, roots)) is not None and not path.exists()
        ]
        state.delete_sources(store, gone)
        problem.repaired = len(gone)
    # The keyword index last: it follows the store after the steps above.
    if "keyword statistics out of step" in by_kind:
        state.keyword.recount()
        by_kind["keyword statistics out of step"].repaired = 1
    stored = {r.id for batch in store.scan() for r in batch}
    indexed = state.keyword.ids()
    state.keyword.delete(sorted(indexed - stored))
    missing = sorted(stored - indexed)
    for chunk_ids in batched(missing, KEY_BATCH):
        docs = store.get(list(chunk_ids))
        state.keyword.add(docs, [d.id or "" for d in docs])
    for kind in ("chunks missing from the keyword index", "keyword rows without a chunk"):
        if kind in by_kind:
            by_kind[kind].repaired = by_kind[kind].count
    if (problem := by_kind.get("sources missing from the manifest")) is not None:
        # A run killed between storing a file and listing it, or lost records: a source of a
        # known folder is listed when its file exists and deleted when it is gone.
        listed = dict(state.manifest.rows())
        groups = {group_of(r.metadata) for batch in store.scan() for r in batch}
        unlisted = {g for g in groups if g is not None and g not in listed}
        located = {g: _file_of(g, {}, roots) for g in unlisted}
        present = {g for g, path in located.items() if path is not None and path.exists()}
        vanished = {g for g, path in located.items() if path is not None and not path.exists()}
        state.manifest.add_rows((g, roots[g.partition("/")[0]]) for g in present)
        state.delete_sources(store, sorted(vanished))
        unknown = unlisted - present - vanished
        problem.repaired = problem.count - len(unknown)
        if unknown:
            problem.needs = (
                "rag ingest FOLDER for the folders these files came from (their paths were "
                "lost with the records), then rag verify --repair"
            )
