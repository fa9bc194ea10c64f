"""Corpus -> packed, memory-mapped training sequences, cached under a fingerprint, with a held-out split.

    corpus = prepare_corpus(["/data/corpus"], tokenizer="path/to/bert-folder", max_seq_length=128,
                            cache_dir="~/.cache/autotinybert")
    corpus.train  # np.memmap (N, 128) of token ids: [CLS] ... [SEP] [PAD]...
    corpus.validation  # (M, 128), whole documents chosen by a hash of their text

Packing: the paragraphs of one document are tokenized in batches (fast tokenizer, no special tokens), joined, and
cut into pieces of ``max_seq_length - 2`` tokens; every piece becomes ``[CLS] piece [SEP]`` padded to the length.
No sequence spans two documents. The cache key covers the files' contents (SHA-256; not their paths or times), the
tokenizer's full definition, the length and the split settings: a second call reuses the arrays, any change rebuilds
them. A tokenizer trained on the corpus is deterministic and cached under the same content key.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_write_json, check_writable, staged_dir
from .corpus import CorpusError, CorpusFile, corpus_digest, list_corpus_files, read_documents
from .tokenizer import load_tokenizer, tokenizer_fingerprint, train_wordpiece

CACHE_VERSION = 3  # 3: keyed by file contents
DEFAULT_CACHE_DIR = Path(os.environ.get("AUTOTINYBERT_CACHE", "~/.cache/autotinybert")).expanduser()
_BATCH_PARAGRAPHS = 2048  # paragraphs per encode_batch call


@dataclass
class PreparedCorpus:
    """Token arrays of a prepared corpus (memory-mapped, read-only) and the tokenizer they use."""

    cache_dir: Path
    fingerprint: str
    train: np.ndarray  # (N, T) token ids
    validation: np.ndarray  # (M, T)
    tokenizer_dir: Path
    tokenizer: Any
    max_seq_length: int
    pad_token_id: int
    stats: dict[str, Any] = field(default_factory=dict)  # tokens, documents, seconds, tokens_per_s, reused

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)


def corpus_fingerprint(files: list[CorpusFile], tokenizer_hash: str, max_seq_length: int, val_fraction: float,
                       val_max_sequences: int) -> str:
    key = {"version": CACHE_VERSION, "files": corpus_digest(files),
           "tokenizer": tokenizer_hash, "max_seq_length": max_seq_length, "val_fraction": val_fraction,
           "val_max_sequences": val_max_sequences}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _doc_key(doc: list[str]) -> int:
    """A stable 64-bit hash of a document's text: decides the validation split independent of file order."""
    head = "\n".join(doc)[:4096].encode("utf-8", "replace")
    return int.from_bytes(hashlib.blake2b(head, digest_size=8).digest(), "little")


def _pack(ids: list[int], body: int, cls_id: int, sep_id: int, pad_id: int, length: int) -> list[list[int]]:
    out = []
    for start in range(0, len(ids), body):
        piece = [cls_id, *ids[start:start + body], sep_id]
        out.append(piece + [pad_id] * (length - len(piece)))
    return out


