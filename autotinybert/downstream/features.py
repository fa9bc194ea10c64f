"""Tokenization and batching for sentence(-pair) tasks, with dynamic padding and length bucketing.

Every example is tokenized once to its own length (truncated to `max_seq_length`); a batch is padded only to its
longest member, and training batches are drawn from length-sorted buckets so short SST-2 sentences don't pay for
128 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .data import TextExample


@dataclass
class Encoded:
    """Token ids per example (ragged), their token types, and the labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray  # (N,) int64 class indices or float32 scores

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def load_tokenizer(tokenizer):
    """A loaded tokenizer, or a folder / hub name to load with `AutoTokenizer` (a fast tokenizer is required)."""
    if not isinstance(tokenizer, (str, bytes)) and not hasattr(tokenizer, "__fspath__"):
        return tokenizer
    from transformers import AutoTokenizer

    from ..errors import UserError

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a tokenizer from {tokenizer}: {err}. Point model= (or tokenizer=) at a "
                        "folder with tokenizer.json / vocab.txt") from None
    return tok


def encode_pairs(tokenizer, examples: Sequence[TextExample], max_seq_length: int, regression: bool) -> Encoded:
    """Tokenize (text_a[, text_b]) with [CLS]/[SEP] and BERT's longest-first truncation to `max_seq_length`."""
    if not examples:
        return Encoded([], [], np.zeros(0, dtype=np.float32 if regression else np.int64))
    a = [e.text_a for e in examples]
    pair = examples[0].text_b is not None
    b = [e.text_b for e in examples] if pair else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_length, padding=False, return_token_type_ids=True)
    labels = np.asarray([e.label for e in examples], dtype=np.float32 if regression else np.int64)
    return Encoded(enc["input_ids"], enc["token_type_ids"], labels)


def collate(input_ids: Sequence[list[int]], token_type_ids: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of sequences to the batch's longest: input_ids, attention_mask, token_type_ids, each (B, T)."""
    width = max(len(ids) for ids in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(input_ids), width), dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, (row, tt) in enumerate(zip(input_ids, token_type_ids)):
        ids[i, :len(row)] = torch.as_tensor(row)
        types[i, :len(tt)] = torch.as_tensor(tt)
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucket_batches: int = 50) -> list[np.ndarray]:
    """One epoch of training batches: shuffle, sort each window of `bucket_batches` batches by length, cut, shuffle.

    Every example appears exactly once; batches hold examples of similar length, and their order is random.
    """
    order = rng.permutation(len(lengths))
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Length-sorted batches for evaluation (results are put back in example order by the caller)."""
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]
