"""Architecture features for the latency predictors.

* `mlp_features`: the five hyper-parameters divided by a fixed scale (the paper / HAT: a regressor on the
  normalised architecture encoding).
* `analytic_terms`: the work one forward does, term by term, in millions of multiply-adds or elements for a
  ``batch x seq_len`` input. Latency is modelled as a non-negative combination of them, so each coefficient reads
  as "ms per million operations of that kind" (or ms per layer / per call for the overhead terms).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..arch import Arch

MLP_FEATURES = ("layers", "hidden", "ffn", "heads", "qkv")

ANALYTIC_TERMS = (
    "proj_macs",      # L * B*T * 4*h*q: Q, K, V and attention-output projections
    "ffn_macs",       # L * B*T * 2*h*f: the two FFN matrices
    "attn_macs",      # L * B * 2*T^2*q: scores Q K^T and context P V
    "softmax_elems",  # L * B * heads*T^2: softmax (and mask/scale) over the score matrix
    "hidden_elems",   # L * B*T*h: LayerNorms, residuals, biases on the hidden width
    "ffn_elems",      # L * B*T*f: GELU and bias on the FFN width
    "layer_calls",    # L: per-layer fixed cost (kernel launches, dispatch)
    "embed_elems",    # B*T*h: embedding lookups, sum and LayerNorm
    "pooler_macs",    # B*h^2: the pooler
    "fixed",          # 1: per-forward fixed cost
)


def mlp_features(archs: Sequence[Arch], scale: Sequence[float]) -> np.ndarray:
    """(N, 5) array of arch fields divided by `scale` (stored with the predictor)."""
    raw = np.array([[a.layers, a.hidden, a.ffn, a.heads, a.qkv] for a in archs], dtype=np.float64)
    return raw / np.asarray(scale, dtype=np.float64)


def analytic_terms(archs: Sequence[Arch], batch: int, seq_len: int) -> np.ndarray:
    """(N, len(ANALYTIC_TERMS)) array of per-forward work terms (millions, except the call counts)."""
    B, T, M = float(batch), float(seq_len), 1e-6
    rows = []
    for a in archs:
        L, h, f, q, heads = float(a.layers), float(a.hidden), float(a.ffn), float(a.qkv), float(a.heads)
        rows.append([
            L * B * T * 4 * h * q * M,
            L * B * T * 2 * h * f * M,
            L * B * 2 * T * T * q * M,
            L * B * heads * T * T * M,
            L * B * T * h * M,
            L * B * T * f * M,
            L,
            B * T * h * M,
            B * h * h * M,
            1.0,
        ])
    return np.array(rows, dtype=np.float64)
