"""Gather English text from the Python standard library's docstrings and derive a labelled task from it.

* Pre-training corpus: one document per docstring (module, class, function or method), one paragraph per line,
  a blank line between documents -- the official BERT corpus format that `autotinybert.data` reads.
* ``docpair`` task: two sentences, label 1 when both come from the same docstring, 0 when they come from
  docstrings of different modules. Train and dev use disjoint docstrings, so nothing leaks between them.
  It is a real, if easy, sentence-pair task: topic and style cues decide it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_text

# Pure-Python modules with rich docstrings, present in CPython 3.10+ on every platform, safe to import.
MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "code", "codecs",
    "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "dis", "doctest", "email", "email.message", "enum", "filecmp", "fileinput",
    "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html", "html.parser", "http.client", "http.cookies", "http.server", "imaplib", "inspect", "io",
    "ipaddress", "json", "json.decoder", "logging", "logging.handlers", "lzma", "mailbox", "mimetypes",
    "multiprocessing", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle",
    "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats", "queue",
    "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal",
    "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string", "stringprep",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unittest", "unittest.mock", "urllib.parse",
    "urllib.request", "uuid", "warnings", "wave", "weakref", "webbrowser", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zipimport",
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_WORDS = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class Docstring:
    module: str
    owner: str  # qualified name of what the docstring documents
    paragraphs: tuple[str, ...]

    @property
    def sentences(self) -> list[str]:
        return [s for p in self.paragraphs for s in _SENTENCE_END.split(p) if _is_prose(s)]


def _is_prose(text: str) -> bool:
    """Sentences of words, not code samples, tables or signatures."""
    words = _WORDS.findall(text)
    return 6 <= len(words) <= 60 and sum(len(w) for w in words) >= 0.6 * len(text.replace(" ", ""))


def _paragraphs(doc: str) -> tuple[str, ...]:
    out = []
    for block in re.split(r"\n\s*\n", doc):
        lines = [line.strip() for line in block.strip().splitlines()]
        # drop doctest and indented code-ish blocks
        if not lines or any(line.startswith((">>>", "...", "$ ")) for line in lines):
            continue
        text = " ".join(lines)
        if _is_prose(text) or len(_WORDS.findall(text)) >= 12:
            out.append(text)
    return tuple(out)


def collect_docstrings(modules: tuple[str, ...] = MODULES) -> list[Docstring]:
    """Docstrings of the listed modules and of their public classes, functions and methods (deduplicated)."""
    seen: set[str] = set()
    out: list[Docstring] = []

    def add(module: str, owner: str, obj) -> None:
        doc = inspect.getdoc(obj)
        if not doc or doc in seen:
            return
        seen.add(doc)
        paragraphs = _paragraphs(doc)
        if paragraphs:
            out.append(Docstring(module, owner, paragraphs))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules:
            try:
                module = importlib.import_module(name)
            except Exception:  # a module missing from a trimmed Python build is skipped, not fatal
                continue
            add(name, name, module)
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    add(name, f"{name}.{attr}", obj)
                if inspect.isclass(obj):
                    for meth_name, meth in sorted(vars(obj).items()):
                        if not meth_name.startswith("_") and inspect.isfunction(meth):
                            add(name, f"{name}.{attr}.{meth_name}", meth)
    return out


@dataclass(frozen=True)
class DocstringCorpus:
    """Where `build_demo_data` wrote things, and how much."""

    corpus_file: Path
    task_dir: Path  # GLUE-style folder: train.tsv, dev.tsv
    documents: int
    words: int
    train_pairs: int
    dev_pairs: int


def _pairs(docs: list[Docstring], n: int, rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """n balanced (label, sentence_a, sentence_b) rows drawn from `docs`."""
    with_two = [d for d in docs if len(d.sentences) >= 2]
    rows = []
    for i in range(n):
        if i % 2 == 0:  # positive: two different sentences of one docstring
            doc = with_two[int(rng.integers(len(with_two)))]
            a, b = rng.choice(len(doc.sentences), size=2, replace=False)
            rows.append((1, doc.sentences[int(a)], doc.sentences[int(b)]))
        else:  # negative: sentences of docstrings from two different modules
            for _ in range(1000):
                d1, d2 = (docs[int(j)] for j in rng.integers(len(docs), size=2))
                if d1.module != d2.module and d1.sentences and d2.sentences:
                    break
            else:
                raise RuntimeError("could not draw two docstrings from different modules in 1000 tries")
            rows.append((0, d1.sentences[int(rng.integers(len(d1.sentences)))],
                         d2.sentences[int(rng.integers(len(d2.sentences)))]))
    return rows


def build_demo_data(out_dir: str | Path, seed: int = 0, train_pairs: int = 2000, dev_pairs: int = 400,
                    dev_fraction: float = 0.2) -> DocstringCorpus:
    """Write ``corpus.txt`` and ``docpair/{train,dev}.tsv`` under `out_dir` (deterministic for a seed)."""
    out = Path(out_dir)
    docs = collect_docstrings()
    if len(docs) < 50:
        raise RuntimeError(f"found only {len(docs)} docstrings in the standard library; is this a trimmed Python?")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    n_dev = int(len(docs) * dev_fraction)
    dev_docs = [docs[i] for i in order[:n_dev]]
    train_docs = [docs[i] for i in order[n_dev:]]

    corpus = "\n\n".join("\n".join(d.paragraphs) for d in docs) + "\n"
    atomic_write_text(out / "corpus.txt", corpus)
    for split, split_docs, n in (("train", train_docs, train_pairs), ("dev", dev_docs, dev_pairs)):
        rows = _pairs(split_docs, n, np.random.default_rng([seed, 1 if split == "train" else 2]))
        text = "label\tsentence1\tsentence2\n" + "".join(
            f"{label}\t{a.replace(chr(9), ' ')}\t{b.replace(chr(9), ' ')}\n" for label, a, b in rows)
        atomic_write_text(out / "docpair" / f"{split}.tsv", text)
    return DocstringCorpus(out / "corpus.txt", out / "docpair", len(docs), len(corpus.split()),
                           train_pairs, dev_pairs)
