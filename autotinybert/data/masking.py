"""BERT's masked-LM corruption: 15 % of the real tokens, of which 80 % -> [MASK], 10 % -> random, 10 % kept."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskingSpec:
    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # never selected ([CLS], [SEP], [PAD], ...)
    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1


@dataclass
class MaskedBatch:
    input_ids: Tensor  # (B, T) corrupted ids
    labels: Tensor  # (B, T) original id at selected positions, -100 elsewhere


def mask_tokens(input_ids: Tensor, spec: MaskingSpec, generator: torch.Generator) -> MaskedBatch:
    """Corrupt `input_ids` (B, T) for MLM with draws from `generator` only (CPU generator; results moved to ids' device)."""
    ids = input_ids.detach().to("cpu", torch.long)
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token in spec.special_ids:
        special |= ids == token
    u = torch.rand(ids.shape, generator=generator)
    selected = (u < spec.probability) & ~special
    if not selected.any() and (~special).any():
        # A tiny batch can draw no position at all; the loss needs one, so take the first maskable token.
        selected.view(-1)[(~special).view(-1).nonzero()[0, 0]] = True
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    action = torch.rand(ids.shape, generator=generator)  # which corruption each selected token gets
    random_ids = torch.randint(0, spec.vocab_size, ids.shape, generator=generator)
    to_mask = selected & (action < spec.mask_fraction)
    to_random = selected & (action >= spec.mask_fraction) & (action < spec.mask_fraction + spec.random_fraction)
    corrupted = torch.where(to_mask, torch.full_like(ids, spec.mask_token_id), ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return MaskedBatch(corrupted.to(input_ids.device), labels.to(input_ids.device))


def masking_spec_for(tokenizer) -> MaskingSpec:
    return MaskingSpec(mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                       special_ids=tuple(sorted(set(tokenizer.all_special_ids))))
