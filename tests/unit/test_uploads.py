"""Upload names and the atomic staging of uploaded files (rag_pipeline.service.uploads)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_pipeline.loading import SUPPORTED_SUFFIXES
from rag_pipeline.service.uploads import (
    MAX_NAME_BYTES,
    Staging,
    UploadNameError,
    accepted_suffixes,
    safe_name,
)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("退货政策.md", "退货政策.md"),
        ("dir/sub/faq.csv", "faq.csv"),
        ("C:\\Users\\me\\x.md", "x.md"),
        ("C:x.md", "x.md"),
        ("/etc/notes.txt", "notes.txt"),
        ("  spaced.PDF  ", "spaced.PDF"),
        ("cafe\u0301.md", "caf\u00e9.md"),  # NFD from macOS -> NFC
    ],
)
def test_safe_names_keep_the_base_name(raw: str, kept: str) -> None:
    assert safe_name(raw) == kept


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("../x.md", "climbs out"),
        ("a/../../x.md", "climbs out"),
        ("..\\..\\x.md", "climbs out"),
        ("..", "climbs out"),
        ("x\x00.md", "control"),
        ("x\n.md", "control"),
        ("", "no base name"),
        (".", "no base name"),
        ("dir/", "no base name"),
        (".hidden.md", "hidden"),
        ("a" * MAX_NAME_BYTES + ".md", "longer than"),
        ("synonyms.txt", "reserved"),
        ("faq.csv.meta.json", "reserved"),
        ("x.exe", "accepted are"),
        ("noextension", "accepted are"),
    ],
)
def test_odd_names_are_refused_saying_why(raw: str, why: str) -> None:
    with pytest.raises(UploadNameError, match=why) as caught:
        safe_name(raw)
    assert repr(raw) in str(caught.value)  # the message names the file


def test_accepted_suffixes_are_the_loaders() -> None:
    assert accepted_suffixes() == sorted(SUPPORTED_SUFFIXES)
    with pytest.raises(UploadNameError) as caught:
        safe_name("x.exe")
    assert all(suffix in str(caught.value) for suffix in SUPPORTED_SUFFIXES)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_any_name_is_refused_or_a_plain_file_inside_the_folder(raw: str) -> None:
    folder = Path("/srv/rag/documents")
    try:
        name = safe_name(raw)
    except UploadNameError:
        return
    assert name and not name.startswith(".")
    assert not {"/", "\\", "\x00"} & set(name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert os.path.normpath(folder / name) == str(folder / name)
    assert (folder / name).parent == folder
    assert Path(name).suffix.lower() in SUPPORTED_SUFFIXES


@given(st.sampled_from(sorted(SUPPORTED_SUFFIXES)), st.text(min_size=1, max_size=20))
def test_traversal_prefixes_never_pass(suffix: str, stem: str) -> None:
    for raw in (f"../{stem}{suffix}", f"x/../../{stem}{suffix}", f"..\\{stem}{suffix}"):
        with pytest.raises(UploadNameError):
            safe_name(raw)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_staging_commits_all_files_and_rollback_restores_the_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "a.md").write_text("old a", encoding="utf-8")
    with Staging(folder) as staging:
        staging.write("a.md", io.BytesIO(b"new a"))
        staging.write("b.md", io.BytesIO(b"new b"))
        assert _tree(folder).keys() - {"a.md"}  # hidden temporary files only so far
        assert all(name.startswith(".") for name in _tree(folder).keys() - {"a.md"})
        paths = staging.commit()
        assert sorted(p.name for p in paths) == ["a.md", "b.md"]
        assert (folder / "a.md").read_bytes() == b"new a"
        staging.rollback()
    assert _tree(folder) == {"a.md": b"old a"}  # b.md gone, a.md back, no leftovers

    with Staging(folder) as staging:
        staging.write("a.md", io.BytesIO(b"newer a"))
        staging.commit()
    assert _tree(folder) == {"a.md": b"newer a"}  # the replaced original removed


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError("connection lost")

    folder = tmp_path / "documents"
    with pytest.raises(OSError, match="connection lost"), Staging(folder) as staging:
        staging.write("ok.md", io.BytesIO(b"fine"))
        staging.write("bad.md", Broken())  # type: ignore[arg-type]
    assert _tree(folder) == {}


def test_staging_refuses_links_and_twice_the_same_name(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    outside = tmp_path / "outside.md"
    outside.write_text("keep", encoding="utf-8")
    (folder / "link.md").symlink_to(outside)
    with Staging(folder) as staging:
        with pytest.raises(UploadNameError, match="not a plain file"):
            staging.write("link.md", io.BytesIO(b"overwrite?"))
        staging.write("x.md", io.BytesIO(b"1"))
        with pytest.raises(UploadNameError, match="twice"):
            staging.write("x.md", io.BytesIO(b"2"))
    assert outside.read_text(encoding="utf-8") == "keep"
