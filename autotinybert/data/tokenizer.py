"""Tokenizers: load a Hugging Face tokenizer folder/name, or train a BERT WordPiece vocabulary on the corpus."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..io import staged_dir
from .corpus import CorpusFile, read_documents

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


def vocab_size_of(tokenizer) -> int:
    return len(tokenizer)


def _paragraphs(files: list[CorpusFile]) -> Iterator[str]:
    for file in files:
        for doc in read_documents(file.path):
            yield from doc


def train_wordpiece(files: list[CorpusFile], out_dir: str | Path, vocab_size: int = 8000,
                    lowercase: bool = True, overwrite: bool = False) -> Path:
    """Train a BERT WordPiece vocabulary on `files` with `tokenizers`; save it as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 30:
        raise TokenizerError(f"tokenizer_vocab_size={vocab_size} is too small; use at least 100")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                        show_progress=False)
    tok.train_from_iterator(_paragraphs(files), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", do_lower_case=lowercase)
    with staged_dir(out_dir, overwrite=overwrite) as stage:
        fast.save_pretrained(stage)
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        (stage / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
        (stage / "trained_on.json").write_text(json.dumps({"files": len(files), "vocab_size": vocab_size}))
    return Path(out_dir)
