"""Corpus readers: text files in three shapes -> an iterator of documents (each a list of paragraphs).

Shapes (detected per file from its first kilobytes):

* ``plain``: one paragraph or sentence per line, a blank line between documents (the BERT/official format);
* ``wikiextractor``: WikiExtractor output, ``<doc id=... title=...>`` ... ``</doc>`` around each article (the tags
  and the title line right after the opening tag are dropped);
* ``gutenberg``: a Project Gutenberg book (CRLF line endings, license header and footer around
  ``*** START OF ...`` / ``*** END OF ...``); the whole book is one document, blank lines separate paragraphs and
  the hard-wrapped lines inside a paragraph are joined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from ..errors import UserError

Shape = Literal["plain", "wikiextractor", "gutenberg"]
_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THIS|THE) PROJECT GUTENBERG", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*\*\*\s*END OF (THIS|THE) PROJECT GUTENBERG", re.IGNORECASE)
_SKIP_NAMES = {"readme", "readme.md", "readme.txt", "license", "license.txt", "manifest.sha256"}


class CorpusError(UserError):
    """A corpus path that cannot be read as training text."""


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    size: int
    mtime_ns: int

    @property
    def digest(self) -> str:
        """SHA-256 of the file's bytes (what fingerprints see: an edit re-tokenizes, a move or `touch` does not)."""
        return content_digest(self.path)


# A full hash costs ~0.3 s per 150 MB once the files are in the page cache (measured on the 158 MB shared corpus:
# 0.29-0.31 s with SHA-256, 1.9 s cold from disk), little beside tokenizing it; it is kept per process for files
# whose size, mtime, ctime and inode did not change, so the stages of one run hash each file once.
_DIGESTS: dict[tuple, str] = {}
_TEXT_PROBE_BYTES = 1 << 16
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\ufffd]")  # control characters but tab, newlines, ESC


def content_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, cached for this process while the file's stat is unchanged."""
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        try:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as err:
            raise CorpusError(f"corpus file {path} cannot be read: {err.strerror}; check its permissions") from None
        _DIGESTS[key] = digest
    return digest


def corpus_digest(files: list[CorpusFile]) -> str:
    """One hash over the files' contents, in their (sorted) order; paths do not enter it."""
    import hashlib

    return hashlib.sha256("\n".join(f.digest for f in files).encode()).hexdigest()[:20]


def check_text(path: Path) -> None:
    """Refuse a file that is not text: NUL bytes (an executable, an image, random bytes) or, in its first 64 KiB,
    more than 1 % of bytes that are not UTF-8 or are control characters. Cheap: reads one block."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_TEXT_PROBE_BYTES)
    except OSError as err:
        raise CorpusError(f"corpus file {path} cannot be read: {err.strerror}; check its permissions") from None
    if not head:
        return
    if b"\x00" in head:
        raise CorpusError(f"corpus file {path} is binary (it holds NUL bytes), not text; give text files only "
                          "(plain, WikiExtractor or Gutenberg), or remove it from the corpus folder")
    text = head.decode("utf-8", errors="replace")
    if len(head) == _TEXT_PROBE_BYTES:
        text = text[:-4]  # a character cut at the block's end is not an error
    bad = len(_NOT_TEXT.findall(text))
    if bad > 0.01 * max(len(text), 1):
        raise CorpusError(f"corpus file {path} is not UTF-8 text ({bad} of its first {len(text)} characters are "
                          "undecodable or control characters); convert it to UTF-8 or remove it from the corpus")


def list_corpus_files(paths: str | Path | list[str | Path]) -> list[CorpusFile]:
    """Every text file under `paths` (files or folders, searched recursively), sorted; errors for missing/empty."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise CorpusError("no corpus given: pass one or more text files or folders (corpus=PATH or corpus=[A,B])")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise CorpusError(f"corpus path {path} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and p.name.lower() not in _SKIP_NAMES)
            if not found:
                raise CorpusError(f"corpus folder {path} holds no files")
            files.extend(found)
        else:
            files.append(path)
    out = []
    for path in sorted(set(files)):
        stat = path.stat()
        out.append(CorpusFile(path.resolve(), stat.st_size, stat.st_mtime_ns))
    if sum(f.size for f in out) == 0:
        raise CorpusError(f"corpus {[str(p) for p in paths]} is empty (all {len(out)} file(s) have 0 bytes)")
    for file in out:
        check_text(file.path)
    return out


def detect_shape(head: str) -> Shape:
    """Guess a file's shape from its beginning."""
    stripped = head.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<doc ") or stripped.startswith("<doc>"):
        return "wikiextractor"
    if "project gutenberg" in head.lower() and any(_GUTENBERG_START.match(line) for line in head.splitlines()):
        return "gutenberg"
    return "plain"


def _paragraphs_plain(lines: Iterator[str]) -> Iterator[list[str]]:
    doc: list[str] = []
    for line in lines:
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _documents_wikiextractor(lines: Iterator[str]) -> Iterator[list[str]]:
    doc: list[str] | None = None
    skip_title = False
    for line in lines:
        text = line.strip()
        if text.startswith("<doc"):
            doc, skip_title = [], True
            continue
        if text == "</doc>":
            if doc:
                yield doc
            doc = None
            continue
        if doc is None or not text:
            continue
        if skip_title:  # WikiExtractor repeats the title as the first line of the article
            skip_title = False
            continue
        doc.append(text)
    if doc:
        yield doc


def _documents_gutenberg(lines: Iterator[str]) -> Iterator[list[str]]:
    body: list[str] = []
    started = False
    paragraph: list[str] = []
    all_lines = list(lines)
    has_start = any(_GUTENBERG_START.match(line) for line in all_lines)
    started = not has_start
    for line in all_lines:
        if not started:
            started = bool(_GUTENBERG_START.match(line))
            continue
        if _GUTENBERG_END.match(line):
            break
        text = line.strip()
        if text:
            paragraph.append(text)
        elif paragraph:
            body.append(" ".join(paragraph))  # hard-wrapped lines -> one paragraph
            paragraph = []
    if paragraph:
        body.append(" ".join(paragraph))
    if body:
        yield body


def read_documents(path: str | Path, shape: Shape | None = None) -> Iterator[list[str]]:
    """Documents of one file, each a list of non-empty paragraphs. CRLF and a UTF-8 BOM are handled."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace", newline=None) as handle:  # newline=None: CRLF -> LF
        head = handle.read(8192)
        handle.seek(0)
        shape = shape or detect_shape(head)
        lines = (line.lstrip("\ufeff") for line in handle)
        if shape == "wikiextractor":
            yield from _documents_wikiextractor(lines)
        elif shape == "gutenberg":
            yield from _documents_gutenberg(lines)
        else:
            yield from _paragraphs_plain(lines)
