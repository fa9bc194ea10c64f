"""BERT's weight initialisation, the one rule for the SuperBERT, the standalone AutoTinyBert models, the KD
projection and fine-tuning's new task heads:

    Linear and Embedding weights ~ N(0, std) (an embedding's padding row 0), biases 0, LayerNorm weight 1 and bias 0.

Draws come from `generator`, or from torch's global RNG when it is None (callers fork and seed that one, see
`autotinybert.seeding.forked_global_rng`).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

_INITIALISED = (nn.Linear, nn.Embedding, nn.LayerNorm)


def _loaded(tensor: torch.Tensor) -> bool:
    """True for a tensor Hugging Face filled from a checkpoint (it flags them; its init must then skip them)."""
    return bool(getattr(tensor, "_is_hf_initialized", False))


def _init_parameter(module: nn.Module, name: str, std: float, generator: torch.Generator | None,
                    skip_loaded: bool) -> None:
    param = getattr(module, name, None)  # an Embedding has no bias; a LayerNorm may have none
    if param is None or (skip_loaded and _loaded(param)):
        return
    if name == "bias":
        nn.init.zeros_(param)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(param)
    else:  # Linear / Embedding weight
        nn.init.normal_(param, mean=0.0, std=std, generator=generator)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(param[module.padding_idx])


def init_bert_module(module: nn.Module, std: float, generator: torch.Generator | None = None, *,
                     skip_loaded: bool = False) -> None:
    """BERT's initialisation of one module's own parameters (Linear, Embedding, LayerNorm; others are left alone).

    `skip_loaded`: leave tensors Hugging Face loaded from a checkpoint as they are (for `_init_weights`, which
    `from_pretrained` also runs)."""
    if isinstance(module, _INITIALISED):
        for name in ("weight", "bias"):
            _init_parameter(module, name, std, generator, skip_loaded)


def init_bert_weights(model: nn.Module, std: float, generator: torch.Generator | None = None) -> None:
    """BERT's initialisation of every module of `model`, in `model.modules()` order (the order of the draws)."""
    for module in model.modules():
        init_bert_module(module, std, generator)


def init_bert_parameters(model: nn.Module, names: Iterable[str], std: float,
                         generator: torch.Generator | None = None) -> None:
    """Re-draw only the parameters `names` (e.g. a freshly created task head), in sorted-name order; names that are
    not parameters of a Linear / Embedding / LayerNorm of `model` are ignored."""
    params = dict(model.named_parameters())
    for name in sorted(names):
        if name not in params:
            continue
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        if isinstance(module, _INITIALISED):
            _init_parameter(module, attr, std, generator, skip_loaded=False)
