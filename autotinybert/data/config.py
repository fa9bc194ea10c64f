"""`CorpusConfig`: the training corpus and how it is tokenized and split (`prepare-corpus`, `data` in a pipeline)."""

from __future__ import annotations


from ..config import Config, Field, PathList, PathStr, path_field


class CorpusConfig(Config):
    """The data every training run reads: text files, the tokenizer, sequence packing and the validation split."""

    corpus: PathList = path_field(default_factory=list)
    """Text files or folders (plain text, WikiExtractor <doc>, Project Gutenberg)."""
    tokenizer: PathStr | None = path_field(None, names=True)
    """Hugging Face tokenizer folder or hub name; null trains WordPiece on the corpus."""
    tokenizer_vocab_size: int = Field(8000, gt=0)
    """Vocabulary size when a WordPiece tokenizer is trained on the corpus."""
    max_seq_length: int = Field(128, gt=0)
    """Tokens per packed training sequence."""
    cache_dir: PathStr | None = path_field(None)
    """Tokenized-corpus cache (default $AUTOTINYBERT_CACHE or ~/.cache/autotinybert)."""
    val_fraction: float = Field(0.01, ge=0, lt=1)
    """Share of the documents held out for validation."""
    val_max_sequences: int = Field(2000, gt=0)
    """At most this many validation sequences."""


class PrepareCorpusConfig(CorpusConfig):
    """`autotinybert prepare-corpus`: tokenize and pack a corpus into the memory-mapped cache, e.g. before a
    multi-node torchrun job; a training run with the same corpus, tokenizer, length and split reuses it."""

    corpus: PathList = path_field(default_factory=list, min_length=1)
    """Text files or folders (plain text, WikiExtractor <doc>, Project Gutenberg)."""
    progress: bool = True
    """Show progress bars."""
