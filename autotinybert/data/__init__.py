"""Training data: corpus readers, tokenizers, packed memory-mapped caches and MLM masking."""

from .corpus import CorpusError, list_corpus_files, read_documents
from .dataset import PreparedCorpus, prepare_corpus
from .masking import MaskedBatch, MaskingSpec, mask_tokens, masking_spec_for
from .tokenizer import TokenizerError, load_tokenizer, train_wordpiece

__all__ = ["CorpusError", "MaskedBatch", "MaskingSpec", "PreparedCorpus", "TokenizerError", "list_corpus_files",
           "load_tokenizer", "mask_tokens", "masking_spec_for", "prepare_corpus", "read_documents", "train_wordpiece"]
