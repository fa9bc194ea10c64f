"""Training data: corpus readers, tokenizers, packed memory-mapped caches and MLM masking (names load on first
access)."""

from .._lazy import lazy_exports

__all__ = ["CorpusError", "MaskedBatch", "MaskingSpec", "PreparedCorpus", "TokenizerError", "list_corpus_files",
           "load_tokenizer", "mask_tokens", "masking_spec_for", "prepare_corpus", "read_documents", "train_wordpiece"]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".corpus": ["CorpusError", "list_corpus_files", "read_documents"],
    ".dataset": ["PreparedCorpus", "prepare_corpus"],
    ".masking": ["MaskedBatch", "MaskingSpec", "mask_tokens", "masking_spec_for"],
    ".tokenizer": ["TokenizerError", "load_tokenizer", "train_wordpiece"],
})
