"""Seeds derived from (seed, step, worker, m, ...): every random draw of a run has its own named stream."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*keys: int, purpose: str) -> int:
    """A 63-bit seed from integers and a purpose string (different purposes never share a stream)."""
    tag = int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")
    state = np.random.SeedSequence([tag, *[int(k) for k in keys]]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def numpy_rng(*keys: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*keys, purpose=purpose))


def torch_generator(*keys: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys, purpose=purpose))
