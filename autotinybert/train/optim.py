"""The optimiser and learning-rate schedule of every training in the package: one-shot supernet training, further
training and fine-tuning.

    optimizer = adamw(model, learning_rate=1e-4, weight_decay=0.01, eps=1e-6)
    scheduler = linear_warmup_decay(optimizer, total_steps=1000, warmup_steps=warmup_steps(0.1, 1000, "floor"))
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


def decays(name: str, param: nn.Parameter) -> bool:
    """BERT's convention: weight decay on weight matrices only; none on biases, LayerNorm weights (1-D) and the
    MLM output bias. (One-shot training used to name LayerNorm by its module name, fine-tuning by its 1-D shape: the
    two rules pick the same parameters in every model here, and the shape also covers norms named otherwise.)"""
    return param.dim() > 1 and not name.endswith("bias")


def adamw(module: nn.Module, *, learning_rate: float, weight_decay: float, eps: float,
          betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `module`: group 0 decays, group 1 does not (each in the order of
    `named_parameters`)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (decay if decays(name, param) else no_decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate, betas=betas, eps=eps)


def warmup_steps(ratio: float, total_steps: int, rounding: Literal["floor", "nearest"]) -> int:
    """The warm-up length in whole steps, ``ratio * total_steps`` rounded down or to the nearest step.

    Two roundings because two kinds of run were recorded with them and must replay: pre-training (supernet and
    further training) floors, fine-tuning rounds to nearest (Python's `round`: halves go to the even step). They
    differ only when the fraction is above one half, e.g. 0.1 x 26 steps: 2 (floor) or 3 (nearest)."""
    exact = ratio * total_steps
    return int(exact) if rounding == "floor" else int(round(exact))


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int,
                        warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak LR over `warmup_steps` steps (the first step already at 1/warmup_steps of it),
    then linear decay to 0 at `total_steps`. Step k (0-based) runs at factor(k) x the peak LR."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