def tokenize_and_pack(files: list[CorpusFile], tokenizer, max_seq_length: int,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """All documents -> (sequences (N, T), doc_keys (N,) uint64, stats). Tokenizes in batches with the Rust backend."""
    from tqdm.auto import tqdm

    from tokenizers import Tokenizer

    # A private copy without the padding / truncation a saved tokenizer.json may carry (sentence-transformers
    # folders pad to the batch's longest and truncate at 128): packing needs every token of every paragraph.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    cls_id, sep_id, pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    body = max_seq_length - 2
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    chunks: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    pending_docs: list[tuple[int, int]] = []  # (doc key, number of paragraphs)
    pending_paragraphs: list[str] = []
    stats = {"documents": 0, "paragraphs": 0, "tokens": 0, "bytes": sum(f.size for f in files)}

    def flush() -> None:
        if not pending_paragraphs:
            return
        encodings = backend.encode_batch(pending_paragraphs, add_special_tokens=False)
        rows: list[list[int]] = []
        row_keys: list[int] = []
        pos = 0
        for key, count in pending_docs:
            ids = [t for enc in encodings[pos:pos + count] for t in enc.ids]
            pos += count
            stats["tokens"] += len(ids)
            packed = _pack(ids, body, cls_id, sep_id, pad_id, max_seq_length)
            rows.extend(packed)
            row_keys.extend([key] * len(packed))
        if rows:
            chunks.append(np.asarray(rows, dtype=dtype))
            keys.append(np.asarray(row_keys, dtype=np.uint64))
        pending_docs.clear()
        pending_paragraphs.clear()

    bar = tqdm(total=stats["bytes"], unit="B", unit_scale=True, desc="tokenize", disable=not progress)
    for file in files:
        for doc in read_documents(file.path):
            stats["documents"] += 1
            stats["paragraphs"] += len(doc)
            pending_docs.append((_doc_key(doc), len(doc)))
            pending_paragraphs.extend(doc)
            if len(pending_paragraphs) >= _BATCH_PARAGRAPHS:
                flush()
        bar.update(file.size)
    flush()
    bar.close()
    if not chunks:
        raise CorpusError(f"corpus ({len(files)} file(s)) holds no text after reading; check the files' content")
    return np.concatenate(chunks), np.concatenate(keys), stats


def split_validation(keys: np.ndarray, val_fraction: float, val_max_sequences: int) -> np.ndarray:
    """Boolean mask of validation rows: whole documents in order of their hash until the target count is reached."""
    n = len(keys)
    if n < 2:
        raise CorpusError(f"corpus packs into {n} sequence(s); at least 2 are needed (one to train, one to validate)")
    target = max(1, min(int(round(n * val_fraction)), val_max_sequences, n - 1))
    order = np.argsort(keys, kind="stable")  # rows of one document are contiguous in this order
    chosen = order[:target]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


def prepare_corpus(
    corpus: str | Path | list[str | Path],
    tokenizer: str | Path | None = None,
    *,
    max_seq_length: int = 128,
    cache_dir: str | Path | None = None,
    val_fraction: float = 0.01,
    val_max_sequences: int = 2000,
    tokenizer_vocab_size: int = 8000,
    progress: bool = True,
) -> PreparedCorpus:
    """Tokenize + pack `corpus` once (or reuse the cache) and return memory-mapped train/validation arrays.

    `tokenizer`: a Hugging Face tokenizer folder or name; None trains a WordPiece vocabulary of
    `tokenizer_vocab_size` on the corpus (cached too). Errors for missing/empty corpus or bad settings come first.
    """
    if not isinstance(max_seq_length, int) or max_seq_length < 8:
        raise UserError(f"max_seq_length must be an integer >= 8, got {max_seq_length!r}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if val_max_sequences < 1:
        raise UserError(f"val_max_sequences must be >= 1, got {val_max_sequences!r}")
    files = list_corpus_files(corpus)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    if tokenizer is None:
        tok_dir = cache_root / "tokenizers" / f"wordpiece-{tokenizer_vocab_size}-{corpus_digest(files)[:16]}"
        if not (tok_dir / "tokenizer.json").is_file():
            check_writable(cache_root, key="cache_dir")
            train_wordpiece(files, tok_dir, vocab_size=tokenizer_vocab_size, overwrite=True)
        tokenizer = tok_dir
    tok = load_tokenizer(tokenizer)
    tok_dir = Path(tokenizer)
    if not tok_dir.is_dir():
        # a hub name: keep a local copy so that the run folder can ship the tokenizer files
        tok_dir = cache_root / "tokenizers" / f"hub-{tokenizer_fingerprint(tok)}"
        if not (tok_dir / "tokenizer.json").is_file():
            check_writable(cache_root, key="cache_dir")
            with staged_dir(tok_dir, overwrite=True) as stage:
                tok.save_pretrained(stage)
    fingerprint = corpus_fingerprint(files, tokenizer_fingerprint(tok), max_seq_length, val_fraction,
                                     val_max_sequences)
    out = cache_root / "corpus" / fingerprint
    meta_file = out / "meta.json"
    reused = meta_file.is_file()
    if not reused:
        check_writable(cache_root, key="cache_dir")
        started = time.perf_counter()
        sequences, keys, stats = tokenize_and_pack(files, tok, max_seq_length, progress)
        seconds = time.perf_counter() - started
        val_mask = split_validation(keys, val_fraction, val_max_sequences)
        stats.update(seconds=round(seconds, 3), tokens_per_s=round(stats["tokens"] / max(seconds, 1e-9), 1),
                     train_sequences=int((~val_mask).sum()), validation_sequences=int(val_mask.sum()))
        with staged_dir(out, overwrite=True) as stage:
            np.save(stage / "train.npy", sequences[~val_mask])
            np.save(stage / "validation.npy", sequences[val_mask])
            atomic_write_json(stage / "meta.json", {
                "fingerprint": fingerprint, "version": CACHE_VERSION, "max_seq_length": max_seq_length,
                "tokenizer": tokenizer_fingerprint(tok), "corpus_sha256": corpus_digest(files),
                "files": len(files), "stats": stats})
    try:
        meta = json.loads(meta_file.read_text())
        stats = {**meta["stats"], "reused": reused}
        train, validation = np.load(out / "train.npy", mmap_mode="r"), np.load(out / "validation.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError) as err:
        raise CorpusError(f"the corpus cache {out} is damaged ({err}); delete that folder and run again") from None
    return PreparedCorpus(
        cache_dir=out, fingerprint=fingerprint, train=train, validation=validation,
        tokenizer_dir=tok_dir.resolve(), tokenizer=tok, max_seq_length=max_seq_length,
        pad_token_id=tok.pad_token_id, stats=stats)
