"""Tokenizers: load a Hugging Face tokenizer folder/name, or train a BERT WordPiece vocabulary on the corpus."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..io import staged_dir
from .corpus import CorpusFile, corpus_digest, read_documents

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TokenizerError(UserError):
    """A tokenizer that cannot be loaded or does not fit BERT-style MLM training."""


def load_tokenizer(name_or_path: str | Path):
    """A fast (Rust-backed) Hugging Face tokenizer with [CLS]/[SEP]/[PAD]/[MASK], from a folder or a hub name."""
    from transformers import AutoTokenizer

    from transformers.utils import logging as hf_logging

    text = str(name_or_path)
    if (text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1) and not Path(text).expanduser().exists():
        raise TokenizerError(f"tokenizer folder {text} does not exist; pass a folder with tokenizer.json / vocab.txt, "
                             "or leave tokenizer unset to train a WordPiece vocabulary on the corpus")

    # A supernet folder's config.json has a model_type transformers does not know; AutoTokenizer then warns
    # while it falls back to tokenizer_config.json. The tokenizer files are what count here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise TokenizerError(f"cannot load tokenizer {name_or_path!s}: {err}. Pass a folder with tokenizer.json / "
                             "vocab.txt (e.g. a BERT model folder), or leave tokenizer unset to train one") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise TokenizerError(f"tokenizer {name_or_path!s} has no fast (tokenizers) backend; use a tokenizer.json folder")
    missing = [name for name in ("cls_token", "sep_token", "pad_token", "mask_token") if getattr(tokenizer, name) is None]
    if missing:
        raise TokenizerError(f"tokenizer {name_or_path!s} lacks {missing}; BERT-style MLM needs [CLS], [SEP], [PAD], "
                             "[MASK]")
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition (vocabulary, normaliser, pre-tokeniser)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def tokenizer_folder_digest(name_or_path: str | Path | None) -> str | None:
    """SHA-256 over the tokenizer files of a local folder (None for a hub name or no tokenizer): what a stage's
    fingerprint sees, so an edited vocabulary is not mistaken for the old one."""
    if name_or_path is None or not Path(name_or_path).expanduser().is_dir():
        return None
    from ..io import TOKENIZER_FILES
    from .corpus import content_digest

    folder = Path(name_or_path).expanduser()
    parts = [f"{name}:{content_digest(folder / name)}" for name in TOKENIZER_FILES if (folder / name).is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def vocab_size_of(tokenizer) -> int:
    return len(tokenizer)


def _paragraphs(files: list[CorpusFile]) -> Iterator[str]:
    for file in files:
        for doc in read_documents(file.path):
            yield from doc


def _wordpiece_base(lowercase: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def _train_deterministic(files: list[CorpusFile], vocab_size: int, lowercase: bool) -> dict[str, int]:
    """A WordPiece vocabulary (token -> id) that depends only on the corpus and the settings.

    Why two passes: `tokenizers`' trainer (a BPE trainer underneath) gives the continuation characters ("##e")
    their ids in the iteration order of a Rust HashMap, which is seeded anew in every process; merges of equal
    count are ranked by those ids, so the vocabulary changed from run to run (also with one thread). The first
    pass (no merges) lists the continuation characters; the second declares them, sorted, right after the special
    tokens, so every id -- and with them every tie -- is fixed. They are plain vocabulary entries afterwards (the
    tokenizer is rebuilt from the vocabulary with only the five real special tokens).
    """
    from tokenizers import trainers

    probe = _wordpiece_base(lowercase)
    probe.train_from_iterator(_paragraphs(files), trainer=trainers.WordPieceTrainer(
        vocab_size=1, special_tokens=SPECIAL_TOKENS, show_progress=False))
    continuation = sorted(t for t in probe.get_vocab(with_added_tokens=False) if t.startswith("##"))
    tok = _wordpiece_base(lowercase)
    tok.train_from_iterator(_paragraphs(files), trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + continuation, min_frequency=2, show_progress=False))
    vocab = tok.get_vocab(with_added_tokens=True)
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise RuntimeError(f"trained WordPiece vocabulary has non-contiguous ids ({len(ids)} tokens)")
    return vocab


def train_wordpiece(files: list[CorpusFile], out_dir: str | Path, vocab_size: int = 8000,
                    lowercase: bool = True, overwrite: bool = False) -> Path:
    """Train a BERT WordPiece vocabulary on `files` with `tokenizers`; save it as a Hugging Face tokenizer folder.

    The result is a function of the files' contents and the settings: the same corpus gives byte-identical files.
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 30:
        raise TokenizerError(f"tokenizer_vocab_size={vocab_size} is too small; use at least 100")
    vocab = _train_deterministic(files, vocab_size, lowercase)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    base = _wordpiece_base(lowercase)
    tok.normalizer, tok.pre_tokenizer = base.normalizer, base.pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", do_lower_case=lowercase)
    with staged_dir(out_dir, overwrite=overwrite) as stage:
        fast.save_pretrained(stage)
        ordered = sorted(vocab.items(), key=lambda kv: kv[1])
        (stage / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in ordered), encoding="utf-8")
        (stage / "trained_on.json").write_text(json.dumps({
            "files": len(files), "bytes": sum(f.size for f in files), "corpus_sha256": corpus_digest(files),
            "vocab_size": vocab_size, "lowercase": lowercase}, indent=2) + "\n")
    return Path(out_dir)
