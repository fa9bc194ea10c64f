"""Every random stream of the package, in one place (torch is imported only by the torch helpers).

Two kinds of keys, both explicit:

* purpose-tagged: ``derive_seed(seed, step, worker, m, purpose="arch")`` -- one-shot training's draws; the purpose
  string is hashed into the key, so two purposes never share a stream;
* plain integer lists: ``np.random.default_rng([seed, ...])`` -- the fine-tuning and search streams, kept exactly as
  they were first written so that recorded runs replay. Each has a named function below; the constants tell the
  streams of one seed apart.

Nothing here reseeds a global generator: `forked_global_rng` seeds a *fork* of torch's global RNG (for the draws
torch offers no generator argument for: dropout, module construction) and restores the caller's state afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

# Second key of the fine-tuning streams (first key: split_seed or seed).
_TRAIN_SUBSET, _DEV_SUBSET, _BATCH_ORDER = 1, 2, 3


def derive_seed(*keys: int, purpose: str) -> int:
    """A 63-bit seed from integers and a purpose string (different purposes never share a stream)."""
    tag = int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")
    state = np.random.SeedSequence([tag, *[int(k) for k in keys]]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def stream_purpose(purpose: str, stream: str | None) -> str:
    """The purpose tag of `purpose` in a named stream: ``"shuffle"`` alone, or ``"further-train/shuffle"``. A run
    with a stream draws other batches, masks and dropout than a run of the same seed without one (further
    training must not replay the supernet's first batches)."""
    return purpose if not stream else f"{stream}/{purpose}"


def numpy_rng(*keys: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*keys, purpose=purpose))


def torch_generator(*keys: int, purpose: str) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(derive_seed(*keys, purpose=purpose))


# ----- fine-tuning and search streams (plain integer keys) --------------------------------------------------------
def train_subset_rng(split_seed: int) -> np.random.Generator:
    """Fine-tuning: which training examples a budgeted run keeps (the same for every model and seed)."""
    return np.random.default_rng([split_seed, _TRAIN_SUBSET])


def dev_subset_rng(split_seed: int, split_index: int) -> np.random.Generator:
    """Fine-tuning: which examples of dev split `split_index` a budgeted run evaluates on."""
    return np.random.default_rng([split_seed, _DEV_SUBSET, split_index])


def batch_order_rng(seed: int) -> np.random.Generator:
    """Fine-tuning: the order of the training batches."""
    return np.random.default_rng([seed, _BATCH_ORDER])


def head_init_generator(seed: int) -> torch.Generator:
    """Fine-tuning: the initialisation of freshly created parameters (task head, pooler)."""
    import torch

    return torch.Generator().manual_seed(int(seed) * 1000003 + 17)


def generation_rng(seed: int, generation: int, stream: int) -> np.random.Generator:
    """Search: the draws of one generation; `stream` tells the methods' uses apart."""
    return np.random.default_rng([seed, generation, stream])


# ----- torch's global generator -------------------------------------------------------------------------------------
@contextlib.contextmanager
def forked_global_rng(seed: int | None = None, device: torch.device | None = None) -> Iterator[None]:
    """Run the block on a fork of torch's global RNG, seeded with `seed` (None: left as it was); the caller's
    state (CPU, and `device` if it is a GPU) is restored afterwards. For draws that take no generator argument."""
    import torch

    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
